//! The multiplexing benchmark (`--mux`): point selects ([`SQL_POINT`]) from [`CALLERS`]
//! callers, on loopback and through a [`LatencyProxy`](pgdbm::testing::LatencyProxy) adding
//! each of [`LATENCIES`] each way, for pgdbm with `multiplexing` on 4 and 8 connections against
//! pgdbm with exclusive connections (4, 8, 64), deadpool-postgres (64) and sqlx (64).
//!
//! Every slice is the suite's own (`measure::slice_open`): the contender's pool is opened,
//! every caller runs one select uncounted, a warm-in of a tenth of the budget passes, then the
//! budget is counted. Meanwhile the server sessions of the contender, told apart by their
//! `application_name`, are counted in `pg_stat_activity` from the admin connection every
//! [`SAMPLE`]; the most seen is reported. Before a multiplexing pool is closed its
//! `shared_calls` are read: a multiplexing contender none of whose calls ran on a shared
//! connection fails the run. The contenders' order is rotated and reversed from round to round,
//! as in the suite; between two slices the previous contender's sessions are waited out.
//!
//! [`SQL_POINT`]: crate::workload::SQL_POINT

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::args::Options;
use crate::contender::{self, Live, Pool, Who};
use crate::live::Sqls;
use crate::measure::{self, median, Budget};
use crate::workload::{Workload, XorShift};
use crate::BoxError;

/// Callers running point selects at once.
pub const CALLERS: usize = 64;
/// The one-way latencies added; zero is the server directly, without a proxy.
pub const LATENCIES: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_micros(500),
    Duration::from_millis(2),
];
/// How often the server sessions are counted while a contender runs.
const SAMPLE: Duration = Duration::from_millis(25);
/// Sequential selects timed for the measured round trip of each latency.
const ROUND_TRIPS: usize = 100;

/// One contender of the multiplexing benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub key: &'static str,
    pub label: &'static str,
    pub who: Who,
    /// The pool's connections (`max_connections` for pgdbm, `max_size` for deadpool,
    /// `max_connections` for sqlx); all opened before the slice.
    pub size: usize,
    pub multiplexing: bool,
}

const fn side(key: &'static str, label: &'static str, who: Who, size: usize, mux: bool) -> Side {
    Side {
        key,
        label,
        who,
        size,
        multiplexing: mux,
    }
}

pub const SIDES: [Side; 7] = [
    side("pgdbm-mux4", "pgdbm-rs mux 4", Who::Pgdbm, 4, true),
    side("pgdbm-mux8", "pgdbm-rs mux 8", Who::Pgdbm, 8, true),
    side("pgdbm-4", "pgdbm-rs 4", Who::Pgdbm, 4, false),
    side("pgdbm-8", "pgdbm-rs 8", Who::Pgdbm, 8, false),
    side("pgdbm-64", "pgdbm-rs 64", Who::Pgdbm, 64, false),
    side("deadpool-64", "deadpool-pg 64", Who::Deadpool, 64, false),
    side("sqlx-64", "sqlx 0.9 64", Who::Sqlx, 64, false),
];

/// One contender at one latency, every round.
#[derive(Debug, Clone)]
pub struct Cell {
    pub side: Side,
    pub latency: Duration,
    /// ops/s per round.
    pub rates: Vec<f64>,
    /// The most server sessions seen per round.
    pub sessions: Vec<i64>,
    /// Calls on shared connections per round (multiplexing contenders only).
    pub shared_calls: Vec<u64>,
    /// The most connections seen shared at once per round (multiplexing contenders only).
    pub shared_conns: Vec<usize>,
    /// Every operation per round, warm-in included (what `shared_calls` is out of).
    pub all_ops: Vec<u64>,
}

impl Cell {
    pub fn median(&self) -> Option<f64> {
        Some(median(&self.rates)).filter(|m| m.is_finite())
    }

    /// (max - min) / median of the rounds.
    pub fn spread(&self) -> Option<f64> {
        let min = self.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((max - min) / self.median()?).filter(|s| s.is_finite())
    }

