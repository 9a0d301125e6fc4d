//! Correctness under cancellation, timeouts and pooling: each test reproduces one way a
//! connection could go back to the pool in a state that is not idle, or a commit could report
//! success without committing.

mod common;

use std::time::{Duration, Instant};

use common::{admin_value, pool_of, schema_db_with, served_at_once, settle};
use futures_util::StreamExt;
use pgdbm::{AsyncDatabaseManager, Error};

async fn sessions_idle_in_transaction(db: &AsyncDatabaseManager) -> i64 {
    let schema = db.schema().unwrap().to_owned();
    // The pool's sessions are the ones whose search_path names our schema; ask the server
    // through a fresh connection so the pool is not involved.
    let n = admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity s WHERE s.state LIKE 'idle in transaction%' \
         AND s.pid <> pg_backend_pid() AND EXISTS (SELECT 1 FROM pg_locks l \
         JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE l.pid = s.pid AND n.nspname = '{schema}')"
    ))
    .await
    .unwrap();
    n.parse().unwrap()
}

async fn make_table(db: &AsyncDatabaseManager) {
    db.execute("CREATE TABLE {{tables.t}} (v int4)", &[])
        .await
        .unwrap();
}

async fn rows_in_t(db: &AsyncDatabaseManager) -> i64 {
    db.fetch_value("SELECT count(*) FROM {{tables.t}}", &[])
        .await
        .unwrap()
        .unwrap()
}

/// The rows of `t` as another session sees them: only what was committed.
async fn committed_rows(db: &AsyncDatabaseManager) -> Option<String> {
    admin_value(&format!(
        "SELECT string_agg(v::text, ',' ORDER BY v) FROM \"{}\".t",
        db.schema().unwrap()
    ))
    .await
}

/// A timeout's cancel request must never reach the next statement on that connection.
#[tokio::test]
async fn a_timeout_cancel_never_hits_the_next_caller() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    let short = db.with_timeout(Duration::from_millis(30));
    let mut cancelled_innocents = 0;
    for _ in 0..500 {
        let r = short
            .fetch_value::<String>("SELECT pg_sleep(0.1)::text", &[])
            .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        match db
            .fetch_value::<String>("SELECT pg_sleep(0.02)::text", &[])
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("57014") => cancelled_innocents += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(cancelled_innocents, 0, "innocent queries got 57014");
}

/// Committing one sibling savepoint releases the other; rolling that one back then aborts the
/// transaction, and the final COMMIT would silently roll back.
#[tokio::test]
async fn commit_fails_after_sibling_savepoints_abort_the_transaction() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    make_table(&db).await;
    let tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.t}} VALUES (1)", &[])
        .await
        .unwrap();
    let first = tx.transaction().await.unwrap();
    let second = tx.transaction().await.unwrap();
    first.commit().await.unwrap();
    let _ = second.rollback().await;
    let r = tx.commit().await;
    assert!(matches!(r, Err(Error::Transaction(_))), "{r:?}");
    assert_eq!(rows_in_t(&db).await, 0);
}

/// A statement that fails through the transaction's raw connection aborts it on the server.
#[tokio::test]
async fn commit_fails_after_an_error_on_the_raw_connection() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    make_table(&db).await;
    let tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.t}} VALUES (1)", &[])
        .await
        .unwrap();
    assert!(tx.connection().batch_execute("SELECT 1/0").await.is_err());
    let r = tx.commit().await;
    assert!(matches!(r, Err(Error::Transaction(_))), "{r:?}");
    assert_eq!(rows_in_t(&db).await, 0);
    // The connection is usable again and autocommits.
    db.execute("INSERT INTO {{tables.t}} VALUES (2)", &[])
        .await
        .unwrap();
    assert_eq!(committed_rows(&db).await.as_deref(), Some("2"));
}

/// Any failed statement inside a transaction aborts it, also a client-side one.
#[tokio::test]
async fn commit_fails_after_any_error_in_the_transaction() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    make_table(&db).await;
    let tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.t}} VALUES (1)", &[])
        .await
        .unwrap();
    // i64 into int4: refused before anything is sent.
    assert!(tx
        .execute("INSERT INTO {{tables.t}} VALUES ($1)", &[&5_i64])
        .await
        .is_err());
    assert!(matches!(tx.commit().await, Err(Error::Transaction(_))));
    assert_eq!(rows_in_t(&db).await, 0);
}

