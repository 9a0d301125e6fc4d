//! One pooled connection: the driver client, its session state, its statement cache, and timed
//! execution with server-side cancellation.
//!
//! # Session states
//!
//! Every connection carries an explicit [`SessionState`]: idle, active (a statement in flight),
//! in a transaction, active in a transaction, in COPY, cancelling (a timed-out statement is
//! being cancelled), unknown (handed out as a raw client) or broken. Every statement pgdbm sends
//! passes one choke point, [`PgConn::timed`] (or the stream, which does the same per row): it
//! moves the state to active, runs the statement under its deadline, and moves it back when
//! the statement ends. A future dropped at any await leaves the state at active, in COPY or
//! cancelling, so the connection's owner always knows what the server may still be doing.
//!
//! When a checked-out connection is dropped, only an idle one goes back to the pool.
//! Anything else is taken out of the pool at once, on whatever thread drops it: on the pool's
//! runtime a background task cancels what may still run (waiting for the server to confirm,
//! as libpq's `PQcancel` does), drains or rolls back, and returns the connection only once it
//! is known to be idle; if that fails, or no runtime is left to run it, the connection is
//! closed, which makes the server roll back. Recycling accepts only idle connections.

use std::hash::BuildHasherDefault;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{pin_mut, TryStreamExt};
use lru::LruCache;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, RowStream, Statement};

use crate::error::Result;
use crate::tls::MakeTls;
use crate::util::{now_micros, FxHasher};

mod cancel;
mod family;
mod hosts;
mod log;
mod pipeline;
mod reset;
mod shared;
mod socket;
mod state;
mod statements;
mod tap;
mod timed;
mod typeinfo;
mod watchdog;

pub(crate) use cancel::CancelTarget;
pub(crate) use family::Families;
use family::Plan;
pub(crate) use hosts::{describe_failures, Connected, HostFailure, Servers};
pub(crate) use log::{query_error, StatementLog};
pub(crate) use pipeline::{in_order, Output, Ready, Sent, Want};
pub(crate) use reset::{SessionReset, DEALLOCATE_SQL_PREPARED, RESET_SESSION_SQL};
pub(crate) use state::{SessionState, StateCell};
pub(crate) use statements::Stale;
pub(crate) use tap::{Tap, TxStatus};

pub(crate) use typeinfo::TypeLookups;

/// Prepared statements by SQL text, least recently used evicted first.
/// Each statement keeps what its text does to the session, classified once.
type StatementCache =
    LruCache<Box<str>, (Statement, crate::sql::Effects), BuildHasherDefault<FxHasher>>;

/// Tells a pool that one of its connections left it (closed, broken or detached), so that it
/// reconnects to its minimum: handed to each connection by its pool.
#[derive(Debug, Default)]
pub(crate) struct Refill(tokio::sync::Notify);

impl Refill {
    pub(crate) fn signal(&self) {
        // One stored permit: a burst of losses wakes the task once or twice, not per loss.
        self.0.notify_one();
    }

    /// Waits for a signal.
    pub(crate) async fn wait(&self) {
        self.0.notified().await;
    }
}

/// [`PgConn::last_used`] of a connection released since the reaper last looked at it.
pub(crate) const RELEASED: u64 = u64::MAX;

