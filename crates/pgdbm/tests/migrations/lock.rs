//! The migration lock: waits past server timeouts, release when unlocking fails or on cancel.

use std::time::{Duration, Instant};

use crate::common::{admin_value, unique};
use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager};

use super::{count, exists, fresh_schema, shared_db, tracked, Captured, TempDir};

#[tokio::test]
async fn a_waiting_racer_outlasts_lock_timeout() {
    let (schema, _guard) = fresh_schema();
    let dir = TempDir::new();
    dir.write(
        "001_slow.sql",
        "CREATE TABLE {{tables.slow}} (id int);\nSELECT pg_sleep(1.5);",
    );
    // The pool's lock_timeout (300 ms) is far shorter than the time the lock is held.
    let db = shared_db(&schema, |c| {
        c.lock_timeout_ms = Some(300);
        c.max_connections = 4;
    })
    .await;
    let started = Instant::now();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            let path = dir.path().to_path_buf();
            tokio::spawn(async move {
                let r = AsyncMigrationManager::new(&db, path)
                    .apply_pending_migrations()
                    .await;
                (r, started.elapsed())
            })
        })
        .collect();
    let mut applied = 0;
    let mut longest = Duration::ZERO;
    for run in runs {
        let (r, took) = run.await.unwrap();
        applied += r.expect("both succeed").applied.len();
        longest = longest.max(took);
    }
    assert_eq!(applied, 1);
    assert!(
        longest >= Duration::from_millis(1400),
        "one racer waited for the other: {longest:?}"
    );
}

#[tokio::test]
async fn a_statement_longer_than_statement_timeout_completes() {
    let (schema, _guard) = fresh_schema();
    let dir = TempDir::new();
    dir.write(
        "001_long.sql",
        "CREATE TABLE {{tables.long}} AS SELECT 1 AS id FROM pg_sleep(1.0);",
    )
    .write(
        "002_long_nt.sql",
        "-- pgdbm:no-transaction\nSELECT pg_sleep(0.7);\nINSERT INTO {{tables.long}} VALUES (2);",
    );
    let db = shared_db(&schema, |c| {
        c.statement_timeout_ms = Some(200);
        c.command_timeout = 0.3;
    })
    .await;
    // The pool's connections do time out such a statement.
    let err = db.execute("SELECT pg_sleep(1)", &[]).await.unwrap_err();
    assert!(err.is_timeout() || err.code() == Some("57014"), "{err}");
    let report = AsyncMigrationManager::new(&db, dir.path())
        .apply_pending_migrations()
        .await
        .expect("completes");
    assert_eq!(report.applied.len(), 2);
    assert!(report.applied[0].execution_time_ms >= 1000, "{report:?}");
    assert_eq!(
        count(&format!("SELECT count(*) FROM \"{schema}\".long")).await,
        2
    );
}

async fn pool_pids(db: &AsyncDatabaseManager, n: usize) -> Vec<i32> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(db.acquire().await.unwrap());
    }
    conns.iter().map(|c| c.backend_pid()).collect()
}

async fn wait_backend_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
    ))
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "backend {pid} still connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn when_unlocking_fails_the_connection_is_discarded() {
    let (schema, _guard) = fresh_schema();
    let dir = TempDir::new();
    // The migration itself drops every advisory lock of its session, so the run's unlock fails.
    dir.write("001_unlock.sql", "CREATE TABLE {{tables.pid}} AS SELECT pg_backend_pid() AS pid;\nSELECT pg_advisory_unlock_all();");
    let db = shared_db(&schema, |c| {
        c.min_connections = 2;
        c.max_connections = 2;
    })
    .await;
    let (logs, _sub) = Captured::start();
    AsyncMigrationManager::new(&db, dir.path())
        .apply_pending_migrations()
        .await
        .unwrap();
    let pid: i32 = db
        .fetch_value("SELECT pid FROM {{tables.pid}}", &[])
        .await
        .unwrap()
        .unwrap();
    assert!(
        logs.text().contains("could not release the migration lock"),
        "{}",
        logs.text()
    );
    wait_backend_gone(pid).await;
    assert!(
        !pool_pids(&db, 2).await.contains(&pid),
        "the connection never went back to the pool"
    );
}

#[tokio::test]
async fn a_cancelled_run_releases_its_lock_and_connection() {
    let (schema, _guard) = fresh_schema();
    let marker = unique("cancel_marker");
    let dir = TempDir::new();
    dir.write("001_fast.sql", "CREATE TABLE {{tables.fast}} (id int);")
        .write(
            "002_slow.sql",
            format!(
                "CREATE TABLE {{{{tables.slow}}}} (id int);\nSELECT pg_sleep(60) /* {marker} */;"
            ),
        );
    let db = shared_db(&schema, |c| {
        c.min_connections = 2;
        c.max_connections = 2;
    })
    .await;
    let run = {
        let db = db.clone();
        let path = dir.path().to_path_buf();
        tokio::spawn(async move {
            AsyncMigrationManager::new(&db, path)
                .apply_pending_migrations()
                .await
        })
    };
    // Wait until the slow file runs, and note the backend that holds the lock.
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid: i32 = loop {
        let found = admin_value(&format!(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
        ))
        .await;
        if let Some(p) = found {
            break p.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the slow migration never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = {pid}"
        ))
        .await,
        2
    );
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());

    wait_backend_gone(pid).await;
    assert!(
        !exists(&format!("\"{schema}\".slow")).await,
        "the cancelled file was rolled back"
    );
    assert_eq!(tracked(&schema).await, ["001_fast.sql"]);
    assert!(!pool_pids(&db, 2).await.contains(&pid));

    // The lock is free: the next run goes straight through.
    dir.write("002_slow.sql", "CREATE TABLE {{tables.slow}} (id int);");
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        AsyncMigrationManager::new(&db, dir.path()).apply_pending_migrations(),
    )
    .await
    .expect("the lock was released")
    .unwrap();
    assert_eq!(report.applied[0].filename, "002_slow.sql");
}
