//! A throwaway PgBouncer in transaction mode in front of the test server, and a database of
//! its own for each test that uses it.
#![allow(dead_code, unreachable_pub)]

use pgdbm::testing::TempPgBouncer;
use pgdbm::{DatabaseConfig, Pooler};

use crate::common::{admin, drop_with_fresh_runtime, unique};

/// A database of its own on the test server, dropped (with its sessions) when this goes.
pub struct TestDb(pub String);

impl TestDb {
    pub async fn create() -> TestDb {
        let name = unique("pooler");
        admin(&format!("CREATE DATABASE \"{name}\"")).await;
        TestDb(name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_with_fresh_runtime(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.0
        ));
    }
}

pub fn bouncer(pool_size: u32) -> TempPgBouncer {
    let config: tokio_postgres::Config =
        crate::common::database_url().parse().expect("DATABASE_URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    TempPgBouncer::builder()
        .default_pool_size(pool_size)
        .max_client_conn(200)
        .start(&host, port)
        .expect("pgbouncer")
}

pub fn pooled(url: &str, schema: &str, max: usize) -> DatabaseConfig {
    DatabaseConfig {
        connection_string: Some(url.to_owned()),
        schema: Some(schema.to_owned()),
        pooler: Pooler::Transaction,
        min_connections: 2,
        max_connections: max,
        retry_attempts: 0,
        ..Default::default()
    }
}

/// A plain driver client, as another application would connect.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// The first column of the first row of `sql`.
pub async fn one(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap()
}
