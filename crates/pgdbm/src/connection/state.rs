//! The session state of one pooled connection, and the transitions every statement makes.
//!
//! The state says what the server session is doing as far as this process knows. Every
//! statement pgdbm sends goes through [`PgConn::begin_op`] and [`PgConn::end_op`] (the one
//! choke point), transactions move it with [`PgConn::enter_transaction`] and
//! [`PgConn::leave_transaction`], and a timeout moves it to a cancelling state. A future dropped
//! halfway leaves the state where it was at the await it was dropped on (`Active`, `Copy`, ...),
//! which is exactly what the connection's owner needs to know to clean up.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::PgConn;
use crate::error::{Error, Result};

/// What the server session of a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SessionState {
    /// Nothing in flight, no transaction open: the only state the pool hands out.
    Idle = 0,
    /// A statement is in flight outside any transaction.
    Active = 1,
    /// A transaction is open and nothing is in flight.
    InTransaction = 2,
    /// A statement is in flight inside a transaction.
    ActiveInTransaction = 3,
    /// `COPY … FROM STDIN` is streaming (always inside a transaction).
    Copy = 4,
    /// A call timed out outside a transaction; its query is being cancelled.
    Cancelling = 5,
    /// A call timed out inside a transaction; its query is being cancelled.
    CancellingInTransaction = 6,
    /// Handed out as a raw client: the user may have done anything with it.
    Unknown = 7,
    /// The connection failed or cannot be trusted again: it is closed, never reused.
    Broken = 8,
    /// Multiplexed: statements of several callers may be in flight at once. Nothing on it is
    /// ever cancelled; it goes back to the pool through a drain that waits for them all.
    Shared = 9,
}

impl SessionState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => SessionState::Idle,
            1 => SessionState::Active,
            2 => SessionState::InTransaction,
            3 => SessionState::ActiveInTransaction,
            4 => SessionState::Copy,
            5 => SessionState::Cancelling,
            6 => SessionState::CancellingInTransaction,
            7 => SessionState::Unknown,
            9 => SessionState::Shared,
            _ => SessionState::Broken,
        }
    }

    /// Whether the server may still be running a query of ours that nobody waits for.
    pub(crate) fn may_be_running(self) -> bool {
        matches!(
            self,
            SessionState::Active
                | SessionState::ActiveInTransaction
                | SessionState::Cancelling
                | SessionState::CancellingInTransaction
        )
    }

    fn describe(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Active | SessionState::ActiveInTransaction => {
                "busy with another statement (a statement future was dropped before it finished, or two statements ran at once on one transaction)"
            }
            SessionState::InTransaction => "in a transaction",
            SessionState::Copy => "in the middle of a COPY",
            SessionState::Cancelling | SessionState::CancellingInTransaction => {
                "cancelling a statement that timed out"
            }
            SessionState::Unknown => "handed out as a raw client",
            SessionState::Broken => "broken (the connection failed)",
            SessionState::Shared => "shared by several callers (multiplexed)",
        }
    }
}

/// The state cell of a connection, plus the state an operation returns to when it ends.
#[derive(Debug)]
pub(crate) struct StateCell {
    current: AtomicU8,
    resume: AtomicU8,
    /// Usable until released, then closed: the session lost something the pool set up
    /// (its named statements, its settings).
    retired: AtomicBool,
    /// A statement that may change the session (see `sql::Effects`) was sent: the session is
    /// reset before the connection is reused.
    dirty: AtomicBool,
    /// `reset_on_release = "always"`: the reset goes out ahead of the next statement.
    reset_pending: AtomicBool,
}

impl StateCell {
    pub(crate) fn new() -> Self {
        StateCell {
            current: AtomicU8::new(SessionState::Idle as u8),
            resume: AtomicU8::new(SessionState::Idle as u8),
            retired: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            reset_pending: AtomicBool::new(false),
        }
    }
}

