//! The suite: every (concurrency, workload) case, each contender given the same budget in every
//! round, the order of the contenders rotated and reversed from round to round, so that the load
//! bursts of a shared machine spread over all of them alike.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use crate::args::Options;
use crate::contender::{self, Who};
use crate::measure::{self, median, Budget, Sample};
use crate::ops::Sqls;
use crate::pgbench::Pgbench;
use crate::python::Python;
use crate::setup;
use crate::tenants::{self, Memory};
use crate::workload::{Kind, Workload};
use crate::BoxError;

const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The per-round rates of every contender in one (workload, concurrency) case.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub workload: Workload,
    pub conc: usize,
    /// Rates per round, in the unit of the workload.
    pub rates: Vec<(Who, Vec<f64>)>,
    /// This process's CPU µs per operation, for the in-process contenders.
    pub cpu_us: Vec<(Who, f64)>,
    /// Memory at the end of each round's slice, where measured (the tenant workloads).
    pub memory: Vec<(Who, Vec<Memory>)>,
}

impl Outcome {
    pub fn rounds(&self, who: Who) -> Option<&[f64]> {
        self.rates
            .iter()
            .find(|(w, _)| *w == who)
            .map(|(_, r)| r.as_slice())
    }

    pub fn median(&self, who: Who) -> Option<f64> {
        self.rounds(who).map(median).filter(|m| !m.is_nan())
    }

    /// Median of `a` over median of `b`.
    pub fn ratio(&self, a: Who, b: Who) -> Option<f64> {
        Some(self.median(a)? / self.median(b)?)
    }

    /// Min and max of the per-round ratios of `a` to `b` (same round, adjacent in time).
    pub fn ratio_range(&self, a: Who, b: Who) -> Option<(f64, f64)> {
        let ratios: Vec<f64> = self
            .rounds(a)?
            .iter()
            .zip(self.rounds(b)?)
            .map(|(x, y)| x / y)
            .collect();
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (!ratios.is_empty()).then_some((min, max))
    }

    /// (max - min) / median of one contender's rounds.
    pub fn spread(&self, who: Who) -> Option<f64> {
        let r = self.rounds(who)?;
        let min = r.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((max - min) / median(r))
    }

    /// The median over the rounds of server KiB per connection and client RSS KiB.
    pub fn memory(&self, who: Who) -> Option<Memory> {
        let m = &self.memory.iter().find(|(w, _)| *w == who)?.1;
        let server: Vec<f64> = m.iter().map(|m| m.server_kb_per_conn).collect();
        let client: Vec<f64> = m.iter().map(|m| m.client_rss_kb as f64).collect();
        (!m.is_empty()).then(|| Memory {
            server_kb_per_conn: median(&server),
            client_rss_kb: median(&client) as u64,
        })
    }

    pub fn cpu(&self, who: Who) -> Option<f64> {
        self.cpu_us
            .iter()
            .find(|(w, _)| *w == who)
            .map(|(_, c)| *c)
            .filter(|c| !c.is_nan())
    }
}

/// The out-of-process contenders, when they could be started.
pub struct External {
    pub python: Option<Python>,
    pub pgbench: Option<Pgbench>,
}

