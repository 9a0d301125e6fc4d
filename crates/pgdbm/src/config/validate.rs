//! Validation of a whole config, and the durations it derives.

use super::*;

impl DatabaseConfig {
    /// Checks everything that can be checked without I/O.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(schema) = &self.schema {
            validate_identifier(schema).map_err(|_| {
                Error::Schema(format!(
                    "schema {:?} is not a valid identifier: use letters, digits and underscores, \
                     starting with a letter or underscore, at most 63 characters (e.g. \"my_schema\")",
                    crate::template::shorten(schema)
                ))
            })?;
        }
        if self.max_connections == 0 {
            return Err(Error::config(
                "max_connections",
                "must be at least 1 (e.g. max_connections: 10)",
            ));
        }
        if self.min_connections > self.max_connections {
            return Err(Error::config(
                "min_connections",
                format!(
                    "min_connections ({}) must not exceed max_connections ({})",
                    self.min_connections, self.max_connections
                ),
            ));
        }
        self.ssl_mode()?;
        for (field, v) in [
            (
                "max_inactive_connection_lifetime",
                self.max_inactive_connection_lifetime,
            ),
            ("command_timeout", self.command_timeout),
            ("retry_delay", self.retry_delay),
            ("retry_max_delay", self.retry_max_delay),
            ("max_replica_lag", self.max_replica_lag),
            ("read_your_writes_timeout", self.read_your_writes_timeout),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::config(
                    field,
                    format!("must be a finite number of seconds >= 0, got {v}"),
                ));
            }
        }
        if !self.retry_backoff.is_finite() || self.retry_backoff < 1.0 {
            return Err(Error::config(
                "retry_backoff",
                format!("must be >= 1.0, got {}", self.retry_backoff),
            ));
        }
        if let Some(settings) = &self.server_settings {
            for name in settings.keys() {
                validate_setting_name(name)?;
            }
        }
        if let Some(path) = &self.shared_pool_search_path {
            for part in path.split(',') {
                validate_identifier(part.trim().trim_matches('"')).map_err(|_| {
                    Error::config(
                        "shared_pool_search_path",
                        "must be a comma-separated list of schema names, e.g. \"pg_catalog\"",
                    )
                })?;
            }
        }
        if self.connection_string.is_some() {
            self.pg_config()?;
        }
        if self.listen_connection_string.is_some() {
            self.listen_pg_config()?;
        }
        if self.direct_connection_string.is_some() {
            self.direct_config()?;
        }
        if self.pooler.shares_server_connections()
            && self.init_commands.as_ref().is_some_and(|c| !c.is_empty())
        {
            return Err(Error::config(
                "init_commands",
                "cannot be used with pooler = \"transaction\": a transaction pooler runs them on \
                 one server connection and the next transaction may run on another. Set such state \
                 on the role or database instead (ALTER ROLE ... IN DATABASE ... SET ...)",
            ));
        }
        if self.multiplexing && self.pooler.shares_server_connections() {
            return Err(Error::config(
                "multiplexing",
                "cannot be used with pooler = \"transaction\": a transaction pooler may hand each \
                 pipelined statement of a shared connection to a different server connection, \
                 and the statement cache and error isolation of multiplexing rely on one server \
                 session per connection. Turn one of them off (multiplexing already gives more \
                 throughput from fewer server connections)",
            ));
        }
        if self.multiplexing && self.statement_cache_size == 0 {
            return Err(Error::config(
                "multiplexing",
                "cannot be used with statement_cache_size = 0: without named statements each new \
                 SQL text learns its parameter types inside a BEGIN/ROLLBACK of its own, which \
                 on a shared connection would take in other callers' statements. Keep a \
                 statement cache (the default is 1000), or turn multiplexing off",
            ));
        }
        if self.multiplexing && self.reset_on_release == crate::ResetOnRelease::Always {
            return Err(Error::config(
                "multiplexing",
                "cannot be used with reset_on_release = \"always\": a shared connection carries \
                 many callers' statements at once and cannot be reset between them. Keep \
                 reset_on_release = \"auto\" (session-changing statements never share), or turn \
                 multiplexing off",
            ));
        }
        if self.listen_buffer_size == 0 {
            return Err(Error::config(
                "listen_buffer_size",
                "must be at least 1 (e.g. listen_buffer_size: 1024)",
            ));
        }
        for dsn in &self.read_replicas {
            super::replica_target(self, dsn)?;
        }
        Ok(())
    }

    pub(crate) fn ssl_mode(&self) -> Result<Option<SslMode>> {
        let mode = match self.ssl_mode.as_deref() {
            None if !self.ssl_enabled => return Ok(None),
            None => SslMode::VerifyFull,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some("disable") if !self.ssl_enabled => return Ok(None),
            Some(other) => {
                return Err(Error::config(
                    "ssl_mode",
                    format!(
                        "{other:?} is not supported: use \"require\", \"verify-ca\" or \"verify-full\" \
                         (with ssl_enabled: true)"
                    ),
                ))
            }
        };
        Ok(Some(mode))
    }

    pub(crate) fn command_timeout(&self) -> Option<Duration> {
        secs(self.command_timeout)
    }

    /// The `statement_timeout` a shared connection (multiplexing) runs with: the configured
    /// one, bounded by `command_timeout`. A shared connection never cancels, so the server
    /// itself must end a statement whose caller gave up.
    pub(crate) fn shared_statement_timeout_ms(&self) -> Option<u64> {
        let command = self
            .command_timeout()
            .map(|t| (t.as_millis() as u64).max(1));
        match (self.statement_timeout_ms, command) {
            // 0 turns the server's limit off.
            (Some(0), b @ Some(_)) => b,
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn idle_lifetime(&self) -> Option<Duration> {
        secs(self.max_inactive_connection_lifetime)
    }
}

fn validate_setting_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            "server_settings",
            format!(
                "{:?} is not a valid setting name (letters, digits, '_' and '.', e.g. \"work_mem\")",
                crate::template::shorten(name)
            ),
        ))
    }
}
