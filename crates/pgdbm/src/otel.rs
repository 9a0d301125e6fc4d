//! OpenTelemetry's database conventions as `tracing` records them: where a statement runs,
//! how a failure is named, and the span of a wait for a pooled connection. Shared by the pool,
//! which observes its own waits, and the query layer, which observes every call.

use tracing::field::Empty;
use tracing::Span;

use crate::error::Error;

/// The wait for a pooled connection: an internal span inside the operation's client span.
pub(crate) fn acquire_span() -> Span {
    if tracing::Level::INFO > tracing::level_filters::STATIC_MAX_LEVEL
        || tracing::Level::INFO > tracing::level_filters::LevelFilter::current()
    {
        return Span::none();
    }
    tracing::info_span!(
        target: "pgdbm::pool",
        "pgdbm.pool.acquire",
        otel.name = "pgdbm.pool.acquire",
        otel.kind = "internal",
        otel.status_code = Empty,
        error.type = Empty,
        db.namespace = Empty,
        server.address = Empty,
        server.port = Empty,
        pgdbm.schema = Empty,
    )
}

/// Where the statement runs: recorded once per span.
pub(crate) struct Target<'a> {
    pub(crate) namespace: Option<&'a str>,
    pub(crate) server: Option<(&'a str, u16)>,
    pub(crate) schema: Option<&'a str>,
}

pub(crate) fn record_target(span: &Span, target: &Target<'_>) {
    if let Some(ns) = target.namespace {
        span.record("db.namespace", ns);
    }
    if let Some((host, port)) = target.server {
        span.record("server.address", host);
        span.record("server.port", i64::from(port));
    }
    if let Some(s) = target.schema {
        span.record("pgdbm.schema", s);
    }
}

/// Records a failure: `error.type` (the SQLSTATE, or the kind of client-side error),
/// `db.response.status_code` for server errors, and the OpenTelemetry span status.
pub(crate) fn record_error(span: &Span, error: &Error) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error_type(error));
    if let Some(code) = error.code() {
        span.record("db.response.status_code", code);
    }
}

/// A low-cardinality name for an error: its SQLSTATE when the server sent one.
pub(crate) fn error_type(error: &Error) -> &str {
    if let Some(code) = error.code() {
        return code;
    }
    match error {
        Error::Configuration { .. } => "configuration",
        Error::Connection { .. } => "connection",
        Error::Pool(_) => "pool",
        Error::Query { .. } => "query",
        Error::Schema(_) => "schema",
        Error::Migration { .. } => "migration",
        Error::Timeout { .. } | Error::SharedTimeout { .. } => "timeout",
        Error::ConnectionLost { .. } => "connection_lost",
        Error::AcquireTimeout { .. } => "acquire_timeout",
        Error::Transaction(_) => "transaction",
        Error::Decode { .. } => "decode",
        _ => "other",
    }
}

/// A count as a signed integer: OpenTelemetry's integer attributes are `i64`, and
/// `tracing-opentelemetry` exports unsigned values as strings.
pub(crate) fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
