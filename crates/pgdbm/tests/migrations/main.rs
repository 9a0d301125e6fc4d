//! Migrations against the real server: ordering, tracking rows compatible with Python pgdbm,
//! checksums, atomicity, no-transaction files, templates, concurrency, embedded migrations and
//! bad input. Every test works in its own schema (or database) and cleans up even on panic.

#[path = "../common/mod.rs"]
mod common;

mod apply;
mod concurrency;
mod errors;
mod history;
mod lock;
mod no_transaction;
mod templates;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{admin, admin_value, unique, SchemaGuard};
use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig, Error};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A migrations directory of its own, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(unique("pgdbm_mig"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, content: impl AsRef<[u8]>) -> &Self {
        std::fs::write(self.0.join(name), content).unwrap();
        self
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A manager over a shared pool in `schema`, which may not exist yet.
async fn shared_db(schema: &str, tweak: impl FnOnce(&mut DatabaseConfig)) -> AsyncDatabaseManager {
    let mut cfg = common::config();
    tweak(&mut cfg);
    let pool = AsyncDatabaseManager::create_shared_pool(&cfg)
        .await
        .expect("shared pool");
    AsyncDatabaseManager::from_pool(pool, Some(schema)).expect("manager")
}

/// A fresh schema name (not created) and its guard.
fn fresh_schema() -> (String, SchemaGuard) {
    let s = unique("mig");
    (s.clone(), SchemaGuard(s))
}

/// The parts of an `Error::Migration`, or a panic naming what came instead.
fn migration_parts(e: Error) -> (Option<String>, String, Error) {
    match e {
        Error::Migration {
            ref file,
            ref message,
            ..
        } => (file.clone(), message.clone(), e),
        other => panic!("expected Error::Migration, got {other:?}"),
    }
}

async fn count(sql: &str) -> i64 {
    admin_value(sql).await.expect("a value").parse().unwrap()
}

async fn exists(qualified: &str) -> bool {
    admin_value(&format!("SELECT to_regclass('{qualified}') IS NOT NULL"))
        .await
        .as_deref()
        == Some("t")
}

async fn tracked(schema: &str) -> Vec<String> {
    admin(&format!(
        "SELECT filename FROM \"{schema}\".schema_migrations ORDER BY id"
    ))
    .await
    .into_iter()
    .filter_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
    .collect()
}

/// Collects formatted `tracing` output of the current thread (tests run on a current-thread
/// runtime, so everything the test awaits is captured).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let c = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(c.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (c, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// The racer process (at the crate root: the race test runs it with `--exact racer_entry`)

const RACER_ENV: &str = "PGDBM_MIGRATION_RACER";

/// Not a test on its own: the race test runs this binary again with `RACER_ENV` set, so that
/// separate OS processes race too. Without the variable it does nothing.
#[tokio::test]
async fn racer_entry() {
    let Ok(spec) = std::env::var(RACER_ENV) else {
        return;
    };
    let (schema, dir) = spec.split_once('|').expect("schema|dir");
    let db = shared_db(schema, |c| c.max_connections = 2).await;
    let report = AsyncMigrationManager::new(&db, dir)
        .apply_pending_migrations()
        .await
        .expect("racer apply");
    let names: Vec<&str> = report.applied.iter().map(|a| a.filename.as_str()).collect();
    println!("RACER_APPLIED={}", names.join(","));
    println!("RACER_TOTAL={}", report.total);
}
