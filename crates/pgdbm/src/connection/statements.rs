//! The per-connection statement cache: prepared statements by SQL text, statements registered
//! with `add_prepared_statement`, stale-plan handling, and parameter types for the mode without
//! named statements.

use std::hash::BuildHasherDefault;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use lru::LruCache;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Statement;

use super::typeinfo::{Bracket, TypeLookups};
use super::PgConn;
use super::StatementLog;
use crate::sql::Effects;
use crate::util::FxHasher;

/// Parameter types the server inferred, by SQL text, for the mode without named statements.
pub(super) type ParamTypeCache = LruCache<Box<str>, Arc<[Type]>, BuildHasherDefault<FxHasher>>;

/// SQL texts whose parameter types one connection remembers in the mode without named
/// statements. Learning them costs a round trip or two, once per text and connection.
const PARAM_TYPE_CACHE_SIZE: NonZeroUsize = match NonZeroUsize::new(256) {
    Some(n) => n,
    None => unreachable!(),
};

pub(super) fn param_type_cache() -> Mutex<ParamTypeCache> {
    Mutex::new(LruCache::with_hasher(
        PARAM_TYPE_CACHE_SIZE,
        BuildHasherDefault::default(),
    ))
}

/// What a failed call's error says about the connection's cached statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stale {
    /// Nothing cached is implicated.
    No,
    /// The statement (or learned parameter types) for this SQL was stale and is forgotten:
    /// running the call again on this connection prepares it anew.
    Retry,
    /// The session's named statements are gone (`DEALLOCATE ALL`, `DISCARD ALL`): ours are
    /// forgotten, but the driver's own type-lookup statements cannot be prepared again, so the
    /// connection is marked broken; a call may run again on another connection.
    Replace,
}

