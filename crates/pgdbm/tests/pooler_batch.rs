//! `executemany` through a real PgBouncer in transaction mode, at every multi-row tier (1,024,
//! 128 and 16 rows per `INSERT`) and the row-by-row tail; the statement log shows which path
//! each batch took.

#[path = "support/bouncer.rs"]
mod bouncer;
mod capture;
mod common;

use bouncer::{bouncer, pooled, TestDb};
use capture::Capture;
use pgdbm::AsyncDatabaseManager;

/// The path of each part of the last batches, from the `pgdbm::batch` debug events: the rows
/// of each multi-row `INSERT`, and `-n` for `n` rows sent one by one.
fn batch_parts(cap: &Capture) -> Vec<i64> {
    cap.events()
        .into_iter()
        .filter(|e| e.target == "pgdbm::batch")
        .map(|e| {
            let rows: i64 = e.fields["rows"].parse().unwrap();
            let message = e.fields.get("message").cloned().unwrap_or_default();
            if message.contains("row by row") {
                -rows
            } else {
                rows
            }
        })
        .collect()
}

#[tokio::test]
async fn executemany_takes_every_tier_through_pgbouncer() {
    let (cap, _sub) = Capture::install();
    let test_db = TestDb::create().await;
    let bouncer = bouncer(2);
    let url = bouncer.connection_string(&test_db.0);
    let db = AsyncDatabaseManager::new(pooled(&url, "batches", 2)).unwrap();
    db.connect().await.unwrap();
    // rows -> the parts the batch must send: multi-row INSERTs, largest tier first, then the
    // tail row by row (negative).
    let cases: [(usize, &[i64]); 6] = [
        (1, &[-1]),
        (16, &[16]),
        (50, &[16, 16, 16, -2]),
        (130, &[128, -2]),
        (1024, &[1024]),
        (1170, &[1024, 128, 16, -2]),
    ];
    for (rows, want) in cases {
        // A table per case: each case's SQL texts are new to the connection, so their
        // parameter types are learned inside the batch's own transaction.
        let table = format!("c{rows}");
        db.execute(
            &format!("CREATE TABLE {{{{tables.{table}}}}} (id serial, name text NOT NULL)"),
            &[],
        )
        .await
        .unwrap();
        let insert = format!("INSERT INTO {{{{tables.{table}}}}} (name) VALUES ($1)");
        for round in 0..3 {
            cap.clear();
            let names: Vec<(String,)> = (0..rows)
                .map(|i| (format!("r{rows}-{round}-{i}"),))
                .collect();
            let n = db
                .executemany(&insert, names)
                .await
                .unwrap_or_else(|e| panic!("{rows} rows, round {round}: {e}"));
            assert_eq!(n, rows as u64);
            // The first round also learns each text's parameter types; every round takes
            // the same path.
            assert_eq!(batch_parts(&cap), want, "{rows} rows, round {round}");
        }
        let count: Option<i64> = db
            .fetch_value(&format!("SELECT count(*) FROM {{{{tables.{table}}}}}"), &[])
            .await
            .unwrap();
        assert_eq!(count, Some(3 * rows as i64));
    }
    // A failing batch (a NULL in row 20) reports its own error, not a follow-on one, and
    // writes nothing.
    db.execute("CREATE TABLE {{tables.f}} (name text NOT NULL)", &[])
        .await
        .unwrap();
    let mut names: Vec<(Option<String>,)> = (0..50).map(|i| (Some(format!("x{i}")),)).collect();
    names[20].0 = None;
    let err = db
        .executemany("INSERT INTO {{tables.f}} (name) VALUES ($1)", names)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("23502"), "{err}");
    let after: Option<i64> = db
        .fetch_value("SELECT count(*) FROM {{tables.f}}", &[])
        .await
        .unwrap();
    assert_eq!(after, Some(0));
}
