//! Statement logging: one `tracing` event per statement pgdbm sends (queries, and the `BEGIN`,
//! `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`, `COMMIT`, `ROLLBACK` and clean-up statements it sends
//! itself), after the statement ends, on target `pgdbm::query`.
//!
//! Fields: `sql`, `params` (placeholders and the kind of each value, `[$1: text(12 chars),
//! $2: number]`; with `log_parameter_values`, short values, and longer ones as their length),
//! `duration_ms` (rounded to the microsecond), `outcome` (`ok`, `error`, `timeout`, or `abandoned` when the caller dropped
//! the call), and `sqlstate` on a server error. The server's message is not logged: its
//! detail can quote parameter values. The level is DEBUG, with or without `DB_DEBUG=1`
//! (Python pgdbm's switch); what shows is the subscriber's choice (`RUST_LOG=pgdbm::query=debug`).

use std::future::Future;

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::query_error;
pub(crate) use crate::connection::StatementLog;
use crate::error::Result;

/// Runs `fut`, which sends `sql`, and logs it with its duration.
pub(crate) async fn logged<'p, T>(
    sql: &str,
    params: impl Iterator<Item = &'p (dyn ToSql + Sync)>,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let log = StatementLog::start(sql, params);
    let result = fut.await;
    log.finish(&result);
    result
}

/// Sends statements without parameters by the simple protocol, logged; the driver's error.
pub(crate) async fn batch_execute_logged(
    client: &Client,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    let log = StatementLog::start(sql, std::iter::empty());
    let result = client.batch_execute(sql).await;
    log.finish_driver(result.as_ref());
    result
}

/// Sends a statement without parameters (transaction control, say) by the simple protocol,
/// logged, its error wrapped.
pub(crate) async fn batch_logged(client: &Client, sql: &str) -> Result<()> {
    batch_execute_logged(client, sql)
        .await
        .map_err(|e| query_error(e, sql, std::iter::empty()))
}
