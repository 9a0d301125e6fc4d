//! Migrations against the real server: ordering, tracking rows compatible with Python pgdbm,
//! checksums, atomicity, no-transaction files, templates, concurrency, embedded migrations and
//! bad input. Every test works in its own schema (or database) and cleans up even on panic.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{admin, admin_value, unique, SchemaGuard};
use pgdbm::{
    AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig, EmbeddedMigrations, Error,
};

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
// Applying, ordering, tracking table

#[tokio::test]
async fn applies_in_version_order_and_records_python_compatible_rows() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    dir.write("001_one.sql", "CREATE TABLE {{tables.log}} (n serial, name text);\nINSERT INTO {{tables.log}} (name) VALUES ('001_one');\n")
        .write("2_two.sql", "INSERT INTO {{tables.log}} (name) VALUES ('2_two');")
        .write("2_alpha.sql", "INSERT INTO {{tables.log}} (name) VALUES ('2_alpha');")
        .write("10_ten.sql", "INSERT INTO {{tables.log}} (name) VALUES ('10_ten');")
        .write("V3__three.sql", "INSERT INTO {{tables.log}} (name) VALUES ('V3__three');")
        .write("20240101120000_ts.sql", "INSERT INTO {{tables.log}} (name) VALUES ('20240101120000_ts');")
        .write("notes.txt", "not a migration")
        .write(".hidden.sql", "SELECT 1/0;");
    std::fs::create_dir(dir.path().join("sub.sql")).unwrap();

    let mm = AsyncMigrationManager::new(&db, dir.path());
    assert_eq!(
        mm.module(),
        schema,
        "the default module is the manager's schema"
    );
    assert_eq!(
        mm.qualified_table(),
        format!("\"{schema}\".schema_migrations")
    );
    let expected = [
        "001_one.sql",
        "2_alpha.sql",
        "2_two.sql",
        "V3__three.sql",
        "10_ten.sql",
        "20240101120000_ts.sql",
    ];

    let report = mm.apply_pending_migrations().await.expect("apply");
    let applied: Vec<&str> = report.applied.iter().map(|a| a.filename.as_str()).collect();
    assert_eq!(applied, expected);
    assert!(report.skipped.is_empty());
    assert_eq!(report.total, 6);
    assert!(report.applied.iter().all(|a| a.execution_time_ms >= 1));
    assert_eq!(
        report.total_time_ms,
        report
            .applied
            .iter()
            .map(|a| i64::from(a.execution_time_ms))
            .sum::<i64>()
    );

    // The files ran in that order, each once.
    let log = db
        .fetch_all("SELECT name FROM {{tables.log}} ORDER BY n", &[])
        .await
        .unwrap();
    let names: Vec<String> = log.iter().map(|r| r.get("name").unwrap()).collect();
    assert_eq!(
        names,
        expected.map(|f| f.trim_end_matches(".sql").to_owned())
    );

    // Rows as Python pgdbm writes them.
    assert_eq!(tracked(&schema).await, expected);
    let rows = db
        .fetch_all(
            &format!(
                "SELECT filename, checksum, module_name, applied_by = current_user AS by_me, execution_time_ms, \
                 applied_at <= now()::timestamp AS past FROM \"{schema}\".schema_migrations ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap();
    for (row, file) in rows.iter().zip(expected) {
        let content = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert_eq!(
            row.get::<String>("checksum").unwrap(),
            pgdbm::Migration::checksum_of(&content)
        );
        assert_eq!(
            row.get::<Option<String>>("module_name").unwrap().as_deref(),
            Some(schema.as_str())
        );
        assert!(row.get::<bool>("by_me").unwrap());
        assert!(row.get::<bool>("past").unwrap());
        assert!(row.get::<i32>("execution_time_ms").unwrap() >= 1);
    }
    // Known answer from Python: hashlib.sha256(text.strip().encode()).hexdigest().
    assert_eq!(
        rows[1].get::<String>("checksum").unwrap(),
        "54cba3583557d1311c2dacec773901da7b4edee74984604f6cd2ee67911cfac8"
    );

    // The table's definition is Python pgdbm 0.5's, column for column.
    let columns = admin(&format!(
        "SELECT column_name || ' ' || data_type || coalesce('(' || character_maximum_length || ')', '') || ' ' || \
         is_nullable || ' ' || coalesce(column_default, '-') FROM information_schema.columns \
         WHERE table_schema = '{schema}' AND table_name = 'schema_migrations' ORDER BY ordinal_position"
    ))
    .await
    .into_iter()
    .filter_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
    .collect::<Vec<_>>();
    assert_eq!(
        columns,
        vec![
            // The schema needs no quotes here (lower case), so regclass prints it bare.
            format!("id integer NO nextval('{schema}.schema_migrations_id_seq'::regclass)"),
            "filename character varying(255) NO -".to_owned(),
            "checksum character varying(64) NO -".to_owned(),
            "module_name character varying(100) YES -".to_owned(),
            "applied_at timestamp without time zone NO CURRENT_TIMESTAMP".to_owned(),
            "applied_by character varying(100) YES CURRENT_USER".to_owned(),
            "execution_time_ms integer YES -".to_owned(),
        ]
    );
    let indexes = admin_value(&format!(
        "SELECT string_agg(indexdef, ' | ' ORDER BY indexname) FROM pg_indexes WHERE schemaname = '{schema}' \
         AND tablename = 'schema_migrations'"
    ))
    .await
    .unwrap();
    assert!(
        indexes.contains("idx_schema_migrations_module ON"),
        "{indexes}"
    );
    assert!(indexes.contains("(module_name, filename)"), "{indexes}");
    assert!(
        indexes.contains("UNIQUE INDEX schema_migrations_filename_module_name_key"),
        "{indexes}"
    );

    // Nothing left to do.
    let again = mm.apply_pending_migrations().await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.skipped, expected);
    assert_eq!(again.total, 6);
    assert!(mm.get_pending_migrations().await.unwrap().is_empty());
    let applied = mm.get_applied_migrations().await.unwrap();
    assert_eq!(
        applied
            .iter()
            .map(|r| r.filename.as_str())
            .collect::<Vec<_>>(),
        expected
    );

    // History: newest first, limited.
    let history = mm.get_migration_history(2).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|r| r.filename.as_str())
            .collect::<Vec<_>>(),
        ["20240101120000_ts.sql", "10_ten.sql"]
    );
}

