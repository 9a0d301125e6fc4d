//! Connecting: retry with backoff, failures that do not retry, settings, application names.

use std::time::{Duration, Instant};

use crate::common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error};

#[tokio::test]
async fn connect_retries_with_backoff_then_reports_where_it_tried() {
    // Nothing listens on port 1.
    let cfg = DatabaseConfig {
        host: "127.0.0.1".into(),
        port: 1,
        password: Some("hunter2-secret".into()),
        retry_attempts: 2,
        retry_delay: 0.1,
        retry_backoff: 2.0,
        retry_max_delay: 0.15,
        min_connections: 1,
        ..Default::default()
    };
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    let started = Instant::now();
    let err = db.connect().await.unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        Error::Connection {
            host,
            port,
            database,
            attempts,
            ..
        } => {
            assert_eq!(
                (host.as_str(), *port, database.as_str(), *attempts),
                ("127.0.0.1", 1, "postgres", 3)
            );
        }
        other => panic!("{other:?}"),
    }
    // Delays were 0.1 and then min(0.2, 0.15): at least 0.25 s in all.
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("Troubleshooting"), "{text}");
}

#[tokio::test]
async fn non_retryable_failures_fail_at_once() {
    let cfg = DatabaseConfig {
        connection_string: Some(format!("{}_does_not_exist", database_url())),
        retry_attempts: 5,
        retry_delay: 1.0,
        ..config()
    };
    let started = Instant::now();
    let err = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "retried a missing database"
    );
    match &err {
        Error::Connection { attempts, .. } => assert_eq!(*attempts, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), Some("3D000"));
}

#[tokio::test]
async fn settings_timeouts_and_init_commands_apply_to_every_connection() {
    let (db, _g) = schema_db_with(|c| {
        c.min_connections = 2;
        c.statement_timeout_ms = Some(12_345);
        c.lock_timeout_ms = None;
        c.idle_in_transaction_session_timeout_ms = Some(30_000);
        c.server_settings = Some([("work_mem".to_string(), "5MB".to_string())].into());
        c.init_commands = Some(vec![
            "SET timezone TO 'Asia/Tokyo'".into(),
            "CREATE TEMP TABLE init_ran (x int)".into(),
        ]);
    })
    .await;
    let server_lock_timeout = admin_value("SHOW lock_timeout").await.unwrap();
    // Hold one connection so the next calls use the other.
    for _ in 0..2 {
        let conn = db.acquire().await.unwrap();
        let show = |name: &'static str| {
            let conn = &conn;
            async move {
                conn.query_one(&format!("SHOW {name}"), &[])
                    .await
                    .unwrap()
                    .get::<_, String>(0)
            }
        };
        assert_eq!(show("statement_timeout").await, "12345ms");
        assert_eq!(
            show("lock_timeout").await,
            server_lock_timeout,
            "None leaves the server's value"
        );
        assert_eq!(show("idle_in_transaction_session_timeout").await, "30s");
        assert_eq!(show("work_mem").await, "5MB");
        assert_eq!(show("jit").await, "off");
        assert_eq!(
            show("application_name").await,
            format!("{}_pool", db.schema().unwrap()),
            "the default application_name is <schema>_pool"
        );
        assert_eq!(show("TimeZone").await, "Asia/Tokyo");
        conn.query_one("SELECT count(*) FROM init_ran", &[])
            .await
            .unwrap();
        std::mem::forget(db.acquire().await.unwrap()); // keep it busy so the loop sees the other
    }
}

#[tokio::test]
async fn a_failed_connection_keeps_its_sqlstate() {
    let role = unique("lim");
    let _role = RoleGuard(role.clone());
    admin(&format!("CREATE ROLE \"{role}\" LOGIN CONNECTION LIMIT 1")).await;
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url_as(&role)),
        min_connections: 1,
        max_connections: 2,
        ..config()
    })
    .unwrap();
    db.connect().await.unwrap();
    let held = db.acquire().await.unwrap();
    // The second connection is refused by the server: too many connections for the role.
    let e = db.acquire().await.unwrap_err();
    assert_eq!(e.code(), Some("53300"), "{e:?}");
    assert_eq!(
        e.sqlstate(),
        Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS)
    );
    match &e {
        Error::Connection { port, database, .. } => {
            assert_eq!(database, "postgres");
            assert!(*port > 0);
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("53300"), "{text}");
    assert!(!e.is_timeout());
    drop(held);
    db.disconnect().await.unwrap();
}

async fn own_application_name(db: &AsyncDatabaseManager) -> String {
    db.fetch_value::<String>(
        "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn the_default_application_name_is_schema_pool() {
    // An owned pool with a schema: <schema>_pool.
    let (db, _g) = schema_db().await;
    let schema = db.schema().unwrap().to_owned();
    assert_eq!(own_application_name(&db).await, format!("{schema}_pool"));

    // An owned pool without a schema: app_pool.
    let db = AsyncDatabaseManager::new(config()).unwrap();
    db.connect().await.unwrap();
    assert_eq!(own_application_name(&db).await, "app_pool");
    db.disconnect().await.unwrap();

    // A shared pool has no schema of its own (config.schema is ignored): app_pool.
    let pool = AsyncDatabaseManager::create_shared_pool(&DatabaseConfig {
        schema: Some(schema.clone()),
        ..config()
    })
    .await
    .unwrap();
    let users = AsyncDatabaseManager::from_pool(pool.clone(), Some(&schema)).unwrap();
    assert_eq!(own_application_name(&users).await, "app_pool");
    pool.close();

    // A name set by the user wins: in server_settings...
    let (db, _g2) = schema_db_with(|c| {
        c.server_settings = Some([("application_name".to_string(), "dash".to_string())].into());
    })
    .await;
    assert_eq!(own_application_name(&db).await, "dash");
    // ...or in the connection string.
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let (db, _g3) = schema_db_with(|c| {
        c.connection_string = Some(format!("{url}{sep}application_name=from_url"));
    })
    .await;
    assert_eq!(own_application_name(&db).await, "from_url");
}
