//! Versioned SQL migrations: [`AsyncMigrationManager`].
//!
//! Files are applied once per module, in numeric version order, into the manager's schema, and
//! recorded in a tracking table that Python pgdbm 0.5 reads and writes too. Each file runs in one
//! transaction together with its tracking row, unless its leading comment block says
//! `-- pgdbm:no-transaction`. Concurrent runs (tasks or processes) serialise on an advisory lock
//! held on one dedicated connection, so each file is applied exactly once.

use crate::sql::lexer;

mod apply;
mod create;
mod dedicated;
mod embed;
mod history;
mod lock;
mod plan;
mod serialised;
mod source;
mod table;

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
