//! Migrations through a transaction pooler without a direct connection: no session lock can
//! be held across transactions there, so each file takes the run's advisory locks in its own
//! transaction (`pg_advisory_xact_lock`), checks that no other run applied it meanwhile, and
//! commits together with its tracking row. Every racer succeeds, each file is applied once,
//! and no lock outlives its transaction.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::{batch_execute_logged, elapsed_ms, exec, migration_error, query_one, Prepared};
use super::{AsyncMigrationManager, NO_TRANSACTION_MARKER};
use crate::connection::{DEALLOCATE_SQL_PREPARED, RESET_SESSION_SQL};
use crate::error::Result;
use crate::sql::Effects;

/// A transaction whose statements wait for locks and run as long as they need: a migration's
/// DDL must not fail on the pool's `lock_timeout`.
pub(super) const BEGIN_UNTIMED: &str =
    "BEGIN; SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0";

impl AsyncMigrationManager {
    /// Applies one file in a transaction that holds the run's locks; `None` when another run
    /// applied it first.
    pub(super) async fn apply_serialised(
        &self,
        client: &Client,
        begin: &str,
        p: &Prepared<'_>,
    ) -> Result<Option<i32>> {
        if p.no_transaction {
            return Err(migration_error(
                Some(&p.migration.filename),
                format!(
                    "the file is marked `{NO_TRANSACTION_MARKER}`, and through a transaction pooler \
                     nothing can hold the migration lock across its statements. Set \
                     direct_connection_string to the server itself (not the pooler) so that \
                     migrations connect there"
                ),
                None,
            ));
        }
        let started = std::time::Instant::now();
        exec(client, begin)
            .await
            .map_err(|e| self.file_error(p, e))?;
        let outcome = async {
            self.lock_in_transaction(client).await?;
            if self.recorded(client, &p.migration.filename).await? {
                return Ok(None);
            }
            batch_execute_logged(client, &p.sql)
                .await
                .map_err(|e| self.server_error(p, None, e, &p.sql))?;
            // A session-level change in the file (pg_dump's header sets search_path and more)
            // would outlive the commit on a server connection other clients share: undone
            // inside the file's own transaction.
            if Effects::of(&p.sql).changes_session() {
                let undo = format!("{RESET_SESSION_SQL}{DEALLOCATE_SQL_PREPARED}");
                batch_execute_logged(client, &undo)
                    .await
                    .map_err(|e| self.server_error(p, None, e, &undo))?;
            }
            let ms = elapsed_ms(started);
            self.record_applied(client, p, ms).await?;
            Ok(Some(ms))
        }
        .await;
        match outcome {
            Ok(Some(ms)) => {
                exec(client, "COMMIT")
                    .await
                    .map_err(|e| self.file_error(p, e))?;
                Ok(Some(ms))
            }
            other => {
                // If even this fails the connection is closed after the run, which rolls back.
                let _ = batch_execute_logged(client, "ROLLBACK").await;
                other
            }
        }
    }

    /// The same two locks a run takes for its whole length, for this transaction only.
    async fn lock_in_transaction(&self, client: &Client) -> Result<()> {
        let key = self.lock_key("pgdbm-rs migrations", true);
        let steps: [(&str, &(dyn ToSql + Sync), Type); 2] = [
            (
                "SELECT pg_advisory_xact_lock($1) IS NOT NULL",
                &key,
                Type::INT8,
            ),
            (
                "SELECT pg_advisory_xact_lock(hashtext('pgdbm_migration_' || $1)) IS NOT NULL",
                &self.module,
                Type::TEXT,
            ),
        ];
        for (sql, value, ty) in steps {
            query_one::<bool>(client, sql, value, ty)
                .await
                .map_err(|e| self.lock_error(e))?;
        }
        Ok(())
    }

    /// Whether `filename` is recorded for this module (or with no module, as Python pgdbm
    /// 0.4 recorded them).
    async fn recorded(&self, client: &Client, filename: &str) -> Result<bool> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE filename = $1 AND (module_name = $2 OR module_name IS NULL))",
            self.qualified_table()
        );
        let rows = client
            .query_typed(
                &sql,
                &[
                    (&filename as &(dyn ToSql + Sync), Type::TEXT),
                    (&self.module, Type::TEXT),
                ],
            )
            .await
            .map_err(|e| crate::query::query_error(e, &sql, std::iter::empty()))?;
        Ok(rows
            .first()
            .and_then(|r| r.try_get::<_, bool>(0).ok())
            .unwrap_or(false))
    }
}
