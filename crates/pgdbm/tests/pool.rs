//! Pool behaviour: timeouts and cancellation, retry, settings, recycling, reaping, statements.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error, ErrorKind};

async fn backend_state(pid: i32) -> Option<String> {
    admin_value(&format!(
        "SELECT state FROM pg_stat_activity WHERE pid = {pid}"
    ))
    .await
}

#[tokio::test]
async fn a_timeout_cancels_the_query_on_the_server() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    let pid: i32 = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let r = db
        .with_timeout(Duration::from_millis(200))
        .fetch_all("SELECT pg_sleep(5)", &[])
        .await;
    let elapsed = started.elapsed();
    match &r {
        Err(e @ Error::Timeout { after, .. }) => {
            assert!(*after >= Duration::from_millis(200));
            assert!(e.is_timeout());
            assert_eq!(e.kind(), ErrorKind::Timeout);
            assert!(e.to_string().contains("cancelled on the server"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    // The backend is idle again soon, long before the 5 s sleep ends: the cancel is sent in
    // the background after the call returns, so give it a moment (bounded) to land.
    let mut state = backend_state(pid).await;
    let limit = Instant::now() + Duration::from_secs(2);
    while state.as_deref() != Some("idle") && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
        state = backend_state(pid).await;
    }
    assert_eq!(
        state.as_deref(),
        Some("idle"),
        "the query was not cancelled"
    );
    // The same single connection serves the next call.
    let pid2: i32 = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pid, pid2, "the connection was kept, not replaced");
}

#[tokio::test]
async fn command_timeout_is_the_default_and_implicit_transactions_are_rolled_back() {
    let (db, _g) = schema_db_with(|c| {
        c.max_connections = 1;
        c.command_timeout = 0.3;
    })
    .await;
    users_table(&db).await;
    let r = db.execute("SELECT pg_sleep(3)", &[]).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    // executemany runs in its own transaction; a timeout in the middle leaves nothing.
    let r = db
        .executemany(
            "INSERT INTO {{tables.users}} (email, age) SELECT $1, pg_sleep($2)::text::int",
            vec![("a@x", 0.0_f64), ("b@x", 2.0)],
        )
        .await;
    assert!(r.is_err());
    let r = db
        .executemany(
            "INSERT INTO {{tables.users}} (email, name) SELECT $1, (pg_sleep($2) IS NULL)::text",
            vec![("a@x", 0.0_f64), ("b@x", 2.0)],
        )
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(0));
    let in_tx: Option<String> = db
        .fetch_value(
            "SELECT state FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(in_tx.as_deref(), Some("active"));
    // without_timeout lifts the limit.
    let ok: Option<String> = db
        .without_timeout()
        .fetch_value("SELECT pg_sleep(0.5)::text", &[])
        .await
        .unwrap();
    assert_eq!(ok.as_deref(), Some(""));
}

#[tokio::test]
async fn a_timeout_inside_a_transaction_aborts_it() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 2).await;
    users_table(&db).await;
    let tx = db
        .with_timeout(Duration::from_millis(200))
        .transaction()
        .await
        .unwrap();
    tx.execute("INSERT INTO {{tables.users}} (email) VALUES ('a@x')", &[])
        .await
        .unwrap();
    let r = tx.execute("SELECT pg_sleep(3)", &[]).await;
    assert!(matches!(r, Err(Error::Timeout { .. })));
    assert!(matches!(tx.commit().await, Err(Error::Transaction(_))));
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(0));
}

#[tokio::test]
async fn waiting_for_a_connection_times_out_and_is_counted() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    let held = db.acquire().await.unwrap();
    let r = db
        .with_timeout(Duration::from_millis(100))
        .fetch_value::<i32>("SELECT 1", &[])
        .await;
    let e = r.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Timeout);
    match &e {
        Error::AcquireTimeout {
            after,
            size,
            max_size,
            ..
        } => {
            assert!(*after >= Duration::from_millis(100), "{after:?}");
            assert_eq!((*size, *max_size), (1, 1));
        }
        other => panic!("{other:?}"),
    }
    // No query was sent, so nothing was cancelled on the server.
    let text = e.to_string();
    assert!(!text.contains("cancelled"), "{text}");
    assert!(text.contains("no connection became free"), "{text}");
    assert!(text.contains("no query was sent"), "{text}");
    assert!(text.contains("1/1"), "{text}");
    drop(held);
    let stats = db.get_pool_stats().await.unwrap();
    assert_eq!(stats.acquire_timeouts, 1);
}

