//! The benchmark suite: pgdbm-rs side by side with raw tokio-postgres, deadpool-postgres, sqlx,
//! Python pgdbm and pgbench, on the same server in one run.
//!
//! For each workload and concurrency level every contender runs once per round with the same
//! budget, in an order rotated from round to round; the report gives the median of the rounds,
//! their spread, and ratios to raw tokio-postgres. A full run writes `docs/benchmarks.md`,
//! `docs/benchmarks.svg` and every figure in `docs/benchmarks.json` (`--json PATH` for any run;
//! `--compare OLD.json` compares runs). The benchmark schema `pgdbm_bench_<pid>` and the tenant
//! schemas `pgdbm_bench_<pid>_t<N>` are dropped at the end, on error, on panic, on Ctrl-C and
//! on SIGTERM.
//!
//! ```text
//! cargo run --release -p pgdbm-bench                       # the whole suite (~30 minutes)
//! cargo run --release -p pgdbm-bench -- --quick            # smoke run
//! cargo run --release -p pgdbm-bench -- --workload point --contenders pgdbm,raw --conc 1
//! cargo run --release -p pgdbm-bench -- --workload seq10,pipe10,seq10_1ms,pipe10_1ms
//! cargo run --release -p pgdbm-bench -- --workload tenant1,tenants --json /tmp/b.json
//! cargo run --release -p pgdbm-bench -- --compare /tmp/a.json /tmp/b.json
//! cargo run --release -p pgdbm-bench -- --mux --write         # multiplexing (~3 minutes)
//! ```
//!
//! `--mux` runs the multiplexing benchmark instead of the suite (see `mux`); with `--write` it
//! rewrites only the "Multiplexing" section of `docs/benchmarks.md` and
//! `docs/benchmarks-mux.svg`, and a full run keeps that section.

mod args;
mod chart;
mod contender;
mod far;
mod json;
mod live;
mod measure;
mod multi;
mod mux;
mod mux_report;
mod ops;
mod pgbench;
mod python;
mod report;
mod results;
mod rss;
mod sections;
mod setup;
mod sizes;
mod suite;
mod tenants;
mod testdb;
mod workload;

use std::process::ExitCode;
use std::time::Instant;

use futures_util::FutureExt;

use args::Options;
use contender::Who;
use suite::External;

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
    let outcome = if let Some((who, w)) = &opts.rss_child {
        let schema = std::env::var("PGDBM_BENCH_SCHEMA").unwrap_or_default();
        rss::child(&opts.database_url, &schema, who, w).await
    } else if let (Some(old), Some(new)) = (&opts.compare, &opts.against) {
        compare_files(old, new)
    } else if opts.sizes {
        sizes::print(&opts.database_url).await
    } else {
        main_run(&opts).await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", chain(&*e));
            ExitCode::FAILURE
        }
    }
}

fn compare_files(old: &std::path::Path, new: &std::path::Path) -> Result<(), BoxError> {
    json::compare(&json::Doc::read(old)?, &json::Doc::read(new)?);
    Ok(())
}

