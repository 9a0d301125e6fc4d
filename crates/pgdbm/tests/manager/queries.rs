//! Every query method, scripts, templates, streaming, concurrent tasks, execute_and_return_id.

use crate::common::*;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error, Record};
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
struct User {
    id: i32,
    email: String,
    name: Option<String>,
}

#[tokio::test]
async fn every_query_method() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;

    let id: i32 = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2);",
            &[&"a@x.org", &"A"],
        )
        .await
        .unwrap();
    assert_eq!(id, 1);
    // An explicit RETURNING is kept (case-insensitive), not doubled.
    let email: String = db
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ($1) returning email",
            &[&"b@x.org"],
        )
        .await
        .unwrap();
    assert_eq!(email, "b@x.org");

    let n = db
        .executemany(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            vec![("c@x.org", "C"), ("d@x.org", "D")],
        )
        .await
        .unwrap();
    assert_eq!(n, 2);

    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    assert_eq!(count, Some(4));
    let name: Option<String> = db
        .fetch_value_at(
            "SELECT email, name FROM {{tables.users}} WHERE id = $1",
            &[&id],
            1,
        )
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("A"));
    // None for no row, and None for NULL.
    let none: Option<String> = db
        .fetch_value("SELECT name FROM {{tables.users}} WHERE id = -1", &[])
        .await
        .unwrap();
    assert_eq!(none, None);
    let null: Option<String> = db
        .fetch_value("SELECT name FROM {{tables.users}} WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(null, None);
    let bad_col = db
        .fetch_value_at::<String>("SELECT 1", &[], 3)
        .await
        .unwrap_err();
    assert!(matches!(bad_col, Error::Decode { .. }), "{bad_col:?}");

    let row: Record = db
        .fetch_one("SELECT * FROM {{tables.users}} WHERE id = $1", &[&id])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.columns().collect::<Vec<_>>(),
        ["id", "email", "name", "age"]
    );
    assert_eq!(row.get::<String>("email").unwrap(), "a@x.org");
    assert_eq!(row.get::<i32>(0).unwrap(), 1);
    assert_eq!(row.get::<Option<i32>>("age").unwrap(), None);
    let wrong = row.get::<i64>("id").unwrap_err();
    match &wrong {
        Error::Decode {
            column, pg_type, ..
        } => {
            assert_eq!(column, "id");
            assert_eq!(pg_type, "int4");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        row.get::<i32>("missing"),
        Err(Error::Decode { .. })
    ));
    assert!(db
        .fetch_one("SELECT * FROM {{tables.users}} WHERE id = -1", &[])
        .await
        .unwrap()
        .is_none());

    let rows = db
        .fetch_all("SELECT * FROM {{tables.users}} ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": 1, "email": "a@x.org", "name": "A", "age": null})
    );

    let u: Option<User> = db
        .fetch_as_model("SELECT * FROM {{tables.users}} WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(
        u,
        Some(User {
            id: 1,
            email: "a@x.org".into(),
            name: Some("A".into())
        })
    );
    let all: Vec<User> = db
        .fetch_all_as_model("SELECT * FROM {{tables.users}} ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[1].name, None);
    let none: Option<User> = db
        .fetch_as_model("SELECT * FROM {{tables.users}} WHERE id = -1", &[])
        .await
        .unwrap();
    assert!(none.is_none());

    let copied = db
        .copy_records_to_table(
            "users",
            vec![("e@x.org", "E"), ("f@x.org", "F")],
            Some(&["email", "name"]),
        )
        .await
        .unwrap();
    assert_eq!(copied, 2);
    let deleted = db
        .execute(
            "DELETE FROM {{tables.users}} WHERE email LIKE $1",
            &[&"%f@x.org"],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);

    // Raw connection.
    let conn = db.acquire().await.unwrap();
    let r = conn.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 42);
    assert!(conn.backend_pid() > 0);
}

#[tokio::test]
async fn execute_without_params_runs_a_script() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.a}} (id int); CREATE TABLE {{tables.b}} (id int); INSERT INTO {{tables.a}} VALUES (1), (2)",
        &[],
    )
    .await
    .unwrap();
    assert!(db.table_exists("b").await.unwrap());
    assert_eq!(
        db.fetch_value::<i64>("SELECT count(*) FROM {{tables.a}}", &[])
            .await
            .unwrap(),
        Some(2)
    );
}

