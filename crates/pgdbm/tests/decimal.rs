//! The `rust_decimal` feature: `numeric` read and written as `rust_decimal::Decimal` on every
//! typed path, with `types::Numeric` still exact for what does not fit.

mod common;

use common::schema_db;
use pgdbm::rust_decimal::Decimal;

#[tokio::test]
async fn numeric_reads_and_writes_as_decimal() {
    let (db, _g) = schema_db().await;
    db.execute(
        "CREATE TABLE {{tables.prices}} (id int, amount numeric(12, 2))",
        &[],
    )
    .await
    .unwrap();
    let amount: Decimal = "1234.50".parse().unwrap();
    db.execute("INSERT INTO {{tables.prices}} VALUES (1, $1)", &[&amount])
        .await
        .unwrap();
    let back: Option<Decimal> = db
        .fetch_value("SELECT amount FROM {{tables.prices}} WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(back, Some(amount));
    assert_eq!(back.unwrap().to_string(), "1234.50");

    #[derive(pgdbm::FromRow, serde::Deserialize, Debug, PartialEq)]
    struct Price {
        id: i32,
        amount: Decimal,
    }
    let typed: Price = db
        .fetch_exactly_one_as("SELECT id, amount FROM {{tables.prices}}", &[])
        .await
        .unwrap();
    assert_eq!(typed, Price { id: 1, amount });
    let model: Option<Price> = db
        .fetch_as_model("SELECT id, amount FROM {{tables.prices}}", &[])
        .await
        .unwrap();
    assert_eq!(model, Some(Price { id: 1, amount }));
    // Larger than Decimal holds: the exact Numeric still reads it.
    let big: Option<pgdbm::types::Numeric> = db
        .fetch_value("SELECT 123456789012345678901234567890.123::numeric", &[])
        .await
        .unwrap();
    assert_eq!(
        big.unwrap().to_string(),
        "123456789012345678901234567890.123"
    );
}
