//! [`Pipeline`]: independent statements sent together on one connection, in one round trip,
//! each with a result of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres_types::FromSqlOwned;
use tokio_postgres::types::ToSql;

use super::{query_error, refuse_session_change, Runner, StatementLog};
use crate::connection::{in_order, Output, PgConn, Ready, Sent, TxStatus, Want};
use crate::error::{Error, Result};
use crate::observe::{Method, Op};
use crate::record::{FromRow, Record};
use crate::replica::Intent;
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
struct Queued<'a> {
    /// The rendered SQL, or why it could not be rendered (reported as this statement's error).
    sql: Result<Arc<str>>,
    /// The caller's text, when templates changed it: for spans and the monitor.
    template: Option<Box<str>>,
    params: Vec<&'a (dyn ToSql + Sync)>,
    want: Want,
    method: Method,
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

impl<'a> Pipeline<'a, crate::AsyncDatabaseManager> {
    /// Sends every queued statement on one connection and reads their results. The `Err` of
    /// this call is for the pipeline as a whole (no connection, a timeout); each statement's
    /// own error is in its result.
    pub async fn run(self) -> Result<PipelineResults> {
        run(self.ex, self.id, self.queued).await
    }
}

impl<'a, 't> Pipeline<'a, crate::Transaction<'t>> {
    /// Sends every queued statement on the transaction's connection and reads their results.
    /// The first statement that fails aborts the transaction: the later ones report
    /// [`Error::PipelineAborted`].
    pub async fn run(self) -> Result<PipelineResults> {
        run(self.ex, self.id, self.queued).await
    }
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
    id: u64,
    slots: Mutex<Vec<Option<Result<Output>>>>,
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

/// What the run records as it goes: kept outside the timed future, so that a timeout still
/// knows which statements had completed.
struct Progress<'s> {
    slots: Vec<Option<Result<Output>>>,
    logs: Vec<Option<StatementLog<'s>>>,
}

async fn run<E: Runner>(ex: &E, id: u64, queued: Vec<Queued<'_>>) -> Result<PipelineResults> {
    let n = queued.len();
    let watches: Vec<_> = queued
        .iter()
        .map(|q| {
            let text = q
                .template
                .as_deref()
                .or(q.sql.as_deref().ok())
                .unwrap_or("");
            crate::observe::watch(ex, Op::new(q.method, text, &q.params))
        })
        .collect();
    let mut slots: Vec<Option<Result<Output>>> = Vec::with_capacity(n);
    let mut sqls: Vec<Option<Arc<str>>> = Vec::with_capacity(n);
    let mut params = Vec::with_capacity(n);
    let mut wants = Vec::with_capacity(n);
    for q in queued {
        match q.sql {
            Ok(sql) => {
                sqls.push(Some(sql));
                slots.push(None);
            }
            Err(e) => {
                sqls.push(None);
                slots.push(Some(Err(e)));
            }
        }
        params.push(q.params);
        wants.push(q.want);
    }
    let mut progress = Progress {
        slots,
        logs: (0..n).map(|_| None).collect(),
    };
    let plan = Plan {
        sqls: &sqls,
        params: &params,
        wants: &wants,
        in_transaction: ex.in_transaction(),
        context: ex.local_context().filter(|_| !ex.in_transaction()),
    };
    let result = plan.run(ex, &mut progress).await;
    let mut slots = std::mem::take(&mut progress.slots);
    if let Err(e) = result {
        for log in progress.logs.iter_mut().filter_map(Option::take) {
            if e.is_timeout() {
                log.timed_out();
            }
        }
        ex.note_error(&e);
        return Err(e);
    }
    if plan.in_transaction {
        mark_aborted(&mut slots);
    }
    if let Some(e) = slots.iter().flatten().find_map(|r| r.as_ref().err()) {
        ex.note_error(e);
    }
    for (w, slot) in watches.into_iter().zip(&slots) {
        if let Some(r) = slot {
            crate::observe::end(w, r);
        }
    }
    Ok(PipelineResults {
        id,
        slots: Mutex::new(slots),
    })
}

/// Inside a transaction, a statement after the first failure gets `25P02` from the server:
/// reported as not run, naming the statement that aborted the transaction.
fn mark_aborted(slots: &mut [Option<Result<Output>>]) {
    let failed = slots
        .iter()
        .position(|s| matches!(s, Some(Err(e)) if e.code() != Some(IN_FAILED_TRANSACTION)));
    let Some(failed) = failed else { return };
    for (i, slot) in slots.iter_mut().enumerate() {
        if matches!(slot, Some(Err(e)) if e.code() == Some(IN_FAILED_TRANSACTION)) {
            *slot = Some(Err(Error::PipelineAborted {
                statement: i,
                failed,
            }));
        }
    }
}

