//! One function over anything that runs queries: the manager, a timed view, a transaction and
//! a savepoint.

mod common;

use std::time::Duration;

use common::schema_db;
use pgdbm::{Executor, Result};

#[derive(pgdbm::FromRow, serde::Deserialize, Debug, PartialEq)]
struct Item {
    id: i32,
    name: String,
}

async fn add(db: &impl Executor, name: &str) -> Result<i32> {
    db.execute_and_return_id("INSERT INTO {{tables.items}} (name) VALUES ($1)", &[&name])
        .await
}

async fn names(db: &impl Executor) -> Result<Vec<String>> {
    let items: Vec<Item> = db
        .fetch_all_as("SELECT id, name FROM {{tables.items}} ORDER BY id", &[])
        .await?;
    Ok(items.into_iter().map(|i| i.name).collect())
}

async fn setup(db: &impl Executor) -> Result<()> {
    db.execute(
        "CREATE TABLE {{tables.items}} (id serial PRIMARY KEY, name text NOT NULL)",
        &[],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn one_function_runs_on_the_manager_a_timed_view_and_transactions() {
    let (db, _guard) = schema_db().await;
    setup(&db).await.unwrap();
    add(&db, "plain").await.unwrap();
    add(&db.with_timeout(Duration::from_secs(5)), "timed")
        .await
        .unwrap();

    let tx = db.transaction().await.unwrap();
    add(&tx, "in tx").await.unwrap();
    {
        let sp = Executor::transaction(&tx).await.unwrap();
        add(&sp, "in savepoint").await.unwrap();
        assert_eq!(names(&sp).await.unwrap().len(), 4);
        sp.rollback().await.unwrap();
    }
    assert_eq!(names(&tx).await.unwrap().len(), 3);
    tx.rollback().await.unwrap();

    assert_eq!(names(&db).await.unwrap(), ["plain", "timed"]);
    assert!(db.table_exists("items").await.unwrap());
    assert_eq!(
        Executor::prepare_query(&db, "SELECT * FROM {{tables.items}}").unwrap(),
        format!("SELECT * FROM \"{}\".items", db.schema().unwrap())
    );
}

#[tokio::test]
async fn generic_calls_can_be_spawned() {
    let (db, _guard) = schema_db().await;
    setup(&db).await.unwrap();
    async fn load<E: Executor>(db: E) -> Result<u64> {
        db.executemany(
            "INSERT INTO {{tables.items}} (name) VALUES ($1)",
            vec![("a".to_owned(),), ("b".to_owned(),)],
        )
        .await?;
        db.copy_records_to_table("items", vec![("c",)], Some(&["name"]))
            .await
    }
    let copied = tokio::spawn(load(db.clone())).await.unwrap().unwrap();
    assert_eq!(copied, 1);
    let count: Option<i64> =
        Executor::fetch_value(&db, "SELECT count(*) FROM {{tables.items}}", &[])
            .await
            .unwrap();
    assert_eq!(count, Some(3));
    let one: Option<Item> = Executor::fetch_one_as(
        &db,
        "SELECT id, name FROM {{tables.items}} WHERE name = $1",
        &[&"c"],
    )
    .await
    .unwrap();
    assert_eq!(one.map(|i| i.name).as_deref(), Some("c"));
}

#[tokio::test]
async fn tuples_and_single_columns() {
    let (db, _guard) = schema_db().await;
    setup(&db).await.unwrap();
    for name in ["a", "b"] {
        add(&db, name).await.unwrap();
    }
    let pairs: Vec<(i32, String)> = db
        .fetch_all_as("SELECT id, name FROM {{tables.items}} ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(pairs, [(1, "a".to_owned()), (2, "b".to_owned())]);
    let one: Option<(i64, Option<String>, bool)> = db
        .fetch_one_as(
            "SELECT count(*), NULL::text, true FROM {{tables.items}}",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(one, Some((2, None, true)));
    let wrong = db
        .fetch_all_as::<(i32,)>("SELECT id, name FROM {{tables.items}}", &[])
        .await;
    assert!(
        matches!(wrong, Err(pgdbm::Error::Decode { .. })),
        "{wrong:?}"
    );

    let ids: Vec<i32> = db
        .fetch_column("SELECT id FROM {{tables.items}} ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(ids, [1, 2]);
    let tx = db.transaction().await.unwrap();
    let names: Vec<String> = Executor::fetch_column(
        &tx,
        "SELECT name FROM {{tables.items}} ORDER BY name DESC",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(names, ["b", "a"]);
    tx.rollback().await.unwrap();
}

// The helper pattern where services use it: these must compile (rustc #100013 made a generic
// trait method's future fail `Send` in spawned tasks, handlers and retry closures).

#[derive(pgdbm::FromRow)]
struct Row {
    id: i32,
}

async fn add_user(db: &impl Executor, email: &str) -> Result<i32> {
    db.execute_and_return_id("INSERT INTO {{tables.items}} (name) VALUES ($1)", &[&email])
        .await
}

async fn every_generic(db: &impl Executor) -> Result<usize> {
    let v: Option<i64> = db.fetch_value("SELECT 1::int8", &[]).await?;
    let w: Option<i64> = db.fetch_value_at("SELECT 1, 2::int8", &[], 1).await?;
    let one: Option<Row> = db.fetch_one_as("SELECT 1 AS id", &[]).await?;
    let all: Vec<Row> = db.fetch_all_as("SELECT 1 AS id", &[]).await?;
    let col: Vec<i32> = db.fetch_column("SELECT 1", &[]).await?;
    let m: Option<serde_json::Value> = db.fetch_as_model("SELECT 1 AS id", &[]).await?;
    let ms: Vec<serde_json::Value> = db.fetch_all_as_model("SELECT 1 AS id", &[]).await?;
    db.fetch_all("SELECT 1", &[]).await?;
    db.fetch_one("SELECT 1", &[]).await?;
    db.execute("SELECT 1", &[]).await?;
    db.table_exists("items").await?;
    Ok(usize::from(v.is_some())
        + usize::from(w.is_some())
        + one.map_or(0, |r| r.id as usize)
        + all.len()
        + col.len()
        + usize::from(m.is_some())
        + ms.len())
}

#[tokio::test]
async fn the_helper_pattern_compiles_in_spawn_handlers_and_retry_closures() {
    let (db, _guard) = schema_db().await;
    setup(&db).await.unwrap();
    // tokio::spawn
    let spawned = {
        let db = db.clone();
        tokio::spawn(async move {
            add_user(&db, "spawned").await?;
            every_generic(&db).await
        })
    };
    assert_eq!(spawned.await.unwrap().unwrap(), 7);
    // An axum handler.
    async fn handler(
        axum::extract::State(db): axum::extract::State<pgdbm::AsyncDatabaseManager>,
    ) -> String {
        add_user(&db, "handled").await.unwrap().to_string()
    }
    let app: axum::Router = axum::Router::new()
        .route("/", axum::routing::post(handler))
        .with_state(db.clone());
    use tower::ServiceExt;
    let response = app
        .oneshot(
            axum::http::Request::post("/")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(response.status().is_success());
    // A transaction_with_retry closure.
    let id = db
        .transaction_with_retry(
            pgdbm::TransactionOptions::default(),
            pgdbm::RetryPolicy::default(),
            |tx| {
                Box::pin(async move {
                    every_generic(&*tx).await?;
                    add_user(&*tx, "retried").await
                })
            },
        )
        .await
        .unwrap();
    assert!(id > 0);
}

#[tokio::test]
async fn fetch_exactly_one_says_no_row_or_how_many() {
    let (db, _guard) = schema_db().await;
    setup(&db).await.unwrap();
    // INSERT … RETURNING: the one row.
    let row = db
        .fetch_exactly_one(
            "INSERT INTO {{tables.items}} (name) VALUES ($1) RETURNING id, name",
            &[&"one"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<String>("name").unwrap(), "one");
    add(&db, "two").await.unwrap();
    let tx = db.transaction().await.unwrap();
    let item: Item = tx
        .fetch_exactly_one_as(
            "SELECT id, name FROM {{tables.items}} WHERE name = $1",
            &[&"two"],
        )
        .await
        .unwrap();
    assert_eq!(item.name, "two");
    tx.commit().await.unwrap();
    // Through the trait, with no row and with two.
    async fn lookup(db: &impl Executor, name: &str) -> Result<Item> {
        db.fetch_exactly_one_as(
            "SELECT id, name FROM {{tables.items}} WHERE name LIKE $1",
            &[&name],
        )
        .await
    }
    let none = lookup(&db, "nobody").await.unwrap_err();
    assert_eq!(none.kind(), pgdbm::ErrorKind::RowCount, "{none:?}");
    assert!(
        matches!(none, pgdbm::Error::RowCount { rows: 0, .. }),
        "{none:?}"
    );
    assert!(none.to_string().contains("no row"), "{none}");
    let two = lookup(&db, "%o%").await.unwrap_err();
    assert!(
        matches!(two, pgdbm::Error::RowCount { rows: 2, .. }),
        "{two:?}"
    );
    assert!(two.to_string().contains("2 rows"), "{two}");
    let found = Executor::fetch_exactly_one(&db, "SELECT 1 AS x", &[])
        .await
        .unwrap();
    assert_eq!(found.get::<i32>("x").unwrap(), 1);
}
