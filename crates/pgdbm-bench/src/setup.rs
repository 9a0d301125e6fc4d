//! The benchmark schema and its tables.

use tokio_postgres::{Client, NoTls};

use crate::workload::TABLE_ROWS;
use crate::BoxError;

/// Settings every contender's sessions get, as a default pgdbm pool applies them: JIT off (it
/// would otherwise compile the 100k-row scans), no statement timeout.
pub const SESSION_OPTIONS: &str = "-c jit=off";

/// A plain connection whose driver task runs in the background.
pub async fn connect(url: &str) -> Result<Client, BoxError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Creates the schema and fills its tables. The caller drops the schema, whatever happens.
pub async fn create_schema(admin: &Client, schema: &str) -> Result<(), BoxError> {
    let s = format!("\"{schema}\"");
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.bench_rows (
                 id int PRIMARY KEY,
                 name text NOT NULL,
                 email text NOT NULL,
                 score float8 NOT NULL,
                 active bool NOT NULL,
                 created timestamptz NOT NULL DEFAULT now()
             );
             INSERT INTO {s}.bench_rows (id, name, email, score, active)
             SELECT g, 'user ' || g, 'user' || g || '@example.com', g * 0.5, g % 2 = 0
             FROM generate_series(1, {TABLE_ROWS}) AS g;
             CREATE TABLE {s}.bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
             INSERT INTO {s}.bench_accounts (id) SELECT g FROM generate_series(1, {TABLE_ROWS}) g;
             CREATE TABLE {s}.bench_history (
                 id bigserial PRIMARY KEY,
                 account int NOT NULL,
                 delta bigint NOT NULL,
                 at timestamptz NOT NULL DEFAULT now()
             );
             CREATE TABLE {s}.bench_many (
                 id bigint NOT NULL, qty int NOT NULL, name text NOT NULL, price float8 NOT NULL,
                 active bool NOT NULL, created timestamptz NOT NULL, ref uuid NOT NULL
             );
             CREATE TABLE {s}.bench_copy (LIKE {s}.bench_many);
             CREATE TABLE {s}.bench_bytes (b bytea);
             INSERT INTO {s}.bench_bytes (b)
             SELECT repeat('a', 1000)::bytea FROM generate_series(1, 100);
             CREATE TABLE {s}.bench_arrays (a int[]);
             INSERT INTO {s}.bench_arrays (a)
             SELECT (SELECT array_agg(i) FROM generate_series(1, 1000) AS s(i))
             FROM generate_series(1, 10);"
        ))
        .await?;
    // Separately: VACUUM cannot run inside the implicit transaction of a multi-statement batch.
    for table in [
        "bench_rows",
        "bench_accounts",
        "bench_bytes",
        "bench_arrays",
    ] {
        admin
            .batch_execute(&format!("VACUUM (ANALYZE) {s}.{table}"))
            .await?;
    }
    Ok(())
}

/// Drops the schema and the tenant schemas `<schema>_t<N>` made for it.
pub async fn drop_schema(admin: &Client, schema: &str) -> Result<(), BoxError> {
    crate::tenants::drop_all(admin, schema).await?;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}

/// Empties a bulk workload's table between slices (outside the timed window).
pub async fn truncate(admin: &Client, schema: &str, table: &str) -> Result<(), BoxError> {
    admin
        .batch_execute(&format!("TRUNCATE \"{schema}\".{table}"))
        .await?;
    Ok(())
}
