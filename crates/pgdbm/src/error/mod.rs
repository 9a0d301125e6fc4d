//! The one error type of the crate, with portable kinds and the server's SQLSTATE.

use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in pgdbm.
///
/// Variants mirror Python pgdbm's exception hierarchy. Server errors keep their SQLSTATE,
/// constraint and detail, reachable through [`Error::sqlstate`], [`Error::as_db_error`] and the
/// portable [`Error::kind`]. Messages never contain a password or a long parameter value.
///
/// ```
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// match db.execute("INSERT INTO {{tables.users}} (email) VALUES ($1)", &[&"a@x.org"]).await {
///     Err(e) if e.is_unique_violation() => println!("already there: {:?}", e.constraint()),
///     other => { other?; }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; `field` names it.
    #[error("invalid configuration `{field}`: {message}")]
    Configuration {
        /// The offending `DatabaseConfig` field.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The server could not be reached (after retries, where retrying made sense).
    #[error(
        "could not connect to PostgreSQL at {addr}/{database} after {attempts} attempt(s): {message}\n\
         Troubleshooting: is the server running and accepting TCP connections on {addr}? \
         Are the user, password and database right? Is TLS required (ssl_enabled / ssl_mode)? \
         Check pg_hba.conf and the server log.",
        addr = server_label(host, *port)
    )]
    Connection {
        /// Host (or socket directory) tried; with several hosts, every `host:port` tried,
        /// comma-separated, in order.
        host: String,
        /// Port tried.
        port: u16,
        /// Database name.
        database: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure, masked.
        message: String,
        /// The underlying driver error, if any.
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// The pool is not usable in this way: not connected, closed, or external. (Waiting for a
    /// free connection in vain is [`Error::AcquireTimeout`]; a refused new connection is
    /// [`Error::Connection`] with the server's SQLSTATE.)
    #[error("pool error: {0}")]
    Pool(String),

    /// The server (or the driver) rejected a query.
    #[error("{}", display_query(sql, source))]
    Query {
        /// The rendered SQL (templates applied), shortened when very long; empty when the
        /// error came from the raw client through `From<tokio_postgres::Error>`.
        sql: String,
        /// The parameters, masked: short values shown, long ones as their length.
        params: String,
        /// The driver error; `as_db_error()` gives the server's fields.
        #[source]
        source: tokio_postgres::Error,
    },

    /// An invalid schema, table or other identifier, or a malformed template placeholder.
    #[error("invalid identifier: {0}")]
    Schema(String),

    /// A migration failed; `file` names it when one file is at fault.
    #[error("migration failed{}: {message}", file.as_deref().map(|f| format!(" in {f}")).unwrap_or_default())]
    Migration {
        /// The migration file at fault, if any.
        file: Option<String>,
        /// What went wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<Error>>,
    },

    /// A call did not finish in time. The error comes back at the deadline; the query is
    /// cancelled on the server in the background, and its connection is reused only once the
    /// server has confirmed it idle (inside a transaction, the transaction can only roll back).
    #[error("{operation} timed out after {:?}; the query is being cancelled on the server. Raise the limit with `with_timeout` or `command_timeout`.", after)]
    Timeout {
        /// What timed out (a shortened SQL text).
        operation: String,
        /// The limit that was exceeded.
        after: Duration,
    },

    /// No pooled connection became free before the call's deadline. No query was sent, so
    /// nothing was cancelled. [`Error::is_timeout`] is true, [`Error::kind`] is
    /// [`ErrorKind::Timeout`].
    #[error("{}", display_acquire_timeout(*after, *size, *max_size, *waiting))]
    AcquireTimeout {
        /// How long the call waited.
        after: Duration,
        /// Connections open when it gave up.
        size: usize,
        /// `max_connections`.
        max_size: usize,
        /// Other tasks waiting for a connection at that moment.
        waiting: usize,
    },

    /// A transaction was used wrongly (for example after it failed).
    #[error("transaction error: {0}")]
    Transaction(String),

    /// A transaction run by
    /// [`transaction_with_retry`](crate::AsyncDatabaseManager::transaction_with_retry) failed
    /// with a serialization failure or deadlock on every one of its `attempts`. `source` is the
    /// last error; [`Error::code`] and [`Error::kind`] report its SQLSTATE.
    #[error(
        "the transaction failed on all {attempts} attempt(s) with a serialization failure or \
         deadlock; the last error: {source}. Allow more attempts with RetryPolicy::max_attempts, \
         or reduce the contention"
    )]
    RetriesExhausted {
        /// How many times the transaction ran.
        attempts: u32,
        /// The error of the last attempt.
        #[source]
        source: Box<Error>,
    },

    /// A column could not be decoded into the requested Rust type.
    #[error("cannot decode column `{column}` of PostgreSQL type `{pg_type}`: {message}")]
    Decode {
        /// Column name (or index when the name is unknown).
        column: String,
        /// The column's PostgreSQL type name.
        pg_type: String,
        /// Why decoding failed.
        message: String,
    },

    /// A test database could not be created, used or dropped.
    #[error("test database error: {0}")]
    TestDatabase(String),

    /// A notification that cannot be sent, caught before anything reaches the server (so a
    /// transaction it was meant for is not aborted): a payload of 8000 bytes or more, or one
    /// containing a NUL byte.
    #[error("cannot send notification: {0}")]
    Notify(String),

    /// Reading the data to send failed (the reader given to `copy_from_csv`, say); nothing
    /// was written.
    #[error("{operation} failed: {source}")]
    Io {
        /// What was being read.
        operation: String,
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },

    /// Yielded by a [`Listener`](crate::Listener): notifications may have been missed, because
    /// its connection was lost and re-established, or because the consumer fell behind and its
    /// buffer overflowed. `reason` says which. The stream goes on after it; re-read whatever
    /// state the notifications were about. [`Error::kind`] is
    /// [`ErrorKind::NotificationsMissed`].
    #[error("notifications may have been missed: {reason}")]
    NotificationsMissed {
        /// Why, and for how long or how many.
        reason: String,
    },

    /// A replica read found no healthy read replica, and `replica_fallback` is `"error"`.
    /// [`Error::kind`] is [`ErrorKind::NoReplica`].
    #[error(
        "no healthy read replica for this read ({reasons}); with replica_fallback = \"primary\" \
         such reads go to the primary"
    )]
    NoReplica {
        /// Each replica (`host:port`) with why it was skipped.
        reasons: String,
    },

    /// A [`Pipeline`](crate::Pipeline) did not finish in time. It was cancelled as a whole;
    /// `completed` lists the statements that had finished (outside a transaction, each of
    /// those is committed). On a shared connection (multiplexing) nothing is cancelled: the
    /// statements not listed may still run, and their answers are discarded.
    /// [`Error::is_timeout`] is true, [`Error::kind`] is [`ErrorKind::Timeout`].
    #[error(
        "a pipeline of {statements} statement(s) timed out after {after:?}; {}; the rest is \
         being cancelled on the server (on a shared connection it is left to finish, its \
         answers discarded). Raise the limit with `with_timeout` or `command_timeout`.",
        describe_completed(completed)
    )]
    PipelineTimeout {
        /// The limit that was exceeded.
        after: Duration,
        /// How many statements the pipeline held.
        statements: usize,
        /// The positions (from 0) of the statements that had completed.
        completed: Vec<usize>,
    },

    /// A statement of a [`Pipeline`](crate::Pipeline) inside a transaction did not run: the
    /// statement at `failed` failed first and aborted the transaction. [`Error::kind`] is
    /// [`ErrorKind::PipelineAborted`].
    #[error(
        "statement {statement} of the pipeline did not run: statement {failed} failed first and \
         aborted the transaction"
    )]
    PipelineAborted {
        /// This statement's position (from 0).
        statement: usize,
        /// The position of the statement whose failure aborted the transaction.
        failed: usize,
    },

    /// A [`Pipeline`](crate::Pipeline)'s results were read wrongly (a handle of another
    /// pipeline).
    #[error("pipeline error: {0}")]
    Pipeline(String),

    /// A call on a shared (multiplexed) connection did not finish in time. The error comes
    /// back at the deadline, but nothing is cancelled: a cancel request would stop whichever
    /// statement the shared connection runs, perhaps another caller's. The statement runs on
    /// to its end, or until the server's `statement_timeout` (`command_timeout`), and its
    /// result is discarded. [`Error::is_timeout`] is true, [`Error::kind`] is
    /// [`ErrorKind::Timeout`].
    #[error(
        "{operation} timed out after {after:?} on a shared (multiplexed) connection; it was not \
         cancelled and may still complete on the server, within `command_timeout`. Raise the \
         limit with `with_timeout` or `command_timeout`."
    )]
    SharedTimeout {
        /// What timed out (a shortened SQL text).
        operation: String,
        /// The limit that was exceeded.
        after: Duration,
    },

    /// The shared (multiplexed) connection a call's statement was on was lost: the server
    /// ended it, or it stalled (no answer long past a statement's deadline) and was closed.
    /// [`Error::may_have_run`] says whether the statement may have run (and, outside a
    /// transaction, committed). [`Error::kind`] is [`ErrorKind::ConnectionLost`].
    #[error(
        "{operation}: the shared connection was lost ({reason}); {}",
        if *may_have_run { "the statement may have run" } else { "the statement did not run" }
    )]
    ConnectionLost {
        /// The statement (a shortened SQL text).
        operation: String,
        /// Whether the statement may have run.
        may_have_run: bool,
        /// Why the connection was lost.
        reason: String,
    },

    /// `fetch_exactly_one*` found no row, or more than one.
    #[error(
        "expected exactly one row, but the query returned {}\n  sql: {sql}",
        match rows { 0 => "no row".to_owned(), n => format!("{n} rows") }
    )]
    RowCount {
        /// The rendered SQL, shortened when very long.
        sql: String,
        /// How many rows the query returned.
        rows: u64,
    },
}

