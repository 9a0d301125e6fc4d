//! CSV in (`copy_from_csv`) and COPY out (`copy_to`, `copy_to_owned`): round trips, precise
//! errors that write nothing, timeouts, and streams or loads dropped halfway.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{StreamExt, TryStreamExt};
use pgdbm::{AsyncDatabaseManager, CopyFormat, Error, Executor};

const CSV: CopyFormat = CopyFormat::Csv { header: true };

async fn table(db: &AsyncDatabaseManager, name: &str) {
    db.execute(
        &format!(
            "CREATE TABLE {{{{tables.{name}}}}} (id int4 PRIMARY KEY, name text, score numeric)"
        ),
        &[],
    )
    .await
    .unwrap();
}

async fn count(db: &impl Executor, name: &str) -> i64 {
    db.fetch_value::<i64>(&format!("SELECT count(*) FROM {{{{tables.{name}}}}}"), &[])
        .await
        .unwrap()
        .unwrap()
}

/// Sessions of the server left inside a transaction or a COPY (other than ours).
async fn sessions_not_idle(db: &AsyncDatabaseManager) -> i64 {
    let app: String = db
        .fetch_value("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .unwrap();
    admin_value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
         AND application_name = '{app}' AND state <> 'idle' \
         AND query NOT LIKE '%current_setting%'"
    ))
    .await
    .unwrap()
    .parse()
    .unwrap()
}

async fn collect(stream: impl futures_util::Stream<Item = pgdbm::Result<Bytes>>) -> Vec<u8> {
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    chunks.concat()
}

#[tokio::test]
async fn csv_round_trip_of_100k_rows() {
    let (db, _g) = schema_db().await;
    table(&db, "src").await;
    table(&db, "dst").await;
    // Commas, quotes, newlines, NULLs and exact numerics all survive.
    db.execute(
        "INSERT INTO {{tables.src}} SELECT g, CASE WHEN g % 7 = 0 THEN NULL \
         ELSE 'n ' || g || ', \"q\"' || CASE WHEN g % 5 = 0 THEN E'\\nline' ELSE '' END END, \
         g / 3.0 FROM generate_series(1, 100000) g",
        &[],
    )
    .await
    .unwrap();
    let csv = collect(db.copy_to("src", CSV).await.unwrap()).await;
    assert!(csv.starts_with(b"id,name,score\n"), "a header line");
    let n = db.copy_from_csv("dst", None, true, &csv[..]).await.unwrap();
    assert_eq!(n, 100_000);
    let differ: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM ((TABLE {{tables.src}} EXCEPT TABLE {{tables.dst}}) \
             UNION ALL (TABLE {{tables.dst}} EXCEPT TABLE {{tables.src}})) d",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(differ, Some(0));
    // A query (with templates) and a column list, without a header.
    let some = collect(
        db.copy_to(
            "SELECT id, name FROM {{tables.dst}} WHERE id <= 3 ORDER BY id;",
            CopyFormat::Csv { header: false },
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        String::from_utf8(some).unwrap(),
        "1,\"n 1, \"\"q\"\"\"\n2,\"n 2, \"\"q\"\"\"\n3,\"n 3, \"\"q\"\"\"\n"
    );
    let text = collect(
        db.copy_to("SELECT 1, NULL::int", CopyFormat::Text)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(text, b"1\t\\N\n");
}

#[tokio::test]
async fn a_malformed_csv_line_is_a_precise_error_and_writes_nothing() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    table(&db, "t").await;
    let bad: &[u8] = b"id,name,score\n1,a,1.5\n2,b,2\nthree,c,3\n4,d,4\n";
    let e = db
        .copy_from_csv("t", Some(&["id", "name", "score"]), true, bad)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("22P02"), "{e}");
    assert!(
        e.to_string()
            .contains("invalid input syntax for type integer"),
        "{e}"
    );
    match &e {
        Error::Query { params, .. } => assert_eq!(params, "line 4"),
        other => panic!("{other:?}"),
    }
    // Too many fields on a line.
    let e = db
        .copy_from_csv("t", Some(&["id", "name"]), false, &b"1,a\n2,b,extra\n"[..])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("22P04"), "{e}");
    assert_eq!(count(&db, "t").await, 0, "nothing written");
    // Names are checked before anything is sent.
    let e = db
        .copy_from_csv("t; DROP", None, false, &b""[..])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Schema(_)), "{e:?}");
    let e = db.copy_to("t;DROP", CSV).await.err().unwrap();
    assert!(matches!(e, Error::Schema(_)), "{e:?}");
    // The one connection is idle and usable.
    let n = db
        .copy_from_csv("t", Some(&["id", "name"]), false, &b"1,a\n2,b\n"[..])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(count(&db, "t").await, 2);
}

/// A reader that yields some data and then fails.
struct Failing(usize);

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("disk on fire")));
        }
        self.0 -= 1;
        buf.put_slice(format!("{},x\n", self.0 + 100).as_bytes());
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failing_reader_writes_nothing() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    table(&db, "t").await;
    let e = db
        .copy_from_csv("t", Some(&["id", "name"]), false, Failing(50))
        .await
        .unwrap_err();
    match &e {
        Error::Io { source, .. } => assert_eq!(source.to_string(), "disk on fire"),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("disk on fire"), "{e}");
    assert_eq!(count(&db, "t").await, 0);
}

