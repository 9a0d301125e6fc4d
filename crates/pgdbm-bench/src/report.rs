//! The results table.

use crate::measure::Outcome;

/// Ratio at or above which a row meets the 5 % overhead target.
pub const TARGET: f64 = 0.95;

fn ops(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

pub fn print(outcomes: &[Outcome]) {
    println!();
    println!(
        "{:<18} {:>4} {:>12} {:>12} {:>6}  (range)",
        "workload", "conc", "pgdbm ops/s", "raw ops/s", "ratio"
    );
    println!("{}", "-".repeat(70));
    for o in outcomes {
        let (lo, hi) = o.ratio_range();
        if o.ratio().is_nan() {
            // One side only (--side): no ratio.
            println!(
                "{:<18} {:>4} {:>12} {:>12} {:>6}",
                o.workload.name(),
                o.conc,
                ops(o.pgdbm_median()),
                ops(o.raw_median()),
                "-"
            );
            continue;
        }
        println!(
            "{:<18} {:>4} {:>12} {:>12} {:>6.3}  ({lo:.3}..{hi:.3}){}",
            o.workload.name(),
            o.conc,
            ops(o.pgdbm_median()),
            ops(o.raw_median()),
            o.ratio(),
            if o.ratio() >= TARGET {
                ""
            } else {
                "  <-- over 5 %"
            },
        );
    }
    println!();
    if outcomes.iter().any(|o| o.ratio().is_nan()) {
        return;
    }
    let (ok, over): (Vec<&Outcome>, Vec<&Outcome>) =
        outcomes.iter().partition(|o| o.ratio() >= TARGET);
    let list = |v: &[&Outcome]| {
        v.iter()
            .map(|o| format!("{} @{}", o.workload.name(), o.conc))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "within the 5 % overhead target (ratio >= {TARGET}): {}/{}{}",
        ok.len(),
        outcomes.len(),
        if ok.is_empty() {
            String::new()
        } else {
            format!(": {}", list(&ok))
        }
    );
    if over.is_empty() {
        println!("over the target: none");
    } else {
        println!("over the target: {}", list(&over));
    }
    println!(
        "ratio = median pgdbm ops/s / median raw ops/s; range = min..max of the per-round ratios."
    );
    print_cpu(outcomes);
}

/// The benchmark process's own CPU per operation: the client-side cost of each side, much
/// less sensitive to a noisy machine than throughput.
fn print_cpu(outcomes: &[Outcome]) {
    if outcomes
        .iter()
        .all(|o| o.pgdbm_cpu_us.is_nan() || o.raw_cpu_us.is_nan())
    {
        return;
    }
    println!();
    println!(
        "{:<18} {:>4} {:>12} {:>12} {:>8}",
        "client CPU µs/op", "conc", "pgdbm", "raw", "extra"
    );
    println!("{}", "-".repeat(58));
    for o in outcomes {
        let (p, r) = (o.pgdbm_cpu_us, o.raw_cpu_us);
        println!(
            "{:<18} {:>4} {:>12} {:>12} {:>7.0}%",
            o.workload.name(),
            o.conc,
            cpu(p),
            cpu(r),
            (p / r - 1.0) * 100.0
        );
    }
    println!(
        "(user + system time of all threads of this process, per operation; server time excluded)"
    );
}

fn cpu(us: f64) -> String {
    if us >= 1000.0 {
        format!("{us:.0}")
    } else {
        format!("{us:.2}")
    }
}