/// Portable error kinds that application code can branch on, whatever the SQLSTATE detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `23505`
    UniqueViolation,
    /// `23503`
    ForeignKeyViolation,
    /// `23502`
    NotNullViolation,
    /// `23514`
    CheckViolation,
    /// `40001`
    SerializationFailure,
    /// `40P01`
    DeadlockDetected,
    /// `57014`: cancelled, including by a timeout.
    QueryCanceled,
    /// `42P01`
    UndefinedTable,
    /// `42703`
    UndefinedColumn,
    /// `42601`
    SyntaxError,
    /// A call timed out: [`Error::Timeout`] (the query was cancelled),
    /// [`Error::SharedTimeout`] (on a shared connection, not cancelled) or
    /// [`Error::AcquireTimeout`] (no connection became free).
    Timeout,
    /// A [`Listener`](crate::Listener) may have missed notifications
    /// ([`Error::NotificationsMissed`]); its stream goes on.
    NotificationsMissed,
    /// No read replica was healthy and `replica_fallback` is `"error"` ([`Error::NoReplica`]).
    NoReplica,
    /// `fetch_exactly_one*` found no row, or several ([`Error::RowCount`]).
    RowCount,
    /// A pipelined statement did not run because an earlier one aborted the transaction
    /// ([`Error::PipelineAborted`]).
    PipelineAborted,
    /// A shared (multiplexed) connection was lost while the call's statement was on it
    /// ([`Error::ConnectionLost`]).
    ConnectionLost,
    /// Any other server error.
    OtherDatabase,
    /// Not a server error.
    Other,
}

