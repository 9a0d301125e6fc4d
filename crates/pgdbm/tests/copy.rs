//! COPY: lossless widening in binary COPY, borrowed rows from spawned tasks, CSV in and out,
//! and owned ('static) streams.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{StreamExt, TryStreamExt};
use pgdbm::{AsyncDatabaseManager, Error};

#[tokio::test]
async fn copy_widens_values_losslessly_to_the_column_type() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.w}} (big int8, mid int4, dbl float8, num numeric, small_big int8)",
        &[],
    )
    .await
    .unwrap();
    let rows = vec![
        (i32::MAX, 7_i16, 1.5_f32, 123_456_789_i64, -3_i16),
        (i32::MIN, -7_i16, -0.25_f32, i64::MIN, i16::MIN),
    ];
    let n = db
        .copy_records_to_table("w", rows.clone(), None)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let back: Vec<(i64, i32, f64, String, i64)> = db
        .fetch_all(
            "SELECT big, mid, dbl, num::text, small_big FROM {{tables.w}} ORDER BY big DESC",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.get(0).unwrap(),
                r.get(1).unwrap(),
                r.get(2).unwrap(),
                r.get(3).unwrap(),
                r.get(4).unwrap(),
            )
        })
        .collect();
    let want: Vec<(i64, i32, f64, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.0.into(),
                r.1.into(),
                r.2.into(),
                r.3.to_string(),
                r.4.into(),
            )
        })
        .collect();
    assert_eq!(back, want);
}

#[tokio::test]
async fn copy_refuses_a_lossy_conversion_naming_column_and_types() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    db.execute("CREATE TABLE {{tables.n}} (id int4, ratio real)", &[])
        .await
        .unwrap();
    let e = db
        .copy_records_to_table("n", vec![(1_i32, 0.5_f32), (2, 0.25)], None)
        .await
        .unwrap();
    assert_eq!(e, 2);
    for (rows, column, pg, rust) in [
        (vec![(3_000_000_000_i64, 0.5_f32)], "id", "int4", "i64"),
        (vec![(3_i64, 0.5_f32)], "id", "int4", "i64"),
    ] {
        let e = db.copy_records_to_table("n", rows, None).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("column `{column}` is of type {pg}")),
            "{text}"
        );
        assert!(text.contains(&format!("Rust `{rust}`")), "{text}");
        assert!(!text.contains("3000000000"), "{text}");
    }
    let e = db
        .copy_records_to_table("n", vec![(4_i32, 0.1_f64)], None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("column `ratio` is of type float4"),
        "{e}"
    );
    assert!(e.to_string().contains("Rust `f64`"), "{e}");
    let n: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.n}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(2), "nothing written by the failed loads");
}

struct Item {
    id: i64,
    name: String,
}

/// Rows built from borrowed data (`&str` into the caller's structs) from a spawned task: the
/// call's future is `Send`.
#[tokio::test]
async fn copy_borrowed_rows_from_a_spawned_task() {
    let (db, _g) = schema_db().await;
    db.execute("CREATE TABLE {{tables.items}} (id int8, name text)", &[])
        .await
        .unwrap();
    let db2 = db.clone();
    let copied = tokio::spawn(async move {
        let items: Vec<Item> = (0..1000)
            .map(|i| Item {
                id: i,
                name: format!("item {i}"),
            })
            .collect();
        db2.copy_records_to_table(
            "items",
            items.iter().map(|r| (r.id, r.name.as_str())),
            Some(&["id", "name"]),
        )
        .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(copied, 1000);
    let last: Option<String> = db
        .fetch_value("SELECT name FROM {{tables.items}} WHERE id = 999", &[])
        .await
        .unwrap();
    assert_eq!(last.as_deref(), Some("item 999"));
}

fn is_send_static<T: Send + 'static>(_: &T) {}

/// The bound an HTTP framework puts on a streamed response body (axum's `Body::from_stream`).
fn fits_a_response_body<S>(_: &S)
where
    S: futures_util::TryStream + Send + 'static,
    S::Ok: Into<bytes::Bytes>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
}

#[tokio::test]
async fn owned_streams_fit_a_response_body() {
    let (db, _g) = schema_db().await;
    let csv = db
        .copy_to_owned("SELECT 1", pgdbm::CopyFormat::Csv { header: false })
        .await
        .unwrap();
    fits_a_response_body(&csv);
    let rows = db.fetch_stream_owned("SELECT 1 AS one", &[]).await.unwrap();
    let lines = rows.and_then(|r| async move { Ok(format!("{}\n", r.to_json()?)) });
    fits_a_response_body(&lines);
    let body: Vec<String> = lines.try_collect().await.unwrap();
    assert_eq!(body, vec!["{\"one\":1}\n"]);
    let csv: Vec<bytes::Bytes> = csv.try_collect().await.unwrap();
    assert_eq!(csv.concat(), b"1\n");
}

/// Built in one function, handed back from a spawned task, read in another: the stream owns
/// its connection.
async fn numbers(db: &AsyncDatabaseManager, upto: i32) -> pgdbm::Result<pgdbm::RecordStream> {
    let upto = upto.to_string(); // a temporary parameter, gone before the stream is read
    db.fetch_stream_owned(
        "SELECT g FROM generate_series(1, $1::text::int4) g",
        &[&upto],
    )
    .await
}

#[tokio::test]
async fn an_owned_stream_outlives_its_manager_borrow_and_its_task() {
    let (db, _g) = schema_db().await;
    let db2 = db.clone();
    let stream = tokio::spawn(async move { numbers(&db2, 2500).await })
        .await
        .unwrap()
        .unwrap();
    is_send_static(&stream);
    let read = tokio::spawn(async move {
        stream
            .map_ok(|r| r.get::<i32>(0).unwrap())
            .try_collect::<Vec<i32>>()
            .await
    });
    let got = read.await.unwrap().unwrap();
    assert_eq!(got, (1..=2500).collect::<Vec<_>>());
    // The connection went back to the pool when the stream ended.
    let stats = db.get_pool_stats().await.unwrap();
    assert_eq!(stats.used_size, 0, "{stats:?}");
    // Bad SQL is reported by the call, before any stream exists, with its SQLSTATE.
    let e = db
        .fetch_stream_owned("SELECT nope FROM {{tables.missing}}", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("42P01"), "{e}");
}

#[tokio::test]
async fn a_dropped_owned_stream_cancels_its_query_and_frees_its_connection() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let marker = "owned_stream_drop_marker";
    let sql = format!("SELECT g, repeat('x', 2000) AS {marker} FROM generate_series(1, 3000000) g");
    let mut stream = db
        .without_timeout()
        .fetch_stream_owned(&sql, &[])
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(stream.next().await.unwrap().is_ok());
    }
    drop(stream);
    served_at_once(&db).await;
    assert_eq!(active_with(marker).await, 0);
}

#[tokio::test]
async fn an_owned_stream_times_out_waiting_for_a_row() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let started = std::time::Instant::now();
    let timed = db.with_timeout(Duration::from_millis(200));
    let first = match timed.fetch_stream_owned("SELECT pg_sleep(3)", &[]).await {
        Err(e) => Err(e),
        Ok(mut s) => s.next().await.unwrap().map(|_| ()),
    };
    assert!(matches!(first, Err(Error::Timeout { .. })), "{first:?}");
    assert!(started.elapsed() < Duration::from_millis(900));
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    settle(|| async { active_with("pg_sleep(3)").await == 0 }).await;
}
