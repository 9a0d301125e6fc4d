//! `AsyncDatabaseManager`: a schema-scoped handle over an owned or a shared pool.

use std::fmt;

use futures_util::future::Either;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;

use crate::config::DatabaseConfig;
use crate::connection::SessionState;
use crate::error::{Error, Result};
use crate::pool::PoolConnection;
use crate::pool::{owned_search_path, Pool, PoolOptions, PreparedRegistry};
use crate::query::{query_methods, ConnRef, Recorder, Runner};
use crate::replica::{Intent, WriteTracker};
use crate::stats::{PoolStats, PoolStatus};
use crate::template::{check_identifier, quote_ident, Templates};

mod owned;

/// The database manager: query helpers with `{{tables.x}}` templates over a pool.
///
/// Cheap to clone (shared state behind an `Arc`), `Send + Sync`, usable from many tasks.
///
/// ```no_run
/// use pgdbm::{AsyncDatabaseManager, DatabaseConfig};
/// # async fn f() -> pgdbm::Result<()> {
/// // Pattern 1: the manager owns its pool.
/// let db = AsyncDatabaseManager::new(DatabaseConfig {
///     connection_string: Some("postgresql://postgres@localhost/myapp".into()),
///     schema: Some("myapp".into()),
///     ..Default::default()
/// })?;
/// db.connect().await?;
/// let n: Option<i64> = db.fetch_value("SELECT count(*) FROM {{tables.users}}", &[]).await?;
/// db.disconnect().await?;
///
/// // Pattern 2: one shared pool, one manager per schema.
/// let pool = AsyncDatabaseManager::create_shared_pool(&DatabaseConfig::from_env()).await?;
/// let users = AsyncDatabaseManager::from_pool(pool.clone(), Some("users"))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AsyncDatabaseManager {
    inner: Arc<ManagerInner>,
    /// Set by `with_timeout`; `None` = the pool's `command_timeout`.
    timeout_override: Option<Option<Duration>>,
    /// Records every call of this handle and of its transactions.
    monitor: Option<Arc<dyn Recorder>>,
    /// Made by `replica()`: reads go to a read replica.
    replica_view: bool,
    /// Made by `with_settings`/`with_role`: `SET LOCAL`s every call's transaction starts with.
    context: Option<Arc<str>>,
}

struct ManagerInner {
    source: PoolSource,
    templates: Templates,
    registry: Arc<PreparedRegistry>,
    default_timeout: Option<Duration>,
    /// This manager's writes, for read-your-writes on replicas.
    writes: WriteTracker,
    /// Where this schema's calls go first on a shared pool (see `Pool::home`).
    home: Option<usize>,
}

enum PoolSource {
    Owned {
        config: Box<DatabaseConfig>,
        pool: RwLock<Option<Pool>>,
    },
    External(Pool),
}

impl AsyncDatabaseManager {
    /// A manager that will own its pool. Validates the config; does no I/O. Call
    /// [`connect`](Self::connect) before use.
    pub fn new(config: DatabaseConfig) -> Result<Self> {
        config.validate()?;
        let templates = Templates::new(config.schema.as_deref());
        let default_timeout = config.command_timeout();
        Ok(AsyncDatabaseManager {
            inner: Arc::new(ManagerInner {
                source: PoolSource::Owned {
                    config: Box::new(config),
                    pool: RwLock::new(None),
                },
                templates,
                registry: Arc::default(),
                default_timeout,
                writes: WriteTracker::default(),
                home: None,
            }),
            timeout_override: None,
            monitor: None,
            replica_view: false,
            context: None,
        })
    }

    /// A manager over an existing (shared) pool, scoped to `schema`. Never call `connect` on
    /// it; `disconnect` does nothing.
    pub fn from_pool(pool: Pool, schema: Option<&str>) -> Result<Self> {
        if let Some(s) = schema {
            check_identifier(s, "schema")?;
        }
        let registry = pool.inner.registry.clone();
        let default_timeout = pool.inner.command_timeout;
        let home = schema.and_then(|s| pool.home(s));
        Ok(AsyncDatabaseManager {
            inner: Arc::new(ManagerInner {
                source: PoolSource::External(pool),
                templates: Templates::new(schema),
                registry,
                default_timeout,
                writes: WriteTracker::default(),
                home,
            }),
            timeout_override: None,
            monitor: None,
            replica_view: false,
            context: None,
        })
    }

