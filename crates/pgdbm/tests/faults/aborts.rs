//! Calls aborted at random points or right after BEGIN: whole batches, clean connections.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::common::{admin_value, schema_db_with, unique};
use pgdbm::AsyncDatabaseManager;

use super::{assert_no_open_transaction, check_own_results, seed, sessions, settle, with_app, Rng};

// ---------------------------------------------------------------------------------------------
// 1. Random aborts
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Query {
        big: bool,
    },
    Tx {
        tag: String,
        rows: i32,
    },
    Many {
        tag: String,
        rows: i32,
        pipelined: bool,
    },
    Copy {
        tag: String,
        rows: i32,
    },
}

impl Op {
    fn batch(&self) -> Option<(&str, i32)> {
        match self {
            Op::Query { .. } => None,
            Op::Tx { tag, rows } | Op::Many { tag, rows, .. } | Op::Copy { tag, rows } => {
                Some((tag, *rows))
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Op::Query { .. } => "query",
            Op::Tx { .. } => "transaction",
            Op::Many { .. } => "executemany",
            Op::Copy { .. } => "copy",
        }
    }
}

async fn run_op(db: AsyncDatabaseManager, op: Op) -> pgdbm::Result<()> {
    match op {
        Op::Query { big: false } => {
            db.execute("SELECT pg_sleep(0.002)", &[]).await?;
        }
        Op::Query { big: true } => {
            let rows = db
                .fetch_all(
                    "SELECT g, repeat('x', 100) FROM generate_series(1, 3000) g",
                    &[],
                )
                .await?;
            assert_eq!(rows.len(), 3000);
        }
        Op::Tx { tag, rows } => {
            let tx = db.transaction().await?;
            for n in 0..rows {
                tx.execute(
                    "INSERT INTO {{tables.items}} (tag, n) VALUES ($1, $2)",
                    &[&tag, &n],
                )
                .await?;
            }
            tx.commit().await?;
        }
        Op::Many {
            tag,
            rows,
            pipelined,
        } => {
            // `ON CONFLICT DO NOTHING` takes the row-by-row pipeline instead of multi-row
            // INSERTs.
            let sql = if pipelined {
                "INSERT INTO {{tables.items}} (tag, n) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            } else {
                "INSERT INTO {{tables.items}} (tag, n) VALUES ($1, $2)"
            };
            let n = db
                .executemany(sql, (0..rows).map(|n| (tag.clone(), n)))
                .await?;
            assert_eq!(n, rows as u64);
        }
        Op::Copy { tag, rows } => {
            let n = db
                .copy_records_to_table(
                    "items",
                    (0..rows).map(|n| (tag.clone(), n)),
                    Some(&["tag", "n"]),
                )
                .await?;
            assert_eq!(n, rows as u64);
        }
    }
    Ok(())
}

/// When to give up on an operation.
#[derive(Clone, Copy, Debug)]
enum Delay {
    Never,
    Yields(u32),
    Micros(u64),
}

impl Delay {
    async fn wait(self) {
        match self {
            Delay::Never => std::future::pending().await,
            Delay::Yields(n) => {
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
            }
            Delay::Micros(us) => tokio::time::sleep(Duration::from_micros(us)).await,
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Done,
    Aborted,
}

/// Runs `op` and gives up on it after `delay`: by aborting its task, by dropping its future
/// through `tokio::time::timeout`-like racing, or through `select!`.
async fn run_and_abort(db: &AsyncDatabaseManager, op: Op, how: u64, delay: Delay) -> Outcome {
    let result = match how {
        0 => {
            let mut handle = tokio::spawn(run_op(db.clone(), op));
            let joined = tokio::select! {
                biased;
                r = &mut handle => r,
                _ = delay.wait() => {
                    handle.abort();
                    handle.await
                }
            };
            match joined {
                Ok(r) => Some(r),
                Err(e) if e.is_cancelled() => None,
                Err(e) => panic!("operation panicked: {e}"),
            }
        }
        1 => match delay {
            Delay::Micros(us) => {
                tokio::time::timeout(Duration::from_micros(us), run_op(db.clone(), op))
                    .await
                    .ok()
            }
            _ => {
                tokio::select! {
                    r = run_op(db.clone(), op) => Some(r),
                    _ = delay.wait() => None,
                }
            }
        },
        _ => {
            tokio::select! {
                biased;
                r = run_op(db.clone(), op) => Some(r),
                _ = delay.wait() => None,
            }
        }
    };
    match result {
        Some(Ok(())) => Outcome::Done,
        Some(Err(e)) => panic!("an operation that was not aborted failed: {e}"),
        None => Outcome::Aborted,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_aborts_leave_whole_batches_and_clean_connections() {
    random_aborts(false).await;
}

/// The same with multiplexing: the plain queries share connections, the rest keep their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_aborts_leave_whole_batches_and_clean_connections_multiplexed() {
    random_aborts(true).await;
}

async fn random_aborts(multiplexing: bool) {
    const LANES: u64 = 4;
    const PER_LANE: u64 = 50;
    let seed = seed(0xFA17_0001);
    let app = unique("faults_abort");
    let (db, _guard) = schema_db_with(|c| {
        c.min_connections = 1;
        c.max_connections = 3;
        c.multiplexing = multiplexing;
        with_app(c, &app);
    })
    .await;
    db.execute(
        "CREATE TABLE {{tables.items}} (id bigserial PRIMARY KEY, tag text NOT NULL, n int4 NOT NULL)",
        &[],
    )
    .await
    .unwrap();

    let started = Instant::now();
    let lanes = (0..LANES).map(|lane| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new(seed ^ (lane + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let mut log = Vec::new();
            for i in 0..PER_LANE {
                let tag = format!("l{lane}-{i}");
                let max_rows = if rng.below(4) == 0 { 3000 } else { 60 };
                let rows = 1 + rng.below(max_rows) as i32;
                let op = match rng.below(4) {
                    0 => Op::Query {
                        big: rng.below(2) == 0,
                    },
                    1 => Op::Tx {
                        tag,
                        rows: rows.min(8),
                    },
                    2 => Op::Many {
                        tag,
                        rows,
                        pipelined: rng.below(2) == 0,
                    },
                    _ => Op::Copy { tag, rows },
                };
                let delay = match rng.below(8) {
                    0 => Delay::Never,
                    1 => Delay::Micros(0),
                    2 | 3 => Delay::Yields(rng.below(40) as u32),
                    _ => Delay::Micros(rng.below(5_000)),
                };
                let how = rng.below(3);
                let outcome = run_and_abort(&db, op.clone(), how, delay).await;
                log.push((op, how, delay, outcome));
            }
            log
        })
    });
    let mut log = Vec::new();
    for lane in futures_util::future::join_all(lanes).await {
        log.extend(lane.expect("lane panicked"));
    }
    let ran_for = started.elapsed();

    // Background recovery (cancel, drain, roll back) settles.
    let settled = settle(&db, &app, Duration::from_secs(15)).await;
    assert_no_open_transaction(&app).await;
    let settled = settled.unwrap_or_else(|s| panic!("the pool did not settle: {s:?}"));

    // (a) Every batch is all or nothing; a finished one is all.
    let counts: BTreeMap<String, i64> = db
        .fetch_all(
            "SELECT tag, count(*) FROM {{tables.items}} GROUP BY tag",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get::<String>(0).unwrap(), r.get::<i64>(1).unwrap()))
        .collect();
    let mut tally: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut tags = HashSet::new();
    for (op, _, _, outcome) in &log {
        let kind = op.kind();
        let what = match outcome {
            Outcome::Done => "done",
            Outcome::Aborted => "aborted",
        };
        *tally.entry((kind, what)).or_default() += 1;
        let Some((tag, rows)) = op.batch() else {
            continue;
        };
        tags.insert(tag.to_owned());
        let found = counts.get(tag).copied().unwrap_or(0);
        match outcome {
            Outcome::Done => assert_eq!(found, rows as i64, "{op:?} finished but has {found} rows"),
            Outcome::Aborted => assert!(
                found == 0 || found == rows as i64,
                "{op:?} was aborted and left {found} of {rows} rows"
            ),
        }
    }
    for tag in counts.keys() {
        assert!(tags.contains(tag), "rows of an unknown batch {tag}");
    }
    let aborted = log
        .iter()
        .filter(|(_, _, _, o)| matches!(o, Outcome::Aborted))
        .count();
    assert!(
        aborted >= 50,
        "only {aborted} aborts: the test aborts too little"
    );

    // (c) Every pooled connection answers its own queries, and the pool still works.
    let backends = check_own_results(&db, 400).await;
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO {{tables.items}} (tag, n) VALUES ('final', 1)",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    db.executemany(
        "INSERT INTO {{tables.items}} (tag, n) VALUES ($1, $2)",
        (0..10).map(|n| ("final", n)),
    )
    .await
    .unwrap();
    let stats = db.get_pool_stats().await.unwrap();
    assert!(stats.size <= 3, "{stats:?}");
    // The path named: with multiplexing, calls ran on shared connections.
    assert_eq!(stats.shared_calls > 0, multiplexing, "{stats:?}");
    assert_no_open_transaction(&app).await;