/// A transaction still alive when its runtime shuts down must not go back to the pool
/// mid-transaction: later autocommit writes on that connection would be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_by_runtime_shutdown_is_rolled_back() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    make_table(&db).await;
    let other = db.clone();
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tx = other.transaction().await.unwrap();
            tx.execute("INSERT INTO {{tables.t}} VALUES (1)", &[])
                .await
                .unwrap();
            let (ready, started) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let _tx = tx;
                let _ = ready.send(());
                std::future::pending::<()>().await;
            });
            started.await.unwrap();
        });
        // Shutting the runtime down drops the task, and the transaction with it.
        drop(rt);
    })
    .await
    .unwrap();
    let n = db
        .with_timeout(Duration::from_secs(10))
        .execute("INSERT INTO {{tables.t}} VALUES (2)", &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Seen from outside the pool: the autocommit row is there, the dropped one is not.
    assert_eq!(committed_rows(&db).await.as_deref(), Some("2"));
}

async fn dropped_batch_then_retry(copy: bool) {
    let (db, _guard) = schema_db_with(pool_of(2)).await;
    db.execute("CREATE TABLE {{tables.t}} (id int4 PRIMARY KEY)", &[])
        .await
        .unwrap();
    const N: i32 = 200_000;
    let rows = || (0..N).map(|i| (i,));
    let load = |db: AsyncDatabaseManager| async move {
        if copy {
            db.copy_records_to_table("t", rows(), None).await
        } else {
            db.executemany("INSERT INTO {{tables.t}} (id) VALUES ($1)", rows())
                .await
        }
    };
    // Both connections open, so the retry could be handed the other one at once.
    let (a, b) = (db.acquire().await.unwrap(), db.acquire().await.unwrap());
    drop((a, b));
    let dropped = tokio::time::timeout(Duration::from_millis(60), load(db.clone())).await;
    assert!(
        dropped.is_err(),
        "the load finished before it could be dropped"
    );
    // The retry must not wait for a lock held by the dropped load's transaction.
    let started = Instant::now();
    let n = load(db.with_timeout(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(n, N as u64);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "retry took {:?}",
        started.elapsed()
    );
    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.t}}", &[])
        .await
        .unwrap();
    assert_eq!(count, Some(N as i64));
    settle(|| async { sessions_idle_in_transaction(&db).await == 0 }).await;
}

#[tokio::test]
async fn a_dropped_executemany_leaves_no_transaction_behind() {
    dropped_batch_then_retry(false).await;
}

#[tokio::test]
async fn a_dropped_copy_leaves_no_transaction_behind() {
    dropped_batch_then_retry(true).await;
}

/// The timeout covers the wait for the first row of a stream.
#[tokio::test]
async fn fetch_stream_times_out_waiting_for_a_row() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    let started = Instant::now();
    let timed = db.with_timeout(Duration::from_millis(200));
    let first = match timed.fetch_stream("SELECT pg_sleep(2)", &[]).await {
        Err(e) => Err(e),
        Ok(stream) => {
            let mut stream = Box::pin(stream);
            stream.next().await.expect("an item").map(|_| ())
        }
    };
    let elapsed = started.elapsed();
    assert!(matches!(first, Err(Error::Timeout { .. })), "{first:?}");
    assert!(elapsed < Duration::from_millis(700), "took {elapsed:?}");
    // The connection is cancelled and drained in the background, then usable again.
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
}

/// Dropping a stream over a large result cancels its query: the next caller does not wait for
/// the rest of the result to be drained.
#[tokio::test]
async fn a_dropped_stream_cancels_its_query() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    {
        let untimed = db.without_timeout();
        let stream = untimed
            .fetch_stream(
                "SELECT g, repeat('x', 2000) FROM generate_series(1, 20000000) g",
                &[],
            )
            .await
            .unwrap();
        let mut stream = Box::pin(stream);
        assert!(stream.next().await.unwrap().is_ok());
    }
    served_at_once(&db).await;
}

/// A raw connection handed back with a transaction left open is not reused as it is.
#[tokio::test]
async fn a_raw_connection_left_in_a_transaction_is_not_reused() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    make_table(&db).await;
    {
        let conn = db.acquire().await.unwrap();
        conn.batch_execute(&format!(
            "BEGIN; INSERT INTO \"{}\".t VALUES (1)",
            db.schema().unwrap()
        ))
        .await
        .unwrap();
    }
    db.execute("INSERT INTO {{tables.t}} VALUES (2)", &[])
        .await
        .unwrap();
    assert_eq!(committed_rows(&db).await.as_deref(), Some("2"));
}