#[tokio::test]
async fn dry_run_and_status_work_on_a_fresh_database_and_write_nothing() {
    let (schema, _guard) = fresh_schema();
    let db = shared_db(&schema, |_| {}).await;
    let dir = TempDir::new();
    dir.write("001_a.sql", "CREATE TABLE {{tables.a}} (id int);")
        .write("002_b.sql", "CREATE TABLE {{tables.b}} (id int);");
    let mm = AsyncMigrationManager::new(&db, dir.path());

    let plan = mm.dry_run().await.expect("dry run on a fresh database");
    assert_eq!(
        plan.pending
            .iter()
            .map(|m| m.filename.as_str())
            .collect::<Vec<_>>(),
        ["001_a.sql", "002_b.sql"]
    );
    assert_eq!(
        plan.pending[0].checksum,
        pgdbm::Migration::checksum_of("CREATE TABLE {{tables.a}} (id int);")
    );
    assert!(plan.skipped.is_empty());
    assert_eq!(plan.total, 2);
    assert_eq!(mm.get_pending_migrations().await.unwrap().len(), 2);
    assert!(mm.get_applied_migrations().await.unwrap().is_empty());
    assert!(mm.get_migration_history(10).await.unwrap().is_empty());
    // Not even the schema was created.
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"
        ))
        .await,
        0
    );

    // A dry run checks pending files as the real run would.
    dir.write(
        "003_c.sql",
        "BEGIN;\nCREATE TABLE {{tables.c}} (id int);\nCOMMIT;",
    );
    let (file, message, _) = migration_parts(mm.dry_run().await.unwrap_err());
    assert_eq!(file.as_deref(), Some("003_c.sql"));
    assert!(
        message.contains("`BEGIN`") && message.contains("line 1"),
        "{message}"
    );
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"
        ))
        .await,
        0
    );

    // ensure_migrations_table creates the schema and the table, and is idempotent.
    mm.ensure_migrations_table().await.unwrap();
    mm.ensure_migrations_table().await.unwrap();
    assert!(exists(&format!("\"{schema}\".schema_migrations")).await);
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM \"{schema}\".schema_migrations"
        ))
        .await,
        0
    );
}

#[tokio::test]
async fn a_failing_file_leaves_none_of_its_objects_behind() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    dir.write("001_ok.sql", "CREATE TABLE {{tables.ok}} (id int);")
        .write(
            "002_bad.sql",
            "CREATE TABLE {{tables.first}} (id int);\nINSERT INTO {{tables.first}} VALUES (1);\nSELECT 1/0;\nCREATE TABLE {{tables.never}} (id int);\n",
        )
        .write("003_later.sql", "CREATE TABLE {{tables.later}} (id int);");
    let mm = AsyncMigrationManager::new(&db, dir.path());
    let err = mm.apply_pending_migrations().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some("22012"),
        "the server's SQLSTATE is kept: {err}"
    );
    let (file, message, _) = migration_parts(err);
    assert_eq!(file.as_deref(), Some("002_bad.sql"));
    assert!(message.contains("division by zero"), "{message}");
    assert!(message.contains("rolled back"), "{message}");
    assert!(
        message.contains("001_ok.sql"),
        "names what the run applied before: {message}"
    );

    assert!(exists(&format!("\"{schema}\".ok")).await);
    assert!(
        !exists(&format!("\"{schema}\".first")).await,
        "the first table of the failing file must not exist"
    );
    assert!(!exists(&format!("\"{schema}\".later")).await);
    assert_eq!(tracked(&schema).await, ["001_ok.sql"]);

    // A syntax error is reported with its line; the server parses the whole file first.
    dir.write(
        "002_bad.sql",
        "CREATE TABLE {{tables.first}} (id int);\n\nCREATE TABLEE {{tables.never}} (id int);\n",
    );
    let err = mm.apply_pending_migrations().await.unwrap_err();
    assert_eq!(err.code(), Some("42601"));
    let (file, message, _) = migration_parts(err);
    assert_eq!(file.as_deref(), Some("002_bad.sql"));
    assert!(message.contains("at line 3"), "{message}");
    assert!(!exists(&format!("\"{schema}\".first")).await);

    // Fixed, the run goes on from there.
    dir.write("002_bad.sql", "CREATE TABLE {{tables.first}} (id int);");
    let report = mm.apply_pending_migrations().await.unwrap();
    assert_eq!(
        report
            .applied
            .iter()
            .map(|a| a.filename.as_str())
            .collect::<Vec<_>>(),
        ["002_bad.sql", "003_later.sql"]
    );
    assert_eq!(report.skipped, ["001_ok.sql"]);
}

