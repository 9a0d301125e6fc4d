//! `DatabaseDebugger`: health, blocking and long-running queries, and table sizes, read from the
//! server's statistics views. Its own queries are never recorded by a monitor.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::record::Record;
use crate::stats::PoolStats;

/// Overall health: every check passed, something needs a look, or the server is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Reachable; nothing blocked, nothing running long, nobody waiting for a connection.
    Healthy,
    /// Reachable, but see [`HealthReport::issues`].
    Degraded,
    /// The server did not answer `SELECT version()`.
    Unhealthy,
}

/// The answer to `SELECT version()`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectivityCheck {
    /// Whether the server answered.
    pub ok: bool,
    /// How long it took (checkout included).
    #[serde(
        rename = "response_time_ms",
        serialize_with = "super::serialize_millis"
    )]
    pub response_time: Duration,
    /// `version()`, when it answered.
    pub version: Option<String>,
    /// Why not, when it did not.
    pub error: Option<String>,
}

/// The pool's share of the health report.
#[derive(Debug, Clone, Serialize)]
pub struct PoolCheck {
    /// The pool's figures.
    pub stats: PoolStats,
    /// `used_size / max_size`.
    pub usage: f64,
}

/// [`DatabaseDebugger::check_connection_health`]'s report.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// The verdict.
    pub status: HealthStatus,
    /// Whether the server answers, how fast, and its version.
    pub connectivity: ConnectivityCheck,
    /// The pool.
    pub pool: PoolCheck,
    /// Queries of this database waiting on another session's lock.
    pub blocking_queries: Vec<BlockingQuery>,
    /// Queries of this database running longer than the debugger's threshold.
    pub long_running_queries: Vec<LongRunningQuery>,
    /// What made the status degraded or unhealthy, one line each.
    pub issues: Vec<String>,
}

/// A query waiting on a lock held by another session.
#[derive(Debug, Clone, Serialize)]
pub struct BlockingQuery {
    /// The waiting backend.
    pub blocked_pid: i32,
    /// Its role.
    pub blocked_user: Option<String>,
    /// Its query.
    pub blocked_query: Option<String>,
    /// How long its query has been running.
    #[serde(rename = "blocked_seconds", serialize_with = "super::serialize_secs")]
    pub blocked_for: Duration,
    /// The backend holding the lock.
    pub blocking_pid: i32,
    /// Its role.
    pub blocking_user: Option<String>,
    /// Its current (or last) query.
    pub blocking_query: Option<String>,
    /// Its state: `active`, `idle in transaction`…
    pub blocking_state: Option<String>,
}

/// A statement of this database running for longer than a threshold.
#[derive(Debug, Clone, Serialize)]
pub struct LongRunningQuery {
    /// The backend.
    pub pid: i32,
    /// Its role.
    pub user: Option<String>,
    /// Its `application_name`.
    pub application_name: Option<String>,
    /// `active`, `idle in transaction`…
    pub state: Option<String>,
    /// The query.
    pub query: Option<String>,
    /// How long it has been running.
    #[serde(rename = "duration_seconds", serialize_with = "super::serialize_secs")]
    pub duration: Duration,
    /// What it waits for, if anything (`Lock`, `IO`…).
    pub wait_event_type: Option<String>,
    /// The precise wait event.
    pub wait_event: Option<String>,
}

/// One table's size and upkeep.
#[derive(Debug, Clone, Serialize)]
pub struct TableSize {
    /// The schema.
    pub schema: String,
    /// The table's name, exactly as stored (case kept).
    pub table: String,
    /// Table, indexes and TOAST.
    pub total_bytes: i64,
    /// The table alone.
    pub table_bytes: i64,
    /// Its indexes.
    pub index_bytes: i64,
    /// Estimated live rows.
    pub live_rows: Option<i64>,
    /// Estimated dead rows.
    pub dead_rows: Option<i64>,
    /// Last manual `VACUUM`.
    pub last_vacuum: Option<chrono::DateTime<chrono::Utc>>,
    /// Last autovacuum.
    pub last_autovacuum: Option<chrono::DateTime<chrono::Utc>>,
    /// Last manual `ANALYZE`.
    pub last_analyze: Option<chrono::DateTime<chrono::Utc>>,
    /// Last autoanalyze.
    pub last_autoanalyze: Option<chrono::DateTime<chrono::Utc>>,
}

