//! `--plot FILE.svg`: latency by percentile, the way HdrHistogram's plotter
//! draws it. The x axis is `1/(1−p)` on a log scale, so 90%, 99%, 99.9%, …
//! are evenly spaced and the tail gets as much room as the median; the y
//! axis is latency on a log scale. One line per run, plus the hiccup
//! meter's line: where an engine's line meets the hiccup line, its latency
//! there is the machine's, not the engine's.
//!
//! SVG only (plotters' SVG backend, no font files): text is written as SVG
//! text and drawn by whatever displays the picture.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Picture size in pixels.
const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;

/// Engine line colours, in run order: strong and far apart on white.
const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// A latency axis label: `100ns`, `1µs`, `10µs`, `1ms`, `1s`.
fn axis_duration(ns: f64) -> String {
    let (value, unit) = match ns {
        ns if ns < 1e3 => (ns, "ns"),
        ns if ns < 1e6 => (ns / 1e3, "µs"),
        ns if ns < 1e9 => (ns / 1e6, "ms"),
        ns => (ns / 1e9, "s"),
    };
    let value = format!("{value:.1}");
    format!("{}{unit}", value.trim_end_matches(".0"))
}

/// One line of the plot.
pub struct Series<'a> {
    pub label: String,
    pub histogram: &'a Histogram<u64>,
    /// Drawn thinner and dashed-looking grey: the machine, not an engine.
    pub is_hiccup: bool,
}

/// The points of one line: (1/(1−p), latency in ns), with the maximum at
/// x = the sample count (the one sample past every percentile).
pub fn points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    if histogram.is_empty() {
        return points;
    }
    let count = histogram.len() as f64;
    for v in histogram.iter_quantiles(5) {
        let quantile = v.quantile_iterated_to();
        let value = v.value_iterated_to().max(1) as f64;
        // Past 1/(1−p) = count, percentiles are all the maximum.
        if quantile < 1.0 && 1.0 / (1.0 - quantile) < count {
            points.push((1.0 / (1.0 - quantile), value));
        }
    }
    points.push((count.max(1.0), histogram.max().max(1) as f64));
    points
}

/// `x = 1/(1−p)` as a percentile label: 1 → `0%`, 10 → `90%`, 1000 → `99.9%`.
pub fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x.max(1.0));
    let decimals = (x.log10().round() as i64 - 2).max(0) as usize;
    format!("{p:.decimals$}%")
}

/// Writes the plot of `series` to `path` as SVG.
pub fn write_svg(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), String> {
    let lines: Vec<(&Series<'_>, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| (s, points(s.histogram)))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    if lines.is_empty() {
        return Err("nothing to plot: no latencies were recorded".into());
    }
    // The next power of ten strictly above `v`: room above the last point.
    let decade_above = |v: f64| 10f64.powf(v.log10().floor() + 1.0);
    let x_max = decade_above(
        lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
            .fold(10.0, f64::max),
    );
    let y_min = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(f64::MAX, f64::min);
    let y_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max);
    let y_min = 10f64.powf(y_min.log10().floor());
    let y_max = decade_above(y_max);
    let fail = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .margin_right(48)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d((1f64..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile (log scale of 1/(1-p))")
        .y_desc("latency")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| axis_duration(*y))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| fail(&e))?;
    let mut engine_index = 0;
    for (s, points) in lines {
        let style = if s.is_hiccup {
            RGBColor(120, 120, 120).stroke_width(2)
        } else {
            engine_index += 1;
            COLORS[(engine_index - 1) % COLORS.len()].stroke_width(3)
        };
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(|e| fail(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_read_as_percentiles() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1_000.0), "99.9%");
        assert_eq!(percentile_label(100_000.0), "99.999%");
    }

    #[test]
    fn latency_axis_labels_are_short() {
        assert_eq!(axis_duration(100.0), "100ns");
        assert_eq!(axis_duration(1_000.0), "1µs");
        assert_eq!(axis_duration(10_000_000.0), "10ms");
        assert_eq!(axis_duration(2_500_000_000.0), "2.5s");
    }

    #[test]
    fn points_rise_and_end_at_the_maximum() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=1_000u64 {
            h.record(v * 1_000).unwrap();
        }
        let points = points(&h);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let &(x, y) = points.last().unwrap();
        assert_eq!(x, 1_000.0);
        assert_eq!(y, h.max() as f64);
    }
}
