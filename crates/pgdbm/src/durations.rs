//! `Duration`-typed setters for the config's timeouts and delays. The fields keep Python
//! pgdbm's units (`f64` seconds, `Option<u64>` milliseconds) so that a config file reads the
//! same in both; code sets them with these.

use std::time::Duration;

use crate::config::DatabaseConfig;

fn millis(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl DatabaseConfig {
    /// The default per-call timeout (`command_timeout`), including the wait for a connection.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = pgdbm::DatabaseConfig::default()
    ///     .with_command_timeout(Duration::from_secs(5))
    ///     .with_statement_timeout(Some(Duration::from_secs(4)))
    ///     .with_lock_timeout(None);
    /// assert_eq!(config.command_timeout, 5.0);
    /// assert_eq!(config.statement_timeout_ms, Some(4000));
    /// assert_eq!(config.lock_timeout_ms, None);
    /// ```
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.as_secs_f64();
        self
    }

    /// Idle connections are closed after this (`max_inactive_connection_lifetime`), never below
    /// `min_connections`.
    pub fn with_max_inactive_connection_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_inactive_connection_lifetime = lifetime.as_secs_f64();
        self
    }

    /// The server's `statement_timeout` for the pool's sessions; `None` leaves the server's.
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout_ms = millis(timeout);
        self
    }

    /// The server's `idle_in_transaction_session_timeout`; `None` leaves the server's.
    pub fn with_idle_in_transaction_session_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_in_transaction_session_timeout_ms = millis(timeout);
        self
    }

    /// The server's `lock_timeout`; `None` leaves the server's.
    pub fn with_lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_timeout_ms = millis(timeout);
        self
    }

    /// The first connect retry's delay (`retry_delay`), then times `retry_backoff`.
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay.as_secs_f64();
        self
    }

    /// The longest delay between connect retries (`retry_max_delay`).
    pub fn with_retry_max_delay(mut self, delay: Duration) -> Self {
        self.retry_max_delay = delay.as_secs_f64();
        self
    }

    /// A replica lagging more is skipped (`max_replica_lag`); zero for no limit.
    pub fn with_max_replica_lag(mut self, lag: Duration) -> Self {
        self.max_replica_lag = lag.as_secs_f64();
        self
    }

    /// How long a replica read waits for this manager's last write (`read_your_writes_timeout`).
    pub fn with_read_your_writes_timeout(mut self, timeout: Duration) -> Self {
        self.read_your_writes_timeout = timeout.as_secs_f64();
        self
    }
}
