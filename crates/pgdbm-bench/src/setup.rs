//! The benchmark schema, and the connections of both contenders.

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};
use tokio_postgres::{Client, NoTls};

use crate::workload::{RawConn, TABLE_ROWS};
use crate::BoxError;

/// A plain connection whose driver task runs in the background.
pub async fn connect(url: &str) -> Result<Client, BoxError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Creates the schema and fills `bench_rows`. The caller drops the schema, whatever happens.
pub async fn create_schema(admin: &Client, schema: &str) -> Result<(), BoxError> {
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\";
             CREATE TABLE \"{schema}\".bench_rows (
                 id int PRIMARY KEY,
                 name text NOT NULL,
                 email text NOT NULL,
                 score float8 NOT NULL,
                 active bool NOT NULL,
                 created timestamptz NOT NULL DEFAULT now()
             );
             INSERT INTO \"{schema}\".bench_rows (id, name, email, score, active)
             SELECT g, 'user ' || g, 'user' || g || '@example.com', g * 0.5, g % 2 = 0
             FROM generate_series(1, {TABLE_ROWS}) AS g;"
        ))
        .await?;
    // Separately: VACUUM cannot run inside the implicit transaction of a multi-statement batch.
    admin
        .batch_execute(&format!("VACUUM (ANALYZE) \"{schema}\".bench_rows"))
        .await?;
    Ok(())
}

pub async fn drop_schema(admin: &Client, schema: &str) -> Result<(), BoxError> {
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}

/// The pgdbm contender: an owned pool of exactly `size` connections, defaults otherwise
/// (`max_queries` only when overridden with --max-queries).
pub async fn pgdbm_manager(
    url: &str,
    schema: &str,
    size: usize,
    max_queries: Option<u64>,
) -> Result<AsyncDatabaseManager, BoxError> {
    let defaults = DatabaseConfig::default();
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url.to_owned()),
        schema: Some(schema.to_owned()),
        min_connections: size,
        max_connections: size,
        max_queries: max_queries.unwrap_or(defaults.max_queries),
        ..defaults
    })?;
    db.connect().await?;
    Ok(db)
}

/// The raw contender: `count` dedicated clients with the session settings a default pgdbm pool
/// applies (jit off, the three timeouts, the schema's search_path) and their statements
/// prepared once.
pub async fn raw_connections(
    url: &str,
    schema: &str,
    count: usize,
) -> Result<Vec<RawConn>, BoxError> {
    let defaults = DatabaseConfig::default();
    let setup = format!(
        "SET jit = 'off';
         SET statement_timeout = '{}';
         SET idle_in_transaction_session_timeout = '{}';
         SET lock_timeout = '{}';
         SET search_path = \"{schema}\", public;",
        defaults.statement_timeout_ms.unwrap_or(0),
        defaults.idle_in_transaction_session_timeout_ms.unwrap_or(0),
        defaults.lock_timeout_ms.unwrap_or(0),
    );
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let client = connect(url).await?;
        client.batch_execute(&setup).await?;
        conns.push(RawConn::prepare(client, schema).await?);
    }
    Ok(conns)
}
