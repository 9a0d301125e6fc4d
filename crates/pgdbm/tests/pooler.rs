//! pgdbm through a real PgBouncer in transaction mode (`pooler = "transaction"`): every query
//! path, from two processes at once, with fewer server connections than clients; timeouts that
//! cancel through the pooler; nothing left on the server connections.

#[path = "support/bouncer.rs"]
mod bouncer;
mod common;

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use pgdbm::testing::TempPgBouncer;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, EnumText, Pooler};

use bouncer::{bouncer, one, pooled, TestDb};
use common::{admin_value, unique};

const CHILD_URL: &str = "PGDBM_POOLER_CHILD_URL";
const CHILD_TAG: &str = "PGDBM_POOLER_CHILD_TAG";

/// Every query path, by several tasks at once, in schema `tag`: any error fails.
async fn workload(url: &str, tag: &str) {
    let db = AsyncDatabaseManager::new(pooled(url, tag, 6)).expect("config");
    db.connect().await.expect("connect through pgbouncer");
    // Custom types made after the pool connected: looked up on first use.
    db.execute(
        &format!(
            "CREATE TYPE \"{tag}\".mood AS ENUM ('sad', 'ok', 'happy');
             CREATE DOMAIN \"{tag}\".posint AS int4 CHECK (VALUE > 0);
             CREATE TYPE \"{tag}\".pair AS (a int4, b text);
             CREATE TABLE {{{{tables.items}}}} (
                 id serial PRIMARY KEY, task int4 NOT NULL, name text NOT NULL,
                 mood \"{tag}\".mood NOT NULL, n \"{tag}\".posint NOT NULL, p \"{tag}\".pair)"
        ),
        &[],
    )
    .await
    .expect("schema");
    let stats = db.get_pool_stats().await.expect("stats");
    assert_eq!(stats.pooler, Pooler::Transaction);

    let tasks: Vec<_> = (0..6)
        .map(|task| {
            let db = db.clone();
            let tag = tag.to_owned();
            tokio::spawn(async move { task_workload(&db, &tag, task).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task panicked");
    }
    let total: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.items}}", &[])
        .await
        .unwrap();
    // Per task and round: 1 insert, 1 kept by the transaction, 10 by executemany, 20 by COPY.
    assert_eq!(total, Some(6 * 8 * 32));
    db.disconnect().await.unwrap();
}

async fn task_workload(db: &AsyncDatabaseManager, tag: &str, task: i32) {
    let mood = format!("\"{tag}\".mood");
    for round in 0..8 {
        let name = format!("t{task}r{round}");
        // execute with an enum, a domain and a composite parameter by text.
        let n = db
            .execute(
                &format!(
                    "INSERT INTO {{{{tables.items}}}} (task, name, mood, n, p) \
                     VALUES ($1, $2, $3, $4::int4, ROW($5, $2)::\"{tag}\".pair)"
                ),
                &[
                    &task,
                    &name,
                    &EnumText("happy".into()),
                    &(round + 1),
                    &round,
                ],
            )
            .await
            .expect("insert");
        assert_eq!(n, 1);

        // Reads decoding the custom types.
        let row = db
            .fetch_one(
                "SELECT mood, n, p FROM {{tables.items}} WHERE name = $1",
                &[&name],
            )
            .await
            .expect("fetch_one")
            .expect("row");
        assert_eq!(row.get::<EnumText>("mood").unwrap().0, "happy");
        assert_eq!(row.get::<i32>("n").unwrap(), round + 1);
        let moods: Vec<EnumText> = db
            .fetch_column(
                &format!("SELECT unnest(enum_range(NULL::{mood})) ORDER BY 1"),
                &[],
            )
            .await
            .expect("enum_range");
        assert_eq!(moods.len(), 3);
        let all = db
            .fetch_all(
                "SELECT id, mood FROM {{tables.items}} WHERE task = $1",
                &[&task],
            )
            .await
            .expect("fetch_all");
        assert!(!all.is_empty());

        // A transaction with a savepoint that rolls back alone.
        let tx = db.transaction().await.expect("begin");
        tx.execute(
            "INSERT INTO {{tables.items}} (task, name, mood, n) VALUES ($1, $2, 'ok', 1)",
            &[&task, &format!("{name}-tx")],
        )
        .await
        .expect("tx insert");
        {
            let inner = tx.transaction().await.expect("savepoint");
            inner
                .execute(
                    "INSERT INTO {{tables.items}} (task, name, mood, n) VALUES ($1, $2, 'sad', 1)",
                    &[&task, &format!("{name}-gone")],
                )
                .await
                .expect("savepoint insert");
            inner.rollback().await.expect("rollback to savepoint");
        }
        // First seen inside a transaction: described there, custom types included.
        let sad: Vec<EnumText> = tx
            .fetch_column(
                &format!(
                    "SELECT mood FROM {{{{tables.items}}}} WHERE mood = $1 AND task = $2 \
                     AND n > $3 /* round {round} */"
                ),
                &[&EnumText("sad".into()), &task, &0_i32],
            )
            .await
            .expect("custom types first described inside a transaction");
        assert!(sad.iter().all(|m| m.0 == "sad"));
        let timeout: Option<String> = tx
            .fetch_value("SELECT current_setting('statement_timeout')", &[])
            .await
            .expect("setting in tx");
        assert_eq!(
            timeout.as_deref(),
            Some("1min"),
            "SET LOCAL in each transaction"
        );
        tx.commit().await.expect("commit");

        // executemany and COPY, each all or nothing.
        let rows: Vec<_> = (0..10)
            .map(|i| {
                (
                    task,
                    format!("{name}-many{i}"),
                    EnumText("sad".into()),
                    i + 1,
                )
            })
            .collect();
        db.executemany(
            "INSERT INTO {{tables.items}} (task, name, mood, n) VALUES ($1, $2, $3, $4::int4)",
            rows,
        )
        .await
        .expect("executemany");
        let records: Vec<_> = (0..20)
            .map(|i| {
                (
                    task,
                    format!("{name}-copy{i}"),
                    EnumText("ok".into()),
                    i + 1,
                )
            })
            .collect();
        let copied = db
            .copy_records_to_table("items", records, Some(&["task", "name", "mood", "n"][..]))
            .await
            .expect("copy");
        assert_eq!(copied, 20);

        // Ids, serde models, CSV in and out.
        let id: i32 = db
            .execute_and_return_id(
                "INSERT INTO {{tables.items}} (task, name, mood, n) VALUES ($1, $2, 'ok', 1) RETURNING id",
                &[&task, &format!("{name}-id")],
            )
            .await
            .expect("execute_and_return_id");
        assert!(id > 0);
        #[derive(serde::Deserialize)]
        struct Item {
            name: String,
            n: i32,
        }
        let items: Vec<Item> = db
            .fetch_all_as_model(
                "SELECT name, n FROM {{tables.items}} WHERE name = $1",
                &[&format!("{name}-id")],
            )
            .await
            .expect("fetch_all_as_model");
        assert_eq!(
            (items[0].name.as_str(), items[0].n),
            (&*format!("{name}-id"), 1)
        );
        let csv = format!("{task},{name}-csv,happy,3\n");
        let loaded = db
            .copy_from_csv(
                "items",
                Some(&["task", "name", "mood", "n"][..]),
                false,
                csv.as_bytes(),
            )
            .await
            .expect("copy_from_csv");
        assert_eq!(loaded, 1);
        let out: Vec<bytes::Bytes> = db
            .copy_to(
                &format!("SELECT name, mood FROM {{{{tables.items}}}} WHERE name = '{name}-csv'"),
                pgdbm::CopyFormat::Csv { header: false },
            )
            .await
            .expect("copy_to")
            .try_collect()
            .await
            .expect("copy_to rows");
        assert_eq!(out.concat(), format!("{name}-csv,happy\n").into_bytes());
        db.execute(
            "DELETE FROM {{tables.items}} WHERE name = ANY($1)",
            &[&vec![format!("{name}-id"), format!("{name}-csv")]],
        )
        .await
        .expect("delete");

        // A stream.
        let streamed: Vec<_> = db
            .fetch_stream(
                "SELECT name, mood FROM {{tables.items}} WHERE task = $1",
                &[&task],
            )
            .await
            .expect("stream")
            .try_collect()
            .await
            .expect("stream rows");
        assert!(!streamed.is_empty());

        // A timeout, then the connection serves the next call.
        if round % 4 == 0 {
            let started = Instant::now();
            let err = db
                .with_timeout(Duration::from_millis(150))
                .execute("SELECT pg_sleep(5)", &[])
                .await
                .unwrap_err();
            assert!(err.is_timeout(), "{err}");
            assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        }
        let gone: Option<i64> = db
            .fetch_value(
                "SELECT count(*) FROM {{tables.items}} WHERE name = $1",
                &[&format!("{name}-gone")],
            )
            .await
            .unwrap();
        assert_eq!(gone, Some(0), "the savepoint's insert was rolled back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_path_runs_through_pgbouncer_from_two_processes() {
    let test_db = TestDb::create().await;
    // Fewer server connections (3) than the two processes' clients (2 x 6).
    let bouncer = bouncer(3);
    let url = bouncer.connection_string(&test_db.0);

    let child_url = url.clone();
    let child = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_workload",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_URL, child_url)
            .env(CHILD_TAG, "second")
            .output()
            .expect("run the second process")
    });
    workload(&url, "first").await;
    let out = child.await.unwrap();
    assert!(
        out.status.success(),
        "the second process failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("child workload done"),
        "the second process ran no workload"
    );
    // Nothing named is left on the server connections.
    let left = admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state LIKE 'idle in%'",
        test_db.0
    ))
    .await;
    assert_eq!(left.as_deref(), Some("0"));
}

