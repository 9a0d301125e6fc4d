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
//!
//! Each connection has a home, a number below the maximum that it keeps for its life (see
//! [`home`](super::home)): callers of many schemas go to their own schema's home connection,
//! when the statement caches are too small for what the pool runs, so each connection prepares
//! a share of the statements instead of all of them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::home::{Homes, Homing, HOME_WAIT};
use super::manage::{ConnectFailure, PgManager};
use crate::connection::PgConn;

type Conn = Box<PgConn>;

/// A connection and its home.
struct Homed {
    home: usize,
    conn: Conn,
}

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
    /// Which schemas' callers go to their home connection, and when.
    pub(super) homing: Homing,
}

struct Slots {
    /// Oldest released first, so every connection takes its turn.
    idle: VecDeque<Homed>,
    size: usize,
    waiters: VecDeque<oneshot::Sender<Grant>>,
    homes: Homes<Grant>,
}

/// What a waiter is given.
enum Given {
    Conn(Homed),
    /// Room to open a connection in this home, counted in the size already.
    Room(usize),
}

/// Where a caller waits.
enum Wait {
    Closed,
    /// In line for the next connection released.
    Line(oneshot::Receiver<Grant>),
    /// For its home's connection, busy with one call now.
    Home(oneshot::Receiver<Grant>),
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
            Some(Given::Room(home)) => self.core.release_room(home),
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
                homes: Homes::new(max_size),
            }),
            closed: AtomicBool::new(false),
            homing: Homing::new(max_size),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn manager(&self) -> &PgManager {
        &self.manager
    }

    /// A connection: an idle one that is still reusable, else a new one while there is room,
    /// else the next one released (in the order callers asked). With `home` (a call of one
    /// statement, see [`Homing::home`]) and homing on, that home's connection first: idle, or
    /// waited for at most [`HOME_WAIT`] while it runs one call and its line is not full.
    pub(crate) async fn get(self: &Arc<Self>, home: Option<usize>) -> Result<Object, PoolError> {
        let mut want = home.filter(|_| self.homing.on(&self.manager));
        let in_call = want.is_some();
        loop {
            let (given, waited) = match self.next_or_wait(want) {
                Ok(given) => (given, false),
                Err(Wait::Closed) => return Err(PoolError::Closed),
                Err(Wait::Line(rx)) => match rx.await {
                    Ok(grant) => (grant.take(), true),
                    // Closed: the pool dropped every waiter.
                    Err(_) => return Err(PoolError::Closed),
                },
                Err(Wait::Home(rx)) => match tokio::time::timeout(HOME_WAIT, rx).await {
                    Ok(Ok(grant)) => (grant.take(), true),
                    Ok(Err(_)) => return Err(PoolError::Closed),
                    // Still busy: any connection will do. A grant sent meanwhile went back
                    // to the pool with the receiver.
                    Err(_) => {
                        want = None;
                        continue;
                    }
                },
            };
            match given {
                // Handed over after a wait but not fit to reuse: its room is this caller's,
                // who opens a connection in it rather than going back to the end of the line.
                Given::Conn(c) if waited && !self.manager.reusable(&c.conn) => {
                    let home = c.home;
                    drop(c);
                    return self.open(home, in_call).await;
                }
                Given::Conn(c) => {
                    if let Some(obj) = self.reuse(c, in_call).await {
                        return Ok(obj);
                    }
                }
                Given::Room(room) => return self.open(room, in_call).await,
            }
        }
    }

    /// An idle connection that can be handed out as it is: the oldest, or with `home` and
    /// homing on, that home's; `None` sends the caller to [`get`](Core::get), which also deals
    /// with connections that cannot.
    #[inline]
    pub(crate) fn try_idle(self: &Arc<Self>, home: Option<usize>) -> Option<Object> {
        if self.is_closed() {
            return None;
        }
        let want = home.filter(|_| self.homing.on(&self.manager));
        let in_call = want.is_some();
        let c = {
            let mut slots = self.lock();
            let at = match want {
                Some(h) => slots.idle.iter().position(|c| c.home == h)?,
                None => 0,
            };
            let ready = slots.idle.get(at).is_some_and(|c| {
                self.manager.reusable(&c.conn) && !self.manager.is_behind(&c.conn)
            });
            if !ready {
                return None;
            }
            // `remove(0)` costs more than a pop, and this is every call's path.
            if at == 0 {
                slots.idle.pop_front()?
            } else {
                slots.idle.remove(at)?
            }
        };
        Some(self.hand_out(c, in_call))
    }

    /// What is there now, or where to wait: with `want`, that home's connection, or room to
    /// open it, or a wait for it while it runs one call; else the oldest idle connection,
    /// room in any home, or the line.
    fn next_or_wait(&self, want: Option<usize>) -> Result<Given, Wait> {
        let mut slots = self.lock();
        // Under the lock: `close` sets the flag under it too, so no one joins the line after
        // it was cleared.
        if self.is_closed() {
            return Err(Wait::Closed);
        }
        if let Some(h) = want {
            if let Some(at) = slots.idle.iter().position(|c| c.home == h) {
                if let Some(c) = slots.idle.remove(at) {
                    return Ok(Given::Conn(c));
                }
            }
            if slots.homes.take(h) {
                slots.size += 1;
                return Ok(Given::Room(h));
            }
            if self.homing.in_call(h) {
                if let Some(rx) = slots.homes.wait_for(h) {
                    return Err(Wait::Home(rx));
                }
            }
        }
        if let Some(c) = slots.idle.pop_front() {
            return Ok(Given::Conn(c));
        }
        if slots.size < self.max_size {
            if let Some(h) = slots.homes.take_any() {
                slots.size += 1;
                return Ok(Given::Room(h));
            }
        }
        let (tx, rx) = oneshot::channel();
        slots.waiters.push_back(tx);
        Err(Wait::Line(rx))
    }

    /// Checks `c` out; `in_call`: for one call of one statement, so that callers of its home
    /// may wait for it.
    fn hand_out(self: &Arc<Self>, c: Homed, in_call: bool) -> Object {
        if in_call {
            self.homing.set_in_call(c.home, true);
        }
        Object {
            home: c.home,
            conn: Some(c.conn),
            core: self.clone(),
        }
    }

    /// `c` checked out, if it is still fit to reuse; else it is closed.
    async fn reuse(self: &Arc<Self>, c: Homed, in_call: bool) -> Option<Object> {
        if !self.manager.reusable(&c.conn) {
            self.discard(c);
            return None;
        }
        if self.manager.is_behind(&c.conn) {
            // Dropped halfway, a statement may be half prepared: the connection is closed.
            struct Pending<'a>(Option<Homed>, &'a Arc<Core>);
            impl Drop for Pending<'_> {
                fn drop(&mut self) {
                    if let Some(c) = self.0.take() {
                        self.1.discard(c);
                    }
                }
            }
            let mut pending = Pending(Some(c), self);
            if let Some(c) = &pending.0 {
                Box::pin(self.manager.catch_up(&c.conn)).await;
            }
            return pending.0.take().map(|c| self.hand_out(c, in_call));
        }
        Some(self.hand_out(c, in_call))
    }

    /// Opens a connection in `home`, room already counted; the room is given back if that
    /// fails or the caller gives up.
    async fn open(self: &Arc<Self>, home: usize, in_call: bool) -> Result<Object, PoolError> {
        struct Room<'a>(Option<&'a Arc<Core>>, usize);
        impl Drop for Room<'_> {
            fn drop(&mut self) {
                if let Some(core) = self.0 {
                    core.release_room(self.1);
                }
            }
        }
        let mut room = Room(Some(self), home);
        let conn = self.manager.create().await.map_err(PoolError::Backend)?;
        room.0 = None;
        Ok(self.hand_out(Homed { home, conn }, in_call))
    }

    /// Opens up to `n` connections now, one after another, as idle ones, without waiting for
    /// room; the first failure ends it and is returned.
    pub(crate) async fn open_idle(self: &Arc<Self>, n: usize) -> Result<usize, ConnectFailure> {
        let mut failure = None;
        let mut count = 0;
        // One at a time, each room reserved right before the future that gives it back if
        // dropped: a room counted for a future never polled would stay counted.
        for _ in 0..n {
            let home = {
                let mut slots = self.lock();
                if self.is_closed() || slots.size >= self.max_size {
                    break;
                }
                let Some(home) = slots.homes.take_any() else {
                    break;
                };
                slots.size += 1;
                home
            };
            match self.open(home, false).await {
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

    /// Back to the pool: to a caller waiting for its home, else to the first waiter still
    /// waiting, else to the idle queue.
    fn put_back(self: &Arc<Self>, c: Homed) {
        let mut slots = self.lock();
        if self.is_closed() {
            slots.size -= 1;
            slots.homes.free(c.home);
            drop(slots);
            drop(c);
            return;
        }
        match self.hand_over(&mut slots, Given::Conn(c)) {
            Some(Given::Conn(c)) => slots.idle.push_back(c),
            Some(Given::Room(_)) => unreachable!("a connection was handed over"),
            None => {}
        }
    }

    /// A connection went away: its room goes to a caller waiting for its home, else to the
    /// first waiter, else the size shrinks.
    fn release_room(self: &Arc<Self>, home: usize) {
        let mut slots = self.lock();
        if self.is_closed() || self.hand_over(&mut slots, Given::Room(home)).is_some() {
            slots.size -= 1;
            slots.homes.free(home);
        }
    }

    /// Gives `given` to the caller waiting for its home, else to the first waiter still
    /// waiting; returns it when there is none.
    fn hand_over(self: &Arc<Self>, slots: &mut Slots, mut given: Given) -> Option<Given> {
        let home = match &given {
            Given::Conn(c) => c.home,
            Given::Room(h) => *h,
        };
        loop {
            // A caller waiting for this home is one call: its callers may go on waiting.
            let (tx, in_call) = match slots.homes.waiter(home) {
                Some(tx) => (tx, true),
                None => match slots.waiters.pop_front() {
                    Some(tx) => (tx, false),
                    None => break,
                },
            };
            let grant = Grant {
                core: self.clone(),
                given: Some(given),
            };
            match tx.send(grant) {
                Ok(()) => {
                    self.homing.set_in_call(home, in_call);
                    return None;
                }
                // That waiter gave up: taken back out, so the grant does not give it back.
                Err(grant) => given = grant.take(),
            }
        }
        self.homing.set_in_call(home, false);
        Some(given)
    }

    /// Closes a connection that is not to be reused.
    fn discard(self: &Arc<Self>, c: Homed) {
        let home = c.home;
        drop(c);
        self.release_room(home);
    }

    /// Keeps the idle connections for which `keep` says so and closes the others; returns how
    /// many were closed.
    pub(crate) fn retain(self: &Arc<Self>, mut keep: impl FnMut(&PgConn) -> bool) -> usize {
        let removed: Vec<Homed> = {
            let mut slots = self.lock();
            let mut removed = Vec::new();
            let mut kept = VecDeque::with_capacity(slots.idle.len());
            for c in slots.idle.drain(..) {
                if keep(&c.conn) {
                    kept.push_back(c);
                } else {
                    removed.push(c);
                }
            }
            slots.idle = kept;
            removed
        };
        let n = removed.len();
        for c in removed {
            self.discard(c);
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
            waiting: slots.waiters.len() + slots.homes.waiting(),
        }
    }

    /// Closes the idle connections now and the others as they come back; waiters get
    /// [`PoolError::Closed`].
    pub(crate) fn close(&self) {
        let (idle, waiters, homing) = {
            let mut slots = self.lock();
            self.closed.store(true, Ordering::Release);
            let idle = std::mem::take(&mut slots.idle);
            slots.size -= idle.len();
            for c in &idle {
                slots.homes.free(c.home);
            }
            let homing = slots.homes.take_waiters();
            (idle, std::mem::take(&mut slots.waiters), homing)
        };
        drop((waiters, homing));
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
    home: usize,
    core: Arc<Core>,
}

impl Object {
    /// Takes the connection out of the pool for good; its room goes to a waiter or away.
    pub(crate) fn take(mut this: Object) -> Conn {
        let conn = this.conn.take().expect("connection present until dropped");
        this.core.release_room(this.home);
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
            self.core.put_back(Homed {
                home: self.home,
                conn,
            });
        }
    }
}