    /// The most server sessions seen in any round.
    pub fn sessions(&self) -> Option<i64> {
        self.sessions.iter().copied().max()
    }
}

/// Everything one `--mux` run measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub rounds: usize,
    pub duration: Duration,
    pub cells: Vec<Cell>,
    /// Per latency, the median round trip of one sequential point select on one
    /// tokio-postgres connection: what the proxy really adds (its timer has 1 ms steps).
    pub round_trips: Vec<(Duration, Duration)>,
}

impl Results {
    pub fn cell(&self, key: &str, latency: Duration) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.side.key == key && c.latency == latency)
    }

    pub fn median(&self, key: &str, latency: Duration) -> Option<f64> {
        self.cell(key, latency)?.median()
    }

    /// Median of `a` over median of `b` at `latency`, and the lowest and highest ratio of
    /// rounds run side by side.
    pub fn ratio(&self, a: &str, b: &str, latency: Duration) -> Option<(f64, f64, f64)> {
        let (x, y) = (self.cell(a, latency)?, self.cell(b, latency)?);
        let per_round: Vec<f64> = x.rates.iter().zip(&y.rates).map(|(p, q)| p / q).collect();
        let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((x.median()? / y.median()?, lo, hi))
    }
}

/// "loopback", "+0.5 ms": how a latency is named in tables.
pub fn latency_name(latency: Duration) -> String {
    if latency.is_zero() {
        "loopback".into()
    } else {
        format!("+{} ms", latency.as_secs_f64() * 1e3)
    }
}

/// The `application_name` of a contender's sessions in this run.
fn application_name(side: Side) -> String {
    format!("pgdbm_bench_mux_{}_{}", side.key, std::process::id())
}

pub async fn run(opts: &Options, admin: &Client, schema: &str) -> Result<Results, BoxError> {
    let sqls = Arc::new(Sqls::new(schema));
    let budget = Budget::Time(opts.duration);
    let mut results = Results {
        rounds: opts.rounds,
        duration: opts.duration,
        cells: Vec::new(),
        round_trips: Vec::new(),
    };
    for latency in LATENCIES {
        // Zero: the server itself, no proxy in between.
        let far = match latency.is_zero() {
            true => None,
            false => Some(crate::far::start(&opts.database_url, latency).await?),
        };
        let url = far.as_ref().map_or(&opts.database_url, |f| &f.url);
        let rtt = round_trip(url, &sqls).await?;
        eprintln!(
            "mux {}: one sequential point select takes {:.3} ms",
            latency_name(latency),
            rtt.as_secs_f64() * 1e3
        );
        results.round_trips.push((latency, rtt));
        let mut cells: Vec<Cell> = SIDES
            .iter()
            .map(|&side| Cell {
                side,
                latency,
                rates: Vec::new(),
                sessions: Vec::new(),
                shared_calls: Vec::new(),
                shared_conns: Vec::new(),
                all_ops: Vec::new(),
            })
            .collect();
        for round in 0..opts.rounds {
            let mut order: Vec<usize> = (0..SIDES.len()).collect();
            order.rotate_left(round % SIDES.len());
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let cell = &mut cells[i];
                let m = one(admin, url, &sqls, cell.side, budget, round as u64)
                    .await
                    .map_err(|e| {
                        format!(
                            "{} point select @{CALLERS}, {}: {e}",
                            cell.side.label,
                            latency_name(latency)
                        )
                    })?;
                cell.rates.push(m.rate);
                cell.sessions.push(m.sessions);
                cell.all_ops.push(m.all_ops);
                if let Some((calls, conns)) = m.shared {
                    cell.shared_calls.push(calls);
                    cell.shared_conns.push(conns);
                }
            }
            let line: Vec<String> = cells
                .iter()
                .map(|c| {
                    let shared = match (c.shared_calls.get(round), c.shared_conns.get(round)) {
                        (Some(n), Some(k)) => format!(", {n} calls on {k} shared"),
                        _ => String::new(),
                    };
                    format!(
                        "{} {:.0} ({} sessions{shared})",
                        c.side.key, c.rates[round], c.sessions[round]
                    )
                })
                .collect();
            eprintln!(
                "  mux {:<9} round {}/{}: {}",
                latency_name(latency),
                round + 1,
                opts.rounds,
                line.join("  ")
            );
        }
        results.cells.extend(cells);
    }
    Ok(results)
}

