//! The query methods, written once for both the manager and transactions: template rendering,
//! logging, timeouts, error wrapping.

use std::future::Future;
use std::time::{Duration, Instant};

use postgres_types::FromSqlOwned;
use tokio_postgres::types::ToSql;

use crate::connection::{PgConn, Stale};
use crate::error::{shorten_sql, Error, Result};
use crate::record::Record;
use crate::replica::Intent;
use crate::template::{check_identifier, Templates};

// The macros first: `macro_rules!` are visible only to code after them.

/// Runs `$body` on one connection, inside its own transaction unless the executor already is
/// one: committed when it succeeds, rolled back when it fails. A timeout or a drop halfway
/// leaves the connection's state in a transaction, so it is rolled back (or closed) before it
/// can be used again.
macro_rules! all_or_nothing {
    ($ex:expr, $operation:expr, |$conn:ident| $body:expr) => {{
        let ex = $ex;
        let deadline = ex.deadline();
        let implicit_tx = !ex.in_transaction();
        let result = async {
            let conn = ex
                .conn(deadline, crate::replica::Intent::Write, $operation)
                .await?;
            let $conn: &PgConn = &conn;
            $conn
                .timed(deadline, $operation, || async {
                    if implicit_tx {
                        // In a transaction from before BEGIN is sent: dropped or timed out
                        // while it is on the wire, the connection must be rolled back.
                        $conn.enter_transaction();
                        if let Err(e) = batch_logged(
                            &$conn.client,
                            &$conn.begin_sql("BEGIN", ex.local_context()),
                        )
                        .await
                        {
                            // BEGIN failed: unless the server says no transaction is
                            // open, the release rolls it back.
                            if $conn.tap.status() == crate::connection::TxStatus::Idle {
                                $conn.leave_transaction();
                            }
                            return Err(e);
                        }
                    }
                    let outcome = logged($operation, std::iter::empty(), $body).await;
                    if implicit_tx {
                        let end = if outcome.is_ok() {
                            "COMMIT"
                        } else {
                            "ROLLBACK"
                        };
                        batch_logged(&$conn.client, end).await?;
                        $conn.leave_transaction();
                    }
                    outcome
                })
                .await
        }
        .await;
        if let Err(e) = &result {
            ex.note_error(e);
        }
        result
    }};
}

mod batch;
mod copy;
mod copy_in;
mod copy_out;
pub(crate) mod instrument;
mod log;
mod methods;
pub(crate) mod notify;
mod pipeline;
mod stream;
mod widen;

pub(crate) use batch::executemany;
pub(crate) use copy::copy_records_to_table;
pub(crate) use copy_in::copy_from;
pub(crate) use copy_out::{copy_out_sql, copy_to, copy_to_owned};
pub use copy_out::{CopyFormat, CopyOutStream};
pub(crate) use instrument::{Recorded, Recorder};
pub(crate) use log::{batch_execute_logged, batch_logged, logged, StatementLog};
pub(crate) use methods::query_methods;
pub(crate) use pipeline::run_pipeline;
pub use pipeline::{Handle, Pipeline, PipelineResults};
pub use stream::RecordStream;
pub(crate) use stream::{fetch_stream_owned, stream_rows, Owner};

/// The batch methods' future, boxed: generic over their rows, an unboxed one would make a
/// generic caller's future fail `tokio::spawn`'s `Send` check (a rustc limitation with
/// higher-ranked lifetimes).
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) use crate::replica::{ConnRef, Reroute};

/// Behind a transaction pooler a session-level change outside a transaction would stay on a
/// server connection other clients share, and no reset can reach that connection later.
fn refuse_session_change(sql: &str) -> Result<()> {
    if !crate::sql::Effects::of(sql).changes_session() {
        return Ok(());
    }
    Err(Error::config(
        "pooler",
        format!(
            "{:?} changes the session, and with pooler = \"transaction\" that change would stay \
             on a server connection other clients share. Use SET LOCAL (or set_config(..., true)) \
             inside a transaction, with_settings/with_role views, or tx.set_local",
            shorten_sql(sql)
        ),
    ))
}

fn is_unlogged_refusal(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "0A000" && db.message().contains("during recovery"))
}

/// `25006`: a read-only transaction refused a write.
fn is_read_only_refusal(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "25006")
}

