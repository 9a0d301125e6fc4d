//! `--sizes`: how many bytes the futures of one call occupy, and the pooled connection type.
//! Every `.await` on a larger future moves and zeroes more memory (`memcpy` in profiles).

use std::mem::{size_of, size_of_val};

use pgdbm::{AsyncDatabaseManager, DatabaseConfig, PoolConnection, Record};
use tokio_postgres::{Client, Row, Statement};

use crate::workload::BenchRow;
use crate::BoxError;

pub async fn print(url: &str) -> Result<(), BoxError> {
    // Futures are lazy: building them sends nothing, so no connect() is needed for pgdbm.
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url.to_owned()),
        schema: Some("sizes".into()),
        ..Default::default()
    })?;
    let client = crate::setup::connect(url).await?;
    let stmt = client.prepare("SELECT $1::int4").await?;
    let id = 1_i32;
    let rows = [
        (
            "pgdbm fetch_one future",
            size_of_val(&db.fetch_one("SELECT $1::int4", &[&id])),
        ),
        (
            "pgdbm fetch_value future",
            size_of_val(&db.fetch_value::<i32>("SELECT 1+1", &[])),
        ),
        (
            "pgdbm fetch_all future",
            size_of_val(&db.fetch_all("SELECT 1", &[])),
        ),
        (
            "pgdbm fetch_all_as_model future",
            size_of_val(&db.fetch_all_as_model::<BenchRow>("SELECT 1", &[])),
        ),
        (
            "pgdbm acquire future (pool checkout only)",
            size_of_val(&db.acquire()),
        ),
        (
            "pgdbm connect future (opens the pool)",
            size_of_val(&db.connect()),
        ),
        (
            "raw query_opt future",
            size_of_val(&client.query_opt(&stmt, &[&id])),
        ),
        (
            "raw query_one future",
            size_of_val(&client.query_one(&stmt, &[&id])),
        ),
        (
            "raw query future",
            size_of_val(&client.query(&stmt, &[&id])),
        ),
        (
            "pgdbm::PoolConnection (holds the pooled connection inline)",
            size_of::<PoolConnection>(),
        ),
        ("tokio_postgres::Client", size_of::<Client>()),
        ("tokio_postgres::Statement", size_of::<Statement>()),
        ("tokio_postgres::Row", size_of::<Row>()),
        ("pgdbm::Record", size_of::<Record>()),
    ];
    for (what, bytes) in rows {
        println!("{bytes:>6} B  {what}");
    }
    Ok(())
}
