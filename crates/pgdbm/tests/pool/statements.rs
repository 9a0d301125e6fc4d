//! Prepared statements: the unnamed mode, the per-connection cache, add_prepared_statement.

use crate::common::*;
use pgdbm::Error;

#[tokio::test]
async fn no_named_statements_mode() {
    let (db, _g) = schema_db_with(|c| {
        c.max_connections = 1;
        c.statement_cache_size = 0;
    })
    .await;
    db.execute("CREATE TYPE {{tables.mood}} AS ENUM ('sad', 'happy')", &[])
        .await
        .unwrap();
    db.execute(
        "CREATE TABLE {{tables.t}} (id serial PRIMARY KEY, m {{tables.mood}}, name varchar(20), n int8, js jsonb)",
        &[],
    )
    .await
    .unwrap();
    // Parameters are encoded as the types the server infers, as in named mode: an enum takes
    // `EnumText` (or a derived enum), a varchar column a String; a plain String into an enum
    // is refused by the driver in both modes.
    db.execute(
        "INSERT INTO {{tables.t}} (m, name, n, js) VALUES ($1, $2, $3, $4)",
        &[
            &pgdbm::EnumText("happy".into()),
            &"bob",
            &5_i64,
            &serde_json::json!({"a": 1}),
        ],
    )
    .await
    .unwrap();
    // 20 rows: one multi-row INSERT of 16 (unnamed, types probed), then 4 one by one.
    let n = db
        .executemany(
            "INSERT INTO {{tables.t}} (m, name) VALUES ($1, $2)",
            (0..20).map(|i| (pgdbm::EnumText("sad".into()), format!("x{i}"))),
        )
        .await
        .unwrap();
    assert_eq!(n, 20);
    let sad: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.t}} WHERE m = 'sad'", &[])
        .await
        .unwrap();
    assert_eq!(sad, Some(20));
    db.copy_records_to_table("t", vec![(7_i64,)], Some(&["n"]))
        .await
        .unwrap();
    let row = db
        .fetch_one(
            "SELECT m, name, n FROM {{tables.t}} WHERE name = $1",
            &[&"bob"],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<pgdbm::EnumText>("m").unwrap().0, "happy");
    assert_eq!(row.get::<i64>("n").unwrap(), 5);
    // Only the driver's own catalog lookups for the enum type may be named statements
    // (tokio-postgres prepares those itself, once per connection).
    let named: Option<i64> = db
        .fetch_value("SELECT count(*) FROM pg_prepared_statements WHERE statement NOT LIKE '%FROM pg_catalog.pg_%'", &[])
        .await
        .unwrap();
    assert_eq!(named, Some(0));
}

#[tokio::test]
async fn statements_are_cached_per_connection_and_bounded() {
    let (db, _g) = schema_db_with(|c| {
        c.max_connections = 1;
        c.statement_cache_size = 3;
    })
    .await;
    for i in 0..10 {
        let q = format!("SELECT {i} + $1::int4");
        let v: Option<i32> = db.fetch_value(&q, &[&1_i32]).await.unwrap();
        assert_eq!(v, Some(i + 1));
    }
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT % + $1::int4'", &[])
        .await
        .unwrap();
    assert_eq!(
        n,
        Some(2),
        "the cache holds at most 3 (the count query is one of them)"
    );
}

#[tokio::test]
async fn add_prepared_statement_prepares_on_every_connection() {
    let (db, _g) = schema_db_with(|c| {
        c.min_connections = 2;
        c.max_connections = 2;
    })
    .await;
    // Registered before the table exists: not fatal, prepared lazily.
    db.add_prepared_statement(
        "user_by_email",
        "SELECT * FROM {{tables.users}} WHERE email = $1",
    )
    .unwrap();
    assert!(db.fetch_value::<i32>("SELECT 1", &[]).await.is_ok());
    users_table(&db).await;
    db.add_prepared_statement(
        "user_by_email",
        "SELECT * FROM {{tables.users}} WHERE email = $1",
    )
    .unwrap();
    assert!(matches!(
        db.add_prepared_statement("bad name", "SELECT 1"),
        Err(Error::Schema(_))
    ));
    let schema = db.schema().unwrap().to_owned();
    let (a, b) = (db.acquire().await.unwrap(), db.acquire().await.unwrap());
    for conn in [&a, &b] {
        let n: i64 = conn
            .query_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1",
                &[&format!(
                    "SELECT * FROM \"{schema}\".users WHERE email = $1"
                )],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            n,
            1,
            "statement not prepared on connection {}",
            conn.backend_pid()
        );
    }
}

#[tokio::test]
async fn cached_statements_survive_table_changes() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    db.execute("CREATE TABLE {{tables.t}} (a int)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO {{tables.t}} VALUES (1)", &[])
        .await
        .unwrap();
    let q = "SELECT * FROM {{tables.t}} WHERE a = $1";
    assert_eq!(db.fetch_one(q, &[&1_i32]).await.unwrap().unwrap().len(), 1);
    db.execute(
        "ALTER TABLE {{tables.t}} ADD COLUMN b text DEFAULT 'x'",
        &[],
    )
    .await
    .unwrap();
    // The cached plan's result type changed: re-prepared transparently outside a transaction.
    let row = db.fetch_one(q, &[&1_i32]).await.unwrap().unwrap();
    assert_eq!(row.get::<String>("b").unwrap(), "x");
    let models: Vec<(i32, String)> = db.fetch_all_as_model(q, &[&1_i32]).await.unwrap();
    assert_eq!(models, vec![(1, "x".to_string())]);
}