/// The second process of the test above; does nothing when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_workload() {
    let (Ok(url), Ok(tag)) = (std::env::var(CHILD_URL), std::env::var(CHILD_TAG)) else {
        return;
    };
    workload(&url, &tag).await;
    println!("child workload done");
}

#[tokio::test]
async fn a_timeout_cancels_the_query_on_the_server_through_pgbouncer() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(2);
    let db = AsyncDatabaseManager::new(pooled(
        &bouncer.connection_string(&test_db.0),
        "cancelled",
        2,
    ))
    .unwrap();
    db.connect().await.unwrap();
    let started = Instant::now();
    let err = db
        .with_timeout(Duration::from_millis(200))
        .execute("SELECT pg_sleep(30) -- pgdbm_cancel_marker", &[])
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The server query ends soon after, not after 30 s.
    let check = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state = 'active' \
         AND query LIKE '%pgdbm_cancel_marker%' AND pid <> pg_backend_pid()",
        test_db.0
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if admin_value(&check).await.as_deref() == Some("0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the pool serves the next call.
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn no_session_setting_reaches_other_clients() {
    let test_db = TestDb::create().await;
    // One server connection, shared by the manager and the raw client below.
    let bouncer = bouncer(1);
    let url = bouncer.connection_string(&test_db.0);
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        statement_timeout_ms: Some(4321),
        server_settings: Some([("work_mem".to_string(), "7MB".to_string())].into()),
        ..pooled(&url, "settings", 2)
    })
    .unwrap();
    db.connect().await.unwrap();
    // Inside pgdbm's transactions the settings hold.
    let tx = db.transaction().await.unwrap();
    let inside: Option<String> = tx
        .fetch_value(
            "SELECT current_setting('statement_timeout') || ' ' || current_setting('work_mem') \
             || ' ' || current_setting('search_path') || ' ' || current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        inside.as_deref(),
        Some("4321ms 7MB settings, public settings_pool")
    );

    // Another client on the same server connection sees the server's defaults.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .simple_query(
            "SELECT current_setting('statement_timeout') || ' ' || current_setting('work_mem')",
        )
        .await
        .unwrap();
    let seen = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(seen.as_deref(), Some("0 4MB"));
    let named: Vec<_> = client
        .simple_query("SELECT name FROM pg_prepared_statements")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .collect();
    assert!(
        named.is_empty(),
        "named statements left on the server connection"
    );

    // A shared pool connects without pinning search_path, and its managers work.
    let pool = AsyncDatabaseManager::create_shared_pool(&pooled(&url, "unused", 2))
        .await
        .expect("shared pool through pgbouncer");
    let users = AsyncDatabaseManager::from_pool(pool.clone(), Some("settings")).unwrap();
    users
        .execute("CREATE TABLE {{tables.t}} (id int)", &[])
        .await
        .unwrap();
    assert!(users.table_exists("t").await.unwrap());
    pool.close();
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn listen_asks_for_a_direct_connection_behind_a_transaction_pooler() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(1);
    let db = AsyncDatabaseManager::new(pooled(
        &bouncer.connection_string(&test_db.0),
        "listening",
        2,
    ))
    .unwrap();
    db.connect().await.unwrap();
    let err = db.listen(&["events"]).await.unwrap_err();
    assert!(
        err.to_string().contains("listen_connection_string"),
        "{err}"
    );
    db.disconnect().await.unwrap();
}

