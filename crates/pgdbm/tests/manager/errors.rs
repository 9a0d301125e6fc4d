//! Errors: SQLSTATEs and portable kinds, wrong parameters, encoding causes, raw client errors.

use crate::common::*;
use pgdbm::{Error, ErrorKind};

#[tokio::test]
async fn errors_carry_sqlstate_and_portable_kinds() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    db.execute(
        "CREATE TABLE {{tables.posts}} (id int, user_id int REFERENCES {{tables.users}}(id))",
        &[],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO {{tables.users}} (email) VALUES ($1)",
        &[&"a@x"],
    )
    .await
    .unwrap();
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&"a@x"],
        )
        .await
        .unwrap_err();
    assert!(e.is_unique_violation());
    assert_eq!(e.code(), Some("23505"));
    assert_eq!(e.constraint(), Some("users_email_key"));
    assert!(e.detail().unwrap().contains("a@x"));
    assert!(e.to_string().contains("23505"), "{e}");
    let e = db
        .execute("INSERT INTO {{tables.posts}} VALUES (1, 999)", &[])
        .await
        .unwrap_err();
    assert!(e.is_foreign_key_violation());
    let e = db
        .execute("INSERT INTO {{tables.users}} (email) VALUES (NULL)", &[])
        .await
        .unwrap_err();
    assert!(e.is_not_null_violation());
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email, age) VALUES ('z', -1)",
            &[],
        )
        .await
        .unwrap_err();
    assert!(e.is_check_violation());
    let e = db.execute("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SyntaxError);
    match &e {
        Error::Query { sql, .. } => assert_eq!(sql, "SELEC 1"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_parameters_are_precise_errors_and_the_pool_stays_healthy() {
    let (db, _g) = schema_db_with(|c| c.max_connections = 1).await;
    users_table(&db).await;
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&"a", &"b"],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Query { .. }), "{e:?}");
    assert!(e.to_string().contains("parameters"), "{e}");
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email) VALUES ($1)",
            &[&5_i64],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Query { .. }), "{e:?}");
    // A long parameter value is never echoed.
    let secret = "s3cr3t-".repeat(10);
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (id, email) VALUES ($1, $2)",
            &[&"x", &secret],
        )
        .await
        .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(&secret), "{shown}");
    // The single connection is still fine.
    assert_eq!(
        db.fetch_value::<i32>("SELECT 1", &[]).await.unwrap(),
        Some(1)
    );
}

#[tokio::test]
async fn a_parameter_encoding_error_shows_its_cause() {
    let (db, _g) = schema_db().await;
    users_table(&db).await;
    let e = db
        .execute(
            "INSERT INTO {{tables.users}} (email, age) VALUES ($1, $2)",
            &[&"a@x", &5_i64],
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("error serializing parameter 1"), "{text}");
    assert!(
        text.contains("cannot convert between the Rust type `i64` and the Postgres type `int4`"),
        "{text}"
    );
    assert_eq!(text.matches("error serializing").count(), 1, "{text}");
    assert_eq!(text.matches("cannot convert").count(), 1, "{text}");
    assert!(text.contains("sql: INSERT INTO"), "{text}");
}

#[tokio::test]
async fn raw_client_errors_convert_with_question_mark() {
    let (db, _g) = schema_db().await;
    let conn = db.acquire().await.unwrap();
    async fn raw(client: &tokio_postgres::Client) -> pgdbm::Result<u64> {
        Ok(client.execute("SELEC 1", &[]).await?)
    }
    let e = raw(&conn).await.unwrap_err();
    assert_eq!(e.code(), Some("42601"));
    assert_eq!(e.kind(), ErrorKind::SyntaxError);
    let text = e.to_string();
    assert!(text.contains("42601"), "{text}");
    assert!(!text.contains("sql:"), "no SQL is known here: {text}");
}
