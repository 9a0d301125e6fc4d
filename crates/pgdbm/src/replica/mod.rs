//! Read replicas: their pools, their health, which reads go to them, and read-your-writes.
//!
//! The replicas belong to the primary's [`Pool`] (its companion, opened by [`connect_pool`]),
//! so every manager over that pool shares them, and closing the pool closes them. Each replica is a pool of its own, checked about once a
//! second in the background ([`health`]); reads are routed at one choke point
//! ([`route`]), the manager's connection checkout.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{replica_target, DatabaseConfig, ReplicaFallback};
use crate::error::{Error, Result};
use crate::pool::{Companion, Pool, PoolOptions, PreparedRegistry};
use crate::stats::{HostRole, HostStats};

mod conn_ref;
mod health;
mod route;

pub(crate) use conn_ref::{ConnRef, Reroute};
pub(crate) use route::{route, Intent};

/// Opens a pool and, when the settings list read replicas, a pool for each of them, kept
/// with it.
pub(crate) async fn connect_pool(opts: PoolOptions<'_>) -> Result<Pool> {
    let config = opts.config;
    if config.read_replicas.is_empty() {
        return Pool::connect(opts).await;
    }
    let replicas = ReplicaSet::connect(
        config,
        opts.search_path.clone(),
        opts.expect_search_path,
        opts.registry.clone(),
    );
    Pool::connect_with(
        opts,
        Some(Box::pin(async {
            let set: Arc<dyn Companion> = replicas.await?;
            Ok(set)
        })),
    )
    .await
}

/// The read replicas `pool` carries, if any.
pub(crate) fn replicas_of(pool: &Pool) -> Option<Arc<ReplicaSet>> {
    let companion: Arc<dyn std::any::Any + Send + Sync> = pool.inner.companion.clone()?;
    companion.downcast().ok()
}

/// The replicas of one primary pool and how reads use them.
pub(crate) struct ReplicaSet {
    pub(crate) hosts: Vec<Arc<ReplicaHost>>,
    /// Round robin over the healthy ones.
    next: AtomicUsize,
    pub(crate) fallback: ReplicaFallback,
    pub(crate) auto_routing: bool,
    max_lag: Option<Duration>,
    pub(crate) ryw_timeout: Duration,
    pub(crate) verdicts: Arc<crate::sql::routing::Verdicts>,
}

/// One replica: its pool and what the health checks last found.
pub(crate) struct ReplicaHost {
    /// `host:port`, never a password.
    pub(crate) label: String,
    pub(crate) pool: Pool,
    /// One connection of its own for the health checks, so that reads filling `pool` never
    /// make a healthy replica look dead.
    checks: Pool,
    healthy: AtomicBool,
    /// Replay lag in microseconds at the last check; `u64::MAX` = unknown.
    lag_micros: AtomicU64,
    /// The highest WAL position known replayed here.
    replayed: AtomicU64,
    /// Why it was last skipped.
    last_error: Mutex<Option<String>>,
    /// What the health checks saw of its replay falling behind.
    behind: Mutex<health::Behind>,
    /// The set's verdicts, so that a statement this replica refuses is remembered.
    pub(crate) verdicts: Arc<crate::sql::routing::Verdicts>,
}

impl Companion for ReplicaSet {
    /// Closes every replica pool.
    fn close(&self) {
        for h in &self.hosts {
            h.pool.close();
            h.checks.close();
        }
    }
}

