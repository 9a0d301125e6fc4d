//! Fault injection: calls aborted at random points, backends terminated under load, a server
//! restarted under load, a network that hangs, and a ledger of transactions that fail in every
//! way we know of. Each test works in its own schema (or its own throwaway cluster) with a
//! pool of its own, tagged with a unique `application_name` so that `pg_stat_activity` shows
//! only its sessions.
//!
//! Randomness is a seeded xorshift: set `FAULTS_SEED` to replay a run. Run with
//! `--nocapture` to read the measured figures.

#[path = "../common/mod.rs"]
mod common;

mod aborts;
mod ledger;
mod load;
mod network;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{admin, database_url};
use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

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