const IN_FAILED_TRANSACTION: &str = "25P02";
/// `57014`: the statement was cancelled.
const CANCELLED: &str = "57014";

/// How long a timed-out pipeline may take to wind down before its connection is left to be
/// cancelled and drained (or closed) out of the pool.
const WIND_DOWN: Duration = Duration::from_secs(5);

/// The deadline passed with statements still to answer: whatever runs from now on is
/// cancelled, one statement after another, until every statement has answered (the rest of a
/// pipeline was sent already, so cancelling only the statement running at the deadline would
/// let the later ones run). `Ok` with the time taken once the pipeline is wound down; its
/// connection is then idle. `Err` (the connection left cancelling) when that takes too long.
async fn cancel_the_rest(
    conn: &PgConn,
    mut drive: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    started: Instant,
) -> Result<Duration> {
    let give_up = Instant::now() + WIND_DOWN;
    loop {
        let timed_out = || Error::Timeout {
            operation: "pipeline".into(),
            after: started.elapsed(),
        };
        if conn.cancel_confirmed().await.is_err() || Instant::now() >= give_up {
            conn.start_cancelling();
            return Err(timed_out());
        }
        if tokio::time::timeout(Duration::from_millis(20), drive.as_mut())
            .await
            .is_ok()
        {
            return Ok(started.elapsed());
        }
    }
}

/// The statements of one run, borrowed for the futures that send them.
struct Plan<'r, 'p> {
    sqls: &'r [Option<Arc<str>>],
    params: &'r [Vec<&'p (dyn ToSql + Sync)>],
    wants: &'r [Want],
    in_transaction: bool,
    /// A `with_settings`/`with_role` view's `SET LOCAL`s: each statement then runs in a
    /// transaction of its own that starts with them.
    context: Option<&'r str>,
}

/// What a pipelined message sequence is for.
enum Job {
    Begin(usize),
    Statement(usize),
    Commit(usize),
}

impl<'r, 'p> Plan<'r, 'p> {
    /// Checks out a connection and runs every statement on it under the call's deadline.
    async fn run<E: Runner>(&self, ex: &E, progress: &mut Progress<'r>) -> Result<()> {
        if self.sqls.iter().all(Option::is_none) {
            return Ok(());
        }
        let deadline = ex.deadline();
        let first = self.sqls.iter().flatten().next().map_or("", |s| &**s);
        let conn = ex.conn(deadline, Intent::Write, first).await?;
        let conn: &PgConn = &conn;
        let started = Instant::now();
        let timed = conn
            .timed(None, "pipeline", async {
                let drive = self.drive(conn, progress);
                let Some(deadline) = deadline else {
                    drive.await;
                    return Ok(None);
                };
                let mut drive = std::pin::pin!(drive);
                let Err(_) = tokio::time::timeout_at(deadline.into(), drive.as_mut()).await else {
                    return Ok(None);
                };
                cancel_the_rest(conn, drive, started).await.map(Some)
            })
            .await;
        if let Ok(Some(after)) | Err(Error::Timeout { after, .. }) = timed {
            let n = self.sqls.len();
            return Err(Error::PipelineTimeout {
                after,
                statements: n,
                completed: (0..n)
                    .filter(|&i| match &progress.slots[i] {
                        _ if self.sqls[i].is_none() => false,
                        Some(Ok(_)) => true,
                        Some(Err(e)) => {
                            !matches!(e.code(), Some(CANCELLED | IN_FAILED_TRANSACTION))
                                && !matches!(e, Error::PipelineAborted { .. })
                        }
                        None => false,
                    })
                    .collect(),
            });
        }
        timed?;
        // The cache forgets what an error shows to be stale, as for a single call.
        for (i, slot) in progress.slots.iter().enumerate() {
            if let (Some(Err(Error::Query { source, .. })), Some(sql)) = (slot, &self.sqls[i]) {
                conn.forget_if_stale(sql, source);
            }
        }
        Ok(())
    }

