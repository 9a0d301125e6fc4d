//! One pooled connection: the driver client, its statement cache, and timed execution with
//! server-side cancellation.

use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{pin_mut, TryStreamExt};
use lru::LruCache;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, RowStream, Statement};

use crate::error::{Error, Result};
use crate::pool::PgManager;
use crate::tls::MakeTls;

/// How long we wait for a cancelled query's connection to become idle before discarding it.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// The Fx hash (as in rustc): SQL texts are our own keys, not attacker-chosen, and SipHash
/// showed up in the per-query profile.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().unwrap_or_default());
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn now_micros() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// Prepared statements by SQL text, least recently used evicted first.
type StatementCache = LruCache<Box<str>, Statement, BuildHasherDefault<FxHasher>>;

/// A live server connection as the pool keeps it.
pub(crate) struct PgConn {
    pub(crate) client: Client,
    /// `None` = no named statements at all (transaction poolers).
    statements: Option<Mutex<StatementCache>>,
    /// Statements registered with `add_prepared_statement`; never evicted.
    pinned: Mutex<Vec<(Arc<str>, Statement)>>,
    /// Whether `pinned` is non-empty, so the common case skips its lock.
    has_pinned: AtomicBool,
    pub(crate) prepared_generation: AtomicU64,
    pub(crate) queries: AtomicU64,
    pub(crate) last_used: AtomicU64,
    broken: AtomicBool,
    pub(crate) backend_pid: i32,
    pub(crate) version: String,
    tls: Option<MakeTls>,
}

impl PgConn {
    pub(crate) fn new(
        client: Client,
        cache_size: usize,
        backend_pid: i32,
        version: String,
        tls: Option<MakeTls>,
    ) -> Self {
        PgConn {
            client,
            statements: NonZeroUsize::new(cache_size)
                .map(|n| Mutex::new(LruCache::with_hasher(n, BuildHasherDefault::default()))),
            pinned: Mutex::new(Vec::new()),
            has_pinned: AtomicBool::new(false),
            prepared_generation: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            last_used: AtomicU64::new(now_micros()),
            broken: AtomicBool::new(false),
            backend_pid,
            version,
            tls,
        }
    }

