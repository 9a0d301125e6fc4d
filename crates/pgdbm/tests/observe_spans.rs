//! Every query path has a span named and attributed by OpenTelemetry's database conventions,
//! under the caller's span, with no parameter value in any field.

mod capture;
mod common;

use capture::{Capture, SpanRec};
use common::*;
use futures_util::TryStreamExt;
use pgdbm::{AsyncDatabaseManager, Executor};
use tracing::Instrument;

/// Longer than 20 characters: events show only its length.
const LONG_SECRET: &str = "long-secret-value-0123456789";
/// Short: events show it, spans never do.
const SHORT_SECRET: &str = "s3cr3t@x";

#[derive(Debug, serde::Deserialize, pgdbm::FromRow)]
#[allow(dead_code)]
struct User {
    id: i32,
    email: String,
}

/// Runs every path of `ex` once. Expects the users table to hold SHORT_SECRET's row.
async fn exercise(ex: &impl Executor) {
    ex.execute(
        "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
        &[&"a@x", &LONG_SECRET],
    )
    .await
    .unwrap();
    let _: i32 = ex
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&"b@x"],
        )
        .await
        .unwrap();
    ex.executemany(
        "INSERT INTO {{tables.users}} (email, name) VALUES ($1, $2)",
        vec![("c@x", LONG_SECRET), ("d@x", "n"), ("e@x", "n")],
    )
    .await
    .unwrap();
    let q = "SELECT id, email FROM {{tables.users}} WHERE email = $1";
    let _: Option<i64> = ex
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    let _: Option<String> = ex.fetch_value_at(q, &[&SHORT_SECRET], 1).await.unwrap();
    ex.fetch_one(q, &[&SHORT_SECRET]).await.unwrap().unwrap();
    ex.fetch_all(q, &[&LONG_SECRET]).await.unwrap();
    let _: Option<User> = ex.fetch_as_model(q, &[&SHORT_SECRET]).await.unwrap();
    let _: Vec<User> = ex.fetch_all_as_model(q, &[&SHORT_SECRET]).await.unwrap();
    let _: Option<User> = ex.fetch_one_as(q, &[&SHORT_SECRET]).await.unwrap();
    let _: Vec<User> = ex.fetch_all_as(q, &[&SHORT_SECRET]).await.unwrap();
    let _: Vec<i32> = ex
        .fetch_column("SELECT id FROM {{tables.users}} ORDER BY id", &[])
        .await
        .unwrap();
    ex.copy_records_to_table(
        "users",
        vec![("f@x", LONG_SECRET), ("g@x", SHORT_SECRET)],
        Some(&["email", "name"]),
    )
    .await
    .unwrap();
    assert!(ex.table_exists("users").await.unwrap());
    let csv: &[u8] = b"h@x,n\ni@x,n\n";
    assert_eq!(
        ex.copy_from_csv("users", Some(&["email", "name"]), false, csv)
            .await
            .unwrap(),
        2
    );
}

const METHODS: [&str; 15] = [
    "execute",
    "execute_and_return_id",
    "executemany",
    "fetch_value",
    "fetch_value_at",
    "fetch_one",
    "fetch_all",
    "fetch_as_model",
    "fetch_all_as_model",
    "fetch_one_as",
    "fetch_all_as",
    "fetch_column",
    "copy_records_to_table",
    "table_exists",
    "copy_from_csv",
];

async fn setup() -> (AsyncDatabaseManager, SchemaGuard, String) {
    let (db, guard) = schema_db().await;
    users_table(&db).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&SHORT_SECRET],
    )
    .await
    .unwrap();
    // As a person writes it: no SQL quotes.
    let users = format!("{}.users", guard.0);
    (db, guard, users)
}

/// The attributes every query span carries.
fn assert_common(s: &SpanRec, schema: &str) {
    assert_eq!(s.get("otel.kind"), Some("client"), "{s:#?}");
    assert_eq!(s.get("db.system.name"), Some("postgresql"), "{s:#?}");
    assert_eq!(s.get("db.namespace"), Some("postgres"), "{s:#?}");
    let server: tokio_postgres::Config = database_url().parse().unwrap();
    let port = server
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    assert_eq!(s.get("server.address"), Some("127.0.0.1"), "{s:#?}");
    assert_eq!(s.get("server.port"), Some(port.as_str()), "{s:#?}");
    assert_eq!(s.get("pgdbm.schema"), Some(schema), "{s:#?}");
    assert!(s.get("error.type").is_none(), "{s:#?}");
}

