//! [`ConnRef`]: the connection one call runs on, as routing hands it out: the primary's, a
//! transaction's, or a replica's (and where a call that failed there may run again).

use std::ops::Deref;
use std::sync::Arc;

use super::ReplicaHost;
use crate::connection::PgConn;
use crate::error::Error;
use crate::pool::{PoolConnection, Shared};

/// A connection for one call: checked out of the pool, or borrowed from a transaction.
// Boxing the pooled variant would cost an allocation per query; the enum lives on the stack
// of one call only.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ConnRef<'a> {
    Pooled(PoolConnection),
    Borrowed(&'a PgConn),
    /// A read replica's connection.
    Replica(PoolConnection, Arc<ReplicaHost>),
    /// A call on a shared connection (multiplexing).
    Shared(Shared),
}

/// Where a call that failed on a replica may run again.
pub(crate) enum Reroute {
    No,
    /// The replica went away (it is marked down): on another replica or the primary.
    Elsewhere,
    /// The replica refused the statement as a write (`25006`).
    Primary,
}

impl ConnRef<'_> {
    /// After a call's statement: on a shared connection, whether its answer came (anything
    /// but a timeout), for the connection's stall check.
    #[inline]
    pub(crate) fn settle<T>(&self, result: &Result<T, Error>) {
        if let ConnRef::Shared(call) = self {
            if !matches!(result, Err(Error::SharedTimeout { .. })) {
                call.answered();
            }
        }
    }

    /// Whether a call of `sql` that failed with `e` on this connection may run again
    /// elsewhere. A statement a replica refuses as a write (`25006`), or because it reads a
    /// temporary or unlogged table (`0A000` during recovery), wrote and read nothing there: it
    /// runs once on the primary, and its text is not sent to replicas again.
    pub(crate) fn reroute(&self, e: &Error, sql: &str) -> Reroute {
        match self {
            ConnRef::Replica(_, host) => {
                if host.fails_over(e) {
                    Reroute::Elsewhere
                } else if e.code() == Some("25006") || is_recovery_refusal(e) {
                    host.verdicts.not_for_replicas(sql);
                    Reroute::Primary
                } else {
                    Reroute::No
                }
            }
            _ => Reroute::No,
        }
    }
}

/// `0A000` from a standby: "cannot access temporary or unlogged relations during recovery".
fn is_recovery_refusal(e: &Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "0A000" && db.message().contains("during recovery"))
}

impl Deref for ConnRef<'_> {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        match self {
            ConnRef::Pooled(c) | ConnRef::Replica(c, _) => c.conn(),
            ConnRef::Borrowed(c) => c,
            ConnRef::Shared(s) => s,
        }
    }
}
