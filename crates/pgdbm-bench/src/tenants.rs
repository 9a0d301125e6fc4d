//! The many-tenants workload: [`TENANTS`] schemas `<schema>_t<N>`, each with a small table of
//! [`TENANT_ROWS`] rows, and [`TENANT_STATEMENTS`] statements per schema whose texts differ.
//! An operation picks a tenant and one of its statements at random. pgdbm runs one
//! `AsyncDatabaseManager` per tenant over one shared pool and renders `{{tables.items}}`
//! itself; deadpool (`prepare_cached`) and sqlx (`query`) get the rendered texts. The
//! one-tenant case runs the same statements on `<schema>_t0` alone.
//!
//! Also here: what the server's backends and this process hold in memory at the end of a slice.

use std::hint::black_box;
use std::sync::Arc;

use pgdbm::{AsyncDatabaseManager, DatabaseConfig};
use sqlx::AssertSqlSafe;
use tokio_postgres::Client;

use crate::live::Live;
use crate::live::Sqls;
use crate::workload::{render, Workload, XorShift, TENANTS, TENANT_ROWS, TENANT_STATEMENTS};
use crate::BoxError;

/// Schemas created (and dropped) per multi-statement script, each one implicit transaction:
/// one transaction for all 1,000 would need more lock-table slots than a default server has,
/// and one script of 4,000 statements takes the server four times as long as 20 of 200
/// (2.6 s against 11 s here).
const PER_TRANSACTION: usize = 50;

/// The statements: every one takes an id in 1..=TENANT_ROWS and returns exactly one row.
pub const STATEMENTS: [&str; TENANT_STATEMENTS] = [
    "SELECT * FROM {{tables.items}} WHERE id = $1",
    "SELECT name FROM {{tables.items}} WHERE id = $1",
    "SELECT id, score FROM {{tables.items}} WHERE id = $1",
    "SELECT * FROM {{tables.items}} WHERE k = $1",
    "SELECT name, score FROM {{tables.items}} WHERE k = $1",
    "SELECT count(*) FROM {{tables.items}} WHERE grp = $1 % 10",
    "SELECT id FROM {{tables.items}} WHERE id = $1 AND score >= 0",
    "SELECT max(score) FROM {{tables.items}} WHERE id <= $1",
    "SELECT name || '!' AS shout FROM {{tables.items}} WHERE id = $1",
    "SELECT * FROM {{tables.items}} WHERE id = $1 OR k = $1 ORDER BY id LIMIT 1",
];

/// The name of tenant `n`'s schema.
pub fn schema(base: &str, n: usize) -> String {
    format!("{base}_t{n}")
}

/// Creates the [`TENANTS`] schemas: one multi-statement script per [`PER_TRANSACTION`].
pub async fn create(admin: &Client, base: &str) -> Result<(), BoxError> {
    let mut script = String::new();
    for n in 0..TENANTS {
        let s = format!("\"{}\"", schema(base, n));
        script.push_str(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.items (id int PRIMARY KEY, k int NOT NULL UNIQUE, grp int NOT NULL,
                                     name text NOT NULL, score float8 NOT NULL);
             INSERT INTO {s}.items SELECT g, {k} - g, g % 10, 'item ' || g, g * 0.5
             FROM generate_series(1, {TENANT_ROWS}) AS g;
             ANALYZE {s}.items;\n",
            k = TENANT_ROWS + 1
        ));
        if n % PER_TRANSACTION == PER_TRANSACTION - 1 || n == TENANTS - 1 {
            admin.batch_execute(&script).await?;
            script.clear();
        }
    }
    Ok(())
}

