//! Migrations behind PgBouncer: racing migrators, and the direct connection string when set.

use std::time::Duration;

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

use crate::bouncer::{bouncer, pooled, TestDb};
use crate::common;
use crate::common::{admin_value, unique};

/// A directory of migration files, removed when dropped.
struct MigrationDir(std::path::PathBuf);

impl MigrationDir {
    fn new(files: &[(&str, &str)]) -> MigrationDir {
        let dir = std::env::temp_dir().join(unique("pgdbm_pooled_mig"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, sql) in files {
            std::fs::write(dir.join(name), sql).unwrap();
        }
        MigrationDir(dir)
    }
}

impl Drop for MigrationDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FILES: &[(&str, &str)] = &[
    (
        "001_table.sql",
        "CREATE TABLE {{tables.events}} (id serial PRIMARY KEY, what text NOT NULL);",
    ),
    (
        "002_slow_seed.sql",
        "SELECT pg_sleep(0.3); INSERT INTO {{tables.events}} (what) VALUES ('seeded');",
    ),
    (
        "003_column.sql",
        "ALTER TABLE {{tables.events}} ADD COLUMN at timestamptz DEFAULT now();
         CREATE VIEW recent_events AS SELECT 1 AS unqualified;",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_migrators_through_pgbouncer_apply_each_file_once_and_none_hangs() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(2);
    let url = bouncer.connection_string(&test_db.0);
    let dir = MigrationDir::new(FILES);

    let run = |url: String, dir: std::path::PathBuf| async move {
        let db = AsyncDatabaseManager::new(pooled(&url, "raced", 2)).unwrap();
        db.connect().await.unwrap();
        let report = tokio::time::timeout(
            Duration::from_secs(60),
            pgdbm::AsyncMigrationManager::new(&db, &dir).apply_pending_migrations(),
        )
        .await
        .expect("a migrator hung")
        .expect("a migrator failed");
        db.disconnect().await.unwrap();
        report
    };
    let racers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(run(url.clone(), dir.0.clone())))
        .collect();
    let mut applied = Vec::new();
    for r in racers {
        let report = r.await.unwrap();
        assert_eq!(report.total, 3, "{report:?}");
        applied.extend(report.applied.into_iter().map(|a| a.filename));
    }
    applied.sort();
    assert_eq!(
        applied,
        ["001_table.sql", "002_slow_seed.sql", "003_column.sql"],
        "each file applied by exactly one racer"
    );
    for _ in 0..3 {
        let report = run(url.clone(), dir.0.clone()).await;
        assert!(report.applied.is_empty(), "{report:?}");
        assert_eq!(report.skipped.len(), 3);
    }

    let db = AsyncDatabaseManager::new(pooled(&url, "raced", 2)).unwrap();
    db.connect().await.unwrap();
    let rows: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.events}}", &[])
        .await
        .unwrap();
    assert_eq!(rows, Some(1), "the seed ran once");
    let tracked: Option<i64> = db
        .fetch_value("SELECT count(*) FROM raced.schema_migrations", &[])
        .await
        .unwrap();
    assert_eq!(tracked, Some(3));
    let view: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_views WHERE schemaname = 'raced' AND viewname = 'recent_events'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        view,
        Some(1),
        "unqualified names land in the module's schema"
    );
    db.disconnect().await.unwrap();
    let locks = admin_value(&format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND d.datname = '{}'",
        test_db.0
    ))
    .await;
    assert_eq!(locks.as_deref(), Some("0"), "no lock outlives its run");
}

#[tokio::test]
async fn migrations_use_the_direct_connection_string_when_set() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(2);
    let url = bouncer.connection_string(&test_db.0);
    let dir = MigrationDir::new(&[
        (
            "001_table.sql",
            "CREATE TABLE {{tables.docs}} (id int PRIMARY KEY, body text);",
        ),
        (
            "002_index.sql",
            "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY docs_body ON {{tables.docs}} (body);",
        ),
    ]);

    // Without it, a file that cannot run in a transaction is refused with the way out.
    let db = AsyncDatabaseManager::new(pooled(&url, "direct", 2)).unwrap();
    db.connect().await.unwrap();
    let err = pgdbm::AsyncMigrationManager::new(&db, &dir.0)
        .apply_pending_migrations()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("direct_connection_string"),
        "{err}"
    );
    db.disconnect().await.unwrap();

    let base = common::database_url();
    let direct_url = format!("{}/{}", &base[..base.rfind('/').unwrap()], test_db.0);
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        direct_connection_string: Some(direct_url),
        ..pooled(&url, "direct", 2)
    })
    .unwrap();
    db.connect().await.unwrap();
    let report = pgdbm::AsyncMigrationManager::new(&db, &dir.0)
        .apply_pending_migrations()
        .await
        .expect("migrations over the direct connection");
    assert_eq!(report.applied.len(), 1, "{report:?}");
    assert!(db.table_exists("docs").await.unwrap());
    let index: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'direct' AND indexname = 'docs_body'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(index, Some(1));
    db.disconnect().await.unwrap();
}
