//! Statement-cache misses in one round trip, for many schemas on one pool.
//!
//! Each tenant's schema makes a template a different SQL text, so with many tenants most calls
//! are the first of their text on their connection, and preparing costs a round trip of its
//! own before the statement runs. A text's first miss on a connection, when its template was
//! prepared before (in any schema, on any connection of the pool), is sent unprepared instead:
//! Parse with the parameter types the server inferred for that template, Bind, Execute, all
//! in one round trip, and nothing left on the server. Its second miss prepares it, so a text
//! used again costs the same round trips as preparing at once (1 + 2 + 1… against 2 + 1…),
//! and one used once costs one.
//!
//! The types are a guess (the same template may name different tables in different schemas):
//! only built-in types are shared, only outside a transaction, and when the server or the
//! driver refuses the guess, the statement is prepared and run as usual. A refused guess
//! failed at Parse or Bind, before anything ran.

use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio_postgres::types::{ToSql, Type, WrongType};
use tokio_postgres::{Row, RowStream, Statement};

use super::PgConn;
use crate::sql::Effects;
use crate::util::FxHasher;

/// Templates whose parameter types a pool remembers.
const TEMPLATES: usize = 4096;

/// Missed texts one connection remembers, to prepare those it misses twice.
const SEEN_LIMIT: usize = 1024;

type TypesByTemplate = LruCache<Arc<str>, Arc<[Type]>, BuildHasherDefault<FxHasher>>;

/// Parameter types by template, shared by a pool's connections.
#[derive(Debug)]
pub(crate) struct Families {
    types: Mutex<TypesByTemplate>,
    unprepared: AtomicU64,
}

impl Default for Families {
    fn default() -> Self {
        Families {
            // Bounded in `learn`: `with_hasher(limit)` would allocate the whole table now.
            types: Mutex::new(LruCache::unbounded_with_hasher(Default::default())),
            unprepared: AtomicU64::new(0),
        }
    }
}

impl Families {
    /// Cache misses sent unprepared, in one round trip, and not refused.
    pub(crate) fn unprepared(&self) -> u64 {
        self.unprepared.load(Ordering::Relaxed)
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

/// The missed texts of one connection, by hash.
pub(super) type Seen = LruCache<u64, (), BuildHasherDefault<FxHasher>>;

pub(super) fn seen(cache_size: usize) -> Option<Mutex<Seen>> {
    // Bounded in `guess`: `with_hasher(limit)` would allocate the whole table per connection.
    (cache_size > 0).then(|| Mutex::new(LruCache::unbounded_with_hasher(Default::default())))
}

/// How a statement goes out, or the driver's error preparing it.
pub(crate) type PlanResult = Result<Plan, tokio_postgres::Error>;

/// How a statement goes out.
pub(crate) enum Plan {
    /// By its prepared statement.
    Named(Statement),
    /// Unprepared, with the types the server inferred for its template in another schema.
    Guessed(Arc<[Type]>),
}

impl PgConn {
    /// How `sql` goes out after missing the cache: on a text's first miss the one-round-trip
    /// guess described in this module, else newly prepared.
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
        let seen = self.seen.as_ref()?;
        let hash = BuildHasherDefault::<FxHasher>::default().hash_one(sql);
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        // Missed before on this connection: worth preparing now.
        if seen.pop(&hash).is_some() {
            return None;
        }
        let types = self
            .families
            .get(&crate::template::template_of(sql)?)
            .filter(|t| t.len() == params)?;
        seen.put(hash, ());
        if seen.len() > SEEN_LIMIT.min(self.statement_capacity()) {
            seen.pop_lru();
        }
        drop(seen);
        self.note_effects(Effects::of(sql));
        Some(types)
    }

    /// How many statements this connection's cache holds.
    fn statement_capacity(&self) -> usize {
        self.statements.as_ref().map_or(0, |c| {
            c.lock().unwrap_or_else(|e| e.into_inner()).cap().get()
        })
    }

    /// Remembers a newly prepared statement's parameter types for its template.
    pub(super) fn learn_family(&self, sql: &str, st: &Statement) {
        if self.seen.is_some() {
            if let Some(template) = crate::template::template_of(sql) {
                self.families.learn(template, st.params());
            }
        }
    }

    /// Whether `error` refuses a guessed statement: a type the driver cannot encode the value
    /// as, or one the server cannot use there. Either way nothing ran.
    fn refused(error: &tokio_postgres::Error) -> bool {
        if let Some(db) = error.as_db_error() {
            return matches!(
                db.code().code(),
                // undefined function or operator, datatype mismatch, cannot coerce, ambiguous
                // function, invalid binary representation
                "42883" | "42804" | "42846" | "42725" | "22P03"
            );
        }
        std::error::Error::source(error).is_some_and(|s| s.is::<WrongType>())
    }

    /// Runs a guessed statement (`guessed`); when the guess is refused, prepares `sql` and runs
    /// it by its statement (`named`) instead.
    async fn run_guessed<T, N, NF>(
        &self,
        sql: &str,
        guessed: impl Future<Output = Result<T, tokio_postgres::Error>>,
        named: N,
    ) -> Result<T, tokio_postgres::Error>
    where
        N: FnOnce(Statement) -> NF,
        NF: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        match guessed.await {
            Err(e) if Self::refused(&e) => named(self.prepare_and_cache(sql).await?).await,
            r => {
                if r.is_ok() {
                    self.families.unprepared.fetch_add(1, Ordering::Relaxed);
                }
                r
            }
        }
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
        self.run_guessed(sql, guessed, |st| async move {
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
        self.run_guessed(sql, guessed, |st| async move {
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
        self.run_guessed(sql, guessed, |st| async move {
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
