//! The testing utilities themselves: test databases, template cloning, schema-per-test,
//! `#[pgdbm::test]`, fixtures, snapshots, leak checks, and bad input.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::admin_value;
use pgdbm::testing::{
    self, assert_table_unchanged, count_rows, load_json_fixture, load_sql_fixture, snapshot_table,
    truncate, Migrations, TempCluster, TestDatabase,
};
use pgdbm::{AsyncDatabaseManager, Error};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/testdb")
}

async fn database_exists(name: &str) -> bool {
    admin_value(&format!(
        "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    ))
    .await
    .as_deref()
        == Some("1")
}

#[tokio::test]
async fn a_test_database_is_created_and_dropped() {
    let tdb = TestDatabase::create().await.unwrap();
    let name = tdb.name().to_owned();
    assert!(name.starts_with("test_"), "{name}");
    assert!(database_exists(&name).await);
    let current: Option<String> = tdb
        .manager()
        .fetch_value("SELECT current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(current.as_deref(), Some(name.as_str()));
    tdb.cleanup().await.unwrap();
    assert!(
        !database_exists(&name).await,
        "database left behind after cleanup"
    );
}

#[test]
fn a_panicking_test_still_drops_its_database() {
    let name = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = name.clone();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tdb = TestDatabase::create().await.unwrap();
            *seen.lock().unwrap() = tdb.name().to_owned();
            panic!("the test fails");
        })
    })
    .join();
    assert!(result.is_err(), "the body should have panicked");
    let name = name.lock().unwrap().clone();
    assert!(!name.is_empty());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(
        !rt.block_on(database_exists(&name)),
        "database {name} survived a panic"
    );
}

