//! Decoding and encoding of every supported type through the manager, dynamic and typed.

mod common;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use common::*;
use pgdbm::types::{Inet, Interval, Numeric};
use pgdbm::{EnumText, Error, Value};
use serde::Deserialize;

const ALL_TYPES: &str = "SELECT
    true AS b, 2::int2 AS i2, 4::int4 AS i4, 8::int8 AS i8, 1.5::float4 AS f4, 2.25::float8 AS f8,
    123456789012345678901234567890.000100::numeric AS num, 'txt'::text AS t, 'vc'::varchar AS vc,
    'c'::char(3) AS ch, 'nm'::name AS nm, '\\xdeadbeef'::bytea AS by, '{\"a\": [1, 2]}'::json AS js,
    '{\"k\": \"v\"}'::jsonb AS jb, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
    '2024-02-29'::date AS d, '13:45:01.5'::time AS tm, '2024-02-29 13:45:01'::timestamp AS ts,
    '2024-02-29 13:45:01+00'::timestamptz AS tstz, '1 year 2 mons 3 days 04:05:06'::interval AS iv,
    '10.0.0.1'::inet AS ip, '10.0.0.0/8'::cidr AS net, 'happy'::{{tables.mood}} AS en,
    ARRAY[1, NULL, 3]::int4[] AS arr, ARRAY['x', 'y']::text[] AS tarr, NULL::int4 AS nul,
    'infinity'::timestamp AS inf";

async fn setup() -> (pgdbm::AsyncDatabaseManager, SchemaGuard) {
    let (db, g) = schema_db().await;
    db.execute("CREATE TYPE {{tables.mood}} AS ENUM ('sad', 'happy')", &[])
        .await
        .unwrap();
    (db, g)
}

#[tokio::test]
async fn dynamic_values_cover_the_types() {
    let (db, _g) = setup().await;
    let row = db.fetch_one(ALL_TYPES, &[]).await.unwrap().unwrap();
    let v = |c: &str| row.get_value(c).unwrap();
    assert_eq!(v("b"), Value::Bool(true));
    assert_eq!(v("i2"), Value::Int2(2));
    assert_eq!(v("i4"), Value::Int4(4));
    assert_eq!(v("i8"), Value::Int8(8));
    assert_eq!(v("f4"), Value::Float4(1.5));
    assert_eq!(v("f8"), Value::Float8(2.25));
    assert_eq!(
        v("num"),
        Value::Numeric("123456789012345678901234567890.000100".parse().unwrap())
    );
    assert_eq!(v("t"), Value::Text("txt".into()));
    assert_eq!(v("vc"), Value::Text("vc".into()));
    assert_eq!(v("ch"), Value::Text("c  ".into()));
    assert_eq!(v("nm"), Value::Text("nm".into()));
    assert_eq!(v("by"), Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]));
    assert_eq!(v("js"), Value::Json(serde_json::json!({"a": [1, 2]})));
    assert_eq!(v("jb"), Value::Json(serde_json::json!({"k": "v"})));
    assert_eq!(
        v("u"),
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".parse().unwrap())
    );
    assert_eq!(
        v("d"),
        Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
    );
    assert_eq!(
        v("tm"),
        Value::Time(NaiveTime::from_hms_milli_opt(13, 45, 1, 500).unwrap())
    );
    assert_eq!(
        v("ts"),
        Value::Timestamp(
            NaiveDateTime::parse_from_str("2024-02-29 13:45:01", "%Y-%m-%d %H:%M:%S").unwrap()
        )
    );
    assert_eq!(
        v("tstz"),
        Value::TimestampTz("2024-02-29T13:45:01Z".parse::<DateTime<Utc>>().unwrap())
    );
    assert_eq!(v("iv").to_string(), "\"1 year 2 mons 3 days 04:05:06\"");
    assert_eq!(v("ip"), Value::Inet("10.0.0.1".parse().unwrap()));
    assert_eq!(v("net").to_json(), serde_json::json!("10.0.0.0/8"));
    assert_eq!(v("en"), Value::Text("happy".into()));
    assert_eq!(
        v("arr"),
        Value::Array(vec![Value::Int4(1), Value::Null, Value::Int4(3)])
    );
    assert_eq!(
        v("tarr"),
        Value::Array(vec![Value::Text("x".into()), Value::Text("y".into())])
    );
    assert_eq!(v("nul"), Value::Null);
    assert_eq!(v("inf"), Value::Text("infinity".into()));

    let json = row.to_json().unwrap();
    assert_eq!(json["num"], "123456789012345678901234567890.000100");
    assert_eq!(json["by"], "\\xdeadbeef");
    assert_eq!(json["js"]["a"][1], 2);
    assert_eq!(json["arr"], serde_json::json!([1, null, 3]));
    assert_eq!(json["tstz"], "2024-02-29T13:45:01+00:00");
    assert_eq!(json["nul"], serde_json::Value::Null);
    // Column order is kept, in the record and in its JSON.
    let names: Vec<&str> = row.columns().collect();
    assert_eq!(&names[..3], ["b", "i2", "i4"]);
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, names);
}

