//! `pgdbm db|schema|test ...`, help, and bad input, against the real server.

mod common;

use common::{Sandbox, SECRET};

fn config(sb: &Sandbox) {
    sb.write(
        "pgdbm.toml",
        &format!(
            "[project]\ndefault_env = \"local\"\n[environments.local]\nurl = \"{}\"\n",
            sb.url_with_password()
        ),
    );
}

#[test]
fn help_on_every_command_and_version() {
    let sb = Sandbox::without_database("help");
    let run = sb.run(&["--version"]);
    assert!(
        run.ok().stdout.contains(env!("CARGO_PKG_VERSION")),
        "{run:#?}"
    );
    for args in [
        &["--help"][..],
        &["migrate", "--help"],
        &["migrate", "apply", "--help"],
        &["migrate", "status", "--help"],
        &["migrate", "history", "--help"],
        &["migrate", "create", "--help"],
        &["migrate", "verify", "--help"],
        &["db", "--help"],
        &["db", "create", "--help"],
        &["db", "drop", "--help"],
        &["db", "reset", "--help"],
        &["db", "test-connection", "--help"],
        &["db", "info", "--help"],
        &["schema", "--help"],
        &["schema", "list", "--help"],
        &["schema", "create", "--help"],
        &["schema", "drop", "--help"],
        &["test", "--help"],
        &["test", "cleanup", "--help"],
        &["generate", "--help"],
        &["generate", "config", "--help"],
        &["generate", "model", "--help"],
        &["check", "--help"],
    ] {
        let run = sb.run(args);
        assert!(run.ok().stdout.contains("Usage"), "{args:?}: {run:#?}");
    }
    sb.run(&["no-such-command"]).fails();
}

#[test]
fn db_create_info_drop() {
    // The database does not exist yet: `db create` makes it; the guard drops it regardless.
    let sb = Sandbox::without_database("dbcmd");
    config(&sb);
    sb.run(&["db", "create"]).ok();
    assert!(sb.database_exists());
    sb.run(&["db", "create"]).fails();

    let run = sb.run(&["db", "test-connection"]);
    assert!(run.ok().stdout.contains("****"), "masked DSN: {run:#?}");

    sb.run(&["schema", "create", "app"]).ok();
    sb.query(|db| {
        Box::pin(async move {
            db.execute(
                "CREATE TABLE app.t1 (id int); CREATE TABLE app.t2 (id int)",
                &[],
            )
            .await
            .expect("tables");
        })
    });
    let v = sb.run(&["db", "info", "--json"]).ok().json();
    assert!(
        v["server_version"]
            .as_str()
            .is_some_and(|s| s.starts_with(char::is_numeric)),
        "{v}"
    );
    assert!(v["size_bytes"].as_i64().is_some_and(|n| n > 0), "{v}");
    let app = v["schemas"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "app"))
        .unwrap_or_else(|| panic!("schema app missing: {v}"));
    assert_eq!(app["tables"], 2);
    assert!(v["pool"]["max_size"].as_u64().is_some(), "{v}");
    assert!(!v.to_string().contains(SECRET));
    sb.run(&["db", "info"]).ok();

    // Destructive without a terminal: refused without --yes, and nothing is dropped.
    let run = sb.run(&["db", "drop"]);
    assert!(run.fails().stderr.contains("--yes"), "{run:#?}");
    assert!(sb.database_exists());
    sb.run(&["db", "drop", "--yes", "--force"]).ok();
    assert!(!sb.database_exists());
    sb.run(&["db", "drop", "--yes"]).fails();

    // reset creates it again, empty.
    sb.run(&["db", "reset"]).fails();
    sb.run(&["db", "reset", "--yes"]).ok();
    assert!(sb.database_exists());
}

#[test]
fn schema_list_create_drop() {
    let sb = Sandbox::new("schema");
    config(&sb);
    sb.run(&["schema", "create", "tenant_1"]).ok();
    sb.run(&["schema", "create", "tenant_1"]).fails();
    let v = sb.run(&["schema", "list", "--json"]).ok().json();
    let names: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&"tenant_1") && names.contains(&"public"),
        "{v}"
    );
    assert!(!names.contains(&"pg_catalog"), "{v}");

    let run = sb.run(&["schema", "drop", "tenant_1"]);
    assert!(run.fails().stderr.contains("--yes"), "{run:#?}");
    sb.run(&["schema", "drop", "tenant_1", "--yes"]).ok();
    let v = sb.run(&["schema", "list", "--json"]).ok().json();
    assert!(!v.to_string().contains("tenant_1"), "{v}");
    sb.run(&["schema", "drop", "tenant_1", "--yes"]).fails();
}

