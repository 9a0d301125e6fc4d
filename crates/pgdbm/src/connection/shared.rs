//! A connection in shared use (multiplexing): statements of several callers in flight on it at
//! once, pipelined by the driver. Such a connection never sends a cancel request, which would
//! stop whichever statement runs, perhaps another caller's: a timeout returns at its deadline
//! and the late answer is discarded when it arrives.

use std::future::Future;
use std::time::Instant;

use super::{PgConn, SessionState, TxStatus};
use crate::error::{shorten_sql, Error, Result};

impl PgConn {
    /// Puts an idle connection into shared use; `false` if it is not idle.
    pub(crate) fn share(&self) -> bool {
        self.swap_state(SessionState::Idle, SessionState::Shared)
    }

    /// Whether the connection is in shared use.
    pub(crate) fn is_shared(&self) -> bool {
        self.state() == SessionState::Shared
    }

    /// Closes the connection now, whatever is in flight on it: every caller with a statement
    /// on it gets [`Error::ConnectionLost`] that says `why`.
    pub(crate) fn close_now(&self, why: &str) {
        let _ = self.lost.set(why.to_owned());
        self.retire();
        self.tap.kill();
    }

    /// [`timed`](Self::timed) on a shared connection: no state moves (the connection stays
    /// shared), no cancel; `fut` is dropped at the deadline and its answer discarded later.
    pub(crate) async fn timed_shared<T>(
        &self,
        deadline: Option<Instant>,
        operation: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let outcome = match deadline {
            None => fut.await,
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), fut).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::SharedTimeout {
                        operation: shorten_sql(operation),
                        after: started.elapsed(),
                    })
                }
            },
        };
        match outcome {
            Err(e) if self.is_lost(&e) => Err(self.lost(operation, &e)),
            other => {
                // Only session-neutral statements come here. Should one have left a
                // transaction open or a setting changed all the same, the connection leaves
                // shared use (and is reset or closed on release) before anyone else is sent
                // to it.
                if matches!(
                    self.tap.status(),
                    TxStatus::InTransaction | TxStatus::Failed
                ) || self.tap.params_changed()
                {
                    self.retire();
                }
                other
            }
        }
    }

    /// Whether `e` says the connection was lost under the statement (rather than the
    /// statement failing on its own): the server ended the session, or the connection closed
    /// with no answer. A server error that arrived before the end stays what it is.
    pub(crate) fn is_lost(&self, e: &Error) -> bool {
        if is_session_end(e) {
            return true;
        }
        let Error::Query { source, .. } = e else {
            return false;
        };
        source.as_db_error().is_none()
            && (source.is_closed()
                || (self.client.is_closed()
                    && std::error::Error::source(source)
                        .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())))
    }

    /// The error a caller gets for a statement on a lost shared connection.
    pub(crate) fn lost(&self, operation: &str, e: &Error) -> Error {
        let ended = is_session_end(e);
        let reason = match self.lost.get() {
            Some(why) => why.clone(),
            None if ended => format!("the server ended the session: {e}"),
            None => format!("the connection closed: {e}"),
        };
        Error::ConnectionLost {
            operation: shorten_sql(operation),
            // The server ended the session while running this very statement: it was rolled
            // back. Otherwise it may have been sent, run and committed before the end.
            may_have_run: !ended,
            reason,
        }
    }
}

/// `57P01`-`57P03`: the server ended the session (an administrator, a shutdown, a crash).
fn is_session_end(e: &Error) -> bool {
    matches!(e.code(), Some("57P01" | "57P02" | "57P03"))
}
