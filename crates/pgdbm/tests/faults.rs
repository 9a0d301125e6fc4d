//! Fault injection: calls aborted at random points, backends terminated under load, a server
//! restarted under load, a network that hangs, and a ledger of transactions that fail in every
//! way we know of. Each test works in its own schema (or its own throwaway cluster) with a
//! pool of its own, tagged with a unique `application_name` so that `pg_stat_activity` shows
//! only its sessions.
//!
//! Randomness is a seeded xorshift: set `FAULTS_SEED` to replay a run. Run with
//! `--nocapture` to read the measured figures.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{admin, admin_value, database_url, schema_db_with, unique, SchemaGuard};
use pgdbm::testing::TempCluster;
use pgdbm::{AsyncDatabaseManager, DatabaseConfig, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// xorshift64: tiny, seeded, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The run's seed: `FAULTS_SEED` if set, else the test's fixed default.
fn seed(default: u64) -> u64 {
    std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn with_app(cfg: &mut DatabaseConfig, app: &str) {
    cfg.server_settings = Some([("application_name".to_string(), app.to_string())].into());
}

/// `(pid, state, last query)` of every session of a pool, by its application name.
async fn sessions(app: &str) -> Vec<(String, String, String)> {
    admin(&format!(
        "SELECT pid::text, coalesce(state, ''), left(coalesce(query, ''), 80) \
         FROM pg_stat_activity WHERE application_name = '{app}'"
    ))
    .await
    .into_iter()
    .filter_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some((
            r.get(0).unwrap_or("").to_owned(),
            r.get(1).unwrap_or("").to_owned(),
            r.get(2).unwrap_or("").to_owned(),
        )),
        _ => None,
    })
    .collect()
}