#[test]
fn invalid_names_are_refused_before_any_io() {
    // The configured server does not exist: a refusal that mentions identifiers proves the
    // name was checked before connecting.
    let sb = Sandbox::without_database("names");
    sb.write(
        "pgdbm.toml",
        "[environments.dev]\nurl = \"postgresql://postgres@127.0.0.1:1/nowhere\"\n\
         [modules.users]\nmigrations_path = \"m\"\n",
    );
    std::fs::create_dir_all(sb.path("m")).expect("dir");
    for args in [
        &["schema", "create", "x; DROP TABLE users"][..],
        &["schema", "drop", "bad-name", "--yes"],
        &["migrate", "status", "--module", "no such"],
    ] {
        let run = sb.run(args);
        assert!(
            run.fails().stderr.contains("not a valid identifier"),
            "{args:?}: {run:#?}"
        );
    }
    // A database name from the config.
    sb.write("bad.toml", "[environments.dev]\ndatabase = \"my-db\"\n");
    let run = sb.run(&["-c", "bad.toml", "db", "create"]);
    assert!(
        run.fails().stderr.contains("not a valid identifier"),
        "{run:#?}"
    );
    // A module name in the config.
    sb.write("bad2.toml", "[environments.dev]\n[modules.\"x y\"]\n");
    let run = sb.run(&["migrate", "status", "-c", "bad2.toml"]);
    assert!(
        run.fails().stderr.contains("not a valid identifier"),
        "{run:#?}"
    );
}

#[test]
fn config_errors_name_the_file_or_key() {
    let sb = Sandbox::without_database("cfg");
    sb.write(
        "pgdbm.toml",
        "[environments.dev]\nurl = \"postgresql://postgres@127.0.0.1/x\"\n",
    );
    let one_line = |run: &common::Run| {
        assert_eq!(run.stderr.trim().lines().count(), 1, "{run:#?}");
    };

    let run = sb.run(&["migrate", "status", "--env", "staging"]);
    assert!(run.fails().stderr.contains("staging"), "{run:#?}");
    one_line(&run);

    let run = sb.run(&["migrate", "status"]);
    assert!(
        run.fails().stderr.contains("migrations"),
        "missing dir: {run:#?}"
    );
    one_line(&run);

    let run = sb.run(&["-c", "nope.toml", "migrate", "status"]);
    assert!(run.fails().stderr.contains("nope.toml"), "{run:#?}");
    one_line(&run);

    sb.write("typo.toml", "[environments.dev]\nurll = \"x\"\n");
    let run = sb.run(&["-c", "typo.toml", "db", "info"]);
    assert!(run.fails().stderr.contains("urll"), "{run:#?}");
    one_line(&run);

    sb.write(
        "var.toml",
        "[environments.dev]\nurl = \"${PGDBM_TEST_UNSET_VAR}\"\n",
    );
    let run = sb.run_env(&["db", "info"], &[("PGDBM_CONFIG", "var.toml")]);
    assert!(
        run.fails().stderr.contains("PGDBM_TEST_UNSET_VAR"),
        "{run:#?}"
    );
    one_line(&run);

    // PGDBM_ENV selects the environment.
    let run = sb.run_env(&["db", "info"], &[("PGDBM_ENV", "qa")]);
    assert!(run.fails().stderr.contains("qa"), "{run:#?}");
}

#[test]
fn connection_failures_exit_non_zero_without_the_password() {
    let sb = Sandbox::without_database("conn");
    sb.write(
        "pgdbm.toml",
        &format!("[environments.dev]\nurl = \"postgresql://postgres:{SECRET}@127.0.0.1:1/x\"\n"),
    );
    let run = sb.run(&["db", "test-connection"]);
    run.fails();
}

#[test]
fn a_bad_database_url_never_shows_its_password() {
    let sb = Sandbox::without_database("badurl");
    for url in [
        format!("postgresql://127.0.0.1:notaport/x?user=postgres&password={SECRET}"),
        format!("postgresql://127.0.0.1:1/x?user=postgres&PassWord={SECRET}"),
        format!("host=127.0.0.1 port=notaport user=postgres password={SECRET}\\ x"),
        format!("host=127.0.0.1 port=1 user=postgres password='{SECRET} x'"),
    ] {
        for args in [&["db", "info"][..], &["db", "info", "--json"][..]] {
            // `fails` also checks that neither output holds the password.
            sb.run_env(args, &[("DATABASE_URL", url.as_str())]).fails();
        }
    }
}

