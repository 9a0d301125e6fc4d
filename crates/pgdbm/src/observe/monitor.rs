//! The query monitor: counters, a bounded history and slow-query warnings for every operation of
//! a manager and of its transactions.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::query::{Recorded, Recorder};
use crate::stats::PoolStats;

/// How a monitor records.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Calls at least this long are slow: logged as a `tracing` warning (target
    /// `pgdbm::monitor`) and counted. Default one second; must not be zero.
    pub slow_query_threshold: Duration,
    /// Calls kept in the history, oldest evicted first. Default 1,000; between 1 and 1,000,000.
    pub max_history_size: usize,
    /// Keep each call's arguments in the history, masked as in logs (a string over 20
    /// characters shows only its length). Off by default.
    pub record_args: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            slow_query_threshold: Duration::from_secs(1),
            max_history_size: 1000,
            record_args: false,
        }
    }
}

const MAX_HISTORY: usize = 1_000_000;

impl MonitorConfig {
    fn validate(&self) -> Result<()> {
        check_threshold(self.slow_query_threshold, "slow_query_threshold")?;
        if self.max_history_size == 0 || self.max_history_size > MAX_HISTORY {
            return Err(Error::Configuration {
                field: "max_history_size",
                message: format!(
                    "must be between 1 and {MAX_HISTORY}, got {}",
                    self.max_history_size
                ),
            });
        }
        Ok(())
    }
}

fn check_threshold(threshold: Duration, field: &'static str) -> Result<()> {
    if threshold.is_zero() {
        return Err(Error::Configuration {
            field,
            message: "must be greater than zero (every call would count as slow)".into(),
        });
    }
    Ok(())
}

/// One recorded call.
#[derive(Debug, Clone, Serialize)]
pub struct QueryRecord {
    /// The method called: `fetch_all`, `executemany`, `commit`…
    pub operation: &'static str,
    /// The query as passed, templates not yet rendered.
    pub query: String,
    /// The arguments, masked; only with [`MonitorConfig::record_args`].
    pub args: Option<String>,
    /// When the call started (wall clock).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// How long the call took (monotonic clock).
    #[serde(rename = "duration_ms", serialize_with = "super::serialize_millis")]
    pub duration: Duration,
    /// Rows returned (fetches) or affected (statements), when known.
    pub rows: Option<u64>,
    /// The error, if the call failed.
    pub error: Option<String>,
}

/// What the monitor has seen, and the pool's figures now.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorMetrics {
    /// Calls recorded since the monitor was created or [reset](MonitoredAsyncDatabaseManager::reset).
    pub queries_executed: u64,
    /// Of these, the failed ones.
    pub queries_failed: u64,
    /// Of these, the ones at or over the slow-query threshold.
    pub slow_queries: u64,
    /// Total time of all calls.
    #[serde(
        rename = "total_duration_ms",
        serialize_with = "super::serialize_millis"
    )]
    pub total_duration: Duration,
    /// Mean time per call; zero before the first.
    #[serde(
        rename = "average_duration_ms",
        serialize_with = "super::serialize_millis"
    )]
    pub average_duration: Duration,
    /// The slowest call's time.
    #[serde(
        rename = "slowest_duration_ms",
        serialize_with = "super::serialize_millis"
    )]
    pub slowest_duration: Duration,
    /// The slowest call's query.
    pub slowest_query: Option<String>,
    /// The pool now.
    pub pool: PoolStats,
}

/// The shared recorder behind a [`MonitoredAsyncDatabaseManager`] and its transactions.
struct QueryMonitor {
    config: MonitorConfig,
    executed: AtomicU64,
    failed: AtomicU64,
    slow: AtomicU64,
    total_nanos: AtomicU64,
    slowest_nanos: AtomicU64,
    slowest_query: Mutex<Option<String>>,
    history: Mutex<VecDeque<QueryRecord>>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl QueryMonitor {
    fn new(config: MonitorConfig) -> Result<Self> {
        config.validate()?;
        Ok(QueryMonitor {
            config,
            executed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            total_nanos: AtomicU64::new(0),
            slowest_nanos: AtomicU64::new(0),
            slowest_query: Mutex::new(None),
            history: Mutex::new(VecDeque::new()),
        })
    }

    fn history(&self) -> std::sync::MutexGuard<'_, VecDeque<QueryRecord>> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Recorder for QueryMonitor {
    fn records_args(&self) -> bool {
        self.config.record_args
    }

    fn record(&self, e: Recorded) {
        let d = nanos(e.duration);
        self.executed.fetch_add(1, Ordering::Relaxed);
        if e.error.is_some() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.total_nanos.fetch_add(d, Ordering::Relaxed);
        if self.slowest_nanos.fetch_max(d, Ordering::Relaxed) < d {
            *self.slowest_query.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.query.clone());
        }
        if e.duration >= self.config.slow_query_threshold {
            self.slow.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "pgdbm::monitor",
                operation = e.method.name(),
                query = %e.query,
                duration_ms = e.duration.as_secs_f64() * 1000.0,
                threshold_ms = self.config.slow_query_threshold.as_secs_f64() * 1000.0,
                "slow query"
            );
        }
        let record = QueryRecord {
            operation: e.method.name(),
            query: e.query,
            args: e.args,
            started_at: e.started_at,
            duration: e.duration,
            rows: e.rows,
            error: e.error,
        };
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == self.config.max_history_size {
            history.pop_front();
        }
        history.push_back(record);
    }
}