async fn main_run(opts: &Options) -> Result<(), BoxError> {
    // Read before the run: a wrong path should not cost a run.
    let old = opts.compare.as_deref().map(json::Doc::read).transpose()?;
    let admin = setup::connect(&opts.database_url).await.map_err(|e| {
        format!(
            "cannot connect to the server (DATABASE_URL): {}",
            chain(&*e)
        )
    })?;
    let schema = format!("pgdbm_bench_{}", std::process::id());
    let run = std::panic::AssertUnwindSafe(run(opts, &admin, &schema)).catch_unwind();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = run => r.unwrap_or_else(|_| Err("the benchmark panicked".into())),
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        _ = term.recv() => Err("terminated".into()),
    };
    let dropped = setup::drop_schema(&admin, &schema).await;
    let report = result.map_err(|e| format!("benchmark failed: {}", chain(&*e)))?;
    if let Err(e) = dropped {
        return Err(format!(
            "could not drop schema {schema}: {}; drop it by hand",
            chain(&*e)
        )
        .into());
    }
    report.print();
    let doc = json::Doc::of(&report);
    if let (true, Some(mux)) = (opts.write, &report.mux) {
        let dir = args::docs_dir();
        mux_report::write(&dir, mux, report.cores, &report.server_version)?;
        eprintln!(
            "wrote {} and the section {:?} of benchmarks.md",
            dir.join(mux_report::CHART).display(),
            mux_report::HEADING
        );
    } else if opts.write {
        let dir = args::docs_dir();
        report.write(&dir)?;
        doc.write(&dir.join("benchmarks.json"))?;
        eprintln!(
            "wrote {} and benchmarks.json",
            dir.join("benchmarks.md").display()
        );
    }
    if let Some(path) = &opts.json {
        doc.write(path)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(old) = &old {
        json::compare(old, &doc);
    }
    Ok(())
}

async fn run(
    opts: &Options,
    admin: &tokio_postgres::Client,
    schema: &str,
) -> Result<report::Report, BoxError> {
    let started = Instant::now();
    let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
    eprintln!("creating schema {schema} …");
    setup::create_schema(admin, schema).await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if opts.mux {
        let mux = mux::run(opts, admin, schema).await?;
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        eprintln!("done in {minutes:.1} min");
        return Ok(report::Report {
            server_version: version,
            cores,
            rounds: opts.rounds,
            duration: opts.duration,
            minutes,
            missing: Vec::new(),
            outcomes: Vec::new(),
            rss: Vec::new(),
            testdb: Vec::new(),
            mux: Some(mux),
        });
    }
    if opts.workloads.iter().any(|w| w.tenants().is_some()) {
        let t = Instant::now();
        tenants::create(admin, schema).await?;
        tenants::check_statements(admin, schema).await?;
        eprintln!(
            "created {} tenant schemas {schema}_t<N> in {:.1} s",
            workload::TENANTS,
            t.elapsed().as_secs_f64()
        );
    }

    let mut who = opts.contenders.clone();
    // A contender none of the selected workloads runs is not started (the Python venv).
    who.retain(|c| opts.workloads.iter().any(|w| c.supports(*w)));
    let mut missing = Vec::new();
    let mut python_bin = None;
    let mut ext = External {
        python: None,
        pgbench: None,
    };
    if who.contains(&Who::Python) {
        eprintln!("Python venv with pgdbm 0.5.0 …");
        match python::setup().await {
            Ok(py) => {
                ext.python = Some(python::Python::start(&py, &opts.database_url, schema)?);
                python_bin = Some(py);
            }
            Err(e) => missing.push(format!("Python pgdbm: {}", chain(&*e))),
        }
    }
    if who.contains(&Who::Pgbench) {
        ext.pgbench = pgbench::Pgbench::find(&opts.database_url, schema);
        if ext.pgbench.is_none() {
            missing.push("pgbench: not found on PATH or in /usr/lib/postgresql/*/bin".into());
        }
    }
    who.retain(|c| match c {
        Who::Python => ext.python.is_some(),
        Who::Pgbench => ext.pgbench.is_some(),
        _ => true,
    });
    for m in &missing {
        eprintln!("skipped {m}");
    }

    let outcomes = suite::run(opts, admin, schema, &who, &mut ext).await?;
    let rss = if opts.rss {
        eprintln!("peak RSS …");
        rss::measure(&opts.database_url, schema, &who, python_bin.as_deref()).await?
    } else {
        Vec::new()
    };
    let testdb = if opts.testdb {
        eprintln!("test databases and migrations …");
        testdb::measure(7).await
    } else {
        Vec::new()
    };
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    eprintln!("done in {minutes:.1} min");
    Ok(report::Report {
        server_version: version,
        cores,
        rounds: opts.rounds,
        duration: opts.duration,
        minutes,
        missing,
        outcomes,
        rss,
        testdb,
        mux: None,
    })
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
