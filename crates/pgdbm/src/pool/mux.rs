//! Multiplexing: statements of many callers share a few of the pool's connections, pipelined
//! by the driver, instead of holding a connection each for their round trip.
//!
//! A shared connection is an ordinary pooled connection checked out for shared use (its state
//! is `Shared`), so `max_connections` bounds shared and exclusive connections together. A
//! call goes to the shared connection with the fewest statements in flight; another one is
//! taken from the pool only when every shared connection is busy and the pool has one to
//! spare without waiting. A shared connection goes back to the pool when a caller waits for
//! an exclusive one, when it has been unused for [`IDLE_RELEASE`], or when it breaks; its
//! release waits for the answers still owed to it (see `PgConn::recover`).
//!
//! Nothing on a shared connection is ever cancelled. A connection whose oldest statement is
//! overdue by more than [`STALL_GRACE`] (the network stalled: the server would have ended the
//! statement by then) is closed, and the callers with a statement on it get
//! `Error::ConnectionLost`.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{Pool, PoolConnection, PoolInner};
use crate::connection::PgConn;
use crate::error::Result;
use crate::stats::SharedConnectionStats;
use crate::util::now_micros;

/// How long past its due time a statement may stay unanswered before its shared connection is
/// deemed stalled and closed.
pub(crate) const STALL_GRACE: Duration = Duration::from_secs(5);
/// A shared connection unused this long goes back to the pool.
pub(crate) const IDLE_RELEASE: Duration = Duration::from_secs(1);
/// How long a connection opened in the background for shared use may take.
const OPEN_WAIT: Duration = Duration::from_secs(5);
/// How often the shared connections are looked over.
const TICK: Duration = Duration::from_millis(100);

/// The pool's shared connections.
pub(crate) struct Mux {
    slots: Mutex<Vec<Arc<Slot>>>,
    /// A caller is taking another connection from the pool for shared use: the others use
    /// the shared ones meanwhile, or wait for it when there is none.
    opening: AtomicBool,
    opened: tokio::sync::Notify,
    /// Calls run on shared connections so far.
    calls: AtomicU64,
    /// The pool closed: no connection is shared any more.
    closed: AtomicBool,
    /// The server's `statement_timeout` on a shared connection: by then it ends any
    /// statement.
    server_limit: Option<Duration>,
    /// What sets it on a connection taken for shared use, when that differs from the pool's
    /// own (the release resets it).
    set_limit: Option<String>,
}

/// One shared connection and the calls on it.
pub(crate) struct Slot {
    conn: PoolConnection,
    in_flight: AtomicUsize,
    /// When each call on it is due (its own deadline, or the server's limit), by call number.
    calls: Mutex<Calls>,
    /// When the last call left (µs since the process epoch).
    last_used: AtomicU64,
}

/// The calls on one shared connection, by number (in the order they came).
#[derive(Default)]
struct Calls {
    next: u64,
    open: BTreeMap<u64, Call>,
    /// When the last answer came: the oldest open call's statement has run since then at
    /// most.
    last_answer: Option<Instant>,
}

struct Call {
    entered: Instant,
    /// The caller's deadline.
    deadline: Option<Instant>,
    /// The caller left before its answer came (a timeout, a dropped future). Its statement
    /// may still be owed an answer: it counts until a later call is answered, since answers
    /// come back in order.
    abandoned: bool,
}

/// A call on a shared connection; dropping it ends the call.
pub(crate) struct Shared {
    slot: Arc<Slot>,
    id: u64,
    /// The statement's answer came (success or a server error): see [`Shared::answered`].
    answered: AtomicBool,
}