impl PgConn {
    /// A prepared statement for `sql`, from the cache or freshly prepared. What the statement
    /// does to the session is classified once, kept beside it, and noted here, before the
    /// statement is sent (so a statement cut off halfway is covered too).
    pub(crate) async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self.cached_statement(sql) {
            return Ok(st);
        }
        // Boxed: the driver's prepare future (with its type lookups) is large, and inline it
        // would be part of, and copied with, every query's future, cache hit or not.
        Box::pin(self.prepare_and_cache(sql)).await
    }

    /// `sql`'s registered or cached statement, its effects noted.
    #[inline]
    pub(super) fn cached_statement(&self, sql: &str) -> Option<Statement> {
        if let Some((st, fx)) = self.pinned_statement(sql) {
            self.note_effects(fx);
            return Some(st);
        }
        let (st, fx) = self
            .statements
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .map(|(st, fx)| (st.clone(), *fx))?;
        self.note_effects(fx);
        Some(st)
    }

    pub(super) async fn prepare_and_cache(
        &self,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        let fx = Effects::of(sql);
        self.note_effects(fx);
        let Some(cache) = &self.statements else {
            // Callers check `uses_named_statements` first; preparing here keeps this total.
            return self.client.prepare(sql).await;
        };
        let st = self.client.prepare(sql).await?;
        self.learn_family(sql, &st);
        let evicted = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sql.into(), (st.clone(), fx));
        if evicted.is_some_and(|(old, _)| *old != *sql) {
            self.families.note_eviction();
        }
        Ok(st)
    }

    /// Drops what `error` shows to be stale from the caches, so that the next use prepares (or
    /// learns) it again:
    /// - `0A000` "cached plan must not change result type" and `XX000` "cache lookup failed for
    ///   type" (a type was dropped and created again, so the OIDs in the statement are dead):
    ///   `sql`'s statement and parameter types, and for the latter the driver's type cache;
    /// - `26000` (a prepared statement does not exist): after `DEALLOCATE ALL` or `DISCARD ALL`
    ///   none of the session's named statements exist, ours nor the driver's. Everything is
    ///   forgotten and the connection is marked broken, because tokio-postgres keeps its
    ///   type-lookup statements (prepared once per client, on the first custom type) where we
    ///   cannot reach them: every later lookup of a new type would fail with `26000` again.
    /// - `25006` (read-only transaction): the server was demoted, or the pool reached a standby;
    ///   the connection is replaced, and a statement outside a transaction runs once more on
    ///   another connection (the refused one wrote nothing).
    pub(crate) fn forget_if_stale(&self, sql: &str, error: &tokio_postgres::Error) -> Stale {
        let Some(db) = error.as_db_error() else {
            return Stale::No;
        };
        match db.code().code() {
            "0A000"
                if db
                    .message()
                    .contains("cached plan must not change result type") =>
            {
                self.forget(sql);
                Stale::Retry
            }
            "XX000" if db.message().contains("cache lookup failed for type") => {
                self.forget(sql);
                self.client.clear_type_cache();
                Stale::Retry
            }
            "26000" => {
                self.forget_all_statements();
                self.retire();
                Stale::Replace
            }
            // The server became a standby (or is one): this connection can no longer write.
            "25006" => {
                self.retire();
                Stale::Replace
            }
            _ => Stale::No,
        }
    }

    /// Notes what a statement about to be sent does to the session: a change marks the
    /// session for a reset before reuse; dropping every named statement forgets ours and
    /// retires the connection (the driver's own lookup statements cannot be made again).
    pub(crate) fn note_effects(&self, fx: Effects) {
        if fx.is_none() {
            return;
        }
        if fx.changes_session() {
            self.mark_dirty();
        }
        if fx.drops_statements() {
            self.forget_all_statements();
            self.retire();
        }
    }

    fn forget(&self, sql: &str) {
        if let Some(cache) = &self.statements {
            cache.lock().unwrap_or_else(|e| e.into_inner()).pop(sql);
        }
        if let Some(cache) = &self.param_types {
            cache.lock().unwrap_or_else(|e| e.into_inner()).pop(sql);
        }
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _, _)| &**s != sql);
    }

    /// Forgets every cached statement and learned parameter type. Registered statements are
    /// pinned again at the connection's next checkout, if it is kept.
    fn forget_all_statements(&self) {
        // Dropping a statement only queues its Close, so doing it under the lock is fine.
        if let Some(cache) = &self.statements {
            cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        if let Some(cache) = &self.param_types {
            cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.has_pinned.store(false, Ordering::Relaxed);
        // No registry generation is ever u64::MAX, so the registry counts it as behind.
        self.prepared_generation.store(u64::MAX, Ordering::Relaxed);
    }

    fn pinned_statement(&self, sql: &str) -> Option<(Statement, Effects)> {
        if !self.has_pinned.load(Ordering::Relaxed) {
            return None;
        }
        let pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if pinned.is_empty() {
            return None;
        }
        pinned
            .iter()
            .find(|(s, _, _)| &**s == sql)
            .map(|(_, st, fx)| (st.clone(), *fx))
    }

    /// Prepares and pins a registered statement; failures are left for the first real use.
    pub(crate) async fn pin_statement(&self, sql: Arc<str>) {
        if self.statements.is_none() || self.pinned_statement(&sql).is_some() {
            return;
        }
        match self.client.prepare(&sql).await {
            Ok(st) => {
                self.pinned.lock().unwrap_or_else(|e| e.into_inner()).push((
                    sql.clone(),
                    st,
                    Effects::of(&sql),
                ));
                self.has_pinned.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "prepared statement not ready yet; it will be prepared on first use")
            }
        }
    }
}

impl PgConn {
    /// `params` with the types the server infers for `sql`'s parameters, for the mode without
    /// named statements. Declaring exactly those types makes the driver check every value
    /// against them (`to_sql_checked`) as it does for a prepared statement, so both modes give
    /// the same result or the same error. The types are learned once per SQL text and
    /// connection; a wrong number of parameters gives the driver's own error, as in named mode.
    ///
    /// `in_transaction`: the call runs inside a transaction (the caller's, or the implicit one of
    /// `executemany`); outside one, learning brackets itself in `BEGIN`/`ROLLBACK`.
    pub(crate) async fn typed_params<'a>(
        &self,
        sql: &str,
        params: &[&'a (dyn ToSql + Sync)],
        in_transaction: bool,
    ) -> Result<Vec<(&'a (dyn ToSql + Sync), Type)>, tokio_postgres::Error> {
        // Classified on every call: this mode keeps no statement to keep the verdict with.
        self.note_effects(Effects::of(sql));
        let cached = self.param_types.as_ref().and_then(|c| {
            c.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(sql)
                .cloned()
        });
        let types = match cached {
            Some(types) if types.len() == params.len() => types,
            // No `$` at all: no parameters, nothing to learn. Behind a transaction pooler the
            // describe runs anyway, so that custom result types are looked up inside it.
            _ if params.is_empty() && !sql.contains('$') && !self.shares_server => {
                return Ok(Vec::new())
            }
            // Boxed: the prepare future is large and only needed on a miss.
            _ => Box::pin(self.learn_param_types(sql, params, in_transaction)).await?,
        };
        Ok(params.iter().copied().zip(types.iter().cloned()).collect())
    }

