//! One operation of each workload, for each in-process contender. Each is written the way that
//! library's documentation recommends: pgdbm through its public API, raw tokio-postgres with
//! statements prepared once per connection, deadpool-postgres with `prepare_cached`, sqlx with
//! `query`/`query_as` (its statement cache is on by default).

use std::hint::black_box;
use std::pin::pin;

use futures_util::stream::FuturesOrdered;
use futures_util::{StreamExt, TryStreamExt};
use pgdbm::AsyncDatabaseManager;
use sqlx::AssertSqlSafe;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement};

use crate::live::Live;
pub use crate::live::{RawConn, Sqls};
use crate::workload::{
    check, BenchRow, BulkRow, Workload, XorShift, BULK_COLUMNS, SQL_MANY_INSERT, SQL_STREAM,
    SQL_TX_INSERT, SQL_TX_UPDATE,
};
use crate::BoxError;

/// How many inserts `executemany` keeps in flight on one connection (pgdbm's own figure).
const PIPELINE: usize = 256;
const BULK_TYPES: [Type; 7] = [
    Type::INT8,
    Type::INT4,
    Type::TEXT,
    Type::FLOAT8,
    Type::BOOL,
    Type::TIMESTAMPTZ,
    Type::UUID,
];

fn params(row: &BulkRow) -> [&(dyn ToSql + Sync); 7] {
    [&row.0, &row.1, &row.2, &row.3, &row.4, &row.5, &row.6]
}

// ---------------------------------------------------------------------------------------------
// pgdbm

/// One pgdbm operation; returns the number of rows it read.
pub async fn pgdbm_op(
    db: &AsyncDatabaseManager,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    if w.is_ten_selects() {
        return check(w, crate::multi::pgdbm(db, w, rng).await?);
    }
    let sql = w.read_sql().unwrap_or_default();
    let rows = match w {
        Workload::PointSelect => {
            let id = rng.id();
            let row = db.fetch_one(sql, &[&id]).await?;
            black_box(&row);
            usize::from(row.is_some())
        }
        Workload::SelectValue => {
            let v = db.fetch_value::<i32>(sql, &[]).await?;
            if v != Some(2) {
                return Err(format!("SELECT 1+1 gave {v:?}").into());
            }
            1
        }
        Workload::Typed1k | Workload::Typed100k => {
            let rows = db.fetch_all_as::<BenchRow>(sql, &[]).await?;
            black_box(&rows);
            rows.len()
        }
        Workload::PgType => black_box(db.fetch_all(sql, &[&-1_i32, &true]).await?).len(),
        Workload::Series => black_box(db.fetch_all(sql, &[&1000_i32]).await?).len(),
        Workload::Transaction => {
            let (account, delta) = (rng.id(), rng.delta());
            let tx = db.transaction().await?;
            tx.execute(SQL_TX_INSERT, &[&account, &delta]).await?;
            tx.execute(SQL_TX_UPDATE, &[&account, &delta]).await?;
            tx.commit().await?;
            0
        }
        Workload::ExecuteMany | Workload::Copy => unreachable!("bulk workloads use pgdbm_bulk"),
        _ => black_box(db.fetch_all(sql, &[]).await?).len(),
    };
    check(w, rows)
}

/// The typed workloads through serde (`fetch_all_as_model`).
pub async fn pgdbm_serde_op(db: &AsyncDatabaseManager, w: Workload) -> Result<usize, BoxError> {
    let sql = w.read_sql().ok_or("not a read workload")?;
    let rows = db.fetch_all_as_model::<BenchRow>(sql, &[]).await?;
    black_box(&rows);
    check(w, rows.len())
}

pub async fn pgdbm_bulk(
    db: &AsyncDatabaseManager,
    w: Workload,
    rows: &[BulkRow],
) -> Result<(), BoxError> {
    let written = match w {
        Workload::ExecuteMany => db.executemany(SQL_MANY_INSERT, rows).await?,
        _ => {
            db.copy_records_to_table("bench_copy", rows, Some(&BULK_COLUMNS))
                .await?
        }
    };
    written_all(w, written, rows.len())
}

fn written_all(w: Workload, written: u64, expected: usize) -> Result<(), BoxError> {
    if written as usize == expected {
        Ok(())
    } else {
        Err(format!("{}: wrote {written} of {expected} rows", w.name()).into())
    }
}

// ---------------------------------------------------------------------------------------------
// tokio-postgres, raw and through deadpool