#[test]
fn init_commands_are_refused_behind_a_transaction_pooler() {
    let err = AsyncDatabaseManager::new(DatabaseConfig {
        init_commands: Some(vec!["SET x.y = 1".into()]),
        ..pooled("postgresql://postgres@127.0.0.1:6432/db", "s", 2)
    })
    .unwrap_err();
    assert!(err.to_string().contains("init_commands"), "{err}");
}

/// A directory of migration files, removed when dropped.
struct MigrationDir(std::path::PathBuf);

impl MigrationDir {
    fn new(files: &[(&str, &str)]) -> MigrationDir {
        let dir = std::env::temp_dir().join(unique("pgdbm_pooled_mig"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, sql) in files {
            std::fs::write(dir.join(name), sql).unwrap();
        }
        MigrationDir(dir)
    }
}

impl Drop for MigrationDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FILES: &[(&str, &str)] = &[
    (
        "001_table.sql",
        "CREATE TABLE {{tables.events}} (id serial PRIMARY KEY, what text NOT NULL);",
    ),
    (
        "002_slow_seed.sql",
        "SELECT pg_sleep(0.3); INSERT INTO {{tables.events}} (what) VALUES ('seeded');",
    ),
    (
        "003_column.sql",
        "ALTER TABLE {{tables.events}} ADD COLUMN at timestamptz DEFAULT now();
         CREATE VIEW recent_events AS SELECT 1 AS unqualified;",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_migrators_through_pgbouncer_apply_each_file_once_and_none_hangs() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(2);
    let url = bouncer.connection_string(&test_db.0);
    let dir = MigrationDir::new(FILES);

    let run = |url: String, dir: std::path::PathBuf| async move {
        let db = AsyncDatabaseManager::new(pooled(&url, "raced", 2)).unwrap();
        db.connect().await.unwrap();
        let report = tokio::time::timeout(
            Duration::from_secs(60),
            pgdbm::AsyncMigrationManager::new(&db, &dir).apply_pending_migrations(),
        )
        .await
        .expect("a migrator hung")
        .expect("a migrator failed");
        db.disconnect().await.unwrap();
        report
    };
    let racers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(run(url.clone(), dir.0.clone())))
        .collect();
    let mut applied = Vec::new();
    for r in racers {
        let report = r.await.unwrap();
        assert_eq!(report.total, 3, "{report:?}");
        applied.extend(report.applied.into_iter().map(|a| a.filename));
    }
    applied.sort();
    assert_eq!(
        applied,
        ["001_table.sql", "002_slow_seed.sql", "003_column.sql"],
        "each file applied by exactly one racer"
    );
    for _ in 0..3 {
        let report = run(url.clone(), dir.0.clone()).await;
        assert!(report.applied.is_empty(), "{report:?}");
        assert_eq!(report.skipped.len(), 3);
    }

    let db = AsyncDatabaseManager::new(pooled(&url, "raced", 2)).unwrap();
    db.connect().await.unwrap();
    let rows: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.events}}", &[])
        .await
        .unwrap();
    assert_eq!(rows, Some(1), "the seed ran once");
    let tracked: Option<i64> = db
        .fetch_value("SELECT count(*) FROM raced.schema_migrations", &[])
        .await
        .unwrap();
    assert_eq!(tracked, Some(3));
    let view: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_views WHERE schemaname = 'raced' AND viewname = 'recent_events'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        view,
        Some(1),
        "unqualified names land in the module's schema"
    );
    db.disconnect().await.unwrap();
    let locks = admin_value(&format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND d.datname = '{}'",
        test_db.0
    ))
    .await;
    assert_eq!(locks.as_deref(), Some("0"), "no lock outlives its run");
}