/// What the query methods need from whoever runs them.
pub(crate) trait Runner: Sync {
    fn templates(&self) -> &Templates;
    /// The recorder (the query monitor) of the manager the call runs for.
    fn recorder(&self) -> Option<&std::sync::Arc<dyn Recorder>>;
    /// The pool the call runs on, for spans and metrics; `None` before `connect`.
    fn pool(&self) -> Option<crate::pool::Pool>;
    fn timeout(&self) -> Option<Duration>;
    /// A connection for one call that `intent`s to read or write with `sql`.
    fn conn(
        &self,
        deadline: Option<Instant>,
        intent: Intent,
        sql: &str,
    ) -> impl Future<Output = Result<ConnRef<'_>>> + Send;
    /// A connection for one call of `execute`, `fetch_*` or `execute_and_return_id`: on a
    /// multiplexing pool, a shared one when `sql` is session-neutral; else as [`conn`](Self::conn).
    fn call_conn(
        &self,
        deadline: Option<Instant>,
        intent: Intent,
        sql: &str,
    ) -> impl Future<Output = Result<ConnRef<'_>>> + Send {
        self.conn(deadline, intent, sql)
    }
    /// Inside a transaction: no implicit BEGIN/COMMIT, and errors abort the transaction.
    fn in_transaction(&self) -> bool;
    /// Called with every failed call's error.
    fn note_error(&self, _error: &Error) {}
    /// The `SET LOCAL`s (role, settings) each transaction of this executor starts with; a call
    /// outside a transaction then runs in one of its own.
    fn local_context(&self) -> Option<&str> {
        None
    }

    fn deadline(&self) -> Option<Instant> {
        self.timeout().map(|t| Instant::now() + t)
    }
}

pub(crate) use crate::connection::query_error;

/// Renders, logs, checks out a connection and runs `$body` under the call's deadline, through
/// the connection's state choke point ([`PgConn::timed`]).
macro_rules! run {
    ($ex:expr, $intent:expr, $query:expr, $params:expr, |$conn:ident, $sql:ident, $in_tx:ident| $body:expr) => {{
        let ex = $ex;
        let $sql: &str = &ex.templates().render($query)?;
        let params: &[&(dyn ToSql + Sync)] = $params;
        let deadline = ex.deadline();
        // A `with_settings`/`with_role` view runs each call in a transaction of its own.
        let context = ex.local_context().filter(|_| !ex.in_transaction());
        let pooled = !ex.in_transaction() && context.is_none();
        let $in_tx = !pooled;
        let result = async {
            let mut replaced = false;
            let mut rerouted = false;
            let mut intent = $intent;
            loop {
                let conn = ex.call_conn(deadline, intent, $sql).await?;
                let $conn: &PgConn = &conn;
                if pooled && $conn.shares_server() {
                    refuse_session_change($sql)?;
                }
                let mut replace = false;
                let log = StatementLog::start($sql, params.iter().copied());
                let r = $conn
                    .timed(deadline, $sql, || async {
                        if let Some(context) = context {
                            let begin = $conn.begin_sql("BEGIN", Some(context));
                            // Boxed: inline, this rare path would grow every call's future.
                            return Box::pin($conn.in_own_transaction(&begin, $body))
                                .await
                                .map_err(|(e, failed_begin)| match failed_begin {
                                    true => query_error(e, &begin, std::iter::empty()),
                                    false => query_error(e, $sql, params.iter().copied()),
                                });
                        }
                        let mut r = $body.await;
                        let mut retried = false;
                        // A cached statement went stale (the table or a type changed under it):
                        // the cache drops it, inside a transaction too; outside one, one retry
                        // re-prepares it, or runs on another connection if this one lost its
                        // named statements (see `forget_if_stale`).
                        while let Err(e) = &r {
                            // A replica refuses writes and unlogged tables by design: its
                            // connection stays.
                            if matches!(conn, ConnRef::Replica(..))
                                && (is_read_only_refusal(e) || is_unlogged_refusal(e))
                            {
                                break;
                            }
                            match $conn.forget_if_stale($sql, e) {
                                Stale::Retry if pooled && !retried => retried = true,
                                Stale::Replace if pooled && !replaced => {
                                    replace = true;
                                    break;
                                }
                                _ => break,
                            }
                            // Boxed: inline, this rare second run would add its own copy of
                            // the statement's future to every call's future.
                            r = Box::pin($body).await;
                        }
                        r.map_err(|e| query_error(e, $sql, params.iter().copied()))
                    })
                    .await;
                log.finish(&r);
                conn.settle(&r);
                if let Err(e) = &r {
                    if pooled && !rerouted {
                        match conn.reroute(e, $sql) {
                            Reroute::No => {}
                            // A replica that went away: once more, on another server.
                            Reroute::Elsewhere => {
                                rerouted = true;
                                continue;
                            }
                            // A statement that writes, refused by the replica (it wrote
                            // nothing): on the primary, counted as a write.
                            Reroute::Primary => {
                                rerouted = true;
                                intent = Intent::Write;
                                continue;
                            }
                        }
                    }
                }
                if !replace {
                    break r;
                }
                // `conn` (marked broken) goes back to the pool here and is replaced.
                replaced = true;
            }
        }
        .await;
        if let Err(e) = &result {
            ex.note_error(e);
        }
        result
    }};
}

