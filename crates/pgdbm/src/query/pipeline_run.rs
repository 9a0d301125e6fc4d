//! Running a pipeline: one connection, every statement made ready, sent in order and read
//! back in order, under the call's deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;

use super::{PipelineResults, Queued};
use crate::connection::{in_order, Output, PgConn, Ready, Sent, TxStatus, Want};
use crate::error::{Error, Result};
use crate::query::instrument::Op;
use crate::query::{query_error, refuse_session_change, ConnRef, Runner, StatementLog};
use crate::replica::Intent;

/// What the run records as it goes: kept outside the timed future, so that a timeout still
/// knows which statements had completed.
struct Progress<'s> {
    slots: Vec<Option<Result<Output>>>,
    logs: Vec<Option<StatementLog<'s>>>,
}

pub(super) async fn run<E: Runner>(
    ex: &E,
    id: u64,
    queued: Vec<Queued<'_>>,
) -> Result<PipelineResults> {
    let n = queued.len();
    let watches: Vec<_> = queued
        .iter()
        .map(|q| {
            let text = q
                .template
                .as_deref()
                .or(q.sql.as_deref().ok())
                .unwrap_or("");
            crate::query::instrument::watch(ex, Op::new(q.method, text, &q.params))
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
            crate::query::instrument::end(w, r);
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
        // On a multiplexing pool a pipeline of session-neutral statements outside a
        // transaction shares a connection like a single call.
        let shareable = !self.in_transaction
            && self.context.is_none()
            && self
                .sqls
                .iter()
                .flatten()
                .all(|sql| crate::sql::Effects::of(sql).is_none());
        let held = if shareable {
            ex.call_conn(deadline, Intent::Write, first).await?
        } else {
            ex.conn(deadline, Intent::Write, first).await?
        };
        let conn: &PgConn = &held;
        let started = Instant::now();
        let timed = conn
            .timed(None, "pipeline", || async {
                let drive = self.drive(conn, progress);
                let Some(deadline) = deadline else {
                    drive.await;
                    return Ok(None);
                };
                let mut drive = std::pin::pin!(drive);
                let Err(_) = tokio::time::timeout_at(deadline.into(), drive.as_mut()).await else {
                    return Ok(None);
                };
                if matches!(held, ConnRef::Shared(_)) {
                    // A cancel could stop another caller's statement: the rest runs on, and
                    // its answers are discarded.
                    return Ok(Some(started.elapsed()));
                }
                cancel_the_rest(conn, drive, started).await.map(Some)
            })
            .await;
        // A timeout leaves the statements owed their answers: not settled as answered.
        if !matches!(timed, Ok(Some(_))) {
            held.settle(&timed);
        }
        if matches!(held, ConnRef::Shared(_)) {
            // The connection lost under the pipeline: each statement says whether it may
            // have run, as a single call's would.
            for (i, slot) in progress.slots.iter_mut().enumerate() {
                if let Some(Err(e)) = slot {
                    if conn.is_lost(e) {
                        *slot = Some(Err(conn.lost(self.sql(i), e)));
                    }
                }
            }
        }
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

impl crate::query::instrument::Outcome for Output {
    fn rows(&self) -> crate::query::instrument::Rows {
        match self {
            Output::Rows(rows) => crate::query::instrument::Rows::Returned(rows.len() as u64),
            Output::First(row) => crate::query::instrument::Rows::Returned(row.is_some().into()),
            Output::Affected(n) => crate::query::instrument::Rows::Affected(*n),
        }
    }
}
