//! TLS through the manager: pools over TLS, mutual TLS with an encrypted key, failures that are
//! not retried, and server-side cancellation over a TLS connection.

#[path = "support/certs.rs"]
mod certs;

use std::time::{Duration, Instant};

use certs::{Ca, TempDir};
use pgdbm::testing::TempCluster;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error};

#[tokio::test]
async fn manager_over_mutual_tls_with_an_encrypted_key() {
    let dir = TempDir::new();
    let ca = Ca::new("pgdbm test CA");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let cluster = TempCluster::builder()
        .ssl(&server.cert_pem, &server.key_pem, Some(&ca.cert_pem))
        .hba(vec![
            "hostssl all all 127.0.0.1/32 trust clientcert=verify-full".to_owned(),
        ])
        .start()
        .expect("start mutual-TLS cluster");
    let client = ca.client("postgres");
    let password = "k3y p@ss:word";
    let config = DatabaseConfig {
        host: "127.0.0.1".into(),
        ssl_enabled: true,
        ssl_mode: Some("verify-full".into()),
        ssl_ca_file: Some(dir.write("ca.crt", &ca.cert_pem)),
        ssl_cert_file: Some(dir.write("client.crt", &client.cert_pem)),
        ssl_key_file: Some(dir.write(
            "client.key",
            &certs::encrypt_pkcs8(&client.key_pem, password),
        )),
        ssl_key_password: Some(password.into()),
        min_connections: 2,
        max_connections: 2,
        schema: Some("tls_app".into()),
        ..cluster.database_config("postgres")
    };
    assert!(!format!("{config:?}").contains(password));
    let db = AsyncDatabaseManager::new(config.clone()).unwrap();
    db.connect().await.unwrap();
    db.execute("CREATE TABLE {{tables.t}} (v int)", &[])
        .await
        .unwrap();
    db.executemany("INSERT INTO {{tables.t}} VALUES ($1)", vec![(1,), (2,)])
        .await
        .unwrap();
    db.copy_records_to_table("t", vec![(3,)], None)
        .await
        .unwrap();
    let ssl: Vec<bool> = db
        .fetch_all("SELECT ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'postgres' AND a.backend_type = 'client backend'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("ssl").unwrap())
        .collect();
    assert!(ssl.len() >= 2 && ssl.iter().all(|s| *s), "{ssl:?}");

    // A timeout is cancelled on the server over TLS too: the cancel request uses the connector.
    let pid: i32 = db
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .unwrap();
    let _ = pid;
    let started = Instant::now();
    let r = db
        .with_timeout(Duration::from_millis(200))
        .execute("SELECT pg_sleep(10)", &[])
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The cancel is sent in the background after the call returns: give it a moment
    // (bounded, far below the 10 s sleep) to land.
    let limit = Instant::now() + Duration::from_secs(3);
    let sleeping = loop {
        let n: Option<i64> = db
            .fetch_value("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'", &[])
            .await
            .unwrap();
        if n == Some(0) || Instant::now() > limit {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        sleeping,
        Some(0),
        "the timed-out query still runs on the server"
    );
    db.disconnect().await.unwrap();

    // Without the client certificate the server refuses, and that is not retried.
    let no_cert = DatabaseConfig {
        ssl_cert_file: None,
        ssl_key_file: None,
        ssl_key_password: None,
        retry_attempts: 3,
        retry_delay: 1.0,
        ..config
    };
    let started = Instant::now();
    let err = AsyncDatabaseManager::new(no_cert)
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Connection { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(900));
}

#[tokio::test]
async fn verify_full_host_mismatch_fails_at_once_through_the_manager() {
    let dir = TempDir::new();
    let ca = Ca::new("pgdbm test CA");
    let server = ca.server(&["db.example.com"]);
    let cluster = TempCluster::builder()
        .ssl(&server.cert_pem, &server.key_pem, None)
        .hba(vec!["hostssl all all 127.0.0.1/32 trust".to_owned()])
        .start()
        .expect("start TLS cluster");
    let base = DatabaseConfig {
        host: "127.0.0.1".into(),
        ssl_enabled: true,
        ssl_ca_file: Some(dir.write("ca.crt", &ca.cert_pem)),
        min_connections: 1,
        retry_attempts: 3,
        retry_delay: 1.0,
        ..cluster.database_config("postgres")
    };
    // ssl_mode unset with ssl_enabled means verify-full.
    let started = Instant::now();
    let err = AsyncDatabaseManager::create_shared_pool(&base)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "a TLS failure was retried"
    );
    match &err {
        Error::Connection {
            attempts, message, ..
        } => {
            assert_eq!(*attempts, 1);
            assert!(
                message.contains("not valid for name") || message.contains("certificate"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let ca_only = DatabaseConfig {
        ssl_mode: Some("verify-ca".into()),
        ..base.clone()
    };
    let pool = AsyncDatabaseManager::create_shared_pool(&ca_only)
        .await
        .unwrap();
    let db = AsyncDatabaseManager::from_pool(pool.clone(), None).unwrap();
    assert_eq!(
        db.fetch_value::<bool>(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[]
        )
        .await
        .unwrap(),
        Some(true)
    );
    pool.close();
}
