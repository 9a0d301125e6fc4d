//! Owned and shared pools: connect, disconnect, schema isolation, closed pools, pool stats.

use crate::common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error, ErrorKind};

#[tokio::test]
async fn owned_pool_lifecycle_and_schema_isolation() {
    let (db, _g) = schema_db().await;
    let schema = db.schema().unwrap().to_owned();
    users_table(&db).await;
    // The table was created inside the manager's schema, not in public.
    let n = admin_value(&format!(
        "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'users'"
    ))
    .await;
    assert_eq!(n.as_deref(), Some("1"));
    assert!(db.table_exists("users").await.unwrap());
    assert!(db.table_exists(&format!("{schema}.users")).await.unwrap());
    assert!(!db.table_exists("nope").await.unwrap());
    assert!(matches!(
        db.table_exists("bad-name").await,
        Err(Error::Schema(_))
    ));
    // An owned pool with a schema sets search_path to "schema", public.
    let path: Option<String> = db.fetch_value("SHOW search_path", &[]).await.unwrap();
    assert_eq!(path.unwrap(), format!("{schema}, public"));
}

#[tokio::test]
async fn using_before_connect_is_a_pool_error() {
    let db = AsyncDatabaseManager::new(config()).unwrap();
    let err = db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Pool(_)), "{err:?}");
    assert!(err.to_string().contains("connect()"), "{err}");
    let stats = db.get_pool_stats().await.unwrap();
    assert!(!stats.is_connected());
    assert_eq!(stats.size, 0);
}

#[tokio::test]
async fn disconnect_closes_server_connections() {
    let app = unique("app");
    let mut cfg = config();
    cfg.min_connections = 3;
    cfg.server_settings = Some([("application_name".to_string(), app.clone())].into());
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    db.connect().await.unwrap();
    let count = |app: String| async move {
        admin_value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .await
        .unwrap()
    };
    assert_eq!(
        count(app.clone()).await,
        "3",
        "min_connections are opened eagerly"
    );
    db.disconnect().await.unwrap();
    let mut left = String::new();
    for _ in 0..50 {
        left = count(app.clone()).await;
        if left == "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        left, "0",
        "connections still open on the server after disconnect"
    );
    assert!(matches!(
        db.fetch_value::<i32>("SELECT 1", &[]).await,
        Err(Error::Pool(_))
    ));
    // Connecting again works.
    db.connect().await.unwrap();
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn shared_pool_many_managers() {
    let s1 = unique("sa");
    let s2 = unique("sb");
    let _g1 = SchemaGuard(s1.clone());
    let _g2 = SchemaGuard(s2.clone());
    let cfg = DatabaseConfig {
        schema: Some("ignored_here".into()),
        ..config()
    };
    let before = cfg.clone();
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap();
    assert_eq!(cfg, before, "the caller's config is never mutated");
    let a = AsyncDatabaseManager::from_pool(pool.clone(), Some(&s1)).unwrap();
    let b = AsyncDatabaseManager::from_pool(pool.clone(), Some(&s2)).unwrap();
    // External pools: connect is an error, disconnect a no-op.
    assert!(matches!(a.connect().await, Err(Error::Pool(_))));
    a.disconnect().await.unwrap();
    for (db, s) in [(&a, &s1), (&b, &s2)] {
        db.execute(&format!("CREATE SCHEMA \"{s}\""), &[])
            .await
            .unwrap();
        db.execute(
            "CREATE TABLE {{tables.items}} (id int PRIMARY KEY, owner text)",
            &[],
        )
        .await
        .unwrap();
        db.execute("INSERT INTO {{tables.items}} VALUES (1, $1)", &[s])
            .await
            .unwrap();
    }
    let owner_a: Option<String> = a
        .fetch_value("SELECT owner FROM {{tables.items}}", &[])
        .await
        .unwrap();
    let owner_b: Option<String> = b
        .fetch_value("SELECT owner FROM {{tables.items}}", &[])
        .await
        .unwrap();
    assert_eq!(owner_a.as_deref(), Some(s1.as_str()));
    assert_eq!(owner_b.as_deref(), Some(s2.as_str()));
    // The shared pool pins a neutral search_path: unqualified names fail loudly.
    let path: Option<String> = a.fetch_value("SHOW search_path", &[]).await.unwrap();
    assert_eq!(path.as_deref(), Some("pg_catalog"));
    let err = a.fetch_all("SELECT * FROM items", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UndefinedTable);
    // Still usable after the disconnect no-op.
    assert_eq!(
        a.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
    pool.close();
}

#[tokio::test]
async fn shared_pool_refuses_an_overridden_search_path() {
    let cfg = DatabaseConfig {
        init_commands: Some(vec!["SET search_path TO public".into()]),
        ..config()
    };
    let err = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.to_string().contains("search_path"), "{err}");
    // Turning the pin off works.
    let cfg = DatabaseConfig {
        shared_pool_search_path: None,
        ..cfg
    };
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .unwrap();
    pool.close();
}

#[tokio::test]
async fn pool_stats_have_the_seed_keys() {
    let (db, _g) = schema_db_with(|c| {
        c.min_connections = 2;
        c.max_connections = 5;
    })
    .await;
    let held = db.acquire().await.unwrap();
    let stats = db.get_pool_stats().await.unwrap();
    assert!(stats.is_connected());
    assert_eq!(stats.status.to_string(), "connected");
    assert_eq!((stats.min_size, stats.max_size), (2, 5));
    assert_eq!(stats.size, 2);
    assert_eq!(stats.used_size, 1, "{stats:?}");
    assert_eq!(stats.free_size, 1);
    assert_eq!(stats.database, "postgres");
    assert_eq!(stats.schema.as_deref(), db.schema());
    assert!(stats.pid.unwrap() > 0);
    assert!(stats.version.as_deref().unwrap().starts_with("PostgreSQL"));
    assert!(stats.acquire_count >= 2);
    assert!((stats.usage() - 0.5).abs() < 1e-9);
    let json = serde_json::to_value(&stats).unwrap();
    for key in [
        "status",
        "min_size",
        "max_size",
        "size",
        "free_size",
        "used_size",
        "database",
        "schema",
        "pid",
        "version",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    drop(held);
}

#[tokio::test]
async fn a_closed_shared_pool_is_a_pool_error() {
    let pool = AsyncDatabaseManager::create_shared_pool(&config())
        .await
        .unwrap();
    let db = AsyncDatabaseManager::from_pool(pool.clone(), None).unwrap();
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
    pool.close();
    assert!(pool.is_closed());
    let err = db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Pool(_)), "{err:?}");
    assert!(err.to_string().contains("closed"), "{err}");
    assert!(matches!(db.transaction().await, Err(Error::Pool(_))));
    let stats = db.get_pool_stats().await.unwrap();
    assert!(!stats.is_connected());
}

