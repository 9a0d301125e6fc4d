//! Transactions and nested savepoints.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::connection::{PgConn, PoolConnection};
use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::query::{query_error, query_methods, ConnRef, Executor};
use crate::template::Templates;

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

impl TxState {
    fn conn(&self) -> &PgConn {
        self.conn
            .as_ref()
            .expect("a live transaction always holds its connection")
            .conn()
    }

    async fn run(&self, sql: &str) -> Result<()> {
        let conn = self.conn();
        let deadline = self.timeout.map(|t| Instant::now() + t);
        conn.timed(deadline, false, sql, async {
            conn.client
                .batch_execute(sql)
                .await
                .map_err(|e| query_error(e, sql, std::iter::empty()))
        })
        .await
    }

    async fn flush_pending(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return Ok(());
        }
        self.run(&pending.join(" ")).await?;
        self.aborted.store(false, Ordering::Relaxed);
        Ok(())
    }
}

impl Transaction<'static> {
    pub(crate) async fn begin(manager: AsyncDatabaseManager) -> Result<Self> {
        let conn = manager.acquire().await?;
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
        crate::query::log_query("BEGIN", std::iter::empty());
        tx.state().run("BEGIN").await?;
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
    pub async fn transaction(&self) -> Result<Transaction<'_>> {
        let state = self.state();
        state.flush_pending().await?;
        let name = format!(
            "pgdbm_sp_{}",
            state.next_savepoint.fetch_add(1, Ordering::Relaxed)
        );
        state.run(&format!("SAVEPOINT {name}")).await?;
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

    /// The connection the transaction runs on (the driver's client), like the seed's
    /// `tx.connection`.
    pub fn connection(&self) -> &Client {
        &self.state().conn().client
    }

    /// Commits (or, for a savepoint, releases it). If a statement failed earlier and was not
    /// rolled back to a savepoint, this rolls back instead and returns [`Error::Transaction`].
    pub async fn commit(mut self) -> Result<()> {
        let result = self.finish_commit().await;
        // A root whose COMMIT did not go through is rolled back by Drop; a savepoint is done
        // either way (rolling back to a released savepoint would fail later).
        self.finished = result.is_ok() || self.savepoint.is_some();
        result
    }

    async fn finish_commit(&self) -> Result<()> {
        let state = self.state();
        state.flush_pending().await?;
        let aborted = state.aborted.load(Ordering::Relaxed);
        match &self.savepoint {
            None => {
                if aborted {
                    state.run("ROLLBACK").await?;
                    return Err(Error::Transaction(
                        "the transaction was aborted by an earlier error and has been rolled back; \
                         nothing was committed. Handle errors inside a nested transaction \
                         (tx.transaction()) to continue after them"
                            .into(),
                    ));
                }
                // COMMIT can still fail (deferred constraints, serialization): that is a
                // query error with the server's SQLSTATE.
                state.run("COMMIT").await
            }
            Some(name) => {
                if aborted {
                    state
                        .run(&format!(
                            "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
                        ))
                        .await?;
                    state.aborted.store(false, Ordering::Relaxed);
                    return Err(Error::Transaction(format!(
                        "savepoint {name} was aborted by an earlier error and has been rolled back; \
                         the outer transaction goes on"
                    )));
                }
                state.run(&format!("RELEASE SAVEPOINT {name}")).await
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
            None => state.run("ROLLBACK").await,
            Some(name) => {
                state.flush_pending().await?;
                state
                    .run(&format!(
                        "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
                    ))
                    .await?;
                state.aborted.store(false, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    query_methods!();
}

impl Executor for Transaction<'_> {
    fn templates(&self) -> &Templates {
        Executor::templates(&self.state().manager)
    }

    fn timeout(&self) -> Option<Duration> {
        self.state().timeout
    }

    async fn conn(&self, _deadline: Option<Instant>) -> Result<ConnRef<'_>> {
        let state = self.state();
        state.flush_pending().await?;
        Ok(ConnRef::Borrowed(state.conn()))
    }

    fn in_transaction(&self) -> bool {
        true
    }

    fn note_error(&self, error: &Error) {
        if error.as_db_error().is_some() || error.is_timeout() {
            self.state().aborted.store(true, Ordering::Relaxed);
        }
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
            (Root::Owned(state), _) => {
                let Some(conn) = state.conn.take() else {
                    return;
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        // Roll back now, not when the connection is next used, so locks are
                        // released promptly; the connection returns to the pool afterwards.
                        handle.spawn(async move {
                            if conn.batch_execute("ROLLBACK").await.is_err() {
                                drop(conn.detach());
                            }
                        });
                    }
                    // No runtime to roll back on: closing the connection makes the server
                    // roll back.
                    Err(_) => drop(conn.detach()),
                }
            }
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
