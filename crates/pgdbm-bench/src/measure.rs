//! Measurement. A round gives each side the same budget, cut into short slices run in
//! alternation (A B B A A B …), so that the load bursts of a shared machine hit both sides
//! alike. A timed slice counts only the operations that complete inside a steady-state window:
//! it starts after a short warm-in and ends at the deadline, so neither the ramp-up of the
//! tasks nor the drain of in-flight operations after the deadline biases the rate.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdbm::AsyncDatabaseManager;
use tokio::task::JoinSet;

use crate::workload::{pgdbm_op, raw_op, RawConn, Workload, XorShift};
use crate::BoxError;

/// One side of the comparison.
#[derive(Clone)]
pub enum Contender {
    Pgdbm(AsyncDatabaseManager),
    Raw(Arc<Vec<RawConn>>),
}

/// The budget of one slice.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Every task runs operations for a warm-in of a tenth of this, then this long counted.
    Time(Duration),
    /// The tasks share this many operations; the slice lasts until the last one finishes.
    Ops(u64),
}

/// Operations counted and the time they were counted over, plus the benchmark process's own
/// CPU time for all operations of the slice (warm-in and drain included).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub ops: u64,
    pub secs: f64,
    pub all_ops: u64,
    /// `None` where /proc is not available.
    pub cpu_ns: Option<u64>,
}

impl Sample {
    pub fn add(&mut self, other: Sample) {
        let first = self.all_ops == 0;
        self.ops += other.ops;
        self.secs += other.secs;
        self.all_ops += other.all_ops;
        self.cpu_ns = match (first, self.cpu_ns, other.cpu_ns) {
            (true, _, b) => b,
            (false, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    /// Client CPU microseconds per operation (user + system, all threads of this process).
    pub fn cpu_us_per_op(&self) -> f64 {
        match self.cpu_ns {
            Some(ns) if self.all_ops > 0 => ns as f64 / 1000.0 / self.all_ops as f64,
            _ => f64::NAN,
        }
    }
}

/// CPU time of this process so far, in ns: the sum over its threads of
/// `/proc/self/task/*/schedstat` (time on CPU). The runtime's threads live for the whole run.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Runs one slice of `w` on `conc` tasks.
pub async fn slice(
    side: &Contender,
    w: Workload,
    conc: usize,
    budget: Budget,
    seed: u64,
) -> Result<Sample, BoxError> {
    let remaining = Arc::new(AtomicI64::new(match budget {
        Budget::Ops(n) => n as i64,
        Budget::Time(_) => 0,
    }));
    let cpu_before = process_cpu_ns();
    let start = Instant::now();
    // (window start, window end = stop)
    let window = match budget {
        Budget::Time(d) => {
            let from = start + d / 10;
            Some((from, from + d))
        }
        Budget::Ops(_) => None,
    };
    // A JoinSet aborts its tasks when dropped (on Ctrl-C, or when a sibling fails).
    let mut tasks = JoinSet::new();
    for task in 0..conc {
        let side = side.clone();
        let remaining = remaining.clone();
        let mut rng = XorShift::new(seed.wrapping_mul(1_000_003).wrapping_add(task as u64));
        tasks.spawn(async move {
            let (mut counted, mut all) = (0u64, 0u64);
            loop {
                if window.is_none() && remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    break;
                }
                match &side {
                    Contender::Pgdbm(db) => pgdbm_op(db, w, &mut rng).await?,
                    Contender::Raw(conns) => raw_op(&conns[task], w, &mut rng).await?,
                };
                all += 1;
                match window {
                    None => counted += 1,
                    Some((from, to)) => {
                        let now = Instant::now();
                        if now >= to {
                            break;
                        }
                        if now >= from {
                            counted += 1;
                        }
                    }
                }
            }
            Ok::<(u64, u64), BoxError>((counted, all))
        });
    }
    let (mut ops, mut all_ops) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (counted, all) = joined.map_err(|e| format!("benchmark task failed: {e}"))??;
        ops += counted;
        all_ops += all;
    }
    let cpu_ns = match (cpu_before, process_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let secs = match budget {
        Budget::Time(d) => d.as_secs_f64(),
        Budget::Ops(_) => start.elapsed().as_secs_f64(),
    };
    Ok(Sample {
        ops,
        secs,
        all_ops,
        cpu_ns,
    })
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The per-round figures (ops/s) of one (workload, concurrency) pair.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub workload: Workload,
    pub conc: usize,
    pub pgdbm: Vec<f64>,
    pub raw: Vec<f64>,
    /// Client CPU µs per operation over all rounds.
    pub pgdbm_cpu_us: f64,
    pub raw_cpu_us: f64,
}

impl Outcome {
    pub fn pgdbm_median(&self) -> f64 {
        median(&self.pgdbm)
    }

    pub fn raw_median(&self) -> f64 {
        median(&self.raw)
    }

    /// Median pgdbm ops/s over median raw ops/s.
    pub fn ratio(&self) -> f64 {
        self.pgdbm_median() / self.raw_median()
    }

    /// Min and max of the per-round ratios.
    pub fn ratio_range(&self) -> (f64, f64) {
        let ratios: Vec<f64> = self
            .pgdbm
            .iter()
            .zip(&self.raw)
            .map(|(p, r)| p / r)
            .collect();
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
}
