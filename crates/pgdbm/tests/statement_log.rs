//! Statement logging: every statement sent, transaction control included, is one `tracing`
//! event on target `pgdbm::query` with its duration and masked parameters.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Clone, Debug)]
struct Captured {
    level: Level,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn sql(&self) -> &str {
        &self.fields["sql"]
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

thread_local! {
    /// The capture of the test running on this thread (each test has its own thread and a
    /// current-thread runtime, so its statements are logged on it).
    static SINK: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Routes each event to the capture of the thread it is emitted on.
struct Router;

impl<S: Subscriber> Layer<S> for Router {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "pgdbm::query" {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        if !fields.contains_key("sql") {
            return;
        }
        SINK.with(|sink| {
            if let Some(capture) = &*sink.borrow() {
                capture.0.lock().unwrap().push(Captured {
                    level: *event.metadata().level(),
                    fields,
                });
            }
        });
    }
}

/// One global subscriber for the whole binary, set before any statement is logged: scoped
/// per-thread subscribers in parallel tests race tracing's callsite interest cache and can miss
/// events.
fn global_subscriber() {
    static GLOBAL: OnceLock<()> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let filter = tracing_subscriber::filter::Targets::new().with_target("pgdbm", Level::DEBUG);
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(Router.with_filter(filter)),
        )
        .expect("no other global subscriber");
    });
}

impl Capture {
    /// Captures this thread's statement events from now on.
    fn install(&self) {
        global_subscriber();
        SINK.with(|sink| *sink.borrow_mut() = Some(self.clone()));
    }

    fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn duration_ms(event: &Captured) -> f64 {
    event
        .fields
        .get("duration_ms")
        .unwrap_or_else(|| panic!("no duration_ms on {event:?}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn transaction_control_is_logged_with_durations() {
    global_subscriber();
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let capture = Capture::default();
    capture.install();

    let long = "a-very-long-secret-value-that-must-not-be-logged@example.org";
    let tx = db.transaction().await.unwrap();
    let sp = tx.transaction().await.unwrap();
    sp.execute(
        "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
        &[&long, &"ann"],
    )
    .await
    .unwrap();
    // Long enough for a measurable duration.
    sp.execute("SELECT pg_sleep(0.02)", &[]).await.unwrap();
    sp.commit().await.unwrap();
    let sp = tx.transaction().await.unwrap();
    sp.rollback().await.unwrap();
    tx.commit().await.unwrap();

    let events = capture.take();
    let sqls: Vec<&str> = events.iter().map(Captured::sql).collect();
    let insert = sqls.iter().position(|s| s.starts_with("INSERT")).unwrap();
    let schema = db.schema().unwrap();
    assert_eq!(
        sqls,
        [
            "BEGIN",
            "SAVEPOINT pgdbm_sp_1",
            &*format!("INSERT INTO \"{schema}\".users (email, name) VALUES ($1, $2)"),
            "SELECT pg_sleep(0.02)",
            "RELEASE SAVEPOINT pgdbm_sp_1",
            "SAVEPOINT pgdbm_sp_2",
            "ROLLBACK TO SAVEPOINT pgdbm_sp_2; RELEASE SAVEPOINT pgdbm_sp_2",
            "SELECT 1; COMMIT",
        ]
    );
    for e in &events {
        assert_eq!(e.level, Level::DEBUG, "{e:?}");
        assert_eq!(e.fields["outcome"], "ok", "{e:?}");
        assert!(duration_ms(e) >= 0.0);
    }
    assert!(duration_ms(&events[3]) >= 20.0, "{:?}", events[3]);
    // Parameters show as placeholders and kinds, never their values.
    let params = &events[insert].fields["params"];
    assert_eq!(
        params,
        &format!(
            "[$1: text({} chars), $2: text(3 chars)]",
            long.chars().count()
        )
    );
}

#[tokio::test]
async fn failures_timeouts_and_implicit_transactions_are_logged() {
    global_subscriber();
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let capture = Capture::default();
    capture.install();

    // executemany outside a transaction: its own BEGIN and COMMIT.
    db.executemany(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        vec![("a@x",), ("b@x",)],
    )
    .await
    .unwrap();
    let events = capture.take();
    let sqls: Vec<&str> = events.iter().map(Captured::sql).collect();
    assert_eq!(sqls.first(), Some(&"BEGIN"), "{sqls:?}");
    assert_eq!(sqls.last(), Some(&"COMMIT"), "{sqls:?}");
    assert!(sqls.iter().any(|s| s.starts_with("INSERT")), "{sqls:?}");

    // A failed statement carries its SQLSTATE; the aborted transaction's end is logged.
    let tx = db.transaction().await.unwrap();
    tx.execute("INSERT INTO {{tables.users}} (email) VALUES ('a@x')", &[])
        .await
        .unwrap_err();
    tx.commit().await.unwrap_err();
    let events = capture.take();
    let failed = events
        .iter()
        .find(|e| e.sql().starts_with("INSERT"))
        .unwrap();
    assert_eq!(failed.fields["outcome"], "error");
    assert_eq!(failed.fields["sqlstate"], "23505");
    assert_eq!(events.last().unwrap().sql(), "ROLLBACK");

    // A timed-out statement is logged as such.
    db.with_timeout(Duration::from_millis(50))
        .execute("SELECT pg_sleep(2)", &[])
        .await
        .unwrap_err();
    let events = capture.take();
    let slow = events
        .iter()
        .find(|e| e.sql() == "SELECT pg_sleep(2)")
        .unwrap();
    assert_eq!(slow.fields["outcome"], "timeout");
    assert!(duration_ms(slow) >= 40.0, "{slow:?}");

    // A call dropped by its caller mid-statement is logged as abandoned.
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        db.without_timeout().execute("SELECT pg_sleep(1)", &[]),
    )
    .await;
    assert!(dropped.is_err());
    let events = capture.take();
    let gone = events
        .iter()
        .find(|e| e.sql() == "SELECT pg_sleep(1)")
        .unwrap();
    assert_eq!(gone.fields["outcome"], "abandoned");
}

#[tokio::test]
async fn migration_statements_are_logged() {
    global_subscriber();
    let (db, _g) = schema_db().await;
    let capture = Capture::default();
    capture.install();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/migrations");
    pgdbm::AsyncMigrationManager::new(&db, dir)
        .apply_pending_migrations()
        .await
        .unwrap();
    let events = capture.take();
    let sqls: Vec<&str> = events.iter().map(Captured::sql).collect();
    assert!(
        sqls.iter()
            .any(|s| s.contains("CREATE TABLE") && s.contains("items")),
        "{sqls:?}"
    );
    assert!(
        sqls.iter().filter(|s| **s == "BEGIN").count() >= 3,
        "{sqls:?}"
    );
    assert!(
        sqls.iter().filter(|s| **s == "COMMIT").count() >= 3,
        "{sqls:?}"
    );
    assert!(events.iter().all(|e| e.fields.contains_key("duration_ms")));
}

#[tokio::test]
async fn streams_are_logged_when_they_open() {
    use futures_util::TryStreamExt;
    global_subscriber();
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let capture = Capture::default();
    capture.install();
    let long = "a-value-well-over-twenty-characters";
    let rows: Vec<pgdbm::Record> = db
        .fetch_stream("SELECT $1::text AS v", &[&long])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let csv: Vec<bytes::Bytes> = db
        .copy_to("users", pgdbm::CopyFormat::Csv { header: true })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(!csv.is_empty());
    let events = capture.take();
    let sqls: Vec<&str> = events.iter().map(Captured::sql).collect();
    assert_eq!(sqls.len(), 2, "{sqls:?}");
    assert_eq!(sqls[0], "SELECT $1::text AS v");
    assert!(
        sqls[1].starts_with("COPY") && sqls[1].contains("TO STDOUT"),
        "{sqls:?}"
    );
    let params = &events[0].fields["params"];
    assert_eq!(params, &format!("[$1: text({} chars)]", long.len()));
    assert!(events.iter().all(|e| e.fields["outcome"] == "ok"));
}
