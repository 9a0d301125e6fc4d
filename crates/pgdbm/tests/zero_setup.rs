//! Zero set-up: without `DATABASE_URL` and with nothing answering at the default address, a
//! throwaway server is started from the local binaries for the process, says so in one line,
//! and is stopped and removed when the process exits. The scenario runs in a child process (this
//! test binary again) so that its exit can be watched.

use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "PGDBM_ZERO_SETUP_CHILD";

/// The child's part: a no-op unless started by the test below.
#[tokio::test]
async fn child_uses_whatever_server_it_finds() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let url = pgdbm::testing::server_url().expect("a server");
    let db = pgdbm::AsyncDatabaseManager::new(pgdbm::DatabaseConfig {
        connection_string: Some(url.clone()),
        min_connections: 1,
        max_connections: 2,
        ..Default::default()
    })
    .unwrap();
    db.connect().await.unwrap();
    let one: Option<i32> = db.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    db.disconnect().await.unwrap();
    // The same server for every later caller in the process.
    assert_eq!(pgdbm::testing::server_url().unwrap(), url);
    println!("SERVER={url}");
}

#[test]
fn a_throwaway_server_serves_a_machine_without_one_and_goes_away_with_the_process() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_uses_whatever_server_it_finds",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env_remove("DATABASE_URL")
        // Nothing answers on port 1.
        .env(
            "PGDBM_DEFAULT_URL",
            "postgresql://postgres@127.0.0.1:1/postgres",
        )
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SERVER="))
        .unwrap_or_else(|| panic!("no SERVER line:\n{stdout}\n{stderr}"))
        .to_owned();
    assert!(!url.contains(":1/"), "{url}");
    let notices: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pgdbm: DATABASE_URL is not set"))
        .collect();
    assert_eq!(notices.len(), 1, "one line says so:\n{stderr}");
    assert!(notices[0].contains("throwaway"), "{}", notices[0]);
    // Gone within a few seconds of the child's exit.
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let until = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
    {
        assert!(
            Instant::now() < until,
            "the throwaway server outlived its process"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
