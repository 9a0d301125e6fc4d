//! `multiplexing = true`: session-neutral calls of many callers share a few connections,
//! pipelined; everything else keeps a connection of its own.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error, ErrorKind};

fn multiplexed(n: usize) -> impl FnOnce(&mut DatabaseConfig) {
    move |c| {
        c.multiplexing = true;
        c.min_connections = 1;
        c.max_connections = n;
    }
}

/// The server sessions of this manager's pool (its `application_name` is `<schema>_pool`).
async fn backends(schema: &str) -> i64 {
    admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{schema}_pool'"
    ))
    .await
    .unwrap()
    .parse()
    .unwrap()
}

/// Samples the pool while `running` is set: the most server sessions seen, and the most
/// statements seen in flight on one shared connection.
fn watch(
    db: &AsyncDatabaseManager,
    schema: String,
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(i64, usize)> {
    let db = db.clone();
    tokio::spawn(async move {
        let (mut sessions, mut per_conn) = (0, 0);
        while running.load(Ordering::Relaxed) {
            sessions = sessions.max(backends(&schema).await);
            let stats = db.get_pool_stats().await.unwrap();
            per_conn = per_conn.max(stats.shared.iter().map(|c| c.in_flight).max().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (sessions, per_conn)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_share_four_connections_and_each_gets_its_own_answer() {
    let (db, g) = schema_db_with(multiplexed(4)).await;
    let running = Arc::new(AtomicBool::new(true));
    let watcher = watch(&db, g.0.clone(), running.clone());
    let errors = load(&db, 64, 2_000).await;
    running.store(false, Ordering::Relaxed);
    let (sessions, per_conn) = watcher.await.unwrap();
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert!(
        sessions <= 4,
        "the server saw {sessions} sessions of a pool of 4"
    );
    // The path this test is about: several callers' statements on one connection at once.
    assert!(
        per_conn > 1,
        "at most {per_conn} statement in flight per connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_a_timeout_and_a_terminated_backend_reach_only_their_callers() {
    let (db, g) = schema_db_with(multiplexed(4)).await;
    // The callers go on until the backend is gone, however fast their calls are.
    let stop = Arc::new(AtomicBool::new(false));
    let loading = {
        let db = db.clone();
        let stop = stop.clone();
        tokio::spawn(async move { load_until(&db, 32, 1_000_000, stop).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let failed = db
        .fetch_value::<i32>("SELECT 1 / $1::int4", &[&0_i32])
        .await;
    assert_eq!(failed.unwrap_err().code(), Some("22012"));

    let started = Instant::now();
    let slow = db
        .with_timeout(Duration::from_millis(50))
        .fetch_value::<String>("SELECT pg_sleep(1)::text", &[])
        .await;
    let waited = started.elapsed();
    let e = slow.unwrap_err();
    assert!(matches!(e, Error::SharedTimeout { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(
        waited < Duration::from_millis(500),
        "returned after {waited:?}"
    );

    // A caller whose statement is surely on the connection when its backend goes: the one
    // running a long statement (shared like the others).
    let marker = g.0.clone();
    let sleeper = {
        let db = db.clone();
        let sql = format!("SELECT pg_sleep(5)::text, '{marker}'");
        tokio::spawn(async move { db.fetch_value::<String>(&sql, &[]).await })
    };
    settle(|| {
        let marker = marker.clone();
        async move { active_with(&marker).await == 1 }
    })
    .await;
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
         AND query LIKE '%{marker}%' AND query NOT LIKE '%pg_stat_activity%'"
    ))
    .await;
    let lost = sleeper.await.unwrap().unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::ConnectionLost, "{lost}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);

    let errors = loading.await.unwrap();
    for e in &errors {
        // Only the callers whose statement was on the terminated connection.
        assert_eq!(e.kind(), ErrorKind::ConnectionLost, "a neighbour got: {e}");
        assert_ne!(e.code(), Some("57014"), "a neighbour was cancelled: {e}");
    }
    assert!(errors.len() < 32 * 600 / 4, "{} errors", errors.len());
    // The pool goes on.
    served_at_once(&db).await;
}

#[tokio::test]
async fn a_timeout_on_a_shared_connection_cancels_nothing() {
    let (db, g) = schema_db_with(multiplexed(1)).await;
    let marker = g.0.clone();
    let sql = format!("SELECT pg_sleep(0.4)::text, '{marker}'");
    let short = db.with_timeout(Duration::from_millis(50));
    let neighbour = {
        let db = db.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            db.fetch_value::<i64>("SELECT 7::int8", &[]).await
        })
    };
    let e = short.fetch_value::<String>(&sql, &[]).await.unwrap_err();
    assert!(matches!(e, Error::SharedTimeout { .. }), "{e}");
    assert!(e.to_string().contains("not cancelled"), "{e}");
    // The statement runs on: no cancel request reached it.
    assert_eq!(active_with(&marker).await, 1, "the statement was cancelled");
    // The neighbour behind it on the one connection is answered, not cancelled.
    assert_eq!(neighbour.await.unwrap().unwrap(), Some(7));
    assert_eq!(db.get_pool_stats().await.unwrap().shared.len(), 1);
}

#[tokio::test]
async fn session_changes_and_transactions_keep_a_connection_of_their_own() {
    let (db, _g) = schema_db_with(multiplexed(3)).await;
    // Hostile callers, through the methods that would otherwise share.
    let hostile = [
        "SELECT set_config('app.tenant', 'leak', false)",
        "SET search_path = pg_catalog",
        "CREATE TEMP TABLE leak (x int)",
        "BEGIN",
    ];
    let probes = async {
        let mut seen = Vec::new();
        for _ in 0..200 {
            let v: Option<String> = db
                .fetch_value("SELECT current_setting('app.tenant', true)", &[])
                .await
                .unwrap();
            seen.push(v.unwrap_or_default());
            // `pg_temp` is this session's own temporary schema.
            let temp: Option<bool> = db
                .fetch_value("SELECT to_regclass('pg_temp.leak') IS NOT NULL", &[])
                .await
                .unwrap();
            assert_eq!(
                temp,
                Some(false),
                "a temp table reached a shared connection"
            );
            let status: Option<String> = db.fetch_value("SELECT 'ok'::text", &[]).await.unwrap();
            assert_eq!(status.as_deref(), Some("ok"));
        }
        seen
    };
    let attacks = async {
        for sql in hostile {
            let _ = db.execute(sql, &[]).await;
            let _ = db.fetch_all(sql, &[]).await;
        }
    };
    let (seen, ()) = tokio::join!(probes, attacks);
    assert!(
        seen.iter().all(|v| v.is_empty()),
        "a setting leaked: {seen:?}"
    );
    let stats = db.get_pool_stats().await.unwrap();
    assert!(stats.shared.len() <= 3);
    // A transaction gets a connection of its own, and its statements are not shared.
    let tx = db.transaction().await.unwrap();
    tx.execute("SELECT set_config('app.tenant', 'tx', true)", &[])
        .await
        .unwrap();
    let outside: Option<String> = db
        .fetch_value("SELECT current_setting('app.tenant', true)", &[])
        .await
        .unwrap();
    assert_eq!(
        outside.unwrap_or_default(),
        "",
        "a transaction's setting was seen outside"
    );
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_reported_session_change_inside_a_function_takes_the_connection_out_of_sharing() {
    let (db, g) = schema_db_with(multiplexed(1)).await;
    // The text shows no session change; the function makes one that the server reports.
    db.execute(
        "CREATE FUNCTION {{tables.sneaky}}() RETURNS int LANGUAGE sql AS \
         $$ SELECT set_config('application_name', 'sneaky', false); SELECT 1 $$",
        &[],
    )
    .await
    .unwrap();
    let pid: Option<i32> = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    let one: Option<i32> = db
        .fetch_value("SELECT {{tables.sneaky}}()", &[])
        .await
        .unwrap();
    assert_eq!(one, Some(1));
    let app: Option<String> = db
        .fetch_value("SELECT current_setting('application_name')", &[])
        .await
        .unwrap();
    assert_eq!(app.as_deref(), Some(format!("{}_pool", g.0).as_str()));
    let after: Option<i32> = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    assert_ne!(pid, after, "the changed connection stayed shared");
    assert!(db.get_pool_stats().await.unwrap().shared_calls >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_caller_gets_a_connection_while_shared_calls_hold_the_pool() {
    let (db, _g) = schema_db_with(multiplexed(2)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (db, stop, done) = (db.clone(), stop.clone(), done.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let v: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
                assert_eq!(v, Some(1));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    settle(|| async { db.get_pool_stats().await.unwrap().shared.len() == 2 }).await;
    let started = Instant::now();
    let tx = db
        .with_timeout(Duration::from_secs(5))
        .transaction()
        .await
        .expect("a transaction while shared calls hold every connection");
    tx.execute("SELECT 1", &[]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_the_only_shared_connection_died_gets_a_new_one() {
    let (db, _g) = schema_db_with(multiplexed(1)).await;
    served_at_once(&db).await;
    let victim = db.get_pool_stats().await.unwrap().shared[0].backend_pid;
    admin(&format!("SELECT pg_terminate_backend({victim})")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The dead connection is dropped, not spun on: the next calls get a fresh one.
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        let mut last = None;
        for _ in 0..3 {
            last = Some(db.fetch_value::<i32>("SELECT pg_backend_pid()", &[]).await);
        }
        last
    })
    .await
    .expect("the calls after the death hung");
    let pid = next.unwrap().unwrap().unwrap();
    assert_ne!(pid, victim);
}

#[tokio::test]
async fn only_shared_connections_run_with_statement_timeout_capped_by_command_timeout() {
    let (db, _g) = schema_db_with(|c| {
        multiplexed(2)(c);
        c.command_timeout = 5.0;
    })
    .await;
    let shared: Option<String> = db
        .fetch_value("SELECT current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(shared.as_deref(), Some("5s"));
    assert!(db.get_pool_stats().await.unwrap().shared_calls > 0);
    let tx = db.transaction().await.unwrap();
    let exclusive: Option<String> = tx
        .fetch_value("SELECT current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(
        exclusive.as_deref(),
        Some("1min"),
        "an exclusive connection was capped"
    );
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_queued_behind_a_long_one_does_not_count_as_stalled() {
    let (db, _g) = schema_db_with(|c| {
        multiplexed(1)(c);
        // No server limit: only callers' deadlines give due times.
        c.statement_timeout_ms = None;
        c.command_timeout = 0.0;
    })
    .await;
    served_at_once(&db).await;
    let long = {
        let db = db.clone();
        tokio::spawn(async move {
            db.fetch_value::<String>("SELECT pg_sleep(6.5)::text", &[])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind the long one, due at 100 ms: 5 s later it is still waiting its turn.
    let e = db
        .with_timeout(Duration::from_millis(100))
        .fetch_value::<i32>("SELECT 1", &[])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::SharedTimeout { .. }), "{e}");
    let done = long.await.unwrap();
    assert!(
        done.is_ok(),
        "the long statement's connection was closed: {done:?}"
    );
}

#[tokio::test]
async fn idle_shared_connections_go_back_to_the_pool() {
    let (db, _g) = schema_db_with(multiplexed(2)).await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.fetch_value::<i32>("SELECT 1", &[]).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert!(!db.get_pool_stats().await.unwrap().shared.is_empty());
    // Unused for a second: back in the pool, idle.
    settle(|| async {
        let s = db.get_pool_stats().await.unwrap();
        s.shared.is_empty() && s.free_size == s.size
    })
    .await;
}

#[tokio::test]
async fn pool_stats_report_statements_in_flight_per_shared_connection() {
    let (db, _g) = schema_db_with(multiplexed(2)).await;
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                db.fetch_value::<String>("SELECT pg_sleep(0.05)::text", &[])
                    .await
            })
        })
        .collect();
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until && most < 4 {
        let stats = db.get_pool_stats().await.unwrap();
        assert!(stats.shared.len() <= 2);
        most = most.max(stats.shared_in_flight());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert!(
        most >= 4,
        "at most {most} statements in flight were reported"
    );
}

#[tokio::test]
async fn a_stalled_shared_connection_is_closed_and_its_callers_are_told() {
    let upstream: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = pgdbm::testing::LatencyProxy::start(upstream, Duration::ZERO)
        .await
        .unwrap();
    let (db, _g) = schema_db_with(|c| {
        multiplexed(1)(c);
        c.connection_string = Some(format!("postgresql://postgres@{}/postgres", proxy.addr()));
        // No server limit: the caller's own deadline is the only due time.
        c.statement_timeout_ms = None;
        c.command_timeout = 0.0;
    })
    .await;
    served_at_once(&db).await;
    proxy.set_stalled(true);
    // The oldest statement on the connection is due at its caller's 100 ms deadline.
    let short = {
        let db = db.clone();
        tokio::spawn(async move {
            db.with_timeout(Duration::from_millis(100))
                .fetch_value::<i32>("SELECT 1", &[])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = {
        let db = db.clone();
        tokio::spawn(async move { db.fetch_value::<i32>("SELECT 2", &[]).await })
    };
    let e = short.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::SharedTimeout { .. }), "{e}");
    // Due at 100 ms, closed once it is 5 s overdue.
    let lost = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the stalled connection was closed")
        .unwrap()
        .unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::ConnectionLost, "{lost}");
    assert_eq!(lost.may_have_run(), Some(true));
    assert!(lost.to_string().contains("stalled"), "{lost}");
    proxy.set_stalled(false);
    served_at_once(&db).await;
}

#[tokio::test]
async fn multiplexing_is_refused_behind_a_transaction_pooler_and_with_reset_always() {
    let refusals: [fn(&mut DatabaseConfig); 2] = [
        |c| c.pooler = pgdbm::Pooler::Transaction,
        |c| c.reset_on_release = pgdbm::ResetOnRelease::Always,
    ];
    for tweak in refusals {
        let mut c = config();
        c.multiplexing = true;
        tweak(&mut c);
        let e = match AsyncDatabaseManager::new(c) {
            Err(e) => e,
            Ok(db) => db.connect().await.unwrap_err(),
        };
        assert!(
            matches!(
                e,
                Error::Configuration {
                    field: "multiplexing",
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_of_neutral_statements_share_connections() {
    let (db, _g) = schema_db_with(multiplexed(2)).await;
    users_table(&db).await;
    let before = db.get_pool_stats().await.unwrap().shared_calls;
    let mut tasks = Vec::new();
    for t in 0..16_i32 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50_i32 {
                let email = format!("{t}-{i}@x");
                let mut p = db.pipeline();
                let ins = p.execute(
                    "INSERT INTO {{tables.users}} (email, age) VALUES ($1, $2)",
                    &[&email, &i],
                );
                let age = p.fetch_value::<i32>(
                    "SELECT age FROM {{tables.users}} WHERE email = $1",
                    &[&email],
                );
                let bad = p.fetch_value::<i32>("SELECT 1 / $1::int4", &[&0_i32]);
                let r = p.run().await.unwrap();
                assert_eq!(r.get(ins).unwrap(), 1);
                assert_eq!(r.get(age).unwrap(), Some(i), "another caller's answer");
                assert_eq!(r.get(bad).unwrap_err().code(), Some("22012"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(count_users(&db).await, 16 * 50);
    let stats = db.get_pool_stats().await.unwrap();
    assert!(
        stats.shared_calls >= before + 16 * 50,
        "{} pipelines on shared connections",
        stats.shared_calls - before
    );
    // A pipeline with a session change keeps a connection of its own.
    let mut p = db.pipeline();
    let set = p.execute("SELECT set_config('app.tenant', 'p', false)", &[]);
    p.run().await.unwrap().get(set).unwrap();
    let seen: Option<String> = db
        .fetch_value("SELECT current_setting('app.tenant', true)", &[])
        .await
        .unwrap();
    assert_eq!(
        seen.unwrap_or_default(),
        "",
        "a pipeline's setting reached a shared connection"
    );
}

#[tokio::test]
async fn a_pipeline_timeout_on_a_shared_connection_cancels_nothing() {
    let (db, g) = schema_db_with(multiplexed(1)).await;
    let marker = g.0.clone();
    let short = db.with_timeout(Duration::from_millis(50));
    let mut p = short.pipeline();
    let sql = format!("SELECT pg_sleep(0.4)::text, '{marker}'");
    let _fast = p.fetch_value::<i32>("SELECT 1", &[]);
    let _slow = p.fetch_all(&sql, &[]);
    let e = p.run().await.unwrap_err();
    assert!(matches!(e, Error::PipelineTimeout { .. }), "{e}");
    assert_eq!(e.completed_statements(), Some(&[0][..]), "{e}");
    assert_eq!(active_with(&marker).await, 1, "the statement was cancelled");
    served_at_once_after(&db, Duration::from_secs(2)).await;
}

/// The next call is answered within `limit` (a shared connection may first finish what an
/// abandoned statement left on it).
async fn served_at_once_after(db: &AsyncDatabaseManager, limit: Duration) {
    let started = Instant::now();
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    assert!(started.elapsed() < limit, "waited {:?}", started.elapsed());
}
