//! Isolated test databases: a fresh database per test (cloned from a migrated template when
//! migrations are given), or a fresh schema per test in one database; dropped afterwards, also
//! when the test panics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::template::quote_ident;

use super::plan::{Migrations, Plan};
use super::templates::{claim_spare, ensure_template, refill_spares, retain_template, TemplateUse};

pub use super::server::server_config_from_env;
use super::server::{
    block_on_background, check_name, for_database, generated_created_at, maintenance, unique_name,
    wait_for_statements_naming, wrap, DEFAULT_PREFIX,
};

/// An isolated database for one test, with a connected manager.
///
/// Dropped with `DROP DATABASE … WITH (FORCE)` by [`cleanup`](Self::cleanup), or when the value
/// is dropped (also while a test panics); a failure there is reported on stderr and through
/// `tracing`, never swallowed.
///
/// ```no_run
/// # async fn f() -> pgdbm::Result<()> {
/// use pgdbm::testing::TestDatabase;
/// let tdb = TestDatabase::builder().schema("app").migrations("./migrations").create().await?;
/// tdb.manager().execute("INSERT INTO {{tables.users}} (email) VALUES ('a@x')", &[]).await?;
/// tdb.cleanup().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    manager: AsyncDatabaseManager,
    server: DatabaseConfig,
    kind: Kind,
    dropped: bool,
    /// The template this database was cloned from, released after the database is dropped.
    template: Option<TemplateUse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Database,
    Schema,
}

/// Options for [`TestDatabase`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct TestDatabaseBuilder {
    server: Option<DatabaseConfig>,
    prefix: Option<String>,
    schema: Option<String>,
    migrations: Option<Migrations>,
    modules: Vec<(String, Migrations)>,
    schema_per_test: bool,
    template: Option<bool>,
}

impl TestDatabaseBuilder {
    /// The server to use (its `database` is the maintenance database); default
    /// [`server_config_from_env`].
    pub fn server(mut self, config: DatabaseConfig) -> Self {
        self.server = Some(config);
        self
    }