/// Waits (bounded) until every connection is back in the pool and every session of the pool is
/// idle; returns how long that took, or the sessions as they were at the limit.
async fn settle(
    db: &AsyncDatabaseManager,
    app: &str,
    limit: Duration,
) -> Result<Duration, Vec<(String, String, String)>> {
    let started = Instant::now();
    loop {
        let stats = db.get_pool_stats().await.expect("pool stats");
        let all = sessions(app).await;
        let pool_idle = stats.size == stats.free_size;
        if pool_idle && all.iter().all(|(_, state, _)| state == "idle") {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(all);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts that no session of the pool is left in a transaction.
async fn assert_no_open_transaction(app: &str) {
    let open: Vec<_> = sessions(app)
        .await
        .into_iter()
        .filter(|(_, s, _)| s.starts_with("idle in transaction"))
        .collect();
    assert!(
        open.is_empty(),
        "sessions left idle in transaction: {open:?}"
    );
}

/// Many concurrent `SELECT $1::int4, $2::text` with distinct values: every answer must be the
/// caller's own, and none may fail (a late cancel would interrupt an innocent query). Returns
/// the number of distinct backends that answered.
async fn check_own_results(db: &AsyncDatabaseManager, calls: i32) -> usize {
    let futures = (0..calls).map(|i| {
        let db = db.clone();
        async move {
            let text = format!("v{i}");
            let row = db
                .fetch_one("SELECT $1::int4, $2::text, pg_backend_pid()", &[&i, &text])
                .await
                .unwrap_or_else(|e| panic!("call {i} failed: {e}"))
                .expect("a row");
            let (n, t, pid): (i32, String, i32) = (
                row.get(0).unwrap(),
                row.get(1).unwrap(),
                row.get(2).unwrap(),
            );
            assert_eq!(
                (n, t.as_str()),
                (i, text.as_str()),
                "call {i} got another's answer"
            );
            pid
        }
    });
    let pids: HashSet<i32> = futures_util::future::join_all(futures)
        .await
        .into_iter()
        .collect();
    pids.len()
}

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
    const LANES: u64 = 4;
    const PER_LANE: u64 = 50;
    let seed = seed(0xFA17_0001);
    let app = unique("faults_abort");
    let (db, _guard) = schema_db_with(|c| {
        c.min_connections = 1;
        c.max_connections = 3;
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
    assert_no_open_transaction(&app).await;

    eprintln!(
        "random_aborts: seed {seed}, {} iterations in {ran_for:?} ({aborted} aborted), settled in \
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

// ---------------------------------------------------------------------------------------------
// Load: tasks running checked queries in a loop, recording successes and failures.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct TaskLog {
    oks: u64,
    errors: u64,
    last_ok: Option<Instant>,
    last_err: Option<Instant>,
    first_error: Option<String>,
}

struct Load {
    stop: Arc<AtomicBool>,
    logs: Vec<Arc<Mutex<TaskLog>>>,
    handles: Vec<JoinHandle<()>>,
}

/// A call that takes longer than this counts as hung.
const HANG_LIMIT: Duration = Duration::from_secs(10);

impl Load {
    fn start(db: &AsyncDatabaseManager, tasks: i32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut logs = Vec::new();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let log = Arc::new(Mutex::new(TaskLog::default()));
            logs.push(log.clone());
            let (db, stop) = (db.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                let mut i: i32 = t * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = tokio::time::timeout(
                        HANG_LIMIT,
                        db.fetch_value::<i32>("SELECT $1::int4", &[&i]),
                    )
                    .await;
                    let failure = match r {
                        Ok(Ok(Some(v))) if v == i => None,
                        Ok(Ok(other)) => panic!("asked for {i}, got {other:?}"),
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some(format!("hung for {HANG_LIMIT:?}")),
                    };
                    let failed = failure.is_some();
                    {
                        let now = Instant::now();
                        let mut l = log.lock().unwrap();
                        match failure {
                            None => {
                                l.oks += 1;
                                l.last_ok = Some(now);
                            }
                            Some(e) => {
                                l.errors += 1;
                                l.last_err = Some(now);
                                l.first_error.get_or_insert(e);
                            }
                        }
                    }
                    if failed {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        Load {
            stop,
            logs,
            handles,
        }
    }

    /// Whether every task has succeeded since `since` and after its last failure.
    fn recovered(&self, since: Instant) -> bool {
        self.logs.iter().all(|l| {
            let l = l.lock().unwrap();
            l.last_ok
                .is_some_and(|ok| ok > since && l.last_err.is_none_or(|e| ok > e))
        })
    }

    /// Polls until [`recovered`](Self::recovered), at most `limit`; the time it took.
    async fn wait_recovered(&self, since: Instant, limit: Duration) -> Option<Duration> {
        loop {
            if self.recovered(since) {
                return Some(since.elapsed());
            }
            if since.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn totals(&self) -> (u64, u64, Option<String>) {
        self.logs.iter().fold((0, 0, None), |(o, e, first), l| {
            let l = l.lock().unwrap();
            (
                o + l.oks,
                e + l.errors,
                first.or_else(|| l.first_error.clone()),
            )
        })
    }

    /// Failures after `t`.
    fn failed_after(&self, t: Instant) -> bool {
        self.logs
            .iter()
            .any(|l| l.lock().unwrap().last_err.is_some_and(|e| e > t))
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.expect("load task panicked");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Terminate every backend under load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_every_backend_under_load_recovers_within_seconds() {
    let app = unique("faults_term");
    let (db, _guard) = schema_db_with(|c| {
        c.min_connections = 4;
        c.max_connections = 4;
        with_app(c, &app);
    })
    .await;
    let load = Load::start(&db, 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: HashSet<String> = sessions(&app)
        .await
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    assert!(!before.is_empty());

    // A storm: every backend of the pool, three times over.
    let (_, errors_before, _) = load.totals();
    let mut terminated: HashSet<String> = HashSet::new();
    for _ in 0..3 {
        // FILTER, not WHERE: the terminate runs only for rows of this pool.
        let pids = admin_value(&format!(
            "SELECT coalesce(string_agg(pid::text, ',') FILTER (WHERE pg_terminate_backend(pid)), '') \
             FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .await
        .unwrap();
        terminated.extend(pids.split(',').filter(|p| !p.is_empty()).map(str::to_owned));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // pg_terminate_backend only sends a signal: the storm is over once those backends are gone.
    let gone_by = Instant::now() + Duration::from_secs(5);
    while sessions(&app)
        .await
        .iter()
        .any(|(pid, _, _)| terminated.contains(pid))
    {
        assert!(
            Instant::now() < gone_by,
            "terminated backends still alive after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let terminated = terminated.len();
    let storm_over = Instant::now();
    let recovery = load
        .wait_recovered(storm_over, Duration::from_secs(5))
        .await;
    let recovered_at = Instant::now();
    // Keep the load on: nothing may fail once recovered.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_later = load.failed_after(recovered_at);
    let (oks, errors, first_error) = load.totals();
    load.stop().await;

    let recovery = recovery.unwrap_or_else(|| {
        panic!("not all tasks succeeded within 5 s of the storm; first error: {first_error:?}")
    });
    assert!(
        !failed_later,
        "queries failed after recovery; first error: {first_error:?}"
    );
    assert_eq!(
        errors_before, 0,
        "failures before the storm: {first_error:?}"
    );
    assert!(terminated >= 4, "terminated only {terminated} backends");
    let after: HashSet<String> = sessions(&app)
        .await
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    assert!(
        after.is_disjoint(&before),
        "a terminated backend is still there: {before:?} / {after:?}"
    );
    check_own_results(&db, 100).await;
    eprintln!(
        "terminate_storm: {terminated} backends terminated in 3 rounds; {errors} failed calls, \
         {oks} ok; all tasks succeeding again {recovery:?} after the terminated backends were \
         gone (first error: {first_error:?})"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Restart a throwaway server under load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_server_under_load_recovers_within_seconds() {
    let mut cluster = tokio::task::spawn_blocking(TempCluster::start)
        .await
        .unwrap()
        .expect("start a throwaway cluster");
    let mut cfg = cluster.database_config("postgres");
    cfg.min_connections = 2;
    cfg.max_connections = 4;
    cfg.retry_attempts = 5;
    cfg.retry_delay = 0.1;
    cfg.command_timeout = 5.0;
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    db.connect().await.unwrap();
    let load = Load::start(&db, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(load.recovered(Instant::now() - Duration::from_millis(300)));

    let down_at = Instant::now();
    tokio::task::block_in_place(|| cluster.stop_server()).expect("stop the server");
    let stopped_in = down_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, errors_while_down, _) = load.totals();
    let up_at_start = Instant::now();
    tokio::task::block_in_place(|| cluster.start_server()).expect("start the server again");
    let up_at = Instant::now();
    let recovery = load.wait_recovered(up_at, Duration::from_secs(10)).await;
    let recovered_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_later = load.failed_after(recovered_at);
    let (oks, errors, first_error) = load.totals();
    load.stop().await;
    let outage = up_at.duration_since(down_at);

    let recovery = recovery.unwrap_or_else(|| {
        panic!(
            "the manager did not recover within 10 s of the restart; first error: {first_error:?}"
        )
    });
    assert!(
        errors_while_down > 0,
        "no call failed while the server was down"
    );
    assert!(
        !failed_later,
        "queries failed after recovery; first error: {first_error:?}"
    );
    check_own_results(&db, 50).await;
    db.disconnect().await.unwrap();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .expect("delete the cluster");
    eprintln!(
        "server_restart: stop took {stopped_in:?}, start took {:?}, outage {outage:?}; {errors} \
         failed calls, {oks} ok; all tasks succeeding again {recovery:?} after the server was up \
         (first error: {first_error:?})",
        up_at.duration_since(up_at_start)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A network that hangs: a TCP proxy that can stop forwarding
// ---------------------------------------------------------------------------------------------

/// Forwards TCP connections to `upstream`; [`freeze`](Proxy::freeze) stops moving bytes in
/// both directions while keeping every socket open, like a network that silently drops
/// packets. New connections are accepted while frozen, but nothing reaches the server.
struct Proxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, watch_rx) = watch::channel(false);
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tasks2 = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let a = tokio::spawn(pump(cr, sw, watch_rx.clone()));
                let b = tokio::spawn(pump(sr, cw, watch_rx.clone()));
                tasks2.lock().unwrap().extend([a, b]);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy {
            addr,
            frozen,
            tasks,
        }
    }

    fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Copies bytes from `from` to `to`, waiting while frozen before each read and each write.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The test server's address and credentials, from `DATABASE_URL`.
fn server() -> (SocketAddr, tokio_postgres::Config) {
    let cfg: tokio_postgres::Config = database_url().parse().unwrap();
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let host = if host == "localhost" {
        "127.0.0.1".into()
    } else {
        host
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    (format!("{host}:{port}").parse().unwrap(), cfg)
}

/// A call through a frozen network returns [`Error::Timeout`] at its deadline.
async fn times_out_at(db: &AsyncDatabaseManager, deadline: Duration, sql: &str) -> Duration {
    let started = Instant::now();
    let r = tokio::time::timeout(deadline * 4, db.fetch_value::<i32>(sql, &[])).await;
    let elapsed = started.elapsed();
    match r {
        Err(_) => panic!("{sql}: still hanging after {:?}", deadline * 4),
        Ok(Ok(v)) => panic!("{sql}: answered {v:?} through a frozen network"),
        Ok(Err(e)) => {
            assert!(e.is_timeout(), "{sql}: expected a timeout, got {e}");
            if let Error::Timeout { operation, .. } = &e {
                assert!(
                    operation.contains("SELECT"),
                    "{sql}: timed out on {operation:?}, not on the statement"
                );
            }
        }
    }
    assert!(
        elapsed >= deadline,
        "{sql}: returned early, after {elapsed:?}"
    );
    assert!(
        elapsed < deadline + Duration::from_millis(100),
        "{sql}: returned {elapsed:?} after the call for a {deadline:?} deadline"
    );
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_network_times_out_at_the_deadline_and_the_manager_recovers() {
    let (upstream, pg) = server();
    let proxy = Proxy::start(upstream).await;
    let schema = unique("faults_net");
    let _guard = SchemaGuard(schema.clone());
    let cfg = DatabaseConfig {
        host: proxy.addr.ip().to_string(),
        port: proxy.addr.port(),
        user: pg.get_user().unwrap_or("postgres").to_owned(),
        password: pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        database: pg.get_dbname().unwrap_or("postgres").to_owned(),
        schema: Some(schema),
        min_connections: 2,
        max_connections: 2,
        command_timeout: 2.0,
        retry_attempts: 0,
        ..Default::default()
    };
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    db.connect().await.unwrap();
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
    assert_eq!(db.get_pool_stats().await.unwrap().size, 2);

    proxy.freeze(true);
    let frozen_at = Instant::now();
    // command_timeout, on one pooled connection ...
    let by_command_timeout = times_out_at(&db, Duration::from_secs(2), "SELECT 2").await;
    // ... and a per-call timeout on the other.
    let by_call_timeout = times_out_at(
        &db.with_timeout(Duration::from_millis(300)),
        Duration::from_millis(300),
        "SELECT 3",
    )
    .await;

    // Their cancel requests go through the frozen proxy too and are never confirmed: both
    // connections must be closed, not returned to the pool.
    let mut closed_after = None;
    while frozen_at.elapsed() < Duration::from_secs(15) {
        if db.get_pool_stats().await.unwrap().size == 0 {
            closed_after = Some(frozen_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(closed_after) = closed_after else {
        panic!(
            "the timed-out connections were not closed: {:?}",
            db.get_pool_stats().await
        )
    };

    proxy.freeze(false);
    let thawed = Instant::now();
    for i in 0..20 {
        let v: Option<i32> = db.fetch_value("SELECT $1::int4", &[&i]).await.unwrap();
        assert_eq!(v, Some(i));
    }
    let back_after = thawed.elapsed();
    check_own_results(&db, 50).await;
    db.disconnect().await.unwrap();
    drop(proxy);
    eprintln!(
        "network_hang: command_timeout 2 s returned after {by_command_timeout:?} (overrun {:?}), \
         with_timeout 300 ms after {by_call_timeout:?} (overrun {:?}); unconfirmed connections \
         closed {closed_after:?} after the freeze; 20 queries ok {back_after:?} after thawing",
        by_command_timeout - Duration::from_secs(2),
        by_call_timeout - Duration::from_millis(300),
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A ledger of transactions that fail in every way
// ---------------------------------------------------------------------------------------------

const BUMP: &str = "UPDATE {{tables.counter}} SET n = n + 1 WHERE id = 1";
const ENTRY: &str = "INSERT INTO {{tables.ledger}} (key, amount) VALUES ($1, $2)";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    Commit,
    UniqueViolation,
    CheckViolation,
    SavepointRecovers,
    Rollback,
    Dropped,
    TimeoutBeforeLock,
    TimeoutHoldingLock,
    DroppedHalfway,
}

fn pick_fate(rng: &mut Rng) -> Fate {
    match rng.below(100) {
        0..55 => Fate::Commit,
        55..61 => Fate::UniqueViolation,
        61..67 => Fate::CheckViolation,
        67..73 => Fate::SavepointRecovers,
        73..79 => Fate::Rollback,
        79..85 => Fate::Dropped,
        85..90 => Fate::TimeoutBeforeLock,
        90..92 => Fate::TimeoutHoldingLock,
        _ => Fate::DroppedHalfway,
    }
}

/// One ledger transaction; `Ok(true)` when its commit returned `Ok`. Every failure the fate
/// calls for is asserted, and so is the failure of the commit that must follow it.
async fn ledger_tx(
    db: &AsyncDatabaseManager,
    fate: Fate,
    key: &str,
    rng: &mut Rng,
) -> pgdbm::Result<bool> {
    let amount = 1 + rng.below(100) as i32;
    match fate {
        Fate::Commit => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            tx.execute(ENTRY, &[&key, &amount]).await?;
            tx.commit().await?;
            Ok(true)
        }
        Fate::UniqueViolation | Fate::CheckViolation => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            let err = if fate == Fate::UniqueViolation {
                tx.execute(ENTRY, &[&key, &amount]).await?;
                let e = tx.execute(ENTRY, &[&key, &amount]).await.unwrap_err();
                assert!(e.is_unique_violation(), "{e}");
                e
            } else {
                let e = tx.execute(ENTRY, &[&key, &-1_i32]).await.unwrap_err();
                assert!(e.is_check_violation(), "{e}");
                e
            };
            let c = tx.commit().await;
            assert!(
                matches!(c, Err(Error::Transaction(_))),
                "commit after {err} returned {c:?}"
            );
            Ok(false)
        }
        Fate::SavepointRecovers => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            let sp = tx.transaction().await?;
            let e = sp.execute(ENTRY, &[&key, &-1_i32]).await.unwrap_err();
            assert!(e.is_check_violation(), "{e}");
            if rng.below(2) == 0 {
                sp.rollback().await?;
            } else {
                drop(sp);
            }
            tx.execute(ENTRY, &[&key, &amount]).await?;
            tx.commit().await?;
            Ok(true)
        }
        Fate::Rollback => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            tx.execute(ENTRY, &[&key, &amount]).await?;
            tx.rollback().await?;
            Ok(false)
        }
        Fate::Dropped => {
            let tx = db.transaction().await?;
            tx.execute(BUMP, &[]).await?;
            tx.execute(ENTRY, &[&key, &amount]).await?;
            drop(tx);
            Ok(false)
        }
        Fate::TimeoutBeforeLock | Fate::TimeoutHoldingLock => {
            let limit = Duration::from_millis(40);
            // Under a 40 ms limit any step may time out, the wait for a connection or the
            // row lock included; what matters is that nothing commits.
            let Ok(tx) = db.with_timeout(limit).transaction().await else {
                return Ok(false);
            };
            if fate == Fate::TimeoutHoldingLock {
                let _ = tx.execute(BUMP, &[]).await;
                let _ = tx.execute(ENTRY, &[&key, &amount]).await;
            }
            let slept = tx.execute("SELECT pg_sleep(5)", &[]).await;
            assert!(slept.is_err(), "pg_sleep(5) finished within {limit:?}");
            if fate == Fate::TimeoutBeforeLock {
                assert!(slept.as_ref().unwrap_err().is_timeout(), "{slept:?}");
                let after = tx.execute(BUMP, &[]).await;
                assert!(after.is_err(), "a statement ran after a timeout: {after:?}");
            }
            let c = tx.commit().await;
            assert!(c.is_err(), "commit after a timeout returned {c:?}");
            Ok(false)
        }
        Fate::DroppedHalfway => {
            let tx = db.transaction().await?;
            let cut = Duration::from_micros(rng.below(3_000));
            let body = async {
                tx.execute(BUMP, &[]).await?;
                tx.execute(ENTRY, &[&key, &amount]).await?;
                Ok::<(), pgdbm::Error>(())
            };
            match tokio::time::timeout(cut, body).await {
                Ok(r) => {
                    r?;
                    tx.commit().await?;
                    Ok(true)
                }
                Err(_) => {
                    let c = tx.commit().await;
                    assert!(
                        matches!(c, Err(Error::Transaction(_))),
                        "commit after a statement dropped halfway returned {c:?}"
                    );
                    Ok(false)
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_counts_match_successful_commits() {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 150;
    let seed = seed(0xFA17_0005);
    let app = unique("faults_ledger");
    let (db, _guard) = schema_db_with(|c| {
        c.min_connections = 2;
        c.max_connections = 6;
        with_app(c, &app);
    })
    .await;
    db.execute(
        "CREATE TABLE {{tables.counter}} (id int4 PRIMARY KEY, n int8 NOT NULL); \
         INSERT INTO {{tables.counter}} VALUES (1, 0); \
         CREATE TABLE {{tables.ledger}} (key text PRIMARY KEY, amount int4 NOT NULL CHECK (amount >= 0))",
        &[],
    )
    .await
    .unwrap();

    let started = Instant::now();
    let tasks = (0..TASKS).map(|t| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0xA076_1D64_78BD_642F));
            let mut committed = Vec::new();
            let mut fates: BTreeMap<(Fate, bool), u32> = BTreeMap::new();
            for i in 0..PER_TASK {
                let fate = pick_fate(&mut rng);
                let key = format!("t{t}-{i}");
                let ok = ledger_tx(&db, fate, &key, &mut rng)
                    .await
                    .unwrap_or_else(|e| panic!("{key} ({fate:?}) failed unexpectedly: {e}"));
                *fates.entry((fate, ok)).or_default() += 1;
                if ok {
                    committed.push(key);
                }
            }
            (committed, fates)
        })
    });
    let mut committed = HashSet::new();
    let mut fates: BTreeMap<(Fate, bool), u32> = BTreeMap::new();
    for r in futures_util::future::join_all(tasks).await {
        let (keys, f) = r.expect("ledger task panicked");
        committed.extend(keys);
        for (k, v) in f {
            *fates.entry(k).or_default() += v;
        }
    }
    let ran_for = started.elapsed();
    let settled = settle(&db, &app, Duration::from_secs(15)).await;
    assert_no_open_transaction(&app).await;
    let settled = settled.unwrap_or_else(|s| panic!("the pool did not settle: {s:?}"));

    let counter: i64 = db
        .fetch_value("SELECT n FROM {{tables.counter}} WHERE id = 1", &[])
        .await
        .unwrap()
        .unwrap();
    let keys: HashSet<String> = db
        .fetch_all("SELECT key FROM {{tables.ledger}}", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get::<String>(0).unwrap())
        .collect();
    let missing: Vec<_> = committed.difference(&keys).take(5).collect();
    let extra: Vec<_> = keys.difference(&committed).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "committed but missing: {missing:?}; present but not committed: {extra:?}"
    );
    assert_eq!(
        counter,
        committed.len() as i64,
        "counter vs successful commits"
    );
    for fate in [
        Fate::Commit,
        Fate::UniqueViolation,
        Fate::CheckViolation,
        Fate::SavepointRecovers,
        Fate::Rollback,
        Fate::Dropped,
        Fate::TimeoutBeforeLock,
        Fate::TimeoutHoldingLock,
        Fate::DroppedHalfway,
    ] {
        assert!(
            fates.keys().any(|(f, _)| *f == fate),
            "{fate:?} never happened"
        );
    }
    assert!(
        fates.contains_key(&(Fate::DroppedHalfway, false)),
        "no transaction was dropped halfway: {fates:?}"
    );
    check_own_results(&db, 100).await;
    eprintln!(
        "ledger: seed {seed}, {} transactions in {ran_for:?}, {} committed, counter {counter}, \
         settled in {settled:?}; (fate, committed) counts: {fates:?}",
        TASKS * PER_TASK,
        committed.len()
    );
}
