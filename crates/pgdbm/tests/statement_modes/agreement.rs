//! Both modes agree for every type, parameter count, executemany and COPY; unnamed leaves nothing.

use crate::common::*;
use pgdbm::types::{Inet, Interval, Numeric};
use pgdbm::{AsyncDatabaseManager, EnumText, Error, Value};
use postgres_types::ToSql;

use super::{mode_db, Colour, Mood, NAMED, UNNAMED};

/// What a call produced, comparable across modes: the value as the server prints it, or the
/// error as SQLSTATE (server) or the driver's cause (client-side conversion).
fn outcome<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => match e.code() {
            Some(code) => format!("sqlstate {code}"),
            None => {
                let mut text = String::new();
                let mut cause: Option<&dyn std::error::Error> = Some(&e);
                while let Some(c) = cause {
                    text = c.to_string();
                    cause = c.source();
                }
                format!("client error: {text}")
            }
        },
    }
}

const COLUMNS: &str = "i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, num numeric, t text, \
    vc varchar(40), ch char(4), b bool, by bytea, js json, jb jsonb, u uuid, d date, tm time, \
    ts timestamp, tstz timestamptz, iv interval, ip inet, net cidr, m {{tables.mood}}, \
    ia int4[], ta text[], ua uuid[]";

async fn typed_table(db: &AsyncDatabaseManager) {
    db.execute(
        &format!(
            "CREATE TYPE {{{{tables.mood}}}} AS ENUM ('sad', 'happy'); \
             CREATE TABLE {{{{tables.typed}}}} (id serial PRIMARY KEY, {COLUMNS})"
        ),
        &[],
    )
    .await
    .unwrap();
}

