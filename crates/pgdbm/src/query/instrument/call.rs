//! One observed call: its span, its monitor record and its metrics, finished exactly once
//! (when it ends, or when it is dropped before).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::Stream;
use tracing::{Instrument, Span};

use super::{span, Failure, Method, Op, Outcome, Recorded, Recorder, Rows, Text, METRICS};
use crate::error::Result;
use crate::otel::int;
use crate::query::Runner;

pin_project_lite::pin_project! {
    /// A row stream that records its operation when it ends or is dropped.
    pub(crate) struct ObservedStream<S> {
        #[pin]
        inner: S,
        watch: Option<Watch>,
    }
}

/// For code that cannot wrap its future (transaction control): a watch started before the
/// statement and [`end`]ed after it. `None` when nothing observes.
pub(crate) fn watch<E: Runner>(ex: &E, op: Op<'_>) -> Option<Watch> {
    Call::begin(ex, op).map(Watch::new)
}

/// Finishes a [`watch`] with the statement's result.
pub(crate) fn end<T: Outcome>(watch: Option<Watch>, result: &Result<T>) {
    if let Some(mut w) = watch {
        let rows = result.as_ref().map(Outcome::rows).unwrap_or_default();
        w.finish(rows, result.as_ref().err().map(Failure::Error));
    }
}
/// Finishes a call exactly once: when it ends, or when it is dropped before.
pub(crate) struct Watch {
    call: Option<Call>,
    /// Rows a stream has yielded so far.
    rows: u64,
    /// A stream is being read: dropping it ends the call normally.
    streaming: bool,
}

impl Watch {
    fn new(call: Call) -> Self {
        Watch {
            call: Some(call),
            rows: 0,
            streaming: false,
        }
    }

    /// What a stream has yielded: rows, or for `COPY … TO` chunks of bytes, which are not rows.
    fn streamed(&self) -> Rows {
        match self.call.as_ref().map(|c| c.method) {
            Some(Method::CopyTo | Method::CopyToOwned) => Rows::Unknown,
            _ => Rows::Returned(self.rows),
        }
    }

    fn finish(&mut self, rows: Rows, failure: Option<Failure<'_>>) {
        if let Some(call) = self.call.take() {
            call.finish(rows, failure);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.streaming {
            self.finish(self.streamed(), None);
        } else {
            self.finish(Rows::Unknown, Some(Failure::Cancelled));
        }
    }
}

impl<S> ObservedStream<S> {
    /// The stream as it is: nothing observes it.
    pub(crate) fn plain(inner: S) -> Self {
        ObservedStream { inner, watch: None }
    }
}

impl<T, S: Stream<Item = Result<T>>> Stream for ObservedStream<S> {
    type Item = Result<T>;

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
            Poll::Ready(Some(Err(e))) => watch.finish(watch.streamed(), Some(Failure::Error(e))),
            Poll::Ready(None) => watch.finish(watch.streamed(), None),
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
    /// The pool and schema the call ran on, for the metrics' labels: owned, so that a stream
    /// holding the call may outlive the borrow it was made from.
    #[cfg(feature = "metrics")]
    labels: (Option<crate::pool::Pool>, Option<String>),
    method: Method,
    recorder: Option<Arc<dyn Recorder>>,
    /// The template text and masked arguments, kept for the recorder.
    recorded: Option<(String, Option<String>)>,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
}

impl Call {
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// A call observed by a subscriber, a monitor or the metrics; `None`, at the cost of a
    /// level check and a pointer check, when nothing is.
    pub(crate) fn begin<E: Runner>(ex: &E, op: Op<'_>) -> Option<Call> {
        let recorder = ex.recorder();
        // Building a span and dropping it costs more than the rest of this check: skip it when
        // no subscriber takes INFO at all (one atomic load).
        if recorder.is_none() && !METRICS && !tracing::level_enabled!(tracing::Level::INFO) {
            return None;
        }
        let span = op.method.span();
        if span.is_disabled() && recorder.is_none() && !METRICS {
            return None;
        }
        Some(Call::start(ex, op, span, recorder))
    }

    /// Runs the operation under the span; records it when it ends, or as cancelled when it
    /// is dropped before.
    pub(crate) async fn run<T: Outcome>(self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let span = self.span.clone();
        let mut watch = Watch::new(self);
        let result = fut.instrument(span).await;
        let rows = result.as_ref().map(Outcome::rows).unwrap_or_default();
        watch.finish(rows, result.as_ref().err().map(Failure::Error));
        result
    }

