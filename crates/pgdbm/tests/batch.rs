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
        // Row 250 went in the multi-row INSERT of rows 128..=255; the server's detail names
        // the key.
        Error::Query { params, .. } => assert_eq!(params, "one of rows 128..=255"),
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
async fn executemany_multi_row_inserts_write_every_row_once() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    db.execute(
        "CREATE TABLE {{tables.items}} (id int PRIMARY KEY, name text NOT NULL, \
         price numeric(10, 2), made date)",
        &[],
    )
    .await
    .unwrap();
    // 2,500 = 2 x 1024 + 3 x 128 + 4 x 16 + 4: every chunk size and the row-by-row rest.
    let day = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let rows: Vec<(i32, String, Option<f64>, chrono::NaiveDate)> = (0..2500)
        .map(|i| {
            (
                i,
                format!("item {i}"),
                (i % 3 != 0).then_some(i as f64 / 4.0),
                day,
            )
        })
        .collect();
    let n = db
        .executemany(
            "INSERT INTO {{tables.items}} (id, name, price, made) VALUES ($1, $2, $3::float8, $4)",
            &rows,
        )
        .await
        .unwrap();
    assert_eq!(n, 2500);
    let n = db
        .executemany(
            "insert into {{tables.items}} (id, name, made) values ($1, $2, $3);",
            (2500..2517).map(|i| (i, "tail", day)),
        )
        .await
        .unwrap();
    assert_eq!(n, 17);
    let summary = db
        .fetch_one(
            "SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids, sum(id)::int8 AS s, \
             count(price)::int AS priced, min(made) = max(made) AS one_day FROM {{tables.items}}",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.get::<i32>("n").unwrap(), 2517);
    assert_eq!(summary.get::<i32>("ids").unwrap(), 2517);
    assert_eq!(summary.get::<i64>("s").unwrap(), (0..2517i64).sum::<i64>());
    assert_eq!(summary.get::<i32>("priced").unwrap(), 1666);
    assert!(summary.get::<bool>("one_day").unwrap());
    for id in [0, 1023, 1024, 2047, 2048, 2431, 2432, 2495, 2496, 2499] {
        let name: Option<String> = db
            .fetch_value("SELECT name FROM {{tables.items}} WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some(format!("item {id}").as_str()));
    }
    let price: Option<f64> = db
        .fetch_value(
            "SELECT price::float8 FROM {{tables.items}} WHERE id = 2047",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(price, Some(511.75));
}

#[tokio::test]
async fn executemany_on_conflict_goes_row_by_row() {
    // As one multi-row INSERT this would fail ("cannot affect row a second time").
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.kv}} (k int PRIMARY KEY, v int NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    let rows: Vec<(i32, i32)> = (0..2000).map(|i| (i % 10, i)).collect();
    db.executemany(
        "INSERT INTO {{tables.kv}} (k, v) VALUES ($1, $2) \
         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
        &rows,
    )
    .await
    .unwrap();
    let v: Option<i32> = db
        .fetch_value("SELECT v FROM {{tables.kv}} WHERE k = 9", &[])
        .await
        .unwrap();
    assert_eq!(v, Some(1999), "the last row for a key wins, as row by row");
}

#[tokio::test]
async fn executemany_and_copy_with_borrowed_rows_run_in_spawned_tasks() {
    // A compile-time property as much as a runtime one: the futures are Send.
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let rows: std::sync::Arc<Vec<(String, String)>> = std::sync::Arc::new(
        (0..300)
            .map(|i| (format!("s{i}@x"), format!("S{i}")))
            .collect(),
    );
    let (db2, rows2) = (db.clone(), rows.clone());
    let many = tokio::spawn(async move {
        db2.executemany(
            "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
            rows2.iter(),
        )
        .await
    });
    assert_eq!(many.await.unwrap().unwrap(), 300);
    let copied: Vec<(String, String)> = rows
        .iter()
        .map(|(e, n)| (format!("c{e}"), n.clone()))
        .collect();
    let db3 = db.clone();
    let copy = tokio::spawn(async move {
        db3.copy_records_to_table("users", &copied, Some(&["email", "name"]))
            .await
    });
    assert_eq!(copy.await.unwrap().unwrap(), 300);
    assert_eq!(count_users(&db).await, 600);
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
        // The record and the column are named; the value is not needed to see why.
        Error::Query { params, .. } => assert_eq!(params, "record 60"),
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("column `age` is of type int4"), "{text}");
    assert!(!text.contains("not an int"), "{text}");
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
