//! The pipeline workloads: one operation is [`SELECTS`] point selects ([`SQL_POINT`] with random
//! ids), sent one after the other or all at once on one connection.
//!
//! - pgdbm: `db.pipeline()` with ten `fetch_one`s, or ten `db.fetch_one` calls (each takes a
//!   pooled connection, as a handler calling the manager would).
//! - tokio-postgres: ten `query_opt` on the task's own connection, awaited one by one, or joined
//!   with `try_join_all` (the driver pipelines requests sent before their replies arrive).
//! - deadpool-postgres: one `pool.get()` and one `prepare_cached` per operation, then ten
//!   `query_opt` one by one.
//! - sqlx: ten `query(..).fetch_optional(&pool)` one by one.

use std::hint::black_box;

use pgdbm::AsyncDatabaseManager;
use sqlx::AssertSqlSafe;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::live::Sqls;
use crate::workload::{Workload, XorShift, SELECTS, SQL_POINT};
use crate::BoxError;

fn ids(rng: &mut XorShift) -> [i32; SELECTS] {
    std::array::from_fn(|_| rng.id())
}

fn all_found(found: usize) -> Result<usize, BoxError> {
    if found == SELECTS {
        Ok(found)
    } else {
        Err(format!("{SELECTS} point selects found {found} rows").into())
    }
}

pub async fn pgdbm(
    db: &AsyncDatabaseManager,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    let ids = ids(rng);
    let mut found = 0;
    if w.is_pipelined() {
        let mut p = db.pipeline();
        let handles: Vec<_> = ids
            .iter()
            .map(|id| p.fetch_one(SQL_POINT, &[id as &(dyn ToSql + Sync)]))
            .collect();
        let results = p.run().await?;
        for h in handles {
            let row = results.get(h)?;
            found += usize::from(black_box(row).is_some());
        }
    } else {
        for id in &ids {
            let row = db.fetch_one(SQL_POINT, &[id]).await?;
            found += usize::from(black_box(row).is_some());
        }
    }
    all_found(found)
}

/// tokio-postgres on one connection with the point select prepared: raw and deadpool.
pub async fn tokio_postgres(
    client: &Client,
    stmt: &Statement,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    let ids = ids(rng);
    let mut found = 0;
    if w.is_pipelined() {
        let params: [[&(dyn ToSql + Sync); 1]; SELECTS] = std::array::from_fn(|i| [&ids[i] as _]);
        let rows =
            futures_util::future::try_join_all(params.iter().map(|p| client.query_opt(stmt, p)))
                .await?;
        found = black_box(rows).iter().filter(|r| r.is_some()).count();
    } else {
        for id in &ids {
            let row = client.query_opt(stmt, &[id]).await?;
            found += usize::from(black_box(row).is_some());
        }
    }
    all_found(found)
}

pub async fn deadpool(
    pool: &deadpool_postgres::Pool,
    sqls: &Sqls,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(sqls.read(Workload::PointSelect))
        .await?;
    tokio_postgres(&client, &stmt, w, rng).await
}

pub async fn sqlx(pool: &sqlx::PgPool, sqls: &Sqls, rng: &mut XorShift) -> Result<usize, BoxError> {
    let sql = sqls.read(Workload::PointSelect);
    let mut found = 0;
    for id in ids(rng) {
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?;
        found += usize::from(black_box(row).is_some());
    }
    all_found(found)
}