#[tokio::test]
async fn connect_retries_with_backoff_then_reports_where_it_tried() {
    // Nothing listens on port 1.
    let cfg = DatabaseConfig {
        host: "127.0.0.1".into(),
        port: 1,
        password: Some("hunter2-secret".into()),
        retry_attempts: 2,
        retry_delay: 0.1,
        retry_backoff: 2.0,
        retry_max_delay: 0.15,
        min_connections: 1,
        ..Default::default()
    };
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    let started = Instant::now();
    let err = db.connect().await.unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        Error::Connection {
            host,
            port,
            database,
            attempts,
            ..
        } => {
            assert_eq!(
                (host.as_str(), *port, database.as_str(), *attempts),
                ("127.0.0.1", 1, "postgres", 3)
            );
        }
        other => panic!("{other:?}"),
    }
    // Delays were 0.1 and then min(0.2, 0.15): at least 0.25 s in all.
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("Troubleshooting"), "{text}");
}

#[tokio::test]
async fn non_retryable_failures_fail_at_once() {
    let cfg = DatabaseConfig {
        connection_string: Some(format!("{}_does_not_exist", database_url())),
        retry_attempts: 5,
        retry_delay: 1.0,
        ..config()
    };
    let started = Instant::now();
    let err = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "retried a missing database"
    );
    match &err {
        Error::Connection { attempts, .. } => assert_eq!(*attempts, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), Some("3D000"));
}

#[tokio::test]
async fn settings_timeouts_and_init_commands_apply_to_every_connection() {
    let (db, _g) = schema_db_with(|c| {
        c.min_connections = 2;
        c.statement_timeout_ms = Some(12_345);
        c.lock_timeout_ms = None;
        c.idle_in_transaction_session_timeout_ms = Some(30_000);
        c.server_settings = Some([("work_mem".to_string(), "5MB".to_string())].into());
        c.init_commands = Some(vec![
            "SET timezone TO 'Asia/Tokyo'".into(),
            "CREATE TEMP TABLE init_ran (x int)".into(),
        ]);
    })
    .await;
    let server_lock_timeout = admin_value("SHOW lock_timeout").await.unwrap();
    // Hold one connection so the next calls use the other.
    for _ in 0..2 {
        let conn = db.acquire().await.unwrap();
        let show = |name: &'static str| {
            let conn = &conn;
            async move {
                conn.query_one(&format!("SHOW {name}"), &[])
                    .await
                    .unwrap()
                    .get::<_, String>(0)
            }
        };
        assert_eq!(show("statement_timeout").await, "12345ms");
        assert_eq!(
            show("lock_timeout").await,
            server_lock_timeout,
            "None leaves the server's value"
        );
        assert_eq!(show("idle_in_transaction_session_timeout").await, "30s");
        assert_eq!(show("work_mem").await, "5MB");
        assert_eq!(show("jit").await, "off");
        assert_eq!(
            show("application_name").await,
            format!("{}_pool", db.schema().unwrap()),
            "the default application_name is <schema>_pool"
        );
        assert_eq!(show("TimeZone").await, "Asia/Tokyo");
        conn.query_one("SELECT count(*) FROM init_ran", &[])
            .await
            .unwrap();
        std::mem::forget(db.acquire().await.unwrap()); // keep it busy so the loop sees the other
    }
}

