//! Observability: a `tracing` span per operation with OpenTelemetry's database attribute names,
//! an optional [`QueryMonitor`](MonitoredAsyncDatabaseManager), metrics through the `metrics`
//! facade (feature `metrics`), `EXPLAIN` as JSON, and a [`DatabaseDebugger`].
//!
//! Everything here is a wrapper around an operation's future. When no subscriber listens, no
//! monitor is attached and the `metrics` feature is off, the wrapper checks that once and awaits
//! the operation unchanged.

use std::future::Future;
use std::time::Instant;

use tokio_postgres::types::ToSql;
use tracing::Span;

use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;

mod call;
mod debugger;
mod explain;
#[cfg(feature = "metrics")]
mod metrics;
mod monitor;
mod span;

pub(crate) use call::{end, watch, Call, ObservedStream};
pub use debugger::{
    BlockingQuery, ConnectivityCheck, DatabaseDebugger, HealthReport, HealthStatus,
    LongRunningQuery, PoolCheck, TableSize,
};
pub(crate) use monitor::QueryMonitor;
pub use monitor::{MonitorConfig, MonitorMetrics, MonitoredAsyncDatabaseManager, QueryRecord};
pub(crate) use span::Method;

/// What an operation runs, for the span's `db.query.text` and the monitor's history.
#[derive(Clone, Copy)]
pub(crate) enum Text<'a> {
    /// A query with `{{tables.x}}` templates, rendered by the runner.
    Template(&'a str),
    /// `copy_records_to_table`'s table argument.
    CopyInto(&'a str),
    /// `copy_from_csv`'s table argument.
    CopyCsvInto(&'a str),
    /// `copy_to`'s source (a table or a query) and format.
    CopyOut(&'a str, crate::CopyFormat),
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
    pub(crate) fn copy_out(method: Method, source: &'a str, format: crate::CopyFormat) -> Self {
        Op {
            text: Text::CopyOut(source, format),
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
            Failure::Error(e) => span::error_type(e),
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
        match $crate::observe::Call::begin(ex, $op) {
            None => $fut.await,
            // Boxed: inline, the observed copy of the operation's future would double the
            // size of every call's future, observed or not.
            Some(call) => Box::pin(call.run(ex, $fut)).await,
        }
    }};
    (one: $ex:expr, $op:expr, $fut:expr $(,)?) => {{
        let ex = $ex;
        match $crate::observe::Call::begin(ex, $op) {
            None => $fut.await,
            Some(call) => Box::pin(call.run(ex, async { $fut.await.map($crate::observe::One) }))
                .await
                .map(|$crate::observe::One(v)| v),
        }
    }};
    (stream: $ex:expr, $op:expr, $fut:expr $(,)?) => {{
        let ex = $ex;
        match $crate::observe::Call::begin(ex, $op) {
            None => $fut.await.map($crate::observe::ObservedStream::plain),
            Some(call) => call.stream(ex, $fut).await,
        }
    }};
}
pub(crate) use observed;

/// One migration file, its rendered script run by `fut`.
pub(crate) async fn migration<T: Outcome>(
    manager: &AsyncDatabaseManager,
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
    call.run(manager, fut).await
}

/// The wait for a pool connection: its span (created under the caller's operation, closed when
/// the wait ends) and, with the metrics, its duration.
pub(crate) struct Acquiring {
    span: Span,
    started: Instant,
}

impl Acquiring {
    /// `None` when nothing observes.
    pub(crate) fn start(pool: &crate::Pool) -> Option<Acquiring> {
        // As in `Call::begin`: no span is built when no subscriber takes INFO.
        if !METRICS && !tracing::level_enabled!(tracing::Level::INFO) {
            return None;
        }
        // Only inside an operation: a checkout outside one (while connecting, say) would be a
        // stray root span.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            span::acquire_span()
        };
        if span.is_disabled() && !METRICS {
            return None;
        }
        if !span.is_disabled() {
            span::record_target(
                &span,
                &span::Target {
                    namespace: Some(&pool.inner.database),
                    server: Some(pool.server()),
                    schema: None,
                },
            );
        }
        Some(Acquiring {
            span,
            started: Instant::now(),
        })
    }

    pub(crate) fn end(this: Option<Acquiring>, pool: &crate::Pool, error: Option<&Error>) {
        let Some(this) = this else { return };
        if let Some(e) = error {
            span::record_error(&this.span, e);
        }
        #[cfg(feature = "metrics")]
        metrics::acquired(pool, this.started.elapsed(), error);
        #[cfg(not(feature = "metrics"))]
        let _ = (pool, this.started);
    }
}

fn serialize_millis<S: serde::Serializer>(
    d: &std::time::Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

fn serialize_secs<S: serde::Serializer>(
    d: &std::time::Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A count as a signed integer: OpenTelemetry's integer attributes are `i64`, and
/// `tracing-opentelemetry` exports unsigned values as strings.
fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