    /// Creates a pool to share between managers. It never changes `search_path` per manager;
    /// it pins `shared_pool_search_path` (default `pg_catalog`) so that an unqualified table
    /// name fails loudly. `config.schema` is ignored here: give each manager its schema in
    /// [`from_pool`](Self::from_pool). The config is not modified.
    pub async fn create_shared_pool(config: &DatabaseConfig) -> Result<Pool> {
        config.validate()?;
        // The pool has no schema of its own, so its default application_name is `app_pool`.
        let config = &DatabaseConfig {
            schema: None,
            ..config.clone()
        };
        let search_path = config.shared_pool_search_path.as_ref().map(|p| {
            p.split(',')
                .map(|s| quote_ident(s.trim().trim_matches('"')))
                .collect::<Vec<_>>()
                .join(", ")
        });
        crate::replica::connect_pool(PoolOptions {
            expect_search_path: search_path.is_some(),
            search_path,
            registry: Arc::default(),
            config,
            replica: None,
        })
        .await
    }

    /// Opens the owned pool: `min_connections` connections, with retry and backoff for
    /// connect-class failures. With a schema, creates it if missing (an existing schema needs
    /// only USAGE, not CREATE on the database) and sets
    /// `search_path` to `"schema", public`. On a manager over an external pool this is
    /// [`Error::Pool`]. Calling it twice is harmless.
    pub async fn connect(&self) -> Result<()> {
        let PoolSource::Owned { config, pool } = &self.inner.source else {
            return Err(Error::Pool(
                "this manager uses an external pool: do not call connect() on it; the pool's owner \
                 created it with AsyncDatabaseManager::create_shared_pool"
                    .into(),
            ));
        };
        if pool
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|p| !p.is_closed())
        {
            return Ok(());
        }
        let schema = config.schema.as_deref();
        let new_pool = crate::replica::connect_pool(PoolOptions {
            search_path: schema.map(owned_search_path),
            expect_search_path: false,
            registry: self.inner.registry.clone(),
            config,
            replica: None,
        })
        .await?;
        if let Some(schema) = schema {
            let conn = new_pool.get(self.deadline()).await?;
            // Look first: `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when
            // the schema exists, which a least-privilege role does not have. Simple protocol:
            // no named statement (PgBouncer transaction mode).
            let probe = format!(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = {}",
                crate::config::quote_literal(schema)
            );
            let log = crate::query::StatementLog::start(&probe, std::iter::empty());
            let probed = conn.simple_query(&probe).await;
            log.finish_driver(probed.as_ref());
            let exists = match probed {
                Ok(msgs) => msgs
                    .iter()
                    .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))),
                Err(e) => {
                    new_pool.close();
                    return Err(crate::query::query_error(e, &probe, std::iter::empty()));
                }
            };
            if !exists {
                let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema));
                let log = crate::query::StatementLog::start(&sql, std::iter::empty());
                let created = conn.batch_execute(&sql).await;
                log.finish_driver(created.as_ref());
                if let Err(e) = created {
                    // Two processes creating the same schema at once: the loser's error is
                    // harmless.
                    let benign = e
                        .code()
                        .is_some_and(|c| c.code() == "23505" || c.code() == "42P06");
                    if !benign {
                        new_pool.close();
                        return Err(crate::query::query_error(e, &sql, std::iter::empty()));
                    }
                }
            }
        }
        let old = pool
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(new_pool);
        if let Some(old) = old {
            old.close();
        }
        Ok(())
    }

    /// Closes the owned pool (connections are closed on the server). Does nothing for an
    /// external pool.
    pub async fn disconnect(&self) -> Result<()> {
        if let PoolSource::Owned { pool, .. } = &self.inner.source {
            let taken = pool.write().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(p) = taken {
                p.close();
                // Give the connection tasks a moment to send Terminate, so the server sees the
                // sessions end before we return.
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    /// The pool, or a clear error when the manager is not connected.
    pub fn pool(&self) -> Result<Pool> {
        match &self.inner.source {
            PoolSource::External(p) => Ok(p.clone()),
            PoolSource::Owned { pool, .. } => pool
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .ok_or_else(|| {
                    Error::Pool(
                        "not connected: call `db.connect().await?` before running queries".into(),
                    )
                }),
        }
    }

    /// The schema this manager works in.
    pub fn schema(&self) -> Option<&str> {
        self.inner.templates.schema()
    }

    /// The same manager with a different per-call timeout (`command_timeout` otherwise). On
    /// expiry a call returns [`Error::Timeout`] and the query is cancelled on the server.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) {
    /// let r = db.with_timeout(std::time::Duration::from_millis(100)).fetch_all("SELECT pg_sleep(5)", &[]).await;
    /// assert!(matches!(r, Err(pgdbm::Error::Timeout { .. })));
    /// # }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        AsyncDatabaseManager {
            inner: self.inner.clone(),
            timeout_override: Some(Some(timeout)),
            monitor: self.monitor.clone(),
            replica_view: self.replica_view,
            context: self.context.clone(),
        }
    }

    /// The same manager with no per-call timeout at all.
    pub fn without_timeout(&self) -> Self {
        AsyncDatabaseManager {
            inner: self.inner.clone(),
            timeout_override: Some(None),
            monitor: self.monitor.clone(),
            replica_view: self.replica_view,
            context: self.context.clone(),
        }
    }

    /// The same manager whose calls each run in a transaction of their own that starts with
    /// `context` (see `with_settings`).
    pub(crate) fn with_context(&self, context: Arc<str>) -> Self {
        AsyncDatabaseManager {
            context: Some(context),
            ..self.clone()
        }
    }

    /// The `SET LOCAL`s of a `with_settings`/`with_role` view.
    pub(crate) fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// The same manager recording into `monitor` (or into none).
    pub(crate) fn with_monitor(&self, monitor: Option<Arc<dyn Recorder>>) -> Self {
        AsyncDatabaseManager {
            inner: self.inner.clone(),
            timeout_override: self.timeout_override,
            monitor,
            replica_view: self.replica_view,
            context: self.context.clone(),
        }
    }

    /// The same manager (schema, templates, timeout) reading from a read replica: its
    /// `fetch_*` and `fetch_stream*` calls go to a healthy replica in turn, or, when none is
    /// healthy, to the primary (`replica_fallback = "primary"`, the default) or fail with
    /// [`Error::NoReplica`] (`"error"`). Everything else (`execute`, `executemany`,
    /// `execute_and_return_id`, COPY, `transaction*`, `acquire`) still goes to the primary, and
    /// so does a fetch that the replica refuses as a write (SQLSTATE `25006`).
    /// A read sees the writes this manager (or a clone or view of it) made before it: it waits
    /// up to `read_your_writes_timeout` for the replica to replay them, then reads from the
    /// primary. Without `read_replicas` configured, it reads from the primary. Cheap: no I/O.
    ///
    /// ```no_run
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// db.execute("UPDATE {{tables.users}} SET name = 'x' WHERE id = 1", &[]).await?;
    /// let name: Option<String> = db
    ///     .replica()
    ///     .fetch_value("SELECT name FROM {{tables.users}} WHERE id = 1", &[])
    ///     .await?;
    /// assert_eq!(name.as_deref(), Some("x")); // read-your-writes
    /// # Ok(()) }
    /// ```
    pub fn replica(&self) -> Self {
        AsyncDatabaseManager {
            inner: self.inner.clone(),
            timeout_override: self.timeout_override,
            monitor: self.monitor.clone(),
            replica_view: true,
            context: self.context.clone(),
        }
    }

    /// Whether this is a [`replica`](Self::replica) view.
    pub fn is_replica_view(&self) -> bool {
        self.replica_view
    }

    pub(crate) fn write_tracker(&self) -> &WriteTracker {
        &self.inner.writes
    }

    pub(crate) fn writes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.inner.writes.writes.clone()
    }

    /// A connection for one call: the primary's, unless the pool has replicas and the call
    /// may read from one.
    pub(crate) async fn route(
        &self,
        deadline: Option<Instant>,
        intent: Intent,
        sql: &str,
    ) -> Result<ConnRef<'static>> {
        self.connection(deadline, intent, sql, false).await
    }

    /// A raw pooled connection (derefs to `tokio_postgres::Client`). When it is dropped, it
    /// goes back to the pool only after a check that it is idle (no transaction left open).
    pub async fn acquire(&self) -> Result<PoolConnection> {
        let conn = self.checkout().await?;
        conn.conn().set_state(SessionState::Unknown);
        Ok(conn)
    }

    /// A pooled connection for pgdbm's own use: its state stays tracked statement by statement.
    pub(crate) async fn checkout(&self) -> Result<PoolConnection> {
        let pool = self.pool()?;
        let mut conn = pool.get(self.deadline()).await?;
        if crate::replica::replicas_of(&pool).is_some() {
            conn.count_release(self.writes());
        }
        Ok(conn)
    }

    /// Pool statistics: connections, limits, server version and acquire waits. It never waits for a
    /// connection: `pid` is that of an idle connection, `None` when all are busy.
    pub async fn get_pool_stats(&self) -> Result<PoolStats> {
        let schema = self.schema().map(str::to_owned);
        let pool = match self.pool() {
            Ok(p) if !p.is_closed() => p,
            _ => {
                let (min, max, database, pooler) = match &self.inner.source {
                    PoolSource::Owned { config, .. } => (
                        config.min_connections,
                        config.max_connections,
                        config.database.clone(),
                        config.pooler,
                    ),
                    PoolSource::External(p) => (
                        p.inner.min_size,
                        p.raw_status().max_size,
                        p.inner.database.clone(),
                        p.inner.pooler,
                    ),
                };
                return Ok(PoolStats::disconnected(min, max, database, schema, pooler));
            }
        };
        let status = pool.raw_status();
        let (acquire_count, acquire_wait_total, acquire_timeouts) = pool.wait_stats();
        let pid = pool.idle_backend_pid();
        let version = Some(pool.server_version().to_owned()).filter(|v| !v.is_empty());
        Ok(PoolStats {
            status: PoolStatus::Connected,
            min_size: pool.inner.min_size,
            max_size: status.max_size,
            size: status.size,
            free_size: status.available,
            used_size: status.size.saturating_sub(status.available),
            database: pool.inner.database.clone(),
            schema,
            pid,
            version,
            waiting: status.waiting,
            acquire_count,
            acquire_wait_total,
            acquire_timeouts,
            pooler: pool.inner.pooler,
            hosts: crate::replica::host_stats(&pool),
            shared: pool.shared_stats(),
            shared_calls: pool.shared_calls(),
            one_trip_misses: pool.one_trip_misses(),
        })
    }

    /// Registers a statement to prepare on every current and future connection of the pool
    /// (current ones at their next checkout). A statement that cannot be prepared yet (its
    /// table does not exist) is prepared on first use instead.
    ///
    /// ```no_run
    /// # fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// db.add_prepared_statement("user_by_email", "SELECT * FROM {{tables.users}} WHERE email = $1")?;
    /// # Ok(()) }
    /// ```
    pub fn add_prepared_statement(&self, name: &str, query: &str) -> Result<()> {
        check_identifier(name, "prepared statement name")?;
        let sql = self.inner.templates.render(query)?.into_arc();
        self.inner.registry.add(name, sql);
        Ok(())
    }

    query_methods!();
}

