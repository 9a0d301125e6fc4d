//! [`PoolConnection`]: a connection checked out of the pool, and what happens when it is
//! released: back to the pool only when it is known to be idle, else recovered (cancelled,
//! drained, rolled back, reset) in the background or closed.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_postgres::Client;

use super::core::Object;
use crate::connection::{PgConn, SessionState, RELEASED};

/// A connection checked out of the pool. It derefs to the driver's [`Client`], for anything
/// pgdbm does not cover. Dropping it returns it to the pool once it is known to be idle: a raw
/// connection is checked in the background first (a transaction left open by it is caught there,
/// and the connection closed); use [`detach`](Self::detach) after changing session settings.
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> Result<(), Box<dyn std::error::Error>> {
/// let conn = db.acquire().await?;
/// // The driver's own methods return the driver's error type.
/// let rows = conn.query("SELECT 1", &[]).await?;
/// # Ok(()) }
/// ```
pub struct PoolConnection {
    /// Always `Some` until `detach` or drop.
    obj: Option<Object>,
    /// Bumped when the connection is released: a manager with read replicas counts its writes
    /// this way (read-your-writes).
    writes: Option<Arc<AtomicU64>>,
}

impl PoolConnection {
    pub(crate) fn new(obj: Object) -> Self {
        PoolConnection {
            obj: Some(obj),
            writes: None,
        }
    }

    /// Counts this connection's use as one write into `writes` when it is released (or
    /// detached), once whatever it ran has completed.
    pub(crate) fn count_release(&mut self, writes: Arc<AtomicU64>) {
        self.writes = Some(writes);
    }

    pub(crate) fn conn(&self) -> &PgConn {
        self.obj.as_ref().expect("connection present until dropped")
    }

    /// The server process ID serving this connection.
    pub fn backend_pid(&self) -> i32 {
        self.conn().backend_pid
    }

    /// Takes the connection out of the pool for good (it is closed when dropped), for example
    /// after changing session state that must not leak to other users.
    pub fn detach(mut self) -> Client {
        if let Some(writes) = self.writes.take() {
            writes.fetch_add(1, Ordering::AcqRel);
        }
        let obj = self.obj.take().expect("connection present until dropped");
        let conn = Object::take(obj);
        // Out of the pool now, though its client lives on.
        conn.refill.signal();
        conn.client
    }
}

impl PoolConnection {
    /// Closes the connection for good, first cancelling whatever it may still run, so that its
    /// locks and open transaction go away now rather than when a long statement ends.
    pub(crate) fn cancel_and_close(mut self) {
        if let Some(obj) = self.obj.take() {
            cancel_and_close(obj);
        }
    }
}

fn cancel_and_close(obj: Object) {
    let runtime = obj.runtime.clone();
    // `Recovering` closes the connection when dropped, whether the task runs or not.
    let closing = Recovering(Some(obj));
    drop(runtime.spawn(async move {
        if let Some(obj) = &closing.0 {
            let _ = obj.cancel_confirmed().await;
        }
        drop(closing);
    }));
}

impl Deref for PoolConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.conn().client
    }
}

impl Drop for PoolConnection {
    fn drop(&mut self) {
        if let Some(writes) = self.writes.take() {
            writes.fetch_add(1, Ordering::AcqRel);
        }
        let Some(obj) = self.obj.take() else { return };
        // Idle time counts from the return to the pool, not from the checkout; the reaper
        // reads the clock for it.
        obj.last_used.store(RELEASED, Ordering::Relaxed);
        let state = obj.state();
        match state {
            // Retired while a statement still runs: stop it, then close.
            s if obj.is_broken() && s.may_be_running() && !obj.client.is_closed() => {
                cancel_and_close(obj)
            }
            _ if obj.is_broken() => close(obj),
            // The server says so too: no transaction, no response pending, nothing changed.
            SessionState::Idle if obj.is_clean() && obj.release_clean() => {}
            _ => {
                let runtime = obj.runtime.clone();
                let recovering = Recovering(Some(obj));
                // If the runtime is shutting down the task is dropped unrun, and
                // `Recovering` closes the connection.
                drop(runtime.spawn(recovering.run()));
            }
        }
    }
}

/// Closes a connection now: out of the pool's count, its client dropped (the driver sends
/// Terminate, or the socket closes with the runtime), so the server ends the session.
fn close(obj: Object) {
    drop(Object::take(obj));
}

/// A connection held out of the pool while it is brought back to idle; closed unless that
/// succeeds.
struct Recovering(Option<Object>);

impl Recovering {
    async fn run(mut self) {
        let idle = match &self.0 {
            Some(obj) => obj.recover().await,
            None => return,
        };
        if idle {
            // Back to the pool.
            drop(self.0.take());
        }
    }
}

impl Drop for Recovering {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            close(obj);
        }
    }
}

impl std::fmt::Debug for PoolConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConnection")
            .field("backend_pid", &self.conn().backend_pid)
            .finish_non_exhaustive()
    }
}
