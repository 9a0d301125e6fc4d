//! The advisory lock that serialises runs of one module across tasks and processes.

use super::*;

impl AsyncMigrationManager {
    pub(super) fn lock_key(&self, kind: &str, with_module: bool) -> i64 {
        let mut h = Sha256::new();
        for part in [kind, self.schema(), &self.table.to_ascii_lowercase()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        if with_module {
            h.update(self.module.as_bytes());
        }
        let digest = h.finalize();
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(key)
    }

    pub(super) async fn lock(&self, client: &Client) -> Result<()> {
        let key = self.lock_key("pgdbm-rs migrations", true);
        let steps: [(&str, &(dyn ToSql + Sync), Type); 2] = [
            ("SELECT pg_advisory_lock($1)", &key, Type::INT8),
            // Python pgdbm's own lock for the module, so a Python process racing this one on
            // the same module waits too. Always taken second: no lock-order cycle.
            (
                "SELECT pg_advisory_lock(hashtext('pgdbm_migration_' || $1))",
                &self.module,
                Type::TEXT,
            ),
        ];
        exec(client, "SET lock_timeout = 0; SET statement_timeout = 0")
            .await
            .map_err(|e| self.lock_error(e))?;
        for (sql, value, ty) in steps {
            client
                .query_typed(sql, &[(value, ty)])
                .await
                .map_err(|e| self.lock_error(query_error(e, sql, std::iter::empty())))?;
        }
        Ok(())
    }

    pub(super) fn lock_error(&self, e: Error) -> Error {
        migration_error(
            None,
            format!(
                "could not take the migration lock for module {:?}: {e}",
                self.module
            ),
            Some(e),
        )
    }

    pub(super) async fn unlock(&self, client: &Client) -> Result<()> {
        let key = self.lock_key("pgdbm-rs migrations", true);
        let steps: [(&str, &(dyn ToSql + Sync), Type); 2] = [
            (
                "SELECT pg_advisory_unlock(hashtext('pgdbm_migration_' || $1))",
                &self.module,
                Type::TEXT,
            ),
            ("SELECT pg_advisory_unlock($1)", &key, Type::INT8),
        ];
        let mut first_error = None;
        for (sql, value, ty) in steps {
            let outcome = match client.query_typed(sql, &[(value, ty)]).await {
                Ok(rows) => match rows.first().and_then(|r| r.try_get::<_, bool>(0).ok()) {
                    Some(true) => Ok(()),
                    _ => Err(Error::Transaction(format!(
                        "{sql} reported that the lock was not held"
                    ))),
                },
                Err(e) => Err(query_error(e, sql, std::iter::empty())),
            };
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
