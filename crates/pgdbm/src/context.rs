//! Tenant contexts: settings and a role applied to each call's own transaction, the way to do
//! what people try with a session-level `SET` on a shared pool (row-level security by a
//! tenant setting, a restricted role per request) without anything outliving the call.

use std::sync::Arc;

use crate::config::quote_literal;
use crate::error::Result;
use crate::manager::AsyncDatabaseManager;
use crate::template::quote_ident;
use crate::transaction::Transaction;

impl AsyncDatabaseManager {
    /// The same manager whose every call runs with `settings` applied locally: a call outside
    /// a transaction runs in a transaction of its own that starts with
    /// `set_config(name, value, true)` for each setting (in the same round trip as the
    /// statement) and commits after it, so the settings end with the call. A transaction
    /// opened from the view starts with them too. Streams (`fetch_stream*`, `copy_to`) from
    /// the view run in a `READ ONLY` transaction.
    ///
    /// Views combine: `db.with_role("tenant_reader").with_settings(&[...])`. Names and values
    /// are sent as quoted literals; a name the server refuses fails each call with its error.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// // With a policy such as
    /// //   CREATE POLICY by_tenant ON {{tables.items}}
    /// //   USING (tenant_id = current_setting('app.tenant_id')::int);
    /// let tenant = db.with_settings(&[("app.tenant_id", "42")]);
    /// let items = tenant.fetch_all("SELECT * FROM {{tables.items}}", &[]).await?;
    /// # Ok(()) }
    /// ```
    pub fn with_settings(&self, settings: &[(&str, &str)]) -> Self {
        if settings.is_empty() {
            return self.clone();
        }
        // Quoted as literals: names and values never become SQL. A name the server does not
        // accept fails each call with the server's own error.
        let calls: Vec<String> = settings
            .iter()
            .map(|(name, value)| {
                format!(
                    "pg_catalog.set_config({}, {}, true)",
                    quote_literal(name),
                    quote_literal(value)
                )
            })
            .collect();
        self.extend_context(&format!("SELECT {}", calls.join(", ")))
    }

    /// The same manager whose every call runs as `role` (`SET LOCAL ROLE`), in a transaction
    /// of its own as with [`with_settings`](Self::with_settings), so the pool's own role is
    /// back when the call ends. The pool's login role must be a member of `role`.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let reader = db.with_role("tenant_reader");
    /// let who: Option<String> = reader.fetch_value("SELECT current_user::text", &[]).await?;
    /// assert_eq!(who.as_deref(), Some("tenant_reader"));
    /// # Ok(()) }
    /// ```
    pub fn with_role(&self, role: &str) -> Self {
        self.extend_context(&format!("SET LOCAL ROLE {}", quote_ident(role)))
    }

    fn extend_context(&self, sql: &str) -> Self {
        let context: Arc<str> = match self.context() {
            Some(before) => format!("{before};\n{sql}").into(),
            None => sql.into(),
        };
        self.with_context(context)
    }
}

impl Transaction<'_> {
    /// Sets `name` to `value` until the end of the top-level transaction
    /// (`set_config(name, value, true)`), for row-level security contexts and the like.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let tx = db.transaction().await?;
    /// tx.set_local("app.tenant_id", "42").await?;
    /// let items = tx.fetch_all("SELECT * FROM {{tables.items}}", &[]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_local(&self, name: &str, value: &str) -> Result<()> {
        self.fetch_value::<String>(
            "SELECT pg_catalog.set_config($1, $2, true)",
            &[&name, &value],
        )
        .await
        .map(drop)
    }
}