impl Runner for AsyncDatabaseManager {
    fn templates(&self) -> &Templates {
        &self.inner.templates
    }

    fn recorder(&self) -> Option<&Arc<dyn Recorder>> {
        self.monitor.as_ref()
    }

    fn pool(&self) -> Option<Pool> {
        AsyncDatabaseManager::pool(self).ok()
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout_override.unwrap_or(self.inner.default_timeout)
    }

    fn conn(
        &self,
        deadline: Option<Instant>,
        intent: Intent,
        sql: &str,
    ) -> impl std::future::Future<Output = Result<ConnRef<'_>>> + Send {
        match self.ready_conn(false) {
            Some(conn) => Either::Left(std::future::ready(Ok(conn))),
            None => Either::Right(Box::pin(self.connection(deadline, intent, sql, false))),
        }
    }

    fn call_conn(
        &self,
        deadline: Option<Instant>,
        intent: Intent,
        sql: &str,
    ) -> impl std::future::Future<Output = Result<ConnRef<'_>>> + Send {
        match self.ready_conn(true) {
            Some(conn) => Either::Left(std::future::ready(Ok(conn))),
            None => Either::Right(Box::pin(self.connection(deadline, intent, sql, true))),
        }
    }

    fn in_transaction(&self) -> bool {
        false
    }

    fn local_context(&self) -> Option<&str> {
        self.context.as_deref()
    }
}

