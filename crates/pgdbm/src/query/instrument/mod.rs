//! Every call is observed here, where it passes: a `tracing` span with OpenTelemetry's
//! database attribute names, the `metrics` feature's operation duration, and a record for the
//! [`Recorder`] the executor carries (the query monitor, which the `observe` module implements).
//!
//! Everything here is a wrapper around an operation's future. When no subscriber listens, no
//! recorder is attached and the `metrics` feature is off, the wrapper checks that once and
//! awaits the operation unchanged.

use std::future::Future;
use std::time::Duration;

use tokio_postgres::types::ToSql;

use super::Runner;
use crate::error::{Error, Result};

mod call;
#[cfg(feature = "metrics")]
mod metrics;
mod span;

pub(crate) use call::{end, watch, Call, ObservedStream};
pub(crate) use span::Method;

/// What keeps a record of each call: the query monitor. Defined here, where calls pass, and
/// implemented above (by `observe`), so that this layer knows nothing of monitors.
pub(crate) trait Recorder: Send + Sync {
    /// Whether records carry the call's (masked) arguments.
    fn records_args(&self) -> bool;
    /// One finished call.
    fn record(&self, call: Recorded);
}

/// A finished call, as a [`Recorder`] receives it.
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) query: String,
    pub(crate) args: Option<String>,
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    pub(crate) duration: Duration,
    pub(crate) rows: Option<u64>,
    pub(crate) error: Option<String>,
}

/// What an operation runs, for the span's `db.query.text` and the monitor's history.
#[derive(Clone, Copy)]
pub(crate) enum Text<'a> {
    /// A query with `{{tables.x}}` templates, rendered by the runner.
    Template(&'a str),
    /// `copy_records_to_table`'s table argument.
    CopyInto(&'a str),
    /// `copy_from_csv`'s table argument.
    CopyCsvInto(&'a str),
    /// `copy_to`'s source (a table or a query), and its statement built when asked for.
    CopyOut(&'a str, &'a (dyn Fn() -> Option<String> + Sync)),
    /// Text sent as it is (transaction control, a rendered migration).
    Raw(&'a str),
}

/// One call of a public method: what it runs and with which parameters.
#[derive(Clone, Copy)]
pub(crate) struct Op<'a> {
    pub(crate) method: Method,
    pub(crate) text: Text<'a>,
    pub(crate) params: &'a [&'a (dyn ToSql + Sync)],
    pub(crate) batch_size: Option<usize>,
}

impl<'a> Op<'a> {
    /// A transaction-control statement (`BEGIN`, `COMMIT`, `SAVEPOINT`…), sent as it is.
    pub(crate) fn control(sql: &'a str) -> Self {
        Op {
            text: Text::Raw(sql),
            ..Op::new(Method::of_control(sql), sql, &[])
        }
    }

    /// `COPY … TO STDOUT` of `source`.
    pub(crate) fn copy_out(
        method: Method,
        source: &'a str,
        sql: &'a (dyn Fn() -> Option<String> + Sync),
    ) -> Self {
        Op {
            text: Text::CopyOut(source, sql),
            ..Op::new(method, source, &[])
        }
    }

    pub(crate) fn new(
        method: Method,
        query: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> Self {
        Op {
            method,
            text: Text::Template(query),
            params,
            batch_size: None,
        }
    }
}

/// What a result says about rows, for `db.response.returned_rows` and the monitor.
pub(crate) trait Outcome {
    /// Rows returned (fetches) or affected (statements).
    fn rows(&self) -> Rows;
}

/// Rows of one operation.
#[derive(Clone, Copy, Default)]
pub(crate) enum Rows {
    #[default]
    Unknown,
    Returned(u64),
    Affected(u64),
}

impl Rows {
    fn count(self) -> Option<u64> {
        match self {
            Rows::Unknown => None,
            Rows::Returned(n) | Rows::Affected(n) => Some(n),
        }
    }
}

impl<T> Outcome for Vec<T> {
    fn rows(&self) -> Rows {
        Rows::Returned(self.len() as u64)
    }
}

impl<T> Outcome for Option<T> {
    fn rows(&self) -> Rows {
        Rows::Returned(self.is_some().into())
    }
}

impl Outcome for u64 {
    fn rows(&self) -> Rows {
        Rows::Affected(*self)
    }
}

impl Outcome for () {
    fn rows(&self) -> Rows {
        Rows::Unknown
    }
}

/// Wraps a value whose rows are known to be one (`execute_and_return_id`) or none.
pub(crate) struct One<T>(pub(crate) T);

impl<T> Outcome for One<T> {
    fn rows(&self) -> Rows {
        Rows::Returned(1)
    }
}

impl Outcome for i32 {
    fn rows(&self) -> Rows {
        Rows::Unknown
    }
}

impl Outcome for bool {
    fn rows(&self) -> Rows {
        Rows::Returned(1)
    }
}

/// Why a call did not succeed.
#[derive(Clone, Copy)]
pub(crate) enum Failure<'a> {
    Error(&'a Error),
    /// Its future was dropped before it finished (an outer timeout, a `select!`).
    Cancelled,
}

impl<'a> Failure<'a> {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn error_type(self) -> &'a str {
        match self {
            Failure::Error(e) => crate::otel::error_type(e),
            Failure::Cancelled => "cancelled",
        }
    }
}

/// Whether anything but spans wants a call's figures: the `metrics` feature.
const METRICS: bool = cfg!(feature = "metrics");

/// Runs one operation of a manager or transaction under its span, then records its duration,
/// rows and error in the span, the monitor and the metrics. When nothing observes it, the
/// operation's future is awaited right where the macro is, with no wrapper around it: the
/// methods' futures stay as small as they were, and no copy of them is added.
///
/// `one:` marks a value that is one row (`execute_and_return_id`), `stream:` a `fetch_stream`.
macro_rules! observed {
    ($ex:expr, $op:expr, $fut:expr $(,)?) => {{
        let ex = $ex;
        match $crate::query::instrument::Call::begin(ex, $op) {
            None => $fut.await,
            // Boxed: inline, the observed copy of the operation's future would double the
            // size of every call's future, observed or not.
            Some(call) => Box::pin(call.run($fut)).await,
        }
    }};
    (one: $ex:expr, $op:expr, $fut:expr $(,)?) => {{
        let ex = $ex;
        match $crate::query::instrument::Call::begin(ex, $op) {
            None => $fut.await,
            Some(call) => {
                Box::pin(call.run(async { $fut.await.map($crate::query::instrument::One) }))
                    .await
                    .map(|$crate::query::instrument::One(v)| v)
            }
        }
    }};
    (stream: $ex:expr, $op:expr, $fut:expr $(,)?) => {{
        let ex = $ex;
        match $crate::query::instrument::Call::begin(ex, $op) {
            None => $fut
                .await
                .map($crate::query::instrument::ObservedStream::plain),
            Some(call) => call.stream($fut).await,
        }
    }};
}
pub(crate) use observed;

/// One migration file, its rendered script run by `fut`.
pub(crate) async fn migration<E: Runner, T: Outcome>(
    manager: &E,
    file: &str,
    sql: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let op = Op {
        text: Text::Raw(sql),
        ..Op::new(Method::Migration, sql, &[])
    };
    let Some(call) = Call::begin(manager, op) else {
        return fut.await;
    };
    call.span().record("pgdbm.migration", file);
    // Over the statement's own name: the file says more than `CREATE`.
    call.span()
        .record("otel.name", format!("migration {file}").as_str());
    call.run(fut).await
}
