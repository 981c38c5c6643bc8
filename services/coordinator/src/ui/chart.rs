//! Plot geometry for the UI's SVG charts: linear scales with round tick values, and the chart
//! models the templates draw (every coordinate computed here, every mark written by a template).

/// Plot area inside an SVG of `WIDTH × HEIGHT`, with room for axis labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Frame {
    pub const fn new(width: f64, height: f64) -> Self {
        Self { width, height, left: 58.0, right: 16.0, top: 14.0, bottom: 40.0 }
    }

    pub fn x0(&self) -> f64 {
        self.left
    }

    pub fn x1(&self) -> f64 {
        self.width - self.right
    }

    pub fn y0(&self) -> f64 {
        self.height - self.bottom
    }

    pub fn y1(&self) -> f64 {
        self.top
    }

    /// Centre of the plot area (for empty-chart captions).
    pub fn cx(&self) -> String {
        px((self.x0() + self.x1()) / 2.0)
    }

    pub fn cy(&self) -> String {
        px((self.y0() + self.y1()) / 2.0)
    }

    pub fn x_label_y(&self) -> String {
        px(self.height - 6.0)
    }

    pub fn plot_width(&self) -> String {
        px(self.x1() - self.x0())
    }

    pub fn plot_height(&self) -> String {
        px(self.y0() - self.y1())
    }
}

/// A linear map from data `[d0, d1]` to pixels `[r0, r1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Scale {
    /// A scale over `lo..=hi` widened to round tick values; a single value gets a margin.
    pub fn nice(lo: f64, hi: f64, r0: f64, r1: f64) -> Self {
        let (lo, hi) = if !lo.is_finite() || !hi.is_finite() {
            (0.0, 1.0)
        } else if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo - pad, hi + pad)
        } else {
            (lo, hi)
        };
        let step = tick_step(lo, hi, 6);
        Self { d0: (lo / step).floor() * step, d1: (hi / step).ceil() * step, r0, r1 }
    }

    pub fn map(&self, v: f64) -> f64 {
        if self.d1 == self.d0 {
            return self.r0;
        }
        self.r0 + (v - self.d0) * (self.r1 - self.r0) / (self.d1 - self.d0)
    }

    /// Tick values inside the domain, with labels.
    pub fn ticks(&self) -> Vec<Tick> {
        let step = tick_step(self.d0, self.d1, 6);
        let decimals = decimals_for(step);
        let first = (self.d0 / step).ceil() as i64;
        let last = (self.d1 / step).floor() as i64;
        (first..=last)
            .map(|i| {
                let v = i as f64 * step;
                Tick { pos: px(self.map(v)), label: format!("{v:.decimals$}") }
            })
            .collect()
    }
}

/// A round step (1, 2 or 5 × 10ⁿ) giving about `count` ticks over `lo..hi`.
pub fn tick_step(lo: f64, hi: f64, count: u32) -> f64 {
    let raw = (hi - lo).abs() / f64::from(count.max(1));
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let residual = raw / magnitude;
    let nice = if residual <= 1.0 {
        1.0
    } else if residual <= 2.0 {
        2.0
    } else if residual <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn decimals_for(step: f64) -> usize {
    if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize }
}

/// A pixel coordinate as SVG wants it: one decimal.
pub fn px(v: f64) -> String {
    format!("{v:.1}")
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub pos: String,
    pub label: String,
}

/// Axes of a chart: the frame and both scales' ticks and titles.
#[derive(Debug, Clone)]
pub struct Axes {
    pub frame: Frame,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub x_title: String,
    pub y_title: String,
}

impl Axes {
    pub fn new(frame: Frame, x: &Scale, y: &Scale, x_title: &str, y_title: &str) -> Self {
        Self {
            frame,
            x_ticks: x.ticks(),
            y_ticks: y.ticks(),
            x_title: x_title.to_owned(),
            y_title: y_title.to_owned(),
        }
    }

    pub fn x0(&self) -> String {
        px(self.frame.x0())
    }

