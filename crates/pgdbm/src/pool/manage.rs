//! What the pool calls to make and reuse connections: each connection opened with the
//! pool's settings (and its failure classified for retry), registered statements pinned, and
//! only idle connections handed out again.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio_postgres::SimpleQueryMessage;

use crate::connection::{
    describe_failures, ConnOrigin, Connected, Families, HostFailure, PgConn, PooledOrigin, Servers,
    SessionReset, SessionState, TypeLookups,
};
use crate::error::Result;
use crate::pooler::Pooler;
use crate::tls::MakeTls;

use super::Refill;
pub(crate) use crate::error::db_message;

/// Statements registered with `add_prepared_statement`, shared by every connection of a pool.
#[derive(Debug, Default)]
pub(crate) struct PreparedRegistry {
    statements: RwLock<Vec<(String, Arc<str>)>>,
    generation: AtomicU64,
}

impl PreparedRegistry {
    pub(crate) fn add(&self, name: &str, sql: Arc<str>) {
        let mut list = self.statements.write().unwrap_or_else(|e| e.into_inner());
        match list.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = sql,
            None => list.push((name.to_owned(), sql)),
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn snapshot(&self) -> (u64, Vec<Arc<str>>) {
        let list = self.statements.read().unwrap_or_else(|e| e.into_inner());
        (
            self.generation.load(Ordering::Acquire),
            list.iter().map(|(_, s)| s.clone()).collect(),
        )
    }

    /// Whether `conn` lacks statements added since it was last checked out.
    fn is_behind(&self, conn: &PgConn) -> bool {
        conn.prepared_generation.load(Ordering::Relaxed) != self.generation.load(Ordering::Acquire)
    }

    async fn apply(&self, conn: &PgConn) {
        let (generation, statements) = self.snapshot();
        for sql in statements {
            conn.pin_statement(sql).await;
        }
        conn.prepared_generation
            .store(generation, Ordering::Relaxed);
    }
}

/// Creates and vets connections for the pool.
pub(crate) struct PgManager {
    pub(super) spec: Arc<ConnectSpec>,
    /// New connections are made on the runtime that created the pool, whichever runtime asks
    /// for one: a socket belongs to the reactor it was opened on, and a pool may outlive the
    /// runtime of a caller (per-test runtimes sharing one pool, say).
    pub(super) runtime: tokio::runtime::Handle,
}

/// Everything needed to open and set up one connection.
pub(crate) struct ConnectSpec {
    pub(super) servers: Servers,
    pub(super) tls: Option<MakeTls>,
    pub(super) setup_sql: String,
    pub(super) init_commands: Vec<String>,
    pub(super) expected_search_path: Option<String>,
    pub(super) max_queries: u64,
    pub(super) statement_cache_size: usize,
    pub(super) registry: Arc<PreparedRegistry>,
    /// Signalled whenever a connection of the pool ends.
    pub(super) refill: Arc<Refill>,
    /// Behind a transaction pooler: the settings for each transaction (`SET LOCAL`).
    pub(super) transaction_setup: Option<Arc<str>>,
    pub(super) pooler: Pooler,
    /// How a session a caller changed is put back.
    pub(super) reset: Arc<SessionReset>,
    pub(super) families: Arc<Families>,
}

impl ConnectSpec {
    async fn connect(&self) -> Result<PgConn, ConnectFailure> {
        let Connected {
            client,
            cancel_target,
            driver,
            tap,
        } = self
            .servers
            .connect(self.tls.as_ref())
            .await
            .map_err(ConnectFailure::from_hosts)?;
        self.watch(driver);
        let shares_server = self.pooler.shares_server_connections();
        // One round trip: settings, then facts we want to know about the session. Behind a
        // transaction pooler there is no session to set (`setup_sql` is empty then).
        let mut sql = self.setup_sql.clone();
        sql.push_str("SELECT pg_backend_pid()::text, version()");
        let msgs = client
            .simple_query(&sql)
            .await
            .map_err(|e| ConnectFailure::Setup {
                what: "applying server settings and timeouts",
                source: e,
            })?;
        let pid = cell(&msgs, 0).and_then(|s| s.parse().ok()).unwrap_or(0);
        let version = cell(&msgs, 1).unwrap_or_default();
        for cmd in &self.init_commands {
            client
                .batch_execute(cmd)
                .await
                .map_err(|e| ConnectFailure::Setup {
                    what: "running init_commands",
                    source: e,
                })?;
        }
        if let Some(expected) = &self.expected_search_path {
            let msgs = client.simple_query("SHOW search_path").await.map_err(|e| {
                ConnectFailure::Setup {
                    what: "reading back search_path",
                    source: e,
                }
            })?;
            let actual = cell(&msgs, 0).unwrap_or_default();
            if normalize_path(&actual) != normalize_path(expected) {
                return Err(ConnectFailure::SearchPath {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let pooled = if shares_server {
            // The settings each transaction will start with, checked once now so that a bad
            // one fails here, as it does at connect without a pooler.
            if let Some(setup) = &self.transaction_setup {
                client
                    .batch_execute(&format!("BEGIN;\n{setup}\nROLLBACK"))
                    .await
                    .map_err(|e| ConnectFailure::Setup {
                        what: "checking server settings and timeouts (SET LOCAL)",
                        source: e,
                    })?;
            }
            let lookups =
                TypeLookups::capture(&client)
                    .await
                    .map_err(|e| ConnectFailure::Setup {
                        what: "preparing custom-type lookups behind the transaction pooler",
                        source: e,
                    })?;
            Some(PooledOrigin {
                lookups,
                transaction_setup: self.transaction_setup.clone(),
            })
        } else {
            None
        };
        let conn = PgConn::new(
            client,
            ConnOrigin {
                cache_size: self.statement_cache_size,
                backend_pid: pid,
                version,
                tls: self.tls.clone(),
                cancel_target,
                refill: self.refill.clone(),
                // `connect` runs on the pool's runtime (see `PgManager::create`).
                runtime: tokio::runtime::Handle::current(),
                pooled,
                tap: tap.clone(),
                reset: self.reset.clone(),
                families: self.families.clone(),
            },
        );
        self.registry.apply(&conn).await;
        // What the server reports now is the session as the pool set it up.
        tap.snapshot();
        Ok(conn)
    }
}

impl ConnectSpec {
    /// Waits for a connection's driver task to end (the server closed the session, or the
    /// client was dropped), then tells the pool to top itself up.
    fn watch(&self, driver: tokio::task::JoinHandle<()>) {
        let refill = self.refill.clone();
        tokio::spawn(async move {
            let _ = driver.await;
            refill.signal();
        });
    }
}

fn cell(msgs: &[SimpleQueryMessage], col: usize) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(col).map(str::to_owned),
        _ => None,
    })
}

fn normalize_path(p: &str) -> String {
    p.split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a new connection could not be made.
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    Driver(tokio_postgres::Error),
    Setup {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    SearchPath {
        expected: String,
        actual: String,
    },
    Runtime(String),
    /// Several hosts, each passed over for its own reason, in the order tried.
    Hosts(Vec<(String, HostFailure)>),
}

impl ConnectFailure {
    /// One host's driver error stays what it was; anything else keeps every host's reason.
    fn from_hosts(mut failures: Vec<(String, HostFailure)>) -> Self {
        if failures.len() == 1 && matches!(failures[0].1, HostFailure::Driver(_)) {
            if let Some((_, HostFailure::Driver(e))) = failures.pop() {
                return ConnectFailure::Driver(e);
            }
        }
        ConnectFailure::Hosts(failures)
    }

    /// Only failures that a later attempt can cure are retried: refused, reset, the server
    /// starting up. Authentication, TLS and configuration errors fail at once.
    pub(crate) fn is_retryable(&self) -> bool {
        let e = match self {
            ConnectFailure::Driver(e) => e,
            // A standby may be promoted, a refused host may come back.
            ConnectFailure::Hosts(failures) => {
                return failures.iter().any(|(_, f)| match f {
                    HostFailure::Role(_) => true,
                    HostFailure::Driver(e) => ConnectFailure::driver_retryable(e),
                    HostFailure::Socket(e) => io_retryable(e),
                })
            }
            _ => return false,
        };
        ConnectFailure::driver_retryable(e)
    }

    fn driver_retryable(e: &tokio_postgres::Error) -> bool {
        if let Some(db) = e.as_db_error() {
            return db.code() == &tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW
                || db.code() == &tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS;
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return io_retryable(io);
            }
            source = s.source();
        }
        // A connect timeout from the driver.
        e.to_string().contains("timed out")
    }

    pub(crate) fn message(&self) -> String {
        match self {
            ConnectFailure::Driver(e) => db_message(e),
            ConnectFailure::Setup { what, source } => format!("{what}: {}", db_message(source)),
            ConnectFailure::SearchPath { expected, actual } => format!(
                "the shared pool pins search_path to {expected:?}, but the server reports {actual:?} \
                 (an init command, role or database setting overrides it). Remove the override, or \
                 set shared_pool_search_path: None to turn the pin off"
            ),
            ConnectFailure::Runtime(message) => message.clone(),
            ConnectFailure::Hosts(failures) => describe_failures(failures),
        }
    }

    pub(crate) fn into_source(self) -> Option<tokio_postgres::Error> {
        match self {
            ConnectFailure::Driver(e) | ConnectFailure::Setup { source: e, .. } => Some(e),
            ConnectFailure::Hosts(failures) => {
                failures.into_iter().rev().find_map(|(_, f)| match f {
                    HostFailure::Driver(e) => Some(e),
                    HostFailure::Role(_) | HostFailure::Socket(_) => None,
                })
            }
            ConnectFailure::SearchPath { .. } | ConnectFailure::Runtime(_) => None,
        }
    }
}

/// Whether an I/O failure while connecting may pass: refused, reset, unreachable for now. A TLS
/// failure never does.
fn io_retryable(io: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    if io
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
    {
        return false;
    }
    matches!(
        io.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | TimedOut
            | NotFound
            | AddrNotAvailable
            | UnexpectedEof
            | BrokenPipe
    )
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl PgManager {
    /// A new connection, boxed so that the pool's queue and every checkout move 8 bytes, not
    /// the whole connection.
    pub(super) async fn create(&self) -> Result<Box<PgConn>, ConnectFailure> {
        // Spawning also keeps the large connect state machine out of every checkout future.
        let spec = self.spec.clone();
        match self
            .runtime
            .spawn(async move { spec.connect().await })
            .await
        {
            Ok(made) => made.map(Box::new),
            Err(e) => Err(ConnectFailure::Runtime(format!(
                "the runtime that created this pool is gone or the connect task failed: {e}"
            ))),
        }
    }

    /// Whether an idle connection may be handed out again. Only a connection known to be
    /// idle was put back; this is the last line of defence, and the `max_queries` limit.
    #[inline]
    pub(super) fn reusable(&self, conn: &PgConn) -> bool {
        if conn.is_broken() || conn.state() != SessionState::Idle {
            return false;
        }
        let max_queries = self.spec.max_queries;
        max_queries == 0 || conn.queries.load(Ordering::Relaxed) < max_queries
    }

    /// Whether `conn` lacks statements registered since it was last checked out.
    #[inline]
    pub(super) fn is_behind(&self, conn: &PgConn) -> bool {
        self.spec.registry.is_behind(conn)
    }

    /// Prepares the statements `conn` lacks.
    pub(super) async fn catch_up(&self, conn: &PgConn) {
        self.spec.registry.apply(conn).await;
    }
}
