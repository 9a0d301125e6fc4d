//! The multiplexing benchmark's results: the table (ops/s and server sessions per contender
//! and latency), the targets as ratios, the "Multiplexing" section of
//! `docs/benchmarks.md`, its chart `docs/benchmarks-mux.svg`, and the figures as JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mux::{latency_name, Results, CALLERS, LATENCIES, SIDES};
use crate::results::{markdown_table, print_text};
use crate::BoxError;

/// The section's heading in `docs/benchmarks.md`.
pub const HEADING: &str = "## Multiplexing";
/// The chart, beside `benchmarks.md`.
pub const CHART: &str = "benchmarks-mux.svg";
/// The command that writes the section.
pub const COMMAND: &str = "cargo run --release -p pgdbm-bench -- --mux --write";

/// One target: `a` over `b` at `latency`, at least `need`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub name: String,
    pub a: String,
    pub b: String,
    pub latency_ms: f64,
    pub need: f64,
    /// Median over median (`null`: a side did not run).
    pub got: Option<f64>,
    /// The lowest and highest ratio of rounds run side by side.
    pub lowest: Option<f64>,
    pub highest: Option<f64>,
    pub met: bool,
}

pub fn targets(r: &Results) -> Vec<Ratio> {
    let two = LATENCIES[2];
    let zero = LATENCIES[0];
    [
        ("pgdbm-mux4", "pgdbm-4", two, 5.0),
        ("pgdbm-mux4", "pgdbm-64", two, 1.0),
        ("pgdbm-mux4", "pgdbm-4", zero, 0.95),
    ]
    .into_iter()
    .map(|(a, b, latency, need)| {
        let got = r.ratio(a, b, latency);
        let name = if need < 1.0 {
            format!(
                "{a} within {:.0} % of {b} or better, {}",
                (1.0 - need) * 100.0,
                latency_name(latency)
            )
        } else {
            format!(
                "{a} at least {need}x {b}, {} each way",
                latency_name(latency)
            )
        };
        Ratio {
            name,
            a: a.into(),
            b: b.into(),
            latency_ms: latency.as_secs_f64() * 1e3,
            need,
            got: got.map(|g| g.0),
            lowest: got.map(|g| g.1),
            highest: got.map(|g| g.2),
            met: got.is_some_and(|g| g.0 >= need),
        }
    })
    .collect()
}