    async fn drive(&self, conn: &PgConn, progress: &mut Progress<'r>) {
        let n = self.sqls.len();
        let readies = self.ready(conn, progress).await;
        let begin = self.context.map(|c| conn.begin_sql("BEGIN", Some(c)));
        if begin.is_some() {
            conn.enter_transaction();
        }
        let mut jobs = Vec::with_capacity(n);
        let mut sent: Vec<Sent<'_>> = Vec::with_capacity(n);
        for (i, ready) in readies.iter().enumerate() {
            let (Some(ready), Some(sql)) = (ready, &self.sqls[i]) else {
                continue;
            };
            if let Some(begin) = &begin {
                jobs.push(Job::Begin(i));
                sent.push(conn.send_control(begin));
            }
            progress.logs[i] = Some(StatementLog::start(sql, self.params[i].iter().copied()));
            jobs.push(Job::Statement(i));
            sent.push(conn.send(sql, &self.params[i], ready, self.wants[i]));
            if begin.is_some() {
                jobs.push(Job::Commit(i));
                sent.push(conn.send_control("COMMIT"));
            }
        }
        let mut begun_failed: Vec<Option<Error>> = (0..n).map(|_| None).collect();
        let mut committed_failed: Vec<Option<Error>> = (0..n).map(|_| None).collect();
        let begin_sql = begin.as_deref().unwrap_or("");
        in_order(sent, |j, r| match jobs[j] {
            Job::Statement(i) => {
                let r = r.map_err(|e| query_error(e, self.sql(i), self.params[i].iter().copied()));
                if let Some(log) = progress.logs[i].take() {
                    log.finish(&r);
                }
                progress.slots[i] = Some(r);
            }
            Job::Begin(i) => {
                if let Err(e) = r {
                    begun_failed[i] = Some(query_error(e, begin_sql, std::iter::empty()));
                }
            }
            Job::Commit(i) => {
                if let Err(e) = r {
                    committed_failed[i] = Some(query_error(e, "COMMIT", std::iter::empty()));
                }
            }
        })
        .await;
        if begin.is_some() && conn.tap.status() == TxStatus::Idle {
            conn.leave_transaction();
        }
        // A statement whose transaction could not start, or did not commit, did not happen.
        for (i, slot) in progress.slots.iter_mut().enumerate() {
            if let Some(e) = begun_failed[i].take() {
                *slot = Some(Err(e));
            } else if let Some(e) = committed_failed[i].take() {
                if matches!(slot, Some(Ok(_))) {
                    *slot = Some(Err(e));
                }
            }
        }
    }

    fn sql(&self, i: usize) -> &str {
        self.sqls[i].as_deref().unwrap_or("")
    }

    /// Each statement made ready to send, or its error recorded. Prepares on a named-statement
    /// connection go out together (one round trip for all the misses); without named
    /// statements, parameter types are learned one text at a time, since learning may bracket
    /// itself in a transaction of its own.
    async fn ready(&self, conn: &PgConn, progress: &mut Progress<'r>) -> Vec<Option<Ready<'p>>> {
        let n = self.sqls.len();
        let refuse = !self.in_transaction && self.context.is_none() && conn.shares_server();
        let mut out: Vec<Option<Ready<'p>>> = (0..n).map(|_| None).collect();
        let mut todo = Vec::with_capacity(n);
        for i in 0..n {
            let Some(sql) = &self.sqls[i] else { continue };
            if refuse {
                if let Err(e) = refuse_session_change(sql) {
                    progress.slots[i] = Some(Err(e));
                    continue;
                }
            }
            todo.push(i);
        }
        let results = if conn.uses_named_statements() {
            futures_util::future::join_all(todo.iter().map(|&i| {
                conn.ready(
                    self.sql(i),
                    &self.params[i],
                    self.wants[i],
                    self.in_transaction,
                )
            }))
            .await
        } else {
            let mut results = Vec::with_capacity(todo.len());
            for &i in &todo {
                let r = conn
                    .ready(
                        self.sql(i),
                        &self.params[i],
                        self.wants[i],
                        self.in_transaction,
                    )
                    .await;
                results.push(r);
            }
            results
        };
        for (&i, r) in todo.iter().zip(results) {
            match r {
                Ok(ready) => out[i] = Some(ready),
                Err(e) => {
                    let e = query_error(e, self.sql(i), self.params[i].iter().copied());
                    progress.slots[i] = Some(Err(e));
                }
            }
        }
        out
    }
}

impl crate::observe::Outcome for Output {
    fn rows(&self) -> crate::observe::Rows {
        match self {
            Output::Rows(rows) => crate::observe::Rows::Returned(rows.len() as u64),
            Output::First(row) => crate::observe::Rows::Returned(row.is_some().into()),
            Output::Affected(n) => crate::observe::Rows::Affected(*n),
        }
    }
}
