//! [`Pipeline`]: independent statements sent together on one connection, in one round trip,
//! each with a result of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use postgres_types::FromSqlOwned;
use tokio_postgres::types::ToSql;

use super::Runner;
use crate::connection::{Output, Want};
use crate::error::{Error, Result};
use crate::query::instrument::Method;
use crate::record::{FromRow, Record};
use crate::template::Templates;

/// Statements queued to run together on one connection, sent at once and answered in order:
/// one round trip for all of them. Made by
/// [`AsyncDatabaseManager::pipeline`](crate::AsyncDatabaseManager::pipeline) and
/// [`Transaction::pipeline`](crate::Transaction::pipeline).
///
/// Each queued statement gives a [`Handle`]; [`run`](Self::run) gives the
/// [`PipelineResults`], from which each handle takes its statement's own `Result`.
///
/// - Templates, the timeout, the statement cache, spans, the monitor and the statement log
///   apply to each statement as they do to a single call.
/// - Outside a transaction each statement is its own implicit transaction: one that fails does
///   not stop the others. Inside a transaction the first failure aborts the transaction, and
///   every later statement reports [`Error::PipelineAborted`] naming it.
/// - A timeout cancels the whole pipeline; [`Error::PipelineTimeout`] says which statements
///   had completed (outside a transaction, those are committed).
/// - The statements run on the primary, never on a read replica.
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let id = 7_i32;
/// let mut p = db.pipeline();
/// let user = p.fetch_one("SELECT * FROM {{tables.users}} WHERE id = $1", &[&id]);
/// let count = p.fetch_value::<i64>("SELECT count(*) FROM {{tables.users}}", &[]);
/// let touched = p.execute("UPDATE {{tables.users}} SET seen = now() WHERE id = $1", &[&id]);
/// let r = p.run().await?;
/// let user: Option<pgdbm::Record> = r.get(user)?;
/// let count: Option<i64> = r.get(count)?;
/// let touched: u64 = r.get(touched)?;
/// # Ok(()) }
/// ```
#[must_use = "a pipeline does nothing until it is run"]
pub struct Pipeline<'a, E> {
    ex: &'a E,
    templates: &'a Templates,
    id: u64,
    queued: Vec<Queued<'a>>,
}

/// One queued statement.
pub(crate) struct Queued<'a> {
    /// The rendered SQL, or why it could not be rendered (reported as this statement's error).
    pub(super) sql: Result<Arc<str>>,
    /// The caller's text, when templates changed it: for spans and the monitor.
    pub(super) template: Option<Box<str>>,
    pub(super) params: Vec<&'a (dyn ToSql + Sync)>,
    pub(super) want: Want,
    pub(super) method: Method,
}

/// A queued statement's place in its pipeline's results, and how its rows become a `T`.
/// Taken by [`PipelineResults::get`]; it cannot be cloned, so each result is taken once.
#[must_use = "a handle is how a statement's result is read"]
pub struct Handle<T> {
    index: usize,
    pipeline: u64,
    convert: fn(Output) -> Result<T>,
}

impl<T> Handle<T> {
    /// The statement's position in its pipeline, from 0.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Unique per pipeline, so that a handle cannot read another pipeline's results.
static NEXT_PIPELINE: AtomicU64 = AtomicU64::new(1);

impl<'a, E> Pipeline<'a, E> {
    pub(crate) fn new(ex: &'a E, templates: &'a Templates) -> Self {
        Pipeline {
            ex,
            templates,
            id: NEXT_PIPELINE.fetch_add(1, Ordering::Relaxed),
            queued: Vec::new(),
        }
    }

    /// How many statements are queued.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether no statement is queued.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    fn push<T>(
        &mut self,
        method: Method,
        want: Want,
        query: &str,
        params: &[&'a (dyn ToSql + Sync)],
        convert: fn(Output) -> Result<T>,
    ) -> Handle<T> {
        let sql = self.templates.render(query).map(|r| r.into_arc());
        let template = match &sql {
            Ok(sql) if &**sql != query => Some(query.into()),
            _ => None,
        };
        self.queued.push(Queued {
            sql,
            template,
            params: params.to_vec(),
            want,
            method,
        });
        Handle {
            index: self.queued.len() - 1,
            pipeline: self.id,
            convert,
        }
    }

