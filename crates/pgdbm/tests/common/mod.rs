//! Shared test helpers: every test gets its own schema on the real server, dropped afterwards
//! even when the test panics.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

/// `DATABASE_URL`, else the local server, else a throwaway one for this test process.
pub fn database_url() -> String {
    pgdbm::testing::server_url().expect("a PostgreSQL server to test against")
}

pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

pub fn config() -> DatabaseConfig {
    DatabaseConfig {
        connection_string: Some(database_url()),
        min_connections: 1,
        max_connections: 4,
        retry_attempts: 0,
        ..Default::default()
    }
}

/// Runs SQL on a fresh connection of its own, outside any pool (for setup and checks).
pub async fn admin(sql: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    client.simple_query(sql).await.expect("admin query")
}

pub async fn admin_value(sql: &str) -> Option<String> {
    admin(sql).await.into_iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
}

/// Drops a schema when dropped, on a thread of its own so it works while panicking.
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0);
        drop_with_fresh_runtime(sql);
    }
}

pub fn drop_with_fresh_runtime(sql: String) {
    let url = database_url();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("cleanup failed: {sql}: {e}");
                }
            }
        });
    })
    .join();
}

/// A connected manager with its own pool in a fresh schema.
pub async fn schema_db() -> (AsyncDatabaseManager, SchemaGuard) {
    schema_db_with(|_| {}).await
}

pub async fn schema_db_with(
    tweak: impl FnOnce(&mut DatabaseConfig),
) -> (AsyncDatabaseManager, SchemaGuard) {
    let schema = unique("t");
    let guard = SchemaGuard(schema.clone());
    let mut cfg = config();
    cfg.schema = Some(schema);
    tweak(&mut cfg);
    let db = AsyncDatabaseManager::new(cfg).expect("valid config");
    db.connect().await.expect("connect");
    (db, guard)
}

pub async fn users_table(db: &AsyncDatabaseManager) {
    db.execute(
        "CREATE TABLE {{tables.users}} (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text, \
         age int4 CHECK (age >= 0))",
        &[],
    )
    .await
    .expect("create users");
}

pub async fn count_users(db: &AsyncDatabaseManager) -> i64 {
    db.fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap()
        .unwrap()
}

/// The server URL with the user replaced by `role` (trust auth: no password needed).
pub fn url_as(role: &str) -> String {
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}user={role}")
}

/// Drops a role (and revokes what was granted to it) when dropped, also while panicking.
/// Declare it before the guards of objects the role uses, so those go first.
pub struct RoleGuard(pub String);

impl Drop for RoleGuard {
    fn drop(&mut self) {
        let role = &self.0;
        drop_with_fresh_runtime(format!(
            "DO $$ BEGIN \
               IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
                 PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'; \
                 EXECUTE 'DROP OWNED BY \"{role}\"'; \
               END IF; \
             END $$; \
             DROP ROLE IF EXISTS \"{role}\""
        ));
    }
}

/// Drops a database when dropped, also while panicking.
pub struct DatabaseGuard(pub String);

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        drop_with_fresh_runtime(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.0
        ));
    }
}

/// A config tweak for a pool of exactly `n` connections.
pub fn pool_of(n: usize) -> impl FnOnce(&mut DatabaseConfig) {
    move |c| {
        c.min_connections = n;
        c.max_connections = n;
    }
}

/// Waits (up to 5 s) until `check` holds.
pub async fn settle<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !check().await {
        assert!(
            std::time::Instant::now() < until,
            "the condition did not settle in 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sessions of the server (other than the asking one) running a statement whose text
/// contains `marker`.
pub async fn active_with(marker: &str) -> i64 {
    admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle' AND pid <> pg_backend_pid() \
         AND query LIKE '%{marker}%' AND query NOT LIKE '%pg_stat_activity%'"
    ))
    .await
    .unwrap()
    .parse()
    .unwrap()
}

/// The next query gets a connection and its answer at once: nothing left running on the pool
/// (a dropped stream's query, say) makes it wait.
pub async fn served_at_once(db: &AsyncDatabaseManager) {
    let started = std::time::Instant::now();
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the next caller waited {:?}",
        started.elapsed()
    );
}

/// xorshift64: a tiny seeded generator, so that a failing run replays from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A `testing::LatencyProxy` in front of the test server, adding `one_way` each way, and the
/// server URL through it.
pub async fn proxied_url(one_way: std::time::Duration) -> (pgdbm::testing::LatencyProxy, String) {
    let url = database_url();
    let cfg: tokio_postgres::Config = url.parse().unwrap();
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) if h != "localhost" => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let proxy =
        pgdbm::testing::LatencyProxy::start(format!("{host}:{port}").parse().unwrap(), one_way)
            .await
            .unwrap();
    let user = cfg.get_user().unwrap_or("postgres");
    let dbname = cfg.get_dbname().unwrap_or("postgres");
    let through = format!("postgresql://{user}@{}/{dbname}", proxy.addr());
    (proxy, through)
}

/// Load for the multiplexing tests: each of `tasks` callers runs `calls` point selects with its
/// own parameters and checks that every answer is its own. Returns the errors.
pub async fn load(
    db: &pgdbm::AsyncDatabaseManager,
    tasks: usize,
    calls: usize,
) -> Vec<pgdbm::Error> {
    load_until(
        db,
        tasks,
        calls,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .await
}

/// [`load`], each caller also stopping once `stop` is set.
pub async fn load_until(
    db: &pgdbm::AsyncDatabaseManager,
    tasks: usize,
    calls: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<pgdbm::Error> {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let db = db.clone();
        let stop = stop.clone();
        set.spawn(async move {
            let mut errors = Vec::new();
            for i in 0..calls {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let key = (t * 1_000_000 + i) as i64;
                let tag = format!("caller {t}");
                match db
                    .fetch_one(
                        "SELECT $1::int8 * 2 AS twice, $2::text AS tag",
                        &[&key, &tag],
                    )
                    .await
                {
                    Ok(row) => {
                        let row = row.expect("one row");
                        assert_eq!(row.get::<i64>("twice").unwrap(), key * 2, "another's row");
                        assert_eq!(row.get::<String>("tag").unwrap(), tag, "another's row");
                    }
                    Err(e) => errors.push(e),
                }
            }
            errors
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        errors.extend(r.unwrap());
    }
    errors
}
