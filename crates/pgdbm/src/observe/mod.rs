//! Observability: a `tracing` span per operation with OpenTelemetry's database attribute names,
//! an optional [`QueryMonitor`](MonitoredAsyncDatabaseManager), metrics through the `metrics`
//! facade (feature `metrics`), `EXPLAIN` as JSON, and a [`DatabaseDebugger`].
//!
//! Everything here is a wrapper around an operation's future. When no subscriber listens, no
//! monitor is attached and the `metrics` feature is off, the wrapper checks that once and awaits
//! the operation unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::Stream;
use tokio_postgres::types::ToSql;
use tracing::{Instrument, Span};

use crate::error::{Error, Result};
use crate::manager::AsyncDatabaseManager;
use crate::query::Runner;

mod classify;
mod debugger;
mod explain;
#[cfg(feature = "metrics")]
mod metrics;
mod monitor;
mod span;

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
            Some(call) => call.run(ex, $fut).await,
        }
    }};
    (one: $ex:expr, $op:expr, $fut:expr $(,)?) => {{
        let ex = $ex;
        match $crate::observe::Call::begin(ex, $op) {
            None => $fut.await,
            Some(call) => call
                .run(ex, async { $fut.await.map($crate::observe::One) })
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

/// For code that cannot wrap its future (transaction control): a watch started before the
/// statement and [`end`]ed after it. `None` when nothing observes.
pub(crate) fn watch<'e, E: Runner>(ex: &'e E, op: Op<'_>) -> Option<Watch<'e, E>> {
    Call::begin(ex, op).map(|call| Watch::new(ex, call))
}

/// Finishes a [`watch`] with the statement's result.
pub(crate) fn end<E: Runner, T: Outcome>(watch: Option<Watch<'_, E>>, result: &Result<T>) {
    if let Some(mut w) = watch {
        let rows = result.as_ref().map(Outcome::rows).unwrap_or_default();
        w.finish(rows, result.as_ref().err().map(Failure::Error));
    }
}

pin_project_lite::pin_project! {
    /// A row stream that records its operation when it ends or is dropped.
    pub(crate) struct ObservedStream<'e, E: Runner, S> {
        #[pin]
        inner: S,
        watch: Option<Watch<'e, E>>,
    }
}

/// Finishes a call exactly once: when it ends, or when it is dropped before.
pub(crate) struct Watch<'e, E: Runner> {
    ex: &'e E,
    call: Option<Call>,
    /// Rows a stream has yielded so far.
    rows: u64,
    /// A stream is being read: dropping it ends the call normally.
    streaming: bool,
}

impl<'e, E: Runner> Watch<'e, E> {
    fn new(ex: &'e E, call: Call) -> Self {
        Watch {
            ex,
            call: Some(call),
            rows: 0,
            streaming: false,
        }
    }

    fn finish(&mut self, rows: Rows, failure: Option<Failure<'_>>) {
        if let Some(call) = self.call.take() {
            call.finish(self.ex, rows, failure);
        }
    }
}

impl<E: Runner> Drop for Watch<'_, E> {
    fn drop(&mut self) {
        if self.streaming {
            self.finish(Rows::Returned(self.rows), None);
        } else {
            self.finish(Rows::Unknown, Some(Failure::Cancelled));
        }
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
    fn error_type(self) -> &'a str {
        match self {
            Failure::Error(e) => span::error_type(e),
            Failure::Cancelled => "cancelled",
        }
    }
}

impl<E: Runner, S> ObservedStream<'_, E, S> {
    /// The stream as it is: nothing observes it.
    pub(crate) fn plain(inner: S) -> Self {
        ObservedStream { inner, watch: None }
    }
}

impl<E: Runner, S: Stream<Item = Result<crate::Record>>> Stream for ObservedStream<'_, E, S> {
    type Item = Result<crate::Record>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let Some(watch) = this.watch.as_mut() else {
            return this.inner.poll_next(cx);
        };
        let polled = match &watch.call {
            Some(call) => call.span.in_scope(|| this.inner.poll_next(cx)),
            None => this.inner.poll_next(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(_))) => watch.rows += 1,
            Poll::Ready(Some(Err(e))) => {
                watch.finish(Rows::Returned(watch.rows), Some(Failure::Error(e)))
            }
            Poll::Ready(None) => watch.finish(Rows::Returned(watch.rows), None),
            Poll::Pending => {}
        }
        polled
    }
}

/// An operation under way, observed by someone.
pub(crate) struct Call {
    span: Span,
    /// Operation and collection, when a span or the metrics want them.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    described: span::Described,
    method: Method,
    monitor: Option<Arc<QueryMonitor>>,
    /// The template text and masked arguments, kept for the monitor's history.
    recorded: Option<(String, Option<String>)>,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
}

impl Call {
    /// A call observed by a subscriber, a monitor or the metrics; `None`, at the cost of a
    /// level check and a pointer check, when nothing is.
    pub(crate) fn begin<E: Runner>(ex: &E, op: Op<'_>) -> Option<Call> {
        let span = op.method.span();
        let monitor = ex.manager().monitor();
        if span.is_disabled() && monitor.is_none() && !METRICS {
            return None;
        }
        Some(Call::start(ex, op, span, monitor))
    }

    /// Runs the operation under the span; records it when it ends, or as cancelled when it
    /// is dropped before.
    pub(crate) async fn run<E: Runner, T: Outcome>(
        self,
        ex: &E,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = self.span.clone();
        let mut watch = Watch::new(ex, self);
        let result = fut.instrument(span).await;
        let rows = result.as_ref().map(Outcome::rows).unwrap_or_default();
        watch.finish(rows, result.as_ref().err().map(Failure::Error));
        result
    }

