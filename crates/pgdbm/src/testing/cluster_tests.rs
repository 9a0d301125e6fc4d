//! Tests of `cluster`.

use super::*;

async fn select_one(url: &str) -> i32 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("SELECT 1")
        .get(0);
    drop(client);
    let _ = task.await;
    one
}

#[tokio::test]
async fn starts_serves_and_cleans_up() {
    let cluster = TempCluster::start().expect("start cluster");
    let root = cluster.root.clone();
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert!(cluster.socket_dir().starts_with(&root));
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_eq!(select_one(&cluster.connection_string("postgres")).await, 1);
    drop(cluster);
    assert!(!root.exists(), "{} still exists", root.display());
}

#[tokio::test]
async fn settings_apply_and_stop_reports() {
    let cluster = TempCluster::builder()
        .setting("work_mem", "7MB")
        .setting("application_name", "it's")
        .start()
        .expect("start cluster");
    let (client, conn) = tokio_postgres::connect(
        &cluster.connection_string("postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let task = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT current_setting('work_mem'), current_setting('fsync')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "7MB");
    assert_eq!(row.get::<_, String>(1), "off");
    let name: String = client
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "it's");
    drop(client);
    let _ = task.await;
    let root = cluster.root.clone();
    cluster.stop().expect("stop");
    assert!(!root.exists());
}

#[test]
fn cleans_up_when_a_test_panics() {
    let mut root = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = TempCluster::start().expect("start cluster");
        root = Some(cluster.root.clone());
        panic!("intentional panic with a running cluster");
    }));
    assert!(result.is_err());
    let root = root.expect("cluster started");
    assert!(!root.exists(), "{} still exists", root.display());
}

#[tokio::test]
async fn stops_and_starts_again_on_the_same_port() {
    let mut cluster = TempCluster::start().expect("start cluster");
    let port = cluster.port();
    let url = cluster.connection_string("postgres");
    assert_eq!(select_one(&url).await, 1);
    cluster.stop_server().expect("stop");
    cluster.stop_server().expect("stopping twice is harmless");
    assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .is_err());
    cluster.start_server().expect("start again");
    assert_eq!(cluster.port(), port);
    assert_eq!(select_one(&url).await, 1);
    cluster.restart().expect("restart");
    assert_eq!(select_one(&url).await, 1);
    cluster.stop().expect("stop and delete");
}

#[test]
fn two_clusters_side_by_side() {
    let a = TempCluster::start().expect("first");
    let b = TempCluster::start().expect("second");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
}

#[test]
fn startup_failure_reports_log_and_cleans_up() {
    let err = TempCluster::builder()
        .setting("shared_buffers", "not-a-size")
        .start()
        .expect_err("bad setting must fail");
    let Error::TestDatabase(message) = &err else {
        panic!("unexpected error {err:?}")
    };
    assert!(message.contains("shared_buffers"), "{message}");
    // Other tests' clusters may be alive in the same temp dir; none may be this one.
    let prefix = format!("pgdbm-cluster-{}-", std::process::id());
    for entry in fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let conf =
                fs::read_to_string(entry.path().join("data/postgresql.conf")).unwrap_or_default();
            assert!(
                !conf.contains("not-a-size"),
                "{} was left behind",
                entry.path().display()
            );
        }
    }
}

#[test]
fn rejects_bad_setting_names() {
    let err = TempCluster::builder()
        .setting("a = 1\nb", "x")
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::TestDatabase(_)));
}
