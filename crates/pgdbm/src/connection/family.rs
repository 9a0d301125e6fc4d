//! Statement-cache misses in one round trip, for many schemas on one pool.
//!
//! Each tenant's schema makes a template a different SQL text, so with many tenants most calls
//! are the first of their text on their connection, and preparing costs a round trip of its
//! own before the statement runs. When a missed text is a plain read and its template was
//! prepared before (in any schema, on any connection of the pool), two requests go out
//! together: the prepare of the text, and the text itself, unprepared, with the parameter types
//! the server inferred for its template (Parse, Bind, Execute). One round trip answers both.
//! If the prepared statement's parameter types are the guessed ones, the unprepared run is
//! exactly what the prepared statement would have given, result or error, and it is the
//! answer; the statement is cached for next time either way. If they differ (the template
//! names other columns in this schema), the unprepared run is dropped and the prepared
//! statement runs, a second round trip, with the result the prepared path gives.
//!
//! Only plain reads (`sql::routing`) are sent this way, since the unprepared run executes
//! before its types are checked; only built-in parameter types are shared (a schema's own enum
//! has another OID in the next schema); and only outside a transaction, where a failed run
//! would abort what follows.

use std::future::Future;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, RowStream, Statement};

use super::PgConn;
use crate::util::FxHasher;

/// Templates whose parameter types a pool remembers.
const TEMPLATES: usize = 4096;

type TypesByTemplate = LruCache<Arc<str>, Arc<[Type]>, BuildHasherDefault<FxHasher>>;

/// Parameter types by template, shared by a pool's connections.
#[derive(Debug)]
pub(crate) struct Families {
    types: Mutex<TypesByTemplate>,
    one_trip: AtomicU64,
    /// A connection's statement cache has evicted a statement.
    evicted: AtomicBool,
}

impl Default for Families {
    fn default() -> Self {
        Families {
            // Bounded in `learn`: `with_hasher(limit)` would allocate the whole table now.
            types: Mutex::new(LruCache::unbounded_with_hasher(Default::default())),
            one_trip: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
        }
    }
}

impl Families {
    /// Cache misses answered in one round trip.
    pub(crate) fn one_trip(&self) -> u64 {
        self.one_trip.load(Ordering::Relaxed)
    }

    /// Whether a connection's statement cache has evicted a statement: the caches are too
    /// small for the texts the pool runs.
    #[inline]
    pub(crate) fn evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    pub(super) fn note_eviction(&self) {
        if !self.evicted() {
            self.evicted.store(true, Ordering::Relaxed);
        }
    }

    fn learn(&self, template: Arc<str>, types: &[Type]) {
        // A type of the schema's own (an enum, a domain) has another OID in the next schema.
        if types.iter().all(|t| Type::from_oid(t.oid()).is_some()) {
            let mut known = self.types.lock().unwrap_or_else(|e| e.into_inner());
            known.put(template, types.into());
            if known.len() > TEMPLATES {
                known.pop_lru();
            }
        }
    }

    fn get(&self, template: &str) -> Option<Arc<[Type]>> {
        self.types
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(template)
            .cloned()
    }
}

/// How a statement goes out, or the driver's error preparing it.
pub(crate) type PlanResult = Result<Plan, tokio_postgres::Error>;

/// How a statement goes out.
pub(crate) enum Plan {
    /// By its prepared statement.
    Named(Statement),
    /// Unprepared, with the types the server inferred for its template in another schema,
    /// alongside its prepare.
    Guessed(Arc<[Type]>),
}

impl PgConn {
    /// How `sql` goes out after missing the cache: a plain read whose template's types are
    /// known runs with them alongside its prepare (this module's one round trip); anything
    /// else is prepared first.
    pub(crate) async fn plan_miss(
        &self,
        sql: &str,
        params: usize,
        in_transaction: bool,
    ) -> PlanResult {
        if !in_transaction && self.tap.status() == super::TxStatus::Idle {
            if let Some(types) = self.guess(sql, params) {
                return Ok(Plan::Guessed(types));
            }
        }
        self.prepare_and_cache(sql).await.map(Plan::Named)
    }

    fn guess(&self, sql: &str, params: usize) -> Option<Arc<[Type]>> {
        let types = self
            .families
            .get(&crate::template::template_of(sql)?)
            .filter(|t| t.len() == params)?;
        // `x.name` is read as a column, never as a call of a user function `name(x)` (what a
        // replica's catalog would tell): every text here is schema-qualified. A read that
        // calls a writing function that way would run twice when the guess is wrong.
        crate::sql::routing::is_plain_read_with(sql, &Some(Arc::default())).then_some(types)
    }

    /// Remembers a newly prepared statement's parameter types for its template.
    pub(super) fn learn_family(&self, sql: &str, st: &Statement) {
        if let Some(template) = crate::template::template_of(sql) {
            self.families.learn(template, st.params());
        }
    }

    /// Runs a guessed statement (`guessed`, with `types`) alongside the prepare of `sql`, in
    /// one round trip; when the prepared statement's parameter types are not `types`, drops
    /// the guessed run and runs the prepared statement (`named`) instead.
    async fn run_guessed<T, N, NF>(
        &self,
        sql: &str,
        types: &[Type],
        guessed: impl Future<Output = Result<T, tokio_postgres::Error>>,
        named: N,
    ) -> Result<T, tokio_postgres::Error>
    where
        N: FnOnce(Statement) -> NF,
        NF: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        // The prepare is polled first, so its request goes out first.
        let (prepared, guessed) =
            futures_util::future::join(self.prepare_and_cache(sql), guessed).await;
        let st = prepared?;
        if st.params() != types {
            drop(guessed);
            return named(st).await;
        }
        self.families.one_trip.fetch_add(1, Ordering::Relaxed);
        guessed
    }

    /// [`Plan::Guessed`] for [`query`](PgConn::query).
    pub(super) async fn query_guessed(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        types: &[Type],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let typed = zip(params, types);
        let guessed = self.client.query_typed(sql, &typed);
        self.run_guessed(sql, types, guessed, |st| async move {
            self.client.query(&st, params).await
        })
        .await
    }

    /// [`Plan::Guessed`] for [`query_stream`](PgConn::query_stream).
    pub(super) async fn stream_guessed(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        types: &[Type],
    ) -> Result<RowStream, tokio_postgres::Error> {
        let typed = params.iter().copied().zip(types.iter().cloned());
        let guessed = self.client.query_typed_raw(sql, typed);
        self.run_guessed(sql, types, guessed, |st| async move {
            self.client.query_raw(&st, params.iter().copied()).await
        })
        .await
    }

    /// [`Plan::Guessed`] for [`execute`](PgConn::execute).
    pub(super) async fn execute_guessed(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        types: &[Type],
    ) -> Result<u64, tokio_postgres::Error> {
        let typed = zip(params, types);
        let guessed = self.client.execute_typed(sql, &typed);
        self.run_guessed(sql, types, guessed, |st| async move {
            self.client.execute(&st, params).await
        })
        .await
    }
}

fn zip<'a>(
    params: &[&'a (dyn ToSql + Sync)],
    types: &[Type],
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().copied().zip(types.iter().cloned()).collect()
}
