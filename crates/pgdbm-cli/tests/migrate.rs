//! `pgdbm migrate ...` against the real server, with a pgdbm.toml written for the Python CLI.

mod common;

use common::{Sandbox, SECRET};

/// A config in the Python pgdbm CLI's format. `zeta` must run before `alpha` (alpha's table
/// references zeta's), so alphabetical order would fail; the password comes from `${VAR}`.
fn python_project(sb: &Sandbox) {
    let url = sb
        .url()
        .replacen("postgres@", "postgres:${CLI_TEST_PW}@", 1);
    sb.write(
        "pgdbm.toml",
        &format!(
            r#"# Written for the Python pgdbm CLI.
[project]
name = "shop"
default_env = "dev"

[environments.dev]
url = "{url}"

[environments.prod]
host = "db.invalid"
port = 5432
database = "shop"
user = "shop"
password = "${{CLI_TEST_PW}}"
ssl_enabled = true
ssl_mode = "verify-full"

[modules.alpha]
migrations_path = "migrations/alpha"
schema = "alpha"
depends_on = ["zeta"]

[modules.zeta]
migrations_path = "migrations/zeta"
schema = "zeta"
"#
        ),
    );
    sb.write(
        "migrations/zeta/001_accounts.sql",
        "CREATE TABLE {{tables.accounts}} (id serial PRIMARY KEY);\n",
    );
    sb.write(
        "migrations/alpha/001_orders.sql",
        "CREATE TABLE {{tables.orders}} (id serial PRIMARY KEY, account int REFERENCES zeta.accounts(id));\n",
    );
    sb.write(
        "migrations/alpha/002_more.sql",
        "ALTER TABLE {{tables.orders}} ADD COLUMN note text;\n",
    );
}

const PW: (&str, &str) = ("CLI_TEST_PW", SECRET);

fn schemas(sb: &Sandbox) -> Vec<String> {
    sb.query(|db| {
        Box::pin(async move {
            let rows = db
                .fetch_all(
                    "SELECT nspname::text FROM pg_namespace WHERE nspname IN ('alpha', 'zeta') ORDER BY 1",
                    &[],
                )
                .await
                .expect("query");
            rows.iter().map(|r| r.get::<String>(0).expect("name")).collect()
        })
    })
}

#[test]
fn status_on_a_fresh_database_is_all_pending_and_writes_nothing() {
    let sb = Sandbox::new("status");
    python_project(&sb);
    let run = sb.run_env(&["migrate", "status", "--json"], &[PW]);
    let v = run.ok().json();
    let modules = v["modules"].as_array().expect("modules");
    // Dependency order: zeta first.
    assert_eq!(modules[0]["module"], "zeta");
    assert_eq!(modules[1]["module"], "alpha");
    assert_eq!(
        modules[1]["pending"],
        serde_json::json!(["001_orders.sql", "002_more.sql"])
    );
    assert_eq!(modules[1]["applied"], serde_json::json!([]));
    assert!(schemas(&sb).is_empty(), "status created schemas");
    // dry-run writes nothing either.
    let run = sb.run_env(&["migrate", "apply", "--dry-run"], &[PW]);
    assert!(
        run.ok().stdout.contains("would apply 002_more.sql"),
        "{run:#?}"
    );
    assert!(schemas(&sb).is_empty(), "dry-run created schemas");
}

#[test]
fn apply_in_dependency_order_writes_the_rows_the_application_reads() {
    let sb = Sandbox::new("apply");
    python_project(&sb);
    // Global options after the subcommand.
    let run = sb.run_env(&["migrate", "apply", "--env", "dev", "--all"], &[PW]);
    run.ok();
    let zeta = run.stdout.find("zeta").expect("zeta reported");
    let alpha = run.stdout.find("alpha").expect("alpha reported");
    assert!(zeta < alpha, "zeta must be applied first: {run:#?}");
    assert_eq!(schemas(&sb), ["alpha", "zeta"]);

    // The rows are those of the library's default module name (the schema): an application
    // using AsyncMigrationManager on a manager for schema `alpha` finds nothing pending.
    let dir = sb.path("migrations/alpha");
    let (pending, modules) = sb.query(move |db| {
        Box::pin(async move {
            let pool = db.pool().expect("pool");
            let alpha = pgdbm::AsyncDatabaseManager::from_pool(pool, Some("alpha")).expect("mgr");
            let pending = pgdbm::AsyncMigrationManager::new(&alpha, &dir)
                .get_pending_migrations()
                .await
                .expect("pending");
            let rows = db
                .fetch_all(
                    "SELECT module_name::text FROM alpha.schema_migrations ORDER BY filename",
                    &[],
                )
                .await
                .expect("rows");
            let modules: Vec<String> = rows.iter().map(|r| r.get(0).expect("m")).collect();
            (pending.len(), modules)
        })
    });
    assert_eq!(pending, 0);
    assert_eq!(modules, ["alpha", "alpha"]);

    // A second run applies nothing; status and history report what was applied.
    let run = sb.run_env(&["migrate", "apply"], &[PW]);
    assert!(
        run.ok().stdout.contains("applied 0, already applied 2"),
        "{run:#?}"
    );
    let v = sb
        .run_env(&["migrate", "status", "--json", "-m", "alpha"], &[PW])
        .ok()
        .json();
    assert_eq!(v["modules"][0]["pending"], serde_json::json!([]));
    assert_eq!(v["modules"][0]["applied"].as_array().map(Vec::len), Some(2));
    let v = sb
        .run_env(&["migrate", "history", "--limit", "1", "--json"], &[PW])
        .ok()
        .json();
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 2, "one per module with --limit 1: {v}");
    assert!(rows.iter().any(|r| r["filename"] == "002_more.sql"));
}

