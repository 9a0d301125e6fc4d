//! Transaction options (isolation level, read-only, deferrable) and the retry helper for
//! serialization failures and deadlocks.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pgdbm::{Error, ErrorKind, IsolationLevel, RetryPolicy, TransactionOptions};

async fn show(tx: &pgdbm::Transaction<'_>, setting: &str) -> String {
    tx.fetch_value::<String>(&format!("SHOW {setting}"), &[])
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn isolation_level_is_set_by_begin() {
    let (db, _g) = schema_db().await;
    for (level, shown) in [
        (IsolationLevel::ReadCommitted, "read committed"),
        (IsolationLevel::RepeatableRead, "repeatable read"),
        (IsolationLevel::Serializable, "serializable"),
    ] {
        let tx = db
            .transaction_with(TransactionOptions::new().isolation_level(level))
            .await
            .unwrap();
        assert_eq!(show(&tx, "transaction_isolation").await, shown);
        assert_eq!(show(&tx, "transaction_read_only").await, "off");
        // A savepoint runs with its parent's options.
        let sp = tx.transaction().await.unwrap();
        assert_eq!(show(&sp, "transaction_isolation").await, shown);
        sp.commit().await.unwrap();
        tx.commit().await.unwrap();
    }
    // The timed view takes options too.
    let tx = db
        .with_timeout(Duration::from_secs(5))
        .transaction_with(TransactionOptions::new().isolation_level(IsolationLevel::Serializable))
        .await
        .unwrap();
    assert_eq!(show(&tx, "transaction_isolation").await, "serializable");
    tx.rollback().await.unwrap();
    // And a plain transaction keeps the session default.
    let tx = db.transaction().await.unwrap();
    assert_eq!(show(&tx, "transaction_isolation").await, "read committed");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn read_only_deferrable_transaction_refuses_writes() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let options = TransactionOptions::new()
        .isolation_level(IsolationLevel::Serializable)
        .read_only(true)
        .deferrable(true);
    let tx = db.transaction_with(options).await.unwrap();
    assert_eq!(show(&tx, "transaction_read_only").await, "on");
    assert_eq!(show(&tx, "transaction_deferrable").await, "on");
    let err = tx
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&"ro@x"],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("25006"), "{err}");
    assert!(matches!(err, Error::Query { .. }));
    // The failed write aborted the transaction: commit reports it and writes nothing.
    assert!(matches!(tx.commit().await, Err(Error::Transaction(_))));
    assert_eq!(count_users(&db).await, 0);
}

fn serializable() -> TransactionOptions {
    TransactionOptions::new().isolation_level(IsolationLevel::Serializable)
}

/// The classic write skew: each operation reads the sum of the table and inserts a row based
/// on it. Run concurrently under SERIALIZABLE, some runs fail with 40001 and are retried; in
/// the end every operation is applied exactly once and the rows read as a serial history.
#[tokio::test]
async fn write_skew_is_retried_until_serializable() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 4).await;
    db.execute(
        "CREATE TABLE {{tables.ledger}} (op int PRIMARY KEY, amount int NOT NULL, seen int NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    const TASKS: i32 = 3;
    const OPS: i32 = 12;
    let attempts = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        let attempts = attempts.clone();
        // Spawned: the helper's future is Send.
        tasks.push(tokio::spawn(async move {
            for i in 0..OPS {
                let op = t * OPS + i;
                let policy = RetryPolicy::new()
                    .max_attempts(100)
                    .initial_delay(Duration::from_millis(1))
                    .max_delay(Duration::from_millis(20));
                let attempts = &attempts;
                let seen: i64 = db
                    .transaction_with_retry(serializable(), policy, |tx| {
                        Box::pin(async move {
                            attempts.fetch_add(1, Ordering::Relaxed);
                            let seen: i64 = tx
                                .fetch_value(
                                    "SELECT coalesce(sum(amount), 0)::int8 FROM {{tables.ledger}}",
                                    &[],
                                )
                                .await?
                                .unwrap_or(0);
                            // Let the other tasks read the same sum before this one writes.
                            tokio::time::sleep(Duration::from_millis(3)).await;
                            tx.execute(
                            "INSERT INTO {{tables.ledger}} (op, amount, seen) VALUES ($1, 1, $2)",
                            &[&op, &(seen as i32)],
                        )
                        .await?;
                            Ok(seen)
                        })
                    })
                    .await
                    .unwrap();
                assert!(seen >= 0);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = TASKS * OPS;
    let rows = db
        .fetch_all("SELECT op, seen FROM {{tables.ledger}} ORDER BY seen", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), total as usize, "every operation applied once");
    // A serial history: the k-th committed operation saw exactly k earlier ones. Write skew
    // would show two operations that saw the same sum.
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<i32>("seen").unwrap(), k as i32);
    }
    let ran = attempts.load(Ordering::Relaxed);
    assert!(
        ran > total as u32,
        "at least one serialization failure was retried ({ran} runs for {total} operations)"
    );
}

#[tokio::test]
async fn other_errors_are_not_retried() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    db.execute("INSERT INTO {{tables.users}} (email) VALUES ('dup@x')", &[])
        .await
        .unwrap();
    let runs = &AtomicU32::new(0);
    let err = db
        .transaction_with_retry(serializable(), RetryPolicy::default(), |tx| {
            Box::pin(async move {
                runs.fetch_add(1, Ordering::Relaxed);
                tx.execute("INSERT INTO {{tables.users}} (email) VALUES ('new@x')", &[])
                    .await?;
                tx.execute("INSERT INTO {{tables.users}} (email) VALUES ('dup@x')", &[])
                    .await?;
                Ok(())
            })
        })
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    assert!(matches!(err, Error::Query { .. }), "returned as is: {err}");
    assert_eq!(runs.load(Ordering::Relaxed), 1);
    assert_eq!(count_users(&db).await, 1, "the failed run was rolled back");
}

