//! The results: a table per concurrency level, the targets of the issue, peak memory. Printed
//! as text and written as Markdown (`docs/benchmarks.md`) with the chart beside it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::contender::Who;
pub use crate::results::{markdown_table, print_text, Report, Target};
use crate::workload::Workload;
use crate::BoxError;

fn rate(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    fn concurrencies(&self) -> Vec<usize> {
        let mut c: Vec<usize> = self.outcomes.iter().map(|o| o.conc).collect();
        c.dedup();
        c
    }

    fn contenders(&self) -> Vec<Who> {
        Who::ALL
            .into_iter()
            .filter(|w| self.outcomes.iter().any(|o| o.rounds(*w).is_some()))
            .collect()
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut overhead = Target {
            name: "overhead over raw tokio-postgres at most 5 % (pgdbm/raw >= 0.95)",
            cases: Vec::new(),
        };
        let mut pgbench = Target {
            name: "point select at least 0.9x pgbench at 1 and 16 connections",
            cases: Vec::new(),
        };
        let mut python = Target {
            name: "point select at least 3x Python pgdbm",
            cases: Vec::new(),
        };
        let mut many = Target {
            name: "executemany rows/s at least asyncpg's (Python pgdbm)",
            cases: Vec::new(),
        };
        let mut typed = Target {
            name: "typed fetch at least as fast as sqlx query_as",
            cases: Vec::new(),
        };
        for o in &self.outcomes {
            let case = format!("{} @{}", o.workload.name(), o.conc);
            let add = |t: &mut Target, other: Who, need: f64| {
                if let Some(r) = o.ratio(Who::Pgdbm, other) {
                    t.cases.push((case.clone(), r, need));
                }
            };
            add(&mut overhead, Who::Raw, 0.95);
            match o.workload {
                Workload::PointSelect => {
                    if o.conc == 1 || o.conc == 16 {
                        add(&mut pgbench, Who::Pgbench, 0.9);
                    }
                    add(&mut python, Who::Python, 3.0);
                }
                Workload::ExecuteMany => add(&mut many, Who::Python, 1.0),
                Workload::Typed1k | Workload::Typed100k => add(&mut typed, Who::Sqlx, 1.0),
                _ => {}
            }
        }
        let mut all = vec![overhead, pgbench, python, many, typed];
        all.extend(crate::sections::targets(&self.outcomes));
        all
    }

    /// The table of one concurrency level, as rows of cells.
    fn table(&self, conc: usize) -> (Vec<String>, Vec<Vec<String>>) {
        let who = self.contenders();
        let mut head = vec!["workload".to_owned(), "unit".to_owned()];
        head.extend(who.iter().map(|w| w.label().to_owned()));
        head.push("pgdbm/raw (range)".into());
        let mut rows = Vec::new();
        for o in self.outcomes.iter().filter(|o| o.conc == conc) {
            let mut row = vec![o.workload.name().to_owned(), o.workload.unit().to_owned()];
            for &w in &who {
                row.push(match (o.median(w), o.spread(w)) {
                    (Some(m), Some(s)) if o.rounds(w).is_some_and(|r| r.len() > 1) => {
                        format!("{} ±{:.0}%", rate(m), s * 50.0)
                    }
                    (Some(m), _) => rate(m),
                    _ => "–".into(),
                });
            }
            row.push(
                match (
                    o.ratio(Who::Pgdbm, Who::Raw),
                    o.ratio_range(Who::Pgdbm, Who::Raw),
                ) {
                    (Some(r), Some((lo, hi))) => format!("{r:.3} ({lo:.2}–{hi:.2})"),
                    _ => "–".into(),
                },
            );
            rows.push(row);
        }
        (head, rows)
    }

    fn rss_table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let who: Vec<Who> = Who::ALL
            .into_iter()
            .filter(|w| self.rss.iter().any(|r| r.who == *w))
            .collect();
        let mut head = vec!["peak RSS, MiB (growth)".to_owned()];
        head.extend(who.iter().map(|w| w.label().to_owned()));
        let mut rows = Vec::new();
        for w in crate::rss::WORKLOADS {
            let mut row = vec![w.to_owned()];
            for c in &who {
                row.push(
                    match self.rss.iter().find(|r| r.workload == w && r.who == *c) {
                        Some(r) => format!(
                            "{:.1} (+{:.1})",
                            r.peak_kb as f64 / 1024.0,
                            r.peak_kb.saturating_sub(r.baseline_kb) as f64 / 1024.0
                        ),
                        None => "–".into(),
                    },
                );
            }
            rows.push(row);
        }
        (head, rows)
    }

    fn testdb_table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let head = [
            "isolated, migrated test database",
            "create ms (range)",
            "cleanup ms",
            "speed-up",
        ]
        .map(String::from)
        .to_vec();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let fresh = self.testdb.first().map_or(f64::NAN, |w| ms(w.create));
        let rows = self
            .testdb
            .iter()
            .map(|w| {
                vec![
                    w.name.to_owned(),
                    format!(
                        "{:.1} ({:.0}–{:.0})",
                        ms(w.create),
                        ms(w.fastest),
                        ms(w.slowest)
                    ),
                    format!("{:.1}", ms(w.cleanup)),
                    format!("{:.1}×", fresh / ms(w.create)),
                ]
            })
            .collect();
        (head, rows)
    }

    fn setup_line(&self) -> String {
        format!(
            "PostgreSQL {} on the same machine, {} cores; {} rounds per case, {:.2} s counted per \
             contender per timed round (after a warm-in of a tenth of that, 8 s for the tenant \
             workloads); median of the rounds",
            self.server_version,
            self.cores,
            self.rounds,
            self.duration.as_secs_f64()
        )
    }

    pub fn print(&self) {
        if let Some(mux) = &self.mux {
            crate::mux_report::print(mux);
        }
        if self.outcomes.is_empty() {
            return;
        }
        println!();
        println!("{}", self.setup_line());
        for conc in self.concurrencies() {
            let (head, rows) = self.table(conc);
            println!("\nconcurrency {conc}");
            print_text(&head, &rows);
        }
        crate::sections::print(&self.outcomes);
        if !self.rss.is_empty() {
            println!();
            let (head, rows) = self.rss_table();
            print_text(&head, &rows);
        }
        if !self.testdb.is_empty() {
            println!();
            let (head, rows) = self.testdb_table();
            print_text(&head, &rows);
        }
        println!();
        for t in self.targets() {
            if t.cases.is_empty() {
                continue;
            }
            let missed: Vec<String> = t
                .cases
                .iter()
                .filter(|(_, got, need)| got < need)
                .map(|(c, got, _)| format!("{c} ({got:.2})"))
                .collect();
            if missed.is_empty() {
                println!("met     {} ({} cases)", t.name, t.cases.len());
            } else {
                println!("MISSED  {}: {}", t.name, missed.join(", "));
            }
        }
        for m in &self.missing {
            println!("not run: {m}");
        }
    }

    /// Writes `benchmarks.md` and `benchmarks.svg` into `dir`. The sections of the file there
    /// that the suite does not write are kept: "Multiplexing" (written by `--mux --write`) and
    /// the callgrind table (written by hand), at the end.
    pub fn write(&self, dir: &Path) -> Result<(), BoxError> {
        std::fs::create_dir_all(dir)?;
        crate::chart::draw(self, &dir.join("benchmarks.svg"))?;
        let path = dir.join("benchmarks.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut md = match crate::mux_report::section_of(&old) {
            Some(section) => crate::mux_report::splice(&self.markdown(), section),
            None => self.markdown(),
        };
        if let Some(section) = section_at(&old, CALLGRIND_HEADING) {
            if !md.ends_with("\n\n") {
                md.push('\n');
            }
            md.push_str(section.trim_end());
            md.push('\n');
        }
        std::fs::write(path, md)?;
        Ok(())
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Written by `cargo run --release -p pgdbm-bench` (the whole suite, {:.0} minutes). \
             Every figure comes from this one run on one shared, noisy machine, so compare the \
             contenders *within* a row; the ratios are what carries over to other machines.\n",
            self.minutes
        );
        let _ = writeln!(md, "{}.\n", self.setup_line());
        let _ = writeln!(
            md,
            "![throughput relative to raw tokio-postgres](benchmarks.svg)\n"
        );
        let _ = writeln!(md, "## Targets\n");
        for t in self.targets() {
            if t.cases.is_empty() {
                continue;
            }
            let (worst_case, worst, need) = t
                .cases
                .iter()
                .min_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)))
                .expect("not empty");
            let met = t.cases.iter().filter(|(_, g, n)| g >= n).count();
            let (verdict, count) = if t.met() {
                ("met", met)
            } else {
                ("**missed**", t.cases.len() - met)
            };
            let _ = writeln!(
                md,
                "- {}: {verdict} in {count}/{} cases; lowest {worst:.2} (needs {need}) at {worst_case}.",
                t.name,
                t.cases.len()
            );
        }
        for m in &self.missing {
            let _ = writeln!(md, "- not run: {m}");
        }
        for conc in self.concurrencies() {
            let (head, rows) = self.table(conc);
            let _ = writeln!(md, "\n## Concurrency {conc}\n");
            md.push_str(&markdown_table(&head, &rows));
        }
        md.push_str(&crate::sections::markdown(&self.outcomes));
        let cpu_rows: Vec<Vec<String>> = self
            .outcomes
            .iter()
            .filter_map(|o| {
                let (p, r) = (o.cpu(Who::Pgdbm)?, o.cpu(Who::Raw)?);
                Some(vec![
                    o.workload.name().to_owned(),
                    o.conc.to_string(),
                    format!("{p:.2}"),
                    format!("{r:.2}"),
                    format!("{:+.0} %", (p / r - 1.0) * 100.0),
                ])
            })
            .collect();
        if !cpu_rows.is_empty() {
            let _ = writeln!(
                md,
                "\n## Client CPU per operation, pgdbm-rs against raw tokio-postgres\n\n\
                 User and system time of all threads of the benchmark process per operation \
                 (the whole slice, warm-in included; for bulk workloads per task's part), \
                 server time excluded: the client-side cost, much less sensitive to a noisy \
                 machine than throughput.\n"
            );
            let head: Vec<String> = ["workload", "conc", "pgdbm-rs µs", "raw µs", "extra"]
                .map(String::from)
                .to_vec();
            md.push_str(&markdown_table(&head, &cpu_rows));
        }
        if !self.rss.is_empty() {
            let _ = writeln!(
                md,
                "\n## Peak memory\n\nPeak RSS (`VmHWM`) of a fresh process that opens one \
                 connection and runs the workload once; in brackets the growth over its RSS \
                 just before. `stream1m` reads 1,000,000 generated rows one at a time \
                 (pgdbm `fetch_stream`, tokio-postgres `query_raw`, sqlx `fetch`, asyncpg \
                 cursor).\n"
            );
            let (head, rows) = self.rss_table();
            md.push_str(&markdown_table(&head, &rows));
        }
        if !self.testdb.is_empty() {
            let _ = writeln!(
                md,
                "\n## Test databases and migrations\n\nAn isolated database for one test with a \
                 {}-file migration set (tables, indexes, 50 rows each), seven rounds alternating \
                 the three ways, medians. The first row is also the time to apply the migrations \
                 to an empty database; `cargo run --release -p pgdbm-bench --bin testdb` runs \
                 this part alone.\n",
                crate::testdb::FILES
            );
            let (head, rows) = self.testdb_table();
            md.push_str(&markdown_table(&head, &rows));
        }
        md.push_str(METHOD);
        md
    }
}