const BLOCKING: &str = "\
SELECT blocked.pid AS blocked_pid, blocked.usename::text AS blocked_user, \
       blocked.query AS blocked_query, \
       EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() - blocked.query_start)::float8 AS blocked_seconds, \
       blocking.pid AS blocking_pid, blocking.usename::text AS blocking_user, \
       blocking.query AS blocking_query, blocking.state AS blocking_state \
FROM pg_catalog.pg_stat_activity AS blocked \
CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(blocked.pid)) AS b(pid) \
JOIN pg_catalog.pg_stat_activity AS blocking ON blocking.pid = b.pid \
WHERE blocked.datname = pg_catalog.current_database() \
ORDER BY blocked_seconds DESC NULLS LAST, blocked.pid";

const LONG_RUNNING: &str = "\
SELECT pid, usename::text AS usename, application_name, state, query, \
       EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() - query_start)::float8 AS seconds, \
       wait_event_type, wait_event \
FROM pg_catalog.pg_stat_activity \
WHERE datname = pg_catalog.current_database() AND pid <> pg_catalog.pg_backend_pid() \
  AND state IS DISTINCT FROM 'idle' AND query_start IS NOT NULL \
  AND pg_catalog.clock_timestamp() - query_start > pg_catalog.make_interval(secs => $1) \
ORDER BY seconds DESC, pid";

const TABLE_SIZES: &str = "\
SELECT n.nspname::text AS schema_name, c.relname::text AS table_name, \
       pg_catalog.pg_total_relation_size(c.oid) AS total_bytes, \
       pg_catalog.pg_relation_size(c.oid) AS table_bytes, \
       pg_catalog.pg_indexes_size(c.oid) AS index_bytes, \
       s.n_live_tup, s.n_dead_tup, s.last_vacuum, s.last_autovacuum, s.last_analyze, \
       s.last_autoanalyze \
FROM pg_catalog.pg_class AS c \
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
LEFT JOIN pg_catalog.pg_stat_user_tables AS s ON s.relid = c.oid \
WHERE c.relkind IN ('r', 'p', 'm') \
  AND CASE WHEN $1::text IS NULL \
      THEN n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
      ELSE n.nspname = $1::text END \
ORDER BY total_bytes DESC, schema_name, table_name";

/// Diagnostics for a manager's database: is it reachable, who blocks whom, what runs long, how
/// big are the tables. Each method is one or a few catalog queries; a query that fails is an
/// error, never a made-up answer.
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let debugger = pgdbm::DatabaseDebugger::new(db);
/// let health = debugger.check_connection_health().await?;
/// println!("{}", serde_json::to_string_pretty(&health).unwrap());
/// for b in debugger.find_blocking_queries().await? {
///     println!("{} waits for {}", b.blocked_pid, b.blocking_pid);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DatabaseDebugger {
    db: AsyncDatabaseManager,
    long_running_threshold: Duration,
}

impl DatabaseDebugger {
    /// A debugger for `db`'s database (and, for table sizes, its schema). Its queries are not
    /// recorded by a monitor attached to `db`.
    pub fn new(db: &AsyncDatabaseManager) -> Self {
        DatabaseDebugger {
            db: db.with_monitor(None),
            long_running_threshold: Duration::from_secs(300),
        }
    }

    /// The running time from which [`check_connection_health`](Self::check_connection_health)
    /// reports a query as long-running (default five minutes). Zero is
    /// [`Error::Configuration`].
    pub fn with_long_running_threshold(mut self, threshold: Duration) -> Result<Self> {
        if threshold.is_zero() {
            return Err(Error::Configuration {
                field: "long_running_threshold",
                message: "must be greater than zero".into(),
            });
        }
        self.long_running_threshold = threshold;
        Ok(self)
    }