#[tokio::test]
async fn migrations_use_the_direct_connection_string_when_set() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(2);
    let url = bouncer.connection_string(&test_db.0);
    let dir = MigrationDir::new(&[
        (
            "001_table.sql",
            "CREATE TABLE {{tables.docs}} (id int PRIMARY KEY, body text);",
        ),
        (
            "002_index.sql",
            "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY docs_body ON {{tables.docs}} (body);",
        ),
    ]);

    // Without it, a file that cannot run in a transaction is refused with the way out.
    let db = AsyncDatabaseManager::new(pooled(&url, "direct", 2)).unwrap();
    db.connect().await.unwrap();
    let err = pgdbm::AsyncMigrationManager::new(&db, &dir.0)
        .apply_pending_migrations()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("direct_connection_string"),
        "{err}"
    );
    db.disconnect().await.unwrap();

    let base = common::database_url();
    let direct_url = format!("{}/{}", &base[..base.rfind('/').unwrap()], test_db.0);
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        direct_connection_string: Some(direct_url),
        ..pooled(&url, "direct", 2)
    })
    .unwrap();
    db.connect().await.unwrap();
    let report = pgdbm::AsyncMigrationManager::new(&db, &dir.0)
        .apply_pending_migrations()
        .await
        .expect("migrations over the direct connection");
    assert_eq!(report.applied.len(), 1, "{report:?}");
    assert!(db.table_exists("docs").await.unwrap());
    let index: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'direct' AND indexname = 'docs_body'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(index, Some(1));
    db.disconnect().await.unwrap();
}

