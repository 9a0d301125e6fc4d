//! The query monitor: one entry per call on every path, counters that reading does not change,
//! a bounded history, slow queries; and `explain_query`.

mod capture;
mod common;

use std::time::Duration;

use common::*;
use futures_util::TryStreamExt;
use pgdbm::{AsyncDatabaseManager, Error, MonitorConfig, MonitoredAsyncDatabaseManager};

fn monitored(db: &AsyncDatabaseManager, config: MonitorConfig) -> MonitoredAsyncDatabaseManager {
    MonitoredAsyncDatabaseManager::new(db, config).expect("valid monitor config")
}

fn operations(m: &MonitoredAsyncDatabaseManager) -> Vec<&'static str> {
    m.get_query_history(None)
        .iter()
        .map(|r| r.operation)
        .collect()
}

#[tokio::test]
async fn every_path_counts_exactly_once() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let m = monitored(&db, MonitorConfig::default());
    m.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"a@x"],
    )
    .await
    .unwrap();
    let id: i32 = m
        .execute_and_return_id(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&"b@x"],
        )
        .await
        .unwrap();
    assert!(id > 0);
    m.executemany(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        vec![("c@x",), ("d@x",), ("e@x",)],
    )
    .await
    .unwrap();
    m.copy_records_to_table("users", vec![("f@x",), ("g@x",)], Some(&["email"]))
        .await
        .unwrap();
    let n: Option<i64> = m
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    assert_eq!(n, Some(7));
    m.fetch_one("SELECT * FROM {{tables.users}} WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(
        m.fetch_all("SELECT * FROM {{tables.users}}", &[])
            .await
            .unwrap()
            .len(),
        7
    );
    let rows: Vec<_> = m
        .fetch_stream("SELECT * FROM {{tables.users}}", &[])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 7);
    assert!(m.table_exists("users").await.unwrap());

    // Inherited by transactions: control statements and calls inside them count too.
    let tx = m.transaction().await.unwrap();
    tx.execute("DELETE FROM {{tables.users}} WHERE email = $1", &[&"a@x"])
        .await
        .unwrap();
    let _: Option<i64> = tx
        .fetch_value("SELECT count(*) FROM {{tables.users}}", &[])
        .await
        .unwrap();
    {
        let sp = tx.transaction().await.unwrap();
        sp.executemany(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            vec![("h@x",)],
        )
        .await
        .unwrap();
        sp.rollback().await.unwrap();
    }
    tx.commit().await.unwrap();

    // The manager the monitor was attached to is not monitored itself.
    db.execute("SELECT 1", &[]).await.unwrap();

    assert_eq!(
        operations(&m),
        [
            "execute",
            "execute_and_return_id",
            "executemany",
            "copy_records_to_table",
            "fetch_value",
            "fetch_one",
            "fetch_all",
            "fetch_stream",
            "table_exists",
            "begin",
            "execute",
            "fetch_value",
            "savepoint",
            "executemany",
            "rollback_to_savepoint",
            "commit",
        ]
    );
    let history = m.get_query_history(None);
    assert_eq!(
        history[0].query,
        "INSERT INTO {{tables.users}} (email) VALUES ($1)"
    );
    assert_eq!(history[0].rows, Some(1));
    assert_eq!(history[2].rows, Some(3), "executemany: rows affected");
    assert_eq!(history[3].rows, Some(2), "COPY: rows copied");
    assert_eq!(history[6].rows, Some(7), "fetch_all: rows returned");
    assert_eq!(history[7].rows, Some(7), "fetch_stream: rows streamed");
    assert!(history
        .iter()
        .all(|r| r.args.is_none() && r.error.is_none()));
    let metrics = m.get_metrics().await.unwrap();
    assert_eq!(metrics.queries_executed, 16);
    assert_eq!(metrics.queries_failed, 0);
    assert!(metrics.average_duration > Duration::ZERO);
    assert!(metrics.slowest_duration >= metrics.average_duration);
    assert!(metrics.slowest_query.is_some());
    assert_eq!(metrics.pool.max_size, 4);
}

