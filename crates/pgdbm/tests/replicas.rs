//! Read replicas against a real primary and streaming replica (each test has its own pair):
//! routing of the replica view and of automatic mode, fallback, health checks, lag, stats,
//! and config. Read-your-writes is in `replicas_ryw.rs`.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use pgdbm::testing::TempCluster;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, ErrorKind, HostRole, ReplicaFallback};

#[path = "support/replica_pair.rs"]
mod replica_pair;

use replica_pair::{config, connect, pair};

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

#[tokio::test]
async fn pool_stats_report_each_host() {
    let (primary, replica) = pair();
    let db = connect(config(&primary, &replica)).await;
    assert!(on_replica(&db.replica()).await);
    let stats = db.get_pool_stats().await.unwrap();
    assert_eq!(stats.hosts.len(), 2);
    let (p, r) = (&stats.hosts[0], &stats.hosts[1]);
    assert_eq!(p.role, HostRole::Primary);
    assert_eq!(p.label, format!("127.0.0.1:{}", primary.port()));
    assert!(p.healthy && p.size >= 1);
    assert_eq!(r.role, HostRole::Replica);
    assert_eq!(r.label, format!("127.0.0.1:{}", replica.port()));
    assert!(r.healthy && r.size >= 1 && r.lag.is_some(), "{r:?}");
    assert_eq!(r.free_size + r.used_size, r.size);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["hosts"][1]["role"], "replica");
    assert_eq!(json["hosts"][0]["role"], "primary");
    assert!(json["hosts"][1]["lag_ms"].is_number(), "{json}");

    // Closing the pool closes the replica's connections too.
    let probe = connect(DatabaseConfig {
        server_settings: Some([("application_name".into(), "probe".into())].into()),
        ..replica.database_config("postgres")
    })
    .await;
    let sessions = || async {
        probe
            .fetch_value::<i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'app_pool'",
                &[],
            )
            .await
            .unwrap()
            .unwrap()
    };
    assert!(sessions().await >= 1);
    db.disconnect().await.unwrap();
    let stats = db.get_pool_stats().await.unwrap();
    assert!(stats.hosts.is_empty() && !stats.is_connected());
    wait_until(
        "replica sessions closed",
        Duration::from_secs(5),
        || async { sessions().await == 0 },
    )
    .await;
    probe.disconnect().await.unwrap();
}