/// Calls dropped at random moments, most of them while their SQL is being described: afterwards
/// every call succeeds and no server connection holds a named statement or an open transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_dropped_at_random_moments_leave_the_server_connections_clean() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(2);
    let url = bouncer.connection_string(&test_db.0);
    let db = AsyncDatabaseManager::new(pooled(&url, "dropped", 4)).unwrap();
    db.connect().await.unwrap();
    db.execute(
        "CREATE TYPE dropped.mood AS ENUM ('sad', 'ok');
         CREATE TABLE {{tables.t}} (id int, mood dropped.mood);
         INSERT INTO {{tables.t}} SELECT i, 'ok' FROM generate_series(1, 100) i",
        &[],
    )
    .await
    .unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut aborted = 0;
    for i in 0..80 {
        let sql = format!("SELECT mood, id FROM {{{{tables.t}}}} WHERE id > $1 /* {i} */");
        let in_tx = next() % 2 == 0;
        let task = {
            let db = db.clone();
            tokio::spawn(async move {
                if in_tx {
                    let tx = db.transaction().await?;
                    tx.fetch_all(&sql, &[&1_i32]).await?;
                    tx.commit().await
                } else {
                    db.fetch_all(&sql, &[&1_i32]).await.map(drop)
                }
            })
        };
        tokio::time::sleep(Duration::from_micros(next() % 4000)).await;
        task.abort();
        if matches!(task.await, Err(e) if e.is_cancelled()) {
            aborted += 1;
        }
    }
    println!("{aborted} of 80 calls aborted");
    assert!(
        aborted > 10,
        "too few calls were actually aborted ({aborted})"
    );
    // Every later call works, custom types included.
    for i in 0..40 {
        let rows = db
            .fetch_all(
                &format!("SELECT mood, id FROM {{{{tables.t}}}} WHERE id > $1 /* after {i} */"),
                &[&1_i32],
            )
            .await
            .expect("a call after the aborts");
        assert_eq!(rows.len(), 99);
        assert_eq!(rows[0].get::<EnumText>("mood").unwrap().0, "ok");
    }
    db.disconnect().await.unwrap();
    // The server connections PgBouncer keeps hold nothing named and no transaction.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..4 {
        assert_eq!(
            named_on_server(&client).await,
            "0",
            "named statements left behind"
        );
    }
    // A connection released in a transaction is rolled back in the background, out of the
    // pool, and `disconnect` does not wait for that: give it a moment.
    let open_query = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state LIKE 'idle in%'",
        test_db.0
    );
    common::settle(|| async { admin_value(&open_query).await.as_deref() == Some("0") }).await;
}

