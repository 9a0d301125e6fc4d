//! Command-line options.

use std::time::Duration;

use crate::workload::Workload;

pub const USAGE: &str = "\
pgdbm-bench: pgdbm against raw tokio-postgres (prepared statements), side by side.

usage: cargo run --release -p pgdbm-bench -- [options]

  --quick               short smoke run (3 rounds of 0.3 s per side; under ~30 s)
  --duration-secs N     seconds per side per round for the timed workloads (default 1.5),
                        run as slices of ~0.25 s (0.1 s with --quick) alternating the sides
  --rounds N            rounds per (workload, concurrency) (default 5, quick 3)
  --workload LIST       comma-separated subset of: point,value,fetch1k,fetch100k,typed1k
  --conc LIST           comma-separated concurrency levels (default 1,16)
  --ops N               every round runs exactly N operations per side, in one slice, instead
                        of a time budget (repeatable instruction counts, for callgrind)
  --side pgdbm|raw      run only one side (profiling aid; no ratios)
  --max-queries N       pgdbm's max_queries (connection recycled after N queries; 0 = never);
                        default: the library default
  --sizes               print the in-memory sizes of the futures and connection types and exit
  -h, --help            this text

DATABASE_URL selects the server (default postgresql://postgres@127.0.0.1:5432/postgres).";

#[derive(Debug, Clone)]
pub struct Options {
    pub database_url: String,
    pub quick: bool,
    pub rounds: usize,
    /// Per side per round, for the timed workloads.
    pub duration: Duration,
    /// Slices per side per round, for the timed workloads.
    pub slices: u32,
    /// Per side, before the rounds of each workload.
    pub warmup: Duration,
    /// Fixed operation count for every round (profiling mode).
    pub fixed_ops: Option<u64>,
    /// Which contenders run: [pgdbm, raw].
    pub run_side: [bool; 2],
    pub workloads: Vec<Workload>,
    pub concurrency: Vec<usize>,
    /// Print type sizes and exit.
    pub sizes: bool,
    /// Overrides pgdbm's `max_queries`.
    pub max_queries: Option<u64>,
}

impl Options {
    /// Slices per side per round for the counted (100k-row) workload; a slice is `conc`
    /// operations (one per task). Per round: 4 ops at conc 1, 32 at conc 16 (2 and 16 quick).
    pub fn counted_slices(&self, conc: usize) -> u32 {
        match (self.quick, conc) {
            (true, 1) => 2,
            (true, _) => 1,
            (false, 1) => 4,
            (false, _) => 2,
        }
    }

    /// Duration of one timed slice.
    pub fn slice_duration(&self) -> Duration {
        self.duration / self.slices
    }
}

pub fn parse() -> Result<Options, String> {
    let mut quick = false;
    let mut duration: Option<f64> = None;
    let mut rounds: Option<usize> = None;
    let mut fixed_ops = None;
    let mut run_side = [true, true];
    let mut sizes = false;
    let mut max_queries = None;
    let mut workloads = Workload::ALL.to_vec();
    let mut concurrency = vec![1, 16];
    let mut args = std::env::args().skip(1);
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
            "--max-queries" => {
                let v = value("--max-queries")?;
                max_queries = Some(
                    v.parse()
                        .map_err(|_| format!("--max-queries: {v:?} is not a count"))?,
                );
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
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("--rounds: {v:?} is not a count"))?;
                if n == 0 {
                    return Err("--rounds must be at least 1".into());
                }
                rounds = Some(n);
            }
            "--ops" => {
                let v = value("--ops")?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--ops: {v:?} is not a count"))?;
                if n == 0 {
                    return Err("--ops must be at least 1".into());
                }
                fixed_ops = Some(n);
            }
            "--workload" | "--workloads" => {
                let v = value("--workload")?;
                workloads = v
                    .split(',')
                    .map(|k| {
                        Workload::from_key(k.trim())
                            .ok_or_else(|| format!("unknown workload {k:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--conc" | "--concurrency" => {
                let v = value("--conc")?;
                concurrency = v
                    .split(',')
                    .map(|c| match c.trim().parse::<usize>() {
                        Ok(n) if (1..=64).contains(&n) => Ok(n),
                        _ => Err(format!("--conc: {c:?} is not a level in 1..=64")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--side" => {
                run_side = match value("--side")?.as_str() {
                    "pgdbm" => [true, false],
                    "raw" => [false, true],
                    "both" => [true, true],
                    other => return Err(format!("--side: {other:?} is not pgdbm, raw or both")),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    let duration = duration.unwrap_or(if quick { 0.3 } else { 1.5 });
    let slices = (duration / if quick { 0.1 } else { 0.25 }).round().max(1.0) as u32;
    let warmup = if quick {
        0.1
    } else {
        (duration / 3.0).min(0.5)
    };
    Ok(Options {
        database_url: std::env::var("DATABASE_URL")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "postgresql://postgres@127.0.0.1:5432/postgres".into()),
        quick,
        rounds: rounds.unwrap_or(if quick { 3 } else { 5 }),
        duration: Duration::from_secs_f64(duration),
        slices,
        warmup: Duration::from_secs_f64(warmup),
        fixed_ops,
        run_side,
        workloads,
        concurrency,
        sizes,
        max_queries,
    })
}