impl PgConn {
    /// The session state as this process knows it.
    pub(crate) fn state(&self) -> SessionState {
        SessionState::from_u8(self.state.current.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, state: SessionState) {
        self.state.current.store(state as u8, Ordering::Release);
    }

    /// Moves the state from `from` to `to`; `false` if it was not `from`.
    pub(super) fn swap_state(&self, from: SessionState, to: SessionState) -> bool {
        self.state
            .current
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Marks the connection so that it is closed instead of being handed out again.
    pub(crate) fn mark_broken(&self) {
        self.set_state(SessionState::Broken);
    }

    /// Lets the current user finish, then closes the connection instead of reusing it.
    pub(crate) fn retire(&self) {
        self.state.retired.store(true, Ordering::Release);
    }

    /// The session may carry a change that must not reach the next user.
    pub(crate) fn mark_dirty(&self) {
        self.state.dirty.store(true, Ordering::Release);
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.state.dirty.load(Ordering::Acquire)
    }

    pub(crate) fn set_reset_pending(&self) {
        self.state.reset_pending.store(true, Ordering::Release);
    }

    /// Whether a reset is pending; clears it. One load when none is.
    #[inline]
    pub(crate) fn take_reset_pending(&self) -> bool {
        self.state.reset_pending.load(Ordering::Relaxed)
            && self.state.reset_pending.swap(false, Ordering::AcqRel)
    }

    /// Whether [`mark_dirty`](Self::mark_dirty) was called; clears it.
    pub(crate) fn take_dirty(&self) -> bool {
        self.state.dirty.swap(false, Ordering::AcqRel)
    }

    /// Broken, retired or closed: never to be handed out again.
    pub(crate) fn is_broken(&self) -> bool {
        self.state() == SessionState::Broken
            || self.state.retired.load(Ordering::Acquire)
            || self.client.is_closed()
    }

    /// Starts a statement: only an idle connection, or one in a transaction with nothing in
    /// flight, may start one.
    pub(crate) fn begin_op(&self) -> Result<()> {
        if self.try_begin_op() {
            return Ok(());
        }
        Err(Error::Transaction(format!(
            "the connection cannot run a statement now: it is {}. A transaction whose statement \
             was cancelled or dropped must be rolled back",
            self.state().describe()
        )))
    }

    /// [`begin_op`](Self::begin_op) without its error.
    #[inline]
    pub(crate) fn try_begin_op(&self) -> bool {
        for (from, to) in [
            (SessionState::Idle, SessionState::Active),
            (
                SessionState::InTransaction,
                SessionState::ActiveInTransaction,
            ),
        ] {
            if self.swap_state(from, to) {
                self.state.resume.store(from as u8, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Ends a statement begun with [`begin_op`](Self::begin_op). A state moved elsewhere
    /// meanwhile (cancelling, broken, still in a transaction that should have ended) stays.
    pub(crate) fn end_op(&self) {
        if self.client.is_closed() {
            self.mark_broken();
            return;
        }
        let resume = SessionState::from_u8(self.state.resume.load(Ordering::Acquire));
        let active = match resume {
            SessionState::Idle => SessionState::Active,
            _ => SessionState::ActiveInTransaction,
        };
        self.swap_state(active, resume);
    }

    /// A `BEGIN` is about to be sent inside the current statement. Call it *before* sending:
    /// once the message is out the server may be in a transaction whether or not we see the
    /// answer, and a future dropped while waiting must leave a state that gets rolled back
    /// (the state may overstate the server's, never understate it). If `BEGIN` then fails,
    /// undo with [`leave_transaction`](Self::leave_transaction).
    pub(crate) fn enter_transaction(&self) {
        self.set_state(SessionState::ActiveInTransaction);
        self.state
            .resume
            .store(SessionState::InTransaction as u8, Ordering::Release);
    }

    /// A `COMMIT` or `ROLLBACK` succeeded inside the current statement (or a `BEGIN` failed):
    /// call it only once the server has answered.
    pub(crate) fn leave_transaction(&self) {
        self.set_state(SessionState::Active);
        self.state
            .resume
            .store(SessionState::Idle as u8, Ordering::Release);
    }

    /// `COPY … FROM STDIN` started (`true`) or ended cleanly (`false`).
    pub(crate) fn set_copying(&self, copying: bool) {
        if copying {
            self.swap_state(SessionState::ActiveInTransaction, SessionState::Copy);
        } else {
            self.swap_state(SessionState::Copy, SessionState::ActiveInTransaction);
        }
    }

    /// The current statement timed out: a cancel is (about to be) in flight.
    pub(crate) fn start_cancelling(&self) {
        let next = match self.state() {
            SessionState::Active => SessionState::Cancelling,
            // A shared connection is never cancelled: the running statement may be anyone's.
            SessionState::Broken | SessionState::Shared => return,
            _ => SessionState::CancellingInTransaction,
        };
        self.set_state(next);
    }
}
