//! Named statements: none left behind by dropped calls or failed describes; session poolers cache.

use std::time::Duration;

use pgdbm::testing::TempPgBouncer;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, EnumText, Pooler};

use crate::bouncer::{bouncer, one, pooled, TestDb};
use crate::common;
use crate::common::admin_value;

/// Calls dropped at random moments, most of them while their SQL is being described: afterwards
/// every call succeeds and no server connection holds a named statement or an open transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_dropped_at_random_moments_leave_the_server_connections_clean() {
    let test_db = TestDb::create().await;
    let bouncer = bouncer(2);
    let url = bouncer.connection_string(&test_db.0);
    let db = AsyncDatabaseManager::new(pooled(&url, "dropped", 4)).unwrap();
    db.connect().await.unwrap();
    db.execute(
        "CREATE TYPE dropped.mood AS ENUM ('sad', 'ok');
         CREATE TABLE {{tables.t}} (id int, mood dropped.mood);
         INSERT INTO {{tables.t}} SELECT i, 'ok' FROM generate_series(1, 100) i",
        &[],
    )
    .await
    .unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut aborted = 0;
    for i in 0..80 {
        let sql = format!("SELECT mood, id FROM {{{{tables.t}}}} WHERE id > $1 /* {i} */");
        let in_tx = next() % 2 == 0;
        let task = {
            let db = db.clone();
            tokio::spawn(async move {
                if in_tx {
                    let tx = db.transaction().await?;
                    tx.fetch_all(&sql, &[&1_i32]).await?;
                    tx.commit().await
                } else {
                    db.fetch_all(&sql, &[&1_i32]).await.map(drop)
                }
            })
        };
        // Within the time a call takes here (about 1 ms), so that most are cut off mid-way.
        tokio::time::sleep(Duration::from_micros(next() % 1500)).await;
        task.abort();
        if matches!(task.await, Err(e) if e.is_cancelled()) {
            aborted += 1;
        }
    }
    println!("{aborted} of 80 calls aborted");
    assert!(
        aborted > 10,
        "too few calls were actually aborted ({aborted})"
    );
    // Every later call works, custom types included.
    for i in 0..40 {
        let rows = db
            .fetch_all(
                &format!("SELECT mood, id FROM {{{{tables.t}}}} WHERE id > $1 /* after {i} */"),
                &[&1_i32],
            )
            .await
            .expect("a call after the aborts");
        assert_eq!(rows.len(), 99);
        assert_eq!(rows[0].get::<EnumText>("mood").unwrap().0, "ok");
    }
    db.disconnect().await.unwrap();
    // The server connections PgBouncer keeps hold nothing named and no transaction.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..4 {
        assert_eq!(
            named_on_server(&client).await,
            "0",
            "named statements left behind"
        );
    }
    // A connection released in a transaction is rolled back in the background, out of the
    // pool, and `disconnect` does not wait for that: give it a moment.
    let open_query = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state LIKE 'idle in%'",
        test_db.0
    );
    common::settle(|| async { admin_value(&open_query).await.as_deref() == Some("0") }).await;
}

#[tokio::test]
async fn a_session_pooler_keeps_the_statement_cache_and_says_so_in_the_stats() {
    let test_db = TestDb::create().await;
    let config: tokio_postgres::Config = common::database_url().parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let bouncer = TempPgBouncer::builder()
        .pool_mode("session")
        .start("127.0.0.1", port)
        .expect("pgbouncer");
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        pooler: Pooler::Session,
        statement_timeout_ms: Some(2500),
        ..pooled(&bouncer.connection_string(&test_db.0), "sessions", 2)
    })
    .unwrap();
    db.connect().await.unwrap();
    for _ in 0..3 {
        let timeout: Option<String> = db
            .fetch_value("SELECT current_setting('statement_timeout')", &[])
            .await
            .unwrap();
        assert_eq!(timeout.as_deref(), Some("2500ms"), "session settings hold");
    }
    let stats = db.get_pool_stats().await.unwrap();
    assert_eq!(stats.pooler, Pooler::Session);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["pooler"], "session");
    db.disconnect().await.unwrap();
}

/// Named statements on the server connection a raw client reaches through PgBouncer.
async fn named_on_server(client: &tokio_postgres::Client) -> String {
    one(client, "SELECT count(*) FROM pg_prepared_statements").await
}

#[tokio::test]
async fn failed_describes_leave_nothing_named_on_the_server_connection() {
    let test_db = TestDb::create().await;
    // One server connection: whatever a describe leaves, the raw client below finds.
    let bouncer = bouncer(1);
    let url = bouncer.connection_string(&test_db.0);
    let db = AsyncDatabaseManager::new(pooled(&url, "failing", 2)).unwrap();
    db.connect().await.unwrap();
    db.execute(
        "CREATE TYPE failing.mood AS ENUM ('a', 'b');
         CREATE TABLE {{tables.t}} (id int, m failing.mood)",
        &[],
    )
    .await
    .unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for sql in [
        "SELEC m FROM {{tables.t}} WHERE id = $1",
        "SELECT m FROM {{tables.missing}} WHERE id = $1",
    ] {
        let err = db.fetch_all(sql, &[&1_i32]).await.unwrap_err();
        assert!(err.sqlstate().is_some(), "{err}");
        assert_eq!(named_on_server(&client).await, "0", "after {sql:?}");
        let tx = db.transaction().await.unwrap();
        let err = tx.fetch_all(sql, &[&1_i32]).await.unwrap_err();
        assert!(err.sqlstate().is_some(), "{err}");
        tx.rollback().await.unwrap();
        assert_eq!(
            named_on_server(&client).await,
            "0",
            "after {sql:?} in a transaction"
        );
    }
    let rows = db
        .fetch_all("SELECT m FROM {{tables.t}} WHERE id = $1", &[&1_i32])
        .await
        .expect("a good query after the failed ones");
    assert!(rows.is_empty());
    assert_eq!(named_on_server(&client).await, "0");
    db.disconnect().await.unwrap();
}
