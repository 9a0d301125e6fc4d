//! Versioned SQL migrations: [`AsyncMigrationManager`].
//!
//! Files are applied once per module, in numeric version order, into the manager's schema, and
//! recorded in a tracking table that Python pgdbm 0.5 reads and writes too. Each file runs in one
//! transaction together with its tracking row, unless its leading comment block says
//! `-- pgdbm:no-transaction`. Concurrent runs (tasks or processes) serialise on an advisory lock
//! held on one dedicated connection, so each file is applied exactly once.

use crate::sql::lexer;

mod dedicated;
mod embed;
mod serialised;
mod source;

pub use embed::EmbeddedMigrations;
pub use source::Migration;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::query::{batch_execute_logged, batch_logged, query_error};
use crate::record::Record;
use crate::template::{check_identifier, quote_ident, Templates};

use dedicated::Dedicated;
use source::{
    compare_filenames, has_no_transaction_marker, is_marker, strip_bom, NO_TRANSACTION_MARKER,
};

/// Builds an [`Error::Migration`].
pub(crate) fn migration_error(
    file: Option<&str>,
    message: impl Into<String>,
    source: Option<Error>,
) -> Error {
    Error::Migration {
        file: file.map(str::to_owned),
        message: message.into(),
        source: source.map(Box::new),
    }
}

/// A row of the tracking table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationRecord {
    /// The migration's filename.
    pub filename: String,
    /// The checksum recorded when it was applied.
    pub checksum: String,
    /// The module that applied it; `None` (rows from old tools) counts for every module.
    pub module_name: Option<String>,
    /// When it was applied (server time, `TIMESTAMP` without time zone).
    pub applied_at: NaiveDateTime,
    /// The database role that applied it.
    pub applied_by: Option<String>,
    /// How long applying it took.
    pub execution_time_ms: Option<i32>,
}

/// A migration applied by this run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppliedMigration {
    /// The migration's filename.
    pub filename: String,
    /// Its checksum, as recorded.
    pub checksum: String,
    /// How long it took, as recorded (at least 1).
    pub execution_time_ms: i32,
}

/// What [`AsyncMigrationManager::apply_pending_migrations`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// The files applied by this run, in order.
    pub applied: Vec<AppliedMigration>,
    /// The files that were already applied (recorded for this module, or with no module).
    pub skipped: Vec<String>,
    /// Applied files in total for this module after the run: `applied` + `skipped`.
    pub total: usize,
    /// The sum of `applied[].execution_time_ms`.
    pub total_time_ms: i64,
}

/// What [`AsyncMigrationManager::apply_pending_migrations`] would do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DryRun {
    /// The files that would be applied, in order.
    pub pending: Vec<Migration>,
    /// The files already applied.
    pub skipped: Vec<String>,
    /// `pending` + `skipped`.
    pub total: usize,
}

#[derive(Debug, Clone)]
enum Source {
    Dir(PathBuf),
    Embedded(EmbeddedMigrations),
}

/// Applies versioned SQL migration files to the manager's schema, once per module, recording
/// them in a tracking table shared with Python pgdbm.
///
/// * Files are `*.sql` directly in the directory, applied in numeric version order (`001_`,
///   `2_`, `10_`, `V3__`, `20240101120000_`), ties by filename. `{{tables.x}}`,
///   `{{tables.s.x}}` and `{{schema}}` templates work inside them.
/// * The tracking table (`schema_migrations` by default) lives in the manager's schema
///   (`public` without one). Rows whose `module_name` is NULL count as applied for every
///   module. The default module name is the manager's schema, or `default` without one.
/// * Each file and its tracking row commit together. A file whose leading comment block holds
///   `-- pgdbm:no-transaction` runs statement by statement in autocommit instead (for
///   `CREATE INDEX CONCURRENTLY`), and is recorded after its last statement succeeds.
/// * A run holds an advisory lock for (schema, table, module) on one dedicated connection with
///   `lock_timeout` and `statement_timeout` off, so concurrent runs from any number of tasks or
///   processes apply each file once, and long migrations are not cut short. That connection is
///   closed afterwards, never returned to the pool.
/// * Every failure is an [`Error::Migration`] naming the file at fault, with the server's
///   error (and SQLSTATE) as its source.
///
/// ```no_run
/// use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig};
///
/// # async fn f() -> pgdbm::Result<()> {
/// let pool = AsyncDatabaseManager::create_shared_pool(&DatabaseConfig::from_env()).await?;
/// let db = AsyncDatabaseManager::from_pool(pool, Some("billing"))?;
/// let report = AsyncMigrationManager::new(&db, "./migrations")
///     .module_name("billing")?
///     .apply_pending_migrations()
///     .await?;
/// for m in &report.applied {
///     println!("applied {} in {} ms", m.filename, m.execution_time_ms);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncMigrationManager {
    db: AsyncDatabaseManager,
    source: Source,
    table: String,
    module: String,
}

