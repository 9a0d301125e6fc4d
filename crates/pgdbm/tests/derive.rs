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

const USER_ROW: &str = "SELECT 1::int4 AS id, 'a@x'::text AS email, 'Ann'::text AS name";

#[tokio::test]
async fn the_serde_path_refuses_a_field_that_is_not_a_column() {
    let (db, _g) = schema_db().await;
    let typed: Vec<U> = db.fetch_all_as(USER_ROW, &[]).await.unwrap();
    assert_eq!(typed[0].display.as_deref(), Some("Ann"));

    // serde knows the field as `display`, which the row does not have: an error, never a
    // silent `None`.
    let e = db.fetch_all_as_model::<U>(USER_ROW, &[]).await.unwrap_err();
    match &e {
        Error::Decode {
            column, message, ..
        } => {
            assert_eq!(column, "display");
            assert!(message.contains(r#"["id", "email", "name"]"#), "{message}");
            assert!(message.contains("#[serde(rename"), "{message}");
            assert!(message.contains("fetch_*_as"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let one = db.fetch_as_model::<U>(USER_ROW, &[]).await.unwrap_err();
    assert!(
        matches!(&one, Error::Decode { column, .. } if column == "display"),
        "{one:?}"
    );

    // serde's own rename is what the serde path follows.
    #[derive(serde::Deserialize)]
    struct S {
        #[serde(rename = "name")]
        display: Option<String>,
    }
    let s: Vec<S> = db.fetch_all_as_model(USER_ROW, &[]).await.unwrap();
    assert_eq!(s[0].display.as_deref(), Some("Ann"));

    // `#[serde(default)]` does not make a column optional here either.
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct D {
        id: i32,
        #[serde(default)]
        score: i32,
    }
    let e = db.fetch_as_model::<D>(USER_ROW, &[]).await.unwrap_err();
    assert!(
        matches!(&e, Error::Decode { column, .. } if column == "score"),
        "{e:?}"
    );
    // Selecting the column is the way.
    let d: D = db
        .fetch_as_model("SELECT 1::int4 AS id, 7::int4 AS score", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.id, d.score), (1, 7));

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
