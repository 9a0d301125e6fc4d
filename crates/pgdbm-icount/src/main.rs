//! Runs one workload a fixed number of times on one side (pgdbm or raw tokio-postgres), for
//! `check.sh` to count its instructions under callgrind. Each run sets up and drops a schema
//! of its own; running twice with different counts and dividing the difference by the extra
//! operations leaves the cost per operation.
//!
//! ```text
//! pgdbm-icount --workload point --side pgdbm --ops 1200
//! ```

use std::process::ExitCode;

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};
use tokio_postgres::{Client, NoTls};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Rows in the table the workloads read.
const ROWS: i32 = 1000;

const POINT: &str = "SELECT * FROM {{tables.rows}} WHERE id = $1";
const VALUE: &str = "SELECT 1+1";
const UPDATE: &str = "UPDATE {{tables.rows}} SET score = score + 1 WHERE id = $1";
const ALL: &str = "SELECT * FROM {{tables.rows}}";

/// A row of the table, decoded by `FromRow` (pgdbm) or field by field (raw).
#[derive(pgdbm::FromRow)]
struct Item {
    id: i32,
    name: String,
    email: String,
    score: f64,
    active: bool,
    created: chrono::DateTime<chrono::Utc>,
}

impl Item {
    /// Reads every field, so that neither side can skip decoding one.
    fn is_even_user(&self) -> bool {
        self.active
            && self.id % 2 == 0
            && self.name.len() > 5
            && self.email.ends_with(".com")
            && self.score > 0.0
            && self.created.timestamp() > 0
    }
}

struct Args {
    workload: String,
    side: String,
    ops: i32,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        workload: String::new(),
        side: String::new(),
        ops: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        match k.as_str() {
            "--workload" => a.workload = v,
            "--side" => a.side = v,
            "--ops" => a.ops = v.parse().map_err(|_| format!("bad --ops {v}"))?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.workload.is_empty() || a.side.is_empty() || a.ops <= 0 {
        return Err(
            "usage: pgdbm-icount --workload point|value|update|fetch1k|typed1k \
                    --side pgdbm|raw --ops N"
                .into(),
        );
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // One thread: the counts are the same from run to run.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgdbm-icount: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(url: &str) -> Result<Client, BoxError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn run(a: &Args) -> Result<(), BoxError> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!("pgdbm_icount_{}", std::process::id());
    let admin = connect(&url).await?;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\";
             CREATE TABLE \"{schema}\".rows (id int PRIMARY KEY, name text NOT NULL,
                 email text NOT NULL, score float8 NOT NULL, active bool NOT NULL,
                 created timestamptz NOT NULL DEFAULT now());
             INSERT INTO \"{schema}\".rows (id, name, email, score, active)
             SELECT g, 'user ' || g, 'user' || g || '@example.com', g * 0.5, g % 2 = 0
             FROM generate_series(1, {ROWS}) AS g;"
        ))
        .await?;
    let outcome = match a.side.as_str() {
        "pgdbm" => pgdbm_side(&url, &schema, a).await,
        "raw" => raw_side(&url, &schema, a).await,
        other => Err(format!("unknown side {other}").into()),
    };
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    outcome
}

async fn pgdbm_side(url: &str, schema: &str, a: &Args) -> Result<(), BoxError> {
    let db = AsyncDatabaseManager::new(DatabaseConfig {
        connection_string: Some(url.to_owned()),
        schema: Some(schema.to_owned()),
        min_connections: 1,
        max_connections: 1,
        ..Default::default()
    })?;
    db.connect().await?;
    for i in 0..a.ops {
        let id = i % ROWS + 1;
        let got = match a.workload.as_str() {
            "point" => usize::from(db.fetch_one(POINT, &[&id]).await?.is_some()),
            "value" => db.fetch_value::<i32>(VALUE, &[]).await?.unwrap_or(0) as usize - 1,
            "update" => db.execute(UPDATE, &[&id]).await? as usize,
            "fetch1k" => db.fetch_all(ALL, &[]).await?.len() / ROWS as usize,
            "typed1k" => {
                let items = db.fetch_all_as::<Item>(ALL, &[]).await?;
                items.iter().filter(|r| r.is_even_user()).count() * 2 / ROWS as usize
            }
            other => return Err(format!("unknown workload {other}").into()),
        };
        if got != 1 {
            return Err(format!("{}: unexpected result", a.workload).into());
        }
    }
    db.disconnect().await?;
    Ok(())
}

async fn raw_side(url: &str, schema: &str, a: &Args) -> Result<(), BoxError> {
    let client = connect(url).await?;
    let render = |sql: &str| sql.replace("{{tables.rows}}", &format!("\"{schema}\".rows"));
    let point = client.prepare(&render(POINT)).await?;
    let value = client.prepare(VALUE).await?;
    let update = client.prepare(&render(UPDATE)).await?;
    let all = client.prepare(&render(ALL)).await?;
    for i in 0..a.ops {
        let id = i % ROWS + 1;
        let got = match a.workload.as_str() {
            "point" => usize::from(client.query_opt(&point, &[&id]).await?.is_some()),
            "value" => client.query_one(&value, &[]).await?.get::<_, i32>(0) as usize - 1,
            "update" => client.execute(&update, &[&id]).await? as usize,
            "fetch1k" => client.query(&all, &[]).await?.len() / ROWS as usize,
            "typed1k" => {
                let items: Vec<Item> = client
                    .query(&all, &[])
                    .await?
                    .iter()
                    .map(|r| Item {
                        id: r.get(0),
                        name: r.get(1),
                        email: r.get(2),
                        score: r.get(3),
                        active: r.get(4),
                        created: r.get(5),
                    })
                    .collect();
                items.iter().filter(|r| r.is_even_user()).count() * 2 / ROWS as usize
            }
            other => return Err(format!("unknown workload {other}").into()),
        };
        if got != 1 {
            return Err(format!("{}: unexpected result", a.workload).into());
        }
    }
    Ok(())
}
