//! An SVG of median best-so-far curves with interquartile bands, one colour per algorithm.

use std::fmt::Write;

use super::stats::quantile;

/// One algorithm's curves: for each run, the value after each evaluation.
#[derive(Debug)]
pub struct Series<'a> {
    pub name: &'a str,
    pub runs: Vec<Vec<f64>>,
}

const COLOURS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"];

/// The plot: x = evaluations (1..=n), y = the value (clipped to `y_range`), a dashed line at
/// `target` when given.
pub fn best_so_far_svg(
    title: &str,
    series: &[Series<'_>],
    y_range: (f64, f64),
    target: Option<f64>,
) -> String {
    let (w, h) = (720.0, 420.0);
    let (left, right, top, bottom) = (64.0, 170.0, 34.0, 46.0);
    let n = series.iter().flat_map(|s| s.runs.iter().map(Vec::len)).max().unwrap_or(1).max(2);
    let (y0, y1) = y_range;
    let x_of = |i: usize| left + (i as f64 - 1.0) / (n as f64 - 1.0) * (w - left - right);
    let y_of = |v: f64| {
        let v = if v.is_finite() { v.clamp(y0, y1) } else { y1 };
        top + (y1 - v) / (y1 - y0) * (h - top - bottom)
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>
"#,
        (w - right + left) / 2.0,
        escape(title)
    );
    // Axes and ticks.
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for k in 0..=5 {
        let v = y0 + (y1 - y0) * k as f64 / 5.0;
        let y = y_of(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{y:.1}" x2="{left}" y2="{y:.1}" stroke="#333"/><text x="{}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
            left - 4.0,
            left - 6.0,
            y + 4.0
        );
    }
    for k in 0..=5 {
        let i = 1 + (n - 1) * k / 5;
        let x = x_of(i);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{i}</text>"##,
            h - bottom,
            h - bottom + 4.0,
            h - bottom + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">evaluations</text><text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">best feasible perplexity (median, IQR)</text>"#,
        (w - right + left) / 2.0,
        h - 8.0,
        (h - bottom + top) / 2.0,
        (h - bottom + top) / 2.0
    );
    if let Some(t) = target {
        let y = y_of(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#999" stroke-dasharray="4 3"/><text x="{}" y="{:.1}" fill="#666">within 1 % of best</text>"##,
            w - right,
            w - right + 4.0,
            y + 4.0
        );
    }
    for (s_i, s) in series.iter().enumerate() {
        let colour = COLOURS[s_i % COLOURS.len()];
        let len = s.runs.iter().map(Vec::len).max().unwrap_or(0);
        let at = |i: usize, q: f64| {
            let column: Vec<f64> =
                s.runs.iter().map(|r| r.get(i).or(r.last()).copied().unwrap_or(f64::INFINITY)).collect();
            quantile(&column, q)
        };
        let upper: Vec<String> =
            (0..len).map(|i| format!("{:.1},{:.1}", x_of(i + 1), y_of(at(i, 0.75)))).collect();
        let lower: Vec<String> =
            (0..len).rev().map(|i| format!("{:.1},{:.1}", x_of(i + 1), y_of(at(i, 0.25)))).collect();
        let mid: Vec<String> =
            (0..len).map(|i| format!("{:.1},{:.1}", x_of(i + 1), y_of(at(i, 0.5)))).collect();
        let _ = writeln!(
            svg,
            r#"<polygon points="{} {}" fill="{colour}" fill-opacity="0.12" stroke="none"/>"#,
            upper.join(" "),
            lower.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            mid.join(" ")
        );
        let ly = top + 10.0 + 18.0 * s_i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            w - right + 10.0,
            w - right + 28.0,
            w - right + 32.0,
            ly + 4.0,
            escape(s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
