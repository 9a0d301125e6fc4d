//! With `DB_DEBUG=1`, every statement sent, transaction control included, is one DEBUG event
//! with its duration. Its own test binary, so that the variable is set for the whole process.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Clone, Default)]
struct Levels(Arc<Mutex<Vec<(Level, String, bool)>>>);

impl<S: Subscriber> Layer<S> for Levels {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "pgdbm::query" {
            let mut fields = Fields::default();
            event.record(&mut fields);
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), fields.sql, fields.duration));
        }
    }
}

#[derive(Default)]
struct Fields {
    sql: String,
    duration: bool,
}

impl tracing::field::Visit for Fields {
    fn record_f64(&mut self, field: &tracing::field::Field, _: f64) {
        self.duration |= field.name() == "duration_ms";
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "sql" {
            self.sql = value.to_owned();
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

#[tokio::test]
async fn db_debug_logs_every_statement_at_debug_with_its_duration() {
    // The only test in this binary, so nothing else reads the environment meanwhile.
    std::env::set_var("DB_DEBUG", "1");
    let (db, _g) = schema_db().await;
    let levels = Levels::default();
    let filter = tracing_subscriber::filter::LevelFilter::DEBUG;
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(levels.clone().with_filter(filter)),
    );
    let tx = db.transaction().await.unwrap();
    {
        let sp = tx.transaction().await.unwrap();
        sp.execute("SELECT 1", &[]).await.unwrap();
        sp.commit().await.unwrap();
    }
    tx.commit().await.unwrap();
    let seen = levels.0.lock().unwrap().clone();
    let sql: Vec<&str> = seen.iter().map(|(_, sql, _)| sql.as_str()).collect();
    assert_eq!(sql.len(), 5, "{sql:?}");
    assert!(sql[0].starts_with("BEGIN"), "{sql:?}");
    assert!(sql[1].starts_with("SAVEPOINT"), "{sql:?}");
    assert_eq!(sql[2], "SELECT 1", "{sql:?}");
    assert!(sql[3].starts_with("RELEASE"), "{sql:?}");
    assert!(sql[4].contains("COMMIT"), "{sql:?}");
    for (level, sql, duration) in &seen {
        assert_eq!(*level, Level::DEBUG, "{sql}");
        assert!(duration, "no duration_ms on {sql}");
    }
}