pub async fn raw_op(c: &mut RawConn, w: Workload, rng: &mut XorShift) -> Result<usize, BoxError> {
    if w.is_ten_selects() {
        let stmt = c.stmt(Workload::PointSelect);
        return check(
            w,
            crate::multi::tokio_postgres(&c.client, stmt, w, rng).await?,
        );
    }
    if w == Workload::Transaction {
        let (account, delta) = (rng.id(), rng.delta());
        let tx = c.client.transaction().await?;
        tx.execute(&c.tx_insert, &[&account, &delta]).await?;
        tx.execute(&c.tx_update, &[&account, &delta]).await?;
        tx.commit().await?;
        return Ok(0);
    }
    read(&c.client, c.stmt(w), w, rng).await
}

pub async fn raw_bulk(
    c: &mut RawConn,
    sqls: &Sqls,
    w: Workload,
    rows: &[BulkRow],
) -> Result<(), BoxError> {
    bulk(&mut c.client, &c.many_insert, &sqls.copy, w, rows).await
}

pub async fn deadpool_op(
    pool: &deadpool_postgres::Pool,
    sqls: &Sqls,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    if w.is_ten_selects() {
        return check(w, crate::multi::deadpool(pool, sqls, w, rng).await?);
    }
    if w.tenants().is_some() {
        return check(w, crate::tenants::deadpool_op(pool, sqls, w, rng).await?);
    }
    let mut client = pool.get().await?;
    if w == Workload::Transaction {
        let (account, delta) = (rng.id(), rng.delta());
        let tx = client.transaction().await?;
        let insert = tx.prepare_cached(&sqls.tx_insert).await?;
        let update = tx.prepare_cached(&sqls.tx_update).await?;
        tx.execute(&insert, &[&account, &delta]).await?;
        tx.execute(&update, &[&account, &delta]).await?;
        tx.commit().await?;
        return Ok(0);
    }
    let stmt = client.prepare_cached(sqls.read(w)).await?;
    read(&client, &stmt, w, rng).await
}

pub async fn deadpool_bulk(
    pool: &deadpool_postgres::Pool,
    sqls: &Sqls,
    w: Workload,
    rows: &[BulkRow],
) -> Result<(), BoxError> {
    let mut client = pool.get().await?;
    let stmt = client.prepare_cached(&sqls.many_insert).await?;
    bulk(&mut client, &stmt, &sqls.copy, w, rows).await
}

/// A read on a tokio-postgres client with its prepared statement.
async fn read(
    c: &Client,
    stmt: &Statement,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    let rows = match w {
        Workload::PointSelect => {
            let id = rng.id();
            let row = c.query_opt(stmt, &[&id]).await?;
            black_box(&row);
            usize::from(row.is_some())
        }
        Workload::SelectValue => {
            let v: i32 = c.query_one(stmt, &[]).await?.get(0);
            if v != 2 {
                return Err(format!("SELECT 1+1 gave {v}").into());
            }
            1
        }
        Workload::Typed1k | Workload::Typed100k => {
            let rows = c.query(stmt, &[]).await?;
            let typed: Vec<BenchRow> = rows.iter().map(typed).collect();
            black_box(&typed);
            typed.len()
        }
        Workload::PgType => black_box(c.query(stmt, &[&-1_i32, &true]).await?).len(),
        Workload::Series => black_box(c.query(stmt, &[&1000_i32]).await?).len(),
        _ => black_box(c.query(stmt, &[]).await?).len(),
    };
    check(w, rows)
}

async fn insert_row(
    tx: &tokio_postgres::Transaction<'_>,
    insert: &Statement,
    row: &BulkRow,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(insert, &params(row)).await
}

fn typed(r: &Row) -> BenchRow {
    BenchRow {
        id: r.get(0),
        name: r.get(1),
        email: r.get(2),
        score: r.get(3),
        active: r.get(4),
        created: r.get(5),
    }
}

/// `executemany` (pipelined inserts in one transaction, as pgdbm does) or binary COPY.
async fn bulk(
    client: &mut Client,
    insert: &Statement,
    copy: &str,
    w: Workload,
    rows: &[BulkRow],
) -> Result<(), BoxError> {
    let tx = client.transaction().await?;
    let written = match w {
        Workload::ExecuteMany => {
            let (mut n, mut inflight) = (0, FuturesOrdered::new());
            for r in rows {
                if inflight.len() == PIPELINE {
                    n += inflight.next().await.expect("in flight")?;
                }
                inflight.push_back(insert_row(&tx, insert, r));
            }
            while let Some(count) = inflight.next().await {
                n += count?;
            }
            n
        }
        _ => {
            let sink = tx.copy_in(copy).await?;
            let mut writer = pin!(BinaryCopyInWriter::new(sink, &BULK_TYPES));
            for r in rows {
                writer.as_mut().write(&params(r)).await?;
            }
            writer.finish().await?
        }
    };
    tx.commit().await?;
    written_all(w, written, rows.len())
}

// ---------------------------------------------------------------------------------------------
// sqlx

