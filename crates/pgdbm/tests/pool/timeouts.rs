//! Timeouts: queries cancelled on the server, transactions aborted, waits for a connection.

use std::time::{Duration, Instant};

use crate::common::*;
use pgdbm::{Error, ErrorKind};

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
