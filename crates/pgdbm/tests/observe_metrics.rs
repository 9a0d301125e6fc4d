//! The `metrics` feature: operation durations and pool figures reach the installed recorder
//! under OpenTelemetry's names.
#![cfg(feature = "metrics")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName};
use metrics::{Metadata, Recorder, SharedString, Unit};

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Store = Arc<Mutex<Vec<Sample>>>;

struct Capture(Store);

struct Handle(Key, Store);

impl Handle {
    fn push(&self, value: f64) {
        self.1.lock().unwrap().push(Sample {
            name: self.0.name().to_owned(),
            labels: self
                .0
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            value,
        });
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.push(value as f64);
    }
    fn absolute(&self, value: u64) {
        self.push(value as f64);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.push(value);
    }
    fn decrement(&self, value: f64) {
        self.push(-value);
    }
    fn set(&self, value: f64) {
        self.push(value);
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.push(value);
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle(key.clone(), self.0.clone())))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Handle(key.clone(), self.0.clone())))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Handle(key.clone(), self.0.clone())))
    }
}

#[tokio::test]
async fn operations_and_the_pool_reach_the_recorder() {
    let store: Store = Arc::default();
    metrics::set_global_recorder(Capture(store.clone())).expect("the only recorder");
    let (db, guard) = schema_db_with(|c| c.max_connections = 1).await;
    users_table(&db).await;
    store.lock().unwrap().clear();

    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"secret@x"],
    )
    .await
    .unwrap();
    db.fetch_all("SELECT * FROM {{tables.users}}", &[])
        .await
        .unwrap();
    db.fetch_all("SELECT * FROM {{tables.nope}}", &[])
        .await
        .unwrap_err();
    // Nobody gives the one connection back in time: an acquire timeout.
    let held = db.acquire().await.unwrap();
    db.with_timeout(Duration::from_millis(50))
        .fetch_all("SELECT 1", &[])
        .await
        .unwrap_err();
    drop(held);

    let samples = store.lock().unwrap().clone();
    let ops: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "db.client.operation.duration")
        .collect();
    assert_eq!(ops.len(), 4, "{ops:#?}");
    let users = format!("{}.users", guard.0);
    assert_eq!(ops[0].label("db.operation.name"), Some("INSERT"));
    assert_eq!(ops[0].label("db.collection.name"), Some(users.as_str()));
    assert_eq!(ops[0].label("pgdbm.schema"), Some(guard.0.as_str()));
    assert_eq!(ops[0].label("db.system.name"), Some("postgresql"));
    assert_eq!(ops[0].label("db.namespace"), Some("postgres"));
    assert_eq!(ops[0].label("error.type"), None);
    assert!(
        ops[0].value > 0.0 && ops[0].value < 10.0,
        "seconds: {}",
        ops[0].value
    );
    assert_eq!(ops[1].label("db.operation.name"), Some("SELECT"));
    assert_eq!(ops[2].label("error.type"), Some("42P01"));
    assert_eq!(ops[2].label("db.response.status_code"), Some("42P01"));
    assert_eq!(ops[3].label("error.type"), Some("acquire_timeout"));
    for s in &samples {
        assert!(
            s.labels.iter().all(|(_, v)| !v.contains("secret")),
            "a parameter value in a label: {s:?}"
        );
    }

    // The pool's label: host:port/database of the test server.
    let server: tokio_postgres::Config = database_url().parse().unwrap();
    let host = match server.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let pool = format!(
        "{host}:{}/{}",
        server.get_ports().first().copied().unwrap_or(5432),
        server.get_dbname().unwrap_or("postgres")
    );
    let pool = pool.as_str();
    let of = |name: &str| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.name == name && s.label("db.client.connection.pool.name") == Some(pool))
            .collect()
    };
    let waits = of("db.client.connection.wait_time");
    // Three calls, `acquire()`, and the call that timed out.
    assert_eq!(waits.len(), 5, "one per checkout: {waits:#?}");
    assert!(
        waits[4].value >= 0.04,
        "the timed-out wait: {}",
        waits[4].value
    );
    assert_eq!(of("db.client.connection.timeouts").len(), 1);
    assert!(of("db.client.connection.max")
        .iter()
        .all(|s| s.value == 1.0));
    let used: Vec<f64> = of("db.client.connection.count")
        .iter()
        .filter(|s| s.label("db.client.connection.state") == Some("used"))
        .map(|s| s.value)
        .collect();
    // Checked out right after each acquire; back in the pool after each call.
    assert!(used.contains(&1.0) && used.contains(&0.0), "{used:?}");
    assert!(!of("db.client.connection.pending_requests").is_empty());
}
