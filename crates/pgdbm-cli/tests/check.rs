//! `pgdbm check` against the real server: the fixture project's report (a golden file), JSON,
//! `--verbose`, a clean project, the scratch database dropped also on Ctrl-C, and 500
//! statements.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{admin, run_in, server_url, Sandbox};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check_project")
}

fn url() -> (&'static str, String) {
    ("CHECK_URL", server_url("postgres"))
}

/// The report with its one varying figure, the time taken, fixed.
fn normalized(report: &str) -> String {
    report
        .lines()
        .map(
            |line| match (line.find(" module(s) in "), line.find(" s: ")) {
                (Some(a), Some(b)) if a < b => {
                    format!("{} module(s) in <time> s: {}", &line[..a], &line[b + 4..])
                }
                _ => line.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn the_fixture_project_report_matches_the_golden_file() {
    let (k, v) = url();
    let run = run_in(&fixture(), &["check"], &[(k, &v)]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("8 statement(s) failed the check"),
        "{run:#?}"
    );
    let got = normalized(&run.stdout);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/check.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).expect("write the golden file");
    }
    let want = std::fs::read_to_string(&golden).expect("tests/golden/check.txt");
    assert_eq!(got, want, "the report changed; UPDATE_GOLDEN=1 rewrites it");
}

#[test]
fn json_has_every_error_and_verbose_lists_what_was_not_checked() {
    let (k, v) = url();
    let run = run_in(&fixture(), &["check", "--json"], &[(k, &v)]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let report = run.json();
    assert_eq!(report["statements"], 30);
    let errors = report["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 9);
    let codes: Vec<&str> = errors
        .iter()
        .filter_map(|e| e["sqlstate"].as_str())
        .collect();
    for code in ["42601", "42P01", "42703", "42883", "42704", "42702"] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    let totl = errors
        .iter()
        .find(|e| e["sqlstate"] == "42703")
        .expect("the unknown column");
    assert_eq!(totl["file"], "src/orders/mod.rs");
    assert_eq!(totl["module"], "orders");
    assert_eq!(totl["sql"], "SELECT totl FROM \"orders\".orders");
    assert_eq!(report["not_checked"]["run_time"][0]["line"], 50);

    let plain = run_in(&fixture(), &["check"], &[(k, &v)]);
    assert!(!plain.stdout.contains("built at run time by format!"));
    let verbose = run_in(&fixture(), &["check", "--verbose"], &[(k, &v)]);
    assert!(
        verbose.stdout.contains(
            "src/users.rs:50:18: not checked: the SQL of fetch_all is built at run time by format!"
        ),
        "{verbose:#?}"
    );
}

/// A project of its own in a sandbox: `modules` as (name, migration), `src/lib.rs` as given.
fn project(sb: &Sandbox, modules: &[(&str, &str)], lib: &str) {
    let mut toml = format!("[environments.dev]\nurl = \"{}\"\n", server_url("postgres"));
    for (name, sql) in modules {
        toml.push_str(&format!(
            "[modules.{name}]\nmigrations_path = \"migrations/{name}\"\n"
        ));
        sb.write(&format!("migrations/{name}/001_init.sql"), sql);
    }
    sb.write("pgdbm.toml", &toml);
    sb.write("src/lib.rs", lib);
}

#[test]
fn a_clean_project_passes_and_its_scratch_database_is_gone() {
    let sb = Sandbox::without_database("check_clean");
    project(
        &sb,
        &[(
            "app",
            "CREATE TABLE {{tables.t}} (id int8 PRIMARY KEY, v text);",
        )],
        "pub async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {\n\
         db.fetch_all(\"SELECT id, v FROM {{tables.t}} WHERE id = $1\", &[&1_i64]).await?;\n\
         Ok(())\n}\n",
    );
    let run = sb.run(&["check", "--verbose"]);
    run.ok();
    assert!(
        run.stdout
            .contains("checked 1 statement(s) in 1 file(s) against 1 module(s)"),
        "{run:#?}"
    );
    assert!(run.stdout.contains(": 0 error(s)"), "{run:#?}");
    let scratch = run
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("pgdbm_check_"))
        .expect("the scratch database's name")
        .trim_end_matches(',');
    assert!(!common::database_exists(scratch), "{scratch} was left");
}

/// Scratch databases of one `pgdbm check` process on the server.
fn scratch_databases(pid: u32) -> i64 {
    let pattern = format!("pgdbm\\_check\\_{pid}\\_%");
    admin(move |db| {
        Box::pin(async move {
            db.fetch_value::<i64>(
                "SELECT count(*) FROM pg_database WHERE datname LIKE $1",
                &[&pattern],
            )
            .await
            .expect("query")
            .unwrap_or(0)
        })
    })
}

#[test]
fn ctrl_c_drops_the_scratch_database() {
    let sb = Sandbox::without_database("check_ctrl_c");
    // A migration that takes long enough to be interrupted.
    project(&sb, &[("slow", "SELECT pg_sleep(30);")], "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgdbm"))
        .arg("check")
        .current_dir(&sb.dir)
        .env_remove("DATABASE_URL")
        .env_remove("PGDBM_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgdbm");
    let pid = child.id();
    let until = Instant::now() + Duration::from_secs(20);
    while scratch_databases(pid) == 0 {
        assert!(Instant::now() < until, "no scratch database appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < until, "pgdbm check ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr).ok();
    assert!(!status.success());
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(scratch_databases(pid), 0, "the scratch database was left");
}

#[test]
fn five_hundred_statements() {
    let sb = Sandbox::without_database("check_500");
    let mut lib =
        String::from("pub async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {\n");
    for i in 0..500 {
        let (table, col) = match i % 3 {
            0 => ("a", "x"),
            1 => ("b", "y"),
            _ => ("c", "z"),
        };
        lib.push_str(&format!(
            "    db.fetch_all(\"SELECT {col}, {i} AS n FROM {{{{tables.{table}}}}} WHERE {col} > $1\", &[&{i}_i64]).await?;\n"
        ));
    }
    lib.push_str("    Ok(())\n}\n");
    project(
        &sb,
        &[(
            "app",
            "CREATE TABLE {{tables.a}} (x int8);\nCREATE TABLE {{tables.b}} (y int8);\n\
             CREATE TABLE {{tables.c}} (z int8);",
        )],
        &lib,
    );
    let started = Instant::now();
    let run = sb.run(&["check", "--json"]);
    let took = started.elapsed();
    run.ok();
    let report = run.json();
    assert_eq!(report["statements"], 500);
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(0));
    let seconds = report["seconds"].as_f64().expect("seconds");
    eprintln!(
        "500 statements: {seconds:.2} s in the check ({:.0} statements/s), {took:?} for the whole \
         process",
        500.0 / seconds
    );
}

#[test]
fn a_temp_cluster_serves_the_check() {
    let sb = Sandbox::without_database("check_cluster");
    project(
        &sb,
        &[("app", "CREATE TABLE {{tables.t}} (id int8 PRIMARY KEY);")],
        "pub async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {\n\
         db.fetch_all(\"SELECT idd FROM {{tables.t}}\", &[]).await?;\n\
         Ok(())\n}\n",
    );
    // The configured server is not used: a throwaway cluster is started for the run.
    std::fs::write(
        sb.path("pgdbm.toml"),
        std::fs::read_to_string(sb.path("pgdbm.toml"))
            .unwrap()
            .replace(
                &server_url("postgres"),
                "postgresql://nobody@127.0.0.1:1/none",
            ),
    )
    .unwrap();
    let run = sb.run(&["check", "--temp-cluster"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stdout
            .contains("src/lib.rs:2:14: error: column \"idd\" does not exist (42703)"),
        "{run:#?}"
    );
}

#[test]
fn enums_domains_macros_returning_id_ignore_and_relative_paths() {
    let sb = Sandbox::without_database("check_more");
    // Two modules; the sources belong to the second, by a path given as `./src`.
    project(
        &sb,
        &[
            ("aaa", "CREATE TABLE {{tables.unrelated}} (x int);"),
            (
                "zzz",
                "CREATE TYPE {{tables.mood}} AS ENUM ('calm', 'glad');\n\
                 CREATE DOMAIN {{tables.big}} AS int8;\n\
                 CREATE TABLE {{tables.t}} (k int8 PRIMARY KEY, m {{tables.mood}}, b {{tables.big}});\n\
                 CREATE TABLE {{tables.noid}} (x int);",
            ),
        ],
        r#"#[derive(pgdbm::FromRow)]
pub struct Row {
    pub k: i64,
    pub m: String,
    pub b: Option<i64>,
}

pub async fn f(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    db.fetch_all_as::<Row>("SELECT k, m, b FROM {{tables.t}}", &[]).await?;
    db.fetch_all("SELECT k FROM t", &[]).await?;
    let _ = tokio::join!(db.fetch_all("SELECT nope FROM {{tables.t}}", &[]));
    db.execute_and_return_id("INSERT INTO {{tables.noid}} (x) VALUES (1)", &[]).await?;
    db.fetch_all("SELECT k FROM {{tables.t}} WHERE", &[]).await?;
    db.fetch_all(TWICE, &[]).await?;
    Ok(())
}

// pgdbm: ignore
pub async fn g(db: &pgdbm::AsyncDatabaseManager) -> pgdbm::Result<()> {
    db.fetch_all("SELECT definitely wrong", &[]).await?;
    Ok(())
}
"#,
    );
    // A constant of two files with other values: which one a call means is not known.
    sb.write("src/a.rs", "const TWICE: &str = \"SELECT 1\";\n");
    sb.write("src/b.rs", "const TWICE: &str = \"SELECT nope_b\";\n");
    let toml = std::fs::read_to_string(sb.path("pgdbm.toml")).unwrap();
    std::fs::write(
        sb.path("pgdbm.toml"),
        format!("{toml}[check.modules]\n\"src\" = \"zzz\"\n"),
    )
    .unwrap();
    let run = sb.run(&["check", "--path", "./src", "--verbose"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let out = &run.stdout;
    // An enum read as String and a domain read as its base type pass; so does an
    // unqualified name, which resolves in the module's schema.
    assert!(
        out.contains("error: column \"nope\" does not exist (42703)"),
        "{out}"
    );
    assert!(
        out.contains("\nsrc/lib.rs:11:39: error: column \"nope\""),
        "a call inside tokio::join!: {out}"
    );
    assert!(
        out.contains("error: column \"id\" does not exist (42703)"),
        "execute_and_return_id appends RETURNING id: {out}"
    );
    assert!(out.contains("RETURNING id"), "{out}");
    assert!(
        out.contains("syntax error at end of input (42601)"),
        "{out}"
    );
    let sql = "SELECT k FROM \"zzz\".t WHERE";
    let caret = format!("   | {sql}\n   | {}^\n", " ".repeat(sql.len()));
    assert!(
        out.contains(&caret),
        "the caret after the last character: {out}"
    );
    assert!(
        out.contains("not checked: the SQL of fetch_all is in an item marked `// pgdbm: ignore`"),
        "{out}"
    );
    assert!(out.contains("3 error(s) in 3 statement(s)"), "{out}");
    assert!(out.contains("1 marked `// pgdbm: ignore`"), "{out}");
    assert!(
        out.contains("src/lib.rs:14:18: not checked: the SQL of fetch_all is a variable"),
        "an ambiguous constant is not guessed: {out}"
    );
    assert!(
        !out.contains("no module named"),
        "the path mapping was lost: {out}"
    );
}
