//! `log_parameter_values = true`: the statement log and errors show short parameter values
//! (longer ones as their length). A binary of its own: the setting is process-wide.

mod common;

use common::*;

#[tokio::test]
async fn short_values_show_when_asked_for() {
    let (db, _g) = schema_db_with(|c| c.log_parameter_values = true).await;
    let long = "a-value-longer-than-twenty-characters";
    let err = db
        .fetch_value::<i32>("SELECT $1::int + length($2)", &[&"nope", &long])
        .await
        .unwrap_err();
    let pgdbm::Error::Query { params: shown, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(shown.contains("$1=\"nope\""), "{shown}");
    assert!(
        shown.contains(&format!("$2=<{} chars>", long.len())),
        "{shown}"
    );
    assert!(!shown.contains(long), "{shown}");
}
