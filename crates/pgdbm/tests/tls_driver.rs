//! TLS proven at the driver level: tokio-postgres with pgdbm's connector against a throwaway
//! TLS-enabled PostgreSQL, for every `ssl_mode`, mutual TLS and every client key format.
#![cfg(feature = "testing")]

#[path = "support/certs.rs"]
mod certs;

use certs::{Ca, TempDir};
use pgdbm::testing::{driver, TempCluster};
use pgdbm::{DatabaseConfig, Error};

/// Every accepted TLS cluster only allows TLS connections, so a success cannot be plaintext.
const HBA_TLS_ONLY: &str = "hostssl all all 127.0.0.1/32 trust";
const HBA_CLIENT_CERT: &str = "hostssl all all 127.0.0.1/32 trust clientcert=verify-full";

#[derive(Debug)]
enum ConnectError {
    /// The connector could not be built (bad files, keys, passwords).
    Config(Error),
    /// The handshake or the server refused.
    Driver(tokio_postgres::Error),
}

impl ConnectError {
    /// The error with all its sources, for matching on the reason.
    fn chain(&self) -> String {
        let mut text = String::new();
        let mut next: Option<&dyn std::error::Error> = Some(match self {
            ConnectError::Config(e) => e,
            ConnectError::Driver(e) => e,
        });
        while let Some(e) = next {
            text.push_str(&e.to_string());
            text.push_str(" | ");
            next = e.source();
        }
        text
    }
}

/// A cluster with TLS on, serving `server`'s certificate, TLS-only.
fn tls_cluster(server: &certs::Issued) -> TempCluster {
    TempCluster::builder()
        .ssl(&server.cert_pem, &server.key_pem, None)
        .hba(vec![HBA_TLS_ONLY.to_owned()])
        .start()
        .expect("start TLS cluster")
}

/// A cluster that requires a client certificate signed by `ca` whose CN is the user name.
fn mtls_cluster(ca: &Ca, server: &certs::Issued) -> TempCluster {
    TempCluster::builder()
        .ssl(&server.cert_pem, &server.key_pem, Some(&ca.cert_pem))
        .hba(vec![HBA_CLIENT_CERT.to_owned()])
        .start()
        .expect("start mutual-TLS cluster")
}

/// A CA, a directory holding its certificate, a cluster requiring client certificates it
/// signed, and a verify-full config for that cluster without a client certificate yet.
fn mtls_setup() -> (Ca, TempDir, TempCluster, DatabaseConfig) {
    let ca = Ca::new("pgdbm test CA");
    let dir = TempDir::new();
    let ca_file = dir.write("ca.crt", &ca.cert_pem);
    let cluster = mtls_cluster(&ca, &ca.server(&["localhost", "127.0.0.1"]));
    let base = tls_config(&cluster, "127.0.0.1", "verify-full", Some(&ca_file));
    (ca, dir, cluster, base)
}

fn tls_config(
    cluster: &TempCluster,
    host: &str,
    mode: &str,
    ca_file: Option<&str>,
) -> DatabaseConfig {
    DatabaseConfig {
        host: host.to_owned(),
        ssl_enabled: true,
        ssl_mode: Some(mode.to_owned()),
        ssl_ca_file: ca_file.map(str::to_owned),
        ..cluster.database_config("postgres")
    }
}