#[tokio::test]
async fn migrated_databases_are_cloned_from_one_template() {
    let migrations = fixtures().join("migrations");
    let make = || {
        TestDatabase::builder()
            .schema("app")
            .migrations(migrations.as_path())
            .create()
    };
    let a = make().await.unwrap();
    // Spare clones are made in the background while tests overlap, as `a` and `a2` do.
    let a2 = make().await.unwrap();
    let template = Migrations::Dir(migrations.clone())
        .template_name(Some("app"))
        .unwrap();
    let spares = format!(
        "pgdbm\\_spare\\_{}\\_%",
        template.trim_start_matches("pgdbm_tpl_")
    );
    let mut have = 0;
    for _ in 0..100 {
        have = admin_value(&format!(
            "SELECT count(*) FROM pg_database WHERE datname LIKE '{spares}'"
        ))
        .await
        .unwrap()
        .parse::<i64>()
        .unwrap();
        if have >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(have >= 1, "no spare clone was made");
    let newest_oid: i64 = admin_value("SELECT max(oid)::int8 FROM pg_database")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let b = make().await.unwrap();
    let b_oid: i64 = admin_value(&format!(
        "SELECT oid::int8 FROM pg_database WHERE datname = '{}'",
        b.name()
    ))
    .await
    .unwrap()
    .parse()
    .unwrap();
    assert!(
        b_oid <= newest_oid,
        "b was cloned on the spot instead of taking a ready spare"
    );
    for tdb in [&a, &b] {
        // The seed row from the migrations is there, in the schema.
        assert_eq!(count_rows(tdb.manager(), "users").await.unwrap(), 1);
        let applied: Option<i64> = tdb
            .manager()
            .fetch_value("SELECT count(*) FROM {{tables.schema_migrations}}", &[])
            .await
            .unwrap();
        assert_eq!(applied, Some(3));
    }
    // The two are independent copies.
    a.manager()
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ('only-a@x')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(count_rows(b.manager(), "users").await.unwrap(), 1);
    a.cleanup().await.unwrap();
    a2.cleanup().await.unwrap();
    b.cleanup().await.unwrap();
}

#[tokio::test]
async fn changed_migrations_build_a_new_template_and_old_ones_can_be_dropped() {
    // A private server, so dropping templates cannot disturb other tests.
    let cluster = TempCluster::start().unwrap();
    let server = cluster.database_config("postgres");
    let dir = std::env::temp_dir().join(format!("pgdbm_tpl_test_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["001_users.sql", "002_posts.sql"] {
        std::fs::copy(fixtures().join("migrations").join(f), dir.join(f)).unwrap();
    }
    let templates = || async {
        let maint = AsyncDatabaseManager::new(server.clone()).unwrap();
        maint.connect().await.unwrap();
        let rows = maint
            .fetch_all(
                "SELECT datname FROM pg_database WHERE datname LIKE 'pgdbm\\_tpl\\_%' ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        maint.disconnect().await.unwrap();
        rows.iter()
            .map(|r| r.get::<String>(0).unwrap())
            .collect::<Vec<_>>()
    };
    // `first` keeps its template in use while the migrations change under it.
    let first = TestDatabase::builder()
        .server(server.clone())
        .migrations(dir.as_path())
        .create()
        .await
        .unwrap();
    let one = templates().await;
    assert_eq!(one.len(), 1);
    std::fs::write(
        dir.join("003_more.sql"),
        "CREATE TABLE {{tables.more}} (x int);",
    )
    .unwrap();
    let second = TestDatabase::builder()
        .server(server.clone())
        .migrations(dir.as_path())
        .create()
        .await
        .unwrap();
    assert!(second.manager().table_exists("more").await.unwrap());
    let two = templates().await;
    assert_eq!(two.len(), 2, "{two:?}");
    // The old template is still in use (by `first`): housekeeping leaves it alone.
    let keep = Migrations::Dir(dir.clone());
    let dropped = testing::drop_stale_templates(&server, Some((&keep, None)))
        .await
        .unwrap();
    assert_eq!(dropped, Vec::<String>::new());
    // Once their last test database is gone, templates go too.
    first.cleanup().await.unwrap();
    assert_eq!(templates().await.len(), 1);
    assert_ne!(templates().await, one);
    second.cleanup().await.unwrap();
    assert_eq!(templates().await, Vec::<String>::new());
    // A template that a killed run left behind (nobody uses it) is housekeeping's to drop.
    let maint = AsyncDatabaseManager::new(server.clone()).unwrap();
    maint.connect().await.unwrap();
    for sql in [
        "CREATE DATABASE pgdbm_tpl_00000000deadbeef",
        "ALTER DATABASE pgdbm_tpl_00000000deadbeef WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
        "CREATE DATABASE pgdbm_spare_00000000deadbeef_1 TEMPLATE pgdbm_tpl_00000000deadbeef",
    ] {
        maint.execute(sql, &[]).await.unwrap();
    }
    maint.disconnect().await.unwrap();
    let dropped = testing::drop_stale_templates(&server, None).await.unwrap();
    assert_eq!(dropped, vec!["pgdbm_tpl_00000000deadbeef".to_owned()]);
    assert_eq!(templates().await, Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn schema_per_test_mode() {
    let tdb = TestDatabase::builder()
        .schema_per_test()
        .migrations(fixtures().join("migrations"))
        .create()
        .await
        .unwrap();
    let schema = tdb.name().to_owned();
    assert_eq!(tdb.manager().schema(), Some(schema.as_str()));
    assert_eq!(count_rows(tdb.manager(), "users").await.unwrap(), 1);
    let db: Option<String> = tdb
        .manager()
        .fetch_value("SELECT current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(
        db.as_deref(),
        Some("postgres"),
        "no database is created in schema mode"
    );
    tdb.cleanup().await.unwrap();
    let left = admin_value(&format!(
        "SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"
    ))
    .await;
    assert_eq!(left.as_deref(), Some("0"));
}

#[tokio::test]
async fn fixtures_snapshots_counts_and_truncate() {
    let tdb = TestDatabase::builder()
        .migrations(fixtures().join("migrations"))
        .create()
        .await
        .unwrap();
    let db = tdb.manager();
    load_sql_fixture(db, fixtures().join("data.sql"))
        .await
        .unwrap();
    let n = load_json_fixture(db, fixtures().join("data.json"))
        .await
        .unwrap();
    assert_eq!(n, 4);
    assert_eq!(count_rows(db, "users").await.unwrap(), 5);
    assert_eq!(count_rows(db, "posts").await.unwrap(), 2);
    let score: Option<String> = db
        .fetch_value(
            "SELECT score::text FROM {{tables.posts}} WHERE title = 'first'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(score.as_deref(), Some("1.50"));
    let created: Option<String> = db
        .fetch_value("SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM {{tables.users}} WHERE email = 'a@x'", &[])
        .await
        .unwrap();
    assert_eq!(created.as_deref(), Some("2024-01-02 03:04:05"));

    let snap = snapshot_table(db, "posts").await.unwrap();
    assert_eq!(snap.len(), 2);
    assert_table_unchanged(db, &snap).await;
    db.execute(
        "UPDATE {{tables.posts}} SET score = 2.5 WHERE title = 'first'",
        &[],
    )
    .await
    .unwrap();
    let changed = snapshot_table(db, "posts").await.unwrap();
    let diff = snap.diff(&changed).unwrap();
    assert!(diff.contains("1 row(s) removed, 1 row(s) added"), "{diff}");
    assert!(
        diff.contains("- ") && diff.contains("\"score\": 1.50"),
        "{diff}"
    );
    assert!(
        diff.contains("+ ") && diff.contains("\"score\": 2.50"),
        "{diff}"
    );
    let db2 = db.clone();
    let snap2 = snap.clone();
    let panicked = tokio::spawn(async move { assert_table_unchanged(&db2, &snap2).await }).await;
    assert!(panicked.unwrap_err().is_panic());

    truncate(db, &["posts", "users"]).await.unwrap();
    assert_eq!(count_rows(db, "users").await.unwrap(), 0);
    // Identifiers are validated in every helper.
    assert!(matches!(
        count_rows(db, "users; DROP TABLE x").await,
        Err(Error::Schema(_))
    ));
    assert!(matches!(
        truncate(db, &["a\"b"]).await,
        Err(Error::Schema(_))
    ));
    assert!(matches!(
        snapshot_table(db, "1x").await,
        Err(Error::Schema(_))
    ));
    let bad = std::env::temp_dir().join(format!("pgdbm_bad_fixture_{}.json", std::process::id()));
    std::fs::write(&bad, r#"{"users": [{"email; DROP TABLE x": 1}]}"#).unwrap();
    assert!(matches!(
        load_json_fixture(db, &bad).await,
        Err(Error::Schema(_))
    ));
    std::fs::remove_file(&bad).unwrap();
    tdb.cleanup().await.unwrap();
}

#[tokio::test]
async fn leftover_databases_are_found_by_age_and_dropped() {
    let old = format!("leakcheck_{}_{}_0_0", 1_000_000_000, std::process::id());
    common::admin(&format!("CREATE DATABASE {old}")).await;
    let fresh = TestDatabase::builder()
        .prefix("leakcheck")
        .create()
        .await
        .unwrap();
    let server = testing::server_config_from_env();
    let found = testing::list_leftover_databases(&server, "leakcheck", Duration::from_secs(3600))
        .await
        .unwrap();
    let names: Vec<_> = found.iter().map(|l| l.name.as_str()).collect();
    assert!(names.contains(&old.as_str()), "{names:?}");
    assert!(
        !names.contains(&fresh.name()),
        "a fresh database counted as leftover"
    );
    let dropped = testing::drop_leftover_databases(&server, "leakcheck", Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(dropped.contains(&old));
    assert!(!database_exists(&old).await);
    assert!(database_exists(fresh.name()).await);
    fresh.cleanup().await.unwrap();
}

#[tokio::test]
async fn leftover_cleanup_never_touches_a_real_database_with_a_similar_name() {
    // A prefix of our own, so parallel runs and other tests are not affected.
    let prefix = common::unique("arch");
    // Named like a real archive, not like a generated test database
    // ("{prefix}_{secs}_{pid}_{n}_{nanos}"): it must never be listed nor dropped.
    let archive = format!("{prefix}_2024_q1_archive");
    let dated = format!("{prefix}_2024_01_15_0");
    let old_generated = format!("{prefix}_1000000000_{}_0_0", std::process::id());
    let _guards = [
        common::DatabaseGuard(archive.clone()),
        common::DatabaseGuard(dated.clone()),
        common::DatabaseGuard(old_generated.clone()),
    ];
    for name in [&archive, &dated, &old_generated] {
        common::admin(&format!("CREATE DATABASE {name}")).await;
    }
    let server = testing::server_config_from_env();
    let found = testing::list_leftover_databases(&server, &prefix, Duration::from_secs(3600))
        .await
        .unwrap();
    let names: Vec<_> = found.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, [old_generated.as_str()]);
    let dropped = testing::drop_leftover_databases(&server, &prefix, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(dropped, [old_generated.as_str()]);
    assert!(
        database_exists(&archive).await,
        "a real database was dropped"
    );
    assert!(database_exists(&dated).await, "a real database was dropped");
    assert!(!database_exists(&old_generated).await);
}

#[tokio::test]
async fn bad_input_is_a_test_database_error() {
    for bad in [
        "test\"; DROP DATABASE production; --",
        "test' OR '1'='1",
        "test/*comment*/",
        "123test",
        "test-db",
        "test db",
    ] {
        match TestDatabase::builder().prefix(bad).create().await {
            Err(Error::TestDatabase(msg)) => assert!(msg.contains("invalid"), "{msg}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // An unreachable server names the variables that were read.
    let nowhere = pgdbm::DatabaseConfig {
        host: "127.0.0.1".into(),
        port: 1,
        retry_attempts: 0,
        ..Default::default()
    };
    match TestDatabase::builder().server(nowhere).create().await {
        Err(Error::TestDatabase(msg)) => {
            assert!(
                msg.contains("TEST_DB_HOST") && msg.contains("DATABASE_URL"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_cleanup_failure_is_reported() {
    let cluster = TempCluster::start().unwrap();
    let tdb = TestDatabase::builder()
        .server(cluster.database_config("postgres"))
        .create()
        .await
        .unwrap();
    cluster.stop().unwrap();
    match tdb.cleanup().await {
        Err(Error::TestDatabase(msg)) => {
            assert!(
                msg.contains("could not drop") || msg.contains("cannot reach"),
                "{msg}"
            )
        }
        other => panic!("cleanup against a stopped server returned {other:?}"),
    }
}

#[pgdbm::test]
async fn macro_gives_a_fresh_database(db: AsyncDatabaseManager) {
    let name: Option<String> = db
        .fetch_value("SELECT current_database()::text", &[])
        .await
        .unwrap();
    assert!(name.unwrap().starts_with("test_"));
    db.execute("CREATE TABLE t (x int)", &[]).await.unwrap();
}

#[pgdbm::test(migrations = "tests/fixtures/testdb/migrations", schema = "app")]
async fn macro_with_migrations(db: AsyncDatabaseManager) -> pgdbm::Result<()> {
    assert_eq!(db.schema(), Some("app"));
    assert_eq!(count_rows(&db, "users").await?, 1);
    db.execute("INSERT INTO {{tables.users}} (email) VALUES ('m@x')", &[])
        .await?;
    Ok(())
}

#[pgdbm::test(
    schema_per_test = true,
    migrations = "tests/fixtures/testdb/migrations"
)]
async fn macro_schema_per_test(db: AsyncDatabaseManager) {
    assert!(db.schema().unwrap().starts_with("test_"));
    assert_eq!(count_rows(&db, "users").await.unwrap(), 1);
}

#[pgdbm::test]
#[should_panic(expected = "boom")]
async fn macro_propagates_panics(db: AsyncDatabaseManager) {
    db.execute("SELECT 1", &[]).await.unwrap();
    panic!("boom");
}
