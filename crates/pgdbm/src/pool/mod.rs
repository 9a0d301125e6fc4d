//! The connection pool: a small core of our own (`core`: one short lock per checkout and
//! release), the manager that opens and vets connections (start-up settings, retry, statement
//! cache, `max_queries` recycling), idle reaping that never goes below `min_connections`, and
//! wait statistics.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::config::DatabaseConfig;
use crate::connection::{Servers, SessionReset, DEALLOCATE_SQL_PREPARED, RESET_SESSION_SQL};
use crate::error::{Error, Result};
use crate::pooler::Pooler;
use crate::template::quote_ident;
use crate::tls::make_tls_connector;

mod acquiring;
mod checkout;
mod core;
mod home;
mod listen;
mod maintenance;
mod manage;
#[cfg(feature = "metrics")]
mod metrics;
mod mux;

pub(crate) use crate::connection::Refill;
use acquiring::Acquiring;
pub use checkout::PoolConnection;
pub(crate) use core::Status;
use core::{Core, PoolError};
pub(crate) use listen::ListenSpec;
use maintenance::{spawn_reaper, spawn_refill, Backoff};
use manage::ConnectSpec;
pub(crate) use manage::{db_message, ConnectFailure, PgManager, PreparedRegistry};
#[cfg(feature = "metrics")]
pub(crate) use metrics::report_state;
pub(crate) use mux::Shared;
use mux::{spawn_watch, Mux};

/// Acquire counters, read by `get_pool_stats`.
#[derive(Debug, Default)]
pub(crate) struct WaitCounters {
    acquires: AtomicU64,
    wait_micros: AtomicU64,
    timeouts: AtomicU64,
}

pub(crate) struct PoolInner {
    pool: Arc<Core>,
    pub(crate) min_size: usize,
    pub(crate) database: String,
    /// Where new connections go, for errors.
    host: String,
    port: u16,
    pub(crate) registry: Arc<PreparedRegistry>,
    pub(crate) command_timeout: Option<Duration>,
    counters: WaitCounters,
    server_version: String,
    /// How a `Listener` opens its own connection: same TLS, settings and retry policy.
    pub(crate) listen: Arc<ListenSpec>,
    refill: Arc<Refill>,
    pub(crate) pooler: Pooler,
    /// Where migrations connect instead, when set (`direct_connection_string`).
    pub(crate) direct: Option<Arc<DatabaseConfig>>,
    /// What the layers above keep with this pool and close with it (a primary's read
    /// replicas); `None` otherwise.
    pub(crate) companion: Option<Arc<dyn Companion>>,
    /// The shared connections, when the pool multiplexes.
    mux: Option<Mux>,
}

/// What a pool carries for the layers above it, and closes when it closes: a primary's read
/// replicas. The pool knows only that it can be closed; its owner downcasts it.
pub(crate) trait Companion: std::any::Any + Send + Sync {
    fn close(&self);
}

/// A [`Companion`] being opened, once the pool's own connections are.
pub(crate) type OpenCompanion<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Arc<dyn Companion>>> + Send + 'a>>;

impl Drop for PoolInner {
    fn drop(&mut self) {
        // Wakes the refill task so that it sees the pool gone and ends.
        self.refill.signal();
    }
}

/// A connection pool, cheap to clone and shared by any number of managers and tasks.
///
/// ```no_run
/// # async fn f() -> pgdbm::Result<()> {
/// use pgdbm::{AsyncDatabaseManager, DatabaseConfig};
/// let pool = AsyncDatabaseManager::create_shared_pool(&DatabaseConfig::from_env()).await?;
/// let users = AsyncDatabaseManager::from_pool(pool.clone(), Some("users"))?;
/// let orders = AsyncDatabaseManager::from_pool(pool, Some("orders"))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    pub(crate) inner: Arc<PoolInner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.inner.pool.status();
        f.debug_struct("Pool")
            .field("database", &self.inner.database)
            .field("size", &s.size)
            .field("max_size", &s.max_size)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// What kind of pool to build.
pub(crate) struct PoolOptions<'a> {
    /// A shared pool pins the neutral search_path; an owned one uses the manager's schema.
    pub(crate) search_path: Option<String>,
    pub(crate) expect_search_path: bool,
    pub(crate) registry: Arc<PreparedRegistry>,
    pub(crate) config: &'a DatabaseConfig,
    /// A read replica's pool: where it connects. It opens no connection up front and never
    /// fails for an unreachable server (its health checks find out).
    pub(crate) replica: Option<tokio_postgres::Config>,
}