#[tokio::test]
async fn templates_render_and_camel_case_schema_is_quoted() {
    let schema = unique("CamelCase");
    let _g = SchemaGuard(schema.clone());
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        schema: Some(schema.clone()),
        ..config()
    })
    .unwrap();
    assert_eq!(
        db.prepare_query("SELECT * FROM {{tables.users}}").unwrap(),
        format!("SELECT * FROM \"{schema}\".users")
    );
    assert_eq!(
        db.prepare_query("SELECT {{schema}}").unwrap(),
        format!("SELECT \"{schema}\"")
    );
    assert_eq!(
        db.prepare_query("SELECT * FROM {{tables.other.t}}")
            .unwrap(),
        "SELECT * FROM \"other\".t"
    );
    db.connect().await.unwrap();
    users_table(&db).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"x@y"],
    )
    .await
    .unwrap();
    assert!(db.table_exists("users").await.unwrap());
    let schema_exists = admin_value(&format!(
        "SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"
    ))
    .await;
    assert_eq!(
        schema_exists.as_deref(),
        Some("1"),
        "mixed-case schema created with its exact name"
    );
    // Malformed placeholders never reach the server.
    for bad in [
        "SELECT * FROM {{tables.bad; DROP.users}}",
        "SELECT * FROM {{tables.a-b}}",
        "SELECT {{schema",
    ] {
        assert!(
            matches!(db.execute(bad, &[]).await, Err(Error::Schema(_))),
            "{bad}"
        );
    }
    let no_schema = AsyncDatabaseManager::new(config()).unwrap();
    assert_eq!(
        no_schema
            .prepare_query("SELECT * FROM {{tables.users}}")
            .unwrap(),
        "SELECT * FROM users"
    );
    assert_eq!(
        no_schema
            .prepare_query("SELECT * FROM {{schema}}.users")
            .unwrap(),
        "SELECT * FROM users"
    );
}

#[tokio::test]
async fn concurrent_tasks_share_one_manager() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 3).await;
    db.execute("CREATE TABLE {{tables.n}} (v int)", &[])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.execute("INSERT INTO {{tables.n}} VALUES ($1)", &[&i])
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sum: Option<i64> = db
        .fetch_value("SELECT sum(v) FROM {{tables.n}}", &[])
        .await
        .unwrap();
    assert_eq!(sum, Some((0..20).sum()));
    let stats = db.get_pool_stats().await.unwrap();
    assert!(stats.size <= 3);
}

#[tokio::test]
async fn streaming_keeps_rows_flowing() {
    use futures_util::TryStreamExt;
    let (db, _g) = schema_db().await;
    let stream = db
        .fetch_stream("SELECT g FROM generate_series(1, 5000) g", &[])
        .await
        .unwrap();
    let rows: Vec<Record> = stream.try_collect().await.unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999].get::<i32>(0).unwrap(), 5000);
}

#[tokio::test]
async fn execute_and_return_id_ignores_returning_in_literals_and_comments() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.notes}} (id serial PRIMARY KEY, note text, \"returning\" int)",
        &[],
    )
    .await
    .unwrap();
    let count = || async {
        db.fetch_value::<i64>("SELECT count(*) FROM {{tables.notes}}", &[])
            .await
            .unwrap()
            .unwrap()
    };
    for (k, sql) in [
        "INSERT INTO {{tables.notes}} (note) VALUES ('returning soon')",
        "INSERT INTO {{tables.notes}} (note) VALUES ($$returning$$)",
        "INSERT INTO {{tables.notes}} (note) VALUES (E'it\\'s returning')",
        "INSERT INTO {{tables.notes}} (\"returning\") VALUES (1)",
        "INSERT INTO {{tables.notes}} (note) /* returning */ VALUES ('x')",
        "INSERT INTO {{tables.notes}} (note) VALUES ('x') -- returning later",
        // A RETURNING inside a CTE is not the statement's own clause.
        "WITH d AS (DELETE FROM {{tables.notes}} WHERE false RETURNING id) \
         INSERT INTO {{tables.notes}} (note) SELECT 'w'",
    ]
    .into_iter()
    .enumerate()
    {
        let id: i32 = db
            .execute_and_return_id(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(id, k as i32 + 1, "{sql}");
        assert_eq!(count().await, k as i64 + 1, "{sql}: one row per call");
    }
    // A top-level RETURNING of its own is kept.
    let note: String = db
        .execute_and_return_id(
            "INSERT INTO {{tables.notes}} (note) VALUES ('z') RETURNING note",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(note, "z");
}