impl ReplicaSet {
    /// Opens a pool per replica (a replica that does not answer is only marked down), checks
    /// them once, and starts the background checks.
    pub(crate) async fn connect(
        config: &DatabaseConfig,
        search_path: Option<String>,
        expect_search_path: bool,
        registry: Arc<PreparedRegistry>,
    ) -> Result<Arc<ReplicaSet>> {
        // A replica pool keeps a couple of connections warm; it grows on demand like the
        // primary's.
        let replica_config = DatabaseConfig {
            min_connections: config.min_connections.min(2),
            read_replicas: Vec::new(),
            ..config.clone()
        };
        let mut hosts = Vec::with_capacity(config.read_replicas.len());
        let verdicts = Arc::new(crate::sql::routing::Verdicts::default());
        for dsn in &config.read_replicas {
            let target = replica_target(config, dsn)?;
            // Boxed: a replica's pool is built by the same function that builds this one.
            let pool = Box::pin(Pool::connect(PoolOptions {
                search_path: search_path.clone(),
                expect_search_path,
                registry: registry.clone(),
                config: &replica_config,
                replica: Some(target.clone()),
            }))
            .await?;
            let checks = Box::pin(Pool::connect(PoolOptions {
                search_path: search_path.clone(),
                expect_search_path,
                registry: Arc::default(),
                config: &DatabaseConfig {
                    min_connections: 0,
                    max_connections: 1,
                    ..replica_config.clone()
                },
                replica: Some(target),
            }))
            .await?;
            hosts.push(Arc::new(ReplicaHost {
                label: pool.label(),
                pool,
                checks,
                healthy: AtomicBool::new(false),
                lag_micros: AtomicU64::new(u64::MAX),
                replayed: AtomicU64::new(0),
                last_error: Mutex::new(Some("not checked yet".into())),
                behind: Mutex::default(),
                verdicts: verdicts.clone(),
            }));
        }
        let set = Arc::new(ReplicaSet {
            hosts,
            next: AtomicUsize::new(0),
            fallback: config.replica_fallback,
            auto_routing: config.replica_auto_routing,
            max_lag: (config.max_replica_lag > 0.0)
                .then(|| Duration::from_secs_f64(config.max_replica_lag)),
            ryw_timeout: Duration::from_secs_f64(config.read_your_writes_timeout),
            verdicts,
        });
        // Checked once before the pool is handed out, so the first reads already use them.
        set.check_all().await;
        health::spawn(Arc::downgrade(&set));
        Ok(set)
    }

    fn is_closed(&self) -> bool {
        self.hosts.iter().all(|h| h.pool.is_closed())
    }

    /// Where a round-robin pass over the replicas starts.
    fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.hosts.len().max(1)
    }

    /// [`Error::NoReplica`] with each replica's reason.
    fn no_replica(&self) -> Error {
        let reasons = self
            .hosts
            .iter()
            .map(|h| format!("{}: {}", h.label, h.last_error().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("; ");
        Error::NoReplica { reasons }
    }
}

impl ReplicaHost {
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Replay lag at the last check, if known.
    pub(crate) fn lag(&self) -> Option<Duration> {
        match self.lag_micros.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Skips this replica until a health check finds it usable again.
    pub(crate) fn mark_down(&self, why: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_owned());
        // What it had replayed before may not hold when it comes back (a restarted standby
        // opens for reads once consistent, possibly behind): read-your-writes asks it again.
        self.replayed.store(0, Ordering::Release);
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(replica = %self.label, reason = why, "read replica skipped");
        }
    }

    fn mark_up(&self, lag: Duration) {
        self.lag_micros
            .store(lag.as_micros() as u64, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(replica = %self.label, "read replica in use");
        }
    }

    fn note_replayed(&self, lsn: u64) {
        self.replayed.fetch_max(lsn, Ordering::AcqRel);
    }

    fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Acquire)
    }

    /// Marks the replica down when `e` says its connection or server is gone; says whether it
    /// did, so that the read can be retried elsewhere.
    pub(crate) fn fails_over(&self, e: &Error) -> bool {
        let lost = is_connection_error(e);
        if lost {
            self.mark_down(&e.to_string());
        }
        lost
    }
}

/// Connection-class failures: the server is unreachable, shutting down, or the session died.
pub(crate) fn is_connection_error(e: &Error) -> bool {
    match e {
        Error::Connection { .. } => true,
        Error::Query { source, .. } => {
            if source.is_closed() {
                return true;
            }
            match source.as_db_error() {
                Some(db) => {
                    let code = db.code().code();
                    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
                }
                // No server error: the socket failed.
                None => std::error::Error::source(source)
                    .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
            }
        }
        _ => false,
    }
}

/// A WAL position (`X/Y`, hexadecimal halves) as a number.
fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A manager's writes, for read-your-writes: shared by its clones and its replica view.
#[derive(Default)]
pub(crate) struct WriteTracker {
    /// Bumped each time a primary connection that may have written is released.
    pub(crate) writes: Arc<AtomicU64>,
    /// The primary's WAL insert position read after `.0` writes had completed.
    target: Mutex<(u64, u64)>,
}

