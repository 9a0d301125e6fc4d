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