    /// Marks the connection so that the pool drops it instead of handing it out again.
    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.client.is_closed()
    }

    pub(crate) fn uses_named_statements(&self) -> bool {
        self.statements.is_some()
    }

    /// A prepared statement for `sql`, from the cache or freshly prepared.
    pub(crate) async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(hit) = self.pinned_statement(sql) {
            return Ok(hit);
        }
        if let Some(cache) = &self.statements {
            if let Some(st) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(sql) {
                return Ok(st.clone());
            }
        }
        // Boxed: the driver's prepare future (with its type lookups) is large, and inline it
        // would be part of, and copied with, every query's future, cache hit or not.
        Box::pin(self.prepare_and_cache(sql)).await
    }

    async fn prepare_and_cache(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let Some(cache) = &self.statements else {
            // Callers check `uses_named_statements` first; preparing here keeps this total.
            return self.client.prepare(sql).await;
        };
        let st = self.client.prepare(sql).await?;
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(sql.into(), st.clone());
        Ok(st)
    }

    /// Drops `sql` from the caches if `error` says its prepared statement is stale, so the next
    /// use prepares it again. Returns whether it did.
    pub(crate) fn forget_if_stale(&self, sql: &str, error: &tokio_postgres::Error) -> bool {
        let Some(db) = error.as_db_error() else {
            return false;
        };
        let stale = match db.code().code() {
            "0A000" => db
                .message()
                .contains("cached plan must not change result type"),
            "26000" => true,
            _ => false,
        };
        if !stale {
            return false;
        }
        if let Some(cache) = &self.statements {
            cache.lock().unwrap_or_else(|e| e.into_inner()).pop(sql);
        }
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _)| &**s != sql);
        true
    }

    fn pinned_statement(&self, sql: &str) -> Option<Statement> {
        if !self.has_pinned.load(Ordering::Relaxed) {
            return None;
        }
        let pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if pinned.is_empty() {
            return None;
        }
        pinned
            .iter()
            .find(|(s, _)| &**s == sql)
            .map(|(_, st)| st.clone())
    }

    /// Prepares and pins a registered statement; failures are left for the first real use.
    pub(crate) async fn pin_statement(&self, sql: Arc<str>) {
        if self.statements.is_none() || self.pinned_statement(&sql).is_some() {
            return;
        }
        match self.client.prepare(&sql).await {
            Ok(st) => {
                self.pinned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((sql, st));
                self.has_pinned.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "prepared statement not ready yet; it will be prepared on first use")
            }
        }
    }

    fn count(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// Rows of a query, by cached statement or, without named statements, by one unnamed round
    /// trip with the parameter types taken from the values.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.count();
        if self.uses_named_statements() {
            let st = self.statement(sql).await?;
            self.client.query(&st, params).await
        } else {
            let typed = typed_params(params);
            self.client.query_typed(sql, &typed).await
        }
    }

    /// The rows mapped by `f` as they arrive, so a large result is never held twice (as rows
    /// and as `T`). The first error of `f` ends the read; the driver discards the rest.
    pub(crate) async fn query_map<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        f: fn(crate::Record) -> crate::Result<T>,
    ) -> Result<crate::Result<Vec<T>>, tokio_postgres::Error> {
        let stream = self.query_stream(sql, params).await?;
        pin_mut!(stream);
        let mut out = Vec::new();
        while let Some(row) = stream.try_next().await? {
            match f(crate::Record::new(row)) {
                Ok(v) => out.push(v),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    }

    /// A stream of rows, for callers that want only the first row or want to stream.
    pub(crate) async fn query_stream(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<RowStream, tokio_postgres::Error> {
        self.count();
        if self.uses_named_statements() {
            let st = self.statement(sql).await?;
            self.client.query_raw(&st, params.iter().copied()).await
        } else {
            let typed = typed_params(params);
            self.client
                .query_typed_raw(sql, typed.iter().map(|(v, t)| (*v, t.clone())))
                .await
        }
    }

    /// The first row, if any; the rest of the result is discarded.
    pub(crate) async fn query_first(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let stream = self.query_stream(sql, params).await?;
        pin_mut!(stream);
        stream.try_next().await
    }

    /// Rows affected. Without parameters the simple protocol is used, so a script of several
    /// statements (DDL, say) runs as the seed's `execute` does.
    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.count();
        if params.is_empty() {
            let msgs = self.client.simple_query(sql).await?;
            let affected = msgs
                .iter()
                .rev()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
                    _ => None,
                })
                .unwrap_or(0);
            return Ok(affected);
        }
        if self.uses_named_statements() {
            let st = self.statement(sql).await?;
            self.client.execute(&st, params).await
        } else {
            let typed = typed_params(params);
            self.client.execute_typed(sql, &typed).await
        }
    }

    /// Runs `fut` (which uses this connection) under `deadline`. On expiry the server-side
    /// query is cancelled and the connection drained, so it goes back to the pool idle; if that
    /// cannot be confirmed it is marked broken and never reused.
    /// `pooled` = the call runs outside a user transaction, so a cancelled implicit transaction
    /// is rolled back before the connection goes back.
    pub(crate) async fn timed<T>(
        &self,
        deadline: Option<Instant>,
        pooled: bool,
        operation: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(deadline) = deadline else {
            return fut.await;
        };
        let started = Instant::now();
        match tokio::time::timeout_at(deadline.into(), fut).await {
            Ok(r) => r,
            Err(_) => {
                // Boxed: the cancel request (a new connection, TLS included) is a large state
                // machine that would otherwise be part of every query's future.
                Box::pin(self.cancel_and_drain(pooled)).await;
                Err(Error::Timeout {
                    operation: crate::error::shorten_sql(operation),
                    after: started.elapsed(),
                })
            }
        }
    }

    pub(crate) async fn cancel_and_drain(&self, rollback: bool) {
        let token = self.client.cancel_token();
        let cancelled = match &self.tls {
            Some(tls) => token.cancel_query(tls.clone()).await,
            None => token.cancel_query(tokio_postgres::NoTls).await,
        };
        if let Err(e) = cancelled {
            tracing::warn!(error = %e, "could not send a cancel request; discarding the connection");
            self.mark_broken();
            return;
        }
        // The empty query's answer comes after the cancelled query's, so once it is back the
        // connection is idle (or in an aborted transaction the caller rolls back).
        let drain = if rollback { "ROLLBACK" } else { "" };
        match tokio::time::timeout(DRAIN_LIMIT, self.client.simple_query(drain)).await {
            Ok(Ok(_)) => {}
            _ => self.mark_broken(),
        }
    }
}

