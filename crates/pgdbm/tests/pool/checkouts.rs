//! The pool's own checkout and release: waiters served in order, no connection or place lost
//! when a waiter gives up at any moment, never more connections than the maximum, and a
//! closed pool answers its waiters at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Pool};

async fn pool_of_size(n: usize) -> (Pool, AsyncDatabaseManager) {
    let cfg = DatabaseConfig {
        max_connections: n,
        min_connections: 1,
        ..config()
    };
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap();
    let db = AsyncDatabaseManager::from_pool(pool.clone(), None).unwrap();
    (pool, db)
}

async fn waiting(db: &AsyncDatabaseManager) -> usize {
    db.get_pool_stats().await.unwrap().waiting
}

#[tokio::test]
async fn waiters_are_served_in_the_order_they_asked() {
    let (_pool, db) = pool_of_size(1).await;
    let held = db.acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let task_db = db.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let v: Option<i32> = task_db.fetch_value("SELECT $1::int", &[&i]).await.unwrap();
            order.lock().unwrap().push(v.unwrap());
        }));
        // The next one asks only once this one waits in line.
        settle(|| {
            let db = db.clone();
            async move { waiting(&db).await == i as usize + 1 }
        })
        .await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(waiting(&db).await, 0);
}

/// Waiters dropped at random moments (while in line, while being handed a connection) lose
/// neither a connection nor a place: afterwards every connection can be taken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_that_give_up_at_any_moment_lose_nothing() {
    let (_pool, db) = pool_of_size(2).await;
    give_up_at_random(std::slice::from_ref(&db), 7, 3_000).await;
    both_come_back(&db, &db).await;
    assert_eq!(waiting(&db).await, 0);
}

/// 40 rounds of 8 callers of a short statement, each through one of `dbs` (a pool of two
/// connections) and dropped after a random time below `max_cut_us`.
pub(crate) async fn give_up_at_random(dbs: &[AsyncDatabaseManager], seed: u64, max_cut_us: u64) {
    let mut rng = Rng(seed);
    for round in 0..40 {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let db = dbs[rng.below(dbs.len() as u64) as usize].clone();
            let cut = Duration::from_micros(rng.below(max_cut_us));
            tasks.push(tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    cut,
                    db.fetch_value::<i32>("SELECT 1 FROM pg_sleep(0.001)", &[]),
                )
                .await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let stats = dbs[0].get_pool_stats().await.unwrap();
        assert!(stats.size <= 2, "round {round}: {stats:?}");
    }
}

/// Both connections of a pool of two are back (recovered ones may take a moment): they can be
/// taken at once, through `a` and `b`.
pub(crate) async fn both_come_back(a: &AsyncDatabaseManager, b: &AsyncDatabaseManager) {
    let both = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::try_join(a.acquire(), b.acquire()),
    )
    .await
    .expect("both connections came back")
    .unwrap();
    assert_ne!(both.0.backend_pid(), both.1.backend_pid());
}

/// The narrowest moment: a connection is handed to a waiter that gives up before it looks.
/// The hand-over goes back to the pool rather than closing the connection or losing it.
#[tokio::test]
async fn a_connection_handed_to_a_waiter_that_gave_up_goes_back() {
    let (_pool, db) = pool_of_size(1).await;
    let pid: i32 = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let db = db.clone();
        tokio::spawn(async move {
            let call = db.fetch_value::<i32>("SELECT 1", &[]);
            let (one, _) = tokio::join!(call, async {
                let _ = go_rx.await;
            });
            // The release above handed the connection to the waiter; it gives up before its
            // next poll (one thread: it cannot run in between).
            let _ = cancel_tx.send(());
            one.unwrap()
        })
    };
    let waiter = {
        let db = db.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = cancel_rx => None,
                r = db.fetch_value::<i32>("SELECT 2", &[]) => Some(r.unwrap()),
            }
        })
    };
    tokio::task::yield_now().await;
    let _ = go_tx.send(());
    assert_eq!(holder.await.unwrap(), Some(1));
    assert_eq!(waiter.await.unwrap(), None, "the waiter gave up");
    // The same connection, back and idle.
    let stats = db.get_pool_stats().await.unwrap();
    assert_eq!(
        (stats.size, stats.free_size, stats.waiting),
        (1, 1, 0),
        "{stats:?}"
    );
    let again: Option<i32> = tokio::time::timeout(
        Duration::from_secs(5),
        db.fetch_value("SELECT pg_backend_pid()", &[]),
    )
    .await
    .expect("the connection came back")
    .unwrap();
    assert_eq!(again, Some(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_connections_than_the_maximum() {
    let app = unique("cap");
    let cfg = DatabaseConfig {
        max_connections: 3,
        min_connections: 1,
        server_settings: Some([("application_name".to_owned(), app.clone())].into()),
        ..config()
    };
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    db.connect().await.unwrap();
    let peak = Arc::new(Mutex::new(0_i64));
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let db = db.clone();
        let app = app.clone();
        let peak = peak.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let n: i64 = db
                    .fetch_value(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        &[&app],
                    )
                    .await
                    .unwrap()
                    .unwrap();
                let mut p = peak.lock().unwrap();
                *p = (*p).max(n);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let peak = *peak.lock().unwrap();
    assert!((1..=3).contains(&peak), "{peak}");
    let stats = db.get_pool_stats().await.unwrap();
    assert!(stats.size <= 3 && stats.waiting == 0, "{stats:?}");
}

#[tokio::test]
async fn a_closed_pool_answers_its_waiters_at_once() {
    let (pool, db) = pool_of_size(1).await;
    let held = db.acquire().await.unwrap();
    let waiter = {
        let db = db.clone();
        tokio::spawn(async move { db.fetch_value::<i32>("SELECT 1", &[]).await })
    };
    settle(|| {
        let db = db.clone();
        async move { waiting(&db).await == 1 }
    })
    .await;
    pool.close();
    let r = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("answered at once")
        .unwrap();
    let e = r.unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
    drop(held);
    assert!(db.fetch_value::<i32>("SELECT 1", &[]).await.is_err());
}

/// Callers racing a close: every one is answered promptly (with rows or with "closed"), none
/// is left waiting for a connection that will never be handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_racing_a_close_are_all_answered() {
    for round in 0..10_u64 {
        let (pool, db) = pool_of_size(1).await;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    if db.fetch_value::<i32>("SELECT 1", &[]).await.is_err() {
                        break;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        pool.close();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("a caller was left waiting after the close")
                .unwrap();
        }
    }
}
