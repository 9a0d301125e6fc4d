//! The duration of every operation through the `metrics` facade, with OpenTelemetry's names
//! (the pool reports its own connections and waits). Whatever recorder the application
//! installs (Prometheus, OpenTelemetry, StatsD…) receives them; without one they cost a check
//! each.

use std::time::Duration;

use metrics::{histogram, Label};

use super::span::Described;
use super::Failure;
use crate::pool::Pool;

/// `db.client.operation.duration`, in seconds.
pub(crate) fn operation(
    (pool, schema): &(Option<Pool>, Option<String>),
    described: &Described,
    elapsed: Duration,
    failure: Option<Failure<'_>>,
) {
    let mut labels = vec![Label::new("db.system.name", "postgresql")];
    if let Some(p) = pool {
        labels.push(Label::new("db.namespace", p.inner.database.clone()));
    }
    if let Some(op) = &described.operation {
        labels.push(Label::new("db.operation.name", op.clone()));
    }
    if let Some(c) = &described.collection {
        labels.push(Label::new("db.collection.name", c.clone()));
    }
    if let Some(s) = schema {
        labels.push(Label::new("pgdbm.schema", s.clone()));
    }
    if let Some(f) = failure {
        labels.push(Label::new("error.type", f.error_type().to_owned()));
        if let Some(code) = match f {
            Failure::Error(e) => e.code(),
            Failure::Cancelled => None,
        } {
            labels.push(Label::new("db.response.status_code", code.to_owned()));
        }
    }
    histogram!("db.client.operation.duration", labels).record(elapsed.as_secs_f64());
    // After the call its connection is back: the pool's figures are current.
    if let Some(p) = pool {
        crate::pool::report_state(p);
    }
}
