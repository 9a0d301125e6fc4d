//! `pipeline()`: statements sent together on one connection, each with its own result.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pgdbm::{AsyncDatabaseManager, ErrorKind, Record};

#[tokio::test]
async fn results_come_back_in_order_each_typed() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email, name) VALUES ('a@x', 'A'), ('b@x', 'B')",
        &[],
    )
    .await
    .unwrap();
    let email = "a@x".to_owned();
    let age = 41_i32;
    let mut p = db.pipeline();
    let a = p.fetch_one("SELECT * FROM {{tables.users}} WHERE email = $1", &[&email]);
    let b = p.fetch_value::<i64>("SELECT count(*) FROM {{tables.users}}", &[]);
    let c = p.execute(
        "UPDATE {{tables.users}} SET age = $1 WHERE email = $2",
        &[&age, &email],
    );
    let d = p.fetch_all("SELECT email FROM {{tables.users}} ORDER BY email", &[]);
    let e = p.fetch_one("SELECT * FROM {{tables.users}} WHERE email = 'nobody'", &[]);
    let f = p.fetch_all_as::<(String, Option<i32>)>(
        "SELECT email, age FROM {{tables.users}} ORDER BY email",
        &[],
    );
    assert_eq!(p.len(), 6);
    let r = p.run().await.unwrap();
    assert_eq!(r.len(), 6);
    assert!(r.failed().is_empty());
    let row: Option<Record> = r.get(a).unwrap();
    assert_eq!(row.unwrap().get::<String>("name").unwrap(), "A");
    assert_eq!(r.get(b).unwrap(), Some(2));
    let n: u64 = r.get(c).unwrap();
    assert_eq!(n, 1);
    let emails: Vec<String> = r
        .get(d)
        .unwrap()
        .iter()
        .map(|r| r.get("email").unwrap())
        .collect();
    assert_eq!(emails, ["a@x", "b@x"]);
    assert!(r.get(e).unwrap().is_none());
    // Statements run in order: the UPDATE before the later SELECT.
    assert_eq!(
        r.get(f).unwrap(),
        vec![("a@x".to_owned(), Some(41)), ("b@x".to_owned(), None)]
    );
}

#[tokio::test]
async fn every_statement_runs_on_one_connection() {
    let (db, _g) = schema_db().await;
    let mut p = db.pipeline();
    let pids: Vec<_> = (0..8)
        .map(|_| p.fetch_value::<i32>("SELECT pg_backend_pid()", &[]))
        .collect();
    let r = p.run().await.unwrap();
    let pids: Vec<i32> = pids
        .into_iter()
        .map(|h| r.get(h).unwrap().unwrap())
        .collect();
    assert!(pids.iter().all(|&p| p == pids[0]), "{pids:?}");
}

#[tokio::test]
async fn outside_a_transaction_a_failure_is_its_own_and_the_rest_commit() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let mut p = db.pipeline();
    let ok1 = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"one@x"],
    );
    let dup = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"one@x"],
    );
    let bad = p.fetch_one("SELEC 1", &[]);
    let ok2 = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"two@x"],
    );
    let r = p.run().await.unwrap();
    assert_eq!(r.failed(), vec![1, 2]);
    assert_eq!(r.get(ok1).unwrap(), 1);
    let e = r.get(dup).unwrap_err();
    assert!(e.is_unique_violation(), "{e}");
    assert_eq!(r.get(bad).unwrap_err().kind(), ErrorKind::SyntaxError);
    assert_eq!(r.get(ok2).unwrap(), 1);
    assert_eq!(count_users(&db).await, 2);
}

#[tokio::test]
async fn in_a_transaction_the_first_failure_aborts_the_rest_and_they_say_so() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let tx = db.transaction().await.unwrap();
    let mut p = tx.pipeline();
    let ok = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"one@x"],
    );
    let dup = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"one@x"],
    );
    let after = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"two@x"],
    );
    let read = p.fetch_value::<i64>("SELECT count(*) FROM {{tables.users}}", &[]);
    let r = p.run().await.unwrap();
    assert_eq!(r.get(ok).unwrap(), 1);
    assert!(r.get(dup).unwrap_err().is_unique_violation());
    let e = r.get(after).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PipelineAborted, "{e}");
    assert!(
        e.to_string()
            .contains("statement 2 of the pipeline did not run"),
        "{e}"
    );
    assert!(e.to_string().contains("statement 1 failed first"), "{e}");
    assert!(matches!(
        r.get(read).unwrap_err(),
        pgdbm::Error::PipelineAborted {
            statement: 3,
            failed: 1
        }
    ));
    // The transaction is aborted: committing it fails, and nothing was written.
    assert!(tx.commit().await.is_err());
    assert_eq!(count_users(&db).await, 0);
}