#[tokio::test]
async fn a_changed_applied_file_is_an_error_and_nothing_is_applied() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    dir.write("001_a.sql", "CREATE TABLE {{tables.a}} (id int);")
        .write("002_b.sql", "CREATE TABLE {{tables.b}} (id int);");
    let mm = AsyncMigrationManager::new(&db, dir.path());
    mm.apply_pending_migrations().await.unwrap();

    let old = pgdbm::Migration::checksum_of("CREATE TABLE {{tables.a}} (id int);");
    let changed = "CREATE TABLE {{tables.a}} (id bigint);";
    dir.write("001_a.sql", changed)
        .write("003_c.sql", "CREATE TABLE {{tables.c}} (id int);");
    let new = pgdbm::Migration::checksum_of(changed);

    for result in [
        mm.apply_pending_migrations().await.map(|_| ()),
        mm.get_pending_migrations().await.map(|_| ()),
        mm.dry_run().await.map(|_| ()),
    ] {
        let (file, message, _) = migration_parts(result.unwrap_err());
        assert_eq!(file.as_deref(), Some("001_a.sql"));
        assert!(
            message.contains(&old) && message.contains(&new),
            "both checksums: {message}"
        );
        assert!(message.contains("Nothing was applied"), "{message}");
    }
    assert!(!exists(&format!("\"{schema}\".c")).await);
    assert_eq!(tracked(&schema).await, ["001_a.sql", "002_b.sql"]);

    // Line endings and surrounding whitespace are not changes.
    dir.write(
        "001_a.sql",
        "\r\n  CREATE TABLE {{tables.a}} (id int);\r\n\r\n",
    )
    .write("003_c.sql", "SELECT 1;");
    let report = mm.apply_pending_migrations().await.unwrap();
    assert_eq!(report.applied.len(), 1);
}

#[tokio::test]
async fn checksums_of_crlf_cr_bom_and_whitespace_files_match_python() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    // Checksums computed by Python pgdbm 0.5.0 for these exact bytes (read_text + _calculate_checksum).
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "1_crlf.sql",
            b"CREATE TABLE {{tables.crlf}} (\r\n  id int\r\n);\r\n",
            "b32b26236ad29ce62e6507f03e2c696c3fcc4c60158ccca2db622b13cd769828",
        ),
        (
            "2_cr.sql",
            b"CREATE TABLE {{tables.cr}} (\r  id int\r);\r",
            "91330d201b597150b7f805d97cfcdd040c2dbd078666a81743355294d3589bf4",
        ),
        (
            "3_bom.sql",
            "\u{feff}CREATE TABLE {{tables.bom}} (id int);\n".as_bytes(),
            "334e476bfd0698369b36b2926c64a4ee61577ff28dea86ec9f94f32631040454",
        ),
        (
            "4_ws.sql",
            b"\n\n \t CREATE TABLE {{tables.ws}} (id int);   \n\n",
            "3126604f3204bee115308a31ae1c4b6938166634d9ac03d4205b73dc50969f37",
        ),
    ];
    for (name, bytes, _) in &cases {
        dir.write(name, bytes);
    }
    let mm = AsyncMigrationManager::new(&db, dir.path());
    let files = mm.find_migration_files().unwrap();
    for ((name, _, expected), file) in cases.iter().zip(&files) {
        assert_eq!(&file.filename, name);
        assert_eq!(&file.checksum, expected, "{name}");
    }
    // The BOM file runs too (the server would choke on the mark; it is not sent).
    let report = mm.apply_pending_migrations().await.unwrap();
    assert_eq!(report.applied.len(), 4);
    for (name, _, expected) in &cases {
        let recorded = admin_value(&format!(
            "SELECT checksum FROM \"{schema}\".schema_migrations WHERE filename = '{name}'"
        ))
        .await;
        assert_eq!(recorded.as_deref(), Some(*expected));
    }
    for t in ["crlf", "cr", "bom", "ws"] {
        assert!(exists(&format!("\"{schema}\".{t}")).await, "{t}");
    }
}