/// A pending file, checked and rendered, ready to run.
struct Prepared<'m> {
    migration: &'m Migration,
    sql: String,
    no_transaction: bool,
    /// For no-transaction files: (line, statement).
    statements: Vec<(usize, String)>,
}

struct Plan {
    pending: Vec<Migration>,
    skipped: Vec<String>,
    warnings: Vec<String>,
}

/// Which statement of a no-transaction file failed.
struct StatementAt {
    index: usize,
    count: usize,
    line: usize,
}

impl AsyncMigrationManager {
    /// The default tracking table name, as in Python pgdbm.
    pub const DEFAULT_TABLE: &'static str = "schema_migrations";
    /// The module name used when neither `module_name` nor a schema is given.
    pub const DEFAULT_MODULE: &'static str = "default";

    /// A manager for the `*.sql` files in `migrations_path` (read when needed, not now).
    pub fn new(db: &AsyncDatabaseManager, migrations_path: impl AsRef<Path>) -> Self {
        Self::with_source(db, Source::Dir(migrations_path.as_ref().to_path_buf()))
    }

    /// A manager for migrations compiled into the binary with
    /// [`embed_migrations!`](crate::embed_migrations): how a library crate ships its own
    /// schema, applied into whichever schema the host gives it.
    ///
    /// ```no_run
    /// static MIGRATIONS: pgdbm::EmbeddedMigrations =
    ///     // The directory of `.sql` files, relative to the crate's Cargo.toml.
    ///     pgdbm::embed_migrations!("$CARGO_MANIFEST_DIR/tests/fixtures/migrations");
    ///
    /// /// The library's entry point: works on the host's pool, in its own schema.
    /// pub async fn install(host_pool: pgdbm::Pool) -> pgdbm::Result<pgdbm::AsyncDatabaseManager> {
    ///     let db = pgdbm::AsyncDatabaseManager::from_pool(host_pool, Some("billing"))?;
    ///     pgdbm::AsyncMigrationManager::from_embedded(&db, MIGRATIONS)
    ///         .module_name("billing")?
    ///         .apply_pending_migrations()
    ///         .await?;
    ///     Ok(db)
    /// }
    /// ```
    pub fn from_embedded(db: &AsyncDatabaseManager, migrations: EmbeddedMigrations) -> Self {
        Self::with_source(db, Source::Embedded(migrations))
    }

    fn with_source(db: &AsyncDatabaseManager, source: Source) -> Self {
        AsyncMigrationManager {
            db: db.clone(),
            source,
            table: Self::DEFAULT_TABLE.to_owned(),
            module: db.schema().unwrap_or(Self::DEFAULT_MODULE).to_owned(),
        }
    }

    /// Uses another tracking table name (validated: letters, digits, underscores, starting
    /// with a letter or underscore, at most 63 characters). Like Python pgdbm, the name is not
    /// quoted, so it folds to lower case.
    ///
    /// ```
    /// # let db = pgdbm::AsyncDatabaseManager::new(Default::default()).unwrap();
    /// use pgdbm::AsyncMigrationManager;
    /// assert!(AsyncMigrationManager::new(&db, "m").table("app_migrations").is_ok());
    /// assert!(AsyncMigrationManager::new(&db, "m").table("migrations; DROP TABLE users").is_err());
    /// ```
    pub fn table(mut self, name: &str) -> Result<Self> {
        check_identifier(name, "migrations table name").map_err(|e| {
            let message = match &e {
                Error::Schema(m) => format!("{m} (the default is \"schema_migrations\")"),
                other => other.to_string(),
            };
            migration_error(None, message, Some(e))
        })?;
        self.table = name.to_owned();
        Ok(self)
    }

