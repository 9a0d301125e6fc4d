//! A test run leaves no database behind: a template and its spare clones go when the last test
//! process using them is done with them, unless `PGDBM_KEEP_TEMPLATES=1` keeps them for the
//! next run. Each check runs a child process (this binary, one test) and then looks at the
//! server for the names only that child could have made.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{admin_value, unique};
use pgdbm::testing::{Migrations, TestDatabase};

const CHILD_DIR: &str = "PGDBM_LEFTOVERS_CHILD_DIR";
const CHILD_PREFIX: &str = "PGDBM_LEFTOVERS_CHILD_PREFIX";
const KEEP: &str = "PGDBM_KEEP_TEMPLATES";

/// The child's work; does nothing unless started by the tests below.
#[test]
fn child_process_uses_a_template() {
    let (Ok(dir), Ok(prefix)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_PREFIX)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let make = || {
            TestDatabase::builder()
                .prefix(&prefix)
                .schema("app")
                .migrations(Path::new(&dir))
                .create()
        };
        // Creations cut off at any point leave nothing behind either.
        for ms in [1, 3, 10, 30, 100] {
            let _ = tokio::time::timeout(Duration::from_millis(ms), make()).await;
        }
        let (a, b) = tokio::join!(make(), make());
        let (a, b) = (a.unwrap(), b.unwrap());
        let template = Migrations::Dir(dir.clone().into())
            .template_name(Some("app"))
            .unwrap();
        // Let a spare clone appear, so there is one to clean up.
        for _ in 0..100 {
            if count(&spares_like(&template)).await > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = make().await.unwrap();
        assert_eq!(
            pgdbm::testing::count_rows(c.manager(), "t").await.unwrap(),
            1
        );
        a.cleanup().await.unwrap();
        b.cleanup().await.unwrap();
        drop(c); // the path a panicking test takes
    });
}

fn spares_like(template: &str) -> String {
    format!(
        "pgdbm\\_spare\\_{}\\_%",
        template.trim_start_matches("pgdbm_tpl_")
    )
}

async fn count(like: &str) -> i64 {
    admin_value(&format!(
        "SELECT count(*) FROM pg_database WHERE datname LIKE '{like}'"
    ))
    .await
    .unwrap()
    .parse()
    .unwrap()
}

/// A migration set no other test uses, so its template name is this test's alone.
struct UniqueMigrations(PathBuf);

impl UniqueMigrations {
    fn new() -> Self {
        let id = unique("leftovers");
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("001_t.sql"),
            format!("-- {id}\nCREATE TABLE {{{{tables.t}}}} (x int);\nINSERT INTO {{{{tables.t}}}} VALUES (1);\n"),
        )
        .unwrap();
        UniqueMigrations(dir)
    }

    fn template(&self) -> String {
        Migrations::Dir(self.0.clone())
            .template_name(Some("app"))
            .unwrap()
    }
}

impl Drop for UniqueMigrations {
    fn drop(&mut self) {
        // Whatever happened, nothing of this test stays on the server.
        let template = self.template();
        let spares = spares_like(&template);
        common::drop_with_fresh_runtime(format!(
            "ALTER DATABASE \"{template}\" WITH IS_TEMPLATE false"
        ));
        common::drop_with_fresh_runtime(format!(
            "DROP DATABASE IF EXISTS \"{template}\" WITH (FORCE)"
        ));
        let names = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(admin_value(&format!(
                    "SELECT string_agg(datname, ' ') FROM pg_database WHERE datname LIKE '{spares}'"
                )))
        })
        .join()
        .ok()
        .flatten();
        for spare in names.iter().flat_map(|n| n.split(' ')) {
            common::drop_with_fresh_runtime(format!(
                "DROP DATABASE IF EXISTS \"{spare}\" WITH (FORCE)"
            ));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_child(dir: &Path, prefix: &str, keep: bool) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_process_uses_a_template",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir)
    .env(CHILD_PREFIX, prefix)
    // The parent's server, also when that is a throwaway one started for this process.
    .env("DATABASE_URL", common::database_url())
    .env_remove(KEEP);
    if keep {
        cmd.env(KEEP, "1");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran no test"
    );
}

async fn left_behind(template: &str, prefix: &str) -> (i64, i64, i64) {
    (
        count(&template.replace('_', "\\_")).await,
        count(&spares_like(template)).await,
        count(&format!("{prefix}\\_%")).await,
    )
}

#[tokio::test]
async fn a_run_leaves_no_template_spare_or_test_database_behind() {
    let m = UniqueMigrations::new();
    let prefix = unique("lo");
    run_child(&m.0, &prefix, false);
    assert_eq!(left_behind(&m.template(), &prefix).await, (0, 0, 0));
}

#[tokio::test]
async fn keep_templates_keeps_them_until_a_run_without_it() {
    let m = UniqueMigrations::new();
    let prefix = unique("lk");
    run_child(&m.0, &prefix, true);
    let (templates, _, test_dbs) = left_behind(&m.template(), &prefix).await;
    assert_eq!(
        (templates, test_dbs),
        (1, 0),
        "the template stays, test databases go"
    );
    // The next run without the variable uses the kept template and then drops it.
    run_child(&m.0, &prefix, false);
    assert_eq!(left_behind(&m.template(), &prefix).await, (0, 0, 0));
}