#[tokio::test]
async fn top_level_begin_and_commit_are_refused_before_anything_runs() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    dir.write("001_fine.sql", "CREATE TABLE {{tables.fine}} (id int);")
        .write(
            "002_wrapped.sql",
            "-- generated by an old tool\nDO $$ BEGIN PERFORM 1; END $$;\nBEGIN;\nCREATE TABLE {{tables.w}} (id int);\nCOMMIT;\n",
        );
    let mm = AsyncMigrationManager::new(&db, dir.path());
    let (file, message, _) = migration_parts(mm.apply_pending_migrations().await.unwrap_err());
    assert_eq!(file.as_deref(), Some("002_wrapped.sql"));
    assert!(
        message.contains("`BEGIN`") && message.contains("line 3"),
        "{message}"
    );
    assert!(
        message.contains("pgdbm:no-transaction"),
        "points to the right tool: {message}"
    );
    // Checked before applying anything: not even 001 ran.
    assert!(!exists(&format!("\"{schema}\".fine")).await);
    assert!(tracked(&schema).await.is_empty());

    for body in [
        "START TRANSACTION;",
        "SELECT 1;\nEND;",
        "ROLLBACK;",
        "COMMIT AND CHAIN;",
    ] {
        dir.write("002_wrapped.sql", body);
        let (file, _, _) = migration_parts(mm.apply_pending_migrations().await.unwrap_err());
        assert_eq!(file.as_deref(), Some("002_wrapped.sql"), "{body}");
    }
    // Savepoints and BEGIN inside bodies are fine.
    dir.write(
        "002_wrapped.sql",
        "SAVEPOINT s;\nCREATE TABLE {{tables.w}} (id int);\nROLLBACK TO SAVEPOINT s;\nDO $$ BEGIN CREATE TABLE {{tables.w2}} (id int); END $$;\n",
    );
    mm.apply_pending_migrations().await.unwrap();
    assert!(!exists(&format!("\"{schema}\".w")).await);
    assert!(exists(&format!("\"{schema}\".w2")).await);
}

// ---------------------------------------------------------------------------------------------
// No-transaction files

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

// ---------------------------------------------------------------------------------------------
// Templates, schemas, modules

#[tokio::test]
async fn templates_and_a_mixed_case_schema_created_on_a_shared_pool() {
    let schema = format!("Mixed_{}", unique("Case"));
    let _guard = SchemaGuard(schema.clone());
    let (other, _other_guard) = fresh_schema();
    admin(&format!("CREATE SCHEMA \"{other}\"")).await;
    let db = shared_db(&schema, |_| {}).await;
    let dir = TempDir::new();
    dir.write(
        "001_t.sql",
        "CREATE TABLE {{tables.users}} (id int);\nCREATE TABLE {{schema}}.direct (id int);",
    )
    .write(
        "002_other.sql",
        format!("CREATE TABLE {{{{tables.{other}.elsewhere}}}} (id int);"),
    );
    let mm = AsyncMigrationManager::new(&db, dir.path());
    assert_eq!(
        mm.qualified_table(),
        format!("\"{schema}\".schema_migrations")
    );
    mm.apply_pending_migrations()
        .await
        .expect("the schema is created when missing");
    assert!(exists(&format!("\"{schema}\".users")).await);
    assert!(exists(&format!("\"{schema}\".direct")).await);
    assert!(exists(&format!("\"{other}\".elsewhere")).await);
    assert!(exists(&format!("\"{schema}\".schema_migrations")).await);
    let module = admin_value(&format!(
        "SELECT string_agg(DISTINCT module_name, ',') FROM \"{schema}\".schema_migrations"
    ))
    .await;
    assert_eq!(module.as_deref(), Some(schema.as_str()));

    // A broken placeholder names the file and the placeholder.
    dir.write("003_bad.sql", "CREATE TABLE {{tables.bad-name}} (id int);");
    let err = mm.apply_pending_migrations().await.unwrap_err();
    let (file, message, err) = migration_parts(err);
    assert_eq!(file.as_deref(), Some("003_bad.sql"));
    assert!(message.contains("template"), "{message}");
    assert!(
        matches!(err, Error::Migration { source: Some(ref s), .. } if matches!(**s, Error::Schema(_)))
    );
}

#[tokio::test]
async fn null_module_rows_count_for_every_module_and_modules_share_a_table() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    dir.write(
        "001_a.sql",
        "CREATE TABLE IF NOT EXISTS {{tables.a}} (id int);",
    )
    .write(
        "002_b.sql",
        "CREATE TABLE IF NOT EXISTS {{tables.b}} (id int);",
    );
    let first = AsyncMigrationManager::new(&db, dir.path())
        .table("shared_migrations")
        .unwrap();
    first.ensure_migrations_table().await.unwrap();
    // A row from an old tool without a module name.
    let sum = pgdbm::Migration::checksum_of("CREATE TABLE IF NOT EXISTS {{tables.a}} (id int);");
    db.execute(
        &format!("INSERT INTO \"{schema}\".shared_migrations (filename, checksum, module_name) VALUES ('001_a.sql', $1, NULL)"),
        &[&sum],
    )
    .await
    .unwrap();

    for module in ["alpha", "beta"] {
        let mm = AsyncMigrationManager::new(&db, dir.path())
            .table("shared_migrations")
            .unwrap()
            .module_name(module)
            .unwrap();
        assert_eq!(mm.module(), module);
        assert_eq!(
            mm.get_pending_migrations()
                .await
                .unwrap()
                .iter()
                .map(|m| m.filename.as_str())
                .collect::<Vec<_>>(),
            ["002_b.sql"]
        );
        let report = mm.apply_pending_migrations().await.unwrap();
        assert_eq!(
            report
                .applied
                .iter()
                .map(|a| a.filename.as_str())
                .collect::<Vec<_>>(),
            ["002_b.sql"]
        );
        assert_eq!(report.skipped, ["001_a.sql"]);
        assert_eq!(report.total, 2);
        let applied = mm.get_applied_migrations().await.unwrap();
        assert_eq!(applied[0].module_name, None);
        assert_eq!(applied[1].module_name.as_deref(), Some(module));
    }
    let rows = admin_value(&format!(
        "SELECT string_agg(filename || ':' || coalesce(module_name, 'NULL'), ' ' ORDER BY id) FROM \"{schema}\".shared_migrations"
    ))
    .await;
    assert_eq!(
        rows.as_deref(),
        Some("001_a.sql:NULL 002_b.sql:alpha 002_b.sql:beta")
    );
    // The default table was never created.
    assert!(!exists(&format!("\"{schema}\".schema_migrations")).await);
}

