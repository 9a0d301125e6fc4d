//! No-transaction files: run statement by statement, recorded only when they succeed.

use std::time::Duration;

use crate::common;
use crate::common::unique;
use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager};

use super::{exists, migration_parts, tracked, TempDir};

/// A database of its own, dropped afterwards: CREATE INDEX CONCURRENTLY waits for every older
/// transaction in its database, so other tests' long transactions must not be in it.
struct DatabaseGuard(String);

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        common::drop_with_fresh_runtime(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.0
        ));
    }
}

async fn fresh_database(schema: &str) -> (AsyncDatabaseManager, DatabaseGuard) {
    let name = unique("migdb");
    let guard = DatabaseGuard(name.clone());
    let mut attempts = 0;
    loop {
        // CREATE DATABASE fails while another session is connected to template1; retry.
        let (client, conn) =
            tokio_postgres::connect(&common::database_url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        match client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
        {
            Ok(()) => break,
            Err(e) if attempts < 10 => {
                attempts += 1;
                eprintln!("CREATE DATABASE retry: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("CREATE DATABASE: {e}"),
        }
    }
    let base = common::database_url();
    let (base, query) = match base.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(&base);
    let mut cfg = common::config();
    cfg.connection_string = Some(format!("{prefix}/{name}{query}"));
    cfg.schema = Some(schema.to_owned());
    let db = AsyncDatabaseManager::new(cfg).unwrap();
    db.connect().await.unwrap();
    (db, guard)
}

#[tokio::test]
async fn no_transaction_files_run_statement_by_statement_and_create_index_concurrently() {
    let (db, _guard) = fresh_database("app").await;
    let dir = TempDir::new();
    dir.write(
        "001_items.sql",
        "CREATE TABLE {{tables.items}} (id serial PRIMARY KEY, name text);",
    )
    .write(
        "002_concurrently.sql",
        r#"-- Builds the index without blocking writers.
-- pgdbm:no-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS items_name_idx ON {{tables.items}} (name);
INSERT INTO {{tables.items}} (name) VALUES ('semi;colon'), ('it''s; quoted'), (E'back\'slash;');
INSERT INTO {{tables.items}} (name) VALUES (E'con' -- an E string continued on the next line
  'tinued\';');
CREATE TABLE IF NOT EXISTS {{tables.odd}} ("weird;name" int);
/* a /* nested; */ comment; */
CREATE OR REPLACE FUNCTION {{schema}}.twice(x int) RETURNS int LANGUAGE plpgsql AS $fn$
BEGIN
  RETURN x * 2; -- a ; inside
END;
$fn$;
CREATE OR REPLACE FUNCTION {{schema}}.thrice(x int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
  SELECT x * 3;
END;
"#,
    );
    let mm = AsyncMigrationManager::new(&db, dir.path());
    assert!(mm.find_migration_files().unwrap()[1].is_no_transaction());
    let report = mm.apply_pending_migrations().await.expect("apply");
    assert_eq!(report.applied.len(), 2);

    let valid: Option<bool> = db
        .fetch_value(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app' AND c.relname = 'items_name_idx'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        valid,
        Some(true),
        "the concurrently built index exists and is valid"
    );
    let names = db
        .fetch_all("SELECT name FROM {{tables.items}} ORDER BY id", &[])
        .await
        .unwrap();
    let names: Vec<String> = names.iter().map(|r| r.get("name").unwrap()).collect();
    assert_eq!(
        names,
        ["semi;colon", "it's; quoted", "back'slash;", "continued';"]
    );
    let six: Option<i32> = db
        .fetch_value("SELECT {{schema}}.twice(3)", &[])
        .await
        .unwrap();
    assert_eq!(six, Some(6));
    let nine: Option<i32> = db
        .fetch_value("SELECT {{schema}}.thrice(3)", &[])
        .await
        .unwrap();
    assert_eq!(nine, Some(9));
    let col: Option<String> = db
        .fetch_value(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'app' AND table_name = 'odd'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(col.as_deref(), Some("weird;name"));

    // The same statement in a transactional file fails with the server's 25001 and a hint.
    dir.write(
        "003_in_tx.sql",
        "CREATE INDEX CONCURRENTLY items_id_idx ON {{tables.items}} (id);",
    );
    let err = mm.apply_pending_migrations().await.unwrap_err();
    assert_eq!(err.code(), Some("25001"));
    let (file, message, _) = migration_parts(err);
    assert_eq!(file.as_deref(), Some("003_in_tx.sql"));
    assert!(message.contains("-- pgdbm:no-transaction"), "{message}");
}

#[tokio::test]
async fn a_failing_no_transaction_file_is_not_recorded() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    dir.write(
        "001_nt.sql",
        "-- pgdbm:no-transaction\nCREATE TABLE IF NOT EXISTS {{tables.a}} (id int);\n\nINSERT INTO {{tables.missing}} VALUES (1);\nCREATE TABLE {{tables.b}} (id int);\n",
    );
    let mm = AsyncMigrationManager::new(&db, dir.path());
    let err = mm.apply_pending_migrations().await.unwrap_err();
    assert_eq!(err.code(), Some("42P01"));
    let (file, message, _) = migration_parts(err);
    assert_eq!(file.as_deref(), Some("001_nt.sql"));
    assert!(message.contains("statement 2 of 3 (line 4)"), "{message}");
    assert!(message.contains("were committed"), "{message}");
    // Autocommit: the first statement stays, the file is not recorded.
    assert!(exists(&format!("\"{schema}\".a")).await);
    assert!(!exists(&format!("\"{schema}\".b")).await);
    assert!(tracked(&schema).await.is_empty());

    // Idempotent statements let the fixed file run again.
    dir.write(
        "001_nt.sql",
        "-- pgdbm:no-transaction\nCREATE TABLE IF NOT EXISTS {{tables.a}} (id int);\nCREATE TABLE {{tables.b}} (id int);\n",
    );
    mm.apply_pending_migrations().await.unwrap();
    assert_eq!(tracked(&schema).await, ["001_nt.sql"]);

    // The marker only counts in the leading comment block.
    dir.write(
        "002_late.sql",
        "SELECT 1;\n-- pgdbm:no-transaction\nSELECT 2;\n",
    );
    let (file, message, _) = migration_parts(mm.apply_pending_migrations().await.unwrap_err());
    assert_eq!(file.as_deref(), Some("002_late.sql"));
    assert!(
        message.contains("line 2") && message.contains("leading comment block"),
        "{message}"
    );
}
