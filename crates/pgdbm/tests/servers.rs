//! The throwaway servers of `pgdbm::testing`: a primary with a streaming replica (promoted for
//! failover) and PgBouncer in transaction mode, each started here and removed on drop.

use std::time::Duration;

use pgdbm::testing::{TempCluster, TempPgBouncer};
use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

async fn manager(config: DatabaseConfig) -> AsyncDatabaseManager {
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        min_connections: 1,
        max_connections: 2,
        ..config
    })
    .expect("config");
    db.connect().await.expect("connect");
    db
}

#[tokio::test]
async fn a_replica_streams_from_its_primary_and_takes_over_when_promoted() {
    let primary = TempCluster::start().expect("primary");
    let p = manager(primary.database_config("postgres")).await;
    p.execute("CREATE TABLE t (id int PRIMARY KEY)", &[])
        .await
        .unwrap();
    p.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();

    let replica = primary.start_replica().expect("replica");
    assert_ne!(replica.port(), primary.port());
    let r = manager(replica.database_config("postgres")).await;
    let standby: Option<bool> = r
        .fetch_value("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert_eq!(standby, Some(true));

    // Streaming: a write made after the backup shows up once replayed.
    p.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    primary
        .wait_for_replica(&replica, Duration::from_secs(10))
        .await
        .expect("replay");
    let n: Option<i64> = r.fetch_value("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(n, Some(2));

    // A standby refuses writes with 25006.
    let err = r
        .execute("INSERT INTO t VALUES (3)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate().map(|s| s.code()), Some("25006"), "{err}");

    replica.promote().expect("promote");
    let standby: Option<bool> = r
        .fetch_value("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert_eq!(standby, Some(false));
    r.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    r.disconnect().await.unwrap();
    p.disconnect().await.unwrap();

    let dirs = [primary.data_dir().to_owned(), replica.data_dir().to_owned()];
    drop(replica);
    drop(primary);
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[tokio::test]
async fn pgbouncer_in_transaction_mode_forwards_and_pools() {
    let cluster = TempCluster::start().expect("cluster");
    let bouncer = TempPgBouncer::builder()
        .default_pool_size(1)
        .start(cluster.host(), cluster.port())
        .expect("pgbouncer");
    assert_ne!(bouncer.port(), cluster.port());

    // Two clients through a pool of one server connection: both served, by the same backend.
    let mut pids = Vec::new();
    for _ in 0..2 {
        let (client, conn) = tokio_postgres::connect(
            &bouncer.connection_string("postgres"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect through pgbouncer");
        tokio::spawn(conn);
        let rows = client
            .simple_query("SELECT pg_backend_pid()::text, current_setting('port')")
            .await
            .expect("query through pgbouncer");
        let row = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .expect("a row");
        assert_eq!(row.get(1), Some(cluster.port().to_string().as_str()));
        pids.push(row.get(0).unwrap().to_owned());
    }
    assert_eq!(
        pids[0], pids[1],
        "one server connection serves both clients"
    );

    let root = bouncer.connection_string("postgres");
    drop(bouncer);
    let gone = tokio_postgres::connect(&root, tokio_postgres::NoTls).await;
    assert!(gone.is_err(), "PgBouncer still answers after drop");
}

#[test]
fn pgbouncer_settings_are_checked() {
    let err = TempPgBouncer::builder()
        .pool_mode("bogus")
        .start("127.0.0.1", 5432)
        .unwrap_err();
    assert!(err.to_string().contains("pool_mode"), "{err}");
    let err = TempPgBouncer::builder()
        .setting("x\ny", "1")
        .start("127.0.0.1", 5432)
        .unwrap_err();
    assert!(err.to_string().contains("setting"), "{err}");
}
