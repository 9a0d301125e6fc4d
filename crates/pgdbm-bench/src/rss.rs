//! Peak resident memory. Each (contender, workload) runs in a fresh process, since a process's
//! peak (`VmHWM`) only grows: the suite re-runs its own binary with `--rss-child WHO WORKLOAD`,
//! and Python's worker with `rss WORKLOAD`.

use std::path::Path;
use std::sync::Arc;

use crate::contender::{self, Who};
use crate::measure::{self, Budget};
use crate::ops::{self, Sqls};
use crate::workload::{Workload, STREAM_ROWS};
use crate::BoxError;

/// The memory workloads, by key.
pub const WORKLOADS: [&str; 3] = ["fetch100k", "typed100k", "stream1m"];

#[derive(Debug, Clone)]
pub struct Rss {
    pub who: Who,
    pub workload: &'static str,
    pub baseline_kb: u64,
    pub peak_kb: u64,
}

fn status_kb(field: &str) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    Ok(line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// The child: opens `who` with one connection, notes its RSS, runs the workload once and
/// prints `baseline_kb peak_kb`.
pub async fn child(url: &str, schema: &str, who: &str, workload: &str) -> Result<(), BoxError> {
    let who = Who::from_key(who).ok_or("unknown contender")?;
    let sqls = Arc::new(Sqls::new(schema));
    let live = contender::open(who, url, &sqls, 1).await?;
    let baseline = status_kb("VmRSS:")?;
    match workload {
        "stream1m" => {
            let n = ops::stream(&live).await?;
            live.close().await;
            if n != STREAM_ROWS {
                return Err(format!("streamed {n} rows").into());
            }
        }
        key => {
            let w = Workload::from_key(key).ok_or("unknown workload")?;
            measure::slice(live, &sqls, w, 1, Budget::Ops(1), 0).await?;
        }
    }
    println!("{baseline} {}", status_kb("VmHWM:")?);
    Ok(())
}

/// Runs every memory workload for every selected contender.
pub async fn measure(
    url: &str,
    schema: &str,
    who: &[Who],
    python: Option<&Path>,
) -> Result<Vec<Rss>, BoxError> {
    let exe = std::env::current_exe()?;
    let mut out = Vec::new();
    for &w in &WORKLOADS {
        for &c in who {
            let (baseline_kb, peak_kb) = match c {
                Who::Pgbench => continue,
                Who::PgdbmSerde if w != "typed100k" => continue,
                // Peak memory of the observability variants is not what they are for.
                Who::PgdbmTraced | Who::PgdbmMonitor | Who::PgdbmResetAlways => continue,
                Who::Python => match python {
                    Some(py) => crate::python::rss(py, url, schema, w).await?,
                    None => continue,
                },
                _ => {
                    let run = tokio::process::Command::new(&exe)
                        .args(["--rss-child", c.key(), w])
                        .env("DATABASE_URL", url)
                        .env("PGDBM_BENCH_SCHEMA", schema)
                        .output()
                        .await?;
                    let text = String::from_utf8_lossy(&run.stdout);
                    let mut nums = text.split_whitespace().map(str::parse::<u64>);
                    match (run.status.success(), nums.next(), nums.next()) {
                        (true, Some(Ok(b)), Some(Ok(p))) => (b, p),
                        _ => {
                            return Err(format!(
                                "rss {} {w}: {}",
                                c.key(),
                                String::from_utf8_lossy(&run.stderr).trim()
                            )
                            .into())
                        }
                    }
                }
            };
            eprintln!("  rss {w:<10} {:<14} peak {:>8} KiB", c.label(), peak_kb);
            out.push(Rss {
                who: c,
                workload: w,
                baseline_kb,
                peak_kb,
            });
        }
    }
    Ok(out)
}
