//! Tests of `database`.

use super::*;
use crate::testing::server::server_config_from;

#[test]
fn env_precedence() {
    let c = server_config_from(|k| (k == "TEST_DB_PORT").then(|| "6543".to_string()));
    assert_eq!(
        (c.host.as_str(), c.port, c.connection_string.as_deref()),
        ("127.0.0.1", 6543, None)
    );
    let c =
        server_config_from(|k| (k == "DATABASE_URL").then(|| "postgresql://u@h/db".to_string()));
    assert_eq!(c.connection_string.as_deref(), Some("postgresql://u@h/db"));
    // Nothing set: the local server, or the throwaway one started for this process.
    let c = server_config_from(|_| None);
    assert_eq!(c.connection_string, super::super::server_url().ok());
}

#[test]
fn names_are_validated() {
    for bad in [
        "test\"; DROP DATABASE production; --",
        "test' OR '1'='1",
        "test/*comment*/",
        "123test",
        "test-db",
        "test db",
        "",
    ] {
        assert!(
            matches!(check_name("prefix", bad), Err(Error::TestDatabase(_))),
            "{bad}"
        );
    }
    check_name("prefix", "test").unwrap();
    let n = unique_name("Test");
    assert!(n.starts_with("test_"));
    check_name("name", &n).unwrap();
}

#[test]
fn only_generated_names_count_as_leftovers() {
    let n = unique_name("Test");
    let secs: u64 = n.split('_').nth(1).unwrap().parse().unwrap();
    assert_eq!(generated_created_at("test", &n), Some(secs));
    assert_eq!(generated_created_at("Test", &n), Some(secs));
    assert_eq!(
        generated_created_at("test", "test_1700000000_4242_0_17"),
        Some(1_700_000_000)
    );
    assert_eq!(
        generated_created_at("my_app", "my_app_1700000000_1_2_3"),
        Some(1_700_000_000)
    );
    for real in [
        "test_2024_q1_archive",
        "test_2024_01_15_0",
        "test_2024",
        "test_1700000000",
        "test_1700000000_1_2",
        "test_1700000000_1_2_3_4",
        "test_1700000000_1_2_x",
        "test_1700000000__2_3",
        "test_17000000000_1_2_3",
        "test_+700000000_1_2_3",
        "testx_1700000000_1_2_3",
        "tes_1700000000_1_2_3",
        "test1700000000_1_2_3",
        "other_1700000000_1_2_3",
        "pgdbm_spare_abc_1700000000_1_2_3",
    ] {
        assert_eq!(generated_created_at("test", real), None, "{real}");
    }
}