    /// Records and looks up migrations under this module name instead of the default (the
    /// manager's schema, or `default`). Several modules can share one schema and tracking
    /// table. A database that Python pgdbm migrated through a schemaless shared pool recorded
    /// the module `public`: pass that to continue it.
    pub fn module_name(mut self, name: &str) -> Result<Self> {
        if name.trim().is_empty() || name.chars().count() > 100 || name.contains('\0') {
            return Err(migration_error(
                None,
                format!(
                    "invalid module name {:?}: it must be 1 to 100 characters (the tracking table's \
                     module_name column) and not blank",
                    crate::template::shorten(name)
                ),
                None,
            ));
        }
        self.module = name.to_owned();
        Ok(self)
    }

    /// The module name migrations are recorded under.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The tracking table as it appears in SQL: `"schema".table`.
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", quote_ident(self.schema()), self.table)
    }

    fn schema(&self) -> &str {
        self.db.schema().unwrap_or("public")
    }

    fn source_description(&self) -> String {
        match &self.source {
            Source::Dir(p) => p.display().to_string(),
            Source::Embedded(_) => "the embedded migrations".to_owned(),
        }
    }

    /// The migration files, in the order they are applied. Reads the directory (no database
    /// access). Fails on a file that is empty, not UTF-8, or a symlink leading outside the
    /// directory.
    pub fn find_migration_files(&self) -> Result<Vec<Migration>> {
        match &self.source {
            Source::Dir(dir) => source::load_dir(dir),
            Source::Embedded(e) => source::load_embedded(e),
        }
    }

    fn lock_key(&self, kind: &str, with_module: bool) -> i64 {
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

    fn select_sql(&self, order_and_limit: &str) -> String {
        format!(
            "SELECT filename, checksum, module_name, applied_at, applied_by, execution_time_ms FROM {} \
             WHERE module_name = $1 OR module_name IS NULL {order_and_limit}",
            self.qualified_table()
        )
    }

    fn read_error(&self, e: Error) -> Error {
        migration_error(
            None,
            format!(
                "could not read the tracking table {}: {e}",
                self.qualified_table()
            ),
            Some(e),
        )
    }

    async fn table_exists(&self) -> Result<bool> {
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
    async fn read_applied(&self) -> Result<Option<Vec<MigrationRecord>>> {
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

    async fn read_applied_on(&self, client: &Client) -> Result<Vec<MigrationRecord>> {
        let sql = self.select_sql("ORDER BY id");
        let rows = client
            .query_typed(&sql, &[(&self.module as &(dyn ToSql + Sync), Type::TEXT)])
            .await
            .map_err(|e| self.read_error(query_error(e, &sql, std::iter::empty())))?;
        rows.into_iter()
            .map(|r| self.record(&Record::new(r)))
            .collect()
    }

    fn record(&self, r: &Record) -> Result<MigrationRecord> {
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

    /// Compares files with the recorded rows: what is pending, what was applied, what looks
    /// wrong. A changed applied file is an error.
    fn plan(&self, files: Vec<Migration>, applied: &[MigrationRecord]) -> Result<Plan> {
        let mut by_name: HashMap<&str, &MigrationRecord> = HashMap::new();
        for r in applied {
            // A row of this module wins over a module-less one for the same file.
            let replace = match by_name.get(r.filename.as_str()) {
                None => true,
                Some(old) => old.module_name.is_none() && r.module_name.is_some(),
            };
            if replace {
                by_name.insert(&r.filename, r);
            }
        }
        let mut skipped: Vec<String> = by_name.keys().map(|s| (*s).to_owned()).collect();
        skipped.sort_by(|a, b| compare_filenames(a, b));
        let last_applied = skipped.last().cloned();

        let mut warnings = Vec::new();
        for name in &skipped {
            if !files.iter().any(|f| &f.filename == name) {
                warnings.push(format!(
                    "migration {name} is recorded as applied (module {:?}, table {}) but its file is missing \
                     from {}; restore the file if it was removed by mistake",
                    self.module,
                    self.qualified_table(),
                    self.source_description()
                ));
            }
        }

        let mut pending = Vec::new();
        for file in files {
            match by_name.get(file.filename.as_str()) {
                Some(rec) if rec.checksum != file.checksum => {
                    return Err(migration_error(
                        Some(&file.filename),
                        format!(
                            "the file was changed after it was applied: the tracking table {} recorded checksum \
                             {} but the file now has checksum {}. Nothing was applied. Applied migrations must \
                             not be edited: restore the original file and put the change in a new migration \
                             (in development only, you may delete its row to re-apply it)",
                            self.qualified_table(),
                            rec.checksum,
                            file.checksum
                        ),
                        None,
                    ));
                }
                Some(_) => {}
                None => {
                    if let Some(last) = &last_applied {
                        if compare_filenames(&file.filename, last).is_lt() {
                            warnings.push(format!(
                                "migration {} is new but sorts before the already applied {last}; it will be \
                                 applied now, out of order. Give it a higher version number if it depends on \
                                 later migrations",
                                file.filename
                            ));
                        }
                    }
                    pending.push(file);
                }
            }
        }
        Ok(Plan {
            pending,
            skipped,
            warnings,
        })
    }

    fn log_warnings(&self, plan: &Plan) {
        for w in &plan.warnings {
            tracing::warn!(target: "pgdbm::migrations", module = %self.module, "{w}");
        }
    }

    /// Renders and checks a pending file before anything of the run is applied.
    fn prepare<'m>(&self, m: &'m Migration) -> Result<Prepared<'m>> {
        let file = Some(m.filename.as_str());
        // The manager's own renderer caches every query it renders; a throwaway one with the
        // same schema keeps (possibly large) files out of that cache.
        let templates = Templates::new(self.db.schema());
        let sql = templates
            .render(strip_bom(&m.content))
            .map(|s| s.into_owned())
            .map_err(|e| {
                migration_error(
                    file,
                    format!("the file has an invalid template placeholder: {e}"),
                    Some(e),
                )
            })?;
        let lexed = lexer::lex(&sql);
        if let Some(c) = lexed
            .line_comments
            .iter()
            .find(|c| !c.leading && is_marker(c.text))
        {
            return Err(migration_error(
                file,
                format!(
                    "line {}: `{NO_TRANSACTION_MARKER}` only takes effect in the file's leading comment block, \
                     before the first statement; move it to the top of the file",
                    lexer::line_at(&sql, c.offset)
                ),
                None,
            ));
        }
        for piece in &lexed.pieces {
            if let Some(words) = lexer::transaction_control(piece) {
                return Err(migration_error(
                    file,
                    format!(
                        "line {}: `{words}` is not allowed in a migration. pgdbm runs each file in one transaction \
                         together with its tracking row, so the file is applied completely or not at all, and a \
                         transaction statement in the file would break that. Remove it. For statements that cannot \
                         run inside a transaction (CREATE INDEX CONCURRENTLY), put `{NO_TRANSACTION_MARKER}` in \
                         the file's leading comment block instead",
                        lexer::line_at(&sql, piece.start)
                    ),
                    None,
                ));
            }
        }
        let no_transaction = has_no_transaction_marker(&lexed);
        let statements = if no_transaction {
            lexed
                .pieces
                .iter()
                .filter(|p| p.significant)
                .map(|p| (lexer::line_at(&sql, p.start), p.text.to_owned()))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Prepared {
            migration: m,
            sql,
            no_transaction,
            statements,
        })
    }

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

    async fn lock(&self, client: &Client) -> Result<()> {
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

    fn lock_error(&self, e: Error) -> Error {
        migration_error(
            None,
            format!(
                "could not take the migration lock for module {:?}: {e}",
                self.module
            ),
            Some(e),
        )
    }

    async fn unlock(&self, client: &Client) -> Result<()> {
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

    /// Applies `files` not yet recorded. `serialised`: no run lock is held (behind a
    /// transaction pooler), so each file takes the lock in its own transaction, opened by
    /// this statement.
    async fn apply_locked(
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
            let outcome =
                crate::observe::migration(&self.db, &p.migration.filename, &p.sql, async {
                    if let Some(begin) = serialised {
                        self.apply_serialised(client, begin, p).await
                    } else if p.no_transaction {
                        self.apply_no_transaction(client, p).await.map(Some)
                    } else {
                        self.apply_transactional(client, p).await.map(Some)
                    }
                })
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

    async fn apply_transactional(&self, client: &Client, p: &Prepared<'_>) -> Result<i32> {
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

    async fn apply_no_transaction(&self, client: &Client, p: &Prepared<'_>) -> Result<i32> {
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

    async fn record_applied(&self, client: &Client, p: &Prepared<'_>, ms: i32) -> Result<()> {
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

    fn file_error(&self, p: &Prepared<'_>, e: Error) -> Error {
        migration_error(Some(&p.migration.filename), format!("{e}"), Some(e))
    }

    /// The server rejected (part of) a file: say where, what it means for the database, and
    /// what to do.
    fn server_error(
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

    async fn ensure_table_on(&self, client: &Client) -> Result<()> {
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

    async fn try_ensure_table(&self, client: &Client) -> Result<()> {
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

    /// Writes a new migration file `<UTC timestamp>_<name>.sql` with `content`, exactly as
    /// given (pgdbm wraps files in a transaction itself, so never add `BEGIN`/`COMMIT`; content
    /// that has them is refused). The name is sanitised to letters, digits and underscores; a
    /// name with a path in it is refused. The timestamp is `YYYYMMDD_HHMMSS` as Python pgdbm
    /// writes it, or `YYYYMMDDHHMMSS` when the directory's files use that longer form, so the
    /// new file sorts last. Never overwrites a file.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let m = pgdbm::AsyncMigrationManager::new(db, "./migrations");
    /// let path = m.create_migration("add user email", "ALTER TABLE {{tables.users}} ADD email text;").await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_migration(&self, name: &str, content: &str) -> Result<PathBuf> {
        let Source::Dir(dir) = &self.source else {
            return Err(migration_error(
                None,
                "these migrations are embedded in the binary; add the file to the source directory \
                 named in embed_migrations! and rebuild",
                None,
            ));
        };
        let clean = source::sanitize_name(name)?;
        if content.trim().is_empty() {
            return Err(migration_error(
                Some(&clean),
                "the content is empty; an empty migration is refused when applied, so pass its SQL",
                None,
            ));
        }
        if let Some(piece) = lexer::lex(content)
            .pieces
            .iter()
            .find(|p| lexer::transaction_control(p).is_some())
        {
            let words = lexer::transaction_control(piece).unwrap_or_default();
            return Err(migration_error(
                Some(&clean),
                format!(
                    "the content has `{words}` (line {}): pgdbm runs each migration in a transaction itself, \
                     so remove the transaction statements",
                    lexer::line_at(content, piece.start)
                ),
                None,
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            migration_error(
                None,
                format!(
                    "cannot create the migrations directory {}: {e}",
                    dir.display()
                ),
                None,
            )
        })?;
        let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
        let mut filename = format!("{}_{clean}.sql", now.format("%Y%m%d_%H%M%S"));
        let existing: Vec<String> = std::fs::read_dir(dir)
            .map(|it| {
                it.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let sorts_first = |f: &str| {
            existing
                .iter()
                .any(|e| e.ends_with(".sql") && compare_filenames(f, e).is_lt())
        };
        if sorts_first(&filename) {
            filename = format!("{}_{clean}.sql", now.format("%Y%m%d%H%M%S"));
            if sorts_first(&filename) {
                tracing::warn!(
                    target: "pgdbm::migrations",
                    file = %filename,
                    "the new migration sorts before existing files in {}; rename it with a higher version",
                    dir.display()
                );
            }
        }
        let path = dir.join(&filename);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                migration_error(
                    Some(&filename),
                    format!(
                        "cannot create {}: {e}. Choose another name or wait a second",
                        path.display()
                    ),
                    None,
                )
            })?;
        f.write_all(content.as_bytes()).map_err(|e| {
            migration_error(
                Some(&filename),
                format!("cannot write {}: {e}", path.display()),
                None,
            )
        })?;
        tracing::info!(target: "pgdbm::migrations", path = %path.display(), "created migration");
        Ok(path)
    }
}

fn elapsed_ms(started: Instant) -> i32 {
    i32::try_from(started.elapsed().as_millis())
        .unwrap_or(i32::MAX)
        .max(1)
}

async fn exec(client: &Client, sql: &str) -> Result<()> {
    batch_logged(client, sql).await
}

async fn query_one<T>(client: &Client, sql: &str, value: &(dyn ToSql + Sync), ty: Type) -> Result<T>
where
    T: for<'a> postgres_types::FromSql<'a>,
{
    let rows = client
        .query_typed(sql, &[(value, ty)])
        .await
        .map_err(|e| query_error(e, sql, std::iter::empty()))?;
    let row = rows
        .first()
        .ok_or_else(|| Error::decode(0, "-", format!("{sql} returned no row")))?;
    row.try_get(0).map_err(|e| Error::decode(0, "-", e))
}