#[tokio::test]
async fn retries_stop_after_max_attempts_with_the_last_error() {
    let (db, _g) = schema_db().await;
    let runs = &AtomicU32::new(0);
    let policy = RetryPolicy::new()
        .max_attempts(3)
        .initial_delay(Duration::from_millis(1));
    let err = db
        .transaction_with_retry(TransactionOptions::new(), policy, |tx| {
            Box::pin(async move {
                runs.fetch_add(1, Ordering::Relaxed);
                tx.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'always' USING ERRCODE = '40P01'; END $$",
                    &[],
                )
                .await?;
                Ok(())
            })
        })
        .await
        .unwrap_err();
    assert_eq!(runs.load(Ordering::Relaxed), 3);
    match &err {
        Error::RetriesExhausted { attempts, source } => {
            assert_eq!(*attempts, 3);
            assert_eq!(source.code(), Some("40P01"));
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::DeadlockDetected);
    assert!(err.to_string().contains("3 attempt(s)"), "{err}");
}

/// A serialization failure raised only at COMMIT (here by a deferred constraint trigger, the
/// way SERIALIZABLE reports some conflicts) is retried too.
#[tokio::test]
async fn failure_at_commit_is_retried() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.c}} (id int); \
         CREATE FUNCTION {{schema}}.fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF current_setting('app.fail', true) = 'yes' THEN \
           RAISE EXCEPTION 'conflict at commit' USING ERRCODE = '40001'; END IF; RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER late AFTER INSERT ON {{tables.c}} \
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {{schema}}.fail_at_commit()",
        &[],
    )
    .await
    .unwrap();
    let runs = &AtomicU32::new(0);
    let policy = RetryPolicy::new().initial_delay(Duration::from_millis(1));
    let run = db
        .transaction_with_retry(TransactionOptions::new(), policy, |tx| {
            Box::pin(async move {
                let run = runs.fetch_add(1, Ordering::Relaxed) + 1;
                if run == 1 {
                    tx.execute("SET LOCAL app.fail = 'yes'", &[]).await?;
                }
                tx.execute("INSERT INTO {{tables.c}} VALUES ($1)", &[&(run as i32)])
                    .await?;
                Ok(run)
            })
        })
        .await
        .unwrap();
    assert_eq!(run, 2);
    let ids: Vec<i32> = db
        .fetch_all("SELECT id FROM {{tables.c}}", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("id").unwrap())
        .collect();
    assert_eq!(ids, vec![2], "only the committed run's row is there");
}

/// A real deadlock: two transactions update two rows in opposite orders. The server aborts one
/// with 40P01; the helper runs it again and both updates end up applied exactly once.
#[tokio::test]
async fn a_real_deadlock_is_retried() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.acct}} (id int PRIMARY KEY, n int NOT NULL); \
         INSERT INTO {{tables.acct}} VALUES (1, 0), (2, 0)",
        &[],
    )
    .await
    .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let runs = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for (first, second) in [(1_i32, 2_i32), (2, 1)] {
        let (db, barrier, runs) = (db.clone(), barrier.clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            let (barrier, runs) = (&barrier, &runs);
            let mut mine = 0;
            let mine = &mut mine;
            db.transaction_with_retry(
                TransactionOptions::new(),
                RetryPolicy::new().initial_delay(Duration::from_millis(1)),
                |tx| {
                    *mine += 1;
                    let first_run = *mine == 1;
                    Box::pin(async move {
                        runs.fetch_add(1, Ordering::Relaxed);
                        let bump = "UPDATE {{tables.acct}} SET n = n + 1 WHERE id = $1";
                        tx.execute(bump, &[&first]).await?;
                        if first_run {
                            // Both hold their first row before either asks for its second.
                            barrier.wait().await;
                        }
                        tx.execute(bump, &[&second]).await?;
                        Ok(())
                    })
                },
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let rows = db
        .fetch_all("SELECT n FROM {{tables.acct}} ORDER BY id", &[])
        .await
        .unwrap();
    let n: Vec<i32> = rows.iter().map(|r| r.get("n").unwrap()).collect();
    assert_eq!(n, vec![2, 2], "each transaction applied exactly once");
    // At least one deadlock victim was run again. (A retry can race the survivor for the freed
    // row and deadlock once more, so more runs are possible.)
    let runs = runs.load(Ordering::Relaxed);
    assert!(runs >= 3, "a deadlock victim was retried ({runs} runs)");
}

/// The helper's future dropped mid-attempt (here by a timeout around it): nothing is written
/// and no connection stays in a transaction.
#[tokio::test]
async fn dropping_the_helper_rolls_back() {
    let app = unique("retrydrop");
    let (db, _g) = schema_db_with(|c| {
        c.server_settings = Some([("application_name".to_string(), app.clone())].into());
    })
    .await;
    users_table(&db).await;
    let dropped = tokio::time::timeout(
        Duration::from_millis(100),
        db.transaction_with_retry(serializable(), RetryPolicy::default(), |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO {{tables.users}} (email) VALUES ('gone@x')",
                    &[],
                )
                .await?;
                tx.execute("SELECT pg_sleep(2)", &[]).await?;
                Ok(())
            })
        }),
    )
    .await;
    assert!(dropped.is_err());
    assert_eq!(count_users(&db).await, 0);
    let started = std::time::Instant::now();
    loop {
        let open = admin_value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' \
             AND state <> 'idle'"
        ))
        .await
        .unwrap();
        if open == "0" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{open} connection(s) still busy or in a transaction"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
