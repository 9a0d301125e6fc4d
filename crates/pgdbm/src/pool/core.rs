//! The pool's core: idle connections in a queue under one short lock, a count of every
//! connection (idle, checked out or being opened), and callers waiting in line.
//!
//! A checkout of an idle connection is one lock, one pop and the checks that it is still
//! reusable; a release is one lock and one push, or a hand-over to the first caller waiting.
//! Nothing reads the clock. A waiter is handed a connection or, when one went away, room to
//! open one (already counted in the size), so the count never exceeds the maximum.
//!
//! Every hand-over is a [`Grant`] that gives itself back when dropped unclaimed, and every
//! connection or room being used is held by a guard that gives it back when dropped: a
//! caller's future may be dropped at any await without losing a connection or a place.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::manage::{ConnectFailure, PgManager};
use crate::connection::PgConn;

type Conn = Box<PgConn>;

/// Why a checkout failed.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// The pool was closed.
    Closed,
    /// Opening a new connection failed.
    Backend(ConnectFailure),
}

/// The pool's counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) max_size: usize,
    /// Every connection: idle, checked out, or being opened.
    pub(crate) size: usize,
    /// Idle connections.
    pub(crate) available: usize,
    /// Callers waiting for a connection.
    pub(crate) waiting: usize,
}

/// The connections of a pool, shared by its checkouts.
pub(crate) struct Core {
    manager: PgManager,
    max_size: usize,
    slots: Mutex<Slots>,
    closed: AtomicBool,
}

struct Slots {
    /// Oldest released first, so every connection takes its turn.
    idle: VecDeque<Conn>,
    size: usize,
    waiters: VecDeque<oneshot::Sender<Grant>>,
}

/// What a waiter is given.
enum Given {
    Conn(Conn),
    /// Room to open a connection, counted in the size already.
    Room,
}

/// A hand-over to a waiter; given back to the pool if the waiter is gone.
struct Grant {
    core: Arc<Core>,
    given: Option<Given>,
}

impl Grant {
    fn take(mut self) -> Given {
        self.given.take().expect("a grant is taken once")
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        match self.given.take() {
            Some(Given::Conn(c)) => self.core.put_back(c),
            Some(Given::Room) => self.core.release_room(),
            None => {}
        }
    }
}

