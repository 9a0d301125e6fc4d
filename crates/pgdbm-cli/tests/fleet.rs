//! `pgdbm migrate apply --module M --schemas PATTERN`: tenant fleets against the real server.

mod common;

use common::Sandbox;

/// Tracking rows recorded in `schema` under its own module name (0 without a table).
fn rows(sb: &Sandbox, schema: &str) -> i64 {
    let schema = schema.to_owned();
    sb.query(move |db| {
        Box::pin(async move {
            let table = format!("{schema}.schema_migrations");
            let exists: bool = db
                .fetch_value("SELECT to_regclass($1) IS NOT NULL", &[&table])
                .await
                .expect("exists")
                .unwrap_or(false);
            if !exists {
                return 0;
            }
            db.fetch_value::<i64>(
                &format!("SELECT count(*) FROM {table} WHERE module_name = $1"),
                &[&schema],
            )
            .await
            .expect("count")
            .unwrap_or(0)
        })
    })
}

#[test]
fn a_failing_schema_does_not_stop_the_others_and_a_rerun_continues() {
    let sb = Sandbox::new("fleet");
    sb.write(
        "pgdbm.toml",
        &format!(
            "[environments.dev]\nurl = \"{}\"\n[modules.tenant]\nmigrations_path = \"tenant\"\n",
            sb.url_with_password()
        ),
    );
    sb.write(
        "tenant/001_items.sql",
        "CREATE TABLE {{tables.items}} (id int);\n",
    );
    sb.write(
        "tenant/002_extra.sql",
        "CREATE TABLE {{tables.extra}} (id int);\n",
    );
    sb.query(|db| {
        Box::pin(async move {
            db.execute(
                "CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b; CREATE SCHEMA tenant_c; \
                 CREATE SCHEMA other; CREATE TABLE tenant_b.extra (x int)",
                &[],
            )
            .await
            .expect("setup");
        })
    });

    let run = sb.run(&[
        "migrate",
        "apply",
        "--module",
        "tenant",
        "--schemas",
        "tenant\\_%",
        "--jobs",
        "2",
    ]);
    run.fails();
    // Not a terminal: one line per schema, and a summary naming the failure.
    for s in ["tenant_a", "tenant_b", "tenant_c"] {
        assert!(run.stdout.contains(s), "{s}: {run:#?}");
    }
    assert!(run.stdout.contains("FAILED tenant_b"), "{run:#?}");
    assert!(
        run.stderr.contains("tenant_b") && run.stderr.contains("002_extra.sql"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("other"), "{run:#?}");
    assert_eq!(
        [
            rows(&sb, "tenant_a"),
            rows(&sb, "tenant_b"),
            rows(&sb, "tenant_c")
        ],
        [2, 1, 2],
        "tenant_b keeps 001, the others are complete"
    );
    assert_eq!(rows(&sb, "other"), 0);

    // Fix tenant_b and run again, choosing schemas by query: it continues where it stopped.
    sb.query(|db| {
        Box::pin(async move {
            db.execute("DROP TABLE tenant_b.extra", &[])
                .await
                .expect("fix");
        })
    });
    let run = sb.run(&[
        "migrate",
        "apply",
        "-m",
        "tenant",
        "--schemas-query",
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant%'",
    ]);
    run.ok();
    assert!(
        run.stdout
            .contains("ok     tenant_b: applied 1, already applied 1"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("ok     tenant_a: applied 0, already applied 2"),
        "{run:#?}"
    );
    assert_eq!(rows(&sb, "tenant_b"), 2);

    // A schema name the identifier rules refuse fails alone, before any I/O on it.
    let run = sb.run(&[
        "migrate",
        "apply",
        "-m",
        "tenant",
        "--schemas-query",
        "SELECT 'bad-name' UNION ALL SELECT 'tenant_a'",
    ]);
    assert!(
        run.fails().stderr.contains("not a valid identifier"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("ok     tenant_a"), "{run:#?}");
}

/// Whether `schema` exists in the sandbox database.
fn schema_exists(sb: &Sandbox, schema: &str) -> bool {
    let schema = schema.to_owned();
    sb.query(move |db| {
        Box::pin(async move {
            db.fetch_value::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await
            .expect("exists")
            .unwrap_or(false)
        })
    })
}

#[test]
fn a_fleet_module_in_pgdbm_toml_migrates_the_fleet_and_status_history_verify_see_it() {
    let sb = Sandbox::new("fleetmod");
    sb.write(
        "pgdbm.toml",
        &format!(
            "[environments.dev]\nurl = \"{}\"\n\
             [modules.tenant]\nmigrations_path = \"tenant\"\nschemas = 'tenant\\_%'\n\
             [modules.core]\nmigrations_path = \"core\"\n",
            sb.url_with_password()
        ),
    );
    sb.write(
        "tenant/001_items.sql",
        "CREATE TABLE {{tables.items}} (id int);\n",
    );
    sb.write(
        "core/001_config.sql",
        "CREATE TABLE {{tables.config}} (k text);\n",
    );
    sb.query(|db| {
        Box::pin(async move {
            db.execute("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b", &[])
                .await
                .expect("setup");
        })
    });

    // Before: every tenant schema has a pending file, and status says so and fails.
    let before = sb.run(&["migrate", "status", "--json"]);
    before.fails();
    let report = before.json();
    let tenant = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module"] == "tenant")
        .expect("the tenant module")
        .clone();
    let schemas: Vec<&str> = tenant["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["schema"].as_str().unwrap())
        .collect();
    assert_eq!(schemas, ["tenant_a", "tenant_b"], "{report}");
    assert_eq!(tenant["schemas"][0]["pending"][0], "001_items.sql");

    // A plain apply migrates the fleet, and never makes a schema named after the module.
    sb.run(&["migrate", "apply"]).ok();
    assert!(!schema_exists(&sb, "tenant"), "a stray schema was created");
    assert!(schema_exists(&sb, "core"));
    assert_eq!([rows(&sb, "tenant_a"), rows(&sb, "tenant_b")], [1, 1]);

    let after = sb.run(&["migrate", "status", "--module", "tenant"]);
    after.ok();
    assert!(
        after.stdout.contains("tenant_a") && after.stdout.contains("tenant_b"),
        "{after:#?}"
    );
    let history = sb.run(&["migrate", "history", "--module", "tenant", "--json"]);
    let rows_json = history.ok().json();
    assert_eq!(rows_json.as_array().unwrap().len(), 2, "{rows_json}");
    sb.run(&["migrate", "verify", "--json"]).ok();

    // A file changed after it was applied: verify fails and names each schema.
    sb.write(
        "tenant/001_items.sql",
        "CREATE TABLE {{tables.items}} (id bigint);\n",
    );
    let verify = sb.run(&["migrate", "verify", "--module", "tenant"]);
    verify.fails();
    assert!(
        verify.stderr.contains("tenant_a: 001_items.sql changed")
            && verify.stderr.contains("tenant_b: 001_items.sql changed"),
        "{verify:#?}"
    );
    // The same through --schemas on the command line.
    sb.run(&[
        "migrate",
        "verify",
        "--module",
        "tenant",
        "--schemas",
        "tenant\\_a",
    ])
    .fails();
}