#[tokio::test]
async fn a_schemaless_manager_uses_the_default_module_and_public() {
    let table = unique("mig_public");
    let made = unique("mig_made");
    let _cleanup = SchemaGuardTables(vec![format!("public.{table}"), format!("public.{made}")]);
    let db = AsyncDatabaseManager::new(common::config()).unwrap();
    db.connect().await.unwrap();
    let dir = TempDir::new();
    dir.write(
        "001_x.sql",
        format!("CREATE TABLE {{{{tables.{made}}}}} (id int);"),
    );
    let mm = AsyncMigrationManager::new(&db, dir.path())
        .table(&table)
        .unwrap();
    assert_eq!(mm.module(), AsyncMigrationManager::DEFAULT_MODULE);
    assert_eq!(mm.qualified_table(), format!("\"public\".{table}"));
    mm.apply_pending_migrations().await.unwrap();
    assert_eq!(
        admin_value(&format!("SELECT module_name FROM public.{table}"))
            .await
            .as_deref(),
        Some("default")
    );
    assert!(exists(&format!("public.{made}")).await);
}

/// Drops tables when dropped.
struct SchemaGuardTables(Vec<String>);

impl Drop for SchemaGuardTables {
    fn drop(&mut self) {
        for t in &self.0 {
            common::drop_with_fresh_runtime(format!("DROP TABLE IF EXISTS {t}"));
        }
    }
}

#[tokio::test]
async fn embedded_migrations_apply_into_the_hosts_schema() {
    static FIXTURES: EmbeddedMigrations =
        pgdbm::embed_migrations!("$CARGO_MANIFEST_DIR/tests/fixtures/migrations");
    static LISTED: EmbeddedMigrations = EmbeddedMigrations::from_files(&[
        ("001_first.sql", "CREATE TABLE {{tables.listed}} (id int);"),
        (
            "002_second.sql",
            "INSERT INTO {{tables.listed}} VALUES (42);",
        ),
    ]);
    let (schema, _guard) = fresh_schema();
    let db = shared_db(&schema, |_| {}).await;

    let mut names: Vec<&str> = FIXTURES.files().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "001_create_items.sql",
            "002_add_price.sql",
            "README.md",
            "V3__seed.sql"
        ]
    );
    let mm = AsyncMigrationManager::from_embedded(&db, FIXTURES)
        .module_name("fixture_lib")
        .unwrap();
    let report = mm.apply_pending_migrations().await.unwrap();
    assert_eq!(
        report
            .applied
            .iter()
            .map(|a| a.filename.as_str())
            .collect::<Vec<_>>(),
        ["001_create_items.sql", "002_add_price.sql", "V3__seed.sql"]
    );
    let on_disk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/migrations/002_add_price.sql"
    ))
    .unwrap();
    assert_eq!(
        report.applied[1].checksum,
        pgdbm::Migration::checksum_of(&on_disk)
    );
    let total: Option<i64> = db
        .fetch_value("SELECT sum(price_cents)::int8 FROM {{tables.items}}", &[])
        .await
        .unwrap();
    assert_eq!(total, Some(215));
    assert!(mm
        .apply_pending_migrations()
        .await
        .unwrap()
        .applied
        .is_empty());
    // Embedded files cannot be created at run time.
    assert!(matches!(
        mm.create_migration("x", "SELECT 1").await,
        Err(Error::Migration { .. })
    ));

    let listed = AsyncMigrationManager::from_embedded(&db, LISTED)
        .module_name("listed")
        .unwrap();
    assert_eq!(
        listed
            .apply_pending_migrations()
            .await
            .unwrap()
            .applied
            .len(),
        2
    );
    let v: Option<i32> = db
        .fetch_value("SELECT id FROM {{tables.listed}}", &[])
        .await
        .unwrap();
    assert_eq!(v, Some(42));
}

// ---------------------------------------------------------------------------------------------
// Warnings