const METHOD: &str = "
## How it is measured

- All contenders use the same server and the same SQL text. Each opens a pool of exactly
  *concurrency* connections for every slice and closes it afterwards (64 connections for each
  of five contenders at once would not fit in a default `max_connections` of 100). In a timed
  slice every task first runs one operation uncounted (statements get prepared, asyncpg
  introspects types), then the window opens after a warm-in of a tenth of its length (at least
  8 s for the tenant workloads: a fresh pool first prepares their 10,000 texts).
- pgdbm-rs: its public API with default settings (statement cache on). tokio-postgres: one
  dedicated connection per task, statements prepared once. deadpool-postgres: `prepare_cached`
  on every call. sqlx 0.9: `query`, `query_as` with `#[derive(FromRow)]`, `query_scalar`
  (statement cache on). Python pgdbm 0.5.0 on asyncpg: one worker process with an asyncio task
  per connection, installed from PyPI into a venv. pgbench: `-M prepared` with the same SQL as
  a script, `-t` sized to last as long as a slice; its rate excludes connection time.
- *records* are each library's dynamic row (`Record`, `Row`, `PgRow`, a `dict`); *typed* are
  structs (serde for pgdbm-rs, `FromRow` for sqlx, `row.get` by hand for tokio-postgres and
  deadpool, a Pydantic model for Python pgdbm).