impl Pool {
    /// Opens a pool of the server `opts` name.
    pub(crate) async fn connect(opts: PoolOptions<'_>) -> Result<Pool> {
        Pool::connect_with(opts, None).await
    }

    /// Opens a pool, then `companion`; if that fails, the pool is closed again.
    pub(crate) async fn connect_with(
        opts: PoolOptions<'_>,
        companion: Option<OpenCompanion<'_>>,
    ) -> Result<Pool> {
        let config = opts.config;
        config.validate()?;
        if config.log_parameter_values {
            crate::params::show_parameter_values();
        }
        let (mut pg_config, attrs) = match &opts.replica {
            Some(target) => (target.clone(), crate::target::SessionAttrs::Any),
            None => config.pg_target()?,
        };
        if pg_config.get_connect_timeout().is_none() {
            pg_config.connect_timeout(Duration::from_secs(10));
        }
        let tls = match config.ssl_mode()? {
            Some(mode) => Some(make_tls_connector(config, mode)?),
            None => None,
        };
        let (mut host, port, database) = crate::target::server_address(&pg_config);
        let servers = Servers::new(&pg_config, attrs, tls.as_ref());
        if servers.labels().len() > 1 {
            host = servers.labels().join(",");
        }
        let listen = Arc::new(ListenSpec::new(config, tls.clone())?);
        let refill = Arc::new(Refill::default());
        let pooler = config.pooler;
        let shares_server = pooler.shares_server_connections();
        // Behind a transaction pooler nothing may stay on a server connection: settings go into
        // each transaction, the shared pool's pin is not attempted, and no statement is named.
        let (setup_sql, transaction_setup) = if shares_server {
            let path = if opts.expect_search_path {
                None
            } else {
                opts.search_path.as_deref()
            };
            let local = config.session_setup_sql(path, true);
            (String::new(), Some(Arc::from(local.trim_end())))
        } else {
            (
                config.session_setup_sql(opts.search_path.as_deref(), false),
                None,
            )
        };
        let init_commands = config.init_commands.clone().unwrap_or_default();
        let always = config.reset_on_release == crate::ResetOnRelease::Always;
        let reset = Arc::new(SessionReset {
            script: format!("{RESET_SESSION_SQL}{DEALLOCATE_SQL_PREPARED}{setup_sql}"),
            quick_script: format!("{RESET_SESSION_SQL}{setup_sql}"),
            lazy: always && init_commands.is_empty(),
            init_commands,
            always,
        });
        let spec = ConnectSpec {
            reset,
            families: Arc::default(),
            refill: refill.clone(),
            setup_sql,
            transaction_setup,
            pooler,
            init_commands: config.init_commands.clone().unwrap_or_default(),
            expected_search_path: if opts.expect_search_path && !shares_server {
                opts.search_path.clone()
            } else {
                None
            },
            max_queries: config.max_queries,
            statement_cache_size: if shares_server {
                0
            } else {
                config.statement_cache_size
            },
            registry: opts.registry.clone(),
            servers,
            tls,
        };
        let manager = PgManager {
            spec: Arc::new(spec),
            runtime: tokio::runtime::Handle::current(),
        };
        let pool = Core::new(manager, config.max_connections);

        if opts.replica.is_some() {
            return Ok(Pool::assemble(
                pool,
                config,
                opts,
                (host, port, database),
                String::new(),
                listen,
                refill,
                None,
            ));
        }
        // The first connection is made with retry; the rest of `min_connections` after it.
        let mut attempts = 0u32;
        let mut delay = config.retry_delay;
        let first = loop {
            attempts += 1;
            match pool.get(None).await {
                Ok(obj) => break obj,
                Err(e) => {
                    let failure = match e {
                        PoolError::Backend(f) => f,
                        PoolError::Closed => {
                            return Err(Error::Pool("the pool was closed while connecting".into()))
                        }
                    };
                    if failure.is_retryable() && attempts <= config.retry_attempts {
                        let wait = delay.min(config.retry_max_delay).max(0.0);
                        tracing::warn!(
                            attempt = attempts,
                            retry_in_secs = wait,
                            error = %failure,
                            "PostgreSQL not reachable yet, retrying"
                        );
                        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                        delay *= config.retry_backoff;
                        continue;
                    }
                    return Err(Error::Connection {
                        host,
                        port,
                        database,
                        attempts,
                        message: failure.message(),
                        source: failure.into_source(),
                    });
                }
            }
        };
        let rest = config.min_connections.saturating_sub(1);
        let more = futures_util::future::join_all((0..rest).map(|_| pool.get(None))).await;
        let server_version = first.version.clone();
        drop(first);
        for r in more {
            if let Err(e) = r {
                pool.close();
                let (message, source) = match e {
                    PoolError::Backend(f) => (f.message(), f.into_source()),
                    PoolError::Closed => ("the pool was closed while connecting".into(), None),
                };
                return Err(Error::Connection {
                    host,
                    port,
                    database,
                    attempts,
                    message: format!("opening min_connections: {message}"),
                    source,
                });
            }
        }
        let companion = match companion {
            None => None,
            Some(open) => match open.await {
                Ok(c) => Some(c),
                Err(e) => {
                    pool.close();
                    return Err(e);
                }
            },
        };
        Ok(Pool::assemble(
            pool,
            config,
            opts,
            (host, port, database),
            server_version,
            listen,
            refill,
            companion,
        ))
    }

