//! Read-your-writes on a real primary and streaming replica (each test has its own pair):
//! a manager's reads through `replica()` or automatic routing see the writes it made.

use std::time::{Duration, Instant};

use pgdbm::testing::TempCluster;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

#[path = "support/replica_pair.rs"]
mod replica_pair;

use replica_pair::{config, connect, pair_with};

/// Writes a row then reads it back through `read`, `pairs` times: (misses, reads served by
/// the replica).
async fn write_then_read(
    writer: &AsyncDatabaseManager,
    reader: &AsyncDatabaseManager,
    table: &str,
    pairs: i32,
) -> (usize, usize) {
    let (mut misses, mut on_replica) = (0, 0);
    let insert = format!("INSERT INTO {table} VALUES ($1, $1 * 10)");
    let select = format!("SELECT v, pg_is_in_recovery() AS r FROM {table} WHERE id = $1");
    for i in 0..pairs {
        writer.execute(&insert, &[&i]).await.unwrap();
        match reader.fetch_one(&select, &[&i]).await.unwrap() {
            Some(row) => {
                assert_eq!(row.get::<i32>("v").unwrap(), i * 10);
                on_replica += usize::from(row.get::<bool>("r").unwrap());
            }
            None => misses += 1,
        }
    }
    (misses, on_replica)
}

#[tokio::test]
async fn read_your_writes_500_pairs_without_a_miss() {
    // synchronous_commit = on, PostgreSQL's default (TempCluster turns it off for speed).
    let (primary, replica) = pair_with(TempCluster::builder().setting("synchronous_commit", "on"));
    let db = connect(config(&primary, &replica)).await;
    db.execute(
        "CREATE TABLE a (id int PRIMARY KEY, v int); CREATE TABLE b (id int PRIMARY KEY, v int);
         CREATE TABLE c (id int PRIMARY KEY, v int)",
        &[],
    )
    .await
    .unwrap();
    primary
        .wait_for_replica(&replica, Duration::from_secs(10))
        .await
        .unwrap();

    // The sanity check: straight to the replica, without read-your-writes, reads miss.
    let raw = connect(replica.database_config("postgres")).await;
    let (raw_misses, _) = write_then_read(&db, &raw, "a", 500).await;
    eprintln!("raw replica: {raw_misses} of 500 reads missed the write just made");
    assert!(
        raw_misses > 0,
        "the raw replica never missed: the test proves nothing"
    );

    let started = Instant::now();
    let (misses, served) = write_then_read(&db, &db.replica(), "b", 500).await;
    eprintln!(
        "replica(): {misses} misses, {served} of 500 reads served by the replica, {:?}",
        started.elapsed()
    );
    assert_eq!(misses, 0);
    assert!(served > 0, "no read reached the replica");

    let auto = connect(DatabaseConfig {
        replica_auto_routing: true,
        ..config(&primary, &replica)
    })
    .await;
    let started = Instant::now();
    let (misses, served) = write_then_read(&auto, &auto, "c", 500).await;
    eprintln!(
        "automatic routing: {misses} misses, {served} of 500 reads served by the replica, {:?}",
        started.elapsed()
    );
    assert_eq!(misses, 0);
    assert!(served > 0, "no read reached the replica");
    for m in [db, raw, auto] {
        m.disconnect().await.unwrap();
    }
}

#[tokio::test]
async fn read_your_writes_with_asynchronous_commit_and_transactions() {
    // synchronous_commit = off (TempCluster's default): a commit reaches the replica only
    // once the WAL writer flushes it, the hardest case.
    let (primary, replica) = pair_with(TempCluster::builder());
    let db = connect(config(&primary, &replica)).await;
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)", &[])
        .await
        .unwrap();
    let (misses, served) = write_then_read(&db, &db.replica(), "t", 50).await;
    eprintln!("asynchronous commit: {misses} misses, {served} of 50 on the replica");
    assert_eq!(misses, 0);
    // A committed transaction is a write too.
    for i in 100..120 {
        let tx = db.transaction().await.unwrap();
        tx.execute("INSERT INTO t VALUES ($1, 0)", &[&i])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let n: Option<i64> = db
            .replica()
            .fetch_value("SELECT count(*) FROM t WHERE id = $1", &[&i])
            .await
            .unwrap();
        assert_eq!(n, Some(1), "row {i} written in a transaction");
    }
    // With no time to wait, a read right after a write still sees it: from the replica when
    // it has already replayed the write (the primary flushes the WAL for it at once), else
    // from the primary.
    let impatient = connect(DatabaseConfig {
        read_your_writes_timeout: 0.0,
        ..config(&primary, &replica)
    })
    .await;
    for i in 1000..1020 {
        impatient
            .execute("INSERT INTO t VALUES ($1, 0)", &[&i])
            .await
            .unwrap();
        let seen: Option<i64> = impatient
            .replica()
            .fetch_value("SELECT count(*) FROM t WHERE id = $1", &[&i])
            .await
            .unwrap();
        assert_eq!(seen, Some(1), "row {i}");
    }
    for m in [db, impatient] {
        m.disconnect().await.unwrap();
    }
}
