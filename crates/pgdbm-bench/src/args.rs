//! Command-line options.

use std::path::PathBuf;
use std::time::Duration;

use crate::contender::Who;
use crate::workload::Workload;

pub const USAGE: &str = "\
pgdbm-bench: pgdbm-rs side by side with raw tokio-postgres, deadpool-postgres, sqlx 0.9,
Python pgdbm 0.5.0 (asyncpg) and pgbench -M prepared, on the same server.

usage: cargo run --release -p pgdbm-bench -- [options]

  --quick               smoke run: 2 rounds of 0.3 s per contender (~5 minutes)
  --duration-secs N     counted seconds per contender per round for the timed workloads
                        (default 1)
  --rounds N            rounds per (workload, concurrency) (default 5, quick 2; the 100k-row,
                        executemany and COPY workloads run at most 3)
  --workload LIST       comma-separated subset of: point,value,fetch1k,fetch100k,typed1k,
                        typed100k,executemany,copy,txn,pg_type,series,bytea,arrays,
                        seq10,pipe10,seq10_1ms,pipe10_1ms,tenant1,tenants
                          seq10/pipe10: 10 point selects one by one / pipelined;
                          *_1ms: the same through a proxy adding 1 ms each way;
                          tenant1/tenants: 10 statements on 1 / 1,000 tenant schemas
  --conc LIST           comma-separated concurrency levels (default 1,16,64; without --conc
                        the seq10/pipe10 workloads run at 1 and 16, the tenant ones at 16)
  --mux                 the multiplexing benchmark alone: point selects from 64 callers,
                        loopback and through a proxy adding 0.5 and 2 ms each way, for
                        pgdbm multiplexed on 4 and 8 connections, pgdbm exclusive with 4, 8
                        and 64, deadpool-postgres and sqlx with 64 (3 rounds of 1.5 s per
                        cell unless given, ~3 minutes); with --write it writes the
                        \"Multiplexing\" section of docs/benchmarks.md and
                        docs/benchmarks-mux.svg
  --contenders LIST     comma-separated subset of: pgdbm,pgdbm-serde,pgdbm-traced,
                        pgdbm-monitor,pgdbm-reset-always,raw,deadpool,sqlx,python,
                        pgbench
  --side WHO            the same as --contenders WHO (profiling aid)
  --ops N               every round runs exactly N operations per contender instead of a time
                        budget (repeatable instruction counts, for callgrind.sh)
  --no-rss              skip the peak-memory measurements
  --testdb, --no-testdb time test-database set-up and migrations (default: on for a full run)
  --write               write docs/benchmarks.md, docs/benchmarks.svg and docs/benchmarks.json
                        (the default for a full run; off when a subset is selected)
  --no-write            print only
  --json PATH           also write every figure of the run as JSON to PATH (rounds, medians,
                        CPU per op, memory, run metadata), for subset runs too
  --compare OLD [NEW]   after the run, compare its medians with those of OLD (a JSON file
                        written by --json); with NEW (or --against NEW), compare the two
                        files and run nothing
  --against NEW         the second file of --compare
  --sizes               print the in-memory sizes of the futures and connection types and exit
  -h, --help            this text

DATABASE_URL selects the server (default postgresql://postgres@127.0.0.1:5432/postgres).
PGDBM_BENCH_VENV overrides where the Python venv is kept (default target/pgdbm-bench-venv).";

#[derive(Debug, Clone)]
pub struct Options {
    pub database_url: String,
    pub rounds: usize,
    /// Counted time per contender per round, for the timed workloads.
    pub duration: Duration,
    /// Fixed operation count for every round (profiling mode).
    pub fixed_ops: Option<u64>,
    pub contenders: Vec<Who>,
    pub workloads: Vec<Workload>,
    pub concurrency: Vec<usize>,
    /// `--conc` was given: run every workload at exactly those levels.
    pub conc_given: bool,
    /// `--json PATH`.
    pub json: Option<PathBuf>,
    /// `--compare OLD`, and the file to compare it with instead of a run.
    pub compare: Option<PathBuf>,
    pub against: Option<PathBuf>,
    pub rss: bool,
    /// Time test-database set-up (and migrations).
    pub testdb: bool,
    pub write: bool,
    /// Print type sizes and exit.
    pub sizes: bool,
    /// `--mux`: the multiplexing benchmark instead of the suite.
    pub mux: bool,
    /// `--rss-child WHO WORKLOAD`: one peak-memory measurement (the suite runs itself).
    pub rss_child: Option<(String, String)>,
}

fn list<T>(v: &str, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|k| parse(k.trim()).ok_or_else(|| format!("unknown {what} {k:?}")))
        .collect()
}