/// A manager whose every call is recorded: the manager's and its transactions' query methods,
/// `fetch_stream`, `executemany`, COPY, and transaction control. It derefs to the
/// [`AsyncDatabaseManager`], so it runs queries the same way; the manager it was made from
/// stays unmonitored.
///
/// ```no_run
/// use pgdbm::{MonitorConfig, MonitoredAsyncDatabaseManager};
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let monitored = MonitoredAsyncDatabaseManager::new(db, MonitorConfig {
///     slow_query_threshold: std::time::Duration::from_millis(200),
///     ..Default::default()
/// })?;
/// monitored.fetch_value::<i64>("SELECT count(*) FROM {{tables.users}}", &[]).await?;
/// let m = monitored.get_metrics().await?;
/// assert_eq!(m.queries_executed, 1);
/// for q in monitored.get_slow_queries(None)? {
///     println!("{} took {:?}", q.query, q.duration);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MonitoredAsyncDatabaseManager {
    db: AsyncDatabaseManager,
    monitor: Arc<QueryMonitor>,
}

impl MonitoredAsyncDatabaseManager {
    /// Attaches a new monitor to `db` (a manager with an owned or a shared pool). Invalid
    /// settings are [`Error::Configuration`].
    pub fn new(db: &AsyncDatabaseManager, config: MonitorConfig) -> Result<Self> {
        let monitor = Arc::new(QueryMonitor::new(config)?);
        Ok(MonitoredAsyncDatabaseManager {
            db: db.with_monitor(Some(monitor.clone())),
            monitor,
        })
    }

    /// The monitored manager, to hand to code that takes an [`AsyncDatabaseManager`].
    pub fn manager(&self) -> &AsyncDatabaseManager {
        &self.db
    }

    /// Counters since creation or [`reset`](Self::reset), and the pool's figures. Reading them
    /// runs no query and changes no counter.
    pub async fn get_metrics(&self) -> Result<MonitorMetrics> {
        let pool = self.db.get_pool_stats().await?;
        let m = &self.monitor;
        let executed = m.executed.load(Ordering::Relaxed);
        let total = Duration::from_nanos(m.total_nanos.load(Ordering::Relaxed));
        let average = if executed == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(total.as_secs_f64() / executed as f64)
        };
        Ok(MonitorMetrics {
            queries_executed: executed,
            queries_failed: m.failed.load(Ordering::Relaxed),
            slow_queries: m.slow.load(Ordering::Relaxed),
            total_duration: total,
            average_duration: average,
            slowest_duration: Duration::from_nanos(m.slowest_nanos.load(Ordering::Relaxed)),
            slowest_query: m
                .slowest_query
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            pool,
        })
    }

    /// The newest `limit` calls (all kept ones with `None`), oldest first.
    pub fn get_query_history(&self, limit: Option<usize>) -> Vec<QueryRecord> {
        let history = self.monitor.history();
        let skip = limit.map_or(0, |l| history.len().saturating_sub(l));
        history.iter().skip(skip).cloned().collect()
    }

    /// The kept calls at or over `threshold` (the configured slow-query threshold with
    /// `None`), slowest first. A zero threshold is [`Error::Configuration`].
    pub fn get_slow_queries(&self, threshold: Option<Duration>) -> Result<Vec<QueryRecord>> {
        let threshold = threshold.unwrap_or(self.monitor.config.slow_query_threshold);
        check_threshold(threshold, "threshold")?;
        let mut slow: Vec<QueryRecord> = self
            .monitor
            .history()
            .iter()
            .filter(|r| r.duration >= threshold)
            .cloned()
            .collect();
        slow.sort_by_key(|r| std::cmp::Reverse(r.duration));
        Ok(slow)
    }

    /// Clears the counters and the history.
    pub fn reset(&self) {
        let m = &self.monitor;
        let mut history = m.history();
        history.clear();
        for c in [
            &m.executed,
            &m.failed,
            &m.slow,
            &m.total_nanos,
            &m.slowest_nanos,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        *m.slowest_query.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The plan of `query` as JSON (`EXPLAIN (FORMAT JSON)`), not recorded by the monitor.
    /// With `analyze` the query really runs, inside a transaction that is always rolled back,
    /// so an `INSERT` or `DELETE` changes nothing.
    pub async fn explain_query(
        &self,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        analyze: bool,
    ) -> Result<serde_json::Value> {
        super::explain::explain_query(&self.db.with_monitor(None), query, params, analyze).await
    }
}

impl Deref for MonitoredAsyncDatabaseManager {
    type Target = AsyncDatabaseManager;
    fn deref(&self) -> &AsyncDatabaseManager {
        &self.db
    }
}

impl std::fmt::Debug for MonitoredAsyncDatabaseManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitoredAsyncDatabaseManager")
            .field("db", &self.db)
            .field("config", &self.monitor.config)
            .finish()
    }
}