    /// Connectivity (response time, version), the pool, blocked and long-running queries, and
    /// a verdict: unhealthy when the server does not answer, degraded when a query is blocked or
    /// runs long or a caller waits for a connection, healthy otherwise.
    pub async fn check_connection_health(&self) -> Result<HealthReport> {
        let started = Instant::now();
        let answer = self
            .db
            .fetch_value::<String>("SELECT pg_catalog.version()", &[])
            .await;
        let response_time = started.elapsed();
        let stats = self.db.get_pool_stats().await?;
        let usage = if stats.max_size == 0 {
            0.0
        } else {
            stats.used_size as f64 / stats.max_size as f64
        };
        let pool = PoolCheck { stats, usage };
        let (version, error) = match answer {
            Ok(v) => (v, None),
            Err(e) => {
                return Ok(HealthReport {
                    status: HealthStatus::Unhealthy,
                    issues: vec![format!("the server did not answer: {e}")],
                    connectivity: ConnectivityCheck {
                        ok: false,
                        response_time,
                        version: None,
                        error: Some(e.to_string()),
                    },
                    pool,
                    blocking_queries: Vec::new(),
                    long_running_queries: Vec::new(),
                })
            }
        };
        let blocking_queries = self.find_blocking_queries().await?;
        let long_running_queries = self
            .find_long_running_queries(self.long_running_threshold)
            .await?;
        let mut issues = Vec::new();
        if !blocking_queries.is_empty() {
            issues.push(format!(
                "{} quer(ies) waiting on another session's lock",
                blocking_queries.len()
            ));
        }
        if !long_running_queries.is_empty() {
            issues.push(format!(
                "{} quer(ies) running longer than {:?}",
                long_running_queries.len(),
                self.long_running_threshold
            ));
        }
        if pool.stats.waiting > 0 {
            issues.push(format!(
                "{} caller(s) waiting for a pool connection",
                pool.stats.waiting
            ));
        }
        Ok(HealthReport {
            status: if issues.is_empty() {
                HealthStatus::Healthy
            } else {
                HealthStatus::Degraded
            },
            connectivity: ConnectivityCheck {
                ok: true,
                response_time,
                version,
                error,
            },
            pool,
            blocking_queries,
            long_running_queries,
            issues,
        })
    }

    /// Queries of this database waiting on a lock, each with the session holding it
    /// (`pg_blocking_pids()`). A query blocked by several sessions appears once per session.
    pub async fn find_blocking_queries(&self) -> Result<Vec<BlockingQuery>> {
        let rows = self.db.fetch_all(BLOCKING, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(BlockingQuery {
                    blocked_pid: r.get("blocked_pid")?,
                    blocked_user: r.get("blocked_user")?,
                    blocked_query: r.get("blocked_query")?,
                    blocked_for: seconds(r, "blocked_seconds")?,
                    blocking_pid: r.get("blocking_pid")?,
                    blocking_user: r.get("blocking_user")?,
                    blocking_query: r.get("blocking_query")?,
                    blocking_state: r.get("blocking_state")?,
                })
            })
            .collect()
    }

    /// Statements of this database (not idle, not this debugger's own) running for longer
    /// than `threshold`, longest first.
    pub async fn find_long_running_queries(
        &self,
        threshold: Duration,
    ) -> Result<Vec<LongRunningQuery>> {
        let rows = self
            .db
            .fetch_all(LONG_RUNNING, &[&threshold.as_secs_f64()])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LongRunningQuery {
                    pid: r.get("pid")?,
                    user: r.get("usename")?,
                    application_name: r.get("application_name")?,
                    state: r.get("state")?,
                    query: r.get("query")?,
                    duration: seconds(r, "seconds")?,
                    wait_event_type: r.get("wait_event_type")?,
                    wait_event: r.get("wait_event")?,
                })
            })
            .collect()
    }

    /// Every table (and materialized view) of the manager's schema, or of all user schemas
    /// when it has none, largest first. Statistics are joined by the table's OID, so quoted
    /// and mixed-case names are found.
    pub async fn analyze_table_sizes(&self) -> Result<Vec<TableSize>> {
        let schema = self.db.schema();
        let rows = self.db.fetch_all(TABLE_SIZES, &[&schema]).await?;
        rows.iter()
            .map(|r| {
                Ok(TableSize {
                    schema: r.get("schema_name")?,
                    table: r.get("table_name")?,
                    total_bytes: r.get("total_bytes")?,
                    table_bytes: r.get("table_bytes")?,
                    index_bytes: r.get("index_bytes")?,
                    live_rows: r.get("n_live_tup")?,
                    dead_rows: r.get("n_dead_tup")?,
                    last_vacuum: r.get("last_vacuum")?,
                    last_autovacuum: r.get("last_autovacuum")?,
                    last_analyze: r.get("last_analyze")?,
                    last_autoanalyze: r.get("last_autoanalyze")?,
                })
            })
            .collect()
    }
}

/// A `float8` number of seconds (NULL as zero) as a duration.
fn seconds(row: &Record, column: &str) -> Result<Duration> {
    let s: Option<f64> = row.get(column)?;
    Ok(Duration::from_secs_f64(s.unwrap_or(0.0).max(0.0)))
}
