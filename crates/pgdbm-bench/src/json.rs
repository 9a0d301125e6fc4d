//! Every figure of a run as JSON (`docs/benchmarks.json`, `--json PATH`), and `--compare`: the
//! medians of two runs side by side.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::contender::Who;
use crate::report::Report;
use crate::tenants::{status_kb, Memory};
use crate::BoxError;

#[derive(Debug, Serialize, Deserialize)]
pub struct Doc {
    pub meta: Meta,
    /// One per (workload, concurrency, contender).
    pub cases: Vec<Case>,
    /// Peak RSS of a fresh process per (contender, memory workload).
    #[serde(default)]
    pub rss: Vec<RssFigure>,
    #[serde(default)]
    pub testdb: Vec<TestdbFigure>,
    /// The multiplexing benchmark (`--mux`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mux: Option<crate::mux_report::MuxDoc>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Meta {
    /// When the run ended, RFC 3339.
    pub date: String,
    pub server_version: String,
    pub cores: usize,
    /// `git rev-parse HEAD` of the checkout the suite was built in.
    pub git_commit: Option<String>,
    /// Whether that checkout had uncommitted changes.
    pub git_dirty: Option<bool>,
    pub rounds: usize,
    pub duration_secs: f64,
    pub minutes: f64,
    /// The command line, after the program name.
    pub args: Vec<String>,
    /// Peak RSS (`VmHWM`) of the benchmark process over the whole run, KiB.
    pub client_peak_rss_kb: Option<u64>,
    /// Contenders that could not run, with the reason.
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Case {
    pub workload: String,
    pub name: String,
    pub conc: usize,
    pub contender: String,
    pub label: String,
    pub unit: String,
    /// The rate of every round, in `unit` (`null`: not a number).
    pub rounds: Vec<Option<f64>>,
    pub median: Option<f64>,
    /// This process's CPU µs per operation over all rounds (in-process contenders only).
    pub cpu_us_per_op: Option<f64>,
    /// Server KiB per connection and client RSS at the end of each round (tenant workloads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<Memory>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RssFigure {
    pub contender: String,
    pub workload: String,
    pub baseline_kb: u64,
    pub peak_kb: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TestdbFigure {
    pub name: String,
    pub create_ms: f64,
    pub fastest_ms: f64,
    pub slowest_ms: f64,
    pub cleanup_ms: f64,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn git(args: &[&str]) -> Option<std::process::Output> {
    std::process::Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .ok()
}

impl Doc {
    pub fn of(report: &Report) -> Doc {
        let commit = git(&["rev-parse", "HEAD"])
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .filter(|o| o.status.success())
            .map(|o| !o.stdout.is_empty());
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let mut cases = Vec::new();
        for o in &report.outcomes {
            for (who, rounds) in &o.rates {
                cases.push(Case {
                    workload: o.workload.key().into(),
                    name: o.workload.name().into(),
                    conc: o.conc,
                    contender: who.key().into(),
                    label: who.label().into(),
                    unit: o.workload.unit().into(),
                    rounds: rounds.iter().map(|r| finite(*r)).collect(),
                    median: o.median(*who).and_then(finite),
                    cpu_us_per_op: o.cpu(*who).and_then(finite),
                    memory: o
                        .memory
                        .iter()
                        .find(|(w, _)| w == who)
                        .map(|(_, m)| m.clone())
                        .unwrap_or_default(),
                });
            }
        }
        Doc {
            meta: Meta {
                date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                server_version: report.server_version.clone(),
                cores: report.cores,
                git_commit: commit,
                git_dirty: dirty,
                rounds: report.rounds,
                duration_secs: report.duration.as_secs_f64(),
                minutes: report.minutes,
                args: std::env::args().skip(1).collect(),
                client_peak_rss_kb: status_kb("self", "VmHWM:"),
                missing: report.missing.clone(),
            },
            cases,
            rss: report
                .rss
                .iter()
                .map(|r| RssFigure {
                    contender: r.who.key().into(),
                    workload: r.workload.into(),
                    baseline_kb: r.baseline_kb,
                    peak_kb: r.peak_kb,
                })
                .collect(),
            testdb: report
                .testdb
                .iter()
                .map(|w| TestdbFigure {
                    name: w.name.into(),
                    create_ms: ms(w.create),
                    fastest_ms: ms(w.fastest),
                    slowest_ms: ms(w.slowest),
                    cleanup_ms: ms(w.cleanup),
                })
                .collect(),
            mux: report.mux.as_ref().map(crate::mux_report::MuxDoc::of),
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), BoxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Doc, BoxError> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    }

    fn median(&self, workload: &str, conc: usize, contender: &str) -> Option<f64> {
        self.cases
            .iter()
            .find(|c| c.workload == workload && c.conc == conc && c.contender == contender)?
            .median
    }

    fn describe(&self) -> String {
        let commit = self.meta.git_commit.as_deref().unwrap_or("?");
        let dirty = if self.meta.git_dirty == Some(true) {
            "+changes"
        } else {
            ""
        };
        format!(
            "{} commit {}{dirty}, PostgreSQL {}, {} rounds of {:.2} s",
            self.meta.date,
            &commit[..commit.len().min(12)],
            self.meta.server_version,
            self.meta.rounds,
            self.meta.duration_secs
        )
    }
}

fn rate(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1e4 => format!("{:.1} k", v / 1e3),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "–".into(),
    }
}

fn change(old: Option<f64>, new: Option<f64>) -> String {
    match (old, new) {
        (Some(o), Some(n)) if o > 0.0 => format!("{:+.1} %", (n / o - 1.0) * 100.0),
        _ => "–".into(),
    }
}

/// Prints, for every case in both, the old and new median and the change; then pgdbm/raw.
pub fn compare(old: &Doc, new: &Doc) {
    println!("\ncompare  old: {}", old.describe());
    println!("         new: {}", new.describe());
    let old_keys: HashMap<(&str, usize, &str), ()> = old
        .cases
        .iter()
        .map(|c| ((c.workload.as_str(), c.conc, c.contender.as_str()), ()))
        .collect();
    let head: Vec<String> = ["case", "conc", "contender", "unit", "old", "new", "change"]
        .map(String::from)
        .to_vec();
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for c in &new.cases {
        if !old_keys.contains_key(&(c.workload.as_str(), c.conc, c.contender.as_str())) {
            continue;
        }
        let before = old.median(&c.workload, c.conc, &c.contender);
        rows.push(vec![
            c.name.clone(),
            c.conc.to_string(),
            c.label.clone(),
            c.unit.clone(),
            rate(before),
            rate(c.median),
            change(before, c.median),
        ]);
        if c.contender == Who::Pgdbm.key() {
            let ratio = |d: &Doc| {
                Some(
                    d.median(&c.workload, c.conc, Who::Pgdbm.key())?
                        / d.median(&c.workload, c.conc, Who::Raw.key())?,
                )
            };
            if let (Some(o), Some(n)) = (ratio(old), ratio(new)) {
                ratios.push(vec![
                    c.name.clone(),
                    c.conc.to_string(),
                    format!("{o:.3}"),
                    format!("{n:.3}"),
                    format!("{:+.3}", n - o),
                ]);
            }
        }
    }
    let only_old = old.cases.len() - rows.len();
    let only_new = new.cases.len() - rows.len();
    println!();
    if rows.is_empty() {
        println!("no case is in both");
    } else {
        crate::report::print_text(&head, &rows);
    }
    if !ratios.is_empty() {
        println!();
        let head: Vec<String> = ["pgdbm/raw", "conc", "old", "new", "change"]
            .map(String::from)
            .to_vec();
        crate::report::print_text(&head, &ratios);
    }
    if only_old + only_new > 0 {
        println!("\n{only_old} case(s) only in the old run, {only_new} only in the new one");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::Outcome;
    use crate::workload::Workload;

    #[test]
    fn a_run_reads_back_and_compares() {
        let report = Report {
            server_version: "15".into(),
            cores: 2,
            rounds: 2,
            duration: std::time::Duration::from_secs(1),
            minutes: 0.1,
            missing: Vec::new(),
            outcomes: vec![Outcome {
                workload: Workload::Pipe10,
                conc: 1,
                rates: vec![
                    (Who::Pgdbm, vec![10.0, f64::NAN]),
                    (Who::Raw, vec![20.0, 30.0]),
                ],
                cpu_us: vec![(Who::Raw, 5.0)],
                memory: Vec::new(),
            }],
            rss: Vec::new(),
            testdb: Vec::new(),
            mux: None,
        };
        let doc = Doc::of(&report);
        let text = serde_json::to_string(&doc).unwrap();
        let back: Doc = serde_json::from_str(&text).unwrap();
        assert_eq!(back.cases.len(), 2);
        assert_eq!(back.cases[0].rounds, vec![Some(10.0), None]);
        assert_eq!(back.cases[0].median, Some(10.0));
        assert_eq!(back.cases[1].median, Some(25.0));
        assert_eq!(back.cases[1].cpu_us_per_op, Some(5.0));
        assert_eq!(back.median("pipe10", 1, "raw"), Some(25.0));
        compare(&doc, &back);
    }
}