impl Mux {
    pub(crate) fn new(server_limit: Option<Duration>, set_limit: Option<String>) -> Self {
        Mux {
            set_limit,
            slots: Mutex::default(),
            opening: AtomicBool::new(false),
            opened: tokio::sync::Notify::new(),
            calls: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            server_limit,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared connection with the fewest calls, unless every one is busy and `spare` says
    /// the pool can give another.
    fn pick(&self, deadline: Option<Instant>, spare: impl FnOnce() -> bool) -> Option<Shared> {
        let mut slots = self.slots();
        // A broken one is of no use: it goes (released once its calls end).
        slots.retain(|s| !s.conn.conn().is_broken());
        let best = slots
            .iter()
            .min_by_key(|s| s.in_flight.load(Ordering::Relaxed))?;
        if best.in_flight.load(Ordering::Relaxed) > 0 && spare() {
            return None;
        }
        Some(self.enter(best, deadline))
    }

    fn enter(&self, slot: &Arc<Slot>, deadline: Option<Instant>) -> Shared {
        self.calls.fetch_add(1, Ordering::Relaxed);
        slot.enter(deadline)
    }

    /// Adds `conn` as a shared connection, with a first call on it when `first`.
    fn add(
        &self,
        conn: PoolConnection,
        first: bool,
        deadline: Option<Instant>,
    ) -> Option<Option<Shared>> {
        if !conn.conn().share() {
            return None;
        }
        let slot = Arc::new(Slot {
            conn,
            in_flight: AtomicUsize::new(0),
            calls: Mutex::default(),
            last_used: AtomicU64::new(now_micros()),
        });
        let mut slots = self.slots();
        // Checked under the lock that `clear` takes after setting it: no slot outlives it.
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let call = first.then(|| self.enter(&slot, deadline));
        slots.push(slot);
        Some(call)
    }

    /// Whether a shared connection that is not broken exists.
    fn has_slots(&self) -> bool {
        self.slots().iter().any(|s| !s.conn.conn().is_broken())
    }

    /// Gives the least busy shared connection back to the pool (once its calls end), for a
    /// caller that waits for an exclusive connection.
    pub(crate) fn yield_one(&self) {
        let mut slots = self.slots();
        if let Some(i) =
            (0..slots.len()).min_by_key(|&i| slots[i].in_flight.load(Ordering::Relaxed))
        {
            slots.swap_remove(i);
        }
    }

    /// Lets go of every shared connection (the pool is closing): each is released once its
    /// calls end.
    pub(crate) fn clear(&self) {
        self.closed.store(true, Ordering::Release);
        self.slots().clear();
    }

    /// Looks the shared connections over: drops broken ones, closes stalled ones, and gives
    /// back those unused for [`IDLE_RELEASE`] or wanted by a waiting caller.
    fn tick(&self, waiting: bool) {
        let now = Instant::now();
        let idle_limit = IDLE_RELEASE.as_micros() as u64;
        let now_us = now_micros();
        let mut slots = self.slots();
        slots.retain(|s| {
            let pg = s.conn.conn();
            if pg.is_broken() {
                return false;
            }
            let busy = s.in_flight.load(Ordering::Relaxed) > 0;
            // Without callers on it an overdue answer harms no one: the idle release below
            // waits for it (or closes the connection if it never comes).
            if let Some(overdue) = s.overdue(now, self.server_limit).filter(|_| busy) {
                tracing::warn!(
                    backend_pid = pg.backend_pid,
                    overdue_ms = overdue.as_millis() as u64,
                    "closing a stalled shared connection: no answer long after a statement's deadline"
                );
                pg.close_now(&format!(
                    "a statement on it had no answer {:?} after it was due; pgdbm closed it as \
                     stalled",
                    overdue
                ));
                return false;
            }
            let idle = !busy
                && now_us.saturating_sub(s.last_used.load(Ordering::Relaxed)) > idle_limit;
            !idle
        });
        if waiting && !slots.is_empty() {
            drop(slots);
            self.yield_one();
        }
    }
}

impl Slot {
    fn enter(self: &Arc<Slot>, deadline: Option<Instant>) -> Shared {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let id = calls.next;
        calls.next += 1;
        calls.open.insert(
            id,
            Call {
                entered: Instant::now(),
                deadline,
                abandoned: false,
            },
        );
        Shared {
            slot: self.clone(),
            id,
            answered: AtomicBool::new(false),
        }
    }

    /// How long past its due time the oldest unanswered statement is, when that is more than
    /// [`STALL_GRACE`]. Answers come in order, so the oldest is the one the connection waits
    /// on; the ones queued behind it have not started. It started at the later of its call
    /// and the last answer, and is due by the server's limit from then (the server ends it
    /// by that time), or without one by its caller's deadline; with neither, it has no due
    /// time and nothing is judged.
    fn overdue(&self, now: Instant, server_limit: Option<Duration>) -> Option<Duration> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let (_, oldest) = calls.open.iter().next()?;
        let started = calls
            .last_answer
            .map_or(oldest.entered, |a| a.max(oldest.entered));
        let due = match server_limit {
            Some(limit) => Some(
                oldest
                    .deadline
                    .map_or(started + limit, |d| d.max(started + limit)),
            ),
            None => oldest.deadline,
        }?;
        let late = now.checked_duration_since(due)?;
        (late > STALL_GRACE).then_some(late)
    }
}

impl Shared {
    /// The statement was answered (a result or a server error, not a timeout): the calls
    /// abandoned before it were answered too.
    pub(crate) fn answered(&self) {
        self.answered.store(true, Ordering::Relaxed);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        {
            let mut calls = self.slot.calls.lock().unwrap_or_else(|e| e.into_inner());
            if self.answered.load(Ordering::Relaxed) {
                calls.last_answer = Some(Instant::now());
                calls.open.remove(&self.id);
                let id = self.id;
                calls.open.retain(|&n, c| n > id || !c.abandoned);
            } else if let Some(call) = calls.open.get_mut(&self.id) {
                call.abandoned = true;
            }
        }
        self.slot.last_used.store(now_micros(), Ordering::Relaxed);
        self.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Deref for Shared {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        self.slot.conn.conn()
    }
}

impl Pool {
    /// Whether the pool multiplexes (`multiplexing = true`).
    pub(crate) fn multiplexes(&self) -> bool {
        self.inner.mux.is_some()
    }