    async fn learn_param_types(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        in_transaction: bool,
    ) -> Result<Arc<[Type]>, tokio_postgres::Error> {
        let types = self
            .describe(sql, in_transaction, |st| {
                if st.params().len() != params.len() {
                    // The driver checks the count before sending anything, so this is ready at
                    // once with the error named mode gives.
                    if let Some(Err(e)) = self
                        .client
                        .execute_raw(st, params.iter().copied())
                        .now_or_never()
                    {
                        return Err(e);
                    }
                }
                Ok(Arc::<[Type]>::from(st.params()))
            })
            .await??;
        if let Some(cache) = &self.param_types {
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(sql.into(), types.clone());
        }
        Ok(types)
    }

    /// Prepares `sql` as a named statement, hands it to `f`, and closes it, leaving nothing
    /// behind on a transaction pooler's server connection: outside a transaction the prepare is
    /// pipelined after a `BEGIN` (one round trip) and the Close goes before the `ROLLBACK`, so
    /// all of it runs on one server connection.
    ///
    /// The driver looks up custom types (enums, domains, composites) with named statements of
    /// its own. Behind a transaction pooler they are recreated in the same transaction, just
    /// before the prepare, and removed after it (see `typeinfo`); inside a caller's
    /// transaction that happens under a savepoint, so a failed prepare still removes them.
    pub(crate) async fn describe<T>(
        &self,
        sql: &str,
        in_transaction: bool,
        f: impl Fn(&Statement) -> T,
    ) -> Result<T, tokio_postgres::Error> {
        match self.describe_once(sql, in_transaction, false, &f).await {
            // Another client's leftover statement of the same name is on this server
            // connection (one that closed mid-describe, or not pgdbm): clear them and retry.
            // The failed attempt's bracket was closed, so this is safe inside a transaction too.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_PSTATEMENT) && self.recreates() => {
                self.describe_once(sql, in_transaction, true, &f).await
            }
            other => other,
        }
    }

    fn recreates(&self) -> bool {
        matches!(self.lookups, Some(TypeLookups::Recreate { .. }))
    }

    /// One attempt of [`describe`](Self::describe); `clean_first` clears leftover named
    /// statements first.
    async fn describe_once<T>(
        &self,
        sql: &str,
        in_transaction: bool,
        clean_first: bool,
        f: &impl Fn(&Statement) -> T,
    ) -> Result<T, tokio_postgres::Error> {
        let bracket = match &self.lookups {
            // Not behind a transaction pooler, or one that keeps named statements itself.
            None | Some(TypeLookups::Tracked) if in_transaction => {
                let st = self.client.prepare(sql).await?;
                return Ok(f(&st));
            }
            None => Bracket::plain("BEGIN", "ROLLBACK", "ROLLBACK"),
            Some(lookups) => lookups.bracket(in_transaction, clean_first),
        };
        // Dropped halfway (the caller gave up), the connection could be left inside our
        // transaction or holding lookup statements: then it must not be reused.
        let mut guard = BrokenUnlessDone {
            conn: self,
            done: false,
        };
        // The describe of `sql` rides along, pipelined: it is timed with the opening batch.
        let log = StatementLog::start(&bracket.open, std::iter::empty());
        let (opened, prepared) = futures_util::future::join(
            self.client.batch_execute(&bracket.open),
            self.client.prepare(sql),
        )
        .await;
        log.finish_driver(opened.as_ref().and(prepared.as_ref()));
        // The statement is dropped here, queueing its Close ahead of the closing batch.
        let out = prepared.map(|st| f(&st));
        let close = match (&opened, &out) {
            (Ok(()), Ok(_)) => &bracket.ok,
            (Ok(()), Err(_)) => &bracket.prepare_failed,
            (Err(_), _) => &bracket.open_failed,
        };
        let log = StatementLog::start(close, std::iter::empty());
        let end = self.client.batch_execute(close).await;
        log.finish_driver(end.as_ref());
        // A failed close may leave our transaction open or lookup statements in place: the
        // guard, left armed, closes the connection rather than hand it to anyone else.
        guard.done = end.is_ok();
        opened?;
        let out = out?;
        end?;
        Ok(out)
    }
}

struct BrokenUnlessDone<'a> {
    conn: &'a PgConn,
    done: bool,
}

impl Drop for BrokenUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.mark_broken();
        }
    }
}
