//! How well estimates track measurements: rank agreement (Spearman ρ, Kendall τ-b) for ranking
//! candidates, and relative error (MAPE, share within ±5 % and ±10 %) for budgets.
//!
//! Ranks (average ranks for ties) and moments come from `statrs`; it has no rank correlation,
//! so Spearman is Pearson's r of the ranks and Kendall's τ-b is counted pair by pair.

use serde::{Deserialize, Serialize};
use statrs::statistics::{Data, OrderStatistics, RankTieBreaker, Statistics};

/// Fidelity of estimates against measurements.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Pairs with a finite estimate and a finite, positive measurement.
    pub n: usize,
    pub spearman: f64,
    pub kendall_tau: f64,
    /// Mean absolute percentage error, in percent.
    pub mape_pct: f64,
    /// Share (0..=1) of estimates within ±5 % of the measurement.
    pub within_5pct: f64,
    pub within_10pct: f64,
}

/// Relative error of one estimate, signed: `(estimated − measured) / measured`.
pub fn relative_error(estimated: f64, measured: f64) -> f64 {
    (estimated - measured) / measured
}

/// Fidelity of `estimated[i]` against `measured[i]`; pairs that are not finite (or measured ≤ 0)
/// are left out. Correlations are NaN with fewer than 2 pairs or no variation.
pub fn fidelity(estimated: &[f64], measured: &[f64]) -> Fidelity {
    let (est, mea): (Vec<f64>, Vec<f64>) = estimated
        .iter()
        .zip(measured)
        .filter(|(e, m)| e.is_finite() && m.is_finite() && **m > 0.0)
        .map(|(e, m)| (*e, *m))
        .unzip();
    let n = est.len();
    let errors: Vec<f64> = est.iter().zip(&mea).map(|(e, m)| relative_error(*e, *m).abs()).collect();
    let share = |limit: f64| {
        if n == 0 {
            f64::NAN
        } else {
            errors.iter().filter(|e| **e <= limit + 1e-12).count() as f64 / n as f64
        }
    };
    Fidelity {
        n,
        spearman: spearman(&est, &mea),
        kendall_tau: kendall_tau_b(&est, &mea),
        mape_pct: if n == 0 { f64::NAN } else { 100.0 * errors.iter().sum::<f64>() / n as f64 },
        within_5pct: share(0.05),
        within_10pct: share(0.10),
    }
}

/// Spearman's ρ: Pearson's r of average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    if x.len() != y.len() || x.len() < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let rx = Data::new(x.to_vec()).ranks(RankTieBreaker::Average);
    let ry = Data::new(y.to_vec()).ranks(RankTieBreaker::Average);
    let cov = rx.iter().covariance(ry.iter());
    cov / (rx.iter().std_dev() * ry.iter().std_dev())
}

/// Kendall's τ-b (ties in either variable adjust the denominator).
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> f64 {
    if x.len() != y.len() || x.len() < 2 {
        return f64::NAN;
    }
    let (mut concordant, mut discordant, mut ties_x, mut ties_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let dx = (x[i] - x[j]).partial_cmp(&0.0);
            let dy = (y[i] - y[j]).partial_cmp(&0.0);
            match (dx, dy) {
                (Some(std::cmp::Ordering::Equal), Some(std::cmp::Ordering::Equal)) => {}
                (Some(std::cmp::Ordering::Equal), _) => ties_x += 1,
                (_, Some(std::cmp::Ordering::Equal)) => ties_y += 1,
                (Some(a), Some(b)) if a == b => concordant += 1,
                (Some(_), Some(_)) => discordant += 1,
                _ => return f64::NAN,
            }
        }
    }
    let n0 = (concordant + discordant + ties_x) as f64;
    let n1 = (concordant + discordant + ties_y) as f64;
    (concordant - discordant) as f64 / (n0 * n1).sqrt()
}

/// Rank agreement of paired values with percentile bootstrap intervals: how alike two
/// budgets (or two seeds, or estimate and measurement) rank the same items.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankAgreement {
    /// Pairs with both values finite.
    pub n: usize,
    pub spearman: f64,
    /// 95 % percentile bootstrap interval of Spearman's ρ.
    pub spearman_low: f64,
    pub spearman_high: f64,
    pub kendall_tau: f64,
    pub kendall_low: f64,
    pub kendall_high: f64,
}