pub async fn run(
    opts: &Options,
    admin: &tokio_postgres::Client,
    schema: &str,
    who: &[Who],
    ext: &mut External,
) -> Result<Vec<Outcome>, BoxError> {
    let any_tenants = opts.workloads.iter().any(|w| w.tenants().is_some());
    let sqls = tenants::sqls_with_tenants(Sqls::new(schema), schema, any_tenants);
    // The latency proxy, started when a "+1 ms" workload first runs.
    let mut far: Option<crate::far::Far> = None;
    let mut outcomes = Vec::new();
    for &conc in &opts.concurrency {
        for &w in &opts.workloads {
            let sides: Vec<Who> = who.iter().copied().filter(|c| c.supports(w)).collect();
            if sides.is_empty() || !(opts.conc_given || w.runs_by_default_at(conc)) {
                continue;
            }
            let url = match w.latency() {
                Some(one_way) => {
                    if far.is_none() {
                        far = Some(crate::far::start(&opts.database_url, one_way).await?);
                    }
                    far.as_ref().map(|f| f.url.clone()).expect("started")
                }
                None => opts.database_url.clone(),
            };
            let budget = Budget::for_workload(w, conc, opts.duration, opts.fixed_ops);
            // The large workloads take seconds per slice: three rounds give a median.
            let rounds = match w.kind() {
                Kind::Timed => opts.rounds,
                _ => opts.rounds.min(3),
            };
            let mut rates: HashMap<Who, Vec<f64>> = HashMap::new();
            let mut cpu: HashMap<Who, (u64, u64)> = HashMap::new();
            let mut memory: HashMap<Who, Vec<Memory>> = HashMap::new();
            if w.kind() != Kind::Timed && w.bulk_table().is_none() {
                // One slice uncounted first: the process's first large results grow its heap
                // (page faults, the allocator's thresholds), a cost the first contender of
                // round 1 would otherwise pay alone.
                let c = sides[0];
                slice(&url, schema, ext, &sqls, c, w, conc, budget, u64::MAX)
                    .await
                    .map_err(|e| format!("{} {} @{conc} (warm-up): {e}", c.label(), w.name()))?;
                tokio::time::sleep(SETTLE).await;
            }
            for round in 0..rounds {
                let mut order = sides.clone();
                order.rotate_left(round % sides.len());
                if round % 2 == 1 {
                    order.reverse();
                }
                for &c in &order {
                    if let Some(table) = w.bulk_table() {
                        setup::truncate(admin, schema, table).await?;
                    }
                    let s = slice(&url, schema, ext, &sqls, c, w, conc, budget, round as u64)
                        .await
                        .map_err(|e| format!("{} {} @{conc}: {e}", c.label(), w.name()))?;
                    rates.entry(c).or_default().push(s.rate());
                    if let Some(m) = s.memory {
                        memory.entry(c).or_default().push(m);
                    }
                    // Let the closed connections' backends exit before the next contender.
                    tokio::time::sleep(SETTLE).await;
                    // Through the proxy, this process's CPU time includes the proxy's.
                    if let Some(ns) = s.cpu_ns.filter(|_| w.latency().is_none()) {
                        let e = cpu.entry(c).or_default();
                        e.0 += ns;
                        e.1 += s.all_ops;
                    }
                }
                let line: Vec<String> = sides
                    .iter()
                    .map(|c| format!("{} {:.0}", c.key(), rates[c][round]))
                    .collect();
                eprintln!(
                    "  {:<18} conc {:>2}  round {}/{}: {}",
                    w.name(),
                    conc,
                    round + 1,
                    rounds,
                    line.join("  ")
                );
                let _ = std::io::stderr().flush();
            }
            outcomes.push(Outcome {
                workload: w,
                conc,
                rates: sides.iter().map(|c| (*c, rates[c].clone())).collect(),
                cpu_us: cpu
                    .iter()
                    .map(|(c, (ns, ops))| (*c, *ns as f64 / 1000.0 / *ops as f64))
                    .collect(),
                memory: sides
                    .iter()
                    .filter_map(|c| Some((*c, memory.remove(c)?)))
                    .collect(),
            });
        }
    }
    Ok(outcomes)
}

#[allow(clippy::too_many_arguments)]
async fn slice(
    url: &str,
    schema: &str,
    ext: &mut External,
    sqls: &Arc<Sqls>,
    c: Who,
    w: Workload,
    conc: usize,
    budget: Budget,
    seed: u64,
) -> Result<Sample, BoxError> {
    match c {
        Who::Python => {
            let py = ext.python.as_mut().ok_or("Python is not available")?;
            py.slice(w, conc, budget).await
        }
        Who::Pgbench => {
            let pgbench = ext.pgbench.as_mut().ok_or("pgbench is not available")?;
            pgbench.slice(w, conc, budget).await
        }
        _ => {
            let live = match (c, w.tenants()) {
                (Who::Pgdbm, Some(_)) => tenants::open_pgdbm(url, schema, w, conc).await?,
                _ => contender::open(c, url, sqls, conc).await?,
            };
            measure::slice(live, sqls, w, conc, budget, seed).await
        }
    }
}
