//! Recycling and reaping connections (max_queries, idle, dead), pools outliving their runtimes.

use std::time::Duration;

use crate::common;
use crate::common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

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
