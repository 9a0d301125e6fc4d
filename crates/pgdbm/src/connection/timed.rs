//! [`PgConn::timed`]'s future, written by hand: an `async fn` keeps the statement's future
//! twice (once as its argument, once where it is awaited), and this future wraps every
//! statement. The statement's future is made where it will stay, at the first poll, so it is
//! not moved on its way in either.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;

use super::reset::PendingReset;
use super::watchdog::Watching;
use super::PgConn;
use crate::error::{Error, Result};

pin_project! {
    /// A statement run through the session state's choke point (see [`PgConn::timed`]).
    #[project = TimedProj]
    pub(crate) enum Timed<'a, T, M, F, S> {
        /// On a shared connection (multiplexing).
        Shared { fut: Pin<Box<S>> },
        Exclusive {
            conn: &'a PgConn,
            deadline: Option<Instant>,
            operation: &'a str,
            make: Option<M>,
            #[pin]
            fut: Option<F>,
            stage: Stage<'a, T>,
        },
    }
}

pub(crate) enum Stage<'a, T> {
    /// Not polled yet: the state has not moved.
    Start,
    Running {
        started: Instant,
        watching: Option<Watching<'a>>,
        reset: Option<PendingReset<'a>>,
    },
    /// The statement ended; a reset sent ahead of it has not answered yet.
    Resetting {
        reset: PendingReset<'a>,
        outcome: Option<Result<T>>,
    },
    Done,
}

impl PgConn {
    /// Runs `fut`, one statement (or one all-or-nothing batch) on this connection, under
    /// `deadline`: the choke point of the session state. On expiry the error comes back at once;
    /// the connection is left cancelling, and whoever holds it hands it to [`recover`] when it
    /// is released, so the cancel and drain finish in the background, out of the pool.
    ///
    /// [`recover`]: PgConn::recover
    ///
    /// `make` makes the statement's future, once, when this future is first polled.
    pub(crate) fn timed<'a, T, M, F>(
        &'a self,
        deadline: Option<Instant>,
        operation: &'a str,
        make: M,
    ) -> Timed<'a, T, M, F, impl Future<Output = Result<T>> + 'a>
    where
        M: FnOnce() -> F + 'a,
        F: Future<Output = Result<T>> + 'a,
        T: 'a,
    {
        if self.is_shared() {
            return Timed::Shared {
                fut: Box::pin(self.timed_shared(deadline, operation, async move { make().await })),
            };
        }
        Timed::Exclusive {
            conn: self,
            deadline,
            operation,
            make: Some(make),
            fut: None,
            stage: Stage::Start,
        }
    }
}

impl<'a, T, M, F, S> Future for Timed<'a, T, M, F, S>
where
    M: FnOnce() -> F + 'a,
    F: Future<Output = Result<T>> + 'a,
    S: Future<Output = Result<T>>,
{
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let (conn, deadline, operation, make, mut fut, stage) = match self.project() {
            TimedProj::Shared { fut } => return fut.as_mut().poll(cx),
            TimedProj::Exclusive {
                conn,
                deadline,
                operation,
                make,
                fut,
                stage,
            } => (*conn, *deadline, *operation, make, fut, stage),
        };
        loop {
            match stage {
                Stage::Start => {
                    if !conn.try_begin_op() {
                        if let Err(e) = conn.begin_op() {
                            *stage = Stage::Done;
                            return Poll::Ready(Err(e));
                        }
                    }
                    if let Some(make) = make.take() {
                        fut.set(Some(make()));
                    }
                    *stage = Stage::Running {
                        started: Instant::now(),
                        // A reset left pending goes out first, in the same round trip.
                        reset: conn.queue_pending_reset(),
                        // No timer per statement: the connection's driver task keeps one.
                        watching: deadline.map(|d| conn.tap.watchdog.watch(d)),
                    };
                }
                Stage::Running {
                    started,
                    watching,
                    reset,
                } => {
                    let Some(running) = fut.as_mut().as_pin_mut() else {
                        unreachable!("made before running");
                    };
                    let outcome = match running.poll(cx) {
                        Poll::Ready(outcome) => outcome,
                        Poll::Pending => {
                            if watching.as_ref().is_some_and(|w| w.poll_expired(cx)) {
                                let after = started.elapsed();
                                *stage = Stage::Done;
                                conn.start_cancelling();
                                return Poll::Ready(Err(Error::Timeout {
                                    operation: crate::error::shorten_sql(operation),
                                    after,
                                }));
                            }
                            return Poll::Pending;
                        }
                    };
                    match reset.take() {
                        None => {
                            *stage = Stage::Done;
                            conn.end_op();
                            return Poll::Ready(outcome);
                        }
                        Some(reset) => {
                            *stage = Stage::Resetting {
                                reset,
                                outcome: Some(outcome),
                            };
                        }
                    }
                }
                Stage::Resetting { reset, outcome } => {
                    let reset = std::task::ready!(reset.as_mut().poll(cx));
                    let outcome = outcome.take().expect("kept until the reset answers");
                    *stage = Stage::Done;
                    let outcome = conn.after_pending_reset(reset, outcome);
                    conn.end_op();
                    return Poll::Ready(outcome);
                }
                Stage::Done => panic!("`Timed` polled after it completed"),
            }
        }
    }
}
