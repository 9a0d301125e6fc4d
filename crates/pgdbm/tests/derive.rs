//! Typed rows: `#[derive(pgdbm::FromRow)]` and its attributes, and the rule that each read path
//! follows its own attributes (`fetch_*_as` the `#[pgdbm(...)]` ones, `fetch_*_as_model`
//! serde's), strictly.

mod common;

use common::schema_db;
use pgdbm::Error;

/// The README's own struct: one Rust field, two names for its column.
#[derive(pgdbm::FromRow, serde::Deserialize, Debug)]
#[allow(dead_code)]
struct U {
    id: i32,
    email: String,
    #[pgdbm(rename = "name")]
    display: Option<String>,
}

/// The column, PostgreSQL type and message of a decode error; any other error fails the test.
fn decode(e: &Error) -> (&str, &str, &str) {
    match e {
        Error::Decode {
            column,
            pg_type,
            message,
        } => (column, pg_type, message),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

const USER_ROW: &str = "SELECT 1::int4 AS id, 'a@x'::text AS email, 'Ann'::text AS name";

#[tokio::test]
async fn the_serde_path_refuses_a_field_that_is_not_a_column() {
    let (db, _g) = schema_db().await;
    let typed: Vec<U> = db.fetch_all_as(USER_ROW, &[]).await.unwrap();
    assert_eq!(typed[0].display.as_deref(), Some("Ann"));

    // serde knows the field as `display`, which the row does not have: an error, never a
    // silent `None`.
    let e = db.fetch_all_as_model::<U>(USER_ROW, &[]).await.unwrap_err();
    let (column, _, message) = decode(&e);
    assert_eq!(column, "display");
    assert!(message.contains(r#"["id", "email", "name"]"#), "{message}");
    assert!(message.contains("#[serde(rename"), "{message}");
    assert!(message.contains("fetch_*_as"), "{message}");
    let one = db.fetch_as_model::<U>(USER_ROW, &[]).await.unwrap_err();
    assert_eq!(decode(&one).0, "display");

    // serde's own rename is what the serde path follows.
    #[derive(serde::Deserialize)]
    struct S {
        #[serde(rename = "name")]
        display: Option<String>,
    }
    let s: Vec<S> = db.fetch_all_as_model(USER_ROW, &[]).await.unwrap();
    assert_eq!(s[0].display.as_deref(), Some("Ann"));

    // With a column left unread, `#[serde(default)]` does not hide the missing one.
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct D {
        id: i32,
        #[serde(default)]
        score: i32,
    }
    let e = db.fetch_as_model::<D>(USER_ROW, &[]).await.unwrap_err();
    assert_eq!(decode(&e).0, "score");
    // When every column is read, serde's rules apply: the default, or `None`.
    let d: D = db
        .fetch_as_model("SELECT 1::int4 AS id", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.id, d.score), (1, 0));
    #[derive(serde::Deserialize, Debug)]
    struct O {
        id: i32,
        nick: Option<String>,
    }
    let o: O = db
        .fetch_as_model("SELECT 2::int4 AS id", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((o.id, o.nick), (2, None));
    let d: D = db
        .fetch_as_model("SELECT 1::int4 AS id, 7::int4 AS score", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.id, d.score), (1, 7));

    // An alias the row does not use is fine when every column is read.
    #[derive(serde::Deserialize, Debug)]
    struct Aliased {
        #[serde(alias = "display_name")]
        name: String,
    }
    for sql in [
        "SELECT 'Ann'::text AS name",
        "SELECT 'Ann'::text AS display_name",
    ] {
        let a: Aliased = db.fetch_as_model(sql, &[]).await.unwrap().unwrap();
        assert_eq!(a.name, "Ann");
    }

    // Extra columns stay fine, and so do tuples (by position) and skipped fields.
    #[derive(serde::Deserialize)]
    struct Few {
        email: String,
        #[serde(skip)]
        cache: Vec<u8>,
    }
    let f: Few = db.fetch_as_model(USER_ROW, &[]).await.unwrap().unwrap();
    assert_eq!((f.email.as_str(), f.cache.len()), ("a@x", 0));
    let t: Option<(i32, String)> = db.fetch_as_model("SELECT 1, 'a'", &[]).await.unwrap();
    assert_eq!(t, Some((1, "a".to_owned())));
}

#[derive(pgdbm::FromRow, Debug, PartialEq)]
struct WithDefaults {
    id: i32,
    #[pgdbm(default)]
    score: i32,
    #[pgdbm(default, rename = "nick")]
    nickname: Option<String>,
}

#[tokio::test]
async fn default_fills_an_absent_column_only() {
    let (db, _g) = schema_db().await;
    let absent: WithDefaults = db
        .fetch_one_as("SELECT 1::int4 AS id", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        absent,
        WithDefaults {
            id: 1,
            score: 0,
            nickname: None
        }
    );
    let present: WithDefaults = db
        .fetch_one_as(
            "SELECT 2::int4 AS id, 5::int4 AS score, 'bo'::text AS nick",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (present.score, present.nickname.as_deref()),
        (5, Some("bo"))
    );
    // A present NULL is decoded as usual: an error for a non-Option field.
    let e = db
        .fetch_one_as::<WithDefaults>("SELECT 3::int4 AS id, NULL::int4 AS score", &[])
        .await
        .unwrap_err();
    assert_eq!(decode(&e).0, "score");
    // Without `default`, a missing column is an error naming it and listing the row's columns.
    let e = db
        .fetch_one_as::<WithDefaults>("SELECT 5 AS score", &[])
        .await
        .unwrap_err();
    let (column, _, message) = decode(&e);
    assert_eq!(column, "id");
    assert!(message.contains(r#"["score"]"#), "{message}");
}

#[derive(serde::Deserialize, Debug, PartialEq, Default)]
struct Meta {
    k: String,
    n: i32,
}

#[derive(pgdbm::FromRow, Debug)]
struct WithJson {
    #[pgdbm(json)]
    meta: Meta,
    #[pgdbm(json, rename = "extra")]
    more: Option<Meta>,
    #[pgdbm(json, default)]
    tags: Vec<String>,
}

#[tokio::test]
async fn json_columns_deserialize_into_serde_types() {
    let (db, _g) = schema_db().await;
    let r: WithJson = db
        .fetch_one_as(
            r#"SELECT '{"k": "a", "n": 1}'::jsonb AS meta, '{"k": "b", "n": 2}'::json AS extra,
                      '["x", "y"]'::jsonb AS tags"#,
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.meta,
        Meta {
            k: "a".into(),
            n: 1
        }
    );
    assert_eq!(
        r.more,
        Some(Meta {
            k: "b".into(),
            n: 2
        })
    );
    assert_eq!(r.tags, vec!["x", "y"]);
    // NULL into an Option is None; an absent `default` column is the default.
    let r: WithJson = db
        .fetch_one_as(
            r#"SELECT '{"k": "a", "n": 1}'::jsonb AS meta, NULL::jsonb AS extra"#,
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.more, r.tags.len()), (None, 0));
    // NULL into a non-Option is an error naming the column.
    let e = db
        .fetch_one_as::<WithJson>("SELECT NULL::jsonb AS meta, NULL::json AS extra", &[])
        .await
        .unwrap_err();
    let (column, _, message) = decode(&e);
    assert_eq!(column, "meta");
    assert!(message.contains("NULL"), "{message}");
    // JSON that does not fit names the column, the target type and serde's reason.
    let e = db
        .fetch_one_as::<WithJson>(
            r#"SELECT '{"k": 1, "n": 1}'::jsonb AS meta, NULL::json AS extra"#,
            &[],
        )
        .await
        .unwrap_err();
    let (column, pg_type, message) = decode(&e);
    assert_eq!((column, pg_type), ("meta", "jsonb"));
    assert!(message.contains("Meta"), "{message}");
    assert!(message.contains("invalid type"), "{message}");
    // A column that is not json or jsonb says how to fix the query.
    let e = db
        .fetch_one_as::<WithJson>(
            r#"SELECT '{"k": "a", "n": 1}'::text AS meta, NULL::json AS extra"#,
            &[],
        )
        .await
        .unwrap_err();
    let (column, pg_type, message) = decode(&e);
    assert_eq!((column, pg_type), ("meta", "text"));
    assert!(message.contains("::jsonb"), "{message}");
}

#[derive(pgdbm::FromRow, Debug, PartialEq)]
struct Address {
    city: String,
    zip: Option<String>,
}

#[derive(pgdbm::FromRow, Debug, PartialEq)]
struct Customer {
    id: i32,
    #[pgdbm(flatten)]
    address: Address,
    #[pgdbm(skip)]
    cache: Vec<u8>,
}

#[tokio::test]
async fn flatten_reads_the_same_row_and_skip_reads_nothing() {
    let (db, _g) = schema_db().await;
    let c: Customer = db
        .fetch_one_as(
            "SELECT 1::int4 AS id, 'Oslo'::text AS city, NULL::text AS zip, '\\x01'::bytea AS cache",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c,
        Customer {
            id: 1,
            address: Address {
                city: "Oslo".into(),
                zip: None
            },
            cache: Vec::new(),
        }
    );
    // The flattened struct's own missing column is reported by name.
    let e = db
        .fetch_one_as::<Customer>("SELECT 1::int4 AS id, NULL::text AS zip", &[])
        .await
        .unwrap_err();
    assert_eq!(decode(&e).0, "city");
}

/// Generic fields get the bounds their attribute needs, without a where clause.
#[derive(pgdbm::FromRow, Debug)]
struct Page<T, M, D> {
    #[pgdbm(flatten)]
    item: T,
    #[pgdbm(json)]
    meta: M,
    total: D,
    #[pgdbm(default)]
    extra: Option<D>,
}

#[derive(pgdbm::FromRow, Debug)]
struct Bounded<T>
where
    T: Clone,
{
    value: T,
}

mod reexported {
    pub use pgdbm as db;
}

/// The crate path for a renamed or re-exported dependency.
#[derive(pgdbm::FromRow, Debug)]
#[pgdbm(crate = "crate::reexported::db")]
struct ThroughPath {
    id: i64,
}

#[tokio::test]
async fn generics_and_the_crate_path() {
    let (db, _g) = schema_db().await;
    let p: Page<Address, Meta, i64> = db
        .fetch_one_as(
            r#"SELECT 'Rome'::text AS city, '00100'::text AS zip, '{"k": "p", "n": 3}'::jsonb AS meta,
                      7::int8 AS total"#,
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.item.city, "Rome");
    assert_eq!(p.meta.n, 3);
    assert_eq!((p.total, p.extra), (7, None));
    let b: Bounded<String> = db
        .fetch_one_as("SELECT 'v'::text AS value", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.value, "v");
    let t: ThroughPath = db
        .fetch_one_as("SELECT 9::int8 AS id", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.id, 9);
}

/// `#[derive(ToRow)]`: a struct as a row of `executemany` and of COPY, with its columns.
#[tokio::test]
async fn to_row_feeds_executemany_and_copy() {
    use pgdbm::ToRow;

    #[derive(pgdbm::ToRow, pgdbm::FromRow, Debug, PartialEq, Clone)]
    struct Item {
        id: i32,
        #[pgdbm(rename = "label")]
        name: String,
        note: Option<String>,
        #[pgdbm(skip)]
        #[allow(dead_code)]
        cached: bool,
    }
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.items}} (id int PRIMARY KEY, label text NOT NULL, note text)",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(Item::columns(), ["id", "label", "note"]);
    let items: Vec<Item> = (1..=20)
        .map(|i| Item {
            id: i,
            name: format!("item {i}"),
            note: (i % 2 == 0).then(|| "even".into()),
            cached: false,
        })
        .collect();
    let n = db
        .executemany(
            "INSERT INTO {{tables.items}} (id, label, note) VALUES ($1, $2, $3)",
            &items[..10],
        )
        .await
        .unwrap();
    assert_eq!(n, 10);
    let n = db
        .copy_records_to_table("items", items[10..].to_vec(), Some(Item::columns()))
        .await
        .unwrap();
    assert_eq!(n, 10);
    let back: Vec<Item> = db
        .fetch_all_as(
            "SELECT id, label, note FROM {{tables.items}} ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(back, items);
}

/// Fields are found by name whatever the order of the columns: the position of each field is
/// only where its column is looked for first.
#[tokio::test]
async fn fields_in_another_order_than_the_columns() {
    #[derive(pgdbm::FromRow, Debug, PartialEq)]
    struct R {
        c: String,
        a: i32,
        b: Option<i64>,
    }
    let (db, _g) = common::schema_db().await;
    let rows: Vec<R> = db
        .fetch_all_as(
            "SELECT a, b, c FROM (VALUES (1, 10::int8, 'x'), (2, NULL, 'y')) v(a, b, c) ORDER BY a",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            R {
                c: "x".into(),
                a: 1,
                b: Some(10)
            },
            R {
                c: "y".into(),
                a: 2,
                b: None
            },
        ]
    );
    // Same names, same order: the quick path.
    let rows: Vec<R> = db
        .fetch_all_as("SELECT 'z' AS c, 3 AS a, 4::int8 AS b", &[])
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![R {
            c: "z".into(),
            a: 3,
            b: Some(4)
        }]
    );
    // A column named like a field at another field's position is not mistaken for it.
    let e = db
        .fetch_all_as::<R>("SELECT 'z' AS a, 3 AS c, 4::int8 AS b", &[])
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("`c`") || e.to_string().contains("`a`"),
        "{e}"
    );
}
