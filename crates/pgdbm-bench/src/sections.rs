//! The report's sections for the pipeline and tenant workloads: ratios between cases of
//! different workloads (pipelined against sequential, many tenants against one), and their
//! targets.

use crate::contender::Who;
use crate::results::Target;
use crate::suite::Outcome;
use crate::workload::Workload;

/// (sequential, pipelined) workloads, on loopback and through the proxy.
const PAIRS: [(Workload, Workload); 2] = [
    (Workload::Seq10, Workload::Pipe10),
    (Workload::Seq10Far, Workload::Pipe10Far),
];

fn find(outcomes: &[Outcome], w: Workload, conc: usize) -> Option<&Outcome> {
    outcomes.iter().find(|o| o.workload == w && o.conc == conc)
}

fn concurrencies(outcomes: &[Outcome], w: Workload) -> Vec<usize> {
    let mut c: Vec<usize> = outcomes
        .iter()
        .filter(|o| o.workload == w)
        .map(|o| o.conc)
        .collect();
    c.sort_unstable();
    c.dedup();
    c
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn cell(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|v| v.is_finite()).map_or_else(|| "–".into(), f)
}

fn rate(v: Option<f64>) -> String {
    cell(v, |v| {
        if v >= 1e4 {
            format!("{:.1} k", v / 1e3)
        } else {
            format!("{v:.0}")
        }
    })
}

fn times(v: Option<f64>) -> String {
    cell(v, |v| format!("{v:.2}×"))
}

/// The pipelined/sequential table: one row per (latency, concurrency).
pub fn pipeline_table(outcomes: &[Outcome]) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let head = [
        "10 point selects, ops/s",
        "conc",
        "pgdbm pipeline",
        "pgdbm seq",
        "raw joined",
        "raw seq",
        "deadpool seq",
        "sqlx seq",
        "pipeline/pgdbm seq",
        "pipeline/sqlx seq",
        "pipeline/deadpool seq",
        "raw joined/raw seq",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for (seq, pipe) in PAIRS {
        let mut concs = concurrencies(outcomes, seq);
        concs.extend(concurrencies(outcomes, pipe));
        concs.sort_unstable();
        concs.dedup();
        for conc in concs {
            let (s, p) = (find(outcomes, seq, conc), find(outcomes, pipe, conc));
            let m = |o: Option<&Outcome>, w: Who| o.and_then(|o| o.median(w));
            let pipeline = m(p, Who::Pgdbm);
            let where_ = if seq.latency().is_some() {
                "+1 ms each way"
            } else {
                "loopback"
            };
            rows.push(vec![
                where_.to_owned(),
                conc.to_string(),
                rate(pipeline),
                rate(m(s, Who::Pgdbm)),
                rate(m(p, Who::Raw)),
                rate(m(s, Who::Raw)),
                rate(m(s, Who::Deadpool)),
                rate(m(s, Who::Sqlx)),
                times(div(pipeline, m(s, Who::Pgdbm))),
                times(div(pipeline, m(s, Who::Sqlx))),
                times(div(pipeline, m(s, Who::Deadpool))),
                times(div(m(p, Who::Raw), m(s, Who::Raw))),
            ]);
        }
    }
    (!rows.is_empty()).then_some((head, rows))
}

/// The tenants table: one row per (contender, concurrency).
pub fn tenant_table(outcomes: &[Outcome]) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let head = [
        "tenants",
        "conc",
        "1 tenant ops/s",
        "1,000 tenants ops/s",
        "many/one",
        "server KiB/conn, 1",
        "server KiB/conn, 1,000",
        "client RSS MiB, 1",
        "client RSS MiB, 1,000",
    ]
    .map(String::from)
    .to_vec();
    let mut concs = concurrencies(outcomes, Workload::Tenants);
    concs.extend(concurrencies(outcomes, Workload::Tenant1));
    concs.sort_unstable();
    concs.dedup();
    let mut rows = Vec::new();
    for conc in concs {
        let (one, many) = (
            find(outcomes, Workload::Tenant1, conc),
            find(outcomes, Workload::Tenants, conc),
        );
        for who in Who::ALL {
            let m = |o: Option<&Outcome>| o.and_then(|o| o.median(who));
            let mem = |o: Option<&Outcome>| o.and_then(|o| o.memory(who));
            if m(one).is_none() && m(many).is_none() {
                continue;
            }
            let kb = |o| cell(mem(o).map(|m| m.server_kb_per_conn), |v| format!("{v:.0}"));
            let rss = |o| {
                cell(mem(o).map(|m| m.client_rss_kb as f64 / 1024.0), |v| {
                    format!("{v:.1}")
                })
            };
            rows.push(vec![
                who.label().to_owned(),
                conc.to_string(),
                rate(m(one)),
                rate(m(many)),
                cell(div(m(many), m(one)), |v| format!("{v:.2}")),
                kb(one),
                kb(many),
                rss(one),
                rss(many),
            ]);
        }
    }
    (!rows.is_empty()).then_some((head, rows))
}

