//! Templates, schemas and modules on shared pools, schemaless managers, embedded migrations.

use crate::common;
use crate::common::{admin, admin_value, unique, SchemaGuard};
use pgdbm::{AsyncDatabaseManager, AsyncMigrationManager, EmbeddedMigrations, Error};

use super::{exists, fresh_schema, migration_parts, shared_db, TempDir};

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