pub fn parse() -> Result<Options, String> {
    let mut quick = false;
    let mut duration: Option<f64> = None;
    let mut rounds: Option<usize> = None;
    let mut fixed_ops = None;
    let mut contenders = Who::ALL.to_vec();
    let mut workloads = Workload::ALL.to_vec();
    let mut concurrency = vec![1, 16, 64];
    let (mut rss, mut write, mut sizes, mut subset) = (true, None, false, false);
    let mut mux = false;
    let mut testdb = None;
    let mut rss_child = None;
    let (mut conc_given, mut json, mut compare, mut against) = (false, None, None, None);
    let mut args = std::env::args().skip(1).peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{what} needs a value"))
        };
        match name.as_str() {
            "--quick" => quick = true,
            "--sizes" => sizes = true,
            "--mux" => {
                mux = true;
                subset = true;
            }
            "--no-rss" => rss = false,
            "--testdb" => testdb = Some(true),
            "--no-testdb" => testdb = Some(false),
            "--write" => write = Some(true),
            "--no-write" => write = Some(false),
            "--rss-child" => {
                let who = value("--rss-child")?;
                rss_child = Some((who, value("--rss-child")?));
            }
            "--duration-secs" => {
                let v = value("--duration-secs")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--duration-secs: {v:?} is not a number"))?;
                if !(secs > 0.0 && secs < 3600.0) {
                    return Err("--duration-secs must be in (0, 3600)".into());
                }
                duration = Some(secs);
            }
            "--rounds" => {
                let v = value("--rounds")?;
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => rounds = Some(n),
                    _ => return Err(format!("--rounds: {v:?} is not a count of at least 1")),
                }
            }
            "--ops" => {
                let v = value("--ops")?;
                match v.parse::<u64>() {
                    Ok(n) if n > 0 => fixed_ops = Some(n),
                    _ => return Err(format!("--ops: {v:?} is not a count of at least 1")),
                }
            }
            "--workload" | "--workloads" => {
                workloads = list(&value("--workload")?, "workload", Workload::from_key)?;
                subset = true;
            }
            "--contenders" | "--side" => {
                contenders = list(&value("--contenders")?, "contender", Who::from_key)?;
                subset = true;
            }
            "--conc" | "--concurrency" => {
                let v = value("--conc")?;
                concurrency = list(&v, "concurrency level", |c| {
                    c.parse().ok().filter(|n| (1..=64).contains(n))
                })?;
                subset = true;
                conc_given = true;
            }
            "--json" => json = Some(PathBuf::from(value("--json")?)),
            "--compare" => {
                let old = PathBuf::from(value("--compare")?);
                let second = inline.is_none();
                compare = Some(old);
                if second {
                    if let Some(new) = args.next_if(|a| !a.starts_with('-')) {
                        against = Some(PathBuf::from(new));
                    }
                }
            }
            "--against" => against = Some(PathBuf::from(value("--against")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if against.is_some() && compare.is_none() {
        return Err("--against needs --compare OLD".into());
    }
    Ok(Options {
        database_url: std::env::var("DATABASE_URL")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "postgresql://postgres@127.0.0.1:5432/postgres".into()),
        rounds: rounds.unwrap_or(match (quick, mux) {
            (true, _) => 2,
            (false, true) => 3,
            (false, false) => 5,
        }),
        duration: Duration::from_secs_f64(duration.unwrap_or(match (quick, mux) {
            (true, _) => 0.3,
            (false, true) => 1.5,
            (false, false) => 1.0,
        })),
        fixed_ops,
        contenders,
        workloads,
        concurrency,
        conc_given,
        json,
        compare,
        against,
        rss,
        testdb: testdb.unwrap_or(!subset && fixed_ops.is_none()),
        write: write.unwrap_or(!subset && fixed_ops.is_none()),
        sizes,
        mux,
        rss_child,
    })
}

/// Where the report goes: `docs/` at the workspace root.
pub fn docs_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs"))
}
