//! Isolated test databases: a fresh database per test (cloned from a migrated template when
//! migrations are given), or a fresh schema per test in one database; dropped afterwards, also
//! when the test panics.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::template::{quote_ident, validate_identifier};

use super::plan::{Migrations, Plan};
use super::templates::{claim_spare, ensure_template, refill_spares, retain_template, TemplateUse};

const DEFAULT_PREFIX: &str = "test";
/// Prefixes longer than this leave too little room for the unique part in 63 characters.
const MAX_PREFIX: usize = 30;
const ENV_VARS: &str = "TEST_DB_HOST, TEST_DB_PORT, TEST_DB_USER, TEST_DB_PASSWORD, DATABASE_URL";

/// Where test databases are created: `TEST_DB_HOST`/`TEST_DB_PORT`/`TEST_DB_USER`/
/// `TEST_DB_PASSWORD` when any is set, else `DATABASE_URL`, else the local default
/// `postgresql://postgres@127.0.0.1:5432/postgres` when a server answers there, else a
/// throwaway server for this process (see [`server_url`](super::server_url)). The database named there is the maintenance
/// database test databases are created from.
pub fn server_config_from_env() -> DatabaseConfig {
    server_config_from(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

fn server_config_from(var: impl Fn(&str) -> Option<String>) -> DatabaseConfig {
    let base = DatabaseConfig {
        min_connections: 1,
        max_connections: 2,
        retry_attempts: 0,
        ..DatabaseConfig::default()
    };
    let test_vars = [
        "TEST_DB_HOST",
        "TEST_DB_PORT",
        "TEST_DB_USER",
        "TEST_DB_PASSWORD",
    ];
    if test_vars.iter().any(|v| var(v).is_some()) {
        return DatabaseConfig {
            host: var("TEST_DB_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port: var("TEST_DB_PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432),
            user: var("TEST_DB_USER").unwrap_or_else(|| "postgres".into()),
            password: var("TEST_DB_PASSWORD"),
            database: "postgres".into(),
            ..base
        };
    }
    // Without DATABASE_URL: the local server, or a throwaway one started for this process.
    let url = var("DATABASE_URL")
        .or_else(|| super::local::server_url().ok())
        .unwrap_or_else(|| super::local::DEFAULT_SERVER_URL.into());
    DatabaseConfig {
        connection_string: Some(url),
        ..base
    }
}

/// The same server, another database.
pub(super) fn for_database(server: &DatabaseConfig, database: &str) -> Result<DatabaseConfig> {
    let mut cfg = server.clone();
    if server.connection_string.is_some() {
        let pg = server.pg_config()?;
        // Rebuild from the parsed parts; the host may be a socket directory.
        let host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => server.host.clone(),
        };
        cfg.connection_string = None;
        cfg.host = host;
        cfg.port = pg.get_ports().first().copied().unwrap_or(5432);
        cfg.user = pg.get_user().unwrap_or("postgres").to_owned();
        cfg.password = pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
    }
    cfg.database = database.to_owned();
    Ok(cfg)
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    if validate_identifier(name).is_err() || name.len() > MAX_PREFIX && kind == "prefix" {
        return Err(Error::TestDatabase(format!(
            "invalid test database {kind} {:?}: use letters, digits and underscores, starting with \
             a letter or underscore (at most {MAX_PREFIX} characters for a prefix), e.g. \"test\"",
            crate::template::shorten(name)
        )));
    }
    Ok(())
}

pub(super) fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}_{}_{}_{}_{}",
        prefix.to_ascii_lowercase(),
        now.as_secs(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        now.subsec_nanos() % 10_000
    )
}

/// The creation time (Unix seconds) of a database that [`unique_name`] named for `prefix`, or
/// `None` when `name` does not have exactly that shape: `{prefix}_`, a 10-digit timestamp, and
/// three more all-digit parts. Anything looser could force-drop a real database named, say,
/// `test_2024_q1_archive`.
fn generated_created_at(prefix: &str, name: &str) -> Option<u64> {
    let rest = name
        .strip_prefix(&prefix.to_ascii_lowercase())?
        .strip_prefix('_')?;
    let parts: Vec<&str> = rest.split('_').collect();
    let [secs, pid, n, nanos] = parts[..] else {
        return None;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Ten digits: 2001-09-09 to 2286, so a year, a date or a small number never passes.
    if secs.len() != 10 || !digits(secs) || !digits(pid) || !digits(n) || !digits(nanos) {
        return None;
    }
    secs.parse().ok()
}

/// A runtime of its own for test-database housekeeping. The maintenance pools live on it, so
/// they outlive the per-test runtimes of `#[pgdbm::test]`, and spare clones are made on it in
/// the background while tests run.
pub(super) fn background() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pgdbm-testing")
            .enable_all()
            .build()
            .expect("a tokio runtime for pgdbm's test-database housekeeping")
    })
}