#[tokio::test]
async fn missing_and_out_of_order_files_are_warned_about() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    dir.write("001_a.sql", "SELECT 1;")
        .write("005_e.sql", "SELECT 5;");
    let mm = AsyncMigrationManager::new(&db, dir.path());
    mm.apply_pending_migrations().await.unwrap();

    std::fs::remove_file(dir.path().join("001_a.sql")).unwrap();
    dir.write("003_c.sql", "CREATE TABLE {{tables.c}} (id int);");
    let (logs, _sub) = Captured::start();
    let report = mm.apply_pending_migrations().await.unwrap();
    assert_eq!(
        report
            .applied
            .iter()
            .map(|a| a.filename.as_str())
            .collect::<Vec<_>>(),
        ["003_c.sql"]
    );
    assert!(exists(&format!("\"{schema}\".c")).await);
    let text = logs.text();
    assert!(
        text.contains("WARN")
            && text.contains("001_a.sql is recorded as applied")
            && text.contains("missing"),
        "{text}"
    );
    assert!(
        text.contains("003_c.sql is new but sorts before the already applied 005_e.sql"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn invalid_table_names_are_refused() {
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        schema: Some("app".into()),
        ..Default::default()
    })
    .unwrap();
    for name in [
        "migrations\"; DROP TABLE users; --",
        "migrations' OR '1'='1",
        "123_migrations",
        "migrations-table",
        "migrations table",
        "",
        &"m".repeat(64),
    ] {
        match AsyncMigrationManager::new(&db, "migrations").table(name) {
            Err(Error::Migration {
                file: None,
                message,
                source: Some(source),
            }) => {
                assert!(matches!(*source, Error::Schema(_)), "{name}: {source:?}");
                assert!(
                    message.contains("letters, digits and underscores"),
                    "{message}"
                );
            }
            other => panic!("{name:?} was accepted: {other:?}"),
        }
    }
    for name in ["", "   ", &"m".repeat(101)] {
        assert!(
            matches!(
                AsyncMigrationManager::new(&db, "m").module_name(name),
                Err(Error::Migration { .. })
            ),
            "{name:?}"
        );
    }
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_leading_outside_the_directory_are_refused() {
    let (db, _guard) = common::schema_db().await;
    let dir = TempDir::new();
    let outside = TempDir::new();
    outside.write("evil.sql", "DROP SCHEMA public CASCADE;");
    dir.write("001_a.sql", "SELECT 1;");
    std::os::unix::fs::symlink(
        dir.path().join("001_a.sql"),
        dir.path().join("002_inside.sql"),
    )
    .unwrap();
    let mm = AsyncMigrationManager::new(&db, dir.path());
    assert_eq!(
        mm.find_migration_files().unwrap().len(),
        2,
        "a symlink inside the directory is fine"
    );

    std::os::unix::fs::symlink(
        outside.path().join("evil.sql"),
        dir.path().join("003_evil.sql"),
    )
    .unwrap();
    for result in [
        mm.find_migration_files().map(|_| ()),
        mm.apply_pending_migrations().await.map(|_| ()),
    ] {
        let (file, message, _) = migration_parts(result.unwrap_err());
        assert_eq!(file.as_deref(), Some("003_evil.sql"));
        assert!(
            message.contains("outside the migrations directory"),
            "{message}"
        );
    }
    assert_eq!(
        count("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'").await,
        1
    );
}

#[tokio::test]
async fn empty_and_non_utf8_files_are_errors_naming_the_file() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    dir.write("001_ok.sql", "CREATE TABLE {{tables.ok}} (id int);");
    let mm = AsyncMigrationManager::new(&db, dir.path());
    for (content, needle) in [
        (&b""[..], "empty"),
        (b"  \n\t\r\n", "empty"),
        (b"SELECT '\xff\xfe';", "UTF-8"),
    ] {
        dir.write("002_bad.sql", content);
        let (file, message, _) = migration_parts(mm.apply_pending_migrations().await.unwrap_err());
        assert_eq!(file.as_deref(), Some("002_bad.sql"));
        assert!(message.contains(needle), "{message}");
    }
    assert!(!exists(&format!("\"{schema}\".ok")).await, "nothing ran");

    let missing = AsyncMigrationManager::new(&db, dir.path().join("nope"));
    let (file, message, _) = migration_parts(missing.get_pending_migrations().await.unwrap_err());
    assert_eq!(file, None);
    assert!(message.contains("migrations directory"), "{message}");
}

#[tokio::test]
async fn create_migration_writes_a_timestamped_file_and_refuses_paths() {
    let (db, guard) = common::schema_db().await;
    let schema = guard.0.clone();
    let dir = TempDir::new();
    let target = dir.path().join("new_dir");
    let mm = AsyncMigrationManager::new(&db, &target);

    for bad in [
        "../x",
        "../../etc/passwd",
        "a/b",
        "..",
        ".hidden",
        "",
        "drop;table",
    ] {
        let (_, message, _) =
            migration_parts(mm.create_migration(bad, "SELECT 1;").await.unwrap_err());
        assert!(
            message.contains("invalid migration name"),
            "{bad:?}: {message}"
        );
    }
    assert!(
        !dir.path().join("x").exists() && !target.exists(),
        "nothing was written"
    );
    let (_, message, _) = migration_parts(
        mm.create_migration("wrapped", "BEGIN;\nSELECT 1;\nCOMMIT;")
            .await
            .unwrap_err(),
    );
    assert!(message.contains("BEGIN"), "{message}");

    let content = "CREATE TABLE {{tables.created}} (id int);\n";
    let path = mm
        .create_migration("Add created-table", content)
        .await
        .unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(path.parent().unwrap(), target);
    // YYYYMMDD_HHMMSS_name.sql, as Python pgdbm names them.
    assert!(name.ends_with("_Add_created_table.sql"), "{name}");
    assert!(
        name[..8].bytes().all(|b| b.is_ascii_digit())
            && &name[8..9] == "_"
            && name[9..15].bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        content,
        "written exactly, never wrapped in BEGIN/COMMIT"
    );
    assert!(
        mm.create_migration("Add created-table", content)
            .await
            .is_err(),
        "never overwrites"
    );

    let report = mm.apply_pending_migrations().await.unwrap();
    assert_eq!(report.applied[0].filename, name);
    assert!(exists(&format!("\"{schema}\".created")).await);
}