async fn connect(config: &DatabaseConfig) -> Result<tokio_postgres::Client, ConnectError> {
    let connector = driver::tls_connector(config).map_err(ConnectError::Config)?;
    let pg = driver::pg_config(config).map_err(ConnectError::Config)?;
    let (client, connection) = pg.connect(connector).await.map_err(ConnectError::Driver)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects, asserting success, and checks that the server sees the session as TLS.
async fn connect_encrypted(config: &DatabaseConfig) -> tokio_postgres::Client {
    let client = match connect(config).await {
        Ok(c) => c,
        Err(e) => panic!(
            "{:?} to {}:{} failed: {}",
            config.ssl_mode,
            config.host,
            config.port,
            e.chain()
        ),
    };
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query pg_stat_ssl")
        .get(0);
    assert!(ssl, "pg_stat_ssl says the session is not encrypted");
    client
}

async fn connect_fails(config: &DatabaseConfig) -> ConnectError {
    match connect(config).await {
        Ok(_) => panic!(
            "{:?} to {}:{} unexpectedly succeeded",
            config.ssl_mode, config.host, config.port
        ),
        Err(e) => e,
    }
}

fn config_error(err: ConnectError) -> (&'static str, String) {
    match err {
        ConnectError::Config(Error::Configuration { field, message }) => (field, message),
        other => panic!("expected Error::Configuration, got {other:?}"),
    }
}

#[tokio::test]
async fn verify_full_accepts_matching_ip_and_dns_san() {
    let ca = Ca::new("pgdbm test CA");
    let dir = TempDir::new();
    let ca_file = dir.write("ca.crt", &ca.cert_pem);
    let cluster = tls_cluster(&ca.server(&["localhost", "127.0.0.1"]));

    // An IP host is checked against the IP SAN.
    connect_encrypted(&tls_config(
        &cluster,
        "127.0.0.1",
        "verify-full",
        Some(&ca_file),
    ))
    .await;
    // A host name against the DNS SAN.
    connect_encrypted(&tls_config(
        &cluster,
        "localhost",
        "verify-full",
        Some(&ca_file),
    ))
    .await;
    // verify-full is the default mode once TLS is enabled.
    let default_mode = DatabaseConfig {
        ssl_mode: None,
        ..tls_config(&cluster, "127.0.0.1", "", Some(&ca_file))
    };
    connect_encrypted(&default_mode).await;
}

#[tokio::test]
async fn verify_full_rejects_wrong_host_name_that_verify_ca_and_require_accept() {
    let ca = Ca::new("pgdbm test CA");
    let dir = TempDir::new();
    let ca_file = dir.write("ca.crt", &ca.cert_pem);
    let cluster = tls_cluster(&ca.server(&["db.example.com"]));

    let err = connect_fails(&tls_config(
        &cluster,
        "127.0.0.1",
        "verify-full",
        Some(&ca_file),
    ))
    .await;
    let chain = err.chain().to_lowercase();
    assert!(matches!(err, ConnectError::Driver(_)), "{chain}");
    assert!(
        chain.contains("certificate") && chain.contains("name"),
        "{chain}"
    );
    assert!(
        chain.contains("db.example.com") || chain.contains("notvalidforname"),
        "{chain}"
    );

    connect_encrypted(&tls_config(
        &cluster,
        "127.0.0.1",
        "verify-ca",
        Some(&ca_file),
    ))
    .await;
    connect_encrypted(&tls_config(
        &cluster,
        "127.0.0.1",
        "require",
        Some(&ca_file),
    ))
    .await;
}

#[tokio::test]
async fn require_accepts_unknown_ca_that_verify_ca_rejects() {
    let trusted = Ca::new("pgdbm trusted CA");
    let unknown = Ca::new("pgdbm unknown CA");
    let dir = TempDir::new();
    let ca_file = dir.write("ca.crt", &trusted.cert_pem);
    let cluster = tls_cluster(&unknown.server(&["localhost", "127.0.0.1"]));

    connect_encrypted(&tls_config(
        &cluster,
        "127.0.0.1",
        "require",
        Some(&ca_file),
    ))
    .await;
    connect_encrypted(&tls_config(&cluster, "127.0.0.1", "require", None)).await;

    for mode in ["verify-ca", "verify-full"] {
        let err = connect_fails(&tls_config(&cluster, "127.0.0.1", mode, Some(&ca_file))).await;
        let chain = err.chain().to_lowercase();
        assert!(matches!(err, ConnectError::Driver(_)), "{mode}: {chain}");
        assert!(
            chain.contains("certificate") && chain.contains("issuer"),
            "{mode}: {chain}"
        );
    }
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let (ca, dir, _cluster, base) = mtls_setup();

    let client = ca.client("postgres");
    let with_cert = DatabaseConfig {
        ssl_cert_file: Some(dir.write("client.crt", &client.cert_pem)),
        ssl_key_file: Some(dir.write("client.key", &client.key_pem)),
        ..base.clone()
    };
    let db = connect_encrypted(&with_cert).await;
    let dn: String = db
        .query_one(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(dn.contains("CN=postgres"), "{dn}");

    // Without a certificate the server refuses.
    let err = connect_fails(&base).await;
    assert!(matches!(err, ConnectError::Driver(_)), "{}", err.chain());

    // With a certificate for another user, too (clientcert=verify-full compares the CN).
    let alice = ca.client("alice");
    let wrong_user = DatabaseConfig {
        ssl_cert_file: Some(dir.write("alice.crt", &alice.cert_pem)),
        ssl_key_file: Some(dir.write("alice.key", &alice.key_pem)),
        ..base.clone()
    };
    let err = connect_fails(&wrong_user).await;
    assert!(
        err.chain().contains("authentication failed"),
        "{}",
        err.chain()
    );
}

#[tokio::test]
async fn mutual_tls_reads_pkcs1_and_sec1_keys() {
    let (ca, dir, _cluster, base) = mtls_setup();

    let ec = ca.client("postgres");
    let sec1 = DatabaseConfig {
        ssl_cert_file: Some(dir.write("ec.crt", &ec.cert_pem)),
        ssl_key_file: Some(dir.write("ec.key", &certs::to_sec1(&ec.key_pem))),
        ..base.clone()
    };
    connect_encrypted(&sec1).await;

    let rsa = ca.client_with_key("postgres", certs::rsa_key());
    let pkcs1 = DatabaseConfig {
        ssl_cert_file: Some(dir.write("rsa.crt", &rsa.cert_pem)),
        ssl_key_file: Some(dir.write("rsa.key", &certs::to_pkcs1(&rsa.key_pem))),
        ..base.clone()
    };
    connect_encrypted(&pkcs1).await;

    let rsa_pkcs8 = DatabaseConfig {
        ssl_key_file: Some(dir.write("rsa8.key", &rsa.key_pem)),
        ..pkcs1
    };
    connect_encrypted(&rsa_pkcs8).await;
}

#[tokio::test]
async fn mutual_tls_with_encrypted_key() {
    const PASSWORD: &str = "s3cret-Pa55word";
    let (ca, dir, _cluster, base) = mtls_setup();

    let client = ca.client("postgres");
    let encrypted = DatabaseConfig {
        ssl_cert_file: Some(dir.write("client.crt", &client.cert_pem)),
        ssl_key_file: Some(dir.write(
            "client.key",
            &certs::encrypt_pkcs8(&client.key_pem, PASSWORD),
        )),
        ssl_key_password: Some(PASSWORD.to_owned()),
        ..base
    };
    connect_encrypted(&encrypted).await;

    let wrong = DatabaseConfig {
        ssl_key_password: Some("not-the-password".to_owned()),
        ..encrypted.clone()
    };
    let (field, message) = config_error(connect_fails(&wrong).await);
    assert_eq!(field, "ssl_key_password", "{message}");
    assert!(message.contains("wrong"), "{message}");
    assert!(
        !message.contains("not-the-password") && !message.contains(PASSWORD),
        "{message}"
    );

    let missing = DatabaseConfig {
        ssl_key_password: None,
        ..encrypted.clone()
    };
    let (field, message) = config_error(connect_fails(&missing).await);
    assert_eq!(field, "ssl_key_password", "{message}");
    assert!(message.contains("encrypted"), "{message}");
}

/// Bad TLS files fail before any connection attempt, naming the field to fix.
#[tokio::test]
async fn bad_tls_files_are_configuration_errors() {
    const PASSWORD: &str = "legacy-Pa55word";
    let ca = Ca::new("pgdbm test CA");
    let dir = TempDir::new();
    let client = ca.client("postgres");
    let other = ca.client("postgres");
    let ca_file = dir.write("ca.crt", &ca.cert_pem);
    let cert = dir.write("client.crt", &client.cert_pem);
    let key = dir.write("client.key", &client.key_pem);
    let missing = dir.path().join("missing.pem").to_str().unwrap().to_owned();
    let not_pem = dir.write("empty.pem", "not a certificate\n");
    // Nothing listens here: every case must fail before connecting.
    let base = DatabaseConfig {
        host: "127.0.0.1".into(),
        port: 1,
        ssl_enabled: true,
        ssl_mode: Some("verify-full".into()),
        ssl_ca_file: Some(ca_file.clone()),
        ..Default::default()
    };
    let with = |cert: Option<&str>, key: Option<&str>, password: Option<&str>| DatabaseConfig {
        ssl_cert_file: cert.map(str::to_owned),
        ssl_key_file: key.map(str::to_owned),
        ssl_key_password: password.map(str::to_owned),
        ..base.clone()
    };
    let legacy = dir.write(
        "legacy.key",
        &certs::legacy_encrypted_sec1(&client.key_pem, PASSWORD),
    );

    let cases: Vec<(&str, DatabaseConfig, &str, &str)> = vec![
        (
            "missing CA file",
            DatabaseConfig {
                ssl_ca_file: Some(missing.clone()),
                ..base.clone()
            },
            "ssl_ca_file",
            "missing.pem",
        ),
        (
            "CA file without certificates",
            DatabaseConfig {
                ssl_ca_file: Some(not_pem.clone()),
                ..base.clone()
            },
            "ssl_ca_file",
            "no PEM certificate",
        ),
        (
            "missing cert file",
            with(Some(&missing), Some(&key), None),
            "ssl_cert_file",
            "missing.pem",
        ),
        (
            "missing key file",
            with(Some(&cert), Some(&missing), None),
            "ssl_key_file",
            "missing.pem",
        ),
        (
            "cert without key",
            with(Some(&cert), None, None),
            "ssl_key_file",
            "both",
        ),
        (
            "key without cert",
            with(None, Some(&key), None),
            "ssl_cert_file",
            "both",
        ),
        (
            "key file without a key",
            with(Some(&cert), Some(&not_pem), None),
            "ssl_key_file",
            "no private key",
        ),
        (
            "legacy encrypted key",
            with(Some(&cert), Some(&legacy), Some(PASSWORD)),
            "ssl_key_file",
            "Proc-Type",
        ),
        (
            "key of another certificate",
            with(
                Some(&cert),
                Some(&dir.write("other.key", &other.key_pem)),
                None,
            ),
            "ssl_key_file",
            "does not belong",
        ),
    ];
    for (case, config, want_field, want_text) in cases {
        let (field, message) = config_error(connect_fails(&config).await);
        assert_eq!(field, want_field, "{case}: {message}");
        assert!(message.contains(want_text), "{case}: {message}");
        assert!(!message.contains(PASSWORD), "{case}: {message}");
    }
}
