//! Reading the tracking table: what was applied, what is pending, the history.

use super::*;

impl AsyncMigrationManager {
    pub(super) async fn table_exists(&self) -> Result<bool> {
        let exists: Option<bool> = self
            .db
            .fetch_value(
                "SELECT to_regclass($1::text) IS NOT NULL",
                &[&self.qualified_table()],
            )
            .await
            .map_err(|e| self.read_error(e))?;
        Ok(exists.unwrap_or(false))
    }

    /// Applied rows through the pool; `None` when the tracking table does not exist yet.
    pub(super) async fn read_applied(&self) -> Result<Option<Vec<MigrationRecord>>> {
        if !self.table_exists().await? {
            return Ok(None);
        }
        let rows = self
            .db
            .fetch_all(&self.select_sql("ORDER BY id"), &[&self.module])
            .await
            .map_err(|e| self.read_error(e))?;
        rows.iter()
            .map(|r| self.record(r))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub(super) async fn read_applied_on(&self, client: &Client) -> Result<Vec<MigrationRecord>> {
        let sql = self.select_sql("ORDER BY id");
        let rows = client
            .query_typed(&sql, &[(&self.module as &(dyn ToSql + Sync), Type::TEXT)])
            .await
            .map_err(|e| self.read_error(query_error(e, &sql, std::iter::empty())))?;
        rows.into_iter()
            .map(|r| self.record(&Record::new(r)))
            .collect()
    }

    pub(super) fn record(&self, r: &Record) -> Result<MigrationRecord> {
        let decode = |r: &Record| -> Result<MigrationRecord> {
            Ok(MigrationRecord {
                filename: r.get("filename")?,
                checksum: r.get("checksum")?,
                module_name: r.get("module_name")?,
                applied_at: r.get("applied_at")?,
                applied_by: r.get("applied_by")?,
                execution_time_ms: r.get("execution_time_ms")?,
            })
        };
        decode(r).map_err(|e| {
            migration_error(
                None,
                format!(
                    "the tracking table {} does not have the expected columns ({e}); was it created by \
                     another tool? pgdbm expects filename, checksum, module_name, applied_at, applied_by, \
                     execution_time_ms",
                    self.qualified_table()
                ),
                Some(e),
            )
        })
    }

    /// The applied migrations of this module (and module-less rows), in file order. Empty
    /// when the tracking table does not exist yet; writes nothing.
    pub async fn get_applied_migrations(&self) -> Result<Vec<MigrationRecord>> {
        let records = self.read_applied().await?.unwrap_or_default();
        let mut by_name: HashMap<String, MigrationRecord> = HashMap::new();
        for r in records {
            let keep_old = by_name
                .get(&r.filename)
                .is_some_and(|old| old.module_name.is_some() || r.module_name.is_none());
            if !keep_old {
                by_name.insert(r.filename.clone(), r);
            }
        }
        let mut out: Vec<MigrationRecord> = by_name.into_values().collect();
        out.sort_by(|a, b| compare_filenames(&a.filename, &b.filename));
        Ok(out)
    }

    /// The files not applied yet, in order. Works on a fresh database (no tracking table) and
    /// writes nothing. A changed applied file is an error.
    pub async fn get_pending_migrations(&self) -> Result<Vec<Migration>> {
        let files = self.find_migration_files()?;
        let applied = self.read_applied().await?.unwrap_or_default();
        let plan = self.plan(files, &applied)?;
        self.log_warnings(&plan);
        Ok(plan.pending)
    }

    /// What [`apply_pending_migrations`](Self::apply_pending_migrations) would apply, after
    /// the same checks (changed files, templates, transaction statements), without writing
    /// anything. Works on a fresh database.
    pub async fn dry_run(&self) -> Result<DryRun> {
        let files = self.find_migration_files()?;
        let applied = self.read_applied().await?.unwrap_or_default();
        let plan = self.plan(files, &applied)?;
        self.log_warnings(&plan);
        for m in &plan.pending {
            self.prepare(m)?;
        }
        Ok(DryRun {
            total: plan.pending.len() + plan.skipped.len(),
            pending: plan.pending,
            skipped: plan.skipped,
        })
    }

    /// The last `limit` migrations applied for this module, newest first. Empty when the
    /// tracking table does not exist yet.
    pub async fn get_migration_history(&self, limit: usize) -> Result<Vec<MigrationRecord>> {
        if !self.table_exists().await? {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .fetch_all(
                &self.select_sql("ORDER BY applied_at DESC, id DESC LIMIT $2"),
                &[&self.module, &limit],
            )
            .await
            .map_err(|e| self.read_error(e))?;
        rows.iter().map(|r| self.record(r)).collect()
    }
}
