//! Transactions and nested savepoints.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::connection::{
    PgConn, SessionState, TxStatus, DEALLOCATE_SQL_PREPARED, RESET_SESSION_SQL,
};
use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::pool::PoolConnection;
use crate::query::{logged, query_error, query_methods, ConnRef, Runner};
use crate::template::Templates;

mod options;
mod retry;
mod start;

pub use options::{IsolationLevel, TransactionOptions};
pub use retry::RetryPolicy;

/// A transaction, or a savepoint inside one. It has the manager's query methods, with the same
/// templates and the same error wrapping.
///
/// [`commit`](Self::commit) explicitly; dropping it uncommitted rolls it back (a savepoint is
/// rolled back before the next statement of its parent). After a failed statement the
/// transaction is aborted: `commit` then rolls back and returns [`Error::Transaction`].
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let tx = db.transaction().await?;
/// let uid: Option<i32> = tx.fetch_value(
///     "INSERT INTO {{tables.users}} (email) VALUES ($1) RETURNING id", &[&"a@x.org"]).await?;
/// {
///     let sp = tx.transaction().await?;            // SAVEPOINT
///     sp.execute("UPDATE {{tables.users}} SET name = 'x'", &[]).await?;
///     sp.rollback().await?;                        // ROLLBACK TO SAVEPOINT; tx goes on
/// }
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct Transaction<'a> {
    root: Root<'a>,
    savepoint: Option<String>,
    finished: bool,
}

enum Root<'a> {
    Owned(Box<TxState>),
    Borrowed(&'a TxState),
}

struct TxState {
    manager: AsyncDatabaseManager,
    conn: Option<PoolConnection>,
    timeout: Option<Duration>,
    /// Rollbacks of savepoints that were dropped, run before the next statement.
    pending: Mutex<Vec<String>>,
    next_savepoint: AtomicU32,
    /// Set when a statement failed on the server; cleared by rolling back to a savepoint.
    aborted: AtomicBool,
}

/// What a control statement does to the connection's transaction state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Control {
    Begin,
    Savepoint,
    End,
}

/// The SQLSTATE of a statement sent to an aborted transaction.
const IN_FAILED_TRANSACTION: &str = "25P02";

impl TxState {
    fn conn(&self) -> &PgConn {
        self.conn
            .as_ref()
            .expect("a live transaction always holds its connection")
            .conn()
    }

    /// Runs a control statement. Every failure marks the transaction aborted.
    async fn run(&self, sql: &str, control: Control) -> Result<()> {
        let conn = self.conn();
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let watch = crate::query::instrument::watch(
            &self.manager,
            crate::query::instrument::Op::control(sql),
        );
        let timed = conn.timed(deadline, sql, || async {
            // In a transaction from before BEGIN is sent: dropped or timed out while it is
            // on the wire, the connection must be rolled back, not taken for idle.
            if control == Control::Begin {
                conn.enter_transaction();
            }
            if let Err(e) = conn.client.batch_execute(sql).await {
                // BEGIN itself failed. Unless the server says no transaction is open (a
                // `SET LOCAL` after it may have failed inside it instead, or the answer is
                // still arriving), the state stays, and the release rolls it back.
                if control == Control::Begin && conn.tap.status() == TxStatus::Idle {
                    conn.leave_transaction();
                }
                return Err(query_error(e, sql, std::iter::empty()));
            }
            if control == Control::End {
                conn.leave_transaction();
            }
            Ok(())
        });
        let result = logged(sql, std::iter::empty(), timed).await;
        crate::query::instrument::end(watch, &result);
        if result.is_err() {
            self.aborted.store(true, Ordering::Relaxed);
        }
        result
    }