fn rate(v: f64) -> String {
    if v >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// One row per contender: for each latency its ops/s (± half the spread of the rounds) and
/// the most server sessions seen.
pub fn table(r: &Results) -> (Vec<String>, Vec<Vec<String>>) {
    let mut head = vec![format!("point select @{CALLERS}"), "pool".to_owned()];
    for l in LATENCIES {
        head.push(format!("{} ops/s", latency_name(l)));
        head.push("sessions".to_owned());
    }
    let mut rows = Vec::new();
    for side in SIDES {
        let mode = if side.multiplexing {
            "multiplexed"
        } else {
            "exclusive"
        };
        let mut row = vec![side.label.to_owned(), format!("{mode}, {}", side.size)];
        for l in LATENCIES {
            let cell = r.cell(side.key, l);
            row.push(match cell.and_then(|c| Some((c.median()?, c.spread()))) {
                Some((m, Some(s))) if cell.is_some_and(|c| c.rates.len() > 1) => {
                    format!("{} ±{:.0}%", rate(m), s * 50.0)
                }
                Some((m, _)) => rate(m),
                None => "–".into(),
            });
            row.push(
                cell.and_then(|c| c.sessions())
                    .map_or("–".into(), |s| s.to_string()),
            );
        }
        rows.push(row);
    }
    (head, rows)
}

/// The multiplexing contenders' calls on shared connections, out of all their calls.
fn shared_table(r: &Results) -> (Vec<String>, Vec<Vec<String>>) {
    let mut head = vec!["calls on shared connections (connections shared)".to_owned()];
    head.extend(LATENCIES.iter().map(|l| latency_name(*l)));
    let rows = SIDES
        .iter()
        .filter(|s| s.multiplexing)
        .map(|side| {
            let mut row = vec![side.label.to_owned()];
            for l in LATENCIES {
                row.push(match r.cell(side.key, l) {
                    Some(c) if !c.shared_calls.is_empty() => {
                        let shared: u64 = c.shared_calls.iter().sum();
                        let all: u64 = c.all_ops.iter().sum();
                        let conns = c.shared_conns.iter().max().copied().unwrap_or(0);
                        format!(
                            "{shared} of {all}, {:.1} % ({conns})",
                            shared as f64 * 100.0 / all as f64
                        )
                    }
                    _ => "–".into(),
                });
            }
            row
        })
        .collect();
    (head, rows)
}

fn round_trips(r: &Results) -> String {
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let direct = r
        .round_trips
        .iter()
        .find(|(l, _)| l.is_zero())
        .map(|(_, d)| ms(d));
    let parts: Vec<String> = r
        .round_trips
        .iter()
        .map(|(l, rtt)| match (l.is_zero(), direct) {
            (true, _) => format!("{:.2} ms on loopback", ms(rtt)),
            (false, Some(d)) => format!(
                "{:.2} ms with {} each way ({:.2} ms more each way than loopback)",
                ms(rtt),
                latency_name(*l),
                (ms(rtt) - d) / 2.0
            ),
            (false, None) => format!("{:.2} ms with {} each way", ms(rtt), latency_name(*l)),
        })
        .collect();
    format!(
        "One point select on one tokio-postgres connection, one after the other (median of 100), \
         took {}",
        parts.join(", ")
    )
}

/// What 64 callers waiting one round trip per select can reach at most, per latency, and how
/// near the multiplexed and the 64-connection contenders came.
fn ceilings(r: &Results) -> Option<String> {
    let mut parts = Vec::new();
    for (l, rtt) in r.round_trips.iter().filter(|(l, _)| !l.is_zero()) {
        let ceiling = CALLERS as f64 / rtt.as_secs_f64();
        let reached: Vec<String> = ["pgdbm-mux4", "pgdbm-mux8", "pgdbm-64", "deadpool-64"]
            .iter()
            .filter_map(|k| Some(format!("{k} {:.0} %", r.median(k, *l)? / ceiling * 1e2)))
            .collect();
        parts.push(format!(
            "{} ops/s at {} ({})",
            rate(ceiling),
            latency_name(*l),
            reached.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "{CALLERS} callers that each wait one round trip per select run at most about \
             {CALLERS} / round trip: {}",
            parts.join("; ")
        )
    })
}

/// The target, the ratio and whether it was met (`**not met**` in Markdown).
fn verdict(t: &Ratio, markdown: bool) -> String {
    let got = match (t.got, t.lowest, t.highest) {
        (Some(g), Some(lo), Some(hi)) => format!("{g:.2} (rounds {lo:.2}–{hi:.2})"),
        _ => "not measured".into(),
    };
    let met = match (t.met, markdown) {
        (true, _) => "met",
        (false, true) => "**not met**",
        (false, false) => "NOT MET",
    };
    format!("{}: {got}, needs {}: {met}", t.name, t.need)
}

pub fn print(r: &Results) {
    println!(
        "\nmultiplexing: {} rounds of {:.2} s per contender and latency",
        r.rounds,
        r.duration.as_secs_f64()
    );
    let (head, rows) = table(r);
    print_text(&head, &rows);
    println!();
    let (head, rows) = shared_table(r);
    print_text(&head, &rows);
    println!("{}.", round_trips(r));
    if let Some(line) = ceilings(r) {
        println!("{line}.");
    }
    println!();
    for t in targets(r) {
        println!("{}", verdict(&t, false));
    }
}

/// The "Multiplexing" section of `docs/benchmarks.md`, from its heading to the end.
pub fn markdown(r: &Results, cores: usize, server_version: &str) -> String {
    let mut md = format!("{HEADING}\n\n");
    let _ = writeln!(
        md,
        "Written by `{COMMAND}` ({} rounds of {:.1} s per contender and latency, contenders \
         rotated from round to round; medians). {cores} cores, PostgreSQL {server_version} on the \
         same machine over loopback: the client, the proxy and the server compete for the same \
         CPU.\n",
        r.rounds,
        r.duration.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "{CALLERS} callers run point selects (the suite's `point`: one row by primary key, random \
         ids) as fast as they can. *pgdbm-rs mux N* is pgdbm with `multiplexing: true` and \
         `max_connections` N: the callers' `fetch_one`s share the pooled connections, pipelined. \
         *pgdbm-rs N* is the default pool of N connections, each call holding one for its round \
         trip; deadpool-postgres (`prepare_cached`) and sqlx (`fetch_optional`) get 64 \
         connections. \"loopback\" connects to the server directly (no proxy); \"+0.5 ms\" and \
         \"+2 ms\" go through pgdbm's `testing::LatencyProxy` in the benchmark process, set to add \
         that much each way (what it really added is below the table). Every pool opens all its \
         connections before its slice. *sessions* is the most server sessions of the contender seen in \
         `pg_stat_activity` (by `application_name`, sampled every 25 ms while it ran).\n"
    );
    let _ = writeln!(
        md,
        "![ops/s against added latency]({CHART})\n\nSolid lines: multiplexed; dashed: a \
         connection per call in flight.\n"
    );
    let (head, rows) = table(r);
    md.push_str(&markdown_table(&head, &rows));
    let _ = writeln!(
        md,
        "\n{}. The proxy delays each chunk with tokio's timer \
         (millisecond resolution) and runs in the benchmark process: it adds more than it is \
         asked to, so the latencies name its setting and the round trips say what it gave.\n",
        round_trips(r)
    );
    if let Some(line) = ceilings(r) {
        let _ = writeln!(md, "{line}.\n");
    }
    let _ = writeln!(
        md,
        "The multiplexing pools' own count (`get_pool_stats().shared_calls`, read before each \
         pool closed) against every call of the slice, warm-in included:\n"
    );
    let (head, rows) = shared_table(r);
    md.push_str(&markdown_table(&head, &rows));
    let _ = writeln!(md, "\nThe targets:\n");
    for t in targets(r) {
        let _ = writeln!(md, "- {}", verdict(&t, true));
    }
    let _ = writeln!(
        md,
        "\nOn loopback nothing waits on the network: there the figures measure the CPU a call \
         costs on a machine whose {cores} cores the client and the server share, so the loopback \
         ratio says more about this machine than about a server on another host."
    );
    md
}

/// `doc` with its "Multiplexing" section replaced by `section` (inserted before "How it is
/// measured", or at the end, when it has none).
pub fn splice(doc: &str, section: &str) -> String {
    let section = format!("{}\n", section.trim_end());
    let mut out = doc.to_owned();
    if let Some((start, end)) = find(doc) {
        out.replace_range(start..end, &section);
        return out;
    }
    match doc.find("\n## How it is measured") {
        Some(at) => out.insert_str(at + 1, &format!("{section}\n")),
        None => {
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
            }
            out.push_str(&section);
        }
    }
    out
}