// ---------------------------------------------------------------------------------------------
// Concurrency

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

fn race_files(dir: &TempDir) {
    dir.write("001_log.sql", "CREATE TABLE {{tables.race_log}} (file text PRIMARY KEY, backend int DEFAULT pg_backend_pid());\nINSERT INTO {{tables.race_log}} (file) VALUES ('001');")
        .write("002_slow.sql", "SELECT pg_sleep(0.6);\nINSERT INTO {{tables.race_log}} (file) VALUES ('002');")
        .write("003_more.sql", "CREATE TABLE {{tables.more}} (id int);\nINSERT INTO {{tables.race_log}} (file) VALUES ('003');")
        .write("004_last.sql", "INSERT INTO {{tables.race_log}} (file) VALUES ('004');");
}

#[tokio::test]
async fn eight_tasks_and_two_processes_race_on_a_fresh_schema() {
    let (schema, _guard) = fresh_schema();
    let dir = TempDir::new();
    race_files(&dir);
    let spec = format!("{schema}|{}", dir.path().display());

    let exe = std::env::current_exe().unwrap();
    let children: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["racer_entry", "--exact", "--nocapture", "--test-threads=1"])
                .env(RACER_ENV, &spec)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn racer process")
        })
        .collect();

    let db = shared_db(&schema, |c| c.max_connections = 12).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            let path = dir.path().to_path_buf();
            tokio::spawn(async move {
                AsyncMigrationManager::new(&db, path)
                    .apply_pending_migrations()
                    .await
            })
        })
        .collect();

    let mut applied: Vec<String> = Vec::new();
    for t in tasks {
        let report = t.await.unwrap().expect("every racer ends with success");
        assert_eq!(report.total, 4);
        applied.extend(report.applied.into_iter().map(|a| a.filename));
    }
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "racer process failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "the racer test really ran:\n{stdout}"
        );
        // The harness prints "test racer_entry ... " on the same line, before the output.
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("RACER_APPLIED=").map(|(_, rest)| rest))
            .expect("racer output");
        applied.extend(line.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
        assert!(stdout.contains("RACER_TOTAL=4"), "{stdout}");
    }
    applied.sort();
    assert_eq!(
        applied,
        [
            "001_log.sql",
            "002_slow.sql",
            "003_more.sql",
            "004_last.sql"
        ],
        "each file applied exactly once"
    );
    assert_eq!(
        tracked(&schema).await,
        [
            "001_log.sql",
            "002_slow.sql",
            "003_more.sql",
            "004_last.sql"
        ]
    );
    assert_eq!(
        count(&format!("SELECT count(*) FROM \"{schema}\".race_log")).await,
        4
    );
}

#[tokio::test]
async fn two_modules_sharing_one_table_race_without_deadlock() {
    let (schema, _guard) = fresh_schema();
    let a = TempDir::new();
    let b = TempDir::new();
    a.write(
        "001_a.sql",
        "CREATE TABLE {{tables.mod_a}} (id int);\nSELECT pg_sleep(0.2);",
    )
    .write("002_a.sql", "INSERT INTO {{tables.mod_a}} VALUES (1);");
    b.write(
        "001_b.sql",
        "CREATE TABLE {{tables.mod_b}} (id int);\nSELECT pg_sleep(0.2);",
    )
    .write("002_b.sql", "INSERT INTO {{tables.mod_b}} VALUES (1);");
    let db = shared_db(&schema, |c| c.max_connections = 10).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let db = db.clone();
        let (path, module) = if i % 2 == 0 {
            (a.path().to_path_buf(), "mod_a")
        } else {
            (b.path().to_path_buf(), "mod_b")
        };
        tasks.push(tokio::spawn(async move {
            AsyncMigrationManager::new(&db, path)
                .module_name(module)?
                .apply_pending_migrations()
                .await
        }));
    }
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("no deadlock");
    let mut applied = 0;
    for r in all {
        applied += r.unwrap().expect("success").applied.len();
    }
    assert_eq!(applied, 4);
    let rows = admin_value(&format!(
        "SELECT string_agg(module_name || ':' || filename, ' ' ORDER BY module_name, filename) FROM \"{schema}\".schema_migrations"
    ))
    .await;
    assert_eq!(
        rows.as_deref(),
        Some("mod_a:001_a.sql mod_a:002_a.sql mod_b:001_b.sql mod_b:002_b.sql")
    );
}

