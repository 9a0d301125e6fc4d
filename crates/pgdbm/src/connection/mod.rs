//! One pooled connection: the driver client, its statement cache, and timed execution with
//! server-side cancellation.

use std::future::Future;
use std::hash::BuildHasherDefault;
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{pin_mut, TryStreamExt};
use lru::LruCache;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, RowStream, Statement};

use crate::error::{Error, Result};
use crate::pool::PgManager;
use crate::tls::MakeTls;
use crate::util::{now_micros, FxHasher};

mod cancel;
mod statements;

pub(crate) use statements::Stale;

/// How long we wait for a cancelled query's connection to become idle before discarding it.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Prepared statements by SQL text, least recently used evicted first.
type StatementCache = LruCache<Box<str>, Statement, BuildHasherDefault<FxHasher>>;

/// A live server connection as the pool keeps it.
pub(crate) struct PgConn {
    pub(crate) client: Client,
    /// `None` = no named statements at all (transaction poolers).
    statements: Option<Mutex<StatementCache>>,
    /// Without named statements: the parameter types the server infers, by SQL text.
    param_types: Option<Mutex<statements::ParamTypeCache>>,
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
            param_types: (cache_size == 0).then(statements::param_type_cache),
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

    fn count(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// Rows of a query, by cached statement or, without named statements, by one unnamed round
    /// trip with the parameter types the server infers (see `typed_params`).
    /// `in_transaction`: the call runs inside a transaction (only the unnamed path cares).
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        in_transaction: bool,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.count();
        if self.uses_named_statements() {
            let st = self.statement(sql).await?;
            self.client.query(&st, params).await
        } else {
            let typed = self.typed_params(sql, params, in_transaction).await?;
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
        in_transaction: bool,
    ) -> Result<crate::Result<Vec<T>>, tokio_postgres::Error> {
        let stream = self.query_stream(sql, params, in_transaction).await?;
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
        in_transaction: bool,
    ) -> Result<RowStream, tokio_postgres::Error> {
        self.count();
        if self.uses_named_statements() {
            let st = self.statement(sql).await?;
            self.client.query_raw(&st, params.iter().copied()).await
        } else {
            let typed = self.typed_params(sql, params, in_transaction).await?;
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
        in_transaction: bool,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let stream = self.query_stream(sql, params, in_transaction).await?;
        pin_mut!(stream);
        stream.try_next().await
    }

    /// Rows affected. Without parameters the simple protocol is used, so a script of several
    /// statements (DDL, say) runs as the seed's `execute` does.
    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        in_transaction: bool,
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
            let typed = self.typed_params(sql, params, in_transaction).await?;
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
