//! Replica config and stats: per-host stats, credentials from the primary, JSON and TOML, TLS.

use std::time::Duration;

use pgdbm::testing::TempCluster;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, HostRole, ReplicaFallback};

use crate::replica_pair::{config, connect, pair};

use super::{on_replica, wait_until};

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