    /// Queues a statement; its result is the number of rows affected. Without parameters it
    /// goes by the simple protocol, as [`execute`](crate::AsyncDatabaseManager::execute) does.
    pub fn execute(&mut self, query: &str, params: &[&'a (dyn ToSql + Sync)]) -> Handle<u64> {
        self.push(
            Method::Execute,
            Want::Affected,
            query,
            params,
            |o| match o {
                Output::Affected(n) => Ok(n),
                _ => Err(mismatch()),
            },
        )
    }

    /// Queues a query; its result is the first row, if any.
    pub fn fetch_one(
        &mut self,
        query: &str,
        params: &[&'a (dyn ToSql + Sync)],
    ) -> Handle<Option<Record>> {
        self.push(Method::FetchOne, Want::First, query, params, first_record)
    }

    /// Queues a query; its result is the first column of the first row (`None` for no row
    /// and for SQL NULL).
    pub fn fetch_value<T: FromSqlOwned>(
        &mut self,
        query: &str,
        params: &[&'a (dyn ToSql + Sync)],
    ) -> Handle<Option<T>> {
        self.push(
            Method::FetchValue,
            Want::First,
            query,
            params,
            |o| match first_record(o)? {
                None => Ok(None),
                Some(row) => super::value_of(&row, 0),
            },
        )
    }

    /// Queues a query; its result is every row.
    pub fn fetch_all(
        &mut self,
        query: &str,
        params: &[&'a (dyn ToSql + Sync)],
    ) -> Handle<Vec<Record>> {
        self.push(Method::FetchAll, Want::Rows, query, params, |o| match o {
            Output::Rows(rows) => Ok(rows.into_iter().map(Record::new).collect()),
            _ => Err(mismatch()),
        })
    }

    /// Queues a query; its result is the first row as a [`FromRow`] type, if any.
    pub fn fetch_one_as<T: FromRow>(
        &mut self,
        query: &str,
        params: &[&'a (dyn ToSql + Sync)],
    ) -> Handle<Option<T>> {
        self.push(Method::FetchOneAs, Want::First, query, params, |o| {
            first_record(o)?.map(|r| T::from_row(&r)).transpose()
        })
    }

    /// Queues a query; its result is every row as a [`FromRow`] type.
    pub fn fetch_all_as<T: FromRow>(
        &mut self,
        query: &str,
        params: &[&'a (dyn ToSql + Sync)],
    ) -> Handle<Vec<T>> {
        self.push(Method::FetchAllAs, Want::Rows, query, params, |o| match o {
            Output::Rows(rows) => rows
                .into_iter()
                .map(|r| T::from_row(&Record::new(r)))
                .collect(),
            _ => Err(mismatch()),
        })
    }
}

/// Runs a pipeline on its executor: `run` of the manager's and the transaction's.
pub(crate) async fn run_pipeline<E: Runner>(p: Pipeline<'_, E>) -> Result<PipelineResults> {
    run::run(p.ex, p.id, p.queued).await
}

fn first_record(o: Output) -> Result<Option<Record>> {
    match o {
        Output::First(row) => Ok(row.map(Record::new)),
        _ => Err(mismatch()),
    }
}

#[cold]
fn mismatch() -> Error {
    Error::Pipeline("internal error: a statement's result does not match its handle".into())
}

/// Every statement's result, in the order they were queued.
pub struct PipelineResults {
    pub(super) id: u64,
    pub(super) slots: Mutex<Vec<Option<Result<Output>>>>,
}

impl PipelineResults {
    /// The result of `handle`'s statement: its value, or its own error.
    pub fn get<T>(&self, handle: Handle<T>) -> Result<T> {
        if handle.pipeline != self.id {
            return Err(Error::Pipeline(
                "the handle belongs to another pipeline: read each result from the run of the \
                 pipeline that queued it"
                    .into(),
            ));
        }
        let taken = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(handle.index)
            .and_then(Option::take);
        match taken {
            Some(r) => r.and_then(handle.convert),
            None => Err(Error::Pipeline(format!(
                "statement {} has no result",
                handle.index
            ))),
        }
    }

    /// How many statements the pipeline ran.
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the pipeline was empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The positions of the statements that failed, in order.
    pub fn failed(&self) -> Vec<usize> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        (0..slots.len())
            .filter(|&i| matches!(slots[i], Some(Err(_))))
            .collect()
    }
}

impl std::fmt::Debug for PipelineResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineResults")
            .field("statements", &self.len())
            .field("failed", &self.failed())
            .finish()
    }
}

#[path = "pipeline_run.rs"]
mod run;
