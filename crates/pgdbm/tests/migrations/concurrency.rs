//! Concurrent migrators: tasks and OS processes racing on one schema, modules sharing one table.

use std::time::Duration;

use crate::common::admin_value;
use pgdbm::AsyncMigrationManager;

use super::{count, fresh_schema, shared_db, tracked, TempDir, RACER_ENV};

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