#[tokio::test]
async fn typed_getters() {
    let (db, _g) = setup().await;
    let row = db.fetch_one(ALL_TYPES, &[]).await.unwrap().unwrap();
    assert!(row.get::<bool>("b").unwrap());
    assert_eq!(
        row.get::<Numeric>("num").unwrap().as_str(),
        "123456789012345678901234567890.000100"
    );
    assert_eq!(row.get::<Interval>("iv").unwrap().months, 14);
    assert_eq!(row.get::<Inet>("net").unwrap().prefix, 8);
    assert_eq!(
        row.get::<Vec<Option<i32>>>("arr").unwrap(),
        vec![Some(1), None, Some(3)]
    );
    assert_eq!(row.get::<EnumText>("en").unwrap().0, "happy");
    assert_eq!(row.get::<&str>("t").unwrap(), "txt");
    assert_eq!(
        row.get::<uuid::Uuid>("u").unwrap().to_string(),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    assert_eq!(row.get::<serde_json::Value>("jb").unwrap()["k"], "v");
}

#[tokio::test]
async fn an_undecodable_type_is_a_decode_error_naming_the_column() {
    let (db, _g) = setup().await;
    let row = db
        .fetch_one("SELECT '(1,2)'::point AS p, int4range(1, 5) AS r", &[])
        .await
        .unwrap()
        .unwrap();
    for (col, ty) in [("p", "point"), ("r", "int4range")] {
        match row.get_value(col) {
            Err(Error::Decode {
                column, pg_type, ..
            }) => {
                assert_eq!(column, col);
                assert_eq!(pg_type, ty);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(row.to_json().is_err());
    assert!(serde_json::to_string(&row).is_err());
}

#[tokio::test]
async fn models_read_straight_from_the_row() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Everything {
        b: bool,
        i2: i16,
        i4: i64, // widening is fine
        i8: i64,
        f4: f32,
        f8: f64,
        num: String,
        t: String,
        by: Vec<u8>,
        js: serde_json::Value,
        jb: std::collections::HashMap<String, String>,
        u: uuid::Uuid,
        d: NaiveDate,
        tm: NaiveTime,
        ts: NaiveDateTime,
        tstz: DateTime<Utc>,
        iv: String,
        ip: String,
        en: Mood,
        arr: Vec<Option<i32>>,
        tarr: Vec<String>,
        nul: Option<i32>,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mood {
        Sad,
        Happy,
    }
    let (db, _g) = setup().await;
    let e: Everything = db.fetch_as_model(ALL_TYPES, &[]).await.unwrap().unwrap();
    assert_eq!(e.num, "123456789012345678901234567890.000100");
    assert_eq!(e.by, vec![0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(e.jb["k"], "v");
    assert_eq!(e.en, Mood::Happy);
    assert_eq!(e.arr, vec![Some(1), None, Some(3)]);
    assert_eq!(e.tstz.to_rfc3339(), "2024-02-29T13:45:01+00:00");
    assert_eq!(e.iv, "1 year 2 mons 3 days 04:05:06");
    assert_eq!(e.ip, "10.0.0.1");
    assert_eq!(e.nul, None);
    assert_eq!(e.i4, 4);

    // numeric into f64 and i64 fields.
    #[derive(Deserialize)]
    struct Nums {
        a: f64,
        b: i64,
    }
    let n: Nums = db
        .fetch_as_model("SELECT 1.25::numeric AS a, 42::numeric AS b", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n.a, n.b), (1.25, 42));

    // A NULL into a non-Option field, and a type mismatch, name the column.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Strict {
        x: i32,
    }
    match db
        .fetch_as_model::<Strict>("SELECT NULL::int4 AS x", &[])
        .await
    {
        Err(Error::Decode {
            column, message, ..
        }) => {
            assert_eq!(column, "x");
            assert!(message.contains("NULL"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match db
        .fetch_as_model::<Strict>("SELECT 'abc'::text AS x", &[])
        .await
    {
        Err(Error::Decode {
            column, pg_type, ..
        }) => {
            assert_eq!(column, "x");
            assert_eq!(pg_type, "text");
        }
        other => panic!("{other:?}"),
    }
    match db.fetch_as_model::<Strict>("SELECT 1 AS y", &[]).await {
        Err(Error::Decode { message, .. }) => {
            assert!(message.contains("missing field"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Tuples read columns by position.
    let t: Option<(i32, String)> = db.fetch_as_model("SELECT 1, 'a'", &[]).await.unwrap();
    assert_eq!(t, Some((1, "a".to_string())));
}

#[tokio::test]
async fn parameters_of_the_same_types_encode() {
    let (db, _g) = setup().await;
    db.execute(
        "CREATE TABLE {{tables.all_types}} (b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
         num numeric, t text, by bytea, jb jsonb, u uuid, d date, tm time, ts timestamp, tstz timestamptz,
         iv interval, ip inet, net cidr, en {{tables.mood}}, arr int4[], tarr text[])",
        &[],
    )
    .await
    .unwrap();
    let num: Numeric = "-0.000123".parse().unwrap();
    let iv: Interval = "1 day 02:00:00".parse().unwrap();
    let ip: Inet = "::1".parse().unwrap();
    let net = Inet::new_cidr("192.168.0.0".parse().unwrap(), 16).unwrap();
    let ts = NaiveDateTime::parse_from_str("2020-01-02 03:04:05", "%Y-%m-%d %H:%M:%S").unwrap();
    db.execute(
        "INSERT INTO {{tables.all_types}} VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21)",
        &[
            &true,
            &7_i16,
            &8_i32,
            &9_i64,
            &1.5_f32,
            &2.5_f64,
            &num,
            &"text",
            &vec![1_u8, 2],
            &serde_json::json!({"a": 1}),
            &uuid::Uuid::nil(),
            &NaiveDate::from_ymd_opt(2020, 1, 2).unwrap(),
            &NaiveTime::from_hms_opt(3, 4, 5).unwrap(),
            &ts,
            &ts.and_utc(),
            &iv,
            &ip,
            &net,
            &EnumText("sad".into()),
            &vec![Some(1_i32), None],
            &vec!["a", "b"],
        ],
    )
    .await
    .unwrap();
    let row = db
        .fetch_one("SELECT num::text, iv::text, host(ip) AS ip, net::text, en::text, arr::text, tarr::text FROM {{tables.all_types}}", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<String>("num").unwrap(), "-0.000123");
    assert_eq!(row.get::<String>("iv").unwrap(), "1 day 02:00:00");
    assert_eq!(row.get::<String>("ip").unwrap(), "::1");
    assert_eq!(row.get::<String>("net").unwrap(), "192.168.0.0/16");
    assert_eq!(row.get::<String>("en").unwrap(), "sad");
    assert_eq!(row.get::<String>("arr").unwrap(), "{1,NULL}");
    assert_eq!(row.get::<String>("tarr").unwrap(), "{a,b}");

    // Dynamic Value rows round-trip through executemany.
    let rows = vec![vec![
        Value::Bool(false),
        Value::Int2(1),
        Value::Text("x".into()),
        Value::Null,
    ]];
    db.executemany(
        "INSERT INTO {{tables.all_types}} (b, i2, t, i4) VALUES ($1, $2, $3, $4)",
        rows,
    )
    .await
    .unwrap();
    let n: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM {{tables.all_types}} WHERE t = 'x'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, Some(1));
}

#[tokio::test]
async fn dates_and_times_into_string_fields() {
    #[derive(Deserialize)]
    struct Texts {
        tstz: String,
        ts: String,
        d: String,
        old: String,
        far: String,
        tm: String,
        u: String,
        inf: String,
    }
    let (db, _g) = setup().await;
    let t: Texts = db
        .fetch_as_model(
            "SELECT '2024-02-29 13:45:01.25+02'::timestamptz AS tstz, '2024-02-29 13:45:01'::timestamp AS ts,
                    '2024-02-29'::date AS d, '0999-01-02'::date AS old, '12345-06-07'::date AS far,
                    '00:00:00.000001'::time AS tm, 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid AS u,
                    'infinity'::timestamptz AS inf",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.tstz, "2024-02-29T11:45:01.250000+00:00");
    assert_eq!(t.ts, "2024-02-29T13:45:01");
    assert_eq!(t.d, "2024-02-29");
    assert_eq!(t.old, "0999-01-02");
    assert_eq!(t.far, "+12345-06-07");
    assert_eq!(t.tm, "00:00:00.000001");
    assert_eq!(t.u, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(t.inf, "infinity");
}

#[tokio::test]
async fn from_row_reads_fields_straight_from_the_wire() {
    #[derive(Debug, PartialEq, pgdbm::FromRow, Deserialize)]
    struct Order {
        id: i64,
        #[pgdbm(rename = "total_cents")]
        #[serde(rename = "total_cents")]
        total: i64,
        note: Option<String>,
        placed: DateTime<Utc>,
        day: NaiveDate,
        tags: Vec<String>,
        r#type: String,
    }
    let (db, _g) = schema_db().await;
    let sql = "SELECT g::int8 AS id, g * 100::int8 AS total_cents, \
               CASE WHEN g % 2 = 0 THEN 'even ' || g END AS note, \
               timestamptz '2024-02-29 23:59:59.123456+00' + g * interval '1 day' AS placed, \
               date '2024-01-01' + g AS day, ARRAY['a', g::text] AS tags, 'web' AS type \
               FROM generate_series(1, 3) AS g ORDER BY g";
    let typed: Vec<Order> = db.fetch_all_as(sql, &[]).await.unwrap();
    assert_eq!(typed.len(), 3);
    assert_eq!(typed[1].total, 200);
    assert_eq!(typed[0].note, None);
    assert_eq!(typed[1].note.as_deref(), Some("even 2"));
    assert_eq!(
        typed[0].placed.to_rfc3339(),
        "2024-03-01T23:59:59.123456+00:00"
    );
    assert_eq!(typed[2].day, NaiveDate::from_ymd_opt(2024, 1, 4).unwrap());
    assert_eq!(typed[2].tags, vec!["a".to_owned(), "3".to_owned()]);
    assert_eq!(typed[0].r#type, "web");
    // The serde path reads the same values.
    let via_serde: Vec<Order> = db.fetch_all_as_model(sql, &[]).await.unwrap();
    assert_eq!(typed, via_serde);
    let one: Option<Order> = db
        .fetch_one_as(&format!("{sql} LIMIT 1"), &[])
        .await
        .unwrap();
    assert_eq!(one.as_ref(), typed.first());
    let none: Option<Order> = db
        .fetch_one_as("SELECT * FROM (SELECT 1) AS t WHERE false", &[])
        .await
        .unwrap();
    assert_eq!(none, None);

    // A missing column and a wrong type name the column.
    #[derive(Debug, pgdbm::FromRow)]
    #[allow(dead_code)]
    struct Missing {
        id: i64,
        absent: i32,
    }
    let e = db
        .fetch_all_as::<Missing>("SELECT 1::int8 AS id", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Decode { column, .. } if column == "absent"),
        "{e:?}"
    );
    #[derive(Debug, pgdbm::FromRow)]
    #[allow(dead_code)]
    struct WrongType {
        id: String,
    }
    let e = db
        .fetch_one_as::<WrongType>("SELECT 1::int8 AS id", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Decode { column, pg_type, .. } if column == "id" && pg_type == "int8"),
        "{e:?}"
    );
    // NULL into a non-Option field is an error, not a default.
    #[derive(Debug, pgdbm::FromRow)]
    #[allow(dead_code)]
    struct NotNull {
        note: String,
    }
    let e = db
        .fetch_one_as::<NotNull>("SELECT NULL::text AS note", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Decode { column, .. } if column == "note"),
        "{e:?}"
    );
    // In a transaction too.
    let tx = db.transaction().await.unwrap();
    let in_tx: Vec<Order> = tx.fetch_all_as(sql, &[]).await.unwrap();
    assert_eq!(in_tx, typed);
    tx.rollback().await.unwrap();
}

/// Enums (and domains over text) read as text through every typed path, as the serde path
/// already did: `Record::get::<String>`, `fetch_value`, `fetch_column` and `FromRow`.
#[tokio::test]
async fn enums_and_text_domains_read_as_strings_on_every_typed_path() {
    let (db, _g) = setup().await;
    db.execute(
        "CREATE DOMAIN {{tables.email}} AS text CHECK (VALUE LIKE '%@%');
         CREATE TABLE {{tables.accounts}} (id int, plan {{tables.mood}}, mail {{tables.email}},
             maybe {{tables.mood}});
         INSERT INTO {{tables.accounts}} VALUES (1, 'happy', 'a@x.org', NULL)",
        &[],
    )
    .await
    .unwrap();
    let row = db
        .fetch_one("SELECT * FROM {{tables.accounts}}", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<String>("plan").unwrap(), "happy");
    assert_eq!(row.get::<&str>("plan").unwrap(), "happy");
    assert_eq!(row.get::<Option<String>>("maybe").unwrap(), None);
    assert_eq!(row.get::<String>("mail").unwrap(), "a@x.org");
    // A type that does not take text still says what is wrong.
    let err = row.get::<i32>("plan").unwrap_err();
    assert!(err.to_string().contains("plan"), "{err}");
    let plan: Option<String> = db
        .fetch_value("SELECT plan FROM {{tables.accounts}}", &[])
        .await
        .unwrap();
    assert_eq!(plan.as_deref(), Some("happy"));
    let plans: Vec<String> = db
        .fetch_column("SELECT plan FROM {{tables.accounts}}", &[])
        .await
        .unwrap();
    assert_eq!(plans, ["happy"]);

    #[derive(pgdbm::FromRow, Debug, PartialEq)]
    struct Account {
        id: i32,
        plan: String,
        mail: String,
        maybe: Option<String>,
    }
    let account: Option<Account> = db
        .fetch_one_as("SELECT * FROM {{tables.accounts}}", &[])
        .await
        .unwrap();
    assert_eq!(
        account,
        Some(Account {
            id: 1,
            plan: "happy".into(),
            mail: "a@x.org".into(),
            maybe: None,
        })
    );
}