/// What one sequential select took (raw tokio-postgres at concurrency 1), on loopback and
/// through the proxy: the round trip the pipelines save.
fn round_trips(outcomes: &[Outcome]) -> Option<String> {
    let per_select = |w| {
        let ops = find(outcomes, w, 1)?.median(Who::Raw)?;
        Some(1e6 / (ops * crate::workload::SELECTS as f64))
    };
    let mut parts = Vec::new();
    if let Some(us) = per_select(Workload::Seq10) {
        parts.push(format!("{us:.0} µs on loopback"));
    }
    if let Some(us) = per_select(Workload::Seq10Far) {
        parts.push(format!(
            "{:.2} ms through the proxy (nominally 2 ms more)",
            us / 1e3
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "One sequential select of raw tokio-postgres at concurrency 1 took {}.",
            parts.join(", ")
        )
    })
}

pub fn targets(outcomes: &[Outcome]) -> Vec<Target> {
    let mut near = Target {
        name: "10 point selects: pgdbm pipeline at least 3x pgdbm sequential, loopback, conc 1",
        cases: Vec::new(),
    };
    let mut far = Target {
        name: "10 point selects: pgdbm pipeline at least 8x pgdbm sequential through +1 ms",
        cases: Vec::new(),
    };
    let mut tenants = Target {
        name: "1,000 tenants at least 0.8x one tenant (pgdbm, 10 statements each)",
        cases: Vec::new(),
    };
    for (seq, pipe) in PAIRS {
        for conc in concurrencies(outcomes, pipe) {
            if seq.latency().is_none() && conc != 1 {
                continue;
            }
            let m = |w| find(outcomes, w, conc).and_then(|o| o.median(Who::Pgdbm));
            if let Some(r) = div(m(pipe), m(seq)) {
                let t = if seq.latency().is_some() {
                    &mut far
                } else {
                    &mut near
                };
                let need = if seq.latency().is_some() { 8.0 } else { 3.0 };
                t.cases.push((format!("{} @{conc}", pipe.name()), r, need));
            }
        }
    }
    for conc in concurrencies(outcomes, Workload::Tenants) {
        let m = |w| find(outcomes, w, conc).and_then(|o| o.median(Who::Pgdbm));
        if let Some(r) = div(m(Workload::Tenants), m(Workload::Tenant1)) {
            tenants
                .cases
                .push((format!("{} @{conc}", Workload::Tenants.name()), r, 0.8));
        }
    }
    vec![near, far, tenants]
}

/// Markdown for both sections (empty when neither ran).
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut md = String::new();
    if let Some((head, rows)) = pipeline_table(outcomes) {
        md.push_str(
            "\n## Pipelines: 10 point selects\n\nOne operation is 10 point selects with random \
             ids. pgdbm-rs sends them as one `pipeline()` of 10 `fetch_one`s or as 10 \
             `fetch_one` calls; tokio-postgres joins 10 `query_opt` futures on its connection \
             (`try_join_all`) or awaits them one by one; deadpool takes one client and awaits \
             10 `query_opt`s; sqlx awaits 10 `fetch_optional(&pool)`. \"+1 ms each way\" runs \
             every contender through pgdbm's `testing::LatencyProxy` (each byte delayed 1 ms in \
             each direction, requests not serialised; it runs in the benchmark process, whose \
             CPU figures are left out for these cases).\n\n",
        );
        md.push_str(&crate::results::markdown_table(&head, &rows));
        if let Some(line) = round_trips(outcomes) {
            md.push_str(&format!("\n{line}\n"));
        }
    }
    if let Some((head, rows)) = tenant_table(outcomes) {
        md.push_str(&format!(
            "\n## Many tenants\n\n{} schemas of a {}-row table each; an operation picks a tenant \
             and one of its {} statements (different texts) at random, so the 1,000-tenant case \
             has 10,000 distinct SQL texts. pgdbm-rs runs one `AsyncDatabaseManager` per \
             schema over one shared pool (`from_pool`) and renders `{{{{tables.items}}}}`; \
             deadpool (`prepare_cached`, unbounded cache) and sqlx (`query`, its default cache \
             of 100 statements) get the rendered texts. The one-tenant case runs the same 10 \
             statements on one schema. Server KiB/conn is the mean private memory (`RssAnon`) \
             of the pool's backends at the end of a slice, client RSS this process's `VmRSS` \
             then (every contender so far included).\n\n",
            crate::workload::TENANTS,
            crate::workload::TENANT_ROWS,
            crate::workload::TENANT_STATEMENTS,
        ));
        md.push_str(&crate::results::markdown_table(&head, &rows));
    }
    md
}

/// Prints both sections.
pub fn print(outcomes: &[Outcome]) {
    if let Some((head, rows)) = pipeline_table(outcomes) {
        println!();
        crate::results::print_text(&head, &rows);
        if let Some(line) = round_trips(outcomes) {
            println!("{line}");
        }
    }
    if let Some((head, rows)) = tenant_table(outcomes) {
        println!();
        crate::results::print_text(&head, &rows);
    }
}