/// Explicit parameter types for the unnamed-statement path. Text-like values go as `unknown`
/// so the server infers the column's type (varchar, enum, …) as it would for a literal.
pub(crate) fn typed_params<'a>(
    params: &[&'a (dyn ToSql + Sync)],
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    const CANDIDATES: &[Type] = &[
        Type::UNKNOWN,
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::BYTEA,
        Type::JSONB,
        Type::UUID,
        Type::DATE,
        Type::TIME,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::INET,
        Type::OID,
        Type::CHAR,
        Type::BOOL_ARRAY,
        Type::INT2_ARRAY,
        Type::INT4_ARRAY,
        Type::INT8_ARRAY,
        Type::FLOAT4_ARRAY,
        Type::FLOAT8_ARRAY,
        Type::NUMERIC_ARRAY,
        Type::TEXT_ARRAY,
        Type::BYTEA_ARRAY,
        Type::JSONB_ARRAY,
        Type::UUID_ARRAY,
        Type::DATE_ARRAY,
        Type::TIMESTAMP_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::INET_ARRAY,
    ];
    params
        .iter()
        .map(|p| {
            let ty = CANDIDATES
                .iter()
                .find(|t| p.accepts_dyn(t))
                .cloned()
                .unwrap_or(Type::UNKNOWN);
            (*p, ty)
        })
        .collect()
}

trait AcceptsDyn {
    fn accepts_dyn(&self, ty: &Type) -> bool;
}

impl AcceptsDyn for &(dyn ToSql + Sync) {
    fn accepts_dyn(&self, ty: &Type) -> bool {
        // `accepts` is not object safe; `to_sql_checked` runs it for us on an empty buffer.
        let mut buf = bytes::BytesMut::new();
        match self.to_sql_checked(ty, &mut buf) {
            Ok(_) => true,
            Err(e) => !e.is::<tokio_postgres::types::WrongType>(),
        }
    }
}

/// A connection checked out of the pool. It derefs to the driver's [`Client`], for anything
/// pgdbm does not cover; dropping it returns it to the pool.
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let conn = db.acquire().await?;
/// conn.batch_execute("LISTEN jobs").await.map_err(|e| pgdbm::Error::Pool(e.to_string()))?;
/// # Ok(()) }
/// ```
pub struct PoolConnection {
    /// Always `Some` until `detach` or drop.
    obj: Option<deadpool::managed::Object<PgManager>>,
}

impl PoolConnection {
    pub(crate) fn new(obj: deadpool::managed::Object<PgManager>) -> Self {
        PoolConnection { obj: Some(obj) }
    }

    pub(crate) fn conn(&self) -> &PgConn {
        self.obj.as_ref().expect("connection present until dropped")
    }

    /// The server process ID serving this connection.
    pub fn backend_pid(&self) -> i32 {
        self.conn().backend_pid
    }

    /// Takes the connection out of the pool for good (it is closed when dropped), for example
    /// after changing session state that must not leak to other users.
    pub fn detach(mut self) -> Client {
        let obj = self.obj.take().expect("connection present until dropped");
        deadpool::managed::Object::take(obj).client
    }
}

impl Deref for PoolConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.conn().client
    }
}

impl Drop for PoolConnection {
    fn drop(&mut self) {
        // Idle time counts from the return to the pool, not from the checkout.
        if let Some(obj) = &self.obj {
            obj.last_used.store(now_micros(), Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for PoolConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConnection")
            .field("backend_pid", &self.conn().backend_pid)
            .finish_non_exhaustive()
    }
}