impl Core {
    pub(crate) fn new(manager: PgManager, max_size: usize) -> Arc<Core> {
        Arc::new(Core {
            manager,
            max_size,
            slots: Mutex::new(Slots {
                idle: VecDeque::with_capacity(max_size),
                size: 0,
                waiters: VecDeque::new(),
            }),
            closed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn manager(&self) -> &PgManager {
        &self.manager
    }

    /// A connection: an idle one that is still reusable, else a new one while there is room,
    /// else the next one released (in the order callers asked).
    pub(crate) async fn get(self: &Arc<Self>) -> Result<Object, PoolError> {
        loop {
            let (given, waited) = match self.next_or_wait() {
                Ok(given) => (given, false),
                Err(waiting) => match waiting {
                    None => return Err(PoolError::Closed),
                    Some(rx) => match rx.await {
                        Ok(grant) => (grant.take(), true),
                        // Closed: the pool dropped every waiter.
                        Err(_) => return Err(PoolError::Closed),
                    },
                },
            };
            match given {
                // Handed over after a wait but not fit to reuse: its room is this caller's,
                // who opens a connection in it rather than going back to the end of the line.
                Given::Conn(conn) if waited && !self.manager.reusable(&conn) => {
                    drop(conn);
                    return self.open().await;
                }
                Given::Conn(conn) => {
                    if let Some(obj) = self.reuse(conn).await {
                        return Ok(obj);
                    }
                }
                Given::Room => return self.open().await,
            }
        }
    }

    /// The oldest idle connection, when it can be handed out as it is; `None` sends the
    /// caller to [`get`](Core::get), which also deals with connections that cannot.
    #[inline]
    pub(crate) fn try_idle(self: &Arc<Self>) -> Option<Object> {
        if self.is_closed() {
            return None;
        }
        let conn = {
            let mut slots = self.lock();
            let ready = slots
                .idle
                .front()
                .is_some_and(|c| self.manager.reusable(c) && !self.manager.is_behind(c));
            if !ready {
                return None;
            }
            slots.idle.pop_front()?
        };
        Some(Object {
            conn: Some(conn),
            core: self.clone(),
        })
    }

    /// What is there now, or the line to wait in (`None`: closed).
    fn next_or_wait(&self) -> Result<Given, Option<oneshot::Receiver<Grant>>> {
        let mut slots = self.lock();
        // Under the lock: `close` sets the flag under it too, so no one joins the line after
        // it was cleared.
        if self.is_closed() {
            return Err(None);
        }
        if let Some(conn) = slots.idle.pop_front() {
            return Ok(Given::Conn(conn));
        }
        if slots.size < self.max_size {
            slots.size += 1;
            return Ok(Given::Room);
        }
        let (tx, rx) = oneshot::channel();
        slots.waiters.push_back(tx);
        Err(Some(rx))
    }

    /// `conn` checked out, if it is still fit to reuse; else it is closed.
    async fn reuse(self: &Arc<Self>, conn: Conn) -> Option<Object> {
        if !self.manager.reusable(&conn) {
            self.discard(conn);
            return None;
        }
        if self.manager.is_behind(&conn) {
            // Dropped halfway, a statement may be half prepared: the connection is closed.
            struct Pending<'a>(Option<Conn>, &'a Arc<Core>);
            impl Drop for Pending<'_> {
                fn drop(&mut self) {
                    if let Some(conn) = self.0.take() {
                        self.1.discard(conn);
                    }
                }
            }
            let mut pending = Pending(Some(conn), self);
            if let Some(conn) = &pending.0 {
                Box::pin(self.manager.catch_up(conn)).await;
            }
            return pending.0.take().map(|conn| Object {
                conn: Some(conn),
                core: self.clone(),
            });
        }
        Some(Object {
            conn: Some(conn),
            core: self.clone(),
        })
    }

    /// Opens a connection in room already counted; the room is given back if that fails or
    /// the caller gives up.
    async fn open(self: &Arc<Self>) -> Result<Object, PoolError> {
        struct Room<'a>(Option<&'a Arc<Core>>);
        impl Drop for Room<'_> {
            fn drop(&mut self) {
                if let Some(core) = self.0 {
                    core.release_room();
                }
            }
        }
        let mut room = Room(Some(self));
        let conn = self.manager.create().await.map_err(PoolError::Backend)?;
        room.0 = None;
        Ok(Object {
            conn: Some(conn),
            core: self.clone(),
        })
    }

    /// Opens up to `n` connections now, one after another, as idle ones, without waiting for
    /// room; the first failure ends it and is returned.
    pub(crate) async fn open_idle(self: &Arc<Self>, n: usize) -> Result<usize, ConnectFailure> {
        let mut failure = None;
        let mut count = 0;
        // One at a time, each room reserved right before the future that gives it back if
        // dropped: a room counted for a future never polled would stay counted.
        for _ in 0..n {
            {
                let mut slots = self.lock();
                if self.is_closed() || slots.size >= self.max_size {
                    break;
                }
                slots.size += 1;
            }
            match self.open().await {
                // Dropping the object puts it back, idle.
                Ok(_) => count += 1,
                Err(PoolError::Backend(f)) => {
                    failure = Some(f);
                    break;
                }
                Err(PoolError::Closed) => break,
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(count),
        }
    }

    /// Back to the pool: to the first waiter still waiting, else to the idle queue.
    fn put_back(self: &Arc<Self>, conn: Conn) {
        let mut slots = self.lock();
        if self.is_closed() {
            slots.size -= 1;
            drop(slots);
            drop(conn);
            return;
        }
        match self.hand_over(&mut slots, Given::Conn(conn)) {
            Some(Given::Conn(conn)) => slots.idle.push_back(conn),
            Some(Given::Room) => unreachable!("a connection was handed over"),
            None => {}
        }
    }

    /// A connection went away: its room goes to the first waiter, else the size shrinks.
    fn release_room(self: &Arc<Self>) {
        let mut slots = self.lock();
        if self.is_closed() || self.hand_over(&mut slots, Given::Room).is_some() {
            slots.size -= 1;
        }
    }

    /// Gives `given` to the first waiter still waiting; returns it when there is none.
    fn hand_over(self: &Arc<Self>, slots: &mut Slots, mut given: Given) -> Option<Given> {
        while let Some(tx) = slots.waiters.pop_front() {
            let grant = Grant {
                core: self.clone(),
                given: Some(given),
            };
            match tx.send(grant) {
                Ok(()) => return None,
                // That waiter gave up: taken back out, so the grant does not give it back.
                Err(grant) => given = grant.take(),
            }
        }
        Some(given)
    }

    /// Closes a connection that is not to be reused.
    fn discard(self: &Arc<Self>, conn: Conn) {
        drop(conn);
        self.release_room();
    }

    /// Keeps the idle connections for which `keep` says so and closes the others; returns how
    /// many were closed.
    pub(crate) fn retain(self: &Arc<Self>, mut keep: impl FnMut(&PgConn) -> bool) -> usize {
        let removed: Vec<Conn> = {
            let mut slots = self.lock();
            let mut removed = Vec::new();
            let mut kept = VecDeque::with_capacity(slots.idle.len());
            for conn in slots.idle.drain(..) {
                if keep(&conn) {
                    kept.push_back(conn);
                } else {
                    removed.push(conn);
                }
            }
            slots.idle = kept;
            removed
        };
        let n = removed.len();
        for conn in removed {
            self.discard(conn);
        }
        n
    }

    pub(crate) fn status(&self) -> Status {
        let mut slots = self.lock();
        slots.waiters.retain(|w| !w.is_closed());
        Status {
            max_size: self.max_size,
            size: slots.size,
            available: slots.idle.len(),
            waiting: slots.waiters.len(),
        }
    }

    /// Closes the idle connections now and the others as they come back; waiters get
    /// [`PoolError::Closed`].
    pub(crate) fn close(&self) {
        let (idle, waiters) = {
            let mut slots = self.lock();
            self.closed.store(true, Ordering::Release);
            let idle = std::mem::take(&mut slots.idle);
            slots.size -= idle.len();
            (idle, std::mem::take(&mut slots.waiters))
        };
        drop(waiters);
        drop(idle);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A checked-out connection; dropping it puts it back in the pool as it is (the caller
/// decides beforehand whether it may go back: see `PoolConnection`).
pub(crate) struct Object {
    conn: Option<Conn>,
    core: Arc<Core>,
}

impl Object {
    /// Takes the connection out of the pool for good; its room goes to a waiter or away.
    pub(crate) fn take(mut this: Object) -> Conn {
        let conn = this.conn.take().expect("connection present until dropped");
        this.core.release_room();
        conn
    }
}

impl std::ops::Deref for Object {
    type Target = PgConn;
    #[inline]
    fn deref(&self) -> &PgConn {
        self.conn
            .as_ref()
            .expect("connection present until dropped")
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.core.put_back(conn);
        }
    }
}
