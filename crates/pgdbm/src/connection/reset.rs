//! Putting a session back to what the pool set up: the reset script, the reset that
//! `reset_on_release = "always"` sends ahead of the next statement, and the transaction of its
//! own that a `with_settings`/`with_role` call runs in.

use std::future::Future;

use super::PgConn;
use crate::error::{Error, Result};

/// The reset of `reset_on_release = "always"`, queued ahead of a statement.
pub(super) type PendingReset<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>>;

/// How a connection's session is put back to what the pool set up after a caller changed it:
/// everything a caller can leave on a session is undone, then the pool's own settings are
/// applied again, exactly as when the connection was made.
#[derive(Debug, Default)]
pub(crate) struct SessionReset {
    /// One script: the undoing (SQL-level prepared statements included), then the pool's
    /// settings.
    pub(crate) script: String,
    /// The same without deallocating SQL-level prepared statements: what
    /// `reset_on_release = "always"` sends ahead of the next statement when nothing showed a
    /// session change.
    pub(crate) quick_script: String,
    /// `init_commands`, run again after the script.
    pub(crate) init_commands: Vec<String>,
    /// `reset_on_release = "always"`: every use is followed by a reset.
    pub(crate) always: bool,
    /// With `always` and no `init_commands`: the reset goes out ahead of the next statement,
    /// in the same round trip, instead of on its own when the connection is released.
    pub(crate) lazy: bool,
}

/// What a reset undoes, in this order: held cursors, `LISTEN`, session advisory locks, the
/// session and current role, every setting, temporary objects, and sequence state.
pub(crate) const RESET_SESSION_SQL: &str = "CLOSE ALL;\n\
    UNLISTEN *;\n\
    SELECT pg_catalog.pg_advisory_unlock_all();\n\
    SET SESSION AUTHORIZATION DEFAULT;\n\
    RESET ROLE;\n\
    RESET ALL;\n\
    DISCARD TEMP;\n\
    DISCARD SEQUENCES;\n";

/// Statements prepared with SQL's `PREPARE`, deallocated (the protocol-level statements of the
/// statement cache stay). Costly next to the rest (a PL/pgSQL block, and a scan of every
/// prepared statement), so it runs only when a `PREPARE` may have happened.
pub(crate) const DEALLOCATE_SQL_PREPARED: &str = "DO $pgdbm$ DECLARE s text; BEGIN \
    FOR s IN SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql LOOP \
    EXECUTE pg_catalog.format('DEALLOCATE %I', s); END LOOP; END $pgdbm$;\n";

impl PgConn {
    /// A clean connection about to go back to the pool: whether it may go now. With
    /// `reset_on_release = "always"` its reset is left pending for the next statement, or,
    /// when that cannot be (`init_commands` must run again), it is not.
    pub(crate) fn release_clean(&self) -> bool {
        if !self.reset.always {
            return true;
        }
        if self.reset.lazy {
            self.set_reset_pending();
        }
        self.reset.lazy
    }

    /// The reset that `reset_on_release = "always"` left pending, on its own.
    pub(crate) async fn reset_pending_now(&self) -> Result<(), tokio_postgres::Error> {
        let r = self.client.batch_execute(&self.reset.quick_script).await;
        if r.is_err() {
            self.mark_broken();
        }
        r
    }

    /// Sends the reset that `reset_on_release = "always"` left pending, if any, ahead of
    /// whatever this connection sends next: its future is polled once (which queues the
    /// request) and awaited after the statement, by [`pending_reset_done`].
    ///
    /// [`pending_reset_done`]: Self::pending_reset_done
    pub(super) fn queue_pending_reset(&self) -> Option<PendingReset<'_>> {
        if !self.take_reset_pending() {
            return None;
        }
        let mut reset: PendingReset<'_> =
            Box::pin(self.client.batch_execute(&self.reset.quick_script));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match reset.as_mut().poll(&mut cx) {
            // Done already (the connection is closed, say): keep the outcome, not the future.
            std::task::Poll::Ready(r) => Some(Box::pin(std::future::ready(r))),
            std::task::Poll::Pending => Some(reset),
        }
    }

    /// The outcome of a statement sent behind a pending reset: the reset's error when it
    /// failed (the statement then ran on a session that may not have been reset, and the
    /// connection is broken), else the statement's.
    pub(super) fn after_pending_reset<T>(
        &self,
        reset: Result<(), tokio_postgres::Error>,
        outcome: Result<T>,
    ) -> Result<T> {
        match reset {
            Ok(()) => outcome,
            Err(source) => {
                self.mark_broken();
                Err(Error::Query {
                    sql: "the session reset sent ahead of this statement".into(),
                    params: String::new(),
                    source,
                })
            }
        }
    }

    /// Runs `body` in a transaction of its own, opened by `begin` (sent ahead of the body's
    /// first request, in the same round trip) and committed after it; rolled back when the
    /// body fails. The error says whether it was `begin`'s (`true`) or the body's.
    pub(crate) async fn in_own_transaction<T>(
        &self,
        begin: &str,
        body: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, (tokio_postgres::Error, bool)> {
        // In a transaction from before BEGIN is sent: dropped halfway, the release rolls back.
        self.enter_transaction();
        let (begun, out) = futures_util::future::join(self.client.batch_execute(begin), body).await;
        let end = if begun.is_ok() && out.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = self.client.batch_execute(end).await;
        if ended.is_ok() {
            self.leave_transaction();
        }
        begun.map_err(|e| (e, true))?;
        let out = out.map_err(|e| (e, false))?;
        ended.map_err(|e| (e, false))?;
        Ok(out)
    }
}
