//! Pool statistics.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Whether the pool is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PoolStatus {
    /// The pool is open.
    Connected,
    /// Not connected yet, or disconnected.
    Disconnected,
}

impl fmt::Display for PoolStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolStatus::Connected => "connected",
            PoolStatus::Disconnected => "disconnected",
        })
    }
}

/// A snapshot of the pool: size, free and used connections, limits, server version and
/// acquire-wait figures.
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let stats = db.get_pool_stats().await?;
/// if stats.usage() > 0.8 {
///     tracing::warn!(used = stats.used_size, size = stats.size, "high pool usage");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// `connected` or `disconnected`.
    pub status: PoolStatus,
    /// `min_connections`.
    pub min_size: usize,
    /// `max_connections`.
    pub max_size: usize,
    /// Open connections.
    pub size: usize,
    /// Idle connections.
    pub free_size: usize,
    /// Connections in use.
    pub used_size: usize,
    /// Database name.
    pub database: String,
    /// The manager's schema.
    pub schema: Option<String>,
    /// Backend PID of the connection that answered the stats query.
    pub pid: Option<i32>,
    /// `version()` of the server.
    pub version: Option<String>,
    /// Tasks waiting for a connection right now.
    pub waiting: usize,
    /// Connections handed out since the pool was created.
    pub acquire_count: u64,
    /// Total time spent waiting for connections. Serialized as `acquire_wait_total_ms`, a
    /// number of milliseconds.
    #[serde(rename = "acquire_wait_total_ms", serialize_with = "as_millis")]
    pub acquire_wait_total: Duration,
    /// Acquires that gave up because the call's timeout expired.
    pub acquire_timeouts: u64,
    /// What the connections go to: with a pooler (`session` or `transaction`), the counts
    /// above are connections to the pooler, not server backends, and `pid` is whichever
    /// server process answered.
    pub pooler: crate::Pooler,
    /// Every server of the pool: the primary first, then each read replica. Empty when
    /// disconnected.
    pub hosts: Vec<HostStats>,
    /// With `multiplexing`: each shared connection now, with its statements in flight. Such
    /// a connection counts as used in `used_size`. Empty otherwise.
    pub shared: Vec<SharedConnectionStats>,
    /// With `multiplexing`: calls that ran on a shared connection since the pool was made.
    pub shared_calls: u64,
    /// Statement-cache misses answered in one round trip instead of two: a plain read whose
    /// template was prepared in another schema (many tenants on one pool, say) runs
    /// unprepared with that template's parameter types, alongside its own prepare, and the
    /// types matched.
    pub one_trip_misses: u64,
}

/// One shared connection of a multiplexing pool.
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// for c in db.get_pool_stats().await?.shared {
///     println!("backend {}: {} statement(s) in flight", c.backend_pid, c.in_flight);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SharedConnectionStats {
    /// The server process serving it.
    pub backend_pid: i32,
    /// Statements of callers on it now.
    pub in_flight: usize,
}

/// What a server is to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HostRole {
    /// Takes writes, transactions and every read not sent to a replica.
    Primary,
    /// A read replica (`read_replicas`).
    Replica,
}

/// One server of the pool: where it is, whether reads use it, and its connections.
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// for host in db.get_pool_stats().await?.hosts {
///     println!("{} {:?} healthy={} lag={:?}", host.label, host.role, host.healthy, host.lag);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HostStats {
    /// `host:port`, never a password.
    pub label: String,
    /// Primary or replica.
    pub role: HostRole,
    /// A replica: whether reads use it (it answers, is in recovery, and lags less than
    /// `max_replica_lag`). The primary: whether its pool is open.
    pub healthy: bool,
    /// A replica's replay lag at its last health check, if known. Serialized as `lag_ms`.
    #[serde(rename = "lag_ms", serialize_with = "opt_as_millis")]
    pub lag: Option<Duration>,
    /// Why an unhealthy replica is skipped.
    pub last_error: Option<String>,
    /// Open connections.
    pub size: usize,
    /// Idle connections.
    pub free_size: usize,
    /// Connections in use.
    pub used_size: usize,
}

fn opt_as_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => as_millis(d, s),
        None => s.serialize_none(),
    }
}

/// A duration as a number of milliseconds (fractional), as dashboards and JSON logs expect.
fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl PoolStats {
    pub(crate) fn disconnected(
        min_size: usize,
        max_size: usize,
        database: String,
        schema: Option<String>,
        pooler: crate::Pooler,
    ) -> Self {
        PoolStats {
            status: PoolStatus::Disconnected,
            min_size,
            max_size,
            size: 0,
            free_size: 0,
            used_size: 0,
            database,
            schema,
            pid: None,
            version: None,
            waiting: 0,
            acquire_count: 0,
            acquire_wait_total: Duration::ZERO,
            acquire_timeouts: 0,
            pooler,
            hosts: Vec::new(),
            shared: Vec::new(),
            shared_calls: 0,
            one_trip_misses: 0,
        }
    }

    /// `used_size / size`, 0 when the pool is empty.
    pub fn usage(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            self.used_size as f64 / self.size as f64
        }
    }

    /// Mean wait per acquire; zero before the first acquire. Computed in nanoseconds over
    /// 128 bits, so any count works (`Duration / u32` would truncate the count).
    pub fn avg_acquire_wait(&self) -> Duration {
        if self.acquire_count == 0 {
            return Duration::ZERO;
        }
        let nanos = self.acquire_wait_total.as_nanos() / u128::from(self.acquire_count);
        // Saturates beyond u64 nanoseconds (584 years), which no real wait reaches.
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Whether the pool is open.
    pub fn is_connected(&self) -> bool {
        self.status == PoolStatus::Connected
    }

    /// Statements in flight on shared connections (multiplexing), all together.
    pub fn shared_in_flight(&self) -> usize {
        self.shared.iter().map(|c| c.in_flight).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(count: u64, total: Duration) -> PoolStats {
        let mut s = PoolStats::disconnected(1, 2, "db".into(), None, crate::Pooler::Direct);
        s.acquire_count = count;
        s.acquire_wait_total = total;
        s
    }

    #[test]
    fn durations_serialize_as_milliseconds() {
        let json = serde_json::to_value(with(3, Duration::from_micros(2500))).unwrap();
        assert_eq!(json["acquire_wait_total_ms"], 2.5);
        assert!(json.get("acquire_wait_total").is_none());
    }

    #[test]
    fn avg_acquire_wait_survives_huge_counts_and_zero() {
        assert_eq!(with(0, Duration::ZERO).avg_acquire_wait(), Duration::ZERO);
        assert_eq!(
            with(0, Duration::from_secs(5)).avg_acquire_wait(),
            Duration::ZERO
        );
        // 2^32 acquires: `as u32` made this a division by zero.
        assert_eq!(
            with(1 << 32, Duration::from_micros(1 << 32)).avg_acquire_wait(),
            Duration::from_micros(1)
        );
        // 2^32 + 2 acquires: `as u32` made this a division by 2.
        assert_eq!(
            with((1 << 32) + 2, Duration::from_secs(1)).avg_acquire_wait(),
            Duration::ZERO
        );
        assert_eq!(
            with(u64::MAX, Duration::MAX).avg_acquire_wait(),
            Duration::from_nanos((Duration::MAX.as_nanos() / u128::from(u64::MAX)) as u64)
        );
        assert_eq!(
            with(3, Duration::from_millis(3)).avg_acquire_wait(),
            Duration::from_millis(1)
        );
    }
}
