//! Checksums and history: changed applied files, Python pgdbm checksums, missing or late files.

use crate::common;
use crate::common::admin_value;
use pgdbm::AsyncMigrationManager;

use super::{exists, migration_parts, tracked, Captured, TempDir};

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