    /// The name prefix (default `test`); letters, digits, underscores.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// The manager's schema inside the test database (migrations go there too).
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = Some(schema.to_owned());
        self
    }

    /// Migrations to apply. With a database per test, they are applied once to a template
    /// database (per migration set) that each test clones.
    pub fn migrations(mut self, migrations: impl Into<Migrations>) -> Self {
        self.migrations = Some(migrations.into());
        self
    }

    /// Migrations of module `name`, applied into the schema `name` and recorded under the
    /// module name `name`, as Python pgdbm does for module-scoped migrations; once per module,
    /// in order. The manager's schema is [`schema`](Self::schema) when given, else the first
    /// module's; for the others, make managers over its pool:
    ///
    /// ```no_run
    /// # async fn f() -> pgdbm::Result<()> {
    /// use pgdbm::{testing::TestDatabase, AsyncDatabaseManager};
    /// let tdb = TestDatabase::builder()
    ///     .module("users", "migrations/users")
    ///     .module("orders", "migrations/orders")
    ///     .create()
    ///     .await?;
    /// let users = tdb.manager();                          // schema "users"
    /// let orders = AsyncDatabaseManager::from_pool(users.pool()?, Some("orders"))?;
    /// # Ok(()) }
    /// ```
    pub fn module(mut self, name: &str, migrations: impl Into<Migrations>) -> Self {
        self.modules.push((name.to_owned(), migrations.into()));
        self
    }

    /// Migrate each test database from scratch instead of cloning a template (slower; for
    /// migrations that depend on the database name, say).
    pub fn without_template(mut self) -> Self {
        self.template = Some(false);
        self
    }

    /// One database, a fresh schema per test (named like a test database), dropped afterwards.
    /// Cheaper than a database per test; the test must only use its own schema.
    pub fn schema_per_test(mut self) -> Self {
        self.schema_per_test = true;
        self
    }

    /// Creates the database (or schema) and connects a manager to it.
    pub async fn create(self) -> Result<TestDatabase> {
        let prefix = self
            .prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        check_name("prefix", &prefix)?;
        if let Some(s) = &self.schema {
            crate::template::check_identifier(s, "schema")
                .map_err(|e| Error::TestDatabase(e.to_string()))?;
        }
        let server = self.server.clone().unwrap_or_else(server_config_from_env);
        let name = unique_name(&prefix);
        check_name("name", &name)?;
        if self.schema_per_test && !self.modules.is_empty() {
            return Err(Error::TestDatabase(
                "modules need a database per test: each module has a schema of its own, \
                 which parallel tests sharing one database would collide on; drop \
                 schema_per_test"
                    .into(),
            ));
        }
        // In schema-per-test mode the migrations go into the test's own schema.
        let schema = match self.schema_per_test {
            true => Some(name.clone()),
            false => self.manager_schema(),
        };
        let plan = Plan::new(schema.as_deref(), self.migrations.as_ref(), &self.modules)?;
        let maint = maintenance(&server).await?;
        if self.schema_per_test {
            self.create_schema(&server, &maint, name, &plan).await
        } else {
            // Held from here on; dropped on any failure, which lets the template go.
            let template = match (plan.is_empty(), self.template.unwrap_or(true)) {
                (false, true) => Some(retain_template(&server, plan.template_name()?).await?),
                _ => None,
            };
            self.create_database(&server, &maint, name, &plan, template)
                .await
        }
    }

    /// The manager's schema: the one given, else the first module's.
    fn manager_schema(&self) -> Option<String> {
        self.schema
            .clone()
            .or_else(|| self.modules.first().map(|(name, _)| name.clone()))
    }

    async fn create_database(
        &self,
        server: &DatabaseConfig,
        maint: &AsyncDatabaseManager,
        name: String,
        plan: &Plan,
        template: Option<TemplateUse>,
    ) -> Result<TestDatabase> {
        let schema = self.manager_schema();
        let template_name = template.as_ref().map(|t| t.name().to_owned());
        if let Some(t) = &template_name {
            ensure_template(server, maint, plan, t, schema.as_deref()).await?;
        }
        // Built before the database exists, so that its Drop cleans up if creating is cut off
        // or fails (dropping a database that never came to be does no harm).
        let tdb = TestDatabase {
            manager: AsyncDatabaseManager::new(DatabaseConfig {
                schema,
                min_connections: 1,
                max_connections: 5,
                ..for_database(server, &name)?
            })?,
            name,
            server: server.clone(),
            kind: Kind::Database,
            dropped: false,
            template,
        };
        let name = &tdb.name;
        let claimed = match &tdb.template {
            Some(t) => {
                let claimed = claim_spare(maint, t.name(), name).await?;
                if t.wants_spares() {
                    // Replace what was taken (or start the stock) while the test runs.
                    refill_spares(server.clone(), t.name().to_owned());
                }
                claimed
            }
            None => false,
        };
        if !claimed {
            let sql = match &template_name {
                Some(t) => format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    quote_ident(name),
                    quote_ident(t)
                ),
                None => format!("CREATE DATABASE {}", quote_ident(name)),
            };
            maint
                .execute(&sql, &[])
                .await
                .map_err(|e| wrap("creating the test database", e))?;
        }
        tdb.manager
            .connect()
            .await
            .map_err(|e| wrap("connecting to the test database", e))?;
        if template_name.is_none() && !plan.is_empty() {
            plan.apply(&tdb.manager)
                .await
                .map_err(|e| wrap("migrating the test database", e))?;
        }
        Ok(tdb)
    }

    async fn create_schema(
        &self,
        server: &DatabaseConfig,
        maint: &AsyncDatabaseManager,
        name: String,
        plan: &Plan,
    ) -> Result<TestDatabase> {
        let sql = format!("CREATE SCHEMA {}", quote_ident(&name));
        // As for a database: built first, so its Drop cleans up after a cut-off creation.
        let tdb = TestDatabase {
            manager: AsyncDatabaseManager::new(DatabaseConfig {
                schema: Some(name.clone()),
                min_connections: 1,
                max_connections: 5,
                ..server.clone()
            })?,
            name,
            server: server.clone(),
            kind: Kind::Schema,
            dropped: false,
            template: None,
        };
        maint
            .execute(&sql, &[])
            .await
            .map_err(|e| wrap("creating the test schema", e))?;
        tdb.manager
            .connect()
            .await
            .map_err(|e| wrap("connecting for the test schema", e))?;
        plan.apply(&tdb.manager)
            .await
            .map_err(|e| wrap("migrating the test schema", e))?;
        Ok(tdb)
    }
}

impl TestDatabase {
    /// A builder with every option.
    pub fn builder() -> TestDatabaseBuilder {
        TestDatabaseBuilder::default()
    }

    /// A fresh, empty database on the server from the environment.
    pub async fn create() -> Result<TestDatabase> {
        TestDatabaseBuilder::default().create().await
    }

    /// The connected manager.
    pub fn manager(&self) -> &AsyncDatabaseManager {
        &self.manager
    }

