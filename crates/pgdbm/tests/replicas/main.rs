//! Read replicas against a real primary and streaming replica (each test has its own pair):
//! routing of the replica view and of automatic mode, fallback, health checks, lag, stats,
//! and config. Read-your-writes is in `replicas_ryw.rs`.

#[path = "../support/replica_pair.rs"]
mod replica_pair;

mod config;
mod health;
mod routing;

use std::future::Future;
use std::time::{Duration, Instant};

use pgdbm::AsyncDatabaseManager;

/// Whether a read of `db` ran on a standby.
async fn on_replica(db: &AsyncDatabaseManager) -> bool {
    db.fetch_value::<bool>("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("read")
        .expect("a value")
}

async fn replica_healthy(db: &AsyncDatabaseManager) -> bool {
    let stats = db.get_pool_stats().await.expect("stats");
    stats.hosts[1].healthy
}

/// Polls `check` every 50 ms until it holds; how long that took, or a panic after `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}
