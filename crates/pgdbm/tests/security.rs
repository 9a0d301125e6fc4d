//! Bad input: injection attempts, tricky passwords against a real password-checking server,
//! and masking in logs and errors.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use pgdbm::testing::TempCluster;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error};

const BAD_SCHEMAS: &[&str] = &[
    "public\"; DROP TABLE users; --",
    "public' OR '1'='1",
    "public; DELETE FROM users WHERE 1=1; --",
    "public/*comment*/",
    "public-- comment",
    "123_invalid_start",
    "contains-hyphen",
    "contains space",
];

#[tokio::test]
async fn injection_in_schema_names_is_refused_before_any_io() {
    let long = "a".repeat(64);
    let pool = AsyncDatabaseManager::create_shared_pool(&config())
        .await
        .unwrap();
    for bad in BAD_SCHEMAS.iter().copied().chain([long.as_str()]) {
        let cfg = DatabaseConfig {
            schema: Some(bad.into()),
            ..config()
        };
        assert!(
            matches!(AsyncDatabaseManager::new(cfg), Err(Error::Schema(_))),
            "new accepted {bad:?}"
        );
        assert!(
            matches!(
                AsyncDatabaseManager::from_pool(pool.clone(), Some(bad)),
                Err(Error::Schema(_))
            ),
            "from_pool accepted {bad:?}"
        );
    }
    for good in [
        "public",
        "my_schema",
        "schema123",
        "_private_schema",
        "CamelCaseSchema",
        &"b".repeat(63),
    ] {
        let db = AsyncDatabaseManager::from_pool(pool.clone(), Some(good)).unwrap();
        let q = db.prepare_query("SELECT * FROM {{tables.t}}").unwrap();
        assert_eq!(q, format!("SELECT * FROM \"{good}\".t"));
        AsyncDatabaseManager::new(DatabaseConfig {
            schema: Some(good.into()),
            ..config()
        })
        .unwrap();
    }
    // Invalid names inside templates, and an explicit schema in a template.
    let db = AsyncDatabaseManager::from_pool(pool.clone(), Some("app")).unwrap();
    for bad in BAD_SCHEMAS {
        let q = format!("SELECT * FROM {{{{tables.{bad}.users}}}}");
        assert!(
            matches!(db.execute(&q, &[]).await, Err(Error::Schema(_))),
            "{q}"
        );
        let q = format!("SELECT * FROM {{{{tables.{bad}}}}}");
        assert!(
            matches!(db.execute(&q, &[]).await, Err(Error::Schema(_))),
            "{q}"
        );
        assert!(
            matches!(db.table_exists(bad).await, Err(Error::Schema(_))),
            "{bad}"
        );
    }
    pool.close();
}

const TRICKY: &str = "p@ss:w/rd %41 sp ace";

/// A server that checks passwords (scram), with a role whose password has `@ : / % space`.
async fn scram_cluster() -> TempCluster {
    let cluster = TempCluster::builder()
        .hba([
            "local all all trust",
            "host all postgres 127.0.0.1/32 trust",
            "host all all 127.0.0.1/32 scram-sha-256",
        ])
        .start()
        .expect("start a throwaway cluster");
    let (client, conn) = tokio_postgres::connect(
        &cluster.connection_string("postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE ROLE tricky LOGIN PASSWORD '{}'",
            TRICKY.replace('\'', "''")
        ))
        .await
        .unwrap();
    cluster
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tricky_passwords_connect_and_never_show() {
    let cluster = scram_cluster().await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let by_fields = DatabaseConfig {
        host: "127.0.0.1".into(),
        port: cluster.port(),
        user: "tricky".into(),
        password: Some(TRICKY.into()),
        database: "postgres".into(),
        min_connections: 1,
        max_connections: 2,
        ..Default::default()
    };
    // The DSN built from the fields percent-encodes the password (a space is %20, not '+').
    let dsn = by_fields.get_dsn();
    assert!(dsn.contains("%20"), "{dsn}");
    assert!(!dsn.contains('+'), "{dsn}");
    let by_url = DatabaseConfig {
        connection_string: Some(dsn),
        min_connections: 1,
        max_connections: 2,
        ..Default::default()
    };
    for cfg in [by_fields.clone(), by_url.clone()] {
        let db = AsyncDatabaseManager::new(cfg.clone()).unwrap();
        db.connect().await.unwrap();
        let who: Option<String> = db
            .fetch_value("SELECT current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(who.as_deref(), Some("tricky"));
        db.disconnect().await.unwrap();
        for shown in [format!("{cfg:?}"), cfg.get_dsn_masked(), format!("{db:?}")] {
            assert!(
                !shown.contains(TRICKY) && !shown.contains("p@ss") && !shown.contains("sp ace"),
                "{shown}"
            );
        }
    }
    // A wrong password fails at once (no retry) and the error shows neither password.
    let wrong = DatabaseConfig {
        password: Some("wr@ng:pass word".into()),
        retry_attempts: 3,
        retry_delay: 1.0,
        ..by_fields
    };
    let started = std::time::Instant::now();
    let err = AsyncDatabaseManager::new(wrong.clone())
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(900),
        "authentication failure was retried"
    );
    match &err {
        Error::Connection { attempts, .. } => assert_eq!(*attempts, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), Some("28P01"));
    let text = format!("{err} {err:?} {wrong:?}");
    assert!(!text.contains("wr@ng") && !text.contains(TRICKY), "{text}");

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        !logs.contains("p@ss") && !logs.contains("wr@ng"),
        "password in logs: {logs}"
    );
}

#[tokio::test]
async fn query_logs_show_parameter_kinds_not_values() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (db, _g) = schema_db().await;
    let long = "this-is-a-very-long-parameter-value-0123456789";
    let v: Option<String> = db
        .fetch_value("SELECT $1::text || $2::text", &[&long, &"short"])
        .await
        .unwrap();
    assert_eq!(v.unwrap(), format!("{long}short"));
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("SELECT $1::text || $2::text"), "{logs}");
    assert!(
        logs.contains(&format!(
            "$1: text({} chars), $2: text(5 chars)",
            long.len()
        )),
        "{logs}"
    );
    assert!(
        !logs.contains(long) && !logs.contains("\"short\""),
        "{logs}"
    );
}
