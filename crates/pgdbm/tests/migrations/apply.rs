//! Applying in version order, Python-compatible tracking rows, dry runs and status, atomicity.

use crate::common;
use crate::common::{admin, admin_value};
use pgdbm::AsyncMigrationManager;

use super::{count, exists, fresh_schema, migration_parts, shared_db, tracked, TempDir};

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