#[test]
fn verify_fails_on_a_changed_or_missing_file() {
    let sb = Sandbox::new("verify");
    python_project(&sb);
    sb.run_env(&["migrate", "apply"], &[PW]).ok();
    sb.run_env(&["migrate", "verify"], &[PW]).ok();

    sb.write(
        "migrations/alpha/002_more.sql",
        "ALTER TABLE {{tables.orders}} ADD COLUMN note varchar(10);\n",
    );
    let run = sb.run_env(&["migrate", "verify"], &[PW]);
    assert!(
        run.fails().stderr.contains("002_more.sql changed"),
        "{run:#?}"
    );

    std::fs::remove_file(sb.path("migrations/alpha/002_more.sql")).expect("rm");
    let run = sb.run_env(&["migrate", "verify", "--module", "alpha"], &[PW]);
    assert!(
        run.fails()
            .stderr
            .contains("002_more.sql is applied but missing"),
        "{run:#?}"
    );
}

#[test]
fn a_failing_migration_exits_non_zero_with_the_server_error() {
    let sb = Sandbox::new("fail");
    sb.write(
        "pgdbm.toml",
        &format!("[environments.dev]\nurl = \"{}\"\n", sb.url_with_password()),
    );
    sb.write(
        "migrations/001_ok.sql",
        "CREATE TABLE {{tables.a}} (id int);\n",
    );
    sb.write(
        "migrations/002_bad.sql",
        "CREATE TABLE {{tables.b}} (id nosuchtype);\n",
    );
    let run = sb.run(&["migrate", "apply"]);
    run.fails();
    assert!(run.stderr.contains("002_bad.sql"), "{run:#?}");
    assert!(run.stderr.contains("nosuchtype"), "{run:#?}");
    // Without modules the default module is `default` in schema public (the library's default).
    let v = sb.run(&["migrate", "status", "--json"]).ok().json();
    assert_eq!(v["modules"][0]["module_name"], "default");
    assert_eq!(
        v["modules"][0]["pending"],
        serde_json::json!(["002_bad.sql"])
    );
}

#[test]
fn simple_mode_uses_database_url_and_migrations() {
    let sb = Sandbox::new("simple");
    sb.write(
        "migrations/001_t.sql",
        "CREATE TABLE {{tables.t}} (id int);\n",
    );
    let url = sb.url_with_password();
    sb.run_env(&["migrate", "apply"], &[("DATABASE_URL", &url)])
        .ok();
    let n: i64 = sb.query(|db| {
        Box::pin(async move {
            db.fetch_value(
                "SELECT count(*) FROM public.schema_migrations WHERE module_name = 'default'",
                &[],
            )
            .await
            .expect("count")
            .unwrap_or(0)
        })
    });
    assert_eq!(n, 1);
}

#[test]
fn create_numbers_files_and_never_wraps_them_in_a_transaction() {
    let sb = Sandbox::without_database("create");
    python_project(&sb);
    sb.write("migrations/alpha/010_x.sql", "SELECT 1;\n");
    let run = sb.run_env(
        &["migrate", "create", "Add user email", "--module", "alpha"],
        &[PW],
    );
    run.ok();
    let path = sb.path("migrations/alpha/011_add_user_email.sql");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}: {run:#?}"));
    let upper = text.to_uppercase();
    assert!(
        !upper.contains("\nBEGIN") && !upper.contains("\nCOMMIT"),
        "{text}"
    );
    // Several modules and no --module: refused.
    sb.run_env(&["migrate", "create", "x"], &[PW]).fails();
    // Numbering continues after the highest prefix (001_accounts.sql here).
    let run = sb.run_env(&["migrate", "create", "first", "-m", "zeta"], &[PW]);
    run.ok();
    assert!(
        sb.path("migrations/zeta/002_first.sql").exists(),
        "{run:#?}"
    );
}

#[test]
fn dependency_cycles_are_named() {
    let sb = Sandbox::without_database("cycle");
    sb.write(
        "pgdbm.toml",
        &format!(
            "[environments.dev]\nurl = \"{}\"\n[modules.a]\ndepends_on = [\"b\"]\n[modules.b]\ndepends_on = [\"a\"]\n",
            sb.url()
        ),
    );
    let run = sb.run(&["migrate", "apply"]);
    assert!(run.fails().stderr.contains("a -> b -> a"), "{run:#?}");
}