#[tokio::test]
async fn a_transaction_pipeline_commits_with_the_transaction() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let tx = db.transaction().await.unwrap();
    let ids = [0_i32, 1, 2, 3, 4];
    let mut p = tx.pipeline();
    for i in &ids {
        let _ = p.execute(
            "INSERT INTO {{tables.users}} (email) VALUES ('u' || $1::int)",
            &[i],
        );
    }
    let count = p.fetch_value::<i64>("SELECT count(*) FROM {{tables.users}}", &[]);
    let r = p.run().await.unwrap();
    assert_eq!(r.get(count).unwrap(), Some(5));
    // Not visible outside before the commit.
    assert_eq!(count_users(&db).await, 0);
    tx.commit().await.unwrap();
    assert_eq!(count_users(&db).await, 5);

    let tx = db.transaction().await.unwrap();
    let mut p = tx.pipeline();
    let _ = p.execute("DELETE FROM {{tables.users}}", &[]);
    p.run().await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count_users(&db).await, 5);
}

/// A timeout cancels the statement running at the deadline and each one that starts after it
/// (they were sent already); the error lists exactly the statements that completed.
#[tokio::test]
async fn a_timeout_cancels_the_pipeline_and_names_what_completed() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    users_table(&db).await;
    let slow = db.with_timeout(Duration::from_millis(300));
    let mut p = slow.pipeline();
    let _ = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"before@x"],
    );
    let _ = p.fetch_value::<i32>("SELECT 1", &[]);
    let _ = p.execute("SELECT pg_sleep(30)", &[]);
    let _ = p.fetch_value::<i32>("SELECT 1 FROM pg_sleep(30)", &[]);
    let _ = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"after@x"],
    );
    let started = Instant::now();
    let e = p.run().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(e.is_timeout(), "{e}");
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let completed = e.completed_statements().unwrap().to_vec();
    assert_eq!(&completed[..2], &[0, 1], "{e}");
    assert!(!completed.contains(&2) && !completed.contains(&3), "{e}");
    assert!(e.to_string().contains("statements 0, 1"), "{e}");
    let emails: Vec<String> = db
        .fetch_all("SELECT email FROM {{tables.users}} ORDER BY email", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("email").unwrap())
        .collect();
    // What the error says completed is what was written.
    assert!(emails.contains(&"before@x".to_owned()));
    assert_eq!(
        emails.contains(&"after@x".to_owned()),
        completed.contains(&4),
        "{e}; {emails:?}"
    );
    let sleeping: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' \
             AND state = 'active' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        sleeping,
        Some(0),
        "both slow statements were cancelled on the server"
    );
    // The pool's one connection answers at once.
    served_at_once(&db).await;
}

/// Inside a transaction the timeout aborts it; nothing it wrote survives.
#[tokio::test]
async fn a_timeout_in_a_transaction_leaves_nothing_written() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    users_table(&db).await;
    {
        let slow = db.with_timeout(Duration::from_millis(200));
        let tx = slow.transaction().await.unwrap();
        let mut p = tx.pipeline();
        let _ = p.execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&"in-tx@x"],
        );
        let _ = p.execute("SELECT pg_sleep(30)", &[]);
        let _ = p.execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&"later@x"],
        );
        let e = p.run().await.unwrap_err();
        assert!(e.is_timeout(), "{e}");
        assert_eq!(e.completed_statements(), Some(&[0][..]), "{e}");
        assert!(tx.commit().await.is_err());
    }
    assert_eq!(count_users(&db).await, 0);
    served_at_once(&db).await;
}

#[tokio::test]
async fn templates_and_bad_templates_are_per_statement() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let mut p = db.pipeline();
    let bad = p.fetch_all("SELECT * FROM {{tables.no such}}", &[]);
    let good = p.fetch_value::<i64>("SELECT count(*) FROM {{tables.users}}", &[]);
    let r = p.run().await.unwrap();
    assert!(matches!(r.get(bad).unwrap_err(), pgdbm::Error::Schema(_)));
    assert_eq!(r.get(good).unwrap(), Some(0));
}

#[tokio::test]
async fn a_handle_of_another_pipeline_is_refused() {
    let (db, _g) = schema_db().await;
    let mut p1 = db.pipeline();
    let h1 = p1.fetch_value::<i32>("SELECT 1", &[]);
    let mut p2 = db.pipeline();
    let _h2 = p2.fetch_value::<i32>("SELECT 2", &[]);
    let r2 = p2.run().await.unwrap();
    let e = r2.get(h1).unwrap_err();
    assert!(e.to_string().contains("another pipeline"), "{e}");
    let empty = db.pipeline().run().await.unwrap();
    assert!(empty.is_empty());
}

#[tokio::test]
async fn wrong_parameter_types_fail_that_statement_only() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let mut p = db.pipeline();
    let wrong = p.fetch_one("SELECT * FROM {{tables.users}} WHERE id = $1", &[&"seven"]);
    let count = p.fetch_value::<i64>("SELECT count(*) FROM {{tables.users}}", &[]);
    let r = p.run().await.unwrap();
    let e = r.get(wrong).unwrap_err();
    assert!(e.to_string().contains("int4"), "{e}");
    assert_eq!(r.get(count).unwrap(), Some(0));
}

