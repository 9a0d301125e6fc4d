//! `DatabaseDebugger` on real contention: a blocked query, a long-running one, a mixed-case
//! table, and health from healthy to degraded to unhealthy. Each test has a database of its own,
//! so other tests' sessions never show up in its findings.

use std::time::{Duration, Instant};

use pgdbm::testing::TestDatabase;
use pgdbm::{DatabaseDebugger, Error, HealthStatus};

async fn test_db() -> TestDatabase {
    TestDatabase::builder()
        .schema("app")
        .create()
        .await
        .expect("test database")
}

/// Polls `f` until it returns `Some`, for at most five seconds.
async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_blocked_query_is_found_and_makes_health_degraded() {
    let tdb = test_db().await;
    let db = tdb.manager().clone();
    db.execute(
        "CREATE TABLE {{tables.accounts}} (id int PRIMARY KEY, balance int NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    db.execute("INSERT INTO {{tables.accounts}} VALUES (1, 100)", &[])
        .await
        .unwrap();
    let debugger = DatabaseDebugger::new(&db);
    let before = debugger.check_connection_health().await.unwrap();
    assert_eq!(before.status, HealthStatus::Healthy, "{before:#?}");
    assert!(before.connectivity.ok);
    assert!(before
        .connectivity
        .version
        .as_deref()
        .unwrap()
        .starts_with("PostgreSQL"));
    assert!(before.blocking_queries.is_empty());

    let tx = db.transaction().await.unwrap();
    let holder: Option<i32> = tx
        .fetch_value("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    tx.execute(
        "UPDATE {{tables.accounts}} SET balance = balance - 1 WHERE id = 1",
        &[],
    )
    .await
    .unwrap();
    let waiter_db = db.clone();
    let waiter = tokio::spawn(async move {
        waiter_db
            .execute(
                "UPDATE {{tables.accounts}} SET balance = balance + 5 WHERE id = 1",
                &[],
            )
            .await
    });
    let found = eventually(|| async {
        let all = debugger.find_blocking_queries().await.unwrap();
        all.into_iter().find(|b| {
            b.blocked_query
                .as_deref()
                .is_some_and(|q| q.contains("+ 5"))
        })
    })
    .await;
    assert_eq!(Some(found.blocking_pid), holder, "{found:#?}");
    assert_ne!(found.blocked_pid, found.blocking_pid);
    assert_eq!(found.blocking_state.as_deref(), Some("idle in transaction"));
    assert!(found
        .blocking_query
        .as_deref()
        .unwrap()
        .contains("balance - 1"));

    let during = debugger.check_connection_health().await.unwrap();
    assert_eq!(during.status, HealthStatus::Degraded, "{during:#?}");
    assert!(!during.blocking_queries.is_empty());
    assert!(during.issues[0].contains("lock"), "{:?}", during.issues);
    let json = serde_json::to_value(&during).unwrap();
    assert_eq!(json["status"], "degraded");

    tx.commit().await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
    let balance: Option<i32> = db
        .fetch_value("SELECT balance FROM {{tables.accounts}} WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(balance, Some(104));
    assert!(debugger.find_blocking_queries().await.unwrap().is_empty());
    tdb.cleanup().await.unwrap();
}

/// Whether the debugger's own query (it reads pg_stat_activity) is among `found`.
fn lists_itself(found: &[pgdbm::LongRunningQuery]) -> bool {
    found.iter().any(|q| {
        q.query
            .as_deref()
            .is_some_and(|t| t.contains("pg_stat_activity"))
    })
}

#[tokio::test]
async fn a_long_running_query_is_found_but_not_the_debugger_itself() {
    let tdb = test_db().await;
    let db = tdb.manager().clone();
    let sleeper_db = db.clone();
    let sleeper =
        tokio::spawn(async move { sleeper_db.execute("SELECT pg_sleep(2.5)", &[]).await });
    let debugger = DatabaseDebugger::new(&db);
    let found = eventually(|| async {
        let all = debugger
            .find_long_running_queries(Duration::from_millis(800))
            .await
            .unwrap();
        assert!(!lists_itself(&all), "the debugger lists itself: {all:#?}");
        all.into_iter().next()
    })
    .await;
    assert!(
        found.query.as_deref().unwrap().contains("pg_sleep(2.5)"),
        "{found:#?}"
    );
    assert!(found.duration >= Duration::from_millis(800));
    assert_eq!(found.state.as_deref(), Some("active"));
    // At a zero threshold every running statement qualifies, the debugger's own excepted.
    let all = debugger
        .find_long_running_queries(Duration::ZERO)
        .await
        .unwrap();
    assert!(all.iter().any(|q| q.pid == found.pid), "{all:#?}");
    assert!(!lists_itself(&all), "the debugger lists itself: {all:#?}");
    assert!(debugger
        .find_long_running_queries(Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
    // With a threshold below its running time, health reports it.
    let health = debugger
        .clone()
        .with_long_running_threshold(Duration::from_millis(100))
        .unwrap()
        .check_connection_health()
        .await
        .unwrap();
    if health.long_running_queries.is_empty() {
        // The sleep may have ended in between: then the report is healthy.
        assert_eq!(health.status, HealthStatus::Healthy);
    } else {
        assert_eq!(health.status, HealthStatus::Degraded);
    }
    sleeper.await.unwrap().unwrap();
    assert!(matches!(
        debugger.with_long_running_threshold(Duration::ZERO),
        Err(Error::Configuration { .. })
    ));
    tdb.cleanup().await.unwrap();
}

#[tokio::test]
async fn table_sizes_cover_mixed_case_names() {
    let tdb = test_db().await;
    let db = tdb.manager().clone();
    db.execute(
        r#"CREATE TABLE app."Mixed Case" (id int PRIMARY KEY, t text);
           CREATE TABLE app.plain (id int);
           INSERT INTO app."Mixed Case" SELECT g, repeat('x', 100) FROM generate_series(1, 500) g;
           ANALYZE app."Mixed Case""#,
        &[],
    )
    .await
    .unwrap();
    let sizes = DatabaseDebugger::new(&db)
        .analyze_table_sizes()
        .await
        .unwrap();
    let names: Vec<&str> = sizes.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, ["Mixed Case", "plain"], "largest first");
    let mixed = &sizes[0];
    assert_eq!(mixed.schema, "app");
    assert!(mixed.table_bytes >= 8192, "{mixed:#?}");
    assert!(mixed.index_bytes > 0, "{mixed:#?}");
    assert!(mixed.total_bytes >= mixed.table_bytes + mixed.index_bytes);
    // Statistics found through the table's OID, whatever its name's case.
    assert!(mixed.live_rows.is_some(), "{mixed:#?}");
    tdb.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_unhealthy_and_a_failing_query_an_error() {
    let tdb = test_db().await;
    let config = tdb.config().unwrap();
    let db = pgdbm::AsyncDatabaseManager::new(config).unwrap();
    db.connect().await.unwrap();
    let debugger = DatabaseDebugger::new(&db);
    assert_eq!(
        debugger.check_connection_health().await.unwrap().status,
        HealthStatus::Healthy
    );
    db.disconnect().await.unwrap();
    let health = debugger.check_connection_health().await.unwrap();
    assert_eq!(health.status, HealthStatus::Unhealthy, "{health:#?}");
    assert!(!health.connectivity.ok);
    assert!(health.connectivity.error.is_some());
    // The other checks cannot run: an error, not an empty "nothing found".
    assert!(matches!(
        debugger.find_blocking_queries().await,
        Err(Error::Pool(_))
    ));
    assert!(debugger.analyze_table_sizes().await.is_err());
    tdb.cleanup().await.unwrap();
}
