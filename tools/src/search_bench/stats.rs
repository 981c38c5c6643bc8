//! The statistics the harness reports: quantiles, a two-objective hypervolume and the
//! Mann–Whitney U test.

use statrs::distribution::{ContinuousCDF, Normal};

/// The `q` quantile (0..=1) by linear interpolation between order statistics; NaN when empty.
/// Infinite values sort last and propagate when the quantile lands on them.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    if lo == hi || v[lo] == v[hi] {
        return v[lo];
    }
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

pub fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// The area dominated by `points` (both objectives minimised) and bounded by `reference`.
pub fn hypervolume_2d(points: &[(f64, f64)], reference: (f64, f64)) -> f64 {
    let mut p: Vec<(f64, f64)> =
        points.iter().copied().filter(|&(x, y)| x < reference.0 && y < reference.1).collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut area = 0.0;
    let mut best_y = reference.1;
    for (x, y) in p {
        if y < best_y {
            area += (reference.0 - x) * (best_y - y);
            best_y = y;
        }
    }
    area
}

/// A two-sided Mann–Whitney U test of `a` against `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// U of `a`: how often a value of `a` exceeds one of `b` (ties count one half).
    pub u: f64,
    /// The normal approximation's z, with the tie correction; negative when `a` tends lower.
    pub z: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Mann–Whitney U with average ranks for ties and the normal approximation (with continuity and
/// tie corrections), as `scipy.stats.mannwhitneyu(a, b, method="asymptotic")` computes it.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> MannWhitney {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let mut all: Vec<(f64, usize)> = a.iter().map(|&x| (x, 0)).chain(b.iter().map(|&x| (x, 1))).collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let mut ranks = vec![0.0; n];
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for r in ranks.iter_mut().take(j + 1).skip(i) {
            *r = rank;
        }
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let r1: f64 = all.iter().zip(&ranks).filter(|((_, g), _)| *g == 0).map(|(_, r)| r).sum();
    let u = r1 - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let total = n1 + n2;
    let var = n1 * n2 / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if var <= 0.0 || n1 == 0.0 || n2 == 0.0 {
        return MannWhitney { u, z: 0.0, p: 1.0 };
    }
    let diff = u - mean;
    // Continuity correction towards the mean.
    let z = (diff - 0.5 * diff.signum()) / var.sqrt();
    let normal = Normal::standard();
    let p = (2.0 * (1.0 - normal.cdf(z.abs()))).min(1.0);
    MannWhitney { u, z, p }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(median(&v), 2.5);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.25) - 1.75).abs() < 1e-12);
        assert_eq!(median(&[1.0, f64::INFINITY, f64::INFINITY]), f64::INFINITY);
    }

    #[test]
    fn hypervolume_counts_only_the_dominated_area_once() {
        // Two points and a dominated third: 2×1 + 1×1 = 3 against (3, 3).
        let hv = hypervolume_2d(&[(1.0, 2.0), (2.0, 1.0), (2.5, 2.5)], (3.0, 3.0));
        assert!((hv - 3.0).abs() < 1e-12, "{hv}");
        assert_eq!(hypervolume_2d(&[(4.0, 0.0)], (3.0, 3.0)), 0.0);
    }

    #[test]
    fn mann_whitney_matches_scipy() {
        // scipy 1.17 `mannwhitneyu(a, b, method="asymptotic")`: U = 0, p = 0.012185780355344813;
        // with ties ([1,2,2,3], [2,3,4,5]): U = 2.5, p = 0.1366582477381475.
        let t = mann_whitney(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!(t.u, 0.0);
        assert!((t.p - 0.012_185_780_355_344_813).abs() < 1e-9, "{t:?}");
        assert!(t.z < 0.0);
        let t = mann_whitney(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 4.0, 5.0]);
        assert_eq!(t.u, 2.5);
        assert!((t.p - 0.136_658_247_738_147_5).abs() < 1e-9, "{t:?}");
    }
}
