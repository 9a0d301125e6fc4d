//! One slice of one in-process contender. A timed slice counts only the operations that
//! complete inside a steady-state window: it opens once every task has run one operation and a
//! warm-in (a tenth of the budget; longer for the tenant workloads) has passed, and it ends at
//! the deadline, so neither the first use of new connections, nor the ramp-up, nor the drain
//! after the deadline biases the rate.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgdbm::AsyncDatabaseManager;
use tokio::task::JoinSet;

use crate::contender::Live;
use crate::ops::{self, RawConn, Sqls};
use crate::tenants::{self, Memory};
use crate::workload::{bulk_rows, split, BulkRow, Kind, Workload, XorShift};
use crate::BoxError;

/// The budget of one slice.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Every task runs operations for a warm-in of a tenth of this, then this long counted.
    Time(Duration),
    /// The tasks share this many operations; the slice lasts until the last one finishes.
    Ops(u64),
    /// An operation of this many rows split across the tasks, repeated; counts rows.
    Rows(usize, usize),
}

impl Budget {
    pub fn for_workload(w: Workload, conc: usize, time: Duration, fixed_ops: Option<u64>) -> Self {
        match (w.kind(), fixed_ops) {
            (Kind::Bulk(rows, repeat), _) => Budget::Rows(rows, repeat),
            (_, Some(n)) => Budget::Ops(n),
            (Kind::Counted, None) => Budget::Ops(conc as u64),
            (Kind::Timed, None) => Budget::Time(time),
        }
    }
}

/// Operations (rows for bulk workloads) counted and the seconds they were counted over, plus
/// the benchmark process's own CPU time for the whole slice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub ops: u64,
    pub secs: f64,
    pub all_ops: u64,
    /// `None` out of process, or where /proc is not available.
    pub cpu_ns: Option<u64>,
    /// Server and client memory at the end of the slice (the tenant workloads only).
    pub memory: Option<Memory>,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// CPU time of this process so far, in ns: the sum over its threads of
/// `/proc/self/task/*/schedstat` (time on CPU).
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// What one task holds: its own connection (raw) or a handle on the shared pool.
enum Handle {
    Pgdbm(AsyncDatabaseManager),
    PgdbmSerde(AsyncDatabaseManager),
    PgdbmTraced(AsyncDatabaseManager, tracing::Dispatch),
    PgdbmTenants(Arc<[AsyncDatabaseManager]>),
    Raw(RawConn),
    Deadpool(deadpool_postgres::Pool),
    Sqlx(sqlx::PgPool),
}

impl Handle {
    async fn op(
        &mut self,
        sqls: &Sqls,
        w: Workload,
        rng: &mut XorShift,
    ) -> Result<usize, BoxError> {
        match self {
            Handle::Pgdbm(db) => ops::pgdbm_op(db, w, rng).await,
            Handle::PgdbmTraced(db, subscriber) => {
                use tracing::instrument::WithSubscriber;
                ops::pgdbm_op(db, w, rng)
                    .with_subscriber(subscriber.clone())
                    .await
            }
            Handle::PgdbmSerde(db) => ops::pgdbm_serde_op(db, w).await,
            Handle::PgdbmTenants(managers) => tenants::pgdbm_op(managers, w, rng).await,
            Handle::Raw(c) => ops::raw_op(c, w, rng).await,
            Handle::Deadpool(p) => ops::deadpool_op(p, sqls, w, rng).await,
            Handle::Sqlx(p) => ops::sqlx_op(p, sqls, w, rng).await,
        }
    }

    async fn bulk(&mut self, sqls: &Sqls, w: Workload, rows: &[BulkRow]) -> Result<(), BoxError> {
        match self {
            Handle::Pgdbm(db) | Handle::PgdbmSerde(db) | Handle::PgdbmTraced(db, _) => {
                ops::pgdbm_bulk(db, w, rows).await
            }
            Handle::PgdbmTenants(_) => Err("no bulk workload on tenants".into()),
            Handle::Raw(c) => ops::raw_bulk(c, sqls, w, rows).await,
            Handle::Deadpool(p) => ops::deadpool_bulk(p, sqls, w, rows).await,
            Handle::Sqlx(p) => ops::sqlx_bulk(p, sqls, w, rows).await,
        }
    }
}

/// Splits an open contender into `conc` task handles, keeping what closes it.
fn handles(live: Live, conc: usize) -> (Vec<Handle>, Option<Live>) {
    match live {
        Live::Raw(conns) => (conns.into_iter().map(Handle::Raw).collect(), None),
        Live::Pgdbm(db) => (
            (0..conc).map(|_| Handle::Pgdbm(db.clone())).collect(),
            Some(Live::Pgdbm(db)),
        ),
        Live::PgdbmTraced(db, d) => (
            (0..conc)
                .map(|_| Handle::PgdbmTraced(db.clone(), d.clone()))
                .collect(),
            Some(Live::PgdbmTraced(db, d)),
        ),
        Live::PgdbmTenants(pool, managers) => (
            (0..conc)
                .map(|_| Handle::PgdbmTenants(managers.clone()))
                .collect(),
            Some(Live::PgdbmTenants(pool, managers)),
        ),
        Live::PgdbmSerde(db) => (
            (0..conc).map(|_| Handle::PgdbmSerde(db.clone())).collect(),
            Some(Live::PgdbmSerde(db)),
        ),
        Live::Deadpool(p) => (
            (0..conc).map(|_| Handle::Deadpool(p.clone())).collect(),
            Some(Live::Deadpool(p)),
        ),
        Live::Sqlx(p) => (
            (0..conc).map(|_| Handle::Sqlx(p.clone())).collect(),
            Some(Live::Sqlx(p)),
        ),
    }
}

