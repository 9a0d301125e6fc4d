//! Statement deadlines without a timer per statement. The call stores its deadline in the
//! connection's [`Watchdog`]; the connection's driver task keeps one timer and re-arms it only
//! when it fires early (deadlines move later with every call, so about once per timeout
//! period) or when a call sets a deadline earlier than the armed one. When a deadline passes
//! the driver marks it expired and wakes the call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use crate::util::{epoch, now_micros};

/// No statement is being watched.
const NONE: u64 = 0;
/// The watched statement's deadline passed.
const EXPIRED: u64 = 1;
/// The driver's timer is not armed.
const UNARMED: u64 = u64::MAX;

/// One connection's statement deadline, shared by the calls and the driver task.
#[derive(Debug)]
pub(crate) struct Watchdog {
    /// [`NONE`], [`EXPIRED`], or the deadline in µs since the process epoch.
    deadline: AtomicU64,
    /// When the timer fires (µs since the epoch), or [`UNARMED`].
    armed: AtomicU64,
    /// The connection ended: the timer task ends too.
    closed: AtomicBool,
    call: AtomicWaker,
    driver: AtomicWaker,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            deadline: AtomicU64::new(NONE),
            armed: AtomicU64::new(UNARMED),
            closed: AtomicBool::new(false),
            call: AtomicWaker::new(),
            driver: AtomicWaker::new(),
        }
    }
}

fn micros(at: Instant) -> u64 {
    // Never NONE or EXPIRED.
    (at.saturating_duration_since(epoch()).as_micros() as u64).max(EXPIRED + 1)
}

impl Watchdog {
    /// Watches a statement that must end by `deadline`, until the guard is dropped.
    pub(crate) fn watch(&self, deadline: Instant) -> Watching<'_> {
        let at = micros(deadline);
        self.deadline.store(at, Ordering::Release);
        if at < self.armed.load(Ordering::Acquire) {
            // Earlier than the driver's timer: it re-arms when woken.
            self.driver.wake();
        }
        Watching(self)
    }

    /// Ends the timer task: the connection is gone.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.driver.wake();
    }

    /// The timer task's side, polled when its timer fires or a call wakes it: arms `timer`
    /// for the watched deadline when it is earlier than the armed one, and expires the
    /// deadline when the timer fires after it. `Ready` once the connection is closed.
    fn poll_timer(
        &self,
        mut timer: Pin<&mut tokio::time::Sleep>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        self.driver.register(cx.waker());
        if self.closed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        // At most twice: a timer that fired early is re-armed once for a later deadline.
        for _ in 0..2 {
            let at = self.deadline.load(Ordering::Acquire);
            let armed = self.armed.load(Ordering::Acquire);
            if at > EXPIRED && at < armed {
                timer.as_mut().reset(instant(at));
                self.armed.store(at, Ordering::Release);
            } else if armed == UNARMED {
                return Poll::Pending;
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer fired: for the watched deadline, or for one of a call that has ended.
            let at = self.deadline.load(Ordering::Acquire);
            if at > EXPIRED && now_micros() >= at {
                // Only if the same statement is still watched.
                if self
                    .deadline
                    .compare_exchange(at, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.call.wake();
                }
                self.armed.store(UNARMED, Ordering::Release);
                return Poll::Pending;
            }
            self.armed.store(UNARMED, Ordering::Release);
        }
        Poll::Pending
    }
}

/// The timer task of one connection: runs until the connection closes.
pub(crate) async fn keep(tap: Arc<super::Tap>) {
    let mut timer = std::pin::pin!(tokio::time::sleep(Duration::from_secs(3600)));
    std::future::poll_fn(|cx| tap.watchdog.poll_timer(timer.as_mut(), cx)).await
}

/// Closes the watchdog's timer task when dropped.
pub(crate) struct Closer(pub(crate) Arc<super::Tap>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.watchdog.close();
    }
}

fn instant(at: u64) -> tokio::time::Instant {
    (epoch() + Duration::from_micros(at)).into()
}

/// A watched statement; dropping it ends the watch.
pub(crate) struct Watching<'a>(&'a Watchdog);

impl Watching<'_> {
    /// Whether the deadline passed; if not, the call is woken when it does.
    pub(crate) fn poll_expired(&self, cx: &mut Context<'_>) -> bool {
        if self.0.deadline.load(Ordering::Acquire) == EXPIRED {
            return true;
        }
        self.0.call.register(cx.waker());
        self.0.deadline.load(Ordering::Acquire) == EXPIRED
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.deadline.store(NONE, Ordering::Release);
    }
}