/// A live server connection as the pool keeps it.
pub(crate) struct PgConn {
    pub(crate) client: Client,
    /// `None` = no named statements at all (transaction poolers).
    statements: Option<Mutex<StatementCache>>,
    /// Without named statements: the parameter types the server infers, by SQL text.
    param_types: Option<Mutex<statements::ParamTypeCache>>,
    /// The pool's parameter types by template (see `family`).
    families: Arc<Families>,
    /// Statements registered with `add_prepared_statement`; never evicted.
    pinned: Mutex<Vec<(Arc<str>, Statement, crate::sql::Effects)>>,
    /// Whether `pinned` is non-empty, so the common case skips its lock.
    has_pinned: AtomicBool,
    pub(crate) prepared_generation: AtomicU64,
    pub(crate) queries: AtomicU64,
    /// When the connection went back to the pool (µs since the process's epoch), or
    /// [`RELEASED`].
    pub(crate) last_used: AtomicU64,
    state: StateCell,
    pub(crate) backend_pid: i32,
    pub(crate) version: String,
    tls: Option<MakeTls>,
    cancel_target: Option<Arc<CancelTarget>>,
    /// The pool's runtime, where clean-up after an interrupted call runs.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Tells the pool that this connection left it, so that it reconnects to its minimum.
    pub(crate) refill: Arc<Refill>,
    /// Behind a transaction pooler: what to do about the driver's type-lookup statements.
    lookups: Option<TypeLookups>,
    /// Behind a transaction pooler: `SET LOCAL` statements for every transaction we open.
    transaction_setup: Option<Arc<str>>,
    /// Server connections may change between transactions (a transaction pooler).
    shares_server: bool,
    /// The transaction status and reported settings, read from the protocol.
    pub(crate) tap: Arc<Tap>,
    /// How the session is put back to what the pool set up.
    reset: Arc<SessionReset>,
    /// Why pgdbm closed this shared connection, for the callers whose statements were on it.
    lost: std::sync::OnceLock<String>,
}

/// How a new connection was made, besides its client.
pub(crate) struct ConnOrigin {
    pub(crate) cache_size: usize,
    pub(crate) backend_pid: i32,
    pub(crate) version: String,
    pub(crate) tls: Option<MakeTls>,
    pub(crate) cancel_target: Option<Arc<CancelTarget>>,
    pub(crate) refill: Arc<Refill>,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Set behind a transaction pooler (see [`crate::Pooler::Transaction`]).
    pub(crate) pooled: Option<PooledOrigin>,
    pub(crate) tap: Arc<Tap>,
    pub(crate) reset: Arc<SessionReset>,
    pub(crate) families: Arc<Families>,
}

/// What a connection behind a transaction pooler carries besides the rest.
pub(crate) struct PooledOrigin {
    pub(crate) lookups: TypeLookups,
    pub(crate) transaction_setup: Option<Arc<str>>,
}

impl PgConn {
    pub(crate) fn new(client: Client, origin: ConnOrigin) -> Self {
        let shares_server = origin.pooled.is_some();
        let (lookups, transaction_setup) = match origin.pooled {
            Some(p) => (Some(p.lookups), p.transaction_setup),
            None => (None, None),
        };
        PgConn {
            client,
            statements: NonZeroUsize::new(origin.cache_size)
                .map(|n| Mutex::new(LruCache::with_hasher(n, BuildHasherDefault::default()))),
            param_types: (origin.cache_size == 0).then(statements::param_type_cache),
            families: origin.families,
            pinned: Mutex::new(Vec::new()),
            has_pinned: AtomicBool::new(false),
            prepared_generation: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            last_used: AtomicU64::new(now_micros()),
            state: StateCell::new(),
            backend_pid: origin.backend_pid,
            version: origin.version,
            tls: origin.tls,
            cancel_target: origin.cancel_target,
            runtime: origin.runtime,
            refill: origin.refill,
            lookups,
            transaction_setup,
            shares_server,
            tap: origin.tap,
            reset: origin.reset,
            lost: std::sync::OnceLock::new(),
        }
    }

    /// Whether the session is exactly as the pool set it up, as far as the server's own
    /// messages and the classified statements show: not in a transaction (nor waiting for the
    /// end of a response), no session change, every reported setting at its baseline.
    #[inline]
    pub(crate) fn is_clean(&self) -> bool {
        self.tap.status() == TxStatus::Idle && !self.is_dirty() && !self.tap.params_changed()
    }

