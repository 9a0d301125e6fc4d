//! Where test databases are made: the server from the environment, unique names, and the
//! housekeeping runtime and maintenance pools that outlive each test's own runtime.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::template::validate_identifier;

pub(super) const DEFAULT_PREFIX: &str = "test";
/// Prefixes longer than this leave too little room for the unique part in 63 characters.
pub(super) const MAX_PREFIX: usize = 30;
const ENV_VARS: &str = "TEST_DB_HOST, TEST_DB_PORT, TEST_DB_USER, TEST_DB_PASSWORD, DATABASE_URL";

/// Where test databases are created: `TEST_DB_HOST`/`TEST_DB_PORT`/`TEST_DB_USER`/
/// `TEST_DB_PASSWORD` when any is set, else `DATABASE_URL`, else the local default
/// `postgresql://postgres@127.0.0.1:5432/postgres` when a server answers there, else a
/// throwaway server for this process (see [`server_url`](super::server_url)). The database named there is the maintenance
/// database test databases are created from.
pub fn server_config_from_env() -> DatabaseConfig {
    server_config_from(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

pub(super) fn server_config_from(var: impl Fn(&str) -> Option<String>) -> DatabaseConfig {
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

pub(super) fn check_name(kind: &str, name: &str) -> Result<()> {
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
pub(super) fn generated_created_at(prefix: &str, name: &str) -> Option<u64> {
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
pub(super) fn block_on_background<T: Send + 'static>(
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
