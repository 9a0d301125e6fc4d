//! The workloads and one operation of each, for both contenders.

use std::hint::black_box;

use pgdbm::AsyncDatabaseManager;
use serde::Deserialize;
use tokio_postgres::{Client, Statement};

use crate::BoxError;

/// Rows in the benchmark table.
pub const TABLE_ROWS: i32 = 100_000;

pub const SQL_POINT: &str = "SELECT * FROM {{tables.bench_rows}} WHERE id = $1";
pub const SQL_VALUE: &str = "SELECT 1+1";
pub const SQL_1K: &str = "SELECT * FROM {{tables.bench_rows}} WHERE id <= 1000";
pub const SQL_ALL: &str = "SELECT * FROM {{tables.bench_rows}}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    PointSelect,
    SelectValue,
    Fetch1k,
    Fetch100k,
    Typed1k,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::PointSelect,
        Workload::SelectValue,
        Workload::Fetch1k,
        Workload::Fetch100k,
        Workload::Typed1k,
    ];

    /// The name in the results table.
    pub fn name(self) -> &'static str {
        match self {
            Workload::PointSelect => "point select",
            Workload::SelectValue => "select 1+1",
            Workload::Fetch1k => "fetch_all 1k",
            Workload::Fetch100k => "fetch_all 100k",
            Workload::Typed1k => "typed model 1k",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Workload::PointSelect => "point",
            Workload::SelectValue => "value",
            Workload::Fetch1k => "fetch1k",
            Workload::Fetch100k => "fetch100k",
            Workload::Typed1k => "typed1k",
        }
    }

    pub fn from_key(key: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.key() == key)
    }

    /// Rounds of this workload count operations instead of seconds.
    pub fn counted(self) -> bool {
        self == Workload::Fetch100k
    }

    fn expected_rows(self) -> usize {
        match self {
            Workload::PointSelect | Workload::SelectValue => 1,
            Workload::Fetch1k | Workload::Typed1k => 1000,
            Workload::Fetch100k => TABLE_ROWS as usize,
        }
    }
}

/// The typed row of workload 5.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read through black_box only
pub struct BenchRow {
    id: i32,
    name: String,
    email: String,
    score: f64,
    active: bool,
    created: chrono::DateTime<chrono::Utc>,
}

/// xorshift64*: random ids without a dependency.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that neighbouring seeds give unrelated streams; never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A table id in 1..=TABLE_ROWS.
    pub fn id(&mut self) -> i32 {
        ((self.next_u64() >> 32) % TABLE_ROWS as u64) as i32 + 1
    }
}

/// The template rendered the way pgdbm renders it for `schema`, so both sides send the same text.
pub fn render(sql: &str, schema: &str) -> String {
    sql.replace("{{tables.bench_rows}}", &format!("\"{schema}\".bench_rows"))
}

/// One raw tokio-postgres connection with its statements prepared once.
pub struct RawConn {
    pub client: Client,
    point: Statement,
    value: Statement,
    k1: Statement,
    all: Statement,
}

impl RawConn {
    pub async fn prepare(client: Client, schema: &str) -> Result<RawConn, BoxError> {
        let point = client.prepare(&render(SQL_POINT, schema)).await?;
        let value = client.prepare(SQL_VALUE).await?;
        let k1 = client.prepare(&render(SQL_1K, schema)).await?;
        let all = client.prepare(&render(SQL_ALL, schema)).await?;
        Ok(RawConn {
            client,
            point,
            value,
            k1,
            all,
        })
    }
}

fn check(w: Workload, rows: usize) -> Result<usize, BoxError> {
    if rows == w.expected_rows() {
        Ok(rows)
    } else {
        Err(format!(
            "{}: expected {} row(s), got {rows}",
            w.name(),
            w.expected_rows()
        )
        .into())
    }
}

/// One pgdbm operation; returns the number of rows it read.
pub async fn pgdbm_op(
    db: &AsyncDatabaseManager,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    let rows = match w {
        Workload::PointSelect => {
            let id = rng.id();
            let row = db.fetch_one(SQL_POINT, &[&id]).await?;
            black_box(&row);
            usize::from(row.is_some())
        }
        Workload::SelectValue => {
            let v = db.fetch_value::<i32>(SQL_VALUE, &[]).await?;
            if v != Some(2) {
                return Err(format!("SELECT 1+1 gave {v:?}").into());
            }
            1
        }
        Workload::Fetch1k => {
            let rows = db.fetch_all(SQL_1K, &[]).await?;
            black_box(&rows);
            rows.len()
        }
        Workload::Fetch100k => {
            let rows = db.fetch_all(SQL_ALL, &[]).await?;
            black_box(&rows);
            rows.len()
        }
        Workload::Typed1k => {
            let rows = db.fetch_all_as_model::<BenchRow>(SQL_1K, &[]).await?;
            black_box(&rows);
            rows.len()
        }
    };
    check(w, rows)
}

/// The same operation on a raw connection with prepared statements.
pub async fn raw_op(c: &RawConn, w: Workload, rng: &mut XorShift) -> Result<usize, BoxError> {
    let rows = match w {
        Workload::PointSelect => {
            let id = rng.id();
            let row = c.client.query_opt(&c.point, &[&id]).await?;
            black_box(&row);
            usize::from(row.is_some())
        }
        Workload::SelectValue => {
            let row = c.client.query_one(&c.value, &[]).await?;
            let v: i32 = row.get(0);
            if v != 2 {
                return Err(format!("SELECT 1+1 gave {v}").into());
            }
            1
        }
        Workload::Fetch1k => {
            let rows = c.client.query(&c.k1, &[]).await?;
            black_box(&rows);
            rows.len()
        }
        Workload::Fetch100k => {
            let rows = c.client.query(&c.all, &[]).await?;
            black_box(&rows);
            rows.len()
        }
        Workload::Typed1k => {
            let rows = c.client.query(&c.k1, &[]).await?;
            let typed: Vec<BenchRow> = rows
                .iter()
                .map(|r| BenchRow {
                    id: r.get(0),
                    name: r.get(1),
                    email: r.get(2),
                    score: r.get(3),
                    active: r.get(4),
                    created: r.get(5),
                })
                .collect();
            black_box(&typed);
            typed.len()
        }
    };
    check(w, rows)
}