#[tokio::test]
async fn a_waiting_racer_outlasts_lock_timeout() {
    let (schema, _guard) = fresh_schema();
    let dir = TempDir::new();
    dir.write(
        "001_slow.sql",
        "CREATE TABLE {{tables.slow}} (id int);\nSELECT pg_sleep(1.5);",
    );
    // The pool's lock_timeout (300 ms) is far shorter than the time the lock is held.
    let db = shared_db(&schema, |c| {
        c.lock_timeout_ms = Some(300);
        c.max_connections = 4;
    })
    .await;
    let started = Instant::now();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            let path = dir.path().to_path_buf();
            tokio::spawn(async move {
                let r = AsyncMigrationManager::new(&db, path)
                    .apply_pending_migrations()
                    .await;
                (r, started.elapsed())
            })
        })
        .collect();
    let mut applied = 0;
    let mut longest = Duration::ZERO;
    for run in runs {
        let (r, took) = run.await.unwrap();
        applied += r.expect("both succeed").applied.len();
        longest = longest.max(took);
    }
    assert_eq!(applied, 1);
    assert!(
        longest >= Duration::from_millis(1400),
        "one racer waited for the other: {longest:?}"
    );
}

#[tokio::test]
async fn a_statement_longer_than_statement_timeout_completes() {
    let (schema, _guard) = fresh_schema();
    let dir = TempDir::new();
    dir.write(
        "001_long.sql",
        "CREATE TABLE {{tables.long}} AS SELECT 1 AS id FROM pg_sleep(1.0);",
    )
    .write(
        "002_long_nt.sql",
        "-- pgdbm:no-transaction\nSELECT pg_sleep(0.7);\nINSERT INTO {{tables.long}} VALUES (2);",
    );
    let db = shared_db(&schema, |c| {
        c.statement_timeout_ms = Some(200);
        c.command_timeout = 0.3;
    })
    .await;
    // The pool's connections do time out such a statement.
    let err = db.execute("SELECT pg_sleep(1)", &[]).await.unwrap_err();
    assert!(err.is_timeout() || err.code() == Some("57014"), "{err}");
    let report = AsyncMigrationManager::new(&db, dir.path())
        .apply_pending_migrations()
        .await
        .expect("completes");
    assert_eq!(report.applied.len(), 2);
    assert!(report.applied[0].execution_time_ms >= 1000, "{report:?}");
    assert_eq!(
        count(&format!("SELECT count(*) FROM \"{schema}\".long")).await,
        2
    );
}

async fn pool_pids(db: &AsyncDatabaseManager, n: usize) -> Vec<i32> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(db.acquire().await.unwrap());
    }
    conns.iter().map(|c| c.backend_pid()).collect()
}

async fn wait_backend_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
    ))
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "backend {pid} still connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn when_unlocking_fails_the_connection_is_discarded() {
    let (schema, _guard) = fresh_schema();
    let dir = TempDir::new();
    // The migration itself drops every advisory lock of its session, so the run's unlock fails.
    dir.write("001_unlock.sql", "CREATE TABLE {{tables.pid}} AS SELECT pg_backend_pid() AS pid;\nSELECT pg_advisory_unlock_all();");
    let db = shared_db(&schema, |c| {
        c.min_connections = 2;
        c.max_connections = 2;
    })
    .await;
    let (logs, _sub) = Captured::start();
    AsyncMigrationManager::new(&db, dir.path())
        .apply_pending_migrations()
        .await
        .unwrap();
    let pid: i32 = db
        .fetch_value("SELECT pid FROM {{tables.pid}}", &[])
        .await
        .unwrap()
        .unwrap();
    assert!(
        logs.text().contains("could not release the migration lock"),
        "{}",
        logs.text()
    );
    wait_backend_gone(pid).await;
    assert!(
        !pool_pids(&db, 2).await.contains(&pid),
        "the connection never went back to the pool"
    );
}

#[tokio::test]
async fn a_cancelled_run_releases_its_lock_and_connection() {
    let (schema, _guard) = fresh_schema();
    let marker = unique("cancel_marker");
    let dir = TempDir::new();
    dir.write("001_fast.sql", "CREATE TABLE {{tables.fast}} (id int);")
        .write(
            "002_slow.sql",
            format!(
                "CREATE TABLE {{{{tables.slow}}}} (id int);\nSELECT pg_sleep(60) /* {marker} */;"
            ),
        );
    let db = shared_db(&schema, |c| {
        c.min_connections = 2;
        c.max_connections = 2;
    })
    .await;
    let run = {
        let db = db.clone();
        let path = dir.path().to_path_buf();
        tokio::spawn(async move {
            AsyncMigrationManager::new(&db, path)
                .apply_pending_migrations()
                .await
        })
    };
    // Wait until the slow file runs, and note the backend that holds the lock.
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid: i32 = loop {
        let found = admin_value(&format!(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
        ))
        .await;
        if let Some(p) = found {
            break p.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the slow migration never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = {pid}"
        ))
        .await,
        2
    );
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());

    wait_backend_gone(pid).await;
    assert!(
        !exists(&format!("\"{schema}\".slow")).await,
        "the cancelled file was rolled back"
    );
    assert_eq!(tracked(&schema).await, ["001_fast.sql"]);
    assert!(!pool_pids(&db, 2).await.contains(&pid));

    // The lock is free: the next run goes straight through.
    dir.write("002_slow.sql", "CREATE TABLE {{tables.slow}} (id int);");
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        AsyncMigrationManager::new(&db, dir.path()).apply_pending_migrations(),
    )
    .await
    .expect("the lock was released")
    .unwrap();
    assert_eq!(report.applied[0].filename, "002_slow.sql");
}