/// What one slice of one contender gave.
struct Measured {
    rate: f64,
    sessions: i64,
    /// Calls on shared connections, and the most connections shared at once.
    shared: Option<(u64, usize)>,
    all_ops: u64,
}

async fn one(
    admin: &Client,
    url: &str,
    sqls: &Arc<Sqls>,
    side: Side,
    budget: Budget,
    seed: u64,
) -> Result<Measured, BoxError> {
    let name = application_name(side);
    let pool = Pool {
        size: side.size,
        multiplexing: side.multiplexing,
        application_name: Some(&name),
    };
    let live = contender::open_with(side.who, url, sqls, pool).await?;
    let db = match &live {
        Live::Pgdbm(db) if side.multiplexing => Some(db.clone()),
        _ => None,
    };
    let done = AtomicBool::new(false);
    let slice = async {
        let point = Workload::PointSelect;
        let out = measure::slice_open(live, sqls, point, CALLERS, budget, seed).await;
        done.store(true, Ordering::Release);
        out
    };
    let watch = async {
        let (mut most, mut shared) = (0, 0);
        while !done.load(Ordering::Acquire) {
            most = most.max(sessions(admin, &name).await?);
            if let Some(db) = &db {
                shared = shared.max(db.get_pool_stats().await?.shared.len());
            }
            tokio::time::sleep(SAMPLE).await;
        }
        Ok::<(i64, usize), BoxError>((most, shared))
    };
    let ((sample, closer), most) = tokio::join!(slice, watch);
    // Before closing: the sessions once more, and the pool's count of shared calls.
    let last = sessions(admin, &name).await;
    let stats = match &db {
        Some(db) => Some(db.get_pool_stats().await),
        None => None,
    };
    drop(db);
    if let Some(live) = closer {
        live.close().await;
    }
    wait_gone(admin, &name).await?;
    let sample = sample?;
    let (most, shared_most) = most?;
    let sessions = most.max(last?);
    let shared = match stats.transpose()? {
        Some(s) => Some((s.shared_calls, shared_most.max(s.shared.len()))),
        None => None,
    };
    if side.multiplexing && shared.is_none_or(|(calls, _)| calls == 0) {
        return Err(format!(
            "{}: no call ran on a shared connection ({} calls, pool stats shared_calls = 0): \
             the multiplexed path was not taken",
            side.key, sample.all_ops
        )
        .into());
    }
    Ok(Measured {
        rate: sample.rate(),
        sessions,
        shared,
        all_ops: sample.all_ops,
    })
}

/// Server sessions with `application_name` `name` now.
async fn sessions(admin: &Client, name: &str) -> Result<i64, BoxError> {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await?;
    Ok(row.get(0))
}

/// Waits (up to 10 s) until the sessions of `name` have ended, so that the next contender
/// starts on a quiet server and within its `max_connections`.
async fn wait_gone(admin: &Client, name: &str) -> Result<(), BoxError> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left = sessions(admin, name).await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > until {
            eprintln!("  ({left} sessions of {name} still open after 10 s; going on)");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The median time of one point select on one tokio-postgres connection to `url`, one after
/// the other.
async fn round_trip(url: &str, sqls: &Sqls) -> Result<Duration, BoxError> {
    let client = crate::setup::connect(url).await?;
    let stmt = client.prepare(sqls.read(Workload::PointSelect)).await?;
    let mut rng = XorShift::new(7);
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 10 {
        let start = Instant::now();
        let row = client.query_opt(&stmt, &[&rng.id()]).await?;
        if row.is_none() {
            return Err("the point select found no row".into());
        }
        // The first ten warm the connection up.
        if i >= 10 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(Duration::from_secs_f64(median(&times)))
}