/// Runs one slice of `w` on `conc` tasks, then closes the contender.
pub async fn slice(
    live: Live,
    sqls: &Arc<Sqls>,
    w: Workload,
    conc: usize,
    budget: Budget,
    seed: u64,
) -> Result<Sample, BoxError> {
    let (result, closer) = slice_open(live, sqls, w, conc, budget, seed).await;
    let mut memory = None;
    if let Some(live) = closer {
        if result.is_ok() && w.tenants().is_some() {
            memory = tenants::memory(&live, conc).await;
        }
        live.close().await;
    }
    Ok(Sample { memory, ..result? })
}

/// Runs one slice of `w` on `conc` tasks and hands back what closes the contender (`None` for
/// raw connections, closed already), to be looked at first.
/// How long a timed slice runs before its window opens: a tenth of the budget, and for the
/// tenant workloads at least [`TENANT_WARM_IN`].
fn warm_in(w: Workload, budget: Duration) -> Duration {
    let tenth = budget / 10;
    if w.tenants().is_some() {
        tenth.max(TENANT_WARM_IN)
    } else {
        tenth
    }
}

/// A fresh pool meets each of the 10,000 texts of the many-tenants workload for the first time
/// and prepares it; the figures are for a pool past that, as in a long-running service. Eight
/// seconds is about 100,000 calls here: pgdbm's pool has sent every schema's calls to its
/// home connection and prepared each statement there by then.
const TENANT_WARM_IN: Duration = Duration::from_secs(8);

pub async fn slice_open(
    live: Live,
    sqls: &Arc<Sqls>,
    w: Workload,
    conc: usize,
    budget: Budget,
    seed: u64,
) -> (Result<Sample, BoxError>, Option<Live>) {
    let (handles, closer) = handles(live, conc);
    // Bulk rows are built before the clock starts.
    let parts: Vec<Option<Vec<BulkRow>>> = match budget {
        Budget::Rows(total, _) => split(total, conc)
            .into_iter()
            .map(|(from, to)| Some(bulk_rows(from, to)))
            .collect(),
        _ => (0..conc).map(|_| None).collect(),
    };
    let remaining = Arc::new(AtomicI64::new(match budget {
        Budget::Ops(n) => n as i64,
        _ => 0,
    }));
    let cpu_before = process_cpu_ns();
    let start = Instant::now();
    // Timed slices: every task runs one operation uncounted (the first use of a connection
    // prepares statements, and asyncpg introspects types), then the window opens for all at
    // once, a warm-in later.
    let ready = Arc::new(tokio::sync::Barrier::new(conc));
    let window = match budget {
        Budget::Time(d) => Some(d),
        _ => None,
    };
    // A JoinSet aborts its tasks when dropped (on Ctrl-C, or when a sibling fails).
    let mut tasks = JoinSet::new();
    for (task, (mut handle, part)) in handles.into_iter().zip(parts).enumerate() {
        let remaining = remaining.clone();
        let sqls = sqls.clone();
        let mut rng = XorShift::new(seed.wrapping_mul(1_000_003).wrapping_add(task as u64));
        let ready = ready.clone();
        tasks.spawn(async move {
            if let Some(rows) = part {
                let repeat = match budget {
                    Budget::Rows(_, repeat) => repeat,
                    _ => 1,
                };
                for _ in 0..repeat {
                    handle.bulk(&sqls, w, &rows).await?;
                }
                return Ok::<(u64, u64), BoxError>(((rows.len() * repeat) as u64, repeat as u64));
            }
            let (mut counted, mut all) = (0u64, 0u64);
            let window = match window {
                Some(d) => {
                    handle.op(&sqls, w, &mut rng).await?;
                    all += 1;
                    ready.wait().await;
                    let from = Instant::now() + warm_in(w, d);
                    Some((from, from + d))
                }
                None => None,
            };
            loop {
                if window.is_none() && remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    break;
                }
                handle.op(&sqls, w, &mut rng).await?;
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
            Ok((counted, all))
        });
    }
    let mut result = Ok(());
    let (mut ops, mut all_ops) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| BoxError::from(format!("benchmark task failed: {e}"))) {
            Ok(Ok((counted, all))) => {
                ops += counted;
                all_ops += all;
            }
            // The first failure is the cause; the aborted siblings' errors are not.
            Ok(Err(e)) | Err(e) if result.is_ok() => {
                result = Err(e);
                tasks.abort_all();
            }
            _ => {}
        }
    }
    let secs = match budget {
        Budget::Time(d) => d.as_secs_f64(),
        _ => start.elapsed().as_secs_f64(),
    };
    let cpu_ns = match (cpu_before, process_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let sample = result.map(|()| Sample {
        ops,
        secs,
        all_ops,
        cpu_ns,
        memory: None,
    });
    (sample, closer)
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
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
