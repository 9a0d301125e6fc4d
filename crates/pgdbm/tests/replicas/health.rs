//! Health checks, lag and fallback: stopped, lagging, busy and cut-off replicas.

use std::time::{Duration, Instant};

use pgdbm::{DatabaseConfig, ErrorKind, ReplicaFallback};

use crate::replica_pair::{config, connect, pair};

use super::{on_replica, replica_healthy, wait_until};

#[tokio::test]
async fn a_stopped_replica_is_skipped_within_5_s_and_used_again_when_back() {
    let (primary, mut replica) = pair();
    let db = connect(config(&primary, &replica)).await;
    let ro = db.replica();
    assert!(on_replica(&ro).await);
    assert!(replica_healthy(&db).await);

    replica.stop_server().unwrap();
    // The health checks alone (no read in between) mark it down.
    let took = wait_until("replica marked down", Duration::from_secs(5), || async {
        !replica_healthy(&db).await
    })
    .await;
    eprintln!("a stopped replica was skipped after {took:?}");
    let stats = db.get_pool_stats().await.unwrap();
    assert!(stats.hosts[1].last_error.is_some(), "{:?}", stats.hosts[1]);
    // Reads fall back to the primary (the default).
    assert!(!on_replica(&ro).await);

    replica.start_server().unwrap();
    let took = wait_until("replica back in use", Duration::from_secs(10), || async {
        replica_healthy(&db).await
    })
    .await;
    eprintln!("a restarted replica was used again after {took:?}");
    assert!(on_replica(&ro).await);
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_read_on_a_replica_that_just_went_away_is_retried_on_the_primary() {
    let (primary, mut replica) = pair();
    let db = connect(config(&primary, &replica)).await;
    let ro = db.replica();
    // Its pooled connection is open; the server goes away before the next health check.
    assert!(on_replica(&ro).await);
    replica.stop_server().unwrap();
    let started = Instant::now();
    assert!(
        !on_replica(&ro).await,
        "the read is retried on the primary, not failed"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        !replica_healthy(&db).await,
        "the failure marked it down at once"
    );
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn replica_fallback_error_refuses_reads_without_a_healthy_replica() {
    let (primary, mut replica) = pair();
    // Down before the pool connects: connect() still succeeds.
    replica.stop_server().unwrap();
    let db = connect(DatabaseConfig {
        replica_fallback: ReplicaFallback::Error,
        ..config(&primary, &replica)
    })
    .await;
    assert!(!replica_healthy(&db).await);
    let err = db
        .replica()
        .fetch_value::<bool>("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoReplica, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{}", replica.port())),
        "the error names the replica: {err}"
    );
    // Streams too; the primary still takes everything else.
    assert!(db
        .replica()
        .fetch_stream("SELECT 1", &[])
        .await
        .is_err_and(|e| e.kind() == ErrorKind::NoReplica));
    assert!(!on_replica(&db).await);
    db.execute("CREATE TABLE t (id int)", &[]).await.unwrap();

    replica.start_server().unwrap();
    wait_until("replica up", Duration::from_secs(10), || async {
        replica_healthy(&db).await
    })
    .await;
    assert!(on_replica(&db.replica()).await);
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_replica_lagging_past_max_replica_lag_is_skipped_until_it_catches_up() {
    let (primary, replica) = pair();
    let db = connect(DatabaseConfig {
        max_replica_lag: 1.0,
        ..config(&primary, &replica)
    })
    .await;
    // Writes from another manager: read-your-writes must not be what sends reads away.
    let writer = connect(DatabaseConfig {
        read_replicas: Vec::new(),
        ..config(&primary, &replica)
    })
    .await;
    let on_standby = connect(replica.database_config("postgres")).await;
    writer
        .execute("CREATE TABLE t (id int)", &[])
        .await
        .unwrap();
    assert!(on_replica(&db.replica()).await);

    on_standby
        .execute("SELECT pg_wal_replay_pause()", &[])
        .await
        .unwrap();
    let mut i = 0;
    let took = wait_until("lagging replica skipped", Duration::from_secs(10), || {
        i += 1;
        let (writer, db) = (writer.clone(), db.clone());
        async move {
            writer
                .execute("INSERT INTO t VALUES ($1)", &[&i])
                .await
                .unwrap();
            !replica_healthy(&db).await
        }
    })
    .await;
    eprintln!("a paused replica was skipped after {took:?}");
    let stats = db.get_pool_stats().await.unwrap();
    let host = &stats.hosts[1];
    assert!(
        host.last_error
            .as_deref()
            .unwrap_or("")
            .contains("max_replica_lag"),
        "{host:?}"
    );
    assert!(host.lag.unwrap() > Duration::from_secs(1), "{host:?}");
    assert!(!on_replica(&db.replica()).await, "reads go to the primary");

    on_standby
        .execute("SELECT pg_wal_replay_resume()", &[])
        .await
        .unwrap();
    wait_until(
        "caught-up replica used again",
        Duration::from_secs(10),
        || async { replica_healthy(&db).await },
    )
    .await;
    assert!(on_replica(&db.replica()).await);
    for m in [db, writer, on_standby] {
        m.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_busy_with_long_reads_stays_healthy() {
    let (primary, replica) = pair();
    let db = connect(DatabaseConfig {
        min_connections: 1,
        max_connections: 1,
        ..config(&primary, &replica)
    })
    .await;
    assert!(replica_healthy(&db).await);
    // Every read connection of the replica is taken for longer than a health check waits.
    let view = db.replica();
    let long = tokio::spawn(async move {
        view.fetch_value::<String>("SELECT pg_sleep(4)::text", &[])
            .await
    });
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            replica_healthy(&db).await,
            "a replica whose connections are busy was marked down"
        );
    }
    long.await.unwrap().expect("the long read");
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_replica_cut_off_from_its_primary_is_skipped_once_past_max_replica_lag() {
    let (mut primary, replica) = pair();
    let db = connect(DatabaseConfig {
        max_replica_lag: 2.0,
        ..config(&primary, &replica)
    })
    .await;
    assert!(replica_healthy(&db).await);
    // Nothing streams in any more: everything it received is replayed, yet it falls behind.
    primary.stop_server().expect("stop the primary");
    let started = Instant::now();
    loop {
        if !replica_healthy(&db).await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a replica cut off from its primary still counts as healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = db.get_pool_stats().await.unwrap();
    let why = stats.hosts[1].last_error.clone().unwrap_or_default();
    assert!(why.contains("max_replica_lag"), "{why}");
}