#[tokio::test]
async fn a_session_pooler_keeps_the_statement_cache_and_says_so_in_the_stats() {
    let test_db = TestDb::create().await;
    let config: tokio_postgres::Config = common::database_url().parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let bouncer = TempPgBouncer::builder()
        .pool_mode("session")
        .start("127.0.0.1", port)
        .expect("pgbouncer");
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        pooler: Pooler::Session,
        statement_timeout_ms: Some(2500),
        ..pooled(&bouncer.connection_string(&test_db.0), "sessions", 2)
    })
    .unwrap();
    db.connect().await.unwrap();
    for _ in 0..3 {
        let timeout: Option<String> = db
            .fetch_value("SELECT current_setting('statement_timeout')", &[])
            .await
            .unwrap();
        assert_eq!(timeout.as_deref(), Some("2500ms"), "session settings hold");
    }
    let stats = db.get_pool_stats().await.unwrap();
    assert_eq!(stats.pooler, Pooler::Session);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["pooler"], "session");
    db.disconnect().await.unwrap();
}

/// Named statements on the server connection a raw client reaches through PgBouncer.
async fn named_on_server(client: &tokio_postgres::Client) -> String {
    one(client, "SELECT count(*) FROM pg_prepared_statements").await
}

#[tokio::test]
async fn failed_describes_leave_nothing_named_on_the_server_connection() {
    let test_db = TestDb::create().await;
    // One server connection: whatever a describe leaves, the raw client below finds.
    let bouncer = bouncer(1);
    let url = bouncer.connection_string(&test_db.0);
    let db = AsyncDatabaseManager::new(pooled(&url, "failing", 2)).unwrap();
    db.connect().await.unwrap();
    db.execute(
        "CREATE TYPE failing.mood AS ENUM ('a', 'b');
         CREATE TABLE {{tables.t}} (id int, m failing.mood)",
        &[],
    )
    .await
    .unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for sql in [
        "SELEC m FROM {{tables.t}} WHERE id = $1",
        "SELECT m FROM {{tables.missing}} WHERE id = $1",
    ] {
        let err = db.fetch_all(sql, &[&1_i32]).await.unwrap_err();
        assert!(err.sqlstate().is_some(), "{err}");
        assert_eq!(named_on_server(&client).await, "0", "after {sql:?}");
        let tx = db.transaction().await.unwrap();
        let err = tx.fetch_all(sql, &[&1_i32]).await.unwrap_err();
        assert!(err.sqlstate().is_some(), "{err}");
        tx.rollback().await.unwrap();
        assert_eq!(
            named_on_server(&client).await,
            "0",
            "after {sql:?} in a transaction"
        );
    }
    let rows = db
        .fetch_all("SELECT m FROM {{tables.t}} WHERE id = $1", &[&1_i32])
        .await
        .expect("a good query after the failed ones");
    assert!(rows.is_empty());
    assert_eq!(named_on_server(&client).await, "0");
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_bad_setting_fails_at_connect_behind_a_transaction_pooler() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(1);
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        server_settings: Some([("work_mem".to_string(), "banana".to_string())].into()),
        ..pooled(&bouncer.connection_string(&test_db.0), "bad", 2)
    })
    .unwrap();
    let err = db.connect().await.unwrap_err();
    assert!(err.to_string().contains("work_mem"), "{err}");
}
