//! Applying the pending files: each in its own transaction with its tracking row (or statement by statement for `pgdbm:no-transaction`), with errors that name the file and line.

use super::*;

impl AsyncMigrationManager {
    /// Applies every pending migration. Waits for any concurrent run of the same module
    /// (another task or process) to finish first; then applies what is still pending.
    ///
    /// Before applying anything it checks that no applied file changed and that every pending
    /// file is valid (templates, no `BEGIN`/`COMMIT`). A file that fails is rolled back
    /// completely; the files before it in the run stay applied.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let report = pgdbm::AsyncMigrationManager::new(db, "./migrations").apply_pending_migrations().await?;
    /// println!("{} applied, {} already there", report.applied.len(), report.skipped.len());
    /// # Ok(()) }
    /// ```
    pub async fn apply_pending_migrations(&self) -> Result<MigrationReport> {
        let files = self.find_migration_files()?;
        // Fast path, without the lock or a dedicated connection: nothing to do. Rows commit
        // together with their files, so "all recorded" here means all applied.
        if let Some(applied) = self.read_applied().await? {
            let plan = self.plan(files.clone(), &applied)?;
            if plan.pending.is_empty() {
                self.log_warnings(&plan);
                tracing::debug!(target: "pgdbm::migrations", module = %self.module, "no pending migrations");
                return Ok(MigrationReport {
                    total: plan.skipped.len(),
                    skipped: plan.skipped,
                    ..Default::default()
                });
            }
        }

        let conn = Dedicated::acquire(&self.db).await?;
        let client = conn.client();
        if conn.serialised {
            let begin = conn.begin_untimed();
            let result = self.apply_locked(client, files, Some(&begin)).await;
            conn.close();
            return result;
        }
        self.lock(client).await?;
        let result = self.apply_locked(client, files, None).await;
        if let Err(e) = self.unlock(client).await {
            tracing::warn!(
                target: "pgdbm::migrations",
                module = %self.module,
                backend_pid = conn.backend_pid(),
                "could not release the migration lock ({e}); closing its connection instead, which releases it"
            );
        }
        conn.close();
        result
    }

    /// Applies `files` not yet recorded. `serialised`: no run lock is held (behind a
    /// transaction pooler), so each file takes the lock in its own transaction, opened by
    /// this statement.
    pub(super) async fn apply_locked(
        &self,
        client: &Client,
        files: Vec<Migration>,
        serialised: Option<&str>,
    ) -> Result<MigrationReport> {
        self.ensure_table_on(client).await?;
        let applied = self.read_applied_on(client).await?;
        let plan = self.plan(files, &applied)?;
        self.log_warnings(&plan);
        let prepared = plan
            .pending
            .iter()
            .map(|m| self.prepare(m))
            .collect::<Result<Vec<_>>>()?;

        let mut report = MigrationReport {
            skipped: plan.skipped,
            ..Default::default()
        };
        for p in &prepared {
            let outcome = crate::query::instrument::migration(
                &self.db,
                &p.migration.filename,
                &p.sql,
                async {
                    if let Some(begin) = serialised {
                        self.apply_serialised(client, begin, p).await
                    } else if p.no_transaction {
                        self.apply_no_transaction(client, p).await.map(Some)
                    } else {
                        self.apply_transactional(client, p).await.map(Some)
                    }
                },
            )
            .await;
            let ms = match outcome {
                Ok(Some(ms)) => ms,
                Ok(None) => {
                    // Another run applied it while this one waited for the lock.
                    report.skipped.push(p.migration.filename.clone());
                    continue;
                }
                Err(Error::Migration {
                    file,
                    mut message,
                    source,
                }) if !report.applied.is_empty() => {
                    let before: Vec<&str> =
                        report.applied.iter().map(|a| a.filename.as_str()).collect();
                    message.push_str(&format!(
                        ". Applied and recorded before it in this run: {}",
                        before.join(", ")
                    ));
                    return Err(Error::Migration {
                        file,
                        message,
                        source,
                    });
                }
                Err(e) => return Err(e),
            };
            tracing::info!(
                target: "pgdbm::migrations",
                module = %self.module,
                file = %p.migration.filename,
                execution_time_ms = ms,
                no_transaction = p.no_transaction,
                "applied migration"
            );
            report.total_time_ms += i64::from(ms);
            report.applied.push(AppliedMigration {
                filename: p.migration.filename.clone(),
                checksum: p.migration.checksum.clone(),
                execution_time_ms: ms,
            });
        }
        report.total = report.skipped.len() + report.applied.len();
        Ok(report)
    }

