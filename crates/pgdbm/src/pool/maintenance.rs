//! Background upkeep of a pool: closing idle connections beyond `min_connections`, and
//! topping the pool back up to `min_connections` when connections are lost.
//!
//! A connection leaves the pool when the server ends it (`pg_terminate_backend`, a restart),
//! when it is discarded because its state was unknown or it could not be cancelled, when it
//! reaches `max_queries`, and when it is detached (migration locks, raw use). Each of these
//! signals the pool's [`Refill`], whose task reconnects with the pool's retry and backoff,
//! never above `max_connections` and without making any caller wait.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{ConnectFailure, PoolInner};
use crate::config::DatabaseConfig;
use crate::connection::Refill;
use crate::util::now_micros;

/// The pool's connect retry policy, reused for refills.
#[derive(Clone, Copy)]
pub(super) struct Backoff {
    attempts: u32,
    delay: f64,
    factor: f64,
    max_delay: f64,
}

impl Backoff {
    pub(super) fn new(config: &DatabaseConfig) -> Self {
        Backoff {
            attempts: config.retry_attempts,
            delay: config.retry_delay,
            factor: config.retry_backoff,
            max_delay: config.retry_max_delay,
        }
    }
}

/// Tops the pool up to `min_size` each time `refill` is signalled, until the pool is closed
/// or dropped.
pub(super) fn spawn_refill(pool: Weak<PoolInner>, refill: Arc<Refill>, backoff: Backoff) {
    tokio::spawn(async move {
        loop {
            refill.wait().await;
            let mut delay = backoff.delay;
            for attempt in 0..=backoff.attempts {
                // Only a weak handle while waiting: a dropped pool ends the task (its `Drop`
                // signals once more so that the task sees it gone).
                let Some(inner) = pool.upgrade() else { return };
                if inner.pool.is_closed() {
                    return;
                }
                let Err(failure) = top_up(&inner).await else {
                    break;
                };
                drop(inner);
                if !failure.is_retryable() || attempt == backoff.attempts {
                    tracing::warn!(
                        error = %failure,
                        "the pool could not reconnect up to min_connections; it tries again when \
                         another connection is lost or on the next idle check"
                    );
                    break;
                }
                let wait = delay.min(backoff.max_delay).max(0.0);
                tracing::warn!(
                    attempt = attempt + 1,
                    retry_in_secs = wait,
                    error = %failure,
                    "reconnecting the pool up to min_connections failed, retrying"
                );
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                delay *= backoff.factor;
            }
        }
    });
}

/// Drops dead connections, then opens as many as `min_size` lacks.
async fn top_up(inner: &PoolInner) -> Result<(), ConnectFailure> {
    inner.pool.retain(|conn| !conn.is_broken());
    let missing = inner.min_size.saturating_sub(inner.pool.status().size);
    if missing == 0 {
        return Ok(());
    }
    let opened = inner.pool.open_idle(missing).await?;
    tracing::debug!(opened, "topped the pool up to min_connections");
    Ok(())
}

/// Closes connections idle for longer than `lifetime`, keeping `min_size`, and drops dead
/// ones; the refill task replaces what is missing.
pub(super) fn spawn_reaper(pool: Weak<PoolInner>, lifetime: Duration) {
    let period = (lifetime / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(inner) = pool.upgrade() else { return };
            if inner.pool.is_closed() {
                return;
            }
            let size = inner.pool.status().size;
            let mut removable = size.saturating_sub(inner.min_size);
            let limit = lifetime.as_micros() as u64;
            let now = now_micros();
            let removed = inner.pool.retain(|conn| {
                // A dead connection is useless even to keep `min_connections`: it goes, and
                // the refill replaces it.
                if conn.is_broken() {
                    removable = removable.saturating_sub(1);
                    return false;
                }
                // Released since the last tick: idle from now on (the release itself does
                // not read the clock, to keep it off every call's path).
                let last_used = conn.last_used.load(Ordering::Relaxed);
                if last_used == crate::connection::RELEASED {
                    conn.last_used.store(now, Ordering::Relaxed);
                }
                let idle = now.saturating_sub(last_used.min(now));
                if removable > 0 && idle > limit {
                    removable -= 1;
                    false
                } else {
                    true
                }
            });
            if removed > 0 {
                tracing::debug!(closed = removed, "closed idle connections");
            }
            // Also a retry for a refill that gave up earlier (the server was down).
            if inner.pool.status().size < inner.min_size {
                inner.refill.signal();
            }
        }
    });
}