    /// The statement that opens a transaction: `begin`, then behind a transaction pooler the
    /// settings that could not be sent when connecting, as `SET LOCAL`, then the caller's
    /// `context` (a `with_settings`/`with_role` view's `SET LOCAL`s).
    pub(crate) fn begin_sql<'a>(
        &self,
        begin: &'a str,
        context: Option<&str>,
    ) -> std::borrow::Cow<'a, str> {
        match (&self.transaction_setup, context) {
            (None, None) => begin.into(),
            (setup, context) => {
                let mut sql = begin.to_owned();
                for part in [setup.as_deref(), context].into_iter().flatten() {
                    sql.push_str(";\n");
                    sql.push_str(part);
                }
                sql.into()
            }
        }
    }

    /// Behind a transaction pooler: each transaction may run on another server connection.
    pub(crate) fn shares_server(&self) -> bool {
        self.shares_server
    }

    /// Behind a transaction pooler: the `SET LOCAL` statements each transaction starts with.
    pub(crate) fn transaction_setup(&self) -> Option<&str> {
        self.transaction_setup.as_deref()
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
            let st = match self.cached_statement(sql) {
                Some(st) => st,
                // Written out, not a helper returning a future: a hit makes no future at all.
                None => match Box::pin(self.plan_miss(sql, params.len(), in_transaction)).await? {
                    Plan::Named(st) => st,
                    Plan::Guessed(types) => {
                        return Box::pin(self.query_guessed(sql, params, &types)).await
                    }
                },
            };
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
            let st = match self.cached_statement(sql) {
                Some(st) => st,
                // Written out, not a helper returning a future: a hit makes no future at all.
                None => match Box::pin(self.plan_miss(sql, params.len(), in_transaction)).await? {
                    Plan::Named(st) => st,
                    Plan::Guessed(types) => {
                        return Box::pin(self.stream_guessed(sql, params, &types)).await
                    }
                },
            };
            self.client.query_raw(&st, params.iter().copied()).await
        } else {
            let typed = self.typed_params(sql, params, in_transaction).await?;
            self.client
                .query_typed_raw(sql, typed.iter().map(|(v, t)| (*v, t.clone())))
                .await
        }
    }

    /// The first row, if any. The rest of the result is read and discarded before this
    /// returns, so the connection is idle when it is released (the next user does not wait
    /// for the rest), and an error in a later row is reported here rather than lost.
    pub(crate) async fn query_first(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        in_transaction: bool,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let stream = self.query_stream(sql, params, in_transaction).await?;
        pin_mut!(stream);
        let first = stream.try_next().await?;
        if first.is_some() {
            while stream.try_next().await?.is_some() {}
        }
        Ok(first)
    }

    /// The first row, if any, and how many rows there were (the rest is read and counted).
    pub(crate) async fn query_counted(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        in_transaction: bool,
    ) -> Result<(Option<Row>, u64), tokio_postgres::Error> {
        let stream = self.query_stream(sql, params, in_transaction).await?;
        pin_mut!(stream);
        let first = stream.try_next().await?;
        let mut rows = u64::from(first.is_some());
        // A finished stream must not be polled again (the driver reports it closed).
        if first.is_some() {
            while stream.try_next().await?.is_some() {
                rows += 1;
            }
        }
        Ok((first, rows))
    }

    /// Rows affected. Without parameters the simple protocol is used, so a script of several
    /// statements (DDL, say) runs as Python pgdbm's `execute` does.
    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        in_transaction: bool,
    ) -> Result<u64, tokio_postgres::Error> {
        self.count();
        if params.is_empty() {
            self.note_effects(crate::sql::Effects::of(sql));
            let msgs = self.client.simple_query(sql).await?;
            return Ok(pipeline::affected(&msgs));
        }
        if self.uses_named_statements() {
            let st = match self.cached_statement(sql) {
                Some(st) => st,
                // Written out, not a helper returning a future: a hit makes no future at all.
                None => match Box::pin(self.plan_miss(sql, params.len(), in_transaction)).await? {
                    Plan::Named(st) => st,
                    Plan::Guessed(types) => {
                        return Box::pin(self.execute_guessed(sql, params, &types)).await
                    }
                },
            };
            self.client.execute(&st, params).await
        } else {
            let typed = self.typed_params(sql, params, in_transaction).await?;
            self.client.execute_typed(sql, &typed).await
        }
    }
}