    pub(super) async fn apply_transactional(
        &self,
        client: &Client,
        p: &Prepared<'_>,
    ) -> Result<i32> {
        let started = Instant::now();
        exec(client, "BEGIN")
            .await
            .map_err(|e| self.file_error(p, e))?;
        let outcome = async {
            batch_execute_logged(client, &p.sql)
                .await
                .map_err(|e| self.server_error(p, None, e, &p.sql))?;
            let ms = elapsed_ms(started);
            self.record_applied(client, p, ms).await?;
            Ok(ms)
        }
        .await;
        match outcome {
            Ok(ms) => {
                exec(client, "COMMIT")
                    .await
                    .map_err(|e| self.file_error(p, e))?;
                Ok(ms)
            }
            Err(e) => {
                // If even this fails the connection is closed after the run, which rolls back.
                let _ = batch_execute_logged(client, "ROLLBACK").await;
                Err(e)
            }
        }
    }

    pub(super) async fn apply_no_transaction(
        &self,
        client: &Client,
        p: &Prepared<'_>,
    ) -> Result<i32> {
        let started = Instant::now();
        let count = p.statements.len();
        for (index, (line, sql)) in p.statements.iter().enumerate() {
            let at = StatementAt {
                index: index + 1,
                count,
                line: *line,
            };
            batch_execute_logged(client, sql)
                .await
                .map_err(|e| self.server_error(p, Some(&at), e, sql))?;
        }
        let ms = elapsed_ms(started);
        self.record_applied(client, p, ms).await?;
        Ok(ms)
    }

    pub(super) async fn record_applied(
        &self,
        client: &Client,
        p: &Prepared<'_>,
        ms: i32,
    ) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (filename, checksum, module_name, execution_time_ms) VALUES ($1, $2, $3, $4)",
            self.qualified_table()
        );
        let m = p.migration;
        client
            .execute_typed(
                &sql,
                &[
                    (&m.filename as &(dyn ToSql + Sync), Type::TEXT),
                    (&m.checksum, Type::TEXT),
                    (&self.module, Type::TEXT),
                    (&ms, Type::INT4),
                ],
            )
            .await
            .map_err(|e| {
                let e = query_error(e, &sql, std::iter::empty());
                migration_error(
                    Some(&m.filename),
                    format!(
                        "the file ran but could not be recorded in {}: {e}",
                        self.qualified_table()
                    ),
                    Some(e),
                )
            })?;
        Ok(())
    }

    pub(super) fn file_error(&self, p: &Prepared<'_>, e: Error) -> Error {
        migration_error(Some(&p.migration.filename), format!("{e}"), Some(e))
    }

    /// The server rejected (part of) a file: say where, what it means for the database, and
    /// what to do.
    pub(super) fn server_error(
        &self,
        p: &Prepared<'_>,
        at: Option<&StatementAt>,
        e: tokio_postgres::Error,
        sql: &str,
    ) -> Error {
        let mut msg = String::new();
        let first_line = at.map_or(1, |a| a.line);
        if let Some(a) = at {
            msg.push_str(&format!(
                "statement {} of {} (line {}) failed: ",
                a.index, a.count, a.line
            ));
        }
        match e.as_db_error() {
            Some(db) => {
                msg.push_str(&format!(
                    "{}: {} (SQLSTATE {})",
                    db.severity(),
                    db.message(),
                    db.code().code()
                ));
                if let Some(ErrorPosition::Original(pos)) = db.position() {
                    let byte = sql
                        .char_indices()
                        .nth((*pos as usize).saturating_sub(1))
                        .map_or(sql.len(), |(b, _)| b);
                    // Line numbers of the rendered SQL are those of the file (templates never
                    // add lines); a statement's lines count from its first line.
                    let line = lexer::line_at(sql, byte) + first_line - lexer::line_at(sql, 0);
                    msg.push_str(&format!(" at line {line}"));
                }
                if let Some(d) = db.detail() {
                    msg.push_str(&format!("; detail: {d}"));
                }
                if let Some(h) = db.hint() {
                    msg.push_str(&format!("; hint: {h}"));
                }
                if db.code().code() == "25001" && !p.no_transaction {
                    msg.push_str(&format!(
                        ". This statement cannot run inside a transaction: put `{NO_TRANSACTION_MARKER}` in the file's \
                         leading comment block to run the file statement by statement"
                    ));
                }
            }
            None => msg.push_str(&e.to_string()),
        }
        // The server's detail and hint end with a period; ours follow as sentences.
        while msg.ends_with('.') {
            msg.pop();
        }
        if p.no_transaction {
            msg.push_str(
                ". The file runs without a transaction (pgdbm:no-transaction): the statements before the failed one \
                 were committed and stay; the file was not recorded. Make its statements idempotent (IF NOT EXISTS, \
                 DROP ... IF EXISTS), fix it and run again; a failed CREATE INDEX CONCURRENTLY can leave an INVALID \
                 index to drop first",
            );
        } else {
            msg.push_str(". The file was rolled back: none of its changes were kept and it was not recorded. Fix it and run again");
        }
        let source = query_error(e, sql, std::iter::empty());
        migration_error(Some(&p.migration.filename), msg, Some(source))
    }
}