#[tokio::test]
async fn max_queries_recycles_connections() {
    let (db, _g) = schema_db_with(|c| {
        c.max_connections = 1;
        c.max_queries = 3;
    })
    .await;
    let mut pids = Vec::new();
    for _ in 0..7 {
        pids.push(
            db.fetch_value::<i32>("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let distinct: std::collections::BTreeSet<_> = pids.iter().collect();
    assert!(distinct.len() >= 2, "{pids:?}");
    assert_eq!(pids[0], pids[1]);
}

#[tokio::test]
async fn idle_connections_are_reaped_but_never_below_min() {
    let app = unique("reap");
    let (db, _g) = schema_db_with(|c| {
        c.min_connections = 1;
        c.max_connections = 4;
        c.max_inactive_connection_lifetime = 0.3;
        c.server_settings = Some([("application_name".to_string(), app.clone())].into());
    })
    .await;
    let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| db.acquire())).await;
    assert_eq!(db.get_pool_stats().await.unwrap().size, 4);
    drop(held);
    let mut size = 4;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        size = db.get_pool_stats().await.unwrap().size;
        if size == 1 {
            break;
        }
    }
    assert_eq!(size, 1, "idle connections were not reaped down to min");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        db.get_pool_stats().await.unwrap().size,
        1,
        "reaped below min"
    );
    let on_server = admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
    ))
    .await;
    assert_eq!(on_server.as_deref(), Some("1"));
}

#[tokio::test]
async fn no_named_statements_mode() {
    let (db, _g) = schema_db_with(|c| {
        c.max_connections = 1;
        c.statement_cache_size = 0;
    })
    .await;
    db.execute("CREATE TYPE {{tables.mood}} AS ENUM ('sad', 'happy')", &[])
        .await
        .unwrap();
    db.execute(
        "CREATE TABLE {{tables.t}} (id serial PRIMARY KEY, m {{tables.mood}}, name varchar(20), n int8, js jsonb)",
        &[],
    )
    .await
    .unwrap();
    // Parameters are encoded as the types the server infers, as in named mode: an enum takes
    // `EnumText` (or a derived enum), a varchar column a String; a plain String into an enum
    // is refused by the driver in both modes.
    db.execute(
        "INSERT INTO {{tables.t}} (m, name, n, js) VALUES ($1, $2, $3, $4)",
        &[
            &pgdbm::EnumText("happy".into()),
            &"bob",
            &5_i64,
            &serde_json::json!({"a": 1}),
        ],
    )
    .await
    .unwrap();
    // 20 rows: one multi-row INSERT of 16 (unnamed, types probed), then 4 one by one.
    let n = db
        .executemany(
            "INSERT INTO {{tables.t}} (m, name) VALUES ($1, $2)",
            (0..20).map(|i| (pgdbm::EnumText("sad".into()), format!("x{i}"))),
        )
        .await
        .unwrap();
    assert_eq!(n, 20);
    let sad: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.t}} WHERE m = 'sad'", &[])
        .await
        .unwrap();
    assert_eq!(sad, Some(20));
    db.copy_records_to_table("t", vec![(7_i64,)], Some(&["n"]))
        .await
        .unwrap();
    let row = db
        .fetch_one(
            "SELECT m, name, n FROM {{tables.t}} WHERE name = $1",
            &[&"bob"],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<pgdbm::EnumText>("m").unwrap().0, "happy");
    assert_eq!(row.get::<i64>("n").unwrap(), 5);
    // Only the driver's own catalog lookups for the enum type may be named statements
    // (tokio-postgres prepares those itself, once per connection).
    let named: Option<i64> = db
        .fetch_value("SELECT count(*) FROM pg_prepared_statements WHERE statement NOT LIKE '%FROM pg_catalog.pg_%'", &[])
        .await
        .unwrap();
    assert_eq!(named, Some(0));
}

#[tokio::test]
async fn statements_are_cached_per_connection_and_bounded() {
    let (db, _g) = schema_db_with(|c| {
        c.max_connections = 1;
        c.statement_cache_size = 3;
    })
    .await;
    for i in 0..10 {
        let q = format!("SELECT {i} + $1::int4");
        let v: Option<i32> = db.fetch_value(&q, &[&1_i32]).await.unwrap();
        assert_eq!(v, Some(i + 1));
    }
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT % + $1::int4'", &[])
        .await
        .unwrap();
    assert_eq!(
        n,
        Some(2),
        "the cache holds at most 3 (the count query is one of them)"
    );
}

