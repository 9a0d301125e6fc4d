//! Observability features on top of the manager: a query monitor
//! ([`MonitoredAsyncDatabaseManager`]), `EXPLAIN` as JSON, and a [`DatabaseDebugger`].
//!
//! The spans and metrics of each call are emitted where calls pass, by the query layer (and by
//! the pool for its waits). The monitor plugs into that layer through its `Recorder`
//! interface: the manager carries one, and this module implements it.

mod debugger;
mod explain;
mod monitor;

pub use debugger::{
    BlockingQuery, ConnectivityCheck, DatabaseDebugger, HealthReport, HealthStatus,
    LongRunningQuery, PoolCheck, TableSize,
};
pub use monitor::{MonitorConfig, MonitorMetrics, MonitoredAsyncDatabaseManager, QueryRecord};

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
