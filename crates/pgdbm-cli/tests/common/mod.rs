//! Helpers for the CLI tests: a uniquely named database per test (dropped WITH (FORCE) by a
//! guard, also when the test panics), a scratch directory, and the real `pgdbm` binary run
//! with a time limit.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};

/// The server the tests use (trust auth): `PGDBM_TEST_SERVER`, else `DATABASE_URL` or the
/// local server or a throwaway one for this test process (`pgdbm::testing::server_url`).
pub fn server_url(database: &str) -> String {
    let base = std::env::var("PGDBM_TEST_SERVER").unwrap_or_else(|_| {
        let url = pgdbm::testing::server_url().expect("a PostgreSQL server to test against");
        // Without the database (and any query string) of the URL.
        let end = url
            .rfind('/')
            .filter(|&i| i > "postgresql://".len())
            .unwrap_or(url.len());
        url[..end].to_owned()
    });
    format!("{base}/{database}")
}

/// A password that must never show up in any output. Trust auth ignores it.
pub const SECRET: &str = "hunter2-Sekr1t";

pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "cli_{tag}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// Runs `f` against the maintenance database on a runtime of its own.
pub fn admin<T>(
    f: impl for<'a> FnOnce(
        &'a AsyncDatabaseManager,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
) -> T {
    on_database("postgres", f)
}

pub fn on_database<T>(
    database: &str,
    f: impl for<'a> FnOnce(
        &'a AsyncDatabaseManager,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let db = AsyncDatabaseManager::new(DatabaseConfig {
            connection_string: Some(server_url(database)),
            min_connections: 1,
            max_connections: 2,
            retry_attempts: 0,
            ..Default::default()
        })
        .expect("config");
        db.connect().await.expect("connect");
        let out = tokio::time::timeout(Duration::from_secs(60), f(&db))
            .await
            .expect("admin query timed out");
        db.disconnect().await.ok();
        out
    })
}

/// A scratch directory and (optionally) a database named after the test, both removed on drop.
pub struct Sandbox {
    pub name: String,
    pub dir: PathBuf,
}

impl Sandbox {
    /// A sandbox whose database `name` does not exist yet (the guard still drops it).
    pub fn without_database(tag: &str) -> Sandbox {
        let name = unique(tag);
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Sandbox { name, dir }
    }

    /// A sandbox with its database created.
    pub fn new(tag: &str) -> Sandbox {
        let sb = Sandbox::without_database(tag);
        let sql = format!("CREATE DATABASE \"{}\"", sb.name);
        admin(move |db| {
            Box::pin(async move {
                db.execute(&sql, &[]).await.expect("create database");
            })
        });
        sb
    }

    pub fn url(&self) -> String {
        server_url(&self.name)
    }

    /// The URL with [`SECRET`] as the password.
    pub fn url_with_password(&self) -> String {
        self.url()
            .replacen("postgres@", &format!("postgres:{SECRET}@"), 1)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// `pgdbm args...` in the sandbox directory, with a clean environment for pgdbm's variables.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_in(&self.dir, args, env)
    }

    /// A query on the sandbox database.
    pub fn query<T>(
        &self,
        f: impl for<'a> FnOnce(
            &'a AsyncDatabaseManager,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
    ) -> T {
        on_database(&self.name, f)
    }

    pub fn database_exists(&self) -> bool {
        database_exists(&self.name)
    }
}

pub fn database_exists(name: &str) -> bool {
    let name = name.to_owned();
    admin(move |db| {
        Box::pin(async move {
            db.fetch_value::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                &[&name],
            )
            .await
            .expect("query")
            .unwrap_or(false)
        })
    })
}

pub fn drop_database(name: &str) {
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    admin(move |db| {
        Box::pin(async move {
            if let Err(e) = db.execute(&sql, &[]).await {
                eprintln!("cleanup: {e}");
            }
        })
    });
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        drop_database(&self.name);
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        self.no_secret()
    }

    #[track_caller]
    pub fn fails(&self) -> &Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a failure: {self:#?}"
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "no error message: {self:#?}"
        );
        self.no_secret()
    }

    #[track_caller]
    pub fn no_secret(&self) -> &Self {
        assert!(
            !self.stdout.contains(SECRET) && !self.stderr.contains(SECRET),
            "the password leaked: {self:#?}"
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the binary with a 60 s limit; stdin is empty (not a terminal).
pub fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgdbm"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("DB_PASSWORD")
        .env_remove("PGDBM_CONFIG")
        .env_remove("PGDBM_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn pgdbm");
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).ok();
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "pgdbm {args:?} timed out after 60 s; stderr: {}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
