//! `pipeline()` through a real PgBouncer in transaction mode: statements pipelined on one
//! client connection, each its own transaction, while another client shares the one server
//! connection.

#[path = "support/bouncer.rs"]
mod bouncer;
mod common;

use bouncer::{bouncer, pooled, TestDb};
use pgdbm::AsyncDatabaseManager;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_through_pgbouncer_keep_their_order_and_their_errors() {
    let test_db = TestDb::create().await;
    // One server connection for everybody: the pipelines of two managers interleave on it.
    let bouncer = bouncer(1);
    let url = bouncer.connection_string(&test_db.0);
    let db = AsyncDatabaseManager::new(pooled(&url, "pipes", 2)).unwrap();
    db.connect().await.unwrap();
    db.execute(
        "CREATE TABLE {{tables.items}} (id int PRIMARY KEY, name text NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    let other = AsyncDatabaseManager::new(pooled(&url, "pipes", 2)).unwrap();
    other.connect().await.unwrap();
    let ids: Vec<i32> = (0..40).collect();
    let tasks: Vec<_> = [db.clone(), other.clone()]
        .into_iter()
        .enumerate()
        .map(|(who, db)| {
            let ids = ids.clone();
            tokio::spawn(async move {
                for round in 0..10 {
                    let mut p = db.pipeline();
                    let base = (who * 1000 + round * 40) as i32;
                    let keys: Vec<i32> = ids.iter().map(|i| base + i).collect();
                    let inserts: Vec<_> = keys
                        .iter()
                        .map(|k| {
                            p.execute(
                                "INSERT INTO {{tables.items}} (id, name) VALUES ($1, 'n')",
                                &[k],
                            )
                        })
                        .collect();
                    // A duplicate: its own error, the rest still commit.
                    let dup = p.execute(
                        "INSERT INTO {{tables.items}} (id, name) VALUES ($1, 'n')",
                        &[&keys[0]],
                    );
                    let count = p.fetch_value::<i64>(
                        "SELECT count(*) FROM {{tables.items}} WHERE id >= $1 AND id < $1 + 40",
                        &[&base],
                    );
                    let r = p.run().await.unwrap();
                    for h in inserts {
                        assert_eq!(r.get(h).unwrap(), 1);
                    }
                    assert!(r.get(dup).unwrap_err().is_unique_violation());
                    assert_eq!(r.get(count).unwrap(), Some(40));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let total: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.items}}", &[])
        .await
        .unwrap();
    assert_eq!(total, Some(2 * 10 * 40));
    // A session change is refused before anything is sent, as for a single call.
    let mut p = db.pipeline();
    let set = p.execute("SET search_path = nowhere", &[]);
    let fine = p.fetch_value::<i32>("SELECT 1", &[]);
    let r = p.run().await.unwrap();
    assert_eq!(r.get(set).unwrap_err().kind(), pgdbm::ErrorKind::Other);
    assert_eq!(r.get(fine).unwrap(), Some(1));
    db.disconnect().await.unwrap();
    other.disconnect().await.unwrap();
}
