//! pgdbm against raw tokio-postgres with prepared statements, side by side in one run.
//!
//! For each workload and concurrency level both contenders run in alternation for several
//! rounds, each cut into short slices run A B B A … (see `measure`), and the table reports
//! median ops/s, their ratio and the spread of the per-round ratios. The benchmark schema `pgdbm_bench_<pid>` is dropped at the end, on error,
//! on panic and on Ctrl-C.
//!
//! ```text
//! cargo run --release -p pgdbm-bench                      # full run, ~3 minutes
//! cargo run --release -p pgdbm-bench -- --quick           # smoke run, < 30 s
//! cargo run --release -p pgdbm-bench -- --duration-secs 3 # longer rounds
//! ```

mod args;
mod measure;
mod report;
mod setup;
mod sizes;
mod workload;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;

use args::Options;
use measure::{slice, Budget, Contender, Outcome, Sample};
use workload::Workload;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match args::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let schema = format!("pgdbm_bench_{}", std::process::id());
    if opts.sizes {
        return match sizes::print(&opts.database_url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}", chain(&*e));
                ExitCode::FAILURE
            }
        };
    }
    let admin = match setup::connect(&opts.database_url).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cannot connect to the server (DATABASE_URL): {}",
                chain(&*e)
            );
            return ExitCode::FAILURE;
        }
    };

    let run = std::panic::AssertUnwindSafe(run(&opts, &admin, &schema)).catch_unwind();
    let result = tokio::select! {
        r = run => match r {
            Ok(r) => r,
            Err(_) => Err("the benchmark panicked".into()),
        },
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };

    let dropped = setup::drop_schema(&admin, &schema).await;
    if let Err(e) = &dropped {
        eprintln!(
            "could not drop schema {schema}: {}; drop it by hand",
            chain(&**e)
        );
    }
    match result {
        Ok(outcomes) => {
            report::print(&outcomes);
            if dropped.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("benchmark failed: {}", chain(&*e));
            ExitCode::FAILURE
        }
    }
}

async fn run(
    opts: &Options,
    admin: &tokio_postgres::Client,
    schema: &str,
) -> Result<Vec<Outcome>, BoxError> {
    let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
    let started = Instant::now();
    eprintln!(
        "creating schema {schema} with {} rows …",
        workload::TABLE_ROWS
    );
    setup::create_schema(admin, schema).await?;
    let budget = match opts.fixed_ops {
        Some(n) => format!("{n} ops per side per round"),
        None => format!(
            "{:.2} s per side per round in {} alternating slices{}",
            opts.duration.as_secs_f64(),
            opts.slices,
            if opts.workloads.contains(&Workload::Fetch100k) {
                " (fetch_all 100k: slices of one op per task)"
            } else {
                ""
            }
        ),
    };
    println!(
        "pgdbm-bench: PostgreSQL {version}, {} cores, {} rounds per case, {budget}, warm-up {:.2} s per side",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        opts.rounds,
        opts.warmup.as_secs_f64(),
    );
    println!("pool size = tasks = raw connections = concurrency; defaults otherwise (statement cache on)");

    let mut outcomes = Vec::new();
    for &conc in &opts.concurrency {
        let db = setup::pgdbm_manager(&opts.database_url, schema, conc, opts.max_queries).await?;
        let raw = Arc::new(setup::raw_connections(&opts.database_url, schema, conc).await?);
        // Index 0 is pgdbm, 1 is raw (see `case`).
        let sides = [Contender::Pgdbm(db.clone()), Contender::Raw(raw)];
        for &w in &opts.workloads {
            outcomes.push(case(opts, &sides, w, conc).await?);
        }
        db.disconnect().await?;
    }
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(outcomes)
}

/// Warm-up, then `rounds` rounds of `slices` slices; in each slice both sides run back to back,
/// the order alternating from slice to slice (A B, B A, A B, …).
async fn case(
    opts: &Options,
    sides: &[Contender; 2],
    w: Workload,
    conc: usize,
) -> Result<Outcome, BoxError> {
    let (budget, slices, warmup) = match (opts.fixed_ops, w.counted()) {
        (Some(n), counted) => (
            Budget::Ops(n),
            1,
            Budget::Ops(if counted {
                conc as u64
            } else {
                5 * conc as u64
            }),
        ),
        (None, true) => (
            Budget::Ops(conc as u64),
            opts.counted_slices(conc),
            Budget::Ops(conc as u64),
        ),
        (None, false) => (
            Budget::Time(opts.slice_duration()),
            opts.slices,
            Budget::Time(opts.warmup),
        ),
    };
    for (side, _) in sides.iter().zip(opts.run_side).filter(|(_, on)| *on) {
        slice(side, w, conc, warmup, u64::MAX).await?;
    }
    let mut outcome = Outcome {
        workload: w,
        conc,
        pgdbm: Vec::new(),
        raw: Vec::new(),
        pgdbm_cpu_us: f64::NAN,
        raw_cpu_us: f64::NAN,
    };
    let (mut pgdbm_all, mut raw_all) = (Sample::default(), Sample::default());
    let mut step = 0u32;
    for r in 0..opts.rounds {
        let (mut pgdbm, mut raw) = (Sample::default(), Sample::default());
        for k in 0..slices {
            // Both sides get the same random ids in a slice.
            let seed = (r as u64) << 32 | k as u64;
            let order = if step & 1 == 0 { [0, 1] } else { [1, 0] };
            step += 1;
            for i in order.into_iter().filter(|&i| opts.run_side[i]) {
                let s = slice(&sides[i], w, conc, budget, seed).await?;
                if i == 0 {
                    pgdbm.add(s)
                } else {
                    raw.add(s)
                }
            }
        }
        outcome.pgdbm.push(pgdbm.rate()); // NaN when the side did not run
        outcome.raw.push(raw.rate());
        pgdbm_all.add(pgdbm);
        raw_all.add(raw);
        eprintln!(
            "  {:<16} conc {:>2}  round {}/{}: pgdbm {:>10.1}  raw {:>10.1}  ratio {:.3}",
            w.name(),
            conc,
            r + 1,
            opts.rounds,
            outcome.pgdbm[r],
            outcome.raw[r],
            outcome.pgdbm[r] / outcome.raw[r],
        );
        let _ = std::io::stderr().flush();
    }
    outcome.pgdbm_cpu_us = pgdbm_all.cpu_us_per_op();
    outcome.raw_cpu_us = raw_all.cpu_us_per_op();
    Ok(outcome)
}

/// An error with its sources (the driver's "db error" alone says little).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