    async fn flush_pending(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return Ok(());
        }
        self.run(&pending.join(" "), Control::Savepoint).await?;
        self.aborted.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Rolls back to savepoint `name` and releases it; the transaction is usable again.
    async fn rollback_to(&self, name: &str) -> Result<()> {
        self.run(
            &format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"),
            Control::Savepoint,
        )
        .await?;
        self.aborted.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the connection can still take statements (no timed-out or dropped statement).
    fn usable(&self) -> bool {
        matches!(self.conn().state(), SessionState::InTransaction)
    }
}

impl Transaction<'static> {
    pub(crate) async fn begin(
        manager: AsyncDatabaseManager,
        options: TransactionOptions,
    ) -> Result<Self> {
        let conn = manager.checkout().await?;
        let begin = conn
            .conn()
            .begin_sql(&options.begin_sql(), manager.context())
            .into_owned();
        let timeout = manager.timeout();
        let state = TxState {
            manager,
            conn: Some(conn),
            timeout,
            pending: Mutex::new(Vec::new()),
            next_savepoint: AtomicU32::new(1),
            aborted: AtomicBool::new(false),
        };
        let tx = Transaction {
            root: Root::Owned(Box::new(state)),
            savepoint: None,
            finished: false,
        };
        tx.state().run(&begin, Control::Begin).await?;
        Ok(tx)
    }
}

impl<'a> Transaction<'a> {
    fn state(&self) -> &TxState {
        match &self.root {
            Root::Owned(s) => s,
            Root::Borrowed(s) => s,
        }
    }

    /// A nested transaction: a `SAVEPOINT` that can be rolled back without ending this one.
    /// It runs with its parent's [`TransactionOptions`]; only a top-level transaction takes
    /// options of its own.
    pub async fn transaction(&self) -> Result<Transaction<'_>> {
        let state = self.state();
        state.flush_pending().await?;
        let name = format!(
            "pgdbm_sp_{}",
            state.next_savepoint.fetch_add(1, Ordering::Relaxed)
        );
        state
            .run(&format!("SAVEPOINT {name}"), Control::Savepoint)
            .await?;
        Ok(Transaction {
            root: Root::Borrowed(state),
            savepoint: Some(name),
            finished: false,
        })
    }

    /// Whether this is a savepoint inside another transaction.
    pub fn is_nested(&self) -> bool {
        self.savepoint.is_some()
    }

    /// The connection the transaction runs on (the driver's client), like the original's
    /// `tx.connection`. A statement that fails on it aborts the transaction on the server, and
    /// [`commit`](Self::commit) then reports that instead of committing. What is sent through
    /// it is not seen by pgdbm, so the session is reset before the connection is reused.
    pub fn connection(&self) -> &Client {
        let conn = self.state().conn();
        conn.mark_dirty();
        &conn.client
    }

    /// Commits (or, for a savepoint, releases it). `Ok` only when the server committed: if a
    /// statement failed earlier and was not rolled back to a savepoint (also one sent through
    /// [`connection`](Self::connection)), or a statement timed out or was dropped halfway, this
    /// rolls back instead and returns [`Error::Transaction`].
    pub async fn commit(mut self) -> Result<()> {
        let result = self.finish_commit().await;
        // A root whose COMMIT did not go through is rolled back when dropped; a savepoint is
        // done either way (rolling back to a released savepoint would fail later).
        self.finished = result.is_ok() || self.savepoint.is_some();
        result
    }

    async fn finish_commit(&self) -> Result<()> {
        let state = self.state();
        if !state.usable() {
            return Err(Error::Transaction(
                "a statement of this transaction timed out or was dropped before it finished, so \
                 its outcome is unknown; the transaction is rolled back and nothing was committed"
                    .into(),
            ));
        }
        state.flush_pending().await?;
        let aborted = state.aborted.load(Ordering::Relaxed);
        match &self.savepoint {
            None => {
                if aborted {
                    state.run("ROLLBACK", Control::End).await?;
                    return Err(aborted_error());
                }
                // `SELECT 1` fails if the server sees the transaction aborted (a statement
                // failed on the raw connection, say), and COMMIT then is not sent: a COMMIT of
                // an aborted transaction would roll back and still report success. COMMIT can
                // also fail on its own (deferred constraints, serialization): the server has
                // rolled back, and the error keeps its SQLSTATE.
                // Behind a transaction pooler a session change made in the transaction is
                // undone before COMMIT, while the server connection is still ours.
                let commit = if state.conn().shares_server() && state.conn().take_dirty() {
                    format!("SELECT 1; {RESET_SESSION_SQL}{DEALLOCATE_SQL_PREPARED}COMMIT")
                } else {
                    "SELECT 1; COMMIT".to_owned()
                };
                match state.run(&commit, Control::End).await {
                    Err(e) if e.code() == Some(IN_FAILED_TRANSACTION) => {
                        state.run("ROLLBACK", Control::End).await?;
                        Err(aborted_error())
                    }
                    other => other,
                }
            }
            Some(name) => {
                if aborted {
                    state.rollback_to(name).await?;
                    return Err(Error::Transaction(format!(
                        "savepoint {name} was aborted by an earlier error and has been rolled back; \
                         the outer transaction goes on"
                    )));
                }
                state
                    .run(&format!("RELEASE SAVEPOINT {name}"), Control::Savepoint)
                    .await
            }
        }
    }

    /// Rolls back (or, for a savepoint, rolls back to it; the outer transaction goes on).
    pub async fn rollback(mut self) -> Result<()> {
        let result = self.finish_rollback().await;
        self.finished = result.is_ok() || self.savepoint.is_some();
        result
    }

    async fn finish_rollback(&self) -> Result<()> {
        let state = self.state();
        match &self.savepoint {
            // A connection with a statement still running is rolled back (or closed) in the
            // background when the transaction is dropped, before anyone else can use it.
            None if !state.usable() => Ok(()),
            None => state.run("ROLLBACK", Control::End).await,
            Some(name) => {
                state.flush_pending().await?;
                state.rollback_to(name).await
            }
        }
    }

    query_methods!();
}

