//! executemany and COPY: counts, all-or-nothing, precise errors, healthy pool afterwards.

mod common;

use common::*;
use pgdbm::types::ToSql;
use pgdbm::{Error, Value};

#[tokio::test]
async fn executemany_is_all_or_nothing() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    users_table(&db).await;
    let rows: Vec<(String, String)> = (0..500)
        .map(|i| (format!("u{i}@x"), format!("U{i}")))
        .collect();
    let mut bad = rows.clone();
    bad[250].0 = "u10@x".into(); // duplicate of row 10
    let e = db
        .executemany(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            bad,
        )
        .await
        .unwrap_err();
    assert!(e.is_unique_violation(), "{e:?}");
    match &e {
        Error::Query { params, .. } => assert!(params.starts_with("row 250:"), "{params}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        count_users(&db).await,
        0,
        "nothing written after a failure in the middle"
    );
    // The single connection is healthy and not left in a transaction.
    let n = db
        .executemany(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            rows,
        )
        .await
        .unwrap();
    assert_eq!(n, 500);
    assert_eq!(count_users(&db).await, 500);
    // An empty batch is fine.
    let empty: Vec<(String,)> = Vec::new();
    assert_eq!(
        db.executemany("INSERT INTO {{tables.users}} (email) VALUES ($1)", empty)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn executemany_wrong_arity_and_type() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    users_table(&db).await;
    let e = db
        .executemany(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            vec![("a@x",)],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Query { .. }), "{e:?}");
    let e = db
        .executemany(
            "INSERT INTO {{tables.users}} (email, age) VALUES ($1, $2)",
            vec![("a@x", "not a number")],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Query { .. }), "{e:?}");
    assert_eq!(count_users(&db).await, 0);
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
}

#[tokio::test]
async fn rows_as_wide_tuples_and_boxed_vectors() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.wide}} (c1 int, c2 int, c3 int, c4 int, c5 int, c6 int, c7 int, c8 int, c9 int, c10 int, c11 int, c12 text)",
        &[],
    )
    .await
    .unwrap();
    let row = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, "twelve");
    db.executemany(
        "INSERT INTO {{tables.wide}} VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
        vec![row, row],
    )
    .await
    .unwrap();
    db.copy_records_to_table("wide", vec![row], None)
        .await
        .unwrap();
    let boxed: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(1),
        Box::new(2),
        Box::new(3),
        Box::new(4),
        Box::new(5),
        Box::new(6),
        Box::new(7),
        Box::new(8),
        Box::new(9),
        Box::new(10),
        Box::new(11),
        Box::new("boxed".to_string()),
    ];
    db.copy_records_to_table("wide", vec![boxed], None)
        .await
        .unwrap();
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.wide}} WHERE c11 = 11", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(4));
}

#[tokio::test]
async fn copy_counts_and_uses_the_table_types() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.events}} (id int8, at timestamptz, payload jsonb, tags text[], amount numeric, note text)",
        &[],
    )
    .await
    .unwrap();
    let now = chrono::Utc::now();
    let records: Vec<Vec<Value>> = (0..10_000)
        .map(|i| {
            vec![
                Value::Int8(i),
                Value::TimestampTz(now),
                Value::Json(serde_json::json!({"i": i})),
                Value::Array(vec![Value::Text("a".into())]),
                Value::Numeric("1.50".parse().unwrap()),
                if i % 2 == 0 {
                    Value::Null
                } else {
                    Value::Text("odd".into())
                },
            ]
        })
        .collect();
    let n = db
        .copy_records_to_table("events", records, None)
        .await
        .unwrap();
    assert_eq!(n, 10_000);
    let sum: Option<pgdbm::types::Numeric> = db
        .fetch_value("SELECT sum(amount) FROM {{tables.events}}", &[])
        .await
        .unwrap();
    assert_eq!(sum.unwrap().as_str(), "15000.00");
    let nulls: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM {{tables.events}} WHERE note IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(nulls, Some(5000));
    // schema.table form.
    let schema = db.schema().unwrap().to_owned();
    let n = db
        .copy_records_to_table(&format!("{schema}.events"), vec![(7_i64,)], Some(&["id"]))
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn copy_errors_are_precise_and_write_nothing() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    users_table(&db).await;
    // A missing column.
    let e = db
        .copy_records_to_table("users", vec![("a@x", "A")], Some(&["email", "nope"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("42703"), "{e:?}");
    // An invalid column or table name never reaches the server.
    let e = db
        .copy_records_to_table("users", vec![("a@x",)], Some(&["email; DROP"]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Schema(_)));
    let e = db
        .copy_records_to_table("users\"; --", vec![("a@x",)], None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Schema(_)));
    // A missing table.
    let e = db
        .copy_records_to_table("missing", vec![("a@x",)], Some(&["email"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("42P01"));
    // A wrong value type halfway through: the whole COPY is rolled back.
    let mut records: Vec<Vec<Value>> = (0..100)
        .map(|i| vec![Value::Text(format!("u{i}@x")), Value::Int4(i)])
        .collect();
    records[60][1] = Value::Text("not an int".into());
    let e = db
        .copy_records_to_table("users", records, Some(&["email", "age"]))
        .await
        .unwrap_err();
    match &e {
        Error::Query { params, .. } => assert!(params.starts_with("record 60:"), "{params}"),
        other => panic!("{other:?}"),
    }
    // A record with the wrong number of values.
    let e = db
        .copy_records_to_table("users", vec![("a@x", "A", 3)], Some(&["email", "name"]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e:?}");
    // A server-side failure (constraint) rolls back everything.
    let e = db
        .copy_records_to_table(
            "users",
            vec![("a@x", -1), ("b@x", 1)],
            Some(&["email", "age"]),
        )
        .await
        .unwrap_err();
    assert!(e.is_check_violation(), "{e:?}");
    assert_eq!(count_users(&db).await, 0);
    // The single pooled connection still works.
    let n = db
        .copy_records_to_table("users", vec![("ok@x", 1)], Some(&["email", "age"]))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(count_users(&db).await, 1);
}