/// Spearman ρ and Kendall τ-b of `x` against `y` (non-finite pairs left out), each with a 95 %
/// percentile interval from `resamples` bootstrap resamples of the pairs, drawn from `seed` (the
/// same inputs and seed give the same intervals). A resample whose correlation is undefined (all
/// one value) is skipped. NaN throughout with fewer than 3 pairs.
pub fn rank_agreement(x: &[f64], y: &[f64], resamples: usize, seed: u64) -> RankAgreement {
    let (x, y): (Vec<f64>, Vec<f64>) =
        x.iter().zip(y).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(a, b)| (*a, *b)).unzip();
    let n = x.len();
    let nan = RankAgreement {
        n,
        spearman: f64::NAN,
        spearman_low: f64::NAN,
        spearman_high: f64::NAN,
        kendall_tau: f64::NAN,
        kendall_low: f64::NAN,
        kendall_high: f64::NAN,
    };
    if n < 3 {
        return nan;
    }
    // SplitMix64: a few lines, portable, enough for drawing resample indices.
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (mut rhos, mut taus) = (Vec::with_capacity(resamples), Vec::with_capacity(resamples));
    let (mut bx, mut by) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..resamples {
        for k in 0..n {
            let i = (next() % n as u64) as usize;
            bx[k] = x[i];
            by[k] = y[i];
        }
        let (rho, tau) = (spearman(&bx, &by), kendall_tau_b(&bx, &by));
        if rho.is_finite() && tau.is_finite() {
            rhos.push(rho);
            taus.push(tau);
        }
    }
    let interval = |v: Vec<f64>| {
        if v.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let mut d = Data::new(v);
        (d.quantile(0.025), d.quantile(0.975))
    };
    let (spearman_low, spearman_high) = interval(rhos);
    let (kendall_low, kendall_high) = interval(taus);
    RankAgreement {
        n,
        spearman: spearman(&x, &y),
        spearman_low,
        spearman_high,
        kendall_tau: kendall_tau_b(&x, &y),
        kendall_low,
        kendall_high,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_agreement_brackets_the_point_estimate_and_is_deterministic() {
        // 40 pairs: y follows x with a small deterministic wobble that swaps a few neighbours.
        let x: Vec<f64> = (0..40).map(f64::from).collect();
        let y: Vec<f64> =
            x.iter().map(|v| v + if (*v as u64).is_multiple_of(3) { 1.5 } else { 0.0 }).collect();
        let a = rank_agreement(&x, &y, 500, 7);
        assert_eq!(a.n, 40);
        assert!((a.spearman - spearman(&x, &y)).abs() < 1e-12);
        assert!((a.kendall_tau - kendall_tau_b(&x, &y)).abs() < 1e-12);
        assert!(a.spearman > 0.95 && a.spearman < 1.0, "{a:?}");
        assert!(a.spearman_low <= a.spearman && a.spearman <= a.spearman_high, "{a:?}");
        assert!(a.kendall_low <= a.kendall_tau && a.kendall_tau <= a.kendall_high, "{a:?}");
        assert!(a.spearman_high - a.spearman_low > 0.0);
        assert_eq!(a, rank_agreement(&x, &y, 500, 7));
        // Independent values: the interval straddles zero.
        let z: Vec<f64> = (0..40).map(|i| f64::from((i * 17 + 5) % 40)).collect();
        let b = rank_agreement(&x, &z, 500, 7);
        assert!(b.spearman_low < 0.0 && b.spearman_high > 0.0, "{b:?}");
        // Too few pairs, and non-finite pairs left out.
        assert!(rank_agreement(&[1.0, 2.0], &[1.0, 2.0], 100, 1).spearman.is_nan());
        assert_eq!(rank_agreement(&[1.0, 2.0, 3.0, f64::NAN], &[1.0, 2.0, 3.0, 4.0], 10, 1).n, 3);
    }

    #[test]
    fn rank_correlations_match_hand_computed_values() {
        // Ranks x = 1..5, y = [2, 1, 4, 3, 5]: Σd² = 4, ρ = 1 − 6·4/(5·24) = 0.8.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [20.0, 10.0, 40.0, 30.0, 50.0];
        assert!((spearman(&x, &y) - 0.8).abs() < 1e-12);
        // 10 pairs, 2 discordant: τ = (8 − 2)/10 = 0.6.
        assert!((kendall_tau_b(&x, &y) - 0.6).abs() < 1e-12);
        assert!((spearman(&x, &x.map(|v| -v)) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn ties_use_average_ranks_and_tau_b() {
        // y ranks with a tie: [1, 2.5, 2.5, 4]; Pearson of ranks vs 1..4 = 0.9486832980505138
        // (Σ (rx−2.5)(ry−2.5) = 4.5, sqrt(5 · 4.5) = 4.743416).
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [1.0, 2.0, 2.0, 3.0];
        assert!((spearman(&x, &y) - 0.948_683_298_050_513_8).abs() < 1e-12);
        // 6 pairs: 5 concordant, 1 tied in y: τ-b = 5 / sqrt(6 · 5) = 0.912870929175277.
        assert!((kendall_tau_b(&x, &y) - 0.912_870_929_175_277).abs() < 1e-12);
    }

    #[test]
    fn error_shares_and_mape_count_each_pair() {
        let measured = [100.0, 100.0, 100.0, 100.0];
        let estimated = [104.0, 92.0, 111.0, 100.0];
        let f = fidelity(&estimated, &measured);
        assert_eq!(f.n, 4);
        assert_eq!(f.within_5pct, 0.5);
        assert_eq!(f.within_10pct, 0.75);
        assert!((f.mape_pct - (4.0 + 8.0 + 11.0 + 0.0) / 4.0).abs() < 1e-9);
        let skipped = fidelity(&[1.0, f64::NAN], &[1.0, 2.0]);
        assert_eq!(skipped.n, 1);
    }
}