#[tokio::test]
async fn replicas_take_user_and_password_from_the_primary_config() {
    const PASSWORD: &str = "s3cr@t: pw/x";
    let primary = TempCluster::builder()
        .hba([
            "local all all trust",
            "host all postgres 127.0.0.1/32 trust",
            "host replication postgres 127.0.0.1/32 trust",
            "host all all 127.0.0.1/32 scram-sha-256",
        ])
        .start()
        .unwrap();
    let admin = connect(primary.database_config("postgres")).await;
    admin
        .execute(
            &format!(
                "CREATE ROLE app LOGIN PASSWORD '{}'",
                PASSWORD.replace('\'', "''")
            ),
            &[],
        )
        .await
        .unwrap();
    let replica = primary.start_replica().unwrap();
    primary
        .wait_for_replica(&replica, Duration::from_secs(10))
        .await
        .unwrap();

    let encoded = PASSWORD
        .replace('%', "%25")
        .replace('@', "%40")
        .replace(':', "%3A")
        .replace(' ', "%20")
        .replace('/', "%2F");
    let base = DatabaseConfig {
        connection_string: Some(format!(
            "postgresql://app:{encoded}@127.0.0.1:{}/postgres",
            primary.port()
        )),
        min_connections: 1,
        max_connections: 2,
        retry_attempts: 0,
        ..DatabaseConfig::default()
    };
    // Neither user, password nor database in the replica's string.
    let db = connect(DatabaseConfig {
        read_replicas: vec![format!("host=127.0.0.1 port={}", replica.port())],
        ..base.clone()
    })
    .await;
    let who: Option<String> = db
        .replica()
        .fetch_value(
            "SELECT current_user || ' ' || current_database() || ' ' || pg_is_in_recovery()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(who.as_deref(), Some("app postgres true"));
    db.disconnect().await.unwrap();

    // A wrong password in the replica's string wins, fails, and is never shown.
    let db = connect(DatabaseConfig {
        read_replicas: vec![format!(
            "postgresql://app:wrong-secret@127.0.0.1:{}/postgres",
            replica.port()
        )],
        ..base
    })
    .await;
    let stats = db.get_pool_stats().await.unwrap();
    let host = &stats.hosts[1];
    assert!(!host.healthy);
    let why = host.last_error.clone().unwrap_or_default();
    assert!(why.contains("28P01") || why.contains("password"), "{why}");
    let shown = format!("{stats:?} {:?}", db);
    assert!(
        !shown.contains("wrong-secret") && !shown.contains(PASSWORD),
        "{shown}"
    );
    assert!(!on_replica(&db.replica()).await);
    db.disconnect().await.unwrap();
    admin.disconnect().await.unwrap();
}

#[test]
fn replica_settings_parse_from_json_and_toml() {
    let json: DatabaseConfig = serde_json::from_str(
        r#"{
            "connection_string": "postgresql://app:pw@primary/shop",
            "read_replicas": ["postgresql://replica1:5432", "host=replica2 port=5433"],
            "replica_fallback": "error",
            "replica_auto_routing": true,
            "max_replica_lag": 5.5,
            "read_your_writes_timeout": 0.25
        }"#,
    )
    .unwrap();
    let toml: DatabaseConfig = toml::from_str(
        r#"
        connection_string = "postgresql://app:pw@primary/shop"
        read_replicas = ["postgresql://replica1:5432", "host=replica2 port=5433"]
        replica_fallback = "error"
        replica_auto_routing = true
        max_replica_lag = 5.5
        read_your_writes_timeout = 0.25
        "#,
    )
    .unwrap();
    assert_eq!(json, toml);
    assert_eq!(json.read_replicas.len(), 2);
    assert_eq!(json.replica_fallback, ReplicaFallback::Error);
    assert!(json.replica_auto_routing);
    assert_eq!(json.max_replica_lag, 5.5);
    assert_eq!(json.read_your_writes_timeout, 0.25);
    AsyncDatabaseManager::new(json).expect("valid");

    let defaults: DatabaseConfig = serde_json::from_str("{}").unwrap();
    assert!(defaults.read_replicas.is_empty());
    assert_eq!(defaults.replica_fallback, ReplicaFallback::Primary);
    assert!(!defaults.replica_auto_routing);
    assert_eq!(defaults.max_replica_lag, 30.0);
    assert_eq!(defaults.read_your_writes_timeout, 2.0);

    let bad = serde_json::from_str::<DatabaseConfig>(r#"{"replica_fallback": "secondary"}"#);
    assert!(bad.unwrap_err().to_string().contains("unknown variant"));
    let bad = toml::from_str::<DatabaseConfig>("read_replica = []");
    assert!(bad.is_err(), "a misspelt field is refused");
    let err = AsyncDatabaseManager::new(DatabaseConfig {
        read_replicas: vec!["postgresql://u:hunter2secret@h:99999/db".into()],
        ..DatabaseConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            pgdbm::Error::Configuration {
                field: "read_replicas",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2secret"), "{err}");
    let err = AsyncDatabaseManager::new(DatabaseConfig {
        max_replica_lag: -1.0,
        ..DatabaseConfig::default()
    })
    .unwrap_err();
    assert!(matches!(
        err,
        pgdbm::Error::Configuration {
            field: "max_replica_lag",
            ..
        }
    ));
    let shown = format!(
        "{:?}",
        DatabaseConfig {
            read_replicas: vec!["postgresql://u:hunter2secret@h/db".into()],
            ..DatabaseConfig::default()
        }
    );
    assert!(
        !shown.contains("hunter2secret") && shown.contains("read_replicas"),
        "{shown}"
    );
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

#[test]
fn a_replica_string_asking_for_other_tls_settings_is_refused() {
    let config = DatabaseConfig {
        connection_string: Some("postgresql://app:pw@primary/db".into()),
        read_replicas: vec!["host=r1 sslmode=require".into()],
        ..Default::default()
    };
    let err = AsyncDatabaseManager::new(config).unwrap_err();
    assert!(matches!(err, pgdbm::Error::Configuration { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("read_replicas") && text.contains("sslmode"),
        "{text}"
    );
    assert!(!text.contains("pw"), "{text}");
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
