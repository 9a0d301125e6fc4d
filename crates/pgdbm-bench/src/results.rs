//! The results of a run as data (the report, the targets) and the plain tables they are
//! printed as; `report` and `chart` present them.

use crate::rss::Rss;
use crate::suite::Outcome;
use std::fmt::Write as _;
use std::time::Duration;

pub struct Report {
    pub server_version: String,
    pub cores: usize,
    pub rounds: usize,
    pub duration: Duration,
    pub minutes: f64,
    /// Contenders that could not run, with the reason.
    pub missing: Vec<String>,
    pub outcomes: Vec<Outcome>,
    pub rss: Vec<Rss>,
    pub testdb: Vec<crate::testdb::Way>,
    /// The multiplexing benchmark (`--mux`), which runs instead of the suite.
    pub mux: Option<crate::mux::Results>,
}

/// One target of the issue, judged case by case.
pub struct Target {
    pub name: &'static str,
    /// (case, achieved ratio, needed ratio)
    pub cases: Vec<(String, f64, f64)>,
}

impl Target {
    pub fn met(&self) -> bool {
        self.cases.iter().all(|(_, got, need)| got >= need)
    }
}

pub fn print_text(head: &[String], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = width[i] - c.chars().count();
                if i == 0 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(head));
    println!(
        "{}",
        "-".repeat(width.iter().sum::<usize>() + 2 * (width.len() - 1))
    );
    for r in rows {
        println!("{}", line(r));
    }
}

pub fn markdown_table(head: &[String], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", head.join(" | "));
    out.push('|');
    for i in 0..head.len() {
        out.push_str(if i == 0 { "---|" } else { "---:|" });
    }
    out.push('\n');
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out
}
