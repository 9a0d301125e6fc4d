//! Transactions and savepoints: commit, rollback, drop, nesting, aborted transactions.

mod common;

use std::time::Duration;

use common::*;
use pgdbm::Error;

#[tokio::test]
async fn commit_and_rollback() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let tx = db.transaction().await.unwrap();
    let uid: Option<i32> = tx
        .fetch_value(
            "INSERT INTO {{tables.users}} (email) VALUES ($1) RETURNING id",
            &[&"a@x"],
        )
        .await
        .unwrap();
    assert!(uid.is_some());
    // Not visible outside before commit.
    assert_eq!(count_users(&db).await, 0);
    tx.commit().await.unwrap();
    assert_eq!(count_users(&db).await, 1);

    let tx = db.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"b@x"],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count_users(&db).await, 1, "nothing written after rollback");
}

#[tokio::test]
async fn dropping_an_uncommitted_transaction_rolls_back_and_releases_locks() {
    let app = unique("droptx");
    let (db, _g) = schema_db_with(|c| {
        c.max_connections = 2;
        c.server_settings = Some([("application_name".to_string(), app.clone())].into());
    })
    .await;
    users_table(&db).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ('keep@x')",
        &[],
    )
    .await
    .unwrap();
    {
        let tx = db.transaction().await.unwrap();
        tx.execute("UPDATE {{tables.users}} SET name = 'locked'", &[])
            .await
            .unwrap();
        tx.execute(
            "INSERT INTO {{tables.users}} (email) VALUES ('gone@x')",
            &[],
        )
        .await
        .unwrap();
    }
    // The row lock is released promptly: this update does not wait for a lock timeout.
    let updated = db
        .with_timeout(Duration::from_secs(3))
        .execute("UPDATE {{tables.users}} SET name = 'free'", &[])
        .await
        .unwrap();
    assert_eq!(updated, 1);
    assert_eq!(count_users(&db).await, 1);
    // No connection is left idle in a transaction.
    let app = db
        .fetch_value::<String>("SHOW application_name", &[])
        .await
        .unwrap()
        .unwrap();
    let idle_in_tx = admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' AND state LIKE 'idle in transaction%'"
    ))
    .await;
    assert_eq!(idle_in_tx.as_deref(), Some("0"));
}

#[tokio::test]
async fn nested_savepoints() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO {{tables.users}} (email, name) VALUES ('a@x', 'orig')",
        &[],
    )
    .await
    .unwrap();
    {
        let sp = tx.transaction().await.unwrap();
        assert!(sp.is_nested());
        sp.execute("UPDATE {{tables.users}} SET name = 'changed'", &[])
            .await
            .unwrap();
        sp.rollback().await.unwrap();
    }
    {
        let sp = tx.transaction().await.unwrap();
        sp.execute("INSERT INTO {{tables.users}} (email) VALUES ('b@x')", &[])
            .await
            .unwrap();
        {
            let inner = sp.transaction().await.unwrap();
            inner
                .execute("INSERT INTO {{tables.users}} (email) VALUES ('c@x')", &[])
                .await
                .unwrap();
            // dropped without commit: rolled back before the next statement
        }
        sp.commit().await.unwrap();
    }
    // A failing statement inside a savepoint does not doom the outer transaction.
    {
        let sp = tx.transaction().await.unwrap();
        let e = sp
            .execute("INSERT INTO {{tables.users}} (email) VALUES ('a@x')", &[])
            .await
            .unwrap_err();
        assert!(e.is_unique_violation());
        sp.rollback().await.unwrap();
    }
    tx.commit().await.unwrap();
    let rows: Vec<(String, Option<String>)> = db
        .fetch_all(
            "SELECT email, name FROM {{tables.users}} ORDER BY email",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("email").unwrap(), r.get("name").unwrap()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("a@x".to_string(), Some("orig".to_string())),
            ("b@x".to_string(), None)
        ]
    );
}

#[tokio::test]
async fn an_aborted_transaction_refuses_to_commit() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.users}} (email) VALUES ('a@x')", &[])
        .await
        .unwrap();
    let e = tx
        .execute("INSERT INTO {{tables.users}} (email) VALUES ('a@x')", &[])
        .await
        .unwrap_err();
    // Errors in a transaction are wrapped exactly like the manager's.
    assert!(matches!(e, Error::Query { .. }));
    assert!(e.is_unique_violation());
    let e = tx
        .execute("INSERT INTO {{tables.users}} (email) VALUES ('b@x')", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("25P02"));
    let e = tx.commit().await.unwrap_err();
    assert!(matches!(e, Error::Transaction(_)), "{e:?}");
    assert_eq!(count_users(&db).await, 0, "nothing committed");
}

#[tokio::test]
async fn commit_errors_keep_the_sqlstate() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.u}} (v int, CONSTRAINT u_v UNIQUE (v) DEFERRABLE INITIALLY DEFERRED)",
        &[],
    )
    .await
    .unwrap();
    let tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.u}} VALUES (1), (1)", &[])
        .await
        .unwrap();
    let e = tx.commit().await.unwrap_err();
    assert!(e.is_unique_violation(), "{e:?}");
    assert_eq!(
        db.fetch_value::<i64>("SELECT count(*) FROM {{tables.u}}", &[])
            .await
            .unwrap(),
        Some(0)
    );
}

#[tokio::test]
async fn transaction_has_the_query_methods_and_templates() {
    #[derive(serde::Deserialize)]
    struct U {
        email: String,
    }
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let tx = db.transaction().await.unwrap();
    tx.executemany(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        vec![("a@x",), ("b@x",)],
    )
    .await
    .unwrap();
    tx.copy_records_to_table("users", vec![("c@x",)], Some(&["email"]))
        .await
        .unwrap();
    let all: Vec<U> = tx
        .fetch_all_as_model("SELECT email FROM {{tables.users}} ORDER BY email", &[])
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
        ["a@x", "b@x", "c@x"]
    );
    let one = tx
        .fetch_one(
            "SELECT email FROM {{tables.users}} WHERE email = $1",
            &[&"b@x"],
        )
        .await
        .unwrap();
    assert!(one.is_some());
    assert!(tx.table_exists("users").await.unwrap());
    let row = tx.connection().query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    tx.rollback().await.unwrap();
    assert_eq!(count_users(&db).await, 0);
}

#[tokio::test]
async fn transactions_and_their_futures_are_send() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    assert_send_sync(&db);
    let task = tokio::spawn({
        let db = db.clone();
        async move {
            let tx = db.transaction().await?;
            tx.execute(
                "INSERT INTO {{tables.users}} (email) VALUES ($1)",
                &[&"spawned@x"],
            )
            .await?;
            {
                let sp = tx.transaction().await?;
                sp.execute(
                    "INSERT INTO {{tables.users}} (email) VALUES ($1)",
                    &[&"sp@x"],
                )
                .await?;
                sp.commit().await?;
            }
            tx.commit().await
        }
    });
    task.await.unwrap().unwrap();
    assert_eq!(count_users(&db).await, 2);
}
