//! The chart: one panel per concurrency level, a group of bars per workload, each bar a
//! contender's median throughput relative to raw tokio-postgres (log scale, 1 = raw).

use std::path::Path;

use plotters::prelude::*;

use crate::contender::Who;
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_contender_has_a_colour() {
        assert_eq!(super::COLOURS.len(), super::Who::ALL.len());
    }
}
