//! The pool observes its own checkouts: a span for each wait inside a caller's operation and,
//! with the `metrics` feature, OpenTelemetry's connection metrics.

use std::time::Instant;

use tracing::Span;

use super::Pool;
use crate::error::Error;

/// Whether anything but spans wants a checkout's figures: the `metrics` feature.
const METRICS: bool = cfg!(feature = "metrics");

/// The wait for a pool connection: its span (created under the caller's operation, closed when
/// the wait ends) and, with the metrics, its duration.
pub(crate) struct Acquiring {
    span: Span,
    started: Instant,
}

impl Acquiring {
    /// Whether anything may observe a checkout: the metrics, or a subscriber taking INFO.
    #[inline]
    pub(crate) fn observed() -> bool {
        METRICS || tracing::level_enabled!(tracing::Level::INFO)
    }

    /// `None` when nothing observes.
    pub(crate) fn start(pool: &Pool) -> Option<Acquiring> {
        // As in `Call::begin`: no span is built when no subscriber takes INFO.
        if !Self::observed() {
            return None;
        }
        // Only inside an operation: a checkout outside one (while connecting, say) would be a
        // stray root span.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            crate::otel::acquire_span()
        };
        if span.is_disabled() && !METRICS {
            return None;
        }
        if !span.is_disabled() {
            crate::otel::record_target(
                &span,
                &crate::otel::Target {
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

    pub(crate) fn end(this: Option<Acquiring>, pool: &Pool, error: Option<&Error>) {
        let Some(this) = this else { return };
        if let Some(e) = error {
            crate::otel::record_error(&this.span, e);
        }
        #[cfg(feature = "metrics")]
        super::metrics::acquired(pool, this.started.elapsed(), error);
        #[cfg(not(feature = "metrics"))]
        let _ = (pool, this.started);
    }
}
