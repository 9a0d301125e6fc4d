//! The statement log: one `tracing` event per statement pgdbm sends (queries, and the `BEGIN`,
//! `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`, `COMMIT`, `ROLLBACK` and clean-up statements it sends
//! itself), after the statement ends, on target `pgdbm::query`.
//!
//! Fields: `sql`, `params` (placeholders and the kind of each value, `[$1: text(12 chars),
//! $2: number]`; with `log_parameter_values`, short values, and longer ones as their length),
//! `duration_ms` (rounded to the microsecond), `outcome` (`ok`, `error`, `timeout`, or `abandoned` when the caller dropped
//! the call), and `sqlstate` on a server error. The server's message is not logged: its
//! detail can quote parameter values. The level is DEBUG, with or without `DB_DEBUG=1`
//! (Python pgdbm's switch); what shows is the subscriber's choice (`RUST_LOG=pgdbm::query=debug`).

use std::time::Instant;

use tokio_postgres::types::ToSql;

use crate::error::{shorten_sql, Error, Result};
use crate::params::mask_params;

/// A driver error as a query error: the statement (shortened) and its parameters (masked).
pub(crate) fn query_error<'a>(
    source: tokio_postgres::Error,
    sql: &str,
    params: impl Iterator<Item = &'a (dyn ToSql + Sync)>,
) -> Error {
    Error::Query {
        sql: shorten_sql(sql),
        params: mask_params(params),
        source,
    }
}

/// One statement being timed for the log; does nothing when nobody listens.
pub(crate) struct StatementLog<'a> {
    sql: &'a str,
    params: String,
    /// `None` when logging is off (or the statement was already logged).
    started: Option<Instant>,
}

impl<'a> StatementLog<'a> {
    /// Starts timing `sql`, just before it is sent.
    pub(crate) fn start<'p>(
        sql: &'a str,
        params: impl Iterator<Item = &'p (dyn ToSql + Sync)>,
    ) -> Self {
        // An empty statement (sent to wait for a cancelled one to end) is not worth a line.
        let on =
            !sql.is_empty() && tracing::enabled!(target: "pgdbm::query", tracing::Level::DEBUG);
        StatementLog {
            sql,
            params: if on {
                mask_params(params)
            } else {
                String::new()
            },
            started: on.then(Instant::now),
        }
    }

    /// Logs the statement's end with the outcome of `result`.
    pub(crate) fn finish<T>(mut self, result: &Result<T>) {
        match result {
            Ok(_) => self.emit("ok", None),
            Err(e) if e.is_timeout() => self.emit("timeout", None),
            Err(e) => self.emit("error", e.code()),
        }
    }

    /// Logs the statement's end with the outcome of a driver call.
    pub(crate) fn finish_driver<T>(mut self, result: Result<T, &tokio_postgres::Error>) {
        match result {
            Ok(_) => self.emit("ok", None),
            Err(e) => self.emit("error", e.code().map(|c| c.code())),
        }
    }

    /// Logs the statement's end as timed out.
    pub(crate) fn timed_out(mut self) {
        self.emit("timeout", None);
    }

    fn emit(&mut self, outcome: &str, sqlstate: Option<&str>) {
        let Some(started) = self.started.take() else {
            return;
        };
        let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0;
        let (sql, params) = (self.sql, self.params.as_str());
        tracing::debug!(target: "pgdbm::query", sql, params = %params, duration_ms, outcome, sqlstate, "statement");
    }
}

impl Drop for StatementLog<'_> {
    fn drop(&mut self) {
        // Still unlogged: the caller dropped the call while the statement was in flight.
        self.emit("abandoned", None);
    }
}
