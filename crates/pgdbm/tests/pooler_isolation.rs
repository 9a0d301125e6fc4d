//! Nothing a caller does reaches PgBouncer's shared server connections: a migration file with
//! pg_dump's usual session header leaves no setting behind for the next client.

#[path = "support/bouncer.rs"]
mod bouncer;
mod common;

use bouncer::{bouncer, one, pooled, raw_client, TestDb};
use common::unique;
use pgdbm::AsyncDatabaseManager;

/// pg_dump's header: session-level settings, then the objects.
const DUMP: &str = "SET statement_timeout = 0;
SET lock_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET row_security = off;
CREATE TABLE {{tables.dumped}} (id int);
";

#[tokio::test]
async fn a_pg_dump_header_in_a_migration_leaves_nothing_on_the_server_connection() {
    let test_db = TestDb::create().await;
    // One server connection: whatever the migration leaves, the next client gets.
    let bouncer = bouncer(1);
    let url = bouncer.connection_string(&test_db.0);
    let other_app = raw_client(&url).await;
    other_app
        .batch_execute("CREATE TABLE public.app_table (id int)")
        .await
        .unwrap();
    let before = one(
        &other_app,
        "SELECT current_setting('search_path') || ' ' || current_setting('row_security') \
         || ' ' || current_setting('check_function_bodies')",
    )
    .await;

    let dir = std::env::temp_dir().join(unique("pgdbm_dump_header"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("001_dump.sql"), DUMP).unwrap();
    let db = AsyncDatabaseManager::new(pooled(&url, "dumped", 2)).unwrap();
    db.connect().await.unwrap();
    let report = pgdbm::AsyncMigrationManager::new(&db, &dir)
        .apply_pending_migrations()
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(report.applied.len(), 1, "{report:?}");

    // The other application's unqualified read, and its settings, as before.
    let after = one(
        &other_app,
        "SELECT current_setting('search_path') || ' ' || current_setting('row_security') \
         || ' ' || current_setting('check_function_bodies')",
    )
    .await;
    assert_eq!(after, before);
    assert_eq!(one(&other_app, "SELECT count(*) FROM app_table").await, "0");
    // And pgdbm's own next call.
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.dumped}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(0));
}

#[tokio::test]
async fn session_changes_through_the_pooler_are_refused_outside_transactions_and_undone_inside() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(1);
    let url = bouncer.connection_string(&test_db.0);
    let db = AsyncDatabaseManager::new(pooled(&url, "changes", 2)).unwrap();
    db.connect().await.unwrap();
    for sql in [
        "SET search_path = ''",
        "SELECT set_config('row_security', 'off', false)",
        "SELECT pg_advisory_lock(7)",
        "CREATE TEMP TABLE t (x int)",
    ] {
        let err = db.fetch_all(sql, &[]).await.unwrap_err();
        assert!(
            matches!(err, pgdbm::Error::Configuration { .. }),
            "{sql}: {err:?}"
        );
        assert!(err.to_string().contains("SET LOCAL"), "{err}");
    }
    // Inside a transaction: undone before the commit hands the server connection back.
    let tx = db.transaction().await.unwrap();
    tx.execute("SET search_path = ''; SET row_security = off", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let other_app = raw_client(&url).await;
    assert_eq!(
        one(
            &other_app,
            "SELECT current_setting('search_path') || ' ' || current_setting('row_security')"
        )
        .await,
        "\"$user\", public on"
    );
    // SET LOCAL and set_config(..., true) in a transaction are fine.
    let tx = db.transaction().await.unwrap();
    tx.set_local("app.tenant_id", "7").await.unwrap();
    let seen: Option<String> = tx
        .fetch_value("SELECT current_setting('app.tenant_id')", &[])
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("7"));
    tx.commit().await.unwrap();
}
