//! The pool tops itself back up to `min_connections` in the background when connections are
//! lost: terminated on the server, discarded because their state was unknown, detached.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pgdbm::AsyncDatabaseManager;

/// Server connections whose application_name is `app`.
async fn server_connections(app: &str) -> i64 {
    admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
    ))
    .await
    .unwrap()
    .parse()
    .unwrap()
}

async fn pool_with(min: usize, max: usize) -> (AsyncDatabaseManager, SchemaGuard, String) {
    let app = unique("refill");
    let (db, guard) = schema_db_with(|c| {
        c.min_connections = min;
        c.max_connections = max;
        c.server_settings = Some([("application_name".to_string(), app.clone())].into());
    })
    .await;
    (db, guard, app)
}

/// Waits until the pool has at least `min` live server connections and reports them in its
/// stats, never more than `max`. Panics after `limit`.
async fn assert_refilled(db: &AsyncDatabaseManager, app: &str, min: usize, max: usize) {
    let limit = Duration::from_secs(5);
    let started = Instant::now();
    loop {
        let on_server = server_connections(app).await;
        let stats = db.get_pool_stats().await.unwrap();
        assert!(stats.size <= max, "never above max_connections: {stats:?}");
        assert!(on_server <= max as i64, "{on_server} server connections");
        if on_server >= min as i64 && stats.size >= min {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "the pool was not topped back up to {min} within {limit:?}: {on_server} server \
             connections, stats {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn refills_after_backends_are_terminated() {
    let (db, _g, app) = pool_with(3, 5).await;
    assert_eq!(server_connections(&app).await, 3);
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
    ))
    .await;
    // No query in between: the pool notices and reconnects on its own.
    assert_refilled(&db, &app, 3, 5).await;
    // And the refilled connections work.
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn refills_after_connections_are_discarded() {
    let (db, _g, app) = pool_with(3, 4).await;
    // Raw connections left inside a transaction are closed, not returned to the pool.
    let mut raw = Vec::new();
    for _ in 0..3 {
        let conn = db.acquire().await.unwrap();
        conn.batch_execute("BEGIN").await.unwrap();
        raw.push(conn);
    }
    drop(raw);
    assert_refilled(&db, &app, 3, 4).await;

    // Detached connections leave the pool too.
    let detached = db.acquire().await.unwrap().detach();
    drop(detached);
    let detached = db.acquire().await.unwrap().detach();
    drop(detached);
    assert_refilled(&db, &app, 3, 4).await;
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_closed_pool_is_not_refilled() {
    let (db, _g, app) = pool_with(2, 2).await;
    assert_eq!(server_connections(&app).await, 2);
    db.disconnect().await.unwrap();
    let started = Instant::now();
    while server_connections(&app).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "connections closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server_connections(&app).await,
        0,
        "nothing reconnects after disconnect"
    );
}

#[tokio::test]
async fn refills_after_migrations() {
    let (db, _g, app) = pool_with(3, 4).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/migrations");
    let mm = pgdbm::AsyncMigrationManager::new(&db, dir);
    let report = mm.apply_pending_migrations().await.unwrap();
    assert_eq!(report.applied.len(), 3);
    // The migration lock's connection was detached from the pool.
    assert_refilled(&db, &app, 3, 4).await;
    db.disconnect().await.unwrap();
}
