//! A small SVG line chart for the benchmark results: a few named series of (x, y) points,
//! optionally on a log-scaled x axis, with ticks and a legend. No dependencies, so the
//! plots are rebuilt wherever the bench runs.

use std::fmt::Write as _;

/// One line of a chart.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// The chart's labels and scales.
pub(crate) struct Chart<'a> {
    pub(crate) title: &'a str,
    pub(crate) x_label: &'a str,
    pub(crate) y_label: &'a str,
    pub(crate) log_x: bool,
    /// A horizontal dashed line, such as a latency threshold, with its label.
    pub(crate) threshold: Option<(f64, &'a str)>,
    /// The top of the y axis: larger values are drawn at the top, open (hollow) and said
    /// so in the title, so one runaway point does not flatten every other line.
    pub(crate) y_cap: Option<f64>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

pub(crate) fn line_chart(chart: &Chart<'_>, series: &[Series]) -> String {
    let points = series.iter().flat_map(|s| s.points.iter().copied());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0f64);
    for (x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    if let Some((y, _)) = chart.threshold {
        y_max = y_max.max(y);
    }
    if x_min > x_max {
        (x_min, x_max) = (1.0, 10.0);
    }
    if chart.log_x {
        x_min = x_min.max(1e-9);
    }
    if x_max <= x_min {
        x_max = x_min * 10.0;
    }
    let clipped = chart.y_cap.is_some_and(|cap| y_max > cap);
    if let Some(cap) = chart.y_cap {
        y_max = y_max.min(cap);
    }
    let y_max = nice_ceiling(y_max.max(1e-9));
    let scale_x = |x: f64| {
        let t = if chart.log_x {
            (x.max(x_min).ln() - x_min.ln()) / (x_max.ln() - x_min.ln())
        } else {
            (x - x_min) / (x_max - x_min)
        };
        LEFT + t * (WIDTH - LEFT - RIGHT)
    };
    let scale_y = |y: f64| HEIGHT - BOTTOM - (y.min(y_max) / y_max) * (HEIGHT - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        LEFT,
        escape(&if clipped {
            format!(
                "{} (points above {} drawn hollow at the top)",
                chart.title,
                number(y_max)
            )
        } else {
            chart.title.to_owned()
        })
    );
    // Axes.
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let _ = writeln!(
        svg,
        r##"<path d="M{x0} {y0} V{y1} H{x1}" fill="none" stroke="#333"/>"##
    );
    for i in 0..=5 {
        let y = y_max * f64::from(i) / 5.0;
        let py = scale_y(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" x2="{x1}" y1="{py:.1}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            py + 4.0,
            number(y)
        );
    }
    for x in x_ticks(x_min, x_max, chart.log_x) {
        let px = scale_x(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{y1}" y2="{}" stroke="#333"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y1 + 5.0,
            y1 + 18.0,
            number(x)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        HEIGHT - 18.0,
        escape(chart.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (y0 + y1) / 2.0,
        escape(chart.y_label)
    );
    if let Some((y, label)) = chart.threshold {
        let py = scale_y(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" x2="{x1}" y1="{py:.1}" y2="{py:.1}" stroke="#888" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" fill="#666">{}</text>"##,
            x1 - 4.0,
            py - 5.0,
            escape(label)
        );
    }
    for (n, s) in series.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", scale_x(x), scale_y(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for &(x, y) in &s.points {
            let fill = if y > y_max { "white" } else { colour };
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{fill}" stroke="{colour}"/>"#,
                scale_x(x),
                scale_y(y)
            );
        }
        let ly = TOP + 10.0 + 20.0 * n as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{:.1}" width="14" height="4" fill="{colour}"/><text x="{}" y="{:.1}">{}</text>"#,
            x1 + 16.0,
            ly - 4.0,
            x1 + 36.0,
            ly + 2.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * power)
}

fn x_ticks(min: f64, max: f64, log: bool) -> Vec<f64> {
    if log {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powf(min.log10().floor());
        while decade <= max {
            for m in [1.0, 2.0, 5.0] {
                let t = decade * m;
                if t >= min && t <= max {
                    ticks.push(t);
                }
            }
            decade *= 10.0;
        }
        ticks
    } else {
        // Round steps (1, 2 or 5 times a power of ten), about five of them.
        let step = nice_ceiling((max - min) / 5.0);
        let mut ticks = Vec::new();
        let mut tick = (min / step).ceil() * step;
        while tick <= max + step * 1e-9 {
            ticks.push(tick);
            tick += step;
        }
        ticks
    }
}

/// A compact label: 1.5k, 20k, 1.2M, or the number itself.
fn number(v: f64) -> String {
    let trim = |s: String| s.trim_end_matches(".0").to_owned();
    if v >= 1e6 {
        trim(format!("{:.1}", v / 1e6)) + "M"
    } else if v >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        trim(format!("{v:.1}"))
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_each_series_and_point() {
        let svg = line_chart(
            &Chart {
                title: "p99 <latency>",
                x_label: "offered events/s",
                y_label: "ms",
                log_x: true,
                threshold: Some((50.0, "50 ms")),
                y_cap: Some(500.0),
            },
            &[
                Series {
                    name: "tideway".into(),
                    points: vec![(5.0, 1.0), (50.0, 3.0), (500.0, 80.0)],
                },
                Series {
                    name: "nchan".into(),
                    points: vec![(5.0, 2.0), (50.0, 60.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("p99 &lt;latency&gt;"));
        assert!(svg.contains(">nchan<") && svg.contains(">50 ms<"));
        assert!(!svg.contains("hollow"));
        let capped = line_chart(
            &Chart {
                title: "t",
                x_label: "x",
                y_label: "y",
                log_x: false,
                threshold: None,
                y_cap: Some(100.0),
            },
            &[Series {
                name: "s".into(),
                points: vec![(1.0, 10.0), (2.0, 2_000.0)],
            }],
        );
        assert!(capped.contains("points above 100 drawn hollow"));
        assert_eq!(capped.matches(r#"fill="white" stroke"#).count(), 1);
    }

    #[test]
    fn scales_are_readable() {
        assert_eq!(nice_ceiling(73.0), 100.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(2000.0), 2000.0);
        assert_eq!(x_ticks(5.0, 3200.0, true)[..3], [5.0, 10.0, 20.0]);
        assert_eq!(
            x_ticks(0.0, 19_800.0, false),
            [0.0, 5000.0, 10000.0, 15000.0]
        );
        assert_eq!(number(1_500.0), "1.5k");
        assert_eq!(number(2_000_000.0), "2M");
        assert_eq!(number(2.5), "2.5");
    }
}
