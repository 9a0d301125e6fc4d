//! OpenTelemetry's connection metrics through the `metrics` facade: each checkout's wait, the
//! timeouts, and the pool's connections and waiters.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::Pool;
use crate::error::Error;

/// `db.client.connection.wait_time` and `db.client.connection.timeouts` for one checkout,
/// then the pool's figures.
pub(crate) fn acquired(pool: &Pool, waited: Duration, error: Option<&Error>) {
    let name = pool_name(pool);
    histogram!("db.client.connection.wait_time", "db.client.connection.pool.name" => name.clone())
        .record(waited.as_secs_f64());
    if matches!(error, Some(Error::AcquireTimeout { .. })) {
        counter!("db.client.connection.timeouts", "db.client.connection.pool.name" => name)
            .increment(1);
    }
    report_state(pool);
}

/// `db.client.connection.count` (idle / used), `.max` and `.pending_requests`.
pub(crate) fn report_state(pool: &Pool) {
    describe();
    let status = pool.raw_status();
    let name = pool_name(pool);
    let used = status.size.saturating_sub(status.available);
    for (state, n) in [("idle", status.available), ("used", used)] {
        gauge!(
            "db.client.connection.count",
            "db.client.connection.pool.name" => name.clone(),
            "db.client.connection.state" => state
        )
        .set(n as f64);
    }
    gauge!("db.client.connection.max", "db.client.connection.pool.name" => name.clone())
        .set(status.max_size as f64);
    gauge!("db.client.connection.pending_requests", "db.client.connection.pool.name" => name)
        .set(status.waiting as f64);
}

/// `host:port/database`: one name per pool target.
fn pool_name(pool: &Pool) -> String {
    let (host, port) = pool.server();
    format!("{host}:{port}/{}", pool.inner.database)
}

/// Units and descriptions, for recorders that show them; sent once, with the first figures.
fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_histogram!(
            "db.client.operation.duration",
            Unit::Seconds,
            "Duration of database client operations."
        );
        describe_histogram!(
            "db.client.connection.wait_time",
            Unit::Seconds,
            "The time it took to obtain an open connection from the pool."
        );
        describe_counter!(
            "db.client.connection.timeouts",
            "The number of connection timeouts that have occurred trying to obtain a connection from the pool."
        );
        describe_gauge!(
            "db.client.connection.count",
            "The number of connections that are currently in the state described by the state attribute."
        );
        describe_gauge!(
            "db.client.connection.max",
            "The maximum number of open connections allowed."
        );
        describe_gauge!(
            "db.client.connection.pending_requests",
            "The number of current pending requests for an open connection."
        );
    });
}