impl AsyncDatabaseManager {
    /// A connection for one call: a shared one when `shareable` and the pool multiplexes, else
    /// the primary's, unless the pool has replicas and the call may read from one. It borrows
    /// nothing, so its lifetime `'c` is the caller's choice.
    async fn connection<'c>(
        &self,
        deadline: Option<Instant>,
        intent: Intent,
        sql: &str,
        shareable: bool,
    ) -> Result<ConnRef<'c>> {
        // `route` written out rather than called: without replicas a query pays one branch,
        // not a nested future.
        let pool = self.pool()?;
        if shareable && pool.multiplexes() && self.shares(&pool, sql) {
            return Ok(ConnRef::Shared(pool.get_shared(deadline).await?));
        }
        if let Some(set) = crate::replica::replicas_of(&pool) {
            return Box::pin(crate::replica::route(
                self.replica_view,
                self.write_tracker(),
                pool,
                set,
                deadline,
                intent,
                sql,
            ))
            .await;
        }
        Ok(ConnRef::Pooled(
            pool.get_home(deadline, self.inner.home).await?,
        ))
    }

    /// An idle pooled connection at once, without a future, when the call needs no routing
    /// (no read replicas) nor sharing (`shareable` on a multiplexing pool) and one is ready;
    /// `None` sends it the long way, through [`connection`](Self::connection), boxed so that
    /// its large future is not part of (and moved with) every call's.
    #[inline]
    fn ready_conn(&self, shareable: bool) -> Option<ConnRef<'static>> {
        let pool = self.pool().ok()?;
        if (shareable && pool.multiplexes()) || crate::replica::replicas_of(&pool).is_some() {
            return None;
        }
        pool.try_get(self.inner.home).map(ConnRef::Pooled)
    }

    /// Whether a call of `sql` may share a connection: session-neutral, outside a
    /// `with_settings`/`with_role` view (whose calls open transactions), on a pool without
    /// read replicas.
    fn shares(&self, pool: &Pool, sql: &str) -> bool {
        self.context.is_none()
            && crate::replica::replicas_of(pool).is_none()
            && crate::sql::Effects::of(sql).is_none()
    }
}

impl fmt::Debug for AsyncDatabaseManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, connected) = match &self.inner.source {
            PoolSource::Owned { pool, .. } => {
                ("owned", pool.read().map(|p| p.is_some()).unwrap_or(false))
            }
            PoolSource::External(_) => ("external", true),
        };
        f.debug_struct("AsyncDatabaseManager")
            .field("schema", &self.schema())
            .field("pool", &kind)
            .field("connected", &connected)
            .field("replica_view", &self.replica_view)
            .field("local_context", &self.context.is_some())
            .finish()
    }
}

impl crate::Pipeline<'_, AsyncDatabaseManager> {
    /// Sends every queued statement on one connection and reads their results. The `Err` of
    /// this call is for the pipeline as a whole (no connection, a timeout); each statement's
    /// own error is in its result.
    pub async fn run(self) -> Result<crate::PipelineResults> {
        crate::query::run_pipeline(self).await
    }
}
