//! Calibration: from the raw sum over operators to measured end-to-end latency.
//!
//! Operators profiled one at a time miss what the whole model adds or saves: the residual
//! stream moving between layers, caches shared or evicted, per-step dispatch. Per device and
//! setting, Frontier fits `measured ≈ scale · raw + per_layer_ms · layers + constant_ms` to
//! models whose decode latency was measured end to end. The fit minimises *relative* squared
//! error (each row weighted by 1/measured), because fidelity is judged by relative error
//! (share within ±10 %): plain least squares would let the slowest models dominate.

use serde::{Deserialize, Serialize};

/// Coefficients of a fitted calibration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub scale: f64,
    pub per_layer_ms: f64,
    pub constant_ms: f64,
    /// Models the fit was made from.
    pub samples: usize,
}

/// One model's raw estimate, layer count and measured latency.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSample {
    pub raw_ms: f64,
    pub layers: usize,
    pub measured_ms: f64,
}

/// Why no calibration could be fitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalibrationError {
    #[error("calibration needs at least 2 measured models with finite, positive latencies; got {0}")]
    TooFewSamples(usize),
}

impl Calibration {
    /// The identity: estimates pass through unchanged.
    pub const IDENTITY: Calibration =
        Calibration { scale: 1.0, per_layer_ms: 0.0, constant_ms: 0.0, samples: 0 };

    pub fn apply(&self, raw_ms: f64, layers: usize) -> f64 {
        self.scale * raw_ms + self.per_layer_ms * layers as f64 + self.constant_ms
    }

    /// Fits the coefficients to `samples` (non-finite or non-positive measurements are skipped).
    ///
    /// When the layer counts do not vary, the per-layer term cannot be told apart from the
    /// constant and is left at 0; with too few distinct points the constant is dropped too.
    pub fn fit(samples: &[CalibrationSample]) -> Result<Calibration, CalibrationError> {
        let rows: Vec<&CalibrationSample> = samples
            .iter()
            .filter(|s| s.measured_ms.is_finite() && s.measured_ms > 0.0 && s.raw_ms.is_finite())
            .collect();
        if rows.len() < 2 {
            return Err(CalibrationError::TooFewSamples(rows.len()));
        }
        // Each row divided by the measurement: minimise Σ ((prediction − measured) / measured)².
        let design = |s: &CalibrationSample| [s.raw_ms, s.layers as f64, 1.0].map(|x| x / s.measured_ms);
        for terms in [&[0usize, 1, 2][..], &[0, 2], &[0]] {
            if rows.len() < terms.len() {
                continue;
            }
            let mut ata = [[0.0f64; 3]; 3];
            let mut atb = [0.0f64; 3];
            for s in &rows {
                let x = design(s);
                for (i, &ti) in terms.iter().enumerate() {
                    atb[i] += x[ti];
                    for (j, &tj) in terms.iter().enumerate() {
                        ata[i][j] += x[ti] * x[tj];
                    }
                }
            }
            if let Some(solution) = solve(ata, atb, terms.len()) {
                let mut c = [0.0; 3];
                for (i, &t) in terms.iter().enumerate() {
                    c[t] = solution[i];
                }
                return Ok(Calibration {
                    scale: c[0],
                    per_layer_ms: c[1],
                    constant_ms: c[2],
                    samples: rows.len(),
                });
            }
        }
        Err(CalibrationError::TooFewSamples(rows.len()))
    }
}

/// Solves the leading `n×n` system by Gaussian elimination with partial pivoting; `None` when
/// it is (numerically) singular.
fn solve(mut a: [[f64; 3]; 3], mut b: [f64; 3], n: usize) -> Option<[f64; 3]> {
    let scale = (0..n).map(|i| a[i][i].abs()).fold(0.0, f64::max);
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() <= 1e-10 * scale.max(f64::MIN_POSITIVE) {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..n {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row][col..n].iter_mut().zip(&pivot_row[col..n]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(
        scale: f64,
        per_layer: f64,
        constant: f64,
        noise: impl Fn(usize) -> f64,
    ) -> Vec<CalibrationSample> {
        (0..30)
            .map(|i| {
                let raw_ms = 20.0 + 7.0 * i as f64;
                let layers = 4 + (i * 7) % 23;
                let exact = scale * raw_ms + per_layer * layers as f64 + constant;
                CalibrationSample { raw_ms, layers, measured_ms: exact * (1.0 + noise(i)) }
            })
            .collect()
    }

    #[test]
    fn fit_recovers_known_coefficients_from_exact_data() {
        let c = Calibration::fit(&synthetic(1.3, 0.8, 5.0, |_| 0.0)).unwrap();
        assert!((c.scale - 1.3).abs() < 1e-9, "{c:?}");
        assert!((c.per_layer_ms - 0.8).abs() < 1e-9, "{c:?}");
        assert!((c.constant_ms - 5.0).abs() < 1e-8, "{c:?}");
        assert_eq!(c.samples, 30);
    }

    #[test]
    fn fit_with_one_percent_noise_lands_near_the_true_coefficients() {
        // Deterministic ±1 % noise, alternating in sign with a varying size.
        let c = Calibration::fit(&synthetic(0.9, 1.5, 3.0, |i| 0.01 * ((i * 37 % 11) as f64 / 5.0 - 1.0)))
            .unwrap();
        assert!((c.scale - 0.9).abs() < 0.03, "{c:?}");
        assert!((c.per_layer_ms - 1.5).abs() < 0.3, "{c:?}");
        assert!((c.constant_ms - 3.0).abs() < 2.0, "{c:?}");
    }

    #[test]
    fn constant_layer_count_leaves_the_per_layer_term_at_zero() {
        let samples: Vec<_> = (1..10)
            .map(|i| CalibrationSample { raw_ms: i as f64, layers: 12, measured_ms: 2.0 * i as f64 + 1.0 })
            .collect();
        let c = Calibration::fit(&samples).unwrap();
        assert_eq!(c.per_layer_ms, 0.0);
        assert!((c.scale - 2.0).abs() < 1e-9 && (c.constant_ms - 1.0).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn too_few_usable_samples_is_an_error() {
        let one = [CalibrationSample { raw_ms: 1.0, layers: 2, measured_ms: 1.0 }];
        assert_eq!(Calibration::fit(&one), Err(CalibrationError::TooFewSamples(1)));
        let nan = [one[0], CalibrationSample { raw_ms: 1.0, layers: 2, measured_ms: f64::NAN }];
        assert_eq!(Calibration::fit(&nan), Err(CalibrationError::TooFewSamples(1)));
    }
}
