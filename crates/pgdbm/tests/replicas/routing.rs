//! Routing: the replica view and automatic mode send reads to the replica, writes to the primary.

use std::time::Duration;

use futures_util::TryStreamExt;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

use crate::replica_pair::{config, connect, pair};

use super::{on_replica, replica_healthy};

#[tokio::test]
async fn the_replica_view_reads_from_the_replica_and_writes_to_the_primary() {
    let (primary, replica) = pair();
    let db = connect(DatabaseConfig {
        schema: Some("shop".into()),
        ..config(&primary, &replica)
    })
    .await;
    let ro = db.replica();
    assert!(ro.is_replica_view() && !db.is_replica_view());

    assert!(on_replica(&ro).await, "the view reads from the replica");
    assert!(
        !on_replica(&db).await,
        "the manager itself reads from the primary"
    );

    // Writes of the view go to the primary (a standby would refuse them with 25006).
    ro.execute(
        "CREATE TABLE {{tables.items}} (id serial PRIMARY KEY, name text)",
        &[],
    )
    .await
    .expect("DDL through the view");
    let id: i32 = ro
        .execute_and_return_id("INSERT INTO {{tables.items}} (name) VALUES ($1)", &[&"a"])
        .await
        .expect("insert through the view");
    ro.executemany(
        "INSERT INTO {{tables.items}} (name) VALUES ($1)",
        vec![("b",), ("c",)],
    )
    .await
    .expect("executemany through the view");
    ro.copy_records_to_table("items", vec![("d",)], Some(&["name"]))
        .await
        .expect("COPY through the view");
    let tx = ro
        .transaction()
        .await
        .expect("transaction through the view");
    let in_recovery: Option<bool> = tx
        .fetch_value("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert_eq!(in_recovery, Some(false), "transactions run on the primary");
    tx.execute(
        "UPDATE {{tables.items}} SET name = 'A' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Same schema and templates on the replica, and it sees the writes (read-your-writes).
    let names: Vec<String> = ro
        .fetch_column("SELECT name FROM {{tables.items}} ORDER BY id", &[])
        .await
        .expect("read through the view");
    assert_eq!(names, ["A", "b", "c", "d"]);
    let schema: Option<String> = ro
        .fetch_value("SELECT current_schema()", &[])
        .await
        .unwrap();
    assert_eq!(schema.as_deref(), Some("shop"));
    assert!(ro.table_exists("items").await.unwrap());

    // Streams too.
    let rows: Vec<pgdbm::Record> = ro
        .fetch_stream("SELECT pg_is_in_recovery() AS r", &[])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(rows[0].get::<bool>("r").unwrap());
    let rows: Vec<pgdbm::Record> = ro
        .fetch_stream_owned("SELECT pg_is_in_recovery() AS r", &[])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(rows[0].get::<bool>("r").unwrap());
    // A timed view of the replica view still reads from the replica.
    assert!(on_replica(&ro.with_timeout(Duration::from_secs(5))).await);

    // Managers over a shared pool share its replicas.
    let pool = AsyncDatabaseManager::create_shared_pool(&config(&primary, &replica))
        .await
        .unwrap();
    let shop = AsyncDatabaseManager::from_pool(pool.clone(), Some("shop")).unwrap();
    let n: Option<i64> = shop
        .replica()
        .fetch_value("SELECT count(*) FROM {{tables.items}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(4));
    assert!(on_replica(&shop.replica()).await);
    pool.close();
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn automatic_routing_sends_only_plain_reads_to_the_replica() {
    let (primary, replica) = pair();
    let db = connect(DatabaseConfig {
        replica_auto_routing: true,
        ..config(&primary, &replica)
    })
    .await;
    db.execute(
        "CREATE SEQUENCE s; CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);
         CREATE FUNCTION where_am_i() RETURNS bool LANGUAGE sql AS 'SELECT pg_is_in_recovery()';
         CREATE TABLE log (n int);
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE
             AS 'INSERT INTO log VALUES (1) RETURNING 1';
         CREATE VIEW sneaky AS SELECT bump() AS x",
        &[],
    )
    .await
    .unwrap();
    primary
        .wait_for_replica(&replica, Duration::from_secs(10))
        .await
        .unwrap();

    let ran_on_replica = |sql: &'static str| {
        let db = db.clone();
        async move {
            let v: Option<bool> = db.fetch_value(sql, &[]).await.expect(sql);
            v.expect(sql)
        }
    };
    assert!(ran_on_replica("SELECT pg_is_in_recovery()").await);
    assert!(ran_on_replica("SELECT pg_is_in_recovery() FROM t WHERE id = 1").await);
    // Not provably plain reads: the primary.
    assert!(!ran_on_replica("SELECT pg_is_in_recovery() FROM t WHERE id = 1 FOR UPDATE").await);
    assert!(!ran_on_replica("SELECT pg_is_in_recovery() FROM t FOR SHARE").await);
    assert!(
        !ran_on_replica(
            "WITH d AS (DELETE FROM t WHERE id = 0 RETURNING *) SELECT pg_is_in_recovery()"
        )
        .await
    );
    assert!(!ran_on_replica("SELECT where_am_i()").await);
    assert!(!ran_on_replica("SELECT pg_is_in_recovery() FROM (SELECT nextval('s')) x").await);
    // nextval must run on the primary: a standby refuses it. (The statement above took 1.)
    let n: Option<i64> = db.fetch_value("SELECT nextval('s')", &[]).await.unwrap();
    assert_eq!(n, Some(2));
    // Transactions stay on the primary, reads inside them too.
    let tx = db.transaction().await.unwrap();
    let r: Option<bool> = tx
        .fetch_value("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert_eq!(r, Some(false));
    tx.commit().await.unwrap();
    // Streams outside transactions follow the same rule.
    let rows: Vec<pgdbm::Record> = db
        .fetch_stream("SELECT pg_is_in_recovery() AS r", &[])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(rows[0].get::<bool>("r").unwrap());
    let id: i32 = db
        .execute_and_return_id("INSERT INTO t VALUES (2) RETURNING id", &[])
        .await
        .unwrap();
    assert_eq!(id, 2);

    // A read the text cannot show writes (a view calling a writing function): the replica
    // refuses it with 25006, and it runs once on the primary.
    let x: Option<i32> = db.fetch_value("SELECT x FROM sneaky", &[]).await.unwrap();
    assert_eq!(x, Some(1));
    let logged: Option<i64> = db
        .replica()
        .fetch_value("SELECT count(*) FROM log", &[])
        .await
        .unwrap();
    assert_eq!(logged, Some(1), "written once, and seen (read-your-writes)");
    assert!(replica_healthy(&db).await);
    // The same for a write sent through the replica view's fetch.
    let id: Option<i32> = db
        .replica()
        .fetch_value("INSERT INTO t VALUES (3) RETURNING id", &[])
        .await
        .unwrap();
    assert_eq!(id, Some(3));

    // Off (the default): every read of the manager is on the primary.
    let manual = connect(config(&primary, &replica)).await;
    assert!(!on_replica(&manual).await);
    manual.disconnect().await.unwrap();
    db.disconnect().await.unwrap();
}