    /// [`run`](Self::run) for `fetch_stream`: the span lasts until the stream ends or is
    /// dropped, and the rows are counted as they go by.
    pub(crate) async fn stream<'e, E: Runner, S>(
        self,
        ex: &'e E,
        fut: impl Future<Output = Result<S>>,
    ) -> Result<ObservedStream<'e, E, S>> {
        let span = self.span.clone();
        let mut watch = Watch::new(ex, self);
        match fut.instrument(span).await {
            Ok(inner) => {
                // From here a stream dropped early is the caller's choice, not a failure.
                watch.streaming = true;
                Ok(ObservedStream {
                    inner,
                    watch: Some(watch),
                })
            }
            Err(e) => {
                watch.finish(Rows::Unknown, Some(Failure::Error(&e)));
                Err(e)
            }
        }
    }

    fn start<E: Runner>(
        ex: &E,
        op: Op<'_>,
        span: Span,
        monitor: Option<&Arc<QueryMonitor>>,
    ) -> Call {
        let traced = !span.is_disabled();
        let described = if traced || METRICS {
            rendered(ex, op).map(|sql| (span::describe(op.method, &sql), sql))
        } else {
            None
        };
        if traced {
            let pool = ex.manager().pool().ok();
            let target = span::Target {
                namespace: pool.as_ref().map(|p| p.inner.database.as_str()),
                server: pool.as_ref().map(|p| p.server()),
                schema: ex.templates().schema(),
            };
            match &described {
                Some((d, sql)) => span::record_start(&span, d, sql, &target),
                None => span::record_target(&span, &target),
            }
            if let Some(n) = op.batch_size {
                span.record("db.operation.batch.size", int(n));
            }
        }
        let recorded = monitor.map(|m| {
            let text = match op.text {
                Text::Template(q) | Text::Raw(q) => q.to_owned(),
                Text::CopyInto(table) => format!("COPY {table} FROM STDIN (FORMAT binary)"),
            };
            let args = m
                .records_args()
                .then(|| crate::params::mask_params(op.params.iter().copied()));
            (text, args)
        });
        Call {
            span,
            described: described.map(|(d, _)| d).unwrap_or_default(),
            method: op.method,
            monitor: monitor.cloned(),
            recorded,
            started: Instant::now(),
            started_at: chrono::Utc::now(),
        }
    }

    fn finish<E: Runner>(self, ex: &E, rows: Rows, failure: Option<Failure<'_>>) {
        let elapsed = self.started.elapsed();
        if !self.span.is_disabled() {
            match rows {
                Rows::Returned(n) => {
                    self.span.record("db.response.returned_rows", int(n));
                }
                Rows::Affected(n) => {
                    self.span.record("pgdbm.rows_affected", int(n));
                    if self.method == Method::CopyRecordsToTable {
                        self.span.record("db.operation.batch.size", int(n));
                    }
                }
                Rows::Unknown => {}
            }
            match failure {
                Some(Failure::Error(e)) => span::record_error(&self.span, e),
                Some(Failure::Cancelled) => {
                    self.span.record("otel.status_code", "ERROR");
                    self.span.record("error.type", "cancelled");
                }
                None => {}
            }
        }
        #[cfg(feature = "metrics")]
        metrics::operation(ex, &self.described, elapsed, failure);
        #[cfg(not(feature = "metrics"))]
        let _ = ex;
        if let (Some(monitor), Some((query, args))) = (self.monitor, self.recorded) {
            monitor.record(monitor::Entry {
                method: self.method,
                query,
                args,
                started_at: self.started_at,
                duration: elapsed,
                rows: rows.count(),
                error: failure.map(|f| match f {
                    Failure::Error(e) => e.to_string(),
                    Failure::Cancelled => {
                        "cancelled: the call was dropped before it finished".to_owned()
                    }
                }),
            });
        }
    }
}

/// The statement text as sent, for `db.query.text`.
fn rendered<E: Runner>(ex: &E, op: Op<'_>) -> Option<String> {
    match op.text {
        Text::Template(q) => {
            let sql = ex.templates().render(q).ok()?;
            Some(match op.method {
                Method::ExecuteAndReturnId => crate::query::with_returning_id(&sql),
                _ => sql.into_owned(),
            })
        }
        Text::Raw(sql) => Some(sql.to_owned()),
        Text::CopyInto(table) => {
            let qualified = crate::template::qualify_table(table, ex.templates().schema()).ok()?;
            Some(format!("COPY {qualified} FROM STDIN (FORMAT binary)"))
        }
    }
}

/// One migration file, its rendered script run by `fut` (which returns its milliseconds).
pub(crate) async fn migration(
    manager: &AsyncDatabaseManager,
    file: &str,
    sql: &str,
    fut: impl Future<Output = Result<i32>>,
) -> Result<i32> {
    let op = Op {
        text: Text::Raw(sql),
        ..Op::new(Method::Migration, sql, &[])
    };
    let span = Method::Migration.span();
    let monitor = manager.monitor();
    if span.is_disabled() && monitor.is_none() && !METRICS {
        return fut.await;
    }
    span.record("pgdbm.migration", file);
    let call = Call::start(manager, op, span, monitor);
    // After the statement's own name: the file says more than `CREATE`.
    call.span
        .record("otel.name", format!("migration {file}").as_str());
    let span = call.span.clone();
    let mut watch = Watch::new(manager, call);
    let result = fut.instrument(span).await;
    watch.finish(Rows::Unknown, result.as_ref().err().map(Failure::Error));
    result
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
        let span = Method::Acquire.span();
        if span.is_disabled() && !METRICS {
            return None;
        }
        if !span.is_disabled() {
            span.record("otel.name", "acquire");
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
