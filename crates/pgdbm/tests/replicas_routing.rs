//! Automatic routing against a real primary and standby: what the text cannot show is found
//! out (an unlogged table, a call in attribute notation, a function named like a keyword), and
//! such a read runs on the primary, never fails for having replicas.

use std::time::{Duration, Instant};

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

#[path = "support/replica_pair.rs"]
mod replica_pair;

use replica_pair::{config, connect, pair};

async fn ran_on_replica(db: &AsyncDatabaseManager, sql: &str) -> bool {
    db.fetch_value::<bool>(sql, &[])
        .await
        .expect(sql)
        .expect(sql)
}

#[tokio::test]
async fn reads_the_replica_cannot_serve_run_on_the_primary() {
    let (primary, replica) = pair();
    let db = connect(DatabaseConfig {
        replica_auto_routing: true,
        ..config(&primary, &replica)
    })
    .await;
    db.execute(
        "CREATE UNLOGGED TABLE scratch (n int); INSERT INTO scratch VALUES (1);
         CREATE TABLE jobs (id int); INSERT INTO jobs VALUES (1);
         CREATE FUNCTION range(int, int) RETURNS bool LANGUAGE sql AS 'SELECT pg_is_in_recovery()';
         CREATE FUNCTION rows(jobs) RETURNS bool LANGUAGE sql AS 'SELECT pg_is_in_recovery()';",
        &[],
    )
    .await
    .unwrap();
    primary
        .wait_for_replica(&replica, Duration::from_secs(10))
        .await
        .unwrap();

    // An unlogged table: the standby refuses it (0A000); the read runs on the primary, now
    // and from then on.
    for _ in 0..3 {
        let n: Option<i64> = db
            .fetch_value("SELECT count(*) FROM scratch", &[])
            .await
            .expect("an unlogged table is read on the primary");
        assert_eq!(n, Some(1));
    }
    assert!(!ran_on_replica(&db, "SELECT pg_is_in_recovery() FROM scratch").await);

    // A user function named like a keyword.
    assert!(!ran_on_replica(&db, "SELECT range(1, 2)").await);
    assert!(!ran_on_replica(&db, "SELECT rows(j) FROM jobs j").await);

    // Attribute notation: `j.claim` is `claim(j)`. The function is new, so the health checks
    // must first read it from the catalog (within about a second).
    db.execute(
        "CREATE FUNCTION claim(jobs) RETURNS bool LANGUAGE sql \
         AS 'SELECT pg_is_in_recovery()'",
        &[],
    )
    .await
    .unwrap();
    primary
        .wait_for_replica(&replica, Duration::from_secs(10))
        .await
        .unwrap();
    let started = Instant::now();
    while ran_on_replica(&db, "SELECT j.claim FROM jobs j").await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "j.claim still runs on the replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        assert!(!ran_on_replica(&db, "SELECT j.claim FROM jobs j").await);
    }
    // A plain column of the same table still reads from the replica.
    assert!(ran_on_replica(&db, "SELECT pg_is_in_recovery() FROM jobs j WHERE j.id = 1").await);
    db.disconnect().await.unwrap();
}