#[test]
fn test_cleanup_drops_only_leftover_test_databases() {
    let sb = Sandbox::new("cleanup");
    config(&sb);
    // A unique prefix keeps other suites' databases out of this test.
    let prefix = format!("clt{}", std::process::id());
    let old = format!("{prefix}_1600000000_1_0_0");
    let fresh_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let fresh = format!("{prefix}_{fresh_secs}_1_0_0");
    let real = format!("{prefix}_2024_q1_archive");
    let names = [old.clone(), fresh.clone(), real.clone()];
    struct Drop3([String; 3]);
    impl Drop for Drop3 {
        fn drop(&mut self) {
            for n in &self.0 {
                common::drop_database(n);
            }
        }
    }
    let _guard = Drop3(names.clone());
    for n in &names {
        let sql = format!("CREATE DATABASE \"{n}\"");
        common::admin(move |db| {
            Box::pin(async move { db.execute(&sql, &[]).await.expect("create") })
        });
    }
    let run = sb.run(&["test", "cleanup", "--prefix", &prefix, "--dry-run"]);
    assert!(run.ok().stdout.contains(&old), "{run:#?}");
    assert!(common::database_exists(&old));

    let run = sb.run(&["test", "cleanup", "--prefix", &prefix, "--older-than", "1h"]);
    assert!(run.ok().stdout.contains(&old), "{run:#?}");
    assert!(!common::database_exists(&old));
    assert!(common::database_exists(&fresh), "younger than 1h: kept");
    assert!(common::database_exists(&real), "not a generated name: kept");

    sb.run(&["test", "cleanup", "--older-than", "soon"]).fails();
}

#[test]
fn generate_config_writes_a_config_the_cli_reads() {
    let sb = Sandbox::without_database("gen");
    let run = sb.run(&["generate", "config", "--output", "pgdbm.toml"]);
    run.ok();
    // Never overwrites.
    sb.run(&["generate", "config", "--output", "pgdbm.toml"])
        .fails();
    // The CLI reads it (no database needed to create a migration).
    sb.run(&["migrate", "create", "init"]).ok();
    assert!(sb.path("migrations/001_init.sql").exists());
    let printed = sb.run(&["generate", "config"]);
    assert!(printed.ok().stdout.contains("[environments.dev]"));
}

#[test]
fn generate_model_maps_the_live_table() {
    let sb = Sandbox::new("model");
    config(&sb);
    sb.query(|db| {
        Box::pin(async move {
            db.execute(
                "CREATE SCHEMA app; CREATE TYPE app.mood AS ENUM ('ok', 'sad'); \
                 CREATE TABLE app.user_accounts (id bigserial PRIMARY KEY, email text NOT NULL, \
                 \"type\" varchar(10), created_at timestamptz NOT NULL DEFAULT now(), \
                 balance numeric(10,2), tags text[] NOT NULL DEFAULT '{}', data jsonb, \
                 \"Display Name\" text, m app.mood, ref uuid)",
                &[],
            )
            .await
            .expect("table");
        })
    });
    let run = sb.run(&["generate", "model", "user_accounts", "--schema", "app"]);
    let out = &run.ok().stdout;
    for line in [
        "#[derive(Debug, Clone, pgdbm::FromRow, pgdbm::serde::Serialize, pgdbm::serde::Deserialize)]",
        "#[serde(crate = \"pgdbm::serde\")]",
        "pub struct UserAccount {",
        "pub id: i64,",
        "pub email: String,",
        "pub r#type: Option<String>,",
        "pub created_at: pgdbm::chrono::DateTime<pgdbm::chrono::Utc>,",
        "pub balance: Option<pgdbm::types::Numeric>,",
        "pub tags: Vec<String>,",
        "pub data: Option<pgdbm::serde_json::Value>,",
        "#[pgdbm(rename = \"Display Name\")]",
        "pub display_name: Option<String>,",
        "// enum type mood: read as its label",
        "pub m: Option<String>,",
        "pub r#ref: Option<pgdbm::uuid::Uuid>,",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let run = sb.run(&["generate", "model", "nope"]);
    assert!(run.fails().stderr.contains("public.nope"), "{run:#?}");
    let run = sb.run(&["generate", "model", "x;drop"]);
    assert!(
        run.fails().stderr.contains("not a valid identifier"),
        "{run:#?}"
    );
}