#[tokio::test]
async fn a_dropped_copy_to_stream_cancels_the_copy() {
    for owned in [false, true] {
        let (db, _g) = schema_db_with(pool_of(1)).await;
        let marker = if owned {
            "copy_out_owned_marker"
        } else {
            "copy_out_marker"
        };
        let sql =
            format!("SELECT g, repeat('x', 1000) AS {marker} FROM generate_series(1, 3000000) g");
        let untimed = db.without_timeout();
        if owned {
            let mut s = untimed.copy_to_owned(&sql, CSV).await.unwrap();
            for _ in 0..3 {
                assert!(!s.next().await.unwrap().unwrap().is_empty());
            }
        } else {
            let s = untimed.copy_to(&sql, CSV).await.unwrap();
            let mut s = Box::pin(s);
            for _ in 0..3 {
                assert!(!s.next().await.unwrap().unwrap().is_empty());
            }
        }
        served_at_once(&db).await;
        assert_eq!(active_with(marker).await, 0);
        assert_eq!(sessions_not_idle(&db).await, 0);
    }
}

#[tokio::test]
async fn copy_to_times_out_waiting_for_data() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    let started = Instant::now();
    let timed = db.with_timeout(Duration::from_millis(200));
    let first = match timed.copy_to("SELECT pg_sleep(3)", CSV).await {
        Err(e) => Err(e),
        Ok(s) => Box::pin(s).next().await.unwrap().map(|_| ()),
    };
    assert!(matches!(first, Err(Error::Timeout { .. })), "{first:?}");
    assert!(started.elapsed() < Duration::from_millis(900));
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    settle(|| async { active_with("pg_sleep(3)").await == 0 }).await;
}

#[tokio::test]
async fn a_dropped_csv_load_leaves_no_copy_or_transaction_behind() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    table(&db, "t").await;
    // The writer stays open: the load waits for more data until it is dropped.
    let (mut writer, reader) = tokio::io::duplex(1 << 16);
    tokio::io::AsyncWriteExt::write_all(&mut writer, b"1,a\n2,b\n")
        .await
        .unwrap();
    let untimed = db.without_timeout();
    let load = untimed.copy_from_csv("t", Some(&["id", "name"]), false, reader);
    assert!(tokio::time::timeout(Duration::from_millis(300), load)
        .await
        .is_err());
    drop(writer);
    let started = Instant::now();
    assert_eq!(count(&db, "t").await, 0, "nothing written");
    assert!(started.elapsed() < Duration::from_secs(2));
    settle(|| async { sessions_not_idle(&db).await == 0 }).await;
    // A timeout does the same, at its deadline.
    let (_writer, reader) = tokio::io::duplex(64);
    let started = Instant::now();
    let e = db
        .with_timeout(Duration::from_millis(200))
        .copy_from_csv("t", None, false, reader)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(count(&db, "t").await, 0);
}

#[tokio::test]
async fn csv_in_and_out_inside_a_transaction() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    table(&db, "t").await;
    let tx = db.transaction().await.unwrap();
    let n = Executor::copy_from_csv(&tx, "t", Some(&["id", "name"]), false, &b"1,a\n2,b\n"[..])
        .await
        .unwrap();
    assert_eq!(n, 2);
    // The transaction sees its own rows.
    let out = collect(
        Executor::copy_to(&tx, "SELECT id FROM {{tables.t}} ORDER BY id", CSV)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out, b"id\n1\n2\n");
    let table = collect(tx.copy_to("{{tables.t}}", CopyFormat::Text).await.unwrap()).await;
    assert_eq!(table, b"1\ta\t\\N\n2\tb\t\\N\n");
    tx.rollback().await.unwrap();
    assert_eq!(count(&db, "t").await, 0);
    let tx = db.transaction().await.unwrap();
    tx.copy_from_csv("t", Some(&["id", "name"]), false, &b"3,c\n"[..])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db, "t").await, 1);
}

/// Streams through the `Executor` trait, on the manager and inside a transaction alike.
async fn ids(db: &impl Executor) -> Vec<i32> {
    let rows = db
        .fetch_stream("SELECT id FROM {{tables.t}} ORDER BY id", &[])
        .await
        .unwrap();
    rows.map_ok(|r| r.get::<i32>(0).unwrap())
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn fetch_stream_through_the_executor_trait() {
    let (db, _g) = schema_db_with(pool_of(1)).await;
    table(&db, "t").await;
    Executor::copy_from_csv(&db, "t", Some(&["id"]), false, &b"2\n1\n"[..])
        .await
        .unwrap();
    assert_eq!(ids(&db).await, vec![1, 2]);
    let tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.t}} (id) VALUES (3)", &[])
        .await
        .unwrap();
    assert_eq!(ids(&tx).await, vec![1, 2, 3]);
    tx.rollback().await.unwrap();
    assert_eq!(ids(&db).await, vec![1, 2]);
}