pub(crate) async fn execute<E: Runner>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    run!(ex, Intent::Write, query, params, |conn, sql, in_tx| conn
        .execute(sql, params, in_tx))
}

pub(crate) async fn fetch_all<E: Runner>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Record>> {
    let rows = run!(ex, Intent::Read, query, params, |conn, sql, in_tx| conn
        .query(sql, params, in_tx))?;
    Ok(rows.into_iter().map(Record::new).collect())
}

pub(crate) async fn fetch_one<E: Runner>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Record>> {
    first_row(ex, Intent::Read, query, params).await
}

/// The one row of a query that must return exactly one; [`Error::RowCount`] otherwise.
pub(crate) async fn fetch_exactly_one<E: Runner>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Record> {
    let (row, rows) = run!(ex, Intent::Read, query, params, |conn, sql, in_tx| conn
        .query_counted(sql, params, in_tx))?;
    match (row, rows) {
        (Some(row), 1) => Ok(Record::new(row)),
        (_, rows) => Err(Error::RowCount {
            sql: shorten_sql(&ex.templates().render(query)?),
            rows,
        }),
    }
}

async fn first_row<E: Runner>(
    ex: &E,
    intent: Intent,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Record>> {
    let row = run!(ex, intent, query, params, |conn, sql, in_tx| conn
        .query_first(sql, params, in_tx))?;
    Ok(row.map(Record::new))
}

pub(crate) async fn fetch_value_at<E: Runner, T: FromSqlOwned>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    column: usize,
) -> Result<Option<T>> {
    value_at(ex, Intent::Read, query, params, column).await
}

async fn value_at<E: Runner, T: FromSqlOwned>(
    ex: &E,
    intent: Intent,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    column: usize,
) -> Result<Option<T>> {
    match first_row(ex, intent, query, params).await? {
        None => Ok(None),
        Some(row) => value_of(&row, column),
    }
}

/// Column `column` of `row`, `None` for SQL NULL.
pub(crate) fn value_of<T: FromSqlOwned>(row: &Record, column: usize) -> Result<Option<T>> {
    if column >= row.len() {
        return Err(Error::decode(
            column,
            "-",
            format!(
                "column index out of range: the query returns {} column(s)",
                row.len()
            ),
        ));
    }
    row.get::<Option<T>>(column)
}

/// The first row mapped by `f` (serde or `FromRow`), if any.
pub(crate) async fn fetch_one_mapped<E: Runner, T>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    f: fn(Record) -> Result<T>,
) -> Result<Option<T>> {
    fetch_one(ex, query, params).await?.map(f).transpose()
}

/// All rows mapped by `f` as they arrive.
pub(crate) async fn fetch_all_mapped<E: Runner, T>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
    f: fn(Record) -> Result<T>,
) -> Result<Vec<T>> {
    run!(ex, Intent::Read, query, params, |conn, sql, in_tx| conn
        .query_map(sql, params, f, in_tx))?
}

pub(crate) async fn execute_and_return_id<E: Runner, T: FromSqlOwned>(
    ex: &E,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<T> {
    let query = crate::sql::with_returning_id(query);
    // A write, whatever view runs it: never on a replica.
    match value_at::<E, T>(ex, Intent::Write, &query, params, 0).await? {
        Some(id) => Ok(id),
        None => Err(Error::decode(
            "id",
            "-",
            "the statement returned no row or a NULL id (did the INSERT insert nothing?)",
        )),
    }
}

/// `table_exists`'s query: `$1` the schema, `$2` the table.
pub(crate) const TABLE_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))";

pub(crate) async fn table_exists<E: Runner>(ex: &E, name: &str) -> Result<bool> {
    let (schema, table) = match name.split_once('.') {
        Some((s, t)) => (s.to_owned(), t),
        None => (ex.templates().schema().unwrap_or("public").to_owned(), name),
    };
    check_identifier(&schema, "schema")?;
    check_identifier(table, "table")?;
    // Unquoted table names fold to lower case in templates; do the same here.
    let table = table.to_ascii_lowercase();
    let exists: Option<bool> = fetch_value_at(ex, TABLE_EXISTS, &[&schema, &table], 0).await?;
    Ok(exists.unwrap_or(false))
}