/// Runs `fut` on the background runtime and waits for it from any runtime (or none).
fn block_on_background<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    background().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().ok()
}

/// The maintenance manager for a server: one small pool per server for the whole process,
/// created on the background runtime.
pub(super) async fn maintenance(server: &DatabaseConfig) -> Result<AsyncDatabaseManager> {
    static CACHE: OnceLock<Mutex<HashMap<String, AsyncDatabaseManager>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = server_key(server);
    if let Some(m) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        if m.pool().is_ok_and(|p| !p.is_closed()) {
            return Ok(m.clone());
        }
    }
    let cfg = DatabaseConfig {
        schema: None,
        min_connections: 1,
        max_connections: 4,
        ..server.clone()
    };
    let masked = server.get_dsn_masked();
    let created = background()
        .spawn(async move {
            let db = AsyncDatabaseManager::new(cfg)?;
            db.connect().await?;
            Ok::<_, Error>(db)
        })
        .await
        .map_err(|e| Error::TestDatabase(format!("housekeeping task failed: {e}")))?;
    let db = created.map_err(|e| {
        Error::TestDatabase(format!(
            "cannot reach the test server at {masked} (read from {ENV_VARS}; set one of them to point \
             at a PostgreSQL you may create databases on): {e}"
        ))
    })?;
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, db.clone());
    Ok(db)
}

/// What identifies a server: its DSN (with the password) and TLS settings. Stays in memory.
pub(super) fn server_key(server: &DatabaseConfig) -> String {
    format!(
        "{}|{:?}|{:?}|{:?}",
        server.get_dsn(),
        server.ssl_enabled,
        server.ssl_mode,
        server.ssl_ca_file
    )
}

pub(super) fn wrap(what: &str, e: Error) -> Error {
    match e {
        Error::TestDatabase(_) => e,
        other => Error::TestDatabase(format!("{what}: {other}")),
    }
}

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

/// Waits (up to 10 s) until no statement that names `name` runs on another connection: a
/// creation or rename cut off halfway, whose cancel may still be on its way.
pub(super) async fn wait_for_statements_naming(
    maint: &AsyncDatabaseManager,
    name: &str,
) -> Result<()> {
    for _ in 0..200 {
        let running: Option<i64> = maint
            .fetch_value(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                 AND state = 'active' AND position($1 in query) > 0",
                &[&name],
            )
            .await?;
        if running == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
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
mod tests {
    use super::*;

    #[test]
    fn env_precedence() {
        let c = server_config_from(|k| (k == "TEST_DB_PORT").then(|| "6543".to_string()));
        assert_eq!(
            (c.host.as_str(), c.port, c.connection_string.as_deref()),
            ("127.0.0.1", 6543, None)
        );
        let c = server_config_from(|k| {
            (k == "DATABASE_URL").then(|| "postgresql://u@h/db".to_string())
        });
        assert_eq!(c.connection_string.as_deref(), Some("postgresql://u@h/db"));
        // Nothing set: the local server, or the throwaway one started for this process.
        let c = server_config_from(|_| None);
        assert_eq!(c.connection_string, super::super::server_url().ok());
    }

    #[test]
    fn names_are_validated() {
        for bad in [
            "test\"; DROP DATABASE production; --",
            "test' OR '1'='1",
            "test/*comment*/",
            "123test",
            "test-db",
            "test db",
            "",
        ] {
            assert!(
                matches!(check_name("prefix", bad), Err(Error::TestDatabase(_))),
                "{bad}"
            );
        }
        check_name("prefix", "test").unwrap();
        let n = unique_name("Test");
        assert!(n.starts_with("test_"));
        check_name("name", &n).unwrap();
    }

    #[test]
    fn only_generated_names_count_as_leftovers() {
        let n = unique_name("Test");
        let secs: u64 = n.split('_').nth(1).unwrap().parse().unwrap();
        assert_eq!(generated_created_at("test", &n), Some(secs));
        assert_eq!(generated_created_at("Test", &n), Some(secs));
        assert_eq!(
            generated_created_at("test", "test_1700000000_4242_0_17"),
            Some(1_700_000_000)
        );
        assert_eq!(
            generated_created_at("my_app", "my_app_1700000000_1_2_3"),
            Some(1_700_000_000)
        );
        for real in [
            "test_2024_q1_archive",
            "test_2024_01_15_0",
            "test_2024",
            "test_1700000000",
            "test_1700000000_1_2",
            "test_1700000000_1_2_3_4",
            "test_1700000000_1_2_x",
            "test_1700000000__2_3",
            "test_17000000000_1_2_3",
            "test_+700000000_1_2_3",
            "testx_1700000000_1_2_3",
            "tes_1700000000_1_2_3",
            "test1700000000_1_2_3",
            "other_1700000000_1_2_3",
            "pgdbm_spare_abc_1700000000_1_2_3",
        ] {
            assert_eq!(generated_created_at("test", real), None, "{real}");
        }
    }
}