    /// Each shared connection with its statements in flight; empty without multiplexing.
    pub(crate) fn shared_stats(&self) -> Vec<SharedConnectionStats> {
        let Some(mux) = &self.inner.mux else {
            return Vec::new();
        };
        mux.slots()
            .iter()
            .map(|s| SharedConnectionStats {
                backend_pid: s.conn.backend_pid(),
                in_flight: s.in_flight.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// A connection of the pool made ready for shared use: its `statement_timeout` set to
    /// the shared one when that differs (marked changed, so that its release resets it).
    async fn open_shared(&self, deadline: Option<Instant>) -> Result<PoolConnection> {
        let conn = self.checkout(deadline, false, None).await?;
        if self.inner.pool.is_closed() {
            return Err(crate::error::Error::Pool(
                "the pool is closed (disconnect() was called)".into(),
            ));
        }
        if let Some(set) = self.inner.mux.as_ref().and_then(|m| m.set_limit.as_deref()) {
            let pg = conn.conn();
            pg.mark_dirty();
            pg.client
                .batch_execute(set)
                .await
                .map_err(|e| crate::connection::query_error(e, set, std::iter::empty()))?;
        }
        Ok(conn)
    }

    /// Opens another shared connection in a task of its own (the caller has set `opening`).
    fn open_in_background(&self) {
        let pool = self.clone();
        drop(tokio::spawn(async move {
            let Some(mux) = &pool.inner.mux else { return };
            let _opening = Opening(mux);
            // The pool had one to spare: a short wait, then the busy ones do.
            let deadline = Some(Instant::now() + OPEN_WAIT);
            if let Ok(conn) = pool.open_shared(deadline).await {
                mux.add(conn, false, None);
            }
        }));
    }

    /// Calls run on shared connections so far; 0 without multiplexing.
    pub(crate) fn shared_calls(&self) -> u64 {
        self.inner
            .mux
            .as_ref()
            .map_or(0, |m| m.calls.load(Ordering::Relaxed))
    }

    /// A call on a shared connection: the least busy one, or a new one from the pool when
    /// every one is busy and the pool has one to spare (or none is shared yet).
    pub(crate) async fn get_shared(&self, deadline: Option<Instant>) -> Result<Shared> {
        let mux = self
            .inner
            .mux
            .as_ref()
            .expect("get_shared is called only on a multiplexing pool");
        let started = Instant::now();
        loop {
            let spare = || {
                let s = self.inner.pool.status();
                s.available > 0 || s.size < s.max_size
            };
            if let Some(call) = mux.pick(deadline, spare) {
                return Ok(call);
            }
            if mux.has_slots() {
                // Every shared connection is busy and the pool has one to spare: it is opened
                // in the background, and this call uses a busy one now rather than wait for a
                // connect (or fail with it).
                if !mux.opening.swap(true, Ordering::AcqRel) {
                    self.open_in_background();
                }
                if let Some(call) = mux.pick(deadline, || false) {
                    return Ok(call);
                }
                continue;
            }
            // None is shared yet: one caller opens it, the others wait for it.
            if !mux.opening.swap(true, Ordering::AcqRel) {
                let _opening = Opening(mux);
                let conn = self.open_shared(deadline).await?;
                if let Some(Some(call)) = mux.add(conn, true, deadline) {
                    return Ok(call);
                }
                continue;
            }
            // None is shared yet: wait for the one being opened.
            let opened = mux.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if !mux.opening.load(Ordering::Acquire) {
                continue;
            }
            match deadline {
                None => opened.await,
                Some(d) => {
                    if tokio::time::timeout_at(d.into(), opened).await.is_err() {
                        let status = self.inner.pool.status();
                        return Err(crate::error::Error::AcquireTimeout {
                            after: started.elapsed(),
                            size: status.size,
                            max_size: status.max_size,
                            waiting: status.waiting,
                        });
                    }
                }
            }
        }
    }
}

/// Ends an opening of a shared connection, successful or not, and wakes the callers that
/// wait for it.
struct Opening<'a>(&'a Mux);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.opening.store(false, Ordering::Release);
        self.0.opened.notify_waiters();
    }
}

/// Looks the pool's shared connections over every [`TICK`], until the pool is gone.
pub(super) fn spawn_watch(pool: Weak<PoolInner>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = pool.upgrade() else { return };
            let Some(mux) = &inner.mux else { return };
            if inner.pool.is_closed() {
                mux.clear();
                return;
            }
            mux.tick(inner.pool.status().waiting > 0);
        }
    });
}
