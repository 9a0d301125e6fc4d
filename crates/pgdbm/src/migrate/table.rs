//! Creating the tracking table (and its schema) when it is missing, compatible with Python pgdbm.

use super::*;

impl AsyncMigrationManager {
    /// Creates the tracking table (and the schema, when missing) if it does not exist.
    /// [`apply_pending_migrations`](Self::apply_pending_migrations) does this itself.
    pub async fn ensure_migrations_table(&self) -> Result<()> {
        let conn = Dedicated::acquire(&self.db).await?;
        if !conn.serialised {
            exec(
                conn.client(),
                "SET lock_timeout = 0; SET statement_timeout = 0",
            )
            .await
            .map_err(|e| self.lock_error(e))?;
        }
        let result = self.ensure_table_on(conn.client()).await;
        conn.close();
        result
    }

    pub(super) async fn ensure_table_on(&self, client: &Client) -> Result<()> {
        // A process that does not take our lock (Python pgdbm) can still win a creation race;
        // then the second attempt finds the objects in place.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_ensure_table(client).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let _ = batch_execute_logged(client, "ROLLBACK").await;
                    let raced = matches!(e.code(), Some("23505" | "42P06" | "42P07"));
                    if !(raced && attempt < 3) {
                        return Err(migration_error(
                            None,
                            format!(
                                "could not create the tracking table {}: {e}. The role needs CREATE on the \
                                 schema (and on the database when the schema does not exist yet)",
                                self.qualified_table()
                            ),
                            Some(e),
                        ));
                    }
                }
            }
        }
    }

    pub(super) async fn try_ensure_table(&self, client: &Client) -> Result<()> {
        exec(client, serialised::BEGIN_UNTIMED).await?;
        // Modules sharing a table have different run locks: this one serialises their
        // creation of the shared objects, for this transaction only.
        let key = self.lock_key("pgdbm-rs migrations table", false);
        query_one::<bool>(
            client,
            "SELECT pg_advisory_xact_lock($1) IS NOT NULL",
            &key,
            Type::INT8,
        )
        .await?;
        if let Some(schema) = self.db.schema() {
            let exists: bool = query_one(
                client,
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
                &schema,
                Type::TEXT,
            )
            .await?;
            if !exists {
                exec(
                    client,
                    &format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)),
                )
                .await?;
            }
        }
        let table = self.qualified_table();
        let exists: bool = query_one(
            client,
            "SELECT to_regclass($1::text) IS NOT NULL",
            &table,
            Type::TEXT,
        )
        .await?;
        if !exists {
            // Python pgdbm 0.5's DDL, column for column, so both can share the table.
            exec(
                client,
                &format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        id SERIAL PRIMARY KEY,
                        filename VARCHAR(255) NOT NULL,
                        checksum VARCHAR(64) NOT NULL,
                        module_name VARCHAR(100),
                        applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                        applied_by VARCHAR(100) DEFAULT CURRENT_USER,
                        execution_time_ms INTEGER,
                        UNIQUE(filename, module_name)
                    );
                    CREATE INDEX IF NOT EXISTS idx_{name}_module ON {table}(module_name, filename);",
                    name = self.table
                ),
            )
            .await?;
        }
        exec(client, "COMMIT").await
    }
}