pub async fn sqlx_op(
    pool: &sqlx::PgPool,
    sqls: &Sqls,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    if w.is_ten_selects() {
        return check(w, crate::multi::sqlx(pool, sqls, rng).await?);
    }
    if w.tenants().is_some() {
        return check(w, crate::tenants::sqlx_op(pool, sqls, w, rng).await?);
    }
    if w == Workload::Transaction {
        let (account, delta) = (rng.id(), rng.delta());
        let mut tx = pool.begin().await?;
        sqlx::query(AssertSqlSafe(&*sqls.tx_insert))
            .bind(account)
            .bind(delta)
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(&*sqls.tx_update))
            .bind(account)
            .bind(delta)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return check(w, 0);
    }
    let sql = sqls.read(w);
    let rows = match w {
        Workload::PointSelect => {
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(rng.id())
                .fetch_optional(pool)
                .await?;
            black_box(&row);
            usize::from(row.is_some())
        }
        Workload::SelectValue => {
            let v: i32 = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(pool)
                .await?;
            if v != 2 {
                return Err(format!("SELECT 1+1 gave {v}").into());
            }
            1
        }
        Workload::Typed1k | Workload::Typed100k => {
            let rows: Vec<BenchRow> = sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await?;
            black_box(&rows);
            rows.len()
        }
        Workload::PgType => {
            let q = sqlx::query(AssertSqlSafe(sql)).bind(-1_i32).bind(true);
            black_box(q.fetch_all(pool).await?).len()
        }
        Workload::Series => black_box(
            sqlx::query(AssertSqlSafe(sql))
                .bind(1000_i32)
                .fetch_all(pool)
                .await?,
        )
        .len(),
        _ => black_box(sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?).len(),
    };
    check(w, rows)
}

/// sqlx has no `executemany`: its users insert row by row in a transaction. Its COPY takes raw
/// bytes, so the rows go as COPY text.
pub async fn sqlx_bulk(
    pool: &sqlx::PgPool,
    sqls: &Sqls,
    w: Workload,
    rows: &[BulkRow],
) -> Result<(), BoxError> {
    if w == Workload::ExecuteMany {
        let mut tx = pool.begin().await?;
        for r in rows {
            sqlx::query(AssertSqlSafe(&*sqls.many_insert))
                .bind(r.0)
                .bind(r.1)
                .bind(&r.2)
                .bind(r.3)
                .bind(r.4)
                .bind(r.5)
                .bind(r.6)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        return Ok(());
    }
    use std::fmt::Write;
    let mut conn = pool.acquire().await?;
    let mut copy = conn.copy_in_raw(&sqls.copy_text).await?;
    let mut buf = String::with_capacity(1 << 17);
    for r in rows {
        let created = r.5.format("%Y-%m-%d %H:%M:%S%.f+00");
        let active = if r.4 { 't' } else { 'f' };
        writeln!(
            buf,
            "{}\t{}\t{}\t{}\t{active}\t{created}\t{}",
            r.0, r.1, r.2, r.3, r.6
        )?;
        if buf.len() >= 1 << 16 {
            copy.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_bytes()).await?;
    }
    let written = copy.finish().await?;
    written_all(w, written, rows.len())
}

// ---------------------------------------------------------------------------------------------
// The streamed 1M-row read (peak RSS only)

/// Reads [`SQL_STREAM`] row by row without keeping the rows; returns the count.
pub async fn stream(live: &Live) -> Result<usize, BoxError> {
    let mut n = 0;
    match live {
        Live::Pgdbm(db) | Live::PgdbmSerde(db) | Live::PgdbmTraced(db, _) => {
            let mut rows = pin!(db.fetch_stream(SQL_STREAM, &[]).await?);
            while let Some(row) = rows.try_next().await? {
                black_box(&row);
                n += 1;
            }
        }
        Live::Raw(conns) => n = stream_tokio_postgres(&conns[0].client).await?,
        Live::Deadpool(pool) => {
            let client = pool.get().await?;
            n = stream_tokio_postgres(&client).await?;
        }
        Live::PgdbmTenants(..) => return Err("not a streaming contender".into()),
        Live::Sqlx(pool) => {
            let mut rows = sqlx::query(AssertSqlSafe(SQL_STREAM)).fetch(pool);
            while let Some(row) = rows.try_next().await? {
                black_box(&row);
                n += 1;
            }
        }
    }
    Ok(n)
}

async fn stream_tokio_postgres(client: &Client) -> Result<usize, BoxError> {
    let no_params = std::iter::empty::<&(dyn ToSql + Sync)>();
    let mut rows = pin!(client.query_raw(SQL_STREAM, no_params).await?);
    let mut n = 0;
    while let Some(row) = rows.try_next().await? {
        black_box(&row);
        n += 1;
    }
    Ok(n)
}