fn assert_query(s: &SpanRec, schema: &str, op: &str, collection: Option<&str>) {
    assert_common(s, schema);
    assert_eq!(s.get("db.operation.name"), Some(op), "{s:#?}");
    assert_eq!(s.get("db.collection.name"), collection, "{s:#?}");
    let name = match collection {
        Some(c) => format!("{op} {c}"),
        None => op.to_owned(),
    };
    assert_eq!(s.get("otel.name"), Some(name.as_str()), "{s:#?}");
    let text = s.get("db.query.text").expect("db.query.text");
    assert!(!text.contains("{{"), "rendered: {text}");
}

/// The span attributes of every path of `exercise`, all under `caller`.
fn assert_exercised(cap: &Capture, schema: &str, users: &str, caller: u64) {
    for m in METHODS {
        let s = cap.one(m);
        assert_eq!(s.parent, Some(caller), "{m} sits under the caller's span");
    }
    let u = Some(users);
    assert_query(&cap.one("execute"), schema, "INSERT", u);
    assert_eq!(cap.one("execute").get("pgdbm.rows_affected"), Some("1"));
    let id = cap.one("execute_and_return_id");
    assert_query(&id, schema, "INSERT", u);
    assert!(id.get("db.query.text").unwrap().ends_with("RETURNING id"));
    assert_eq!(id.get("db.response.returned_rows"), Some("1"));
    let many = cap.one("executemany");
    assert_query(&many, schema, "INSERT", u);
    assert_eq!(many.get("db.operation.batch.size"), Some("3"));
    for m in [
        "fetch_value",
        "fetch_value_at",
        "fetch_one",
        "fetch_as_model",
        "fetch_one_as",
    ] {
        let s = cap.one(m);
        assert_query(&s, schema, "SELECT", u);
        assert_eq!(s.get("db.response.returned_rows"), Some("1"), "{m}");
    }
    let all = cap.one("fetch_all");
    assert_query(&all, schema, "SELECT", u);
    assert_eq!(all.get("db.response.returned_rows"), Some("0"));
    for m in ["fetch_all_as_model", "fetch_all_as"] {
        assert_eq!(
            cap.one(m).get("db.response.returned_rows"),
            Some("1"),
            "{m}"
        );
    }
    assert_eq!(
        cap.one("fetch_column").get("db.response.returned_rows"),
        Some("6")
    );
    let copy = cap.one("copy_records_to_table");
    assert_query(&copy, schema, "COPY", u);
    assert_eq!(copy.get("db.operation.batch.size"), Some("2"));
    assert_eq!(
        copy.get("db.query.text"),
        Some(format!("COPY \"{schema}\".users FROM STDIN (FORMAT binary)").as_str())
    );
    let csv = cap.one("copy_from_csv");
    assert_query(&csv, schema, "COPY", u);
    assert_eq!(csv.get("db.operation.batch.size"), Some("2"));
    assert_eq!(
        csv.get("db.query.text"),
        Some(format!("COPY \"{schema}\".users FROM STDIN (FORMAT csv)").as_str())
    );
    // The catalog query names two tables: no collection.
    assert_query(&cap.one("table_exists"), schema, "SELECT", None);
}

fn assert_no_parameter_values(cap: &Capture) {
    for s in cap.spans() {
        for (k, v) in &s.fields {
            for secret in [LONG_SECRET, SHORT_SECRET] {
                assert!(!v.contains(secret), "span {} field {k} = {v}", s.name);
            }
        }
    }
    for e in cap.events() {
        for (k, v) in &e.fields {
            assert!(!v.contains(LONG_SECRET), "event field {k} = {v}");
        }
    }
}

