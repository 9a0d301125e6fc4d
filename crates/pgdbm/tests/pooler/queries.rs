//! Every query path from two processes, timeouts, what a transaction pooler refuses or isolates.

use std::time::{Duration, Instant};

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

use crate::bouncer::{bouncer, pooled, TestDb};
use crate::common::admin_value;

use super::{workload, CHILD_TAG, CHILD_URL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_path_runs_through_pgbouncer_from_two_processes() {
    let test_db = TestDb::create().await;
    // Fewer server connections (3) than the two processes' clients (2 x 6).
    let bouncer = bouncer(3);
    let url = bouncer.connection_string(&test_db.0);

    let child_url = url.clone();
    let child = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_workload",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_URL, child_url)
            .env(CHILD_TAG, "second")
            .output()
            .expect("run the second process")
    });
    workload(&url, "first").await;
    let out = child.await.unwrap();
    assert!(
        out.status.success(),
        "the second process failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("child workload done"),
        "the second process ran no workload"
    );
    // Nothing named is left on the server connections.
    let left = admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state LIKE 'idle in%'",
        test_db.0
    ))
    .await;
    assert_eq!(left.as_deref(), Some("0"));
}

#[tokio::test]
async fn a_timeout_cancels_the_query_on_the_server_through_pgbouncer() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(2);
    let db = AsyncDatabaseManager::new(pooled(
        &bouncer.connection_string(&test_db.0),
        "cancelled",
        2,
    ))
    .unwrap();
    db.connect().await.unwrap();
    let started = Instant::now();
    let err = db
        .with_timeout(Duration::from_millis(200))
        .execute("SELECT pg_sleep(30) -- pgdbm_cancel_marker", &[])
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The server query ends soon after, not after 30 s.
    let check = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state = 'active' \
         AND query LIKE '%pgdbm_cancel_marker%' AND pid <> pg_backend_pid()",
        test_db.0
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if admin_value(&check).await.as_deref() == Some("0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the pool serves the next call.
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn no_session_setting_reaches_other_clients() {
    let test_db = TestDb::create().await;
    // One server connection, shared by the manager and the raw client below.
    let bouncer = bouncer(1);
    let url = bouncer.connection_string(&test_db.0);
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        statement_timeout_ms: Some(4321),
        server_settings: Some([("work_mem".to_string(), "7MB".to_string())].into()),
        ..pooled(&url, "settings", 2)
    })
    .unwrap();
    db.connect().await.unwrap();
    // Inside pgdbm's transactions the settings hold.
    let tx = db.transaction().await.unwrap();
    let inside: Option<String> = tx
        .fetch_value(
            "SELECT current_setting('statement_timeout') || ' ' || current_setting('work_mem') \
             || ' ' || current_setting('search_path') || ' ' || current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        inside.as_deref(),
        Some("4321ms 7MB settings, public settings_pool")
    );

    // Another client on the same server connection sees the server's defaults.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .simple_query(
            "SELECT current_setting('statement_timeout') || ' ' || current_setting('work_mem')",
        )
        .await
        .unwrap();
    let seen = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(seen.as_deref(), Some("0 4MB"));
    let named: Vec<_> = client
        .simple_query("SELECT name FROM pg_prepared_statements")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .collect();
    assert!(
        named.is_empty(),
        "named statements left on the server connection"
    );

    // A shared pool connects without pinning search_path, and its managers work.
    let pool = AsyncDatabaseManager::create_shared_pool(&pooled(&url, "unused", 2))
        .await
        .expect("shared pool through pgbouncer");
    let users = AsyncDatabaseManager::from_pool(pool.clone(), Some("settings")).unwrap();
    users
        .execute("CREATE TABLE {{tables.t}} (id int)", &[])
        .await
        .unwrap();
    assert!(users.table_exists("t").await.unwrap());
    pool.close();
    db.disconnect().await.unwrap();
}

#[tokio::test]
async fn listen_asks_for_a_direct_connection_behind_a_transaction_pooler() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(1);
    let db = AsyncDatabaseManager::new(pooled(
        &bouncer.connection_string(&test_db.0),
        "listening",
        2,
    ))
    .unwrap();
    db.connect().await.unwrap();
    let err = db.listen(&["events"]).await.unwrap_err();
    assert!(
        err.to_string().contains("listen_connection_string"),
        "{err}"
    );
    db.disconnect().await.unwrap();
}

#[test]
fn init_commands_are_refused_behind_a_transaction_pooler() {
    let err = AsyncDatabaseManager::new(DatabaseConfig {
        init_commands: Some(vec!["SET x.y = 1".into()]),
        ..pooled("postgresql://postgres@127.0.0.1:6432/db", "s", 2)
    })
    .unwrap_err();
    assert!(err.to_string().contains("init_commands"), "{err}");
}

#[tokio::test]
async fn a_bad_setting_fails_at_connect_behind_a_transaction_pooler() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(1);
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        server_settings: Some([("work_mem".to_string(), "banana".to_string())].into()),
        ..pooled(&bouncer.connection_string(&test_db.0), "bad", 2)
    })
    .unwrap();
    let err = db.connect().await.unwrap_err();
    assert!(err.to_string().contains("work_mem"), "{err}");
}