    /// The database's (or, in schema-per-test mode, the schema's) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A config for the test database, e.g. to connect another pool to it.
    pub fn config(&self) -> Result<DatabaseConfig> {
        match self.kind {
            Kind::Database => for_database(&self.server, &self.name),
            Kind::Schema => Ok(DatabaseConfig {
                schema: Some(self.name.clone()),
                ..self.server.clone()
            }),
        }
    }

    /// Drops the database (or schema) now and reports whether that worked.
    pub async fn cleanup(mut self) -> Result<()> {
        self.dropped = true;
        let disconnected = self.manager.disconnect().await;
        let dropped = drop_now(&self.server, self.kind, &self.name).await;
        let released = match self.template.take() {
            Some(t) => t.release().await,
            None => Ok(()),
        };
        disconnected.and(dropped).and(released)
    }
}

async fn drop_now(server: &DatabaseConfig, kind: Kind, name: &str) -> Result<()> {
    let maint = maintenance(server).await?;
    if matches!(kind, Kind::Database) {
        // A creation cut off halfway (its `CREATE DATABASE` or the rename of a spare) may
        // still run on another connection while its cancel is on the way; dropped before it
        // ends, the database it makes would stay. Wait for it first.
        wait_for_statements_naming(&maint, name)
            .await
            .map_err(|e| Error::TestDatabase(format!("could not drop test {name:?}: {e}")))?;
    }
    let sql = match kind {
        Kind::Database => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)),
        Kind::Schema => format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(name)),
    };
    maint
        .execute(&sql, &[])
        .await
        .map(|_| ())
        .map_err(|e| Error::TestDatabase(format!("could not drop test {name:?}: {e}")))
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped && self.template.is_none() {
            return;
        }
        let (server, kind, name) = (self.server.clone(), self.kind, self.name.clone());
        let (drop_db, template) = (!self.dropped, self.template.take());
        // Done on the background runtime, so it works inside or outside an async context and
        // while the test thread unwinds from a panic.
        match block_on_background(async move {
            let dropped = match drop_db {
                true => drop_now(&server, kind, &name).await,
                false => Ok(()),
            };
            let released = match template {
                Some(t) => t.release().await,
                None => Ok(()),
            };
            dropped.and(released)
        }) {
            Some(Ok(())) => {}
            Some(Err(e)) => report_cleanup_failure(&self.name, &e.to_string()),
            None => report_cleanup_failure(&self.name, "the cleanup task did not finish"),
        }
    }
}

fn report_cleanup_failure(name: &str, why: &str) {
    tracing::error!(database = name, error = why, "test database cleanup failed");
    eprintln!("pgdbm: cleanup of test database {name:?} failed: {why}");
}

/// A leftover test database found by [`list_leftover_databases`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeftoverDatabase {
    /// Its name.
    pub name: String,
    /// How long ago it was created (from the timestamp in its name).
    pub age: Duration,
}

/// Test databases named like pgdbm names them, `{prefix}_{secs}_{pid}_{n}_{nanos}`, created
/// more than `older_than` ago (crashed runs leave them behind). The age comes from the creation
/// time in the name. Only that exact shape matches: `test_2024_q1_archive` or
/// `test_2024_01_15_0` are someone's real databases and are never listed.
pub async fn list_leftover_databases(
    server: &DatabaseConfig,
    prefix: &str,
    older_than: Duration,
) -> Result<Vec<LeftoverDatabase>> {
    check_name("prefix", prefix)?;
    let maint = maintenance(server).await?;
    let names = maint
        .fetch_all(
            "SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY datname",
            &[&format!(
                "{}\\_%",
                prefix.to_ascii_lowercase().replace('_', "\\_")
            )],
        )
        .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut out = Vec::new();
    for row in names? {
        let name: String = row.get(0)?;
        let Some(created) = generated_created_at(prefix, &name) else {
            continue;
        };
        let age = Duration::from_secs(now.saturating_sub(created));
        if age > older_than {
            out.push(LeftoverDatabase { name, age });
        }
    }
    Ok(out)
}

/// Drops what [`list_leftover_databases`] finds; returns the names dropped.
pub async fn drop_leftover_databases(
    server: &DatabaseConfig,
    prefix: &str,
    older_than: Duration,
) -> Result<Vec<String>> {
    let leftovers = list_leftover_databases(server, prefix, older_than).await?;
    let mut dropped = Vec::new();
    for l in leftovers {
        drop_now(server, Kind::Database, &l.name).await?;
        dropped.push(l.name);
    }
    Ok(dropped)
}

#[cfg(test)]
#[path = "database_tests.rs"]
mod tests;
