//! `DB_DEBUG=1` raises the statement events to INFO, so that a subscriber at its default level
//! shows them. Its own test binary: the variable is read once per process.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Clone, Default)]
struct Levels(Arc<Mutex<Vec<Level>>>);

impl<S: Subscriber> Layer<S> for Levels {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "pgdbm::query" {
            self.0.lock().unwrap().push(*event.metadata().level());
        }
    }
}

#[tokio::test]
async fn db_debug_logs_statements_at_info() {
    // The only test in this binary, so nothing else reads the environment meanwhile.
    std::env::set_var("DB_DEBUG", "1");
    let (db, _g) = schema_db().await;
    let levels = Levels::default();
    let filter = tracing_subscriber::filter::LevelFilter::INFO;
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(levels.clone().with_filter(filter)),
    );
    let tx = db.transaction().await.unwrap();
    tx.execute("SELECT 1", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let seen = levels.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Level::INFO; 3],
        "BEGIN, SELECT 1, SELECT 1; COMMIT"
    );
}