#[tokio::test]
async fn connect_with_an_existing_schema_needs_no_create_privilege() {
    // A least-privilege role: LOGIN, USAGE on its (pre-created) schema, no CREATE on the
    // database. Guards drop in reverse order: the schema (and its grant) before the role.
    let role = unique("lp");
    let _role = RoleGuard(role.clone());
    admin(&format!("CREATE ROLE \"{role}\" LOGIN")).await;
    let schema = unique("lps");
    let _schema = SchemaGuard(schema.clone());
    admin(&format!(
        "CREATE SCHEMA \"{schema}\"; GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\""
    ))
    .await;
    let premise = admin_value(&format!(
        "SELECT has_database_privilege('{role}', current_database(), 'CREATE')::text"
    ))
    .await;
    assert_eq!(
        premise.as_deref(),
        Some("false"),
        "the role must lack CREATE"
    );

    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url_as(&role)),
        schema: Some(schema.clone()),
        ..config()
    })
    .unwrap();
    db.connect()
        .await
        .unwrap_or_else(|e| panic!("connect as a least-privilege role failed: {e}"));
    let who: Option<String> = db
        .fetch_value("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(who.as_deref(), Some(role.as_str()));
    let path: Option<String> = db.fetch_value("SHOW search_path", &[]).await.unwrap();
    assert_eq!(path.unwrap(), format!("{schema}, public"));
    db.disconnect().await.unwrap();

    // A missing schema is still created when the role may do so (the superuser here).
    let missing = unique("lpm");
    let _missing = SchemaGuard(missing.clone());
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        schema: Some(missing.clone()),
        ..config()
    })
    .unwrap();
    db.connect().await.unwrap();
    let n = admin_value(&format!(
        "SELECT count(*) FROM pg_namespace WHERE nspname = '{missing}'"
    ))
    .await;
    assert_eq!(n.as_deref(), Some("1"));
    db.disconnect().await.unwrap();
}