    /// [`run`](Self::run) for `fetch_stream`: the span lasts until the stream ends or is
    /// dropped, and the rows are counted as they go by.
    pub(crate) async fn stream<S>(
        self,
        fut: impl Future<Output = Result<S>>,
    ) -> Result<ObservedStream<S>> {
        let span = self.span.clone();
        let mut watch = Watch::new(self);
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
        recorder: Option<&Arc<dyn Recorder>>,
    ) -> Call {
        let traced = !span.is_disabled();
        let described = if traced || METRICS {
            rendered(ex, op).map(|sql| (span::describe(op.method, &sql), sql))
        } else {
            None
        };
        let pool = if traced || METRICS { ex.pool() } else { None };
        if traced {
            let target = crate::otel::Target {
                namespace: pool.as_ref().map(|p| p.inner.database.as_str()),
                server: pool.as_ref().map(|p| p.server()),
                schema: ex.templates().schema(),
            };
            match &described {
                // A commit is sent as `SELECT 1; COMMIT` (the check that the transaction is
                // not aborted), and shows as what it is.
                Some((d, _)) if op.method == Method::Commit => {
                    span::record_start(&span, d, "COMMIT", &target)
                }
                Some((d, sql)) => span::record_start(&span, d, sql, &target),
                None => crate::otel::record_target(&span, &target),
            }
            if let Some(n) = op.batch_size {
                span.record("db.operation.batch.size", int(n));
            }
        }
        let recorded = recorder.map(|m| {
            let text = match op.text {
                Text::Template(q) | Text::Raw(q) => q.to_owned(),
                Text::CopyInto(table) => format!("COPY {table} FROM STDIN (FORMAT binary)"),
                Text::CopyCsvInto(table) => format!("COPY {table} FROM STDIN (FORMAT csv)"),
                Text::CopyOut(source, _) => format!("COPY {source} TO STDOUT"),
            };
            let args = m
                .records_args()
                .then(|| crate::params::mask_params(op.params.iter().copied()));
            (text, args)
        });
        #[cfg(not(feature = "metrics"))]
        let _ = pool;
        Call {
            span,
            described: described.map(|(d, _)| d).unwrap_or_default(),
            #[cfg(feature = "metrics")]
            labels: (pool, ex.templates().schema().map(str::to_owned)),
            method: op.method,
            recorder: recorder.cloned(),
            recorded,
            started: Instant::now(),
            started_at: chrono::Utc::now(),
        }
    }

    fn finish(self, rows: Rows, failure: Option<Failure<'_>>) {
        let elapsed = self.started.elapsed();
        if !self.span.is_disabled() {
            match rows {
                Rows::Returned(n) => {
                    self.span.record("db.response.returned_rows", int(n));
                }
                Rows::Affected(n) => {
                    self.span.record("pgdbm.rows_affected", int(n));
                    if matches!(
                        self.method,
                        Method::CopyRecordsToTable | Method::CopyFromCsv
                    ) {
                        self.span.record("db.operation.batch.size", int(n));
                    }
                }
                Rows::Unknown => {}
            }
            match failure {
                Some(Failure::Error(e)) => crate::otel::record_error(&self.span, e),
                Some(Failure::Cancelled) => {
                    self.span.record("otel.status_code", "ERROR");
                    self.span.record("error.type", "cancelled");
                }
                None => {}
            }
        }
        #[cfg(feature = "metrics")]
        super::metrics::operation(&self.labels, &self.described, elapsed, failure);
        if let (Some(recorder), Some((query, args))) = (self.recorder, self.recorded) {
            recorder.record(Recorded {
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
                Method::ExecuteAndReturnId => crate::sql::with_returning_id(&sql),
                _ => sql.into_owned(),
            })
        }
        Text::Raw(sql) => Some(sql.to_owned()),
        Text::CopyOut(_, sql) => sql(),
        Text::CopyInto(table) | Text::CopyCsvInto(table) => {
            let qualified = crate::template::qualify_table(table, ex.templates().schema()).ok()?;
            let format = match op.text {
                Text::CopyCsvInto(_) => "csv",
                _ => "binary",
            };
            Some(format!("COPY {qualified} FROM STDIN (FORMAT {format})"))
        }
    }
}