type Case = (&'static str, Box<dyn ToSql + Sync + Send>);

/// Every column type of the round-trip suites, with right and wrong Rust types.
fn cases() -> Vec<Case> {
    let uuid = uuid::Uuid::parse_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
    let date = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let ts = date.and_hms_opt(13, 45, 1).unwrap();
    vec![
        // The reported corruption: text into int4 and into uuid.
        ("i4", Box::new("1234")),
        ("i4", Box::new("1234".to_owned())),
        ("u", Box::new("0123456789abcdef")),
        ("u", Box::new("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        // Integers of every width against every integer column.
        ("i2", Box::new(7_i16)),
        ("i2", Box::new(7_i32)),
        ("i4", Box::new(7_i32)),
        ("i4", Box::new(7_i64)),
        ("i4", Box::new(7_i16)),
        ("i8", Box::new(7_i64)),
        ("i8", Box::new(7_i32)),
        ("f4", Box::new(1.5_f32)),
        ("f4", Box::new(1.5_f64)),
        ("f8", Box::new(2.25_f64)),
        ("f8", Box::new(2.25_f32)),
        ("num", Box::new("12.5".parse::<Numeric>().unwrap())),
        ("num", Box::new(12_i32)),
        ("num", Box::new("12.5")),
        ("num", Box::new(12.5_f64)),
        ("t", Box::new("txt")),
        ("t", Box::new(5_i32)),
        ("vc", Box::new("vc")),
        ("ch", Box::new("ab")),
        ("b", Box::new(true)),
        ("b", Box::new("true")),
        ("by", Box::new(vec![0xde_u8, 0xad])),
        ("by", Box::new("\\xdead")),
        ("js", Box::new(serde_json::json!({"a": [1, 2]}))),
        ("js", Box::new("{\"a\": 1}")),
        ("jb", Box::new(serde_json::json!({"k": "v"}))),
        ("jb", Box::new("{\"k\": \"v\"}")),
        ("u", Box::new(uuid)),
        ("d", Box::new(date)),
        ("d", Box::new("2024-02-29")),
        (
            "tm",
            Box::new(chrono::NaiveTime::from_hms_opt(13, 45, 1).unwrap()),
        ),
        ("ts", Box::new(ts)),
        ("ts", Box::new(ts.and_utc())),
        ("tstz", Box::new(ts.and_utc())),
        ("tstz", Box::new(ts)),
        ("iv", Box::new("1 year 2 mons".parse::<Interval>().unwrap())),
        ("iv", Box::new("1 day")),
        ("ip", Box::new("10.0.0.1".parse::<Inet>().unwrap())),
        ("ip", Box::new("10.0.0.1")),
        ("net", Box::new("10.0.0.0/8".parse::<Inet>().unwrap())),
        ("m", Box::new(Mood::Happy)),
        ("m", Box::new(Colour::Red)),
        ("m", Box::new(EnumText("sad".into()))),
        ("m", Box::new(EnumText("angry".into()))),
        ("m", Box::new("happy")),
        ("ia", Box::new(vec![Some(1_i32), None, Some(3)])),
        ("ia", Box::new(vec![1_i64, 2])),
        ("ia", Box::new(vec!["1", "2"])),
        ("ta", Box::new(vec!["x", "y"])),
        ("ua", Box::new(vec![uuid])),
        ("ua", Box::new(vec!["0123456789abcdef"])),
        // Dynamic values check themselves against the declared type.
        ("i4", Box::new(Value::Int4(9))),
        ("i4", Box::new(Value::Int8(9))),
        ("i4", Box::new(Value::Text("9".into()))),
        ("t", Box::new(Value::Text("v".into()))),
        ("m", Box::new(Value::Text("happy".into()))),
        ("i4", Box::new(None::<i32>)),
        ("i4", Box::new(None::<&str>)),
    ]
}

async fn run_cases(db: &AsyncDatabaseManager) -> Vec<String> {
    let mut out = Vec::new();
    for (column, value) in cases() {
        let value: &(dyn ToSql + Sync) = &*value;
        let inserted = db
            .fetch_value::<String>(
                &format!(
                    "INSERT INTO {{{{tables.typed}}}} ({column}) VALUES ($1) RETURNING {column}::text"
                ),
                &[value],
            )
            .await;
        let compared = db
            .fetch_value::<bool>(
                &format!("SELECT {column} IS NOT DISTINCT FROM $1 FROM {{{{tables.typed}}}} ORDER BY id DESC LIMIT 1"),
                &[value],
            )
            .await;
        let updated = db
            .execute(
                &format!("UPDATE {{{{tables.typed}}}} SET {column} = $1 WHERE id = -1"),
                &[value],
            )
            .await;
        out.push(format!(
            "{column} {value:?}: insert {} / compare {} / update {}",
            outcome(inserted),
            outcome(compared),
            outcome(updated)
        ));
    }
    out
}

#[tokio::test]
async fn both_modes_agree_for_every_type() {
    let mut results = Vec::new();
    for cache in [NAMED, UNNAMED] {
        let (db, _g) = mode_db(cache, 2).await;
        typed_table(&db).await;
        let schema = db.schema().unwrap().to_owned();
        let lines = run_cases(&db).await;
        results.push(
            lines
                .into_iter()
                .map(|l| l.replace(&schema, "<schema>"))
                .collect::<Vec<_>>(),
        );
    }
    let (named, unnamed) = (&results[0], &results[1]);
    let mut differences = Vec::new();
    for (n, u) in named.iter().zip(unnamed) {
        if n != u {
            differences.push(format!("named:   {n}\nunnamed: {u}"));
        }
    }
    assert!(
        differences.is_empty(),
        "the modes differ:\n{}",
        differences.join("\n")
    );
    // The corruption reported: text must never land in int4 or uuid as bytes.
    for line in unnamed {
        assert!(!line.contains("825373492"), "{line}");
        if line.starts_with("u \"0123456789abcdef\"") || line.starts_with("i4 \"1234\"") {
            assert!(
                line.contains("insert client error: cannot convert"),
                "{line}"
            );
        }
        if line.starts_with("i4 7") && line.contains("i64") {
            assert!(
                line.contains("insert client error: cannot convert"),
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn parameter_count_errors_agree() {
    let mut outcomes = Vec::new();
    for cache in [NAMED, UNNAMED] {
        let (db, _g) = mode_db(cache, 1).await;
        let mut o = Vec::new();
        for params in [&[][..], &[&1_i32 as &(dyn ToSql + Sync)], &[&1_i32, &2_i32]] {
            o.push(outcome(
                db.fetch_value::<i32>("SELECT $1::int4 + 1", params).await,
            ));
            o.push(outcome(db.fetch_value::<i32>("SELECT 1", params).await));
            o.push(outcome(
                db.execute(
                    "UPDATE pg_catalog.pg_class SET relname = relname WHERE false AND oid = $1",
                    params,
                )
                .await,
            ));
        }
        outcomes.push(o);
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert!(
        outcomes[1][3].starts_with("ok Some(2)"),
        "{:?}",
        outcomes[1]
    );
}

#[tokio::test]
async fn unnamed_mode_leaves_no_statement_and_keeps_transactions() {
    let (db, _g) = mode_db(UNNAMED, 1).await;
    typed_table(&db).await;
    db.execute(
        "INSERT INTO {{tables.typed}} (i4, m) VALUES ($1, $2)",
        &[&1_i32, &Mood::Sad],
    )
    .await
    .unwrap();
    let left: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement NOT LIKE '%FROM pg_catalog.pg_%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(left, Some(0), "learning parameter types left a statement");
    // The connection is idle, not left inside the learning transaction.
    let pid: Option<i32> = db
        .fetch_value("SELECT pg_backend_pid() + $1", &[&0_i32])
        .await
        .unwrap();
    let state = admin_value(&format!(
        "SELECT state FROM pg_stat_activity WHERE pid = {}",
        pid.unwrap()
    ))
    .await;
    assert_eq!(state.as_deref(), Some("idle"));

    // Inside a transaction the types are learned without ending it.
    let tx = db.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO {{tables.typed}} (i4, t) VALUES ($1, $2)",
        &[&2_i32, &"in tx"],
    )
    .await
    .unwrap();
    let seen: Option<i64> = tx
        .fetch_value(
            "SELECT count(*) FROM {{tables.typed}} WHERE t = $1 AND i4 = $2",
            &[&"in tx", &2_i32],
        )
        .await
        .unwrap();
    assert_eq!(seen, Some(1));
    tx.rollback().await.unwrap();
    let after: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM {{tables.typed}} WHERE t = $1",
            &[&"in tx"],
        )
        .await
        .unwrap();
    assert_eq!(after, Some(0), "the transaction was ended by type learning");
}

/// Multi-row INSERT, pipelined rows, and COPY in both modes.
#[tokio::test]
async fn executemany_and_copy_agree() {
    let mut results = Vec::new();
    for cache in [NAMED, UNNAMED] {
        let (db, _g) = mode_db(cache, 2).await;
        typed_table(&db).await;
        let mut o = Vec::new();
        // 20 rows: one multi-row chunk of 16 and 4 pipelined rows.
        let good: Vec<(i32, Mood, String)> = (0..20)
            .map(|i| {
                (
                    i,
                    if i % 2 == 0 { Mood::Sad } else { Mood::Happy },
                    format!("r{i}"),
                )
            })
            .collect();
        o.push(outcome(
            db.executemany(
                "INSERT INTO {{tables.typed}} (i4, m, t) VALUES ($1, $2, $3)",
                good.clone(),
            )
            .await,
        ));
        let text_ints: Vec<(String,)> = (0..20).map(|i| (format!("{}", 1000 + i),)).collect();
        o.push(outcome(
            db.executemany(
                "INSERT INTO {{tables.typed}} (i4) VALUES ($1)",
                text_ints.clone(),
            )
            .await,
        ));
        o.push(outcome(
            db.executemany(
                "INSERT INTO {{tables.typed}} (i4) VALUES ($1) ON CONFLICT DO NOTHING",
                text_ints,
            )
            .await,
        ));
        let wide: Vec<(i64,)> = (0..20).map(|i| (i,)).collect();
        o.push(outcome(
            db.executemany(
                "INSERT INTO {{tables.typed}} (i4) VALUES ($1)",
                wide.clone(),
            )
            .await,
        ));
        o.push(outcome(
            db.executemany(
                "INSERT INTO {{tables.typed}} (i4) VALUES ($1) ON CONFLICT DO NOTHING",
                wide,
            )
            .await,
        ));
        let uuids: Vec<(&str,)> = vec![("0123456789abcdef",); 17];
        o.push(outcome(
            db.executemany("INSERT INTO {{tables.typed}} (u) VALUES ($1)", uuids)
                .await,
        ));
        o.push(outcome(
            db.executemany(
                "INSERT INTO {{tables.typed}} (i4, m, t) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                good.clone(),
            )
            .await,
        ));
        // COPY encodes with the table's own types in both modes.
        o.push(outcome(
            db.copy_records_to_table("typed", good.clone(), Some(&["i4", "m", "t"]))
                .await,
        ));
        o.push(outcome(
            db.copy_records_to_table("typed", vec![("12",)], Some(&["i4"]))
                .await,
        ));
        let rows = db
            .fetch_all(
                "SELECT i4, m::text AS m, t, u::text AS u FROM {{tables.typed}} ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        o.push(format!(
            "{:?}",
            rows.iter()
                .map(|r| format!(
                    "{:?} {:?} {:?} {:?}",
                    r.get::<Option<i32>>("i4").unwrap(),
                    r.get::<Option<String>>("m").unwrap(),
                    r.get::<Option<String>>("t").unwrap(),
                    r.get::<Option<String>>("u").unwrap()
                ))
                .collect::<Vec<_>>()
        ));
        results.push(o);
    }
    assert_eq!(results[0], results[1]);
    let unnamed = &results[1];
    assert_eq!(unnamed[0], "ok 20");
    for i in [1, 2, 3, 4, 5] {
        assert!(
            unnamed[i].starts_with("client error: cannot convert"),
            "{i}: {}",
            unnamed[i]
        );
    }
    assert!(!unnamed[9].contains("825373"), "{}", unnamed[9]);
}
