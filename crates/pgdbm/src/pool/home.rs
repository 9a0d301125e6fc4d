//! Homes: every connection of a pool has a number below the maximum, its home, kept for its
//! life and taken over by the connection that replaces it.
//!
//! Managers of many schemas over one pool render each statement once per schema, so the pool
//! runs many times more texts than one schema would. When the per-connection statement caches
//! are too small for that (one of them has evicted a statement) and more than one schema's
//! managers use the pool, a call of one statement goes to its schema's home connection: idle,
//! or waited for at most [`HOME_WAIT`] while it runs one call and fewer than [`HOME_LINE`]
//! callers wait for it.
//! Each connection then prepares its schemas' statements instead of everyone's, and most calls
//! find theirs prepared. Calls of one schema alone, transactions, and checkouts for a
//! connection of one's own never wait for a home.

use std::collections::VecDeque;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use super::manage::PgManager;
use crate::util::FxHasher;

/// The longest a call waits for its home's connection before it takes any other: longer than
/// a few short statements run, shorter than a long one.
pub(super) const HOME_WAIT: Duration = Duration::from_millis(5);

/// The most callers waiting for one home: a busy schema's calls overflow to the other
/// connections rather than queue behind one.
const HOME_LINE: usize = 4;

/// Which homes are taken, and the callers waiting for each home's connection (at most
/// [`HOME_LINE`]: the others take any connection). Kept under the pool's lock.
pub(super) struct Homes<G> {
    used: Vec<bool>,
    waiters: Vec<VecDeque<oneshot::Sender<G>>>,
}

impl<G> Homes<G> {
    pub(super) fn new(max_size: usize) -> Self {
        Homes {
            used: vec![false; max_size],
            waiters: (0..max_size).map(|_| VecDeque::new()).collect(),
        }
    }

    /// Takes home `h` for a new connection, if no connection has it.
    pub(super) fn take(&mut self, h: usize) -> bool {
        match self.used.get_mut(h) {
            Some(used) if !*used => {
                *used = true;
                true
            }
            _ => false,
        }
    }

    /// Takes the first free home.
    pub(super) fn take_any(&mut self) -> Option<usize> {
        let h = self.used.iter().position(|used| !used)?;
        self.used[h] = true;
        Some(h)
    }

    pub(super) fn free(&mut self, h: usize) {
        if let Some(used) = self.used.get_mut(h) {
            *used = false;
        }
    }

    /// A place to wait for home `h`'s connection, unless its line is full.
    pub(super) fn wait_for(&mut self, h: usize) -> Option<oneshot::Receiver<G>> {
        let line = self.waiters.get_mut(h)?;
        line.retain(|tx| !tx.is_closed());
        if line.len() >= HOME_LINE {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        line.push_back(tx);
        Some(rx)
    }

    /// The first caller waiting for home `h`, taken out.
    pub(super) fn waiter(&mut self, h: usize) -> Option<oneshot::Sender<G>> {
        self.waiters.get_mut(h)?.pop_front()
    }

    /// Callers still waiting for a home.
    pub(super) fn waiting(&mut self) -> usize {
        let mut n = 0;
        for line in &mut self.waiters {
            line.retain(|tx| !tx.is_closed());
            n += line.len();
        }
        n
    }

    /// Every caller waiting for a home, taken out (the pool is closing).
    pub(super) fn take_waiters(&mut self) -> Vec<oneshot::Sender<G>> {
        self.waiters.iter_mut().flat_map(std::mem::take).collect()
    }
}

/// What decides whether calls go home, read without the pool's lock.
pub(crate) struct Homing {
    /// Per home: its connection is out for one call of one statement.
    in_call: Box<[AtomicBool]>,
    /// The first schema's hash, made odd so that 0 means none yet.
    first: AtomicU64,
    /// Managers of more than one schema use the pool.
    many: AtomicBool,
}

impl Homing {
    pub(super) fn new(max_size: usize) -> Self {
        Homing {
            in_call: (0..max_size).map(|_| AtomicBool::new(false)).collect(),
            first: AtomicU64::new(0),
            many: AtomicBool::new(false),
        }
    }

    /// The home of `schema`'s calls; counts the schema among the pool's.
    pub(crate) fn home(&self, schema: &str) -> Option<usize> {
        let n = self.in_call.len() as u64;
        if n < 2 {
            return None;
        }
        let hash = BuildHasherDefault::<FxHasher>::default().hash_one(schema) | 1;
        match self
            .first
            .compare_exchange(0, hash, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(first) if first != hash => self.many.store(true, Ordering::Release),
            Err(_) => {}
        }
        // The high bits: FxHash mixes them best.
        Some(((hash >> 32) % n) as usize)
    }

    /// Whether calls go home now.
    #[inline]
    pub(super) fn on(&self, manager: &PgManager) -> bool {
        self.many.load(Ordering::Relaxed) && manager.spec.families.evicted()
    }

    pub(super) fn in_call(&self, h: usize) -> bool {
        self.in_call
            .get(h)
            .is_some_and(|b| b.load(Ordering::Relaxed))
    }

    #[inline]
    pub(super) fn set_in_call(&self, h: usize, value: bool) {
        // Read first: a pool of one schema never sets it, and a store would dirty the line
        // that every release shares.
        if let Some(b) = self.in_call.get(h) {
            if b.load(Ordering::Relaxed) != value {
                b.store(value, Ordering::Relaxed);
            }
        }
    }
}
