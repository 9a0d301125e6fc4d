//! Multi-host connection strings against real servers: libpq's `target_session_attrs`, an
//! error that names every host tried, failover to a promoted replica, and connections that
//! start answering "read-only transaction" being replaced.

use std::time::{Duration, Instant};

use pgdbm::testing::TempCluster;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error};

fn config(dsn: String) -> DatabaseConfig {
    DatabaseConfig {
        connection_string: Some(dsn),
        min_connections: 1,
        max_connections: 4,
        retry_attempts: 0,
        ..DatabaseConfig::default()
    }
}

fn hosts(ports: &[u16], attrs: &str) -> String {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "host={hosts} port={} user=postgres dbname=postgres target_session_attrs={attrs}",
        ports.join(",")
    )
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn served_by(db: &AsyncDatabaseManager) -> (u16, bool) {
    let row = db
        .fetch_one(
            "SELECT current_setting('port')::int AS port, pg_is_in_recovery() AS standby",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    (
        u16::try_from(row.get::<i32>("port").unwrap()).unwrap(),
        row.get("standby").unwrap(),
    )
}

#[tokio::test]
async fn target_session_attrs_pick_the_right_server_and_every_host_is_named_on_failure() {
    let primary = TempCluster::start().expect("primary");
    let replica = primary.start_replica().expect("replica");
    let (p, r) = (primary.port(), replica.port());

    for (attrs, order, expect) in [
        ("read-write", [r, p], p),
        ("primary", [r, p], p),
        ("read-only", [p, r], r),
        ("standby", [p, r], r),
        ("prefer-standby", [p, r], r),
        ("any", [r, p], r),
    ] {
        let db = AsyncDatabaseManager::new(config(hosts(&order, attrs))).unwrap();
        db.connect()
            .await
            .unwrap_or_else(|e| panic!("{attrs}: {e}"));
        assert_eq!(served_by(&db).await.0, expect, "{attrs}");
        db.disconnect().await.unwrap();
    }

    // prefer-standby without a standby falls back to the primary.
    let db =
        AsyncDatabaseManager::new(config(hosts(&[closed_port(), p], "prefer-standby"))).unwrap();
    db.connect().await.unwrap();
    assert_eq!(served_by(&db).await, (p, false));
    db.disconnect().await.unwrap();

    // Nothing fits: the error lists each host with its own reason.
    let dead = closed_port();
    let db = AsyncDatabaseManager::new(config(hosts(&[dead, r], "read-write"))).unwrap();
    let err = db.connect().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Connection { .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{dead}:")), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{r}: the server is a standby")),
        "{text}"
    );
    assert!(text.contains("target_session_attrs=read-write"), "{text}");
}

#[test]
fn an_unknown_target_session_attrs_value_is_a_configuration_error() {
    // Refused before any I/O: port 1 is never tried.
    let err = AsyncDatabaseManager::new(config(
        "postgresql://postgres:secret@127.0.0.1:1/db?target_session_attrs=leader".into(),
    ))
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Configuration { .. }), "{text}");
    assert!(text.contains("target_session_attrs"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

#[tokio::test]
async fn a_connection_answering_read_only_is_replaced_not_reused() {
    let primary = TempCluster::start().expect("primary");
    let replica = primary.start_replica().expect("replica");
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        min_connections: 1,
        max_connections: 1,
        ..replica.database_config("postgres")
    })
    .unwrap();
    db.connect().await.unwrap();
    let before: Option<i32> = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    let err = db
        .execute("CREATE TABLE t (id int)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("25006"), "{err}");
    let after: Option<i32> = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    assert_ne!(
        before, after,
        "the read-only connection went back to the pool"
    );
    db.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_on_the_promoted_replica() {
    let mut primary = TempCluster::start().expect("primary");
    let replica = primary.start_replica().expect("replica");
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        min_connections: 2,
        command_timeout: 5.0,
        ..config(hosts(&[primary.port(), replica.port()], "read-write"))
    })
    .unwrap();
    db.connect().await.unwrap();
    db.execute("CREATE TABLE t (id int)", &[]).await.unwrap();
    db.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    primary
        .wait_for_replica(&replica, Duration::from_secs(10))
        .await
        .unwrap();

    primary.stop_server().unwrap();
    replica.promote().unwrap();
    let promoted = Instant::now();
    let mut failures = 0;
    loop {
        match db.execute("INSERT INTO t VALUES (2)", &[]).await {
            Ok(_) => break,
            Err(e) => {
                failures += 1;
                assert!(
                    promoted.elapsed() < Duration::from_secs(10),
                    "no write within 10 s of the promotion ({failures} failures), last: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!(
        "first write {:?} after the promotion, {failures} failed attempt(s) before it",
        promoted.elapsed()
    );
    assert_eq!(served_by(&db).await, (replica.port(), false));
    let n: Option<i64> = db.fetch_value("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(n, Some(2));
    db.disconnect().await.unwrap();
}