- `executemany` writes 10,000 rows of seven columns (bigint, int, text, float8, bool,
  timestamptz, uuid) split across the tasks, each part in one call (one transaction), five
  times per slice: pgdbm-rs sends multi-row `INSERT`s of up to 1,024 rows, tokio-postgres and
  deadpool pipeline single-row inserts (256 in flight), asyncpg batches its own way, sqlx has
  no batch API and inserts row by row. COPY writes 1,000,000 such rows split across the tasks:
  binary COPY everywhere except sqlx, whose COPY takes text. Bulk rows are built before the
  clock starts; the table is truncated before every slice.
- The MagicStack queries are those of github.com/MagicStack/pgbench: `pg_type` with
  (-1, true), `generate_series(1, 1000)`, 100 rows of 1,000-byte `bytea`, 10 rows of
  `int[1000]`.
- `±` is half the spread (max − min) of the rounds over their median; `(range)` is the lowest
  and highest ratio of rounds run side by side.
";

/// The heading of the hand-written callgrind section of `benchmarks.md`.
const CALLGRIND_HEADING: &str = "## Instructions per call (callgrind)";

/// The section of `doc` whose heading starts with `heading`: to the next `## ` heading, or
/// the end.
fn section_at<'d>(doc: &'d str, heading: &str) -> Option<&'d str> {
    crate::mux_report::section_span(doc, heading).map(|(a, b)| &doc[a..b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callgrind_section_is_found_to_the_next_heading_or_the_end() {
        let doc = "# B\n\n## Instructions per call (callgrind), before and after\n\nt\n\n## Next\n";
        assert_eq!(
            section_at(doc, CALLGRIND_HEADING),
            Some("## Instructions per call (callgrind), before and after\n\nt\n\n")
        );
        let last = "# B\n\n## Instructions per call (callgrind)\n\nt\n";
        assert_eq!(
            section_at(last, CALLGRIND_HEADING),
            Some("## Instructions per call (callgrind)\n\nt\n")
        );
        assert_eq!(section_at("# B\n", CALLGRIND_HEADING), None);
    }
}