    /// The pool around `pool`, with its background upkeep started.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        pool: Arc<Core>,
        config: &DatabaseConfig,
        opts: PoolOptions<'_>,
        (host, port, database): (String, u16, String),
        server_version: String,
        listen: Arc<ListenSpec>,
        refill: Arc<Refill>,
        companion: Option<Arc<dyn Companion>>,
    ) -> Pool {
        let inner = Arc::new(PoolInner {
            pool,
            min_size: config.min_connections,
            database,
            host,
            port,
            registry: opts.registry,
            command_timeout: config.command_timeout(),
            counters: WaitCounters::default(),
            server_version,
            listen,
            refill: refill.clone(),
            pooler: config.pooler,
            // Checked by `validate` when the pool was made.
            direct: config.direct_config().ok().flatten().map(Arc::new),
            companion,
            mux: config.multiplexing.then(|| {
                let shared = config.shared_statement_timeout_ms();
                Mux::new(
                    shared.filter(|&ms| ms > 0).map(Duration::from_millis),
                    (shared != config.statement_timeout_ms)
                        .then(|| format!("SET statement_timeout = {}", shared.unwrap_or(0))),
                )
            }),
        });
        if inner.mux.is_some() {
            spawn_watch(Arc::downgrade(&inner));
        }
        spawn_refill(Arc::downgrade(&inner), refill, Backoff::new(config));
        if let Some(lifetime) = config.idle_lifetime() {
            spawn_reaper(Arc::downgrade(&inner), lifetime);
        }
        Pool { inner }
    }

    /// Checks a connection out, waiting at most until `deadline`.
    pub(crate) fn get(
        &self,
        deadline: Option<Instant>,
    ) -> impl std::future::Future<Output = Result<PoolConnection>> + Send + '_ {
        self.checkout(deadline, true, None)
    }

    /// [`get`](Self::get) for one call of one statement by a manager of a schema whose
    /// [`home`](Self::home) is `home`.
    pub(crate) fn get_home(
        &self,
        deadline: Option<Instant>,
        home: Option<usize>,
    ) -> impl std::future::Future<Output = Result<PoolConnection>> + Send + '_ {
        self.checkout(deadline, true, home)
    }

    /// Where the calls of one statement of `schema`'s managers go first when the statement
    /// caches are too small for the pool's texts (see `home.rs`); `None`: anywhere.
    pub(crate) fn home(&self, schema: &str) -> Option<usize> {
        if self.inner.mux.is_some() {
            return None;
        }
        self.inner.pool.homing.home(schema)
    }

    /// An idle connection at once, without a future, when one is ready and nothing observes
    /// the wait; `None` sends the caller to [`get`](Self::get).
    #[inline]
    pub(crate) fn try_get(&self, home: Option<usize>) -> Option<PoolConnection> {
        if Acquiring::observed() {
            return None;
        }
        let obj = self.inner.pool.try_idle(home)?;
        self.inner.counters.acquires.fetch_add(1, Ordering::Relaxed);
        Some(PoolConnection::new(obj))
    }

    /// [`get`](Self::get); an `exclusive` caller that must wait asks a multiplexing pool to
    /// give back a shared connection.
    async fn checkout(
        &self,
        deadline: Option<Instant>,
        exclusive: bool,
        home: Option<usize>,
    ) -> Result<PoolConnection> {
        let acquiring = Acquiring::start(self);
        let counters = &self.inner.counters;
        let checkout = self.inner.pool.get(home);
        futures_util::pin_mut!(checkout);
        // An idle connection is usually ready at once: the clock is read and the timer armed
        // only when we must wait.
        let mut started = None;
        let mut ready = checkout.as_mut().now_or_never();
        if ready.is_none() && exclusive {
            if let Some(mux) = &self.inner.mux {
                // Every connection may be shared: one goes back once its calls end.
                let status = self.inner.pool.status();
                if status.size >= status.max_size {
                    mux.yield_one();
                }
            }
        }
        let got = match ready.take() {
            Some(r) => r,
            None => match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), {
                    started = Some(Instant::now());
                    checkout
                })
                .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        counters.timeouts.fetch_add(1, Ordering::Relaxed);
                        let status = self.inner.pool.status();
                        let error = Error::AcquireTimeout {
                            after: started.map_or(Duration::ZERO, |s| s.elapsed()),
                            size: status.size,
                            max_size: status.max_size,
                            // Our own checkout is still counted among the waiters.
                            waiting: status.waiting.saturating_sub(1),
                        };
                        Acquiring::end(acquiring, self, Some(&error));
                        return Err(error);
                    }
                },
                None => {
                    started = Some(Instant::now());
                    checkout.await
                }
            },
        };
        counters.acquires.fetch_add(1, Ordering::Relaxed);
        if let Some(started) = started {
            counters
                .wait_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        let result = match got {
            Ok(obj) => Ok(PoolConnection::new(obj)),
            Err(PoolError::Closed) => Err(Error::Pool(
                "the pool is closed (disconnect() was called); create a new manager or call connect() again".into(),
            )),
            // Keep the driver error: its SQLSTATE (53300 too many connections, say) matters.
            Err(PoolError::Backend(f)) => Err(Error::Connection {
                host: self.inner.host.clone(),
                port: self.inner.port,
                database: self.inner.database.clone(),
                attempts: 1,
                message: format!("opening a new pooled connection: {}", f.message()),
                source: f.into_source(),
            }),
        };
        Acquiring::end(acquiring, self, result.as_ref().err());
        result
    }

    /// Where the pool's connections go: host (or socket directory) and port.
    pub(crate) fn server(&self) -> (&str, u16) {
        (&self.inner.host, self.inner.port)
    }

    /// Closes the pool: idle connections now, busy ones as they come back. A primary's read
    /// replicas are closed with it.
    pub fn close(&self) {
        self.inner.pool.close();
        if let Some(companion) = &self.inner.companion {
            companion.close();
        }
        if let Some(mux) = &self.inner.mux {
            mux.clear();
        }
    }

    /// `host:port` (or every `host:port` of a multi-host string), never a password.
    pub(crate) fn label(&self) -> String {
        if self.inner.host.contains(',') {
            self.inner.host.clone()
        } else {
            format!("{}:{}", self.inner.host, self.inner.port)
        }
    }

    /// Whether [`close`](Pool::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.pool.is_closed()
    }

    pub(crate) fn raw_status(&self) -> Status {
        self.inner.pool.status()
    }

    /// The backend PID of an idle connection, without checking it out (so neither the
    /// connection's idle time nor the wait statistics change).
    pub(crate) fn idle_backend_pid(&self) -> Option<i32> {
        let mut pid = None;
        self.inner.pool.retain(|conn| {
            pid = pid.or(Some(conn.backend_pid));
            true
        });
        pid
    }

    /// The server version, read when the pool was created.
    pub(crate) fn server_version(&self) -> &str {
        &self.inner.server_version
    }

    /// See [`crate::PoolStats::one_trip_misses`].
    pub(crate) fn one_trip_misses(&self) -> u64 {
        self.inner.pool.manager().spec.families.one_trip()
    }

    pub(crate) fn wait_stats(&self) -> (u64, Duration, u64) {
        let c = &self.inner.counters;
        (
            c.acquires.load(Ordering::Relaxed),
            Duration::from_micros(c.wait_micros.load(Ordering::Relaxed)),
            c.timeouts.load(Ordering::Relaxed),
        )
    }
}

/// The search_path an owned pool sets for its schema: the schema, then public.
pub(crate) fn owned_search_path(schema: &str) -> String {
    format!("{}, public", quote_ident(schema))
}
