//! Rerunning a transaction that failed with a serialization failure or a deadlock.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Transaction, TransactionOptions};
use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;

/// How [`AsyncDatabaseManager::transaction_with_retry`] retries: at most `max_attempts` runs,
/// waiting a jittered, exponentially growing delay between them.
///
/// The wait before retry `k` (1-based) is drawn uniformly from half to all of
/// `initial_delay × multiplier^(k-1)`, capped at `max_delay`; the jitter keeps transactions
/// that failed together from colliding again.
///
/// ```
/// use std::time::Duration;
/// let policy = pgdbm::RetryPolicy::new()
///     .max_attempts(10)
///     .initial_delay(Duration::from_millis(5))
///     .max_delay(Duration::from_millis(200));
/// assert_eq!(policy.max_attempts, 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Runs in all, the first included (default 5; 1 = no retry).
    pub max_attempts: u32,
    /// The delay before the first retry (default 10 ms), before jitter.
    pub initial_delay: Duration,
    /// The growth of the delay per retry (default 2.0).
    pub multiplier: f64,
    /// The longest delay (default 500 ms).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(10),
            multiplier: 2.0,
            max_delay: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// The defaults: 5 attempts, 10 ms doubling up to 500 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs in all, the first included; `0` counts as `1`.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The delay before the first retry.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The growth of the delay per retry.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The longest delay.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The wait after failed attempt `attempt` (1-based).
    fn delay(&self, attempt: u32) -> Duration {
        let growth = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let full = (self.initial_delay.as_secs_f64() * growth).min(self.max_delay.as_secs_f64());
        // Uniform in [full / 2, full]. A randomly keyed hasher is random enough for jitter and
        // saves a dependency.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(attempt);
        let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(full * (0.5 + unit / 2.0))
    }
}

/// Whether a failed transaction may succeed when run again: serialization failure (`40001`)
/// or deadlock (`40P01`).
fn is_retryable(error: &Error) -> bool {
    matches!(error.code(), Some("40001" | "40P01"))
}

impl AsyncDatabaseManager {
    /// Runs `f` in a transaction started with `options` and commits it, running it again from
    /// the start when it fails with a serialization failure (`40001`) or a deadlock
    /// (`40P01`), also when that surfaces at `COMMIT`. Before each retry the failed transaction
    /// is rolled back and a jittered, growing delay passes ([`RetryPolicy`]). Any other error
    /// is returned at once. When every attempt failed, the last error comes back inside
    /// [`Error::RetriesExhausted`], which says how many attempts ran (its SQLSTATE stays
    /// reachable through [`Error::code`]).
    ///
    /// `f` may run several times: keep side effects outside the database out of it, or make
    /// them idempotent. It gets the transaction to run its statements on and returns its work
    /// as a boxed future (`Box::pin(async move { … })`); the helper commits. (A boxed future
    /// rather than an async closure keeps the helper's future `Send`, so it can run in
    /// `tokio::spawn` and in web handlers.) Borrow what the closure needs before it, as below.
    ///
    /// ```no_run
    /// use pgdbm::{IsolationLevel, RetryPolicy, TransactionOptions};
    /// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    /// let serializable = TransactionOptions::new().isolation_level(IsolationLevel::Serializable);
    /// let amount = 25_i64;
    /// let balance: i64 = db
    ///     .transaction_with_retry(serializable, RetryPolicy::default(), |tx| Box::pin(async move {
    ///         let balance: i64 = tx
    ///             .fetch_value("SELECT coalesce(sum(amount), 0)::int8 FROM {{tables.ledger}}", &[])
    ///             .await?
    ///             .unwrap_or(0);
    ///         if balance >= amount {
    ///             tx.execute("INSERT INTO {{tables.ledger}} (amount) VALUES ($1)", &[&-amount])
    ///                 .await?;
    ///         }
    ///         Ok(balance)
    ///     }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction_with_retry<'env, T, F>(
        &self,
        options: TransactionOptions,
        policy: RetryPolicy,
        mut f: F,
    ) -> Result<T>
    where
        // `Transaction<'env>` rather than `'static`: `&'t mut Transaction<'env>` implies
        // `'env: 't`, which lets the future borrow from the caller's scope.
        F: for<'t> FnMut(&'t mut Transaction<'env>) -> BoxFuture<'t, Result<T>>,
    {
        let max_attempts = policy.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.transaction_with(options).await {
                Ok(tx) => {
                    let mut tx: Transaction<'env> = tx;
                    match f(&mut tx).await {
                        Ok(value) => match tx.commit().await {
                            Ok(()) => return Ok(value),
                            // A failed COMMIT has ended the transaction on the server.
                            Err(e) => e,
                        },
                        Err(e) => {
                            // Rolled back before anything else runs: the retry then never waits
                            // on this attempt's locks. If ROLLBACK fails, the connection is
                            // rolled back or closed in the background, as for a dropped one.
                            let _ = tx.rollback().await;
                            e
                        }
                    }
                }
                Err(e) => e,
            };
            if !is_retryable(&error) {
                return Err(error);
            }
            if attempt >= max_attempts {
                return Err(Error::RetriesExhausted {
                    attempts: attempt,
                    source: Box::new(error),
                });
            }
            let wait = policy.delay(attempt);
            tracing::debug!(
                target: "pgdbm::query",
                attempt,
                retry_in_ms = wait.as_secs_f64() * 1000.0,
                sqlstate = error.code().unwrap_or_default(),
                "transaction failed with a retryable error; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stay_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..=10 {
            let full = (0.010 * 2f64.powi(attempt as i32 - 1)).min(0.5);
            let d = policy.delay(attempt).as_secs_f64();
            assert!(d >= full / 2.0 - 1e-9 && d <= full + 1e-9, "{attempt}: {d}");
        }
        let draws: std::collections::HashSet<_> = (0..20).map(|_| policy.delay(3)).collect();
        assert!(draws.len() > 1, "delays are jittered");
    }
}