impl<'a, 't> crate::Pipeline<'a, Transaction<'t>> {
    /// Sends every queued statement on the transaction's connection and reads their results.
    /// The first statement that fails aborts the transaction: the later ones report
    /// [`Error::PipelineAborted`](crate::Error::PipelineAborted).
    pub async fn run(self) -> Result<crate::PipelineResults> {
        crate::query::run_pipeline(self).await
    }
}

fn aborted_error() -> Error {
    Error::Transaction(
        "the transaction was aborted by an earlier error and has been rolled back; nothing was \
         committed. Handle errors inside a nested transaction (tx.transaction()) to continue \
         after them"
            .into(),
    )
}

impl Runner for Transaction<'_> {
    fn templates(&self) -> &Templates {
        Runner::templates(&self.state().manager)
    }

    fn recorder(&self) -> Option<&std::sync::Arc<dyn crate::query::Recorder>> {
        self.state().manager.recorder()
    }

    fn pool(&self) -> Option<crate::pool::Pool> {
        Runner::pool(&self.state().manager)
    }

    fn timeout(&self) -> Option<Duration> {
        self.state().timeout
    }

    async fn conn(
        &self,
        _deadline: Option<Instant>,
        _intent: crate::replica::Intent,
        _sql: &str,
    ) -> Result<ConnRef<'_>> {
        let state = self.state();
        state.flush_pending().await?;
        Ok(ConnRef::Borrowed(state.conn()))
    }

    fn in_transaction(&self) -> bool {
        true
    }

    fn note_error(&self, _error: &Error) {
        // Any failure inside a transaction aborts it: a server error does so on the server,
        // and after a client-side one the caller cannot know what was applied.
        self.state().aborted.store(true, Ordering::Relaxed);
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        match (&mut self.root, &self.savepoint) {
            (Root::Borrowed(state), Some(name)) => {
                state
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name};"
                    ));
            }
            // The connection is in a transaction (or busy): releasing it rolls it back on the
            // pool's runtime before it goes back to the pool, or closes it.
            (Root::Owned(state), _) => drop(state.conn.take()),
            (Root::Borrowed(_), None) => {}
        }
    }
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("savepoint", &self.savepoint)
            .field("aborted", &self.state().aborted.load(Ordering::Relaxed))
            .finish()
    }
}
