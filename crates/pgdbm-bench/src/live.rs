//! What a contender has open for one slice, and the SQL texts every contender runs: the types
//! the contenders, the operations and the tenant workloads share.

use std::sync::Arc;

use pgdbm::AsyncDatabaseManager;
use tokio_postgres::{Client, Statement};

use crate::workload::{
    render, Workload, BULK_COLUMNS, SQL_MANY_INSERT, SQL_TX_INSERT, SQL_TX_UPDATE,
};
use crate::BoxError;

/// An in-process contender, open for one slice.
pub enum Live {
    Pgdbm(AsyncDatabaseManager),
    PgdbmSerde(AsyncDatabaseManager),
    /// Its operations run with this subscriber as their default.
    PgdbmTraced(AsyncDatabaseManager, tracing::Dispatch),
    /// The tenant workloads: one shared pool, one manager per tenant schema.
    PgdbmTenants(pgdbm::Pool, Arc<[AsyncDatabaseManager]>),
    /// One dedicated connection per task.
    Raw(Vec<RawConn>),
    Deadpool(deadpool_postgres::Pool),
    Sqlx(sqlx::PgPool),
}

/// The SQL of every workload rendered for the benchmark schema (for the contenders that do not
/// render templates themselves).
#[derive(Debug)]
pub struct Sqls {
    pub schema: String,
    pub read: Vec<(Workload, String)>,
    pub tx_insert: String,
    pub tx_update: String,
    pub many_insert: String,
    pub copy: String,
    pub copy_text: String,
    /// The tenant workloads' statements rendered for each tenant schema (filled only when a
    /// tenant workload runs): `tenants[t][s]`.
    pub tenants: Vec<Vec<String>>,
}

impl Sqls {
    pub fn new(schema: &str) -> Sqls {
        let read = Workload::ALL
            .into_iter()
            .filter_map(|w| w.read_sql().map(|sql| (w, render(sql, schema))))
            .collect();
        let cols = BULK_COLUMNS.join(", ");
        Sqls {
            schema: schema.to_owned(),
            read,
            tx_insert: render(SQL_TX_INSERT, schema),
            tx_update: render(SQL_TX_UPDATE, schema),
            many_insert: render(SQL_MANY_INSERT, schema),
            copy: format!("COPY \"{schema}\".bench_copy ({cols}) FROM STDIN BINARY"),
            copy_text: format!("COPY \"{schema}\".bench_copy ({cols}) FROM STDIN"),
            tenants: Vec::new(),
        }
    }

    pub fn read(&self, w: Workload) -> &str {
        &self
            .read
            .iter()
            .find(|(r, _)| *r == w)
            .expect("a read workload")
            .1
    }
}

/// One raw tokio-postgres connection with its statements prepared once.
pub struct RawConn {
    pub client: Client,
    pub(crate) read: Vec<(Workload, Statement)>,
    pub(crate) tx_insert: Statement,
    pub(crate) tx_update: Statement,
    pub(crate) many_insert: Statement,
}

impl RawConn {
    pub async fn prepare(client: Client, sqls: &Sqls) -> Result<RawConn, BoxError> {
        let mut read = Vec::new();
        for (w, sql) in &sqls.read {
            read.push((*w, client.prepare(sql).await?));
        }
        Ok(RawConn {
            tx_insert: client.prepare(&sqls.tx_insert).await?,
            tx_update: client.prepare(&sqls.tx_update).await?,
            many_insert: client.prepare(&sqls.many_insert).await?,
            read,
            client,
        })
    }

    pub fn stmt(&self, w: Workload) -> &Statement {
        &self.read.iter().find(|(r, _)| *r == w).expect("prepared").1
    }
}