    pub fn x1(&self) -> String {
        px(self.frame.x1())
    }

    pub fn y0(&self) -> String {
        px(self.frame.y0())
    }

    pub fn y1(&self) -> String {
        px(self.frame.y1())
    }

    pub fn y_tick_x(&self) -> String {
        px(self.frame.x0() - 6.0)
    }

    pub fn x_tick_y(&self) -> String {
        px(self.frame.y0() + 16.0)
    }
}

/// Two scales over the extent of `points` (plus `extra_x` values that must be visible, such as
/// a budget line) inside `frame`.
pub fn scales_for(frame: &Frame, points: &[(f64, f64)], extra_x: &[f64]) -> (Scale, Scale) {
    let xs = points.iter().map(|p| p.0).chain(extra_x.iter().copied()).filter(|v| v.is_finite());
    let ys = points.iter().map(|p| p.1).filter(|v| v.is_finite());
    let (xlo, xhi) = extent(xs);
    let (ylo, yhi) = extent(ys);
    (Scale::nice(xlo, xhi, frame.x0(), frame.x1()), Scale::nice(ylo, yhi, frame.y0(), frame.y1()))
}

fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// An SVG `points` attribute for a polyline through `points` (already in pixels).
pub fn polyline(points: impl IntoIterator<Item = (f64, f64)>) -> String {
    let mut out = String::new();
    for (x, y) in points {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("{x:.1},{y:.1}"));
    }
    out
}

/// A staircase through `(x, y)` data points: each value holds until the next one, as a
/// best-so-far curve does, extended to `x_end`.
pub fn staircase(points: &[(f64, f64)], x_end: f64, x: &Scale, y: &Scale) -> String {
    let mut out = Vec::with_capacity(points.len() * 2 + 1);
    for (i, &(px_, py)) in points.iter().enumerate() {
        if i > 0 {
            out.push((x.map(px_), y.map(points[i - 1].1)));
        }
        out.push((x.map(px_), y.map(py)));
    }
    if let Some(&(_, last)) = points.last() {
        out.push((x.map(x_end), y.map(last)));
    }
    polyline(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_values_inside_the_domain() {
        assert_eq!(tick_step(0.0, 100.0, 6), 20.0);
        assert_eq!(tick_step(7.0, 8.0, 6), 0.2);
        let s = Scale::nice(7.03, 7.98, 0.0, 100.0);
        assert!((s.d0 - 7.0).abs() < 1e-9 && (s.d1 - 8.0).abs() < 1e-9, "{s:?}");
        let labels: Vec<String> = s.ticks().into_iter().map(|t| t.label).collect();
        assert_eq!(labels, ["7.0", "7.2", "7.4", "7.6", "7.8", "8.0"]);
    }

    #[test]
    fn a_scale_maps_its_domain_onto_its_range_reversed_or_not() {
        let y = Scale { d0: 0.0, d1: 10.0, r0: 300.0, r1: 20.0 };
        assert_eq!(y.map(0.0), 300.0);
        assert_eq!(y.map(10.0), 20.0);
        assert_eq!(y.map(5.0), 160.0);
    }

    #[test]
    fn a_single_value_still_gets_a_usable_scale() {
        let s = Scale::nice(5.0, 5.0, 0.0, 100.0);
        assert!(s.d0 < 5.0 && s.d1 > 5.0, "{s:?}");
        let z = Scale::nice(f64::INFINITY, f64::NEG_INFINITY, 0.0, 100.0);
        assert!(z.d0 < z.d1);
    }

    #[test]
    fn a_staircase_holds_each_value_until_the_next() {
        let x = Scale { d0: 0.0, d1: 10.0, r0: 0.0, r1: 10.0 };
        let y = Scale { d0: 0.0, d1: 10.0, r0: 0.0, r1: 10.0 };
        assert_eq!(staircase(&[(1.0, 9.0), (4.0, 5.0)], 6.0, &x, &y), "1.0,9.0 4.0,9.0 4.0,5.0 6.0,5.0");
    }
}