/// Where the section is in `doc`: from its heading to the next heading of its level (the
/// blank line before that stays), or the end.
fn find(doc: &str) -> Option<(usize, usize)> {
    let (start, end) = section_span(doc, &format!("{HEADING}\n"))?;
    // Keep the blank line before the next heading outside the section.
    let end = if end < doc.len() && doc[..end].ends_with("\n\n") {
        end - 1
    } else {
        end
    };
    Some((start, end))
}

/// Where the section of `doc` whose heading line starts with `heading` is: from the heading to
/// the next `## ` heading (the blank lines before it included), or the end.
pub fn section_span(doc: &str, heading: &str) -> Option<(usize, usize)> {
    let start = if doc.starts_with(heading) {
        0
    } else {
        doc.find(&format!("\n{heading}"))? + 1
    };
    let body = start + heading.len();
    let end = doc[body..]
        .find("\n## ")
        .map_or(doc.len(), |i| body + i + 1);
    Some((start, end))
}

/// The section as it is in `doc`, if it has one.
pub fn section_of(doc: &str) -> Option<&str> {
    find(doc).map(|(a, b)| &doc[a..b])
}

/// Writes the chart and the section into `dir/benchmarks.md` (the rest of the file stays).
pub fn write(dir: &Path, r: &Results, cores: usize, server_version: &str) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    crate::chart::draw_mux(r, &dir.join(CHART))?;
    let path = dir.join("benchmarks.md");
    let doc = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".into(),
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    std::fs::write(&path, splice(&doc, &markdown(r, cores, server_version)))?;
    Ok(())
}

