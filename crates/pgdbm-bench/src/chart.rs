//! The charts. The suite's: one panel per concurrency level, a group of bars per workload,
//! each bar a contender's median throughput relative to raw tokio-postgres (log scale, 1 =
//! raw). The multiplexing benchmark's: ops/s against the added latency, a line per contender.

use std::path::Path;

use plotters::prelude::*;

use crate::contender::Who;
use crate::mux::{Results, LATENCIES, SIDES};
use crate::results::Report;
use crate::BoxError;

/// In the order of `Who::ALL` (a test checks that every contender has one).
const COLOURS: [RGBColor; 10] = [
    RGBColor(0xd6, 0x27, 0x28), // pgdbm-rs
    RGBColor(0xf0, 0x8a, 0x8a), // pgdbm-rs serde
    RGBColor(0x8c, 0x1a, 0x1a), // pgdbm-rs traced
    RGBColor(0xe3, 0x77, 0xc2), // pgdbm-rs monitor
    RGBColor(0xbc, 0xbd, 0x22), // pgdbm-rs reset always
    RGBColor(0x1f, 0x77, 0xb4), // tokio-postgres
    RGBColor(0x2c, 0xa0, 0x2c), // deadpool
    RGBColor(0x94, 0x67, 0xbd), // sqlx
    RGBColor(0xff, 0x7f, 0x0e), // Python
    RGBColor(0x7f, 0x7f, 0x7f), // pgbench
];
const PANEL_HEIGHT: u32 = 330;
const WIDTH: u32 = 1280;
const LOW: f64 = 0.01;
const HIGH: f64 = 4.0;

fn colour(who: Who) -> RGBColor {
    COLOURS[Who::ALL.iter().position(|w| *w == who).unwrap_or(0)]
}

pub fn draw(report: &Report, path: &Path) -> Result<(), BoxError> {
    let mut concs: Vec<usize> = report.outcomes.iter().map(|o| o.conc).collect();
    concs.dedup();
    let who: Vec<Who> = Who::ALL
        .into_iter()
        .filter(|w| report.outcomes.iter().any(|o| o.median(*w).is_some()))
        .collect();
    let height = PANEL_HEIGHT * concs.len().max(1) as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((concs.len().max(1), 1));
    for (panel, &conc) in panels.iter().zip(&concs) {
        let cases: Vec<_> = report.outcomes.iter().filter(|o| o.conc == conc).collect();
        let n = cases.len() as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("concurrency {conc}: throughput relative to raw tokio-postgres"),
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..n, (LOW..HIGH).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("× raw")
            .y_label_formatter(&|v| format!("{v}"))
            .draw()?;
        let width = 0.84 / who.len() as f64;
        for (j, &c) in who.iter().enumerate() {
            let bars: Vec<Rectangle<(f64, f64)>> = cases
                .iter()
                .enumerate()
                .filter_map(|(i, o)| {
                    let r = o.ratio(c, Who::Raw)?.clamp(LOW, HIGH);
                    let x = i as f64 + 0.08 + j as f64 * width;
                    Some(Rectangle::new(
                        [(x, LOW), (x + width, r)],
                        colour(c).filled(),
                    ))
                })
                .collect();
            let series = chart.draw_series(bars)?;
            if conc == concs[0] {
                series.label(c.label()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour(c).filled())
                });
            }
        }
        // 1 = raw tokio-postgres.
        chart.draw_series(LineSeries::new(
            [(0.0, 1.0), (n, 1.0)],
            BLACK.stroke_width(1),
        ))?;
        let label = ("sans-serif", 12).into_font().color(&BLACK);
        for (i, o) in cases.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, LOW));
            panel.draw(&Text::new(
                o.workload.key(),
                (x - 4 * o.workload.key().len() as i32, y + 8),
                label.clone(),
            ))?;
        }
        if conc == concs[0] {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// In the order of `mux::SIDES`: pgdbm multiplexed in reds, exclusive in blues, the others in
/// the suite's colours. The exclusive pools are drawn dashed.
const MUX_COLOURS: [RGBColor; 7] = [
    RGBColor(0xd6, 0x27, 0x28), // pgdbm-rs mux 4
    RGBColor(0xff, 0x7f, 0x0e), // pgdbm-rs mux 8
    RGBColor(0x9e, 0xc5, 0xe8), // pgdbm-rs 4
    RGBColor(0x4a, 0x90, 0xc8), // pgdbm-rs 8
    RGBColor(0x10, 0x3f, 0x7a), // pgdbm-rs 64
    RGBColor(0x2c, 0xa0, 0x2c), // deadpool-pg 64
    RGBColor(0x94, 0x67, 0xbd), // sqlx 0.9 64
];

/// Median ops/s of every multiplexing-benchmark contender against the one-way latency added
/// (log scale), one line per contender.
pub fn draw_mux(results: &Results, path: &Path) -> Result<(), BoxError> {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let medians: Vec<f64> = results.cells.iter().filter_map(|c| c.median()).collect();
    let low = medians.iter().copied().fold(f64::INFINITY, f64::min);
    let high = medians.iter().copied().fold(0.0, f64::max);
    if medians.is_empty() || low <= 0.0 {
        return Err("no throughput to draw".into());
    }
    let (low, high) = (low / 1.5, high * 1.5);
    let right = ms(LATENCIES[LATENCIES.len() - 1]);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "point select, {} callers: ops/s against latency added each way",
                crate::mux::CALLERS
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.05 * right..1.05 * right, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("added one-way latency, ms (0 = loopback, no proxy)")
        .y_desc("ops/s")
        .x_labels(6)
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| {
            if *v >= 1e3 {
                format!("{}k", v / 1e3)
            } else {
                format!("{v}")
            }
        })
        .draw()?;
    for (side, colour) in SIDES.iter().zip(MUX_COLOURS) {
        let points: Vec<(f64, f64)> = LATENCIES
            .iter()
            .filter_map(|l| Some((ms(*l), results.median(side.key, *l)?)))
            .collect();
        let style = colour.stroke_width(if side.multiplexing { 3 } else { 2 });
        let series = if side.multiplexing {
            chart.draw_series(LineSeries::new(points.clone(), style))?
        } else {
            chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?
        };
        series
            .label(side.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(3)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_contender_has_a_colour() {
        assert_eq!(super::COLOURS.len(), super::Who::ALL.len());
        assert_eq!(super::MUX_COLOURS.len(), super::SIDES.len());
    }
}