/// With a `with_settings` view, each statement runs in a transaction of its own that starts
/// with the view's settings, and nothing of them stays on the session.
#[tokio::test]
async fn a_settings_view_applies_to_each_statement() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let view = db.with_settings(&[("app.tenant_id", "42")]);
    let mut p = view.pipeline();
    let a = p.fetch_value::<String>("SELECT current_setting('app.tenant_id')", &[]);
    let fails = p.fetch_value::<i32>("SELECT 1/0", &[]);
    let b = p.fetch_value::<String>("SELECT current_setting('app.tenant_id')", &[]);
    let r = p.run().await.unwrap();
    assert_eq!(r.get(a).unwrap().as_deref(), Some("42"));
    assert_eq!(r.get(fails).unwrap_err().code(), Some("22012"));
    assert_eq!(r.get(b).unwrap().as_deref(), Some("42"));
    let after: Option<String> = db
        .fetch_value("SELECT current_setting('app.tenant_id', true)", &[])
        .await
        .unwrap();
    assert!(matches!(after.as_deref(), None | Some("")), "{after:?}");
}

/// A hostile statement in a pipeline is cleaned up like one sent alone.
#[tokio::test]
async fn session_changes_in_a_pipeline_do_not_reach_the_next_caller() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let mut p = db.pipeline();
    let _ = p.execute("SET statement_timeout = '1234ms'", &[]);
    let _ = p.execute("BEGIN", &[]);
    let _ = p.execute("CREATE TEMP TABLE leftover (x int)", &[]);
    p.run().await.unwrap();
    let timeout: Option<String> = db.fetch_value("SHOW statement_timeout", &[]).await.unwrap();
    assert_ne!(timeout.as_deref(), Some("1234ms"));
    let in_tx: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_class WHERE relname = 'leftover' AND relpersistence = 't'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(in_tx, Some(0));
}

/// Dropping a pipeline's future at any moment leaves no connection busy and nothing written
/// halfway inside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_at_random_moments_the_pool_stays_clean() {
    let (db, _g) = schema_db_with(pool_of(2)).await;
    users_table(&db).await;
    let mut rng = Rng(7);
    for i in 0..60 {
        let cut = Duration::from_micros(rng.below(3_000));
        let db2 = db.clone();
        let _ = tokio::time::timeout(cut, async move {
            let tx = db2.transaction().await?;
            let mut p = tx.pipeline();
            let _ = p.execute(
                "INSERT INTO {{tables.users}} (email) VALUES ('r' || $1::int)",
                &[&i],
            );
            let _ = p.fetch_value::<i32>("SELECT 1 FROM pg_sleep(0.001)", &[]);
            p.run().await?;
            tx.rollback().await
        })
        .await;
    }
    // Rolled back or cut off: nothing was written either way.
    assert_eq!(count_users(&db).await, 0);
    served_at_once(&db).await;
}

/// The path the issue names: with 1 ms each way between client and server, ten statements in
/// one pipeline take one round trip, not ten.
#[tokio::test]
async fn through_a_slow_network_a_pipeline_is_one_round_trip() {
    let (_proxy, url) = proxied_url(Duration::from_millis(20)).await;
    let db = AsyncDatabaseManager::new(pgdbm::DatabaseConfig {
        connection_string: Some(url),
        min_connections: 1,
        max_connections: 1,
        ..Default::default()
    })
    .unwrap();
    db.connect().await.unwrap();
    // Warm: the statement is prepared once.
    for _ in 0..2 {
        db.fetch_value::<i32>("SELECT $1::int + 1", &[&1_i32])
            .await
            .unwrap();
    }
    let started = Instant::now();
    for i in 0..10_i32 {
        db.fetch_value::<i32>("SELECT $1::int + 1", &[&i])
            .await
            .unwrap();
    }
    let sequential = started.elapsed();
    let started = Instant::now();
    let mut p = db.pipeline();
    let values = [0_i32, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    let handles: Vec<_> = values
        .iter()
        .map(|v| p.fetch_value::<i32>("SELECT $1::int + 1", &[v]))
        .collect();
    let r = p.run().await.unwrap();
    let pipelined = started.elapsed();
    for (h, v) in handles.into_iter().zip(values) {
        assert_eq!(r.get(h).unwrap(), Some(v + 1));
    }
    // Ten round trips of 40 ms against one.
    assert!(sequential >= Duration::from_millis(400), "{sequential:?}");
    assert!(
        pipelined < Duration::from_millis(160),
        "pipelined {pipelined:?}, sequential {sequential:?}"
    );
    db.disconnect().await.unwrap();
}