#[tokio::test]
async fn add_prepared_statement_prepares_on_every_connection() {
    let (db, _g) = schema_db_with(|c| {
        c.min_connections = 2;
        c.max_connections = 2;
    })
    .await;
    // Registered before the table exists: not fatal, prepared lazily.
    db.add_prepared_statement(
        "user_by_email",
        "SELECT * FROM {{tables.users}} WHERE email = $1",
    )
    .unwrap();
    assert!(db.fetch_value::<i32>("SELECT 1", &[]).await.is_ok());
    users_table(&db).await;
    db.add_prepared_statement(
        "user_by_email",
        "SELECT * FROM {{tables.users}} WHERE email = $1",
    )
    .unwrap();
    assert!(matches!(
        db.add_prepared_statement("bad name", "SELECT 1"),
        Err(Error::Schema(_))
    ));
    let schema = db.schema().unwrap().to_owned();
    let (a, b) = (db.acquire().await.unwrap(), db.acquire().await.unwrap());
    for conn in [&a, &b] {
        let n: i64 = conn
            .query_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1",
                &[&format!(
                    "SELECT * FROM \"{schema}\".users WHERE email = $1"
                )],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            n,
            1,
            "statement not prepared on connection {}",
            conn.backend_pid()
        );
    }
}

#[tokio::test]
async fn cached_statements_survive_table_changes() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    db.execute("CREATE TABLE {{tables.t}} (a int)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO {{tables.t}} VALUES (1)", &[])
        .await
        .unwrap();
    let q = "SELECT * FROM {{tables.t}} WHERE a = $1";
    assert_eq!(db.fetch_one(q, &[&1_i32]).await.unwrap().unwrap().len(), 1);
    db.execute(
        "ALTER TABLE {{tables.t}} ADD COLUMN b text DEFAULT 'x'",
        &[],
    )
    .await
    .unwrap();
    // The cached plan's result type changed: re-prepared transparently outside a transaction.
    let row = db.fetch_one(q, &[&1_i32]).await.unwrap().unwrap();
    assert_eq!(row.get::<String>("b").unwrap(), "x");
    let models: Vec<(i32, String)> = db.fetch_all_as_model(q, &[&1_i32]).await.unwrap();
    assert_eq!(models, vec![(1, "x".to_string())]);
}

#[test]
fn a_pool_outlives_the_runtimes_that_use_it() {
    let home = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let db = home.block_on(async {
        let db = AsyncDatabaseManager::new(DatabaseConfig {
            min_connections: 1,
            max_connections: 2,
            ..config()
        })
        .unwrap();
        db.connect().await.unwrap();
        db
    });
    // A short-lived runtime needs two connections at once, so one is opened from it.
    let pids = {
        let visitor = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        visitor.block_on(async {
            let (a, b) = futures_util::future::join(db.acquire(), db.acquire()).await;
            let mut pids = vec![a.unwrap().backend_pid(), b.unwrap().backend_pid()];
            pids.sort();
            pids
        })
    };
    // That runtime is gone; both connections still work and neither was replaced.
    home.block_on(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (a, b) = futures_util::future::join(db.acquire(), db.acquire()).await;
        let (a, b) = (a.unwrap(), b.unwrap());
        for c in [&a, &b] {
            assert_eq!(
                c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
                1
            );
        }
        let mut now = vec![a.backend_pid(), b.backend_pid()];
        now.sort();
        assert_eq!(
            now, pids,
            "a connection opened from the ended runtime was lost"
        );
        drop((a, b));
        db.disconnect().await.unwrap();
    });
}

#[tokio::test]
async fn a_failed_connection_keeps_its_sqlstate() {
    let role = unique("lim");
    let _role = RoleGuard(role.clone());
    admin(&format!("CREATE ROLE \"{role}\" LOGIN CONNECTION LIMIT 1")).await;
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url_as(&role)),
        min_connections: 1,
        max_connections: 2,
        ..config()
    })
    .unwrap();
    db.connect().await.unwrap();
    let held = db.acquire().await.unwrap();
    // The second connection is refused by the server: too many connections for the role.
    let e = db.acquire().await.unwrap_err();
    assert_eq!(e.code(), Some("53300"), "{e:?}");
    assert_eq!(
        e.sqlstate(),
        Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS)
    );
    match &e {
        Error::Connection { port, database, .. } => {
            assert_eq!(database, "postgres");
            assert!(*port > 0);
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("53300"), "{text}");
    assert!(!e.is_timeout());
    drop(held);
    db.disconnect().await.unwrap();
}