/// A timed-out statement inside a transaction poisons it: nothing is committed.
#[tokio::test]
async fn a_timeout_inside_a_transaction_commits_nothing() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    make_table(&db).await;
    let tx = db
        .with_timeout(Duration::from_millis(100))
        .transaction()
        .await
        .unwrap();
    tx.execute("INSERT INTO {{tables.t}} VALUES (1)", &[])
        .await
        .unwrap();
    let r = tx.execute("SELECT pg_sleep(1)", &[]).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    let later = tx.execute("INSERT INTO {{tables.t}} VALUES (2)", &[]).await;
    assert!(matches!(later, Err(Error::Transaction(_))), "{later:?}");
    assert!(matches!(tx.commit().await, Err(Error::Transaction(_))));
    assert_eq!(rows_in_t(&db).await, 0);
}

/// A statement future dropped halfway inside a transaction: its outcome is unknown, so the
/// transaction cannot commit.
#[tokio::test]
async fn a_dropped_statement_inside_a_transaction_commits_nothing() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    make_table(&db).await;
    let tx = db.transaction().await.unwrap();
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        tx.execute("INSERT INTO {{tables.t}} SELECT 1 FROM pg_sleep(0.3)", &[]),
    )
    .await;
    assert!(dropped.is_err());
    assert!(matches!(tx.commit().await, Err(Error::Transaction(_))));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rows_in_t(&db).await, 0);
}

/// fetch_one reads its whole result: an error in a later row is reported, not left to abort
/// the transaction silently, and the connection is idle when released.
#[tokio::test]
async fn fetch_one_reports_an_error_in_a_later_row() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    let tx = db.transaction().await.unwrap();
    let r = tx
        .fetch_one("SELECT 10 / (2 - g) FROM generate_series(1, 3) g", &[])
        .await;
    assert_eq!(r.unwrap_err().code(), Some("22012"));
    assert!(matches!(tx.commit().await, Err(Error::Transaction(_))));
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
}

/// A raw connection released while holding a session advisory lock or listening on a channel
/// is closed rather than handed to the next caller with that state.
#[tokio::test]
async fn a_raw_connection_holding_session_state_is_reset() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    // A clean raw connection is reused as it is.
    let pid = {
        let conn = db.acquire().await.unwrap();
        conn.batch_execute("SELECT 1").await.unwrap();
        conn.backend_pid()
    };
    let next: Option<i32> = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    assert_eq!(next, Some(pid), "a clean raw connection was not reused");
    // One holding a lock or a LISTEN is reset before reuse: the same session, without them.
    for setup in ["SELECT pg_advisory_lock(4242)", "LISTEN pgdbm_test_channel"] {
        let pid = {
            let conn = db.acquire().await.unwrap();
            conn.batch_execute(setup).await.unwrap();
            conn.backend_pid()
        };
        let left: Option<String> = db
            .fetch_value(
                "SELECT pg_backend_pid()::text || ' ' || \
                 (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() \
                  AND locktype = 'advisory') || ' ' || \
                 (SELECT count(*) FROM pg_listening_channels())",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(left, Some(format!("{pid} 0 0")), "{setup}: not reset");
    }
}

/// A script that opens a transaction through `execute` does not leave the connection in the
/// pool inside it: later autocommit writes are committed, not swallowed.
#[tokio::test]
async fn a_script_left_in_a_transaction_is_not_reused_as_idle() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    make_table(&db).await;
    db.execute(
        "-- opens a transaction\nBEGIN; INSERT INTO {{tables.t}} VALUES (1)",
        &[],
    )
    .await
    .unwrap();
    db.execute("INSERT INTO {{tables.t}} VALUES (2)", &[])
        .await
        .unwrap();
    assert_eq!(committed_rows(&db).await.as_deref(), Some("2"));
    // A script that opens and ends its own transaction keeps its connection.
    let pid: Option<i32> = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    db.execute("BEGIN; INSERT INTO {{tables.t}} VALUES (3); COMMIT", &[])
        .await
        .unwrap();
    let again: Option<i32> = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    assert_eq!(again, pid);
    assert_eq!(committed_rows(&db).await.as_deref(), Some("2,3"));
}

/// A script with BEGIN cut off halfway (here by a timeout) leaves no transaction behind.
#[tokio::test]
async fn a_script_cut_off_inside_its_transaction_is_rolled_back() {
    let (db, _guard) = schema_db_with(pool_of(1)).await;
    make_table(&db).await;
    let r = db
        .with_timeout(Duration::from_millis(200))
        .execute(
            "BEGIN; INSERT INTO {{tables.t}} VALUES (1); SELECT pg_sleep(2); COMMIT",
            &[],
        )
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    db.execute("INSERT INTO {{tables.t}} VALUES (2)", &[])
        .await
        .unwrap();
    assert_eq!(committed_rows(&db).await.as_deref(), Some("2"));
}