#[tokio::test]
async fn every_manager_path_has_its_span() {
    let (db, guard, users) = setup().await;
    let (cap, _sub) = Capture::install();
    let caller = tracing::info_span!("caller");
    let caller_id = caller.id().unwrap().into_u64();
    async {
        exercise(&db).await;
        let rows = db
            .fetch_stream("SELECT * FROM {{tables.users}} ORDER BY id", &[])
            .await
            .unwrap();
        let rows: Vec<_> = rows.try_collect().await.unwrap();
        assert_eq!(rows.len(), 10);
    }
    .instrument(caller)
    .await;
    assert_exercised(&cap, &guard.0, &users, caller_id);
    let stream = cap.one("fetch_stream");
    assert_query(&stream, &guard.0, "SELECT", Some(&users));
    assert_eq!(stream.get("db.response.returned_rows"), Some("10"));
    assert_eq!(stream.parent, Some(caller_id));

    // Out of a transaction every call waits for a pool connection, in an internal span
    // under the operation's client span.
    let acquires = cap.named("pgdbm.pool.acquire");
    assert!(acquires.len() > METHODS.len(), "{}", acquires.len());
    let execute = cap.one("execute");
    let under_execute: Vec<_> = acquires
        .iter()
        .filter(|a| a.parent == Some(execute.id))
        .collect();
    assert_eq!(under_execute.len(), 1, "{acquires:#?}");
    assert_eq!(under_execute[0].get("db.namespace"), Some("postgres"));
    assert_eq!(under_execute[0].get("otel.kind"), Some("internal"));
    assert_no_parameter_values(&cap);
}