/// Drops every schema named `<base>_t<digits>`, whatever created it.
pub async fn drop_all(admin: &Client, base: &str) -> Result<(), BoxError> {
    let pattern = format!("^{}_t[0-9]+$", regex_escape(base));
    let rows = admin
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname ~ $1 ORDER BY 1",
            &[&pattern],
        )
        .await?;
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut script = String::new();
    for chunk in names.chunks(PER_TRANSACTION) {
        let list: Vec<String> = chunk.iter().map(|n| format!("\"{n}\"")).collect();
        script.push_str(&format!(
            "BEGIN; DROP SCHEMA IF EXISTS {} CASCADE; COMMIT;\n",
            list.join(", ")
        ));
    }
    if !script.is_empty() {
        let t = std::time::Instant::now();
        admin.batch_execute(&script).await?;
        eprintln!(
            "dropped {} tenant schemas in {:.1} s",
            names.len(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = !c.is_ascii_alphanumeric() && c != '_';
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// The statements rendered for every tenant, for the contenders that do not render templates.
pub fn render_all(base: &str) -> Vec<Vec<String>> {
    (0..TENANTS)
        .map(|n| {
            let s = schema(base, n);
            STATEMENTS.iter().map(|sql| render(sql, &s)).collect()
        })
        .collect()
}

/// pgdbm: one shared pool of `size` connections, one manager per tenant of `w`.
pub async fn open_pgdbm(url: &str, base: &str, w: Workload, size: usize) -> Result<Live, BoxError> {
    let tenants = w.tenants().ok_or("not a tenant workload")?;
    let pool = AsyncDatabaseManager::create_shared_pool(&DatabaseConfig {
        connection_string: Some(url.to_owned()),
        min_connections: size,
        max_connections: size,
        ..DatabaseConfig::default()
    })
    .await?;
    let managers = (0..tenants)
        .map(|n| AsyncDatabaseManager::from_pool(pool.clone(), Some(&schema(base, n))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Live::PgdbmTenants(pool, managers.into()))
}

/// A random tenant of `w`, one of its statements, an id.
fn pick(w: Workload, rng: &mut XorShift) -> (usize, usize, i32) {
    let tenants = w.tenants().expect("a tenant workload");
    let t = rng.below(tenants);
    let s = rng.below(TENANT_STATEMENTS);
    (t, s, rng.below(TENANT_ROWS) as i32 + 1)
}

pub async fn pgdbm_op(
    managers: &[AsyncDatabaseManager],
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    let (t, s, id) = pick(w, rng);
    let row = managers[t].fetch_one(STATEMENTS[s], &[&id]).await?;
    Ok(usize::from(black_box(row).is_some()))
}

pub async fn deadpool_op(
    pool: &deadpool_postgres::Pool,
    sqls: &Sqls,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    let (t, s, id) = pick(w, rng);
    let client = pool.get().await?;
    let stmt = client.prepare_cached(&sqls.tenants[t][s]).await?;
    let row = client.query_opt(&stmt, &[&id]).await?;
    Ok(usize::from(black_box(row).is_some()))
}

pub async fn sqlx_op(
    pool: &sqlx::PgPool,
    sqls: &Sqls,
    w: Workload,
    rng: &mut XorShift,
) -> Result<usize, BoxError> {
    let (t, s, id) = pick(w, rng);
    let row = sqlx::query(AssertSqlSafe(&*sqls.tenants[t][s]))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(usize::from(black_box(row).is_some()))
}

/// Memory at the end of a slice, with every connection of the pool still open.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    /// Mean private memory (`RssAnon`) of the pool's server backends, KiB.
    pub server_kb_per_conn: f64,
    /// This process's resident memory (`VmRSS`), KiB.
    pub client_rss_kb: u64,
}

/// `field` of `/proc/<pid>/status`, in KiB.
pub fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Takes all `size` connections of the open contender at once, asks each for its backend's
/// pid and reads that backend's `RssAnon` (the server runs on this machine). `None` when the
/// contender is not pooled here or `/proc` does not show the backends.
pub async fn memory(live: &Live, size: usize) -> Option<Memory> {
    let pids: Vec<i32> = match live {
        Live::Pgdbm(db) | Live::PgdbmSerde(db) | Live::PgdbmTraced(db, _) => {
            let held = futures_util::future::try_join_all((0..size).map(|_| db.acquire()))
                .await
                .ok()?;
            held.iter().map(|c| c.backend_pid()).collect()
        }
        Live::PgdbmTenants(_, managers) => {
            let db = managers.first()?;
            // The path the workload is about: misses sent unprepared, in one round trip.
            if let Ok(stats) = db.get_pool_stats().await {
                eprintln!(
                    "  pgdbm: {} of {} calls were cache misses answered in one round trip",
                    stats.one_trip_misses, stats.acquire_count
                );
            }
            let held = futures_util::future::try_join_all((0..size).map(|_| db.acquire()))
                .await
                .ok()?;
            held.iter().map(|c| c.backend_pid()).collect()
        }
        Live::Deadpool(pool) => {
            let held = futures_util::future::try_join_all((0..size).map(|_| pool.get()))
                .await
                .ok()?;
            let mut pids = Vec::new();
            for c in &held {
                pids.push(
                    c.query_one("SELECT pg_backend_pid()", &[])
                        .await
                        .ok()?
                        .get(0),
                );
            }
            pids
        }
        Live::Sqlx(pool) => {
            let mut held = futures_util::future::try_join_all((0..size).map(|_| pool.acquire()))
                .await
                .ok()?;
            let mut pids = Vec::new();
            for c in &mut held {
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut **c)
                    .await
                    .ok()?;
                pids.push(pid);
            }
            pids
        }
        Live::Raw(_) => return None,
    };
    let kb: Vec<u64> = pids
        .iter()
        .filter_map(|p| status_kb(&p.to_string(), "RssAnon:"))
        .collect();
    if kb.is_empty() {
        return None;
    }
    Some(Memory {
        server_kb_per_conn: kb.iter().sum::<u64>() as f64 / kb.len() as f64,
        client_rss_kb: status_kb("self", "VmRSS:")?,
    })
}

/// Checks that every statement returns one row on a tenant: a typo should fail at set-up.
pub async fn check_statements(admin: &Client, base: &str) -> Result<(), BoxError> {
    let s = schema(base, 0);
    for sql in STATEMENTS {
        for id in [1_i32, 50, TENANT_ROWS as i32] {
            let rows = admin.query(&render(sql, &s), &[&id]).await?;
            if rows.len() != 1 {
                return Err(format!("{sql} with {id}: {} rows, not 1", rows.len()).into());
            }
        }
    }
    Ok(())
}

/// Tenant statements for the rendered-SQL contenders, shared by every slice.
pub fn sqls_with_tenants(mut sqls: Sqls, base: &str, wanted: bool) -> Arc<Sqls> {
    if wanted {
        sqls.tenants = render_all(base);
    }
    Arc::new(sqls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_and_their_pattern() {
        assert_eq!(schema("pgdbm_bench_7", 12), "pgdbm_bench_7_t12");
        assert_eq!(regex_escape("a_b.c"), "a_b\\.c");
        let sqls = render_all("s");
        assert_eq!(sqls.len(), TENANTS);
        assert_eq!(sqls[3][1], r#"SELECT name FROM "s_t3".items WHERE id = $1"#);
        let distinct: std::collections::HashSet<&String> = sqls.iter().flatten().collect();
        assert_eq!(distinct.len(), TENANTS * TENANT_STATEMENTS);
    }
}