/// The server's message, or the driver error with its causes (the TLS reason, the I/O error).
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

const MAX_SQL_IN_ERROR: usize = 1000;

fn describe_completed(completed: &[usize]) -> String {
    match completed {
        [] => "no statement had completed".to_owned(),
        [one] => format!("statement {one} had completed"),
        many => format!(
            "statements {} had completed",
            many.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn display_acquire_timeout(
    after: Duration,
    size: usize,
    max_size: usize,
    waiting: usize,
) -> String {
    let why = if size >= max_size {
        format!("the pool is exhausted ({size}/{max_size} connections open, all in use")
    } else {
        format!("opening a new connection took too long ({size}/{max_size} connections open")
    };
    format!(
        "no connection became free within {after:?}: {why}, {waiting} other task(s) waiting); \
         no query was sent. Return connections sooner (transactions, streams, acquire()), raise \
         max_connections, or raise the limit with `with_timeout` or `command_timeout`."
    )
}

/// Longest text of one cause shown: a cause (a custom `ToSql` error, say) may quote the value.
const MAX_CAUSE_IN_ERROR: usize = 200;

fn display_query(sql: &str, source: &tokio_postgres::Error) -> String {
    // No SQL when the error came from the raw client through `From`.
    let head = if sql.is_empty() {
        "database error"
    } else {
        "query failed"
    };
    let mut s = match source.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{head}: {}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(d) = db.detail() {
                s.push_str("\n  detail: ");
                s.push_str(d);
            }
            if let Some(h) = db.hint() {
                s.push_str("\n  hint: ");
                s.push_str(h);
            }
            s
        }
        // The driver's own text names only the step ("error serializing parameter 0"); the
        // reason is in its causes.
        None => format!("{head}: {}", with_causes(source)),
    };
    if !sql.is_empty() {
        s.push_str("\n  sql: ");
        s.push_str(sql);
    }
    s
}

/// `error` followed by the text of each cause not already shown, each cut to a bounded length.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&shorten(&part, MAX_CAUSE_IN_ERROR));
        }
        cause = c.source();
    }
    text
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

pub(crate) fn shorten_sql(sql: &str) -> String {
    if sql.len() <= MAX_SQL_IN_ERROR {
        return sql.to_owned();
    }
    let mut end = MAX_SQL_IN_ERROR;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &sql[..end], sql.len())
}

/// For code that uses the raw driver client (a [`PoolConnection`](crate::PoolConnection)
/// derefs to it): `?` turns its errors into [`Error::Query`] with no SQL text, keeping the
/// SQLSTATE and [`kind`](Error::kind).
///
/// ```no_run
/// # async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
/// let conn = db.acquire().await?;
/// conn.batch_execute("LISTEN jobs").await?;
/// # Ok(()) }
/// ```
impl From<tokio_postgres::Error> for Error {
    fn from(source: tokio_postgres::Error) -> Self {
        Error::Query {
            sql: String::new(),
            params: String::new(),
            source,
        }
    }
}

/// `host:port`, or the list of `host:port` pairs that a multi-host connection tried.
fn server_label(host: &str, port: u16) -> String {
    if host.contains(',') {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

mod access;
#[cfg(test)]
mod tests;