/// Every figure of the run, for `--json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MuxDoc {
    pub callers: usize,
    pub rounds: usize,
    pub duration_secs: f64,
    /// Per added one-way latency, the measured round trip of one sequential point select.
    pub round_trips: Vec<RoundTrip>,
    pub cells: Vec<MuxCell>,
    pub targets: Vec<Ratio>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoundTrip {
    pub latency_ms: f64,
    pub round_trip_ms: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MuxCell {
    pub contender: String,
    pub label: String,
    pub library: String,
    pub connections: usize,
    pub multiplexing: bool,
    pub latency_ms: f64,
    /// ops/s per round.
    pub rounds: Vec<f64>,
    pub median: Option<f64>,
    /// The most server sessions seen, per round.
    pub sessions: Vec<i64>,
    /// Calls on shared connections per round (multiplexing only).
    pub shared_calls: Vec<u64>,
    /// The most connections shared at once, per round (multiplexing only).
    pub shared_connections: Vec<usize>,
    /// Every call per round, warm-in included.
    pub all_calls: Vec<u64>,
}

impl MuxDoc {
    pub fn of(r: &Results) -> MuxDoc {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        MuxDoc {
            callers: CALLERS,
            rounds: r.rounds,
            duration_secs: r.duration.as_secs_f64(),
            round_trips: r
                .round_trips
                .iter()
                .map(|(l, rtt)| RoundTrip {
                    latency_ms: ms(*l),
                    round_trip_ms: ms(*rtt),
                })
                .collect(),
            cells: r
                .cells
                .iter()
                .map(|c| MuxCell {
                    contender: c.side.key.into(),
                    label: c.side.label.into(),
                    library: c.side.who.key().into(),
                    connections: c.side.size,
                    multiplexing: c.side.multiplexing,
                    latency_ms: ms(c.latency),
                    rounds: c.rates.clone(),
                    median: c.median(),
                    sessions: c.sessions.clone(),
                    shared_calls: c.shared_calls.clone(),
                    shared_connections: c.shared_conns.clone(),
                    all_calls: c.all_ops.clone(),
                })
                .collect(),
            targets: targets(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mux::Cell;

    fn results() -> Results {
        let mut cells = Vec::new();
        for side in SIDES {
            for (i, latency) in LATENCIES.into_iter().enumerate() {
                let base = if side.multiplexing { 10_000.0 } else { 1_000.0 };
                cells.push(Cell {
                    side,
                    latency,
                    rates: vec![base / (i + 1) as f64, base * 1.1 / (i + 1) as f64],
                    sessions: vec![side.size as i64, side.size as i64],
                    shared_calls: if side.multiplexing {
                        vec![5, 6]
                    } else {
                        vec![]
                    },
                    shared_conns: if side.multiplexing {
                        vec![4, 4]
                    } else {
                        vec![]
                    },
                    all_ops: vec![5, 6],
                });
            }
        }
        Results {
            rounds: 2,
            duration: Duration::from_secs(1),
            cells,
            round_trips: LATENCIES
                .iter()
                .map(|l| (*l, *l * 2 + Duration::from_micros(50)))
                .collect(),
        }
    }

    #[test]
    fn targets_and_tables() {
        let r = results();
        let t = targets(&r);
        assert_eq!(t.len(), 3);
        assert!((t[0].got.unwrap() - 10.0).abs() < 1e-9);
        assert!(t.iter().all(|t| t.met));
        let (head, rows) = table(&r);
        assert_eq!(head.len(), 2 + 2 * LATENCIES.len());
        assert_eq!(rows.len(), SIDES.len());
        assert_eq!(rows[0][3], "4");
        let md = markdown(&r, 2, "15");
        assert!(md.starts_with(HEADING));
        assert!(md.contains("not met") || md.contains(": met"));
        let doc = MuxDoc::of(&r);
        let back: MuxDoc = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(back.cells.len(), SIDES.len() * LATENCIES.len());
    }

    #[test]
    fn the_section_is_replaced_in_place_or_inserted() {
        let doc = "# B\n\n## A\n\na\n\n## How it is measured\n\nx\n\n## Z\n\nz\n";
        let once = splice(doc, "## Multiplexing\n\none\n");
        assert_eq!(
            once,
            "# B\n\n## A\n\na\n\n## Multiplexing\n\none\n\n## How it is measured\n\nx\n\n## Z\n\nz\n"
        );
        assert_eq!(section_of(&once), Some("## Multiplexing\n\none\n"));
        let twice = splice(&once, "## Multiplexing\n\ntwo\n");
        assert_eq!(twice, once.replace("one", "two"));
        assert_eq!(
            splice("# B\n", "## Multiplexing\n"),
            "# B\n\n## Multiplexing\n"
        );
        let last = splice(
            "# B\n\n## Multiplexing\n\nold\n",
            "## Multiplexing\n\nnew\n",
        );
        assert_eq!(last, "# B\n\n## Multiplexing\n\nnew\n");
    }
}
