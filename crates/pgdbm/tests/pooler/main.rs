//! pgdbm through a real PgBouncer in transaction mode (`pooler = "transaction"`): every query
//! path, from two processes at once, with fewer server connections than clients; timeouts that
//! cancel through the pooler; nothing left on the server connections.

#[path = "../support/bouncer.rs"]
mod bouncer;
#[path = "../common/mod.rs"]
mod common;

mod migrations;
mod queries;
mod statements;

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use pgdbm::{AsyncDatabaseManager, EnumText, Pooler};

use bouncer::pooled;

const CHILD_URL: &str = "PGDBM_POOLER_CHILD_URL";
const CHILD_TAG: &str = "PGDBM_POOLER_CHILD_TAG";

/// Every query path, by several tasks at once, in schema `tag`: any error fails.
async fn workload(url: &str, tag: &str) {
    let db = AsyncDatabaseManager::new(pooled(url, tag, 6)).expect("config");
    db.connect().await.expect("connect through pgbouncer");
    // Custom types made after the pool connected: looked up on first use.
    db.execute(
        &format!(
            "CREATE TYPE \"{tag}\".mood AS ENUM ('sad', 'ok', 'happy');
             CREATE DOMAIN \"{tag}\".posint AS int4 CHECK (VALUE > 0);
             CREATE TYPE \"{tag}\".pair AS (a int4, b text);
             CREATE TABLE {{{{tables.items}}}} (
                 id serial PRIMARY KEY, task int4 NOT NULL, name text NOT NULL,
                 mood \"{tag}\".mood NOT NULL, n \"{tag}\".posint NOT NULL, p \"{tag}\".pair)"
        ),
        &[],
    )
    .await
    .expect("schema");
    let stats = db.get_pool_stats().await.expect("stats");
    assert_eq!(stats.pooler, Pooler::Transaction);

    let tasks: Vec<_> = (0..6)
        .map(|task| {
            let db = db.clone();
            let tag = tag.to_owned();
            tokio::spawn(async move { task_workload(&db, &tag, task).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task panicked");
    }
    let total: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.items}}", &[])
        .await
        .unwrap();
    // Per task and round: 1 insert, 1 kept by the transaction, 10 by executemany, 20 by COPY.
    assert_eq!(total, Some(6 * 8 * 32));
    db.disconnect().await.unwrap();
}

async fn task_workload(db: &AsyncDatabaseManager, tag: &str, task: i32) {
    let mood = format!("\"{tag}\".mood");
    for round in 0..8 {
        let name = format!("t{task}r{round}");
        // execute with an enum, a domain and a composite parameter by text.
        let n = db
            .execute(
                &format!(
                    "INSERT INTO {{{{tables.items}}}} (task, name, mood, n, p) \
                     VALUES ($1, $2, $3, $4::int4, ROW($5, $2)::\"{tag}\".pair)"
                ),
                &[
                    &task,
                    &name,
                    &EnumText("happy".into()),
                    &(round + 1),
                    &round,
                ],
            )
            .await
            .expect("insert");
        assert_eq!(n, 1);

        // Reads decoding the custom types.
        let row = db
            .fetch_one(
                "SELECT mood, n, p FROM {{tables.items}} WHERE name = $1",
                &[&name],
            )
            .await
            .expect("fetch_one")
            .expect("row");
        assert_eq!(row.get::<EnumText>("mood").unwrap().0, "happy");
        assert_eq!(row.get::<i32>("n").unwrap(), round + 1);
        let moods: Vec<EnumText> = db
            .fetch_column(
                &format!("SELECT unnest(enum_range(NULL::{mood})) ORDER BY 1"),
                &[],
            )
            .await
            .expect("enum_range");
        assert_eq!(moods.len(), 3);
        let all = db
            .fetch_all(
                "SELECT id, mood FROM {{tables.items}} WHERE task = $1",
                &[&task],
            )
            .await
            .expect("fetch_all");
        assert!(!all.is_empty());

        // A transaction with a savepoint that rolls back alone.
        let tx = db.transaction().await.expect("begin");
        tx.execute(
            "INSERT INTO {{tables.items}} (task, name, mood, n) VALUES ($1, $2, 'ok', 1)",
            &[&task, &format!("{name}-tx")],
        )
        .await
        .expect("tx insert");
        {
            let inner = tx.transaction().await.expect("savepoint");
            inner
                .execute(
                    "INSERT INTO {{tables.items}} (task, name, mood, n) VALUES ($1, $2, 'sad', 1)",
                    &[&task, &format!("{name}-gone")],
                )
                .await
                .expect("savepoint insert");
            inner.rollback().await.expect("rollback to savepoint");
        }
        // First seen inside a transaction: described there, custom types included.
        let sad: Vec<EnumText> = tx
            .fetch_column(
                &format!(
                    "SELECT mood FROM {{{{tables.items}}}} WHERE mood = $1 AND task = $2 \
                     AND n > $3 /* round {round} */"
                ),
                &[&EnumText("sad".into()), &task, &0_i32],
            )
            .await
            .expect("custom types first described inside a transaction");
        assert!(sad.iter().all(|m| m.0 == "sad"));
        let timeout: Option<String> = tx
            .fetch_value("SELECT current_setting('statement_timeout')", &[])
            .await
            .expect("setting in tx");
        assert_eq!(
            timeout.as_deref(),
            Some("1min"),
            "SET LOCAL in each transaction"
        );
        tx.commit().await.expect("commit");

        // executemany and COPY, each all or nothing.
        let rows: Vec<_> = (0..10)
            .map(|i| {
                (
                    task,
                    format!("{name}-many{i}"),
                    EnumText("sad".into()),
                    i + 1,
                )
            })
            .collect();
        db.executemany(
            "INSERT INTO {{tables.items}} (task, name, mood, n) VALUES ($1, $2, $3, $4::int4)",
            rows,
        )
        .await
        .expect("executemany");
        let records: Vec<_> = (0..20)
            .map(|i| {
                (
                    task,
                    format!("{name}-copy{i}"),
                    EnumText("ok".into()),
                    i + 1,
                )
            })
            .collect();
        let copied = db
            .copy_records_to_table("items", records, Some(&["task", "name", "mood", "n"][..]))
            .await
            .expect("copy");
        assert_eq!(copied, 20);

        // Ids, serde models, CSV in and out.
        let id: i32 = db
            .execute_and_return_id(
                "INSERT INTO {{tables.items}} (task, name, mood, n) VALUES ($1, $2, 'ok', 1) RETURNING id",
                &[&task, &format!("{name}-id")],
            )
            .await
            .expect("execute_and_return_id");
        assert!(id > 0);
        #[derive(serde::Deserialize)]
        struct Item {
            name: String,
            n: i32,
        }
        let items: Vec<Item> = db
            .fetch_all_as_model(
                "SELECT name, n FROM {{tables.items}} WHERE name = $1",
                &[&format!("{name}-id")],
            )
            .await
            .expect("fetch_all_as_model");
        assert_eq!(
            (items[0].name.as_str(), items[0].n),
            (&*format!("{name}-id"), 1)
        );
        let csv = format!("{task},{name}-csv,happy,3\n");
        let loaded = db
            .copy_from_csv(
                "items",
                Some(&["task", "name", "mood", "n"][..]),
                false,
                csv.as_bytes(),
            )
            .await
            .expect("copy_from_csv");
        assert_eq!(loaded, 1);
        let out: Vec<bytes::Bytes> = db
            .copy_to(
                &format!("SELECT name, mood FROM {{{{tables.items}}}} WHERE name = '{name}-csv'"),
                pgdbm::CopyFormat::Csv { header: false },
            )
            .await
            .expect("copy_to")
            .try_collect()
            .await
            .expect("copy_to rows");
        assert_eq!(out.concat(), format!("{name}-csv,happy\n").into_bytes());
        db.execute(
            "DELETE FROM {{tables.items}} WHERE name = ANY($1)",
            &[&vec![format!("{name}-id"), format!("{name}-csv")]],
        )
        .await
        .expect("delete");

        // A stream.
        let streamed: Vec<_> = db
            .fetch_stream(
                "SELECT name, mood FROM {{tables.items}} WHERE task = $1",
                &[&task],
            )
            .await
            .expect("stream")
            .try_collect()
            .await
            .expect("stream rows");
        assert!(!streamed.is_empty());

        // A timeout, then the connection serves the next call.
        if round % 4 == 0 {
            let started = Instant::now();
            let err = db
                .with_timeout(Duration::from_millis(150))
                .execute("SELECT pg_sleep(5)", &[])
                .await
                .unwrap_err();
            assert!(err.is_timeout(), "{err}");
            assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        }
        let gone: Option<i64> = db
            .fetch_value(
                "SELECT count(*) FROM {{tables.items}} WHERE name = $1",
                &[&format!("{name}-gone")],
            )
            .await
            .unwrap();
        assert_eq!(gone, Some(0), "the savepoint's insert was rolled back");
    }
}

/// The second process of the test above; does nothing when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_workload() {
    let (Ok(url), Ok(tag)) = (std::env::var(CHILD_URL), std::env::var(CHILD_TAG)) else {
        return;
    };
    workload(&url, &tag).await;
    println!("child workload done");
}