#[tokio::test]
async fn connecting_makes_no_root_span_and_a_commit_reads_as_commit() {
    let (cap, _sub) = Capture::install();
    let (db, _guard, _users) = setup().await;
    // Connecting checks connections out outside any operation: no span of their own.
    let roots: Vec<_> = cap
        .named("pgdbm.pool.acquire")
        .into_iter()
        .filter(|s| s.parent.is_none())
        .collect();
    assert!(roots.is_empty(), "stray root spans: {roots:#?}");
    let caller = tracing::info_span!("caller");
    async {
        let tx = db.transaction().await.unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(caller)
    .await;
    let commit = cap.one("commit");
    assert_eq!(commit.get("db.query.text"), Some("COMMIT"));
    assert_eq!(commit.get("otel.name"), Some("COMMIT"));
}

#[tokio::test]
async fn every_transaction_path_and_control_statement_has_its_span() {
    let (db, guard, users) = setup().await;
    let (cap, _sub) = Capture::install();
    let caller = tracing::info_span!("caller");
    let caller_id = caller.id().unwrap().into_u64();
    async {
        let tx = db.transaction().await.unwrap();
        exercise(&tx).await;
        {
            let sp = tx.transaction().await.unwrap();
            sp.execute("DELETE FROM {{tables.users}}", &[])
                .await
                .unwrap();
            sp.rollback().await.unwrap();
        }
        {
            let sp = tx.transaction().await.unwrap();
            let rows: Vec<_> = sp
                .fetch_stream("SELECT * FROM {{tables.users}}", &[])
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(rows.len(), 10);
            sp.commit().await.unwrap();
        }
        tx.commit().await.unwrap();
        db.transaction().await.unwrap().rollback().await.unwrap();
    }
    .instrument(caller)
    .await;
    // The exercise's INSERT, then the savepoint's DELETE.
    let executes = cap.named("execute");
    assert_eq!(executes.len(), 2);
    let delete = &executes[1];
    assert_query(delete, &guard.0, "DELETE", Some(&users));
    assert_eq!(delete.get("pgdbm.rows_affected"), Some("10"));
    for m in METHODS.iter().filter(|m| **m != "execute") {
        assert_eq!(cap.one(m).parent, Some(caller_id), "{m}");
    }
    assert_query(&executes[0], &guard.0, "INSERT", Some(&users));
    // Inside a transaction no call waits for the pool: only the two BEGINs did.
    assert_eq!(cap.named("pgdbm.pool.acquire").len(), 2);

    let begins = cap.named("begin");
    assert_eq!(begins.len(), 2);
    for b in &begins {
        assert_common(b, &guard.0);
        assert_eq!(b.get("db.operation.name"), Some("BEGIN"));
        assert_eq!(b.get("otel.name"), Some("BEGIN"));
        assert_eq!(b.parent, Some(caller_id));
    }
    let savepoints = cap.named("savepoint");
    assert_eq!(savepoints.len(), 2);
    assert_eq!(savepoints[0].get("db.operation.name"), Some("SAVEPOINT"));
    assert!(savepoints[0]
        .get("db.query.text")
        .unwrap()
        .starts_with("SAVEPOINT pgdbm_sp_"));
    let back = cap.one("rollback_to_savepoint");
    assert_eq!(back.get("db.operation.name"), Some("ROLLBACK"));
    assert_eq!(
        cap.one("release_savepoint").get("db.operation.name"),
        Some("RELEASE")
    );
    let commit = cap.one("commit");
    assert_eq!(commit.get("db.operation.name"), Some("COMMIT"));
    assert_eq!(commit.get("otel.name"), Some("COMMIT"));
    let rollback = cap.one("rollback");
    assert_eq!(rollback.get("otel.name"), Some("ROLLBACK"));
    assert_eq!(
        cap.one("fetch_stream").get("db.response.returned_rows"),
        Some("10")
    );
    assert_no_parameter_values(&cap);
}

#[tokio::test]
async fn a_failure_records_the_error_type_and_sqlstate() {
    let (db, guard, _users) = setup().await;
    let (cap, _sub) = Capture::install();
    let err = db
        .fetch_all(
            "SELECT * FROM {{tables.missing}} WHERE a = $1",
            &[&SHORT_SECRET],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42P01"));
    let s = cap.one("fetch_all");
    assert_eq!(s.get("error.type"), Some("42P01"));
    assert_eq!(s.get("db.response.status_code"), Some("42P01"));
    assert_eq!(s.get("otel.status_code"), Some("ERROR"));
    assert_eq!(
        s.get("db.collection.name"),
        Some(format!("{}.missing", guard.0).as_str())
    );

    let err = db
        .with_timeout(std::time::Duration::from_millis(50))
        .execute("SELECT pg_sleep(2)", &[])
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let s = cap.one("execute");
    assert_eq!(s.get("error.type"), Some("timeout"));
    assert_eq!(s.get("db.response.status_code"), None);
    assert_no_parameter_values(&cap);
}

#[tokio::test]
async fn each_migration_file_has_its_span() {
    let (db, guard) = schema_db().await;
    let dir = std::env::temp_dir().join(unique("obs_migrations"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("001_users.sql"),
        "CREATE TABLE {{tables.users}} (id serial PRIMARY KEY);",
    )
    .unwrap();
    std::fs::write(
        dir.join("002_more.sql"),
        "ALTER TABLE {{tables.users}} ADD COLUMN email text;",
    )
    .unwrap();
    let (cap, _sub) = Capture::install();
    let report = pgdbm::AsyncMigrationManager::new(&db, &dir)
        .apply_pending_migrations()
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(report.unwrap().applied.len(), 2);
    let files = cap.named("migration");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].get("pgdbm.migration"), Some("001_users.sql"));
    assert_eq!(files[0].get("otel.name"), Some("migration 001_users.sql"));
    assert_eq!(files[0].get("db.operation.name"), Some("CREATE"));
    assert_eq!(
        files[1].get("db.query.text"),
        Some(format!("ALTER TABLE \"{}\".users ADD COLUMN email text;", guard.0).as_str())
    );
    assert_common(&files[1], &guard.0);
}

/// Each statement of a pipeline gets the span a single call of its method gets, with its own
/// operation and error, and no parameter value.
#[tokio::test]
async fn each_statement_of_a_pipeline_has_its_span() {
    let (cap, _sub) = Capture::install();
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    cap.clear();
    let mut p = db.pipeline();
    let _ = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&SHORT_SECRET],
    );
    let _ = p.fetch_one("SELEC 1", &[]);
    p.run().await.unwrap();
    let insert = cap.one("execute");
    let users = format!("{}.users", _g.0);
    assert_query(&insert, _g.0.as_str(), "INSERT", Some(users.as_str()));
    let select = cap.one("fetch_one");
    assert!(select.get("error.type").is_some(), "{select:#?}");
    let failed: Vec<SpanRec> = cap
        .spans()
        .into_iter()
        .filter(|s| s.get("error.type").is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    for s in cap.spans() {
        for v in s.fields.values() {
            assert!(!v.contains(SHORT_SECRET), "{s:#?}");
        }
    }
}