    eprintln!(
        "random_aborts (multiplexing {multiplexing}): seed {seed}, {} iterations in {ran_for:?} ({aborted} aborted), settled in \
         {settled:?}, {backends} backends answered 400 checks; by kind: {tally:?}",
        log.len()
    );
}

/// The window the random aborts above hit now and then, made deterministic: a future polled
/// once sends `BEGIN` and is dropped before the answer. The connection must not
/// go back to the pool with the server still in that transaction: the next autocommit
/// statement on it would silently run inside the leftover transaction and be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_right_after_begin_leaves_no_transaction_open() {
    let app = unique("faults_begin");
    let (db, guard) = schema_db_with(|c| {
        c.min_connections = 1;
        c.max_connections = 1;
        with_app(c, &app);
    })
    .await;
    db.execute(
        "CREATE TABLE {{tables.items}} (id bigserial PRIMARY KEY, tag text NOT NULL, n int4 NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    let table = format!("\"{}\".items", guard.0);
    for (round, kind) in ["transaction", "executemany", "copy"].iter().enumerate() {
        let op = match *kind {
            "transaction" => Op::Tx {
                tag: format!("tx{round}"),
                rows: 1,
            },
            "executemany" => Op::Many {
                tag: format!("em{round}"),
                rows: 3,
                pipelined: false,
            },
            _ => Op::Copy {
                tag: format!("cp{round}"),
                rows: 3,
            },
        };
        // Polled exactly once, then dropped. (A zero timeout is not that: its timer fires on
        // the next millisecond tick, and on loopback a whole call may finish before then.)
        let mut call = Box::pin(run_op(db.clone(), op));
        let first = futures_util::FutureExt::poll_unpin(
            &mut call,
            &mut std::task::Context::from_waker(std::task::Waker::noop()),
        );
        assert!(first.is_pending(), "{kind}: finished within one poll");
        drop(call);
        // The only connection comes back once recovered; this autocommit INSERT must be
        // visible to everyone.
        let tag = format!("visible{round}");
        db.execute(
            "INSERT INTO {{tables.items}} (tag, n) VALUES ($1, 0)",
            &[&tag],
        )
        .await
        .unwrap();
        let seen = admin_value(&format!("SELECT count(*) FROM {table} WHERE tag = '{tag}'")).await;
        assert_eq!(
            seen.as_deref(),
            Some("1"),
            "{kind} dropped after BEGIN: a later autocommit INSERT is invisible to other \
             sessions (sessions: {:?})",
            sessions(&app).await
        );
        assert_no_open_transaction(&app).await;
    }
}