#[tokio::test]
async fn reading_the_figures_changes_no_counter() {
    let (db, _g) = schema_db().await;
    let m = monitored(&db, MonitorConfig::default());
    m.fetch_value::<i32>("SELECT 1", &[]).await.unwrap();
    m.execute("SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err();
    for _ in 0..3 {
        let metrics = m.get_metrics().await.unwrap();
        assert_eq!(metrics.queries_executed, 2);
        assert_eq!(metrics.queries_failed, 1);
        assert_eq!(m.get_query_history(None).len(), 2);
        m.get_slow_queries(Some(Duration::from_nanos(1))).unwrap();
    }
    let failed = &m.get_query_history(None)[1];
    assert!(
        failed.error.as_deref().unwrap().contains("no_such_table"),
        "{failed:?}"
    );
    m.reset();
    let metrics = m.get_metrics().await.unwrap();
    assert_eq!((metrics.queries_executed, metrics.queries_failed), (0, 0));
    assert_eq!(metrics.slowest_duration, Duration::ZERO);
    assert!(m.get_query_history(None).is_empty());
}

#[tokio::test]
async fn the_history_is_bounded_and_keeps_the_newest() {
    let (db, _g) = schema_db().await;
    let m = monitored(
        &db,
        MonitorConfig {
            max_history_size: 3,
            ..Default::default()
        },
    );
    for i in 1..=5 {
        m.fetch_value::<i32>(&format!("SELECT {i}"), &[])
            .await
            .unwrap();
    }
    let queries: Vec<String> = m
        .get_query_history(None)
        .into_iter()
        .map(|r| r.query)
        .collect();
    assert_eq!(queries, ["SELECT 3", "SELECT 4", "SELECT 5"]);
    let last: Vec<String> = m
        .get_query_history(Some(2))
        .into_iter()
        .map(|r| r.query)
        .collect();
    assert_eq!(last, ["SELECT 4", "SELECT 5"]);
    assert_eq!(m.get_metrics().await.unwrap().queries_executed, 5);
}

#[tokio::test]
async fn a_query_over_the_threshold_is_slow_and_logged() {
    let (db, _g) = schema_db().await;
    let m = monitored(
        &db,
        MonitorConfig {
            slow_query_threshold: Duration::from_millis(150),
            ..Default::default()
        },
    );
    let (cap, _sub) = capture::Capture::install();
    m.execute("SELECT pg_sleep(0.3)", &[]).await.unwrap();
    m.execute("SELECT 1", &[]).await.unwrap();
    let slow = m.get_slow_queries(None).unwrap();
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert_eq!(slow[0].query, "SELECT pg_sleep(0.3)");
    assert!(slow[0].duration >= Duration::from_millis(300));
    // An explicit threshold overrides the configured one.
    assert_eq!(
        m.get_slow_queries(Some(Duration::from_secs(5)))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(m.get_metrics().await.unwrap().slow_queries, 1);
    let warnings: Vec<_> = cap
        .events()
        .into_iter()
        .filter(|e| e.target == "pgdbm::monitor" && e.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].fields.get("query").map(String::as_str),
        Some("SELECT pg_sleep(0.3)")
    );
}

#[tokio::test]
async fn arguments_are_kept_masked_and_only_on_request() {
    let (db, _g) = schema_db().await;
    let long = "a-value-longer-than-twenty-characters";
    let plain = monitored(&db, MonitorConfig::default());
    plain
        .fetch_value::<String>("SELECT $1::text || $2", &[&"short", &long])
        .await
        .unwrap();
    assert_eq!(plain.get_query_history(None)[0].args, None);

    let with_args = monitored(
        &db,
        MonitorConfig {
            record_args: true,
            ..Default::default()
        },
    );
    with_args
        .fetch_value::<String>("SELECT $1::text || $2", &[&"short", &long])
        .await
        .unwrap();
    // By default each argument is its placeholder and kind, never its value.
    let args = with_args.get_query_history(None)[0].args.clone().unwrap();
    assert_eq!(
        args,
        format!("[$1: text(5 chars), $2: text({} chars)]", long.len())
    );
}

#[tokio::test]
async fn invalid_settings_are_configuration_errors() {
    let (db, _g) = schema_db().await;
    for (config, field) in [
        (
            MonitorConfig {
                max_history_size: 0,
                ..Default::default()
            },
            "max_history_size",
        ),
        (
            MonitorConfig {
                max_history_size: 10_000_000,
                ..Default::default()
            },
            "max_history_size",
        ),
        (
            MonitorConfig {
                slow_query_threshold: Duration::ZERO,
                ..Default::default()
            },
            "slow_query_threshold",
        ),
    ] {
        match MonitoredAsyncDatabaseManager::new(&db, config) {
            Err(Error::Configuration { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
    let m = monitored(&db, MonitorConfig::default());
    assert!(matches!(
        m.get_slow_queries(Some(Duration::ZERO)),
        Err(Error::Configuration { .. })
    ));
}

#[tokio::test]
async fn a_manager_over_a_shared_pool_can_be_monitored() {
    let pool = AsyncDatabaseManager::create_shared_pool(&config())
        .await
        .unwrap();
    let db = AsyncDatabaseManager::from_pool(pool.clone(), None).unwrap();
    let m = monitored(&db, MonitorConfig::default());
    let one: Option<i32> = m.fetch_value("SELECT 1", &[]).await.unwrap();
    assert_eq!(one, Some(1));
    let metrics = m.get_metrics().await.unwrap();
    assert_eq!(metrics.queries_executed, 1);
    assert_eq!(metrics.pool.max_size, 4);
    pool.close();
}

#[tokio::test]
async fn explain_analyze_of_a_delete_changes_nothing() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    db.executemany(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        vec![("a@x",), ("b@x",), ("c@x",)],
    )
    .await
    .unwrap();
    let m = monitored(&db, MonitorConfig::default());
    let plan = m
        .explain_query(
            "DELETE FROM {{tables.users}} WHERE id > $1;",
            &[&0_i32],
            true,
        )
        .await
        .unwrap();
    let top = &plan["Plan"];
    assert_eq!(top["Node Type"], "ModifyTable", "{plan:#}");
    assert_eq!(top["Operation"], "Delete", "{plan:#}");
    // ANALYZE ran the DELETE: its scan saw all three rows...
    assert_eq!(top["Plans"][0]["Actual Rows"], 3, "{plan:#}");
    // ...and the rollback kept them.
    assert_eq!(count_users(&db).await, 3);

    let plan = m
        .explain_query("SELECT * FROM {{tables.users}}", &[], false)
        .await
        .unwrap();
    assert!(
        plan["Plan"]["Actual Rows"].is_null(),
        "no ANALYZE: {plan:#}"
    );
    assert!(plan["Plan"]["Plan Rows"].is_number(), "{plan:#}");
    // A second statement cannot ride along.
    let err = m
        .explain_query(
            "DELETE FROM {{tables.users}}; DELETE FROM {{tables.users}}",
            &[],
            true,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42601"), "{err}");
    assert_eq!(count_users(&db).await, 3);
    // The monitor's own statements are not recorded.
    assert_eq!(m.get_metrics().await.unwrap().queries_executed, 0);
}

#[tokio::test]
async fn a_dropped_call_is_recorded_as_cancelled_and_a_dropped_stream_as_read() {
    let (db, _g) = schema_db().await;
    let m = monitored(&db, MonitorConfig::default());
    let (cap, _sub) = capture::Capture::install();
    // An outer timeout drops the call's future halfway.
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        m.execute("SELECT pg_sleep(2)", &[]),
    )
    .await;
    assert!(cut.is_err(), "the outer timeout fired");
    {
        let stream = m
            .fetch_stream("SELECT g FROM generate_series(1, 1000) g", &[])
            .await
            .unwrap();
        futures_util::pin_mut!(stream);
        for _ in 0..3 {
            stream.try_next().await.unwrap().unwrap();
        }
    }
    let history = m.get_query_history(None);
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0].operation, "execute");
    assert!(
        history[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("cancelled"),
        "{history:#?}"
    );
    assert!(history[0].duration >= Duration::from_millis(100));
    assert_eq!(history[1].operation, "fetch_stream");
    assert_eq!(history[1].rows, Some(3));
    assert_eq!(history[1].error, None);
    let metrics = m.get_metrics().await.unwrap();
    assert_eq!((metrics.queries_executed, metrics.queries_failed), (2, 1));
    assert_eq!(cap.one("execute").get("error.type"), Some("cancelled"));
    assert_eq!(cap.one("fetch_stream").get("error.type"), None);
    assert_eq!(
        cap.one("fetch_stream").get("db.response.returned_rows"),
        Some("3")
    );
}

#[tokio::test]
async fn an_owned_stream_read_in_another_task_is_recorded_once() {
    let (db, _g) = schema_db().await;
    let m = monitored(&db, MonitorConfig::default());
    let (cap, _sub) = capture::Capture::install();
    let rows = m
        .fetch_stream_owned("SELECT g FROM generate_series(1, $1) g", &[&25_i32])
        .await
        .unwrap();
    let read = tokio::spawn(async move { rows.try_collect::<Vec<_>>().await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.len(), 25);
    let history = m.get_query_history(None);
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0].operation, "fetch_stream_owned");
    assert_eq!(history[0].rows, Some(25));
    let span = cap.one("fetch_stream_owned");
    assert_eq!(span.get("db.operation.name"), Some("SELECT"));
    assert_eq!(span.get("db.response.returned_rows"), Some("25"));
}

#[tokio::test]
async fn copy_to_exports_are_recorded_with_their_copy_statement() {
    let (db, guard) = schema_db().await;
    users_table(&db).await;
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ('a@x'), ('b@x')",
        &[],
    )
    .await
    .unwrap();
    let m = monitored(&db, MonitorConfig::default());
    let (cap, _sub) = capture::Capture::install();
    let format = pgdbm::CopyFormat::Csv { header: false };
    let borrowed: Vec<bytes::Bytes> = m
        .copy_to("users", format)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let owned = m.copy_to_owned("users", format).await.unwrap();
    let owned: Vec<bytes::Bytes> = tokio::spawn(owned.try_collect()).await.unwrap().unwrap();
    assert_eq!(borrowed.concat(), owned.concat());
    let ops: Vec<_> = m
        .get_query_history(None)
        .iter()
        .map(|r| r.operation)
        .collect();
    assert_eq!(ops, ["copy_to", "copy_to_owned"]);
    for name in ["copy_to", "copy_to_owned"] {
        let s = cap.one(name);
        assert_eq!(s.get("db.operation.name"), Some("COPY"), "{s:#?}");
        let users = format!("{}.users", guard.0);
        assert_eq!(s.get("db.collection.name"), Some(users.as_str()), "{s:#?}");
        // Chunks of bytes are not rows.
        assert_eq!(s.get("db.response.returned_rows"), None, "{s:#?}");
    }
}

/// A pipeline is seen by the monitor statement by statement, as single calls are: each with
/// its operation, its template text, its rows, and its own error.
#[tokio::test]
async fn each_statement_of_a_pipeline_is_recorded() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let m = monitored(&db, MonitorConfig::default());
    let mut p = m.pipeline();
    let _ = p.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"p@x"],
    );
    let _ = p.fetch_one("SELEC 1", &[]);
    let _ = p.fetch_value::<i64>("SELECT count(*) FROM {{tables.users}}", &[]);
    p.run().await.unwrap();
    assert_eq!(operations(&m), ["execute", "fetch_one", "fetch_value"]);
    let history = m.get_query_history(None);
    assert_eq!(
        history[0].query,
        "INSERT INTO {{tables.users}} (email) VALUES ($1)"
    );
    assert_eq!(history[0].rows, Some(1));
    assert!(history[0].error.is_none());
    assert!(history[1].error.is_some(), "{:?}", history[1]);
    assert_eq!(history[2].rows, Some(1));
    let metrics = m.get_metrics().await.unwrap();
    assert_eq!(metrics.queries_executed, 3);
    assert_eq!(metrics.queries_failed, 1);
}