impl WriteTracker {
    /// The WAL position a replica must have replayed for a read to see this manager's
    /// writes; `None` before the first write. Asks the primary once per new write.
    async fn needed_lsn(
        &self,
        primary: &Pool,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<u64>> {
        let writes = self.writes.load(Ordering::Acquire);
        if writes == 0 {
            return Ok(None);
        }
        {
            let t = self.target.lock().unwrap_or_else(|e| e.into_inner());
            // Read after at least as many writes had completed: it covers them all.
            if t.0 >= writes {
                return Ok(Some(t.1));
            }
        }
        let lsn = route::primary_insert_lsn(primary, deadline).await?;
        let mut t = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if writes > t.0 {
            *t = (writes, lsn);
        }
        Ok(Some(lsn))
    }
}

/// The pool's servers for `get_pool_stats`: the primary, then each replica. Never waits.
pub(crate) fn host_stats(pool: &Pool) -> Vec<HostStats> {
    let one = |p: &Pool, role, healthy, lag, last_error| {
        let st = p.raw_status();
        HostStats {
            label: p.label(),
            role,
            healthy,
            lag,
            last_error,
            size: st.size,
            free_size: st.available,
            used_size: st.size.saturating_sub(st.available),
        }
    };
    let mut hosts = vec![one(pool, HostRole::Primary, !pool.is_closed(), None, None)];
    if let Some(set) = replicas_of(pool) {
        for h in &set.hosts {
            hosts.push(one(
                &h.pool,
                HostRole::Replica,
                h.is_healthy(),
                h.lag(),
                h.last_error(),
            ));
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::replicas::REPLICA_CONNECT_TIMEOUT;

    #[test]
    fn lsn_parses() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("0/3000060"), Some(0x300_0060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("x"), None);
        assert_eq!(parse_lsn(""), None);
    }

    #[test]
    fn replica_target_inherits_from_the_primary() {
        let config = DatabaseConfig {
            connection_string: Some("postgresql://app:s3cret@primary:5433/shop".into()),
            schema: Some("billing".into()),
            ..Default::default()
        };
        let r = replica_target(&config, "postgresql://replica1").unwrap();
        assert_eq!(r.get_user(), Some("app"));
        assert_eq!(r.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(r.get_dbname(), Some("shop"));
        assert_eq!(r.get_application_name(), Some("billing_pool"));
        assert_eq!(r.get_connect_timeout(), Some(&REPLICA_CONNECT_TIMEOUT));
        // What the string says wins.
        let r =
            replica_target(&config, "host=r2 port=6000 user=ro password=other dbname=x").unwrap();
        assert_eq!(r.get_user(), Some("ro"));
        assert_eq!(r.get_password(), Some(&b"other"[..]));
        assert_eq!(r.get_dbname(), Some("x"));
        assert_eq!(r.get_ports(), [6000]);
        // Fields-only primary: user and password from the fields.
        let config = DatabaseConfig {
            user: "u".into(),
            password: Some("pw".into()),
            database: "d".into(),
            ..Default::default()
        };
        let r = replica_target(&config, "host=r3").unwrap();
        assert_eq!(
            (r.get_user(), r.get_password(), r.get_dbname()),
            (Some("u"), Some(&b"pw"[..]), Some("d"))
        );
    }

    #[test]
    fn bad_replica_strings_name_the_field_and_hide_passwords() {
        let config = DatabaseConfig {
            read_replicas: vec!["postgresql://u:hunter22@h:notaport/db".into()],
            ..Default::default()
        };
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Configuration {
                    field: "read_replicas",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter22"), "{err}");
        let config = DatabaseConfig {
            read_replicas: vec!["user=x".into()],
            ..Default::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no host"));
        for (lag, ryw) in [
            (-1.0, 2.0),
            (f64::NAN, 2.0),
            (1.0, -0.5),
            (1.0, f64::INFINITY),
        ] {
            let config = DatabaseConfig {
                max_replica_lag: lag,
                read_your_writes_timeout: ryw,
                ..Default::default()
            };
            let err = config.validate().unwrap_err();
            let field = if lag.is_finite() && lag >= 0.0 {
                "read_your_writes_timeout"
            } else {
                "max_replica_lag"
            };
            assert!(
                matches!(err, Error::Configuration { field: f, .. } if f == field),
                "{err}"
            );
        }
    }
}
