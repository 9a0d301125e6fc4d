//! Managers of many schemas over one pool whose statement caches are too small: each schema's
//! calls go to their home connection, wait for it only briefly, and a caller that gives up
//! while waiting for it loses nothing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::checkouts::{both_come_back, give_up_at_random};
use crate::common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Pool};

/// A pool of `size` connections, all open, caching two statements each, and one manager for
/// each of `schemas` schemas (none of which need exist: the calls name no table).
async fn tenants(size: usize, schemas: usize) -> (Pool, Vec<AsyncDatabaseManager>) {
    let cfg = DatabaseConfig {
        max_connections: size,
        min_connections: size,
        statement_cache_size: 2,
        ..config()
    };
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap();
    let base = unique("homes");
    let managers = (0..schemas)
        .map(|n| AsyncDatabaseManager::from_pool(pool.clone(), Some(&format!("{base}_{n}"))))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (pool, managers)
}

async fn pid(db: &AsyncDatabaseManager) -> i32 {
    db.fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap()
}

/// Runs more distinct statements than the connections cache, so that one evicts (the calls
/// go round the pool until then).
async fn overflow_a_cache(db: &AsyncDatabaseManager) {
    for n in 0..16 {
        let _: Option<i32> = db.fetch_value(&format!("SELECT {n}"), &[]).await.unwrap();
    }
}

#[tokio::test]
async fn calls_go_to_their_schemas_home_once_the_caches_evict() {
    let (_pool, dbs) = tenants(4, 8).await;
    // Nothing evicted yet: one after another, the calls take the oldest idle connection, so
    // they go round every connection.
    let mut before = HashSet::new();
    for _ in 0..8 {
        before.insert(pid(&dbs[0]).await);
    }
    assert_eq!(before.len(), 4, "round the pool before any eviction");

    overflow_a_cache(&dbs[0]).await;
    let mut homes = HashSet::new();
    for db in &dbs {
        let home = pid(db).await;
        for _ in 0..10 {
            assert_eq!(pid(db).await, home, "a schema's calls stay on its home");
        }
        homes.insert(home);
    }
    assert!(
        homes.len() >= 2,
        "the schemas are spread over the pool: {homes:?}"
    );
}

/// Only calls of one statement go home: a transaction, and a connection of one's own, take
/// the oldest idle connection, so one after another they go round the pool.
#[tokio::test]
async fn transactions_and_acquire_never_go_home() {
    let (_pool, dbs) = tenants(4, 8).await;
    overflow_a_cache(&dbs[0]).await;
    let db = &dbs[0];
    let home = pid(db).await;
    assert_eq!(pid(db).await, home, "single calls go home");

    let mut in_transactions = HashSet::new();
    for _ in 0..8 {
        let tx = db.transaction().await.unwrap();
        let p: i32 = tx
            .fetch_value("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        in_transactions.insert(p);
    }
    assert!(
        in_transactions.len() >= 2,
        "transactions: {in_transactions:?}"
    );

    let mut acquired = HashSet::new();
    for _ in 0..8 {
        let conn = db.acquire().await.unwrap();
        acquired.insert(conn.backend_pid());
        drop(conn);
        // A raw connection goes back after a check in the background.
        settle(|| async { db.get_pool_stats().await.unwrap().free_size == 4 }).await;
    }
    assert!(acquired.len() >= 2, "acquire: {acquired:?}");
}

#[tokio::test]
async fn one_schema_alone_never_goes_home() {
    let (_pool, dbs) = tenants(3, 1).await;
    overflow_a_cache(&dbs[0]).await;
    let mut seen = HashSet::new();
    for _ in 0..6 {
        seen.insert(pid(&dbs[0]).await);
    }
    assert_eq!(seen.len(), 3, "one schema's calls use the whole pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_its_busy_home_only_briefly() {
    let (_pool, dbs) = tenants(2, 4).await;
    overflow_a_cache(&dbs[0]).await;
    let db = dbs[0].clone();
    let home = pid(&db).await;
    let sleeper = {
        let db = db.clone();
        tokio::spawn(async move {
            db.fetch_value::<i32>("SELECT pg_backend_pid() FROM pg_sleep(2)", &[])
                .await
                .unwrap()
        })
    };
    // The sleep holds the home connection.
    settle(|| {
        let db = db.clone();
        async move { db.get_pool_stats().await.unwrap().free_size == 1 }
    })
    .await;
    let started = Instant::now();
    let other = pid(&db).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited {:?} for a busy home",
        started.elapsed()
    );
    assert_ne!(other, home, "took the other connection");
    assert_eq!(sleeper.await.unwrap(), Some(home));
}

/// Callers of a few schemas on two connections, each dropped at a random moment (waiting for
/// a home, in line, being handed a connection, in its statement): afterwards both
/// connections come back and no one is counted as waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_while_waiting_for_a_home_lose_nothing() {
    let (_pool, dbs) = tenants(2, 4).await;
    overflow_a_cache(&dbs[0]).await;
    give_up_at_random(&dbs, 11, 8_000).await;
    both_come_back(&dbs[1], &dbs[2]).await;
    let stats = dbs[0].get_pool_stats().await.unwrap();
    assert_eq!((stats.size, stats.waiting), (2, 0), "{stats:?}");
}