async fn own_application_name(db: &AsyncDatabaseManager) -> String {
    db.fetch_value::<String>(
        "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn the_default_application_name_is_schema_pool() {
    // An owned pool with a schema: <schema>_pool.
    let (db, _g) = schema_db().await;
    let schema = db.schema().unwrap().to_owned();
    assert_eq!(own_application_name(&db).await, format!("{schema}_pool"));

    // An owned pool without a schema: app_pool.
    let db = AsyncDatabaseManager::new(config()).unwrap();
    db.connect().await.unwrap();
    assert_eq!(own_application_name(&db).await, "app_pool");
    db.disconnect().await.unwrap();

    // A shared pool has no schema of its own (config.schema is ignored): app_pool.
    let pool = AsyncDatabaseManager::create_shared_pool(&DatabaseConfig {
        schema: Some(schema.clone()),
        ..config()
    })
    .await
    .unwrap();
    let users = AsyncDatabaseManager::from_pool(pool.clone(), Some(&schema)).unwrap();
    assert_eq!(own_application_name(&users).await, "app_pool");
    pool.close();

    // A name set by the user wins: in server_settings...
    let (db, _g2) = schema_db_with(|c| {
        c.server_settings = Some([("application_name".to_string(), "dash".to_string())].into());
    })
    .await;
    assert_eq!(own_application_name(&db).await, "dash");
    // ...or in the connection string.
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let (db, _g3) = schema_db_with(|c| {
        c.connection_string = Some(format!("{url}{sep}application_name=from_url"));
    })
    .await;
    assert_eq!(own_application_name(&db).await, "from_url");
}

/// Connections whose server process was terminated are replaced by the reaper even at
/// `min_connections`, before anyone checks them out.
#[tokio::test]
async fn the_reaper_replaces_dead_connections_at_min_size() {
    let (db, _guard) = common::schema_db_with(|c| {
        c.min_connections = 2;
        c.max_connections = 2;
        c.max_inactive_connection_lifetime = 0.4;
    })
    .await;
    let pids: Vec<i32> = {
        let a = db.acquire().await.unwrap();
        let b = db.acquire().await.unwrap();
        vec![a.backend_pid(), b.backend_pid()]
    };
    common::admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN ({}, {})",
        pids[0], pids[1]
    ))
    .await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let stats = db.get_pool_stats().await.unwrap();
        let fresh = stats.size == 2 && stats.pid.is_some_and(|p| !pids.contains(&p));
        if fresh {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "dead connections still pooled: {stats:?}"
        );
    }
    let n: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(n, Some(1));
}

/// The connection's driver keeps one timer for its statements' deadlines: a short deadline
/// after long ones re-arms it earlier, a deadline that fired does not reach the next call,
/// and calls that end before their deadline leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_fire_on_time_whatever_came_before() {
    let (db, _g) = schema_db_with(|c| {
        c.max_connections = 1;
        c.command_timeout = 60.0;
    })
    .await;
    for round in 0..3 {
        // Long deadlines first: the driver's timer is armed a minute away.
        for _ in 0..20 {
            let v: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
            assert_eq!(v, Some(1));
        }
        let started = Instant::now();
        let r = db
            .with_timeout(Duration::from_millis(150))
            .fetch_value::<i32>("SELECT 1 FROM pg_sleep(5)", &[])
            .await;
        let took = started.elapsed();
        assert!(
            matches!(r, Err(Error::Timeout { .. })),
            "round {round}: {r:?}"
        );
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(2),
            "round {round}: timed out after {took:?}"
        );
        // The expired deadline is not the next call's: a quick call right after succeeds,
        // and so does one that takes longer than the short limit did.
        let v: Option<i32> = db
            .fetch_value("SELECT 1 FROM pg_sleep(0.3)", &[])
            .await
            .unwrap();
        assert_eq!(v, Some(1), "round {round}");
    }
}
