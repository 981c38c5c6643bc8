//! Calibration: from the raw sum over operators to measured end-to-end latency.
//!
//! Operators profiled one at a time miss what the whole model adds or saves: the residual
//! stream moving between layers, caches shared or evicted, per-step dispatch. Per device and
//! setting, Frontier fits `measured ≈ scale · raw + per_layer_ms · layers + constant_ms` to
//! models whose decode latency was measured end to end, or, when it predicts held-out models
//! better, one scale per operator group (`Σ_g scale_g · raw_g + …`): a profiled stack of one
//! operator and the same operator inside a mixed model need not cost the same, and by a
//! different factor for each kind. The fit minimises *relative* squared error (each row weighted
//! by 1/measured), because fidelity is judged by relative error (share within ±10 %): plain
//! least squares would let the slowest models dominate.

use serde::{Deserialize, Serialize};

use crate::OpShape;

/// The operator groups a calibration may scale separately: the four token mixers, and the
/// dense rest (FFNs, embedding and head).
pub const GROUPS: [&str; 5] = ["attention", "mamba2", "deltanet", "gated_deltanet", "dense"];

/// The group of an operator shape, an index into [`GROUPS`].
pub fn group_of(shape: &OpShape) -> usize {
    match shape {
        OpShape::Attention { .. } => 0,
        OpShape::Mamba2 { .. } => 1,
        OpShape::DeltaNet { .. } => 2,
        OpShape::GatedDeltaNet { .. } => 3,
        OpShape::Ffn { .. } | OpShape::EmbedHead { .. } => 4,
    }
}

/// A model's raw (uncalibrated) cost: the total, its split over [`GROUPS`], and the layer count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RawCost {
    pub total_ms: f64,
    pub by_group_ms: [f64; GROUPS.len()],
    pub layers: usize,
}

/// Coefficients of a fitted calibration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub scale: f64,
    pub per_layer_ms: f64,
    pub constant_ms: f64,
    /// Models the fit was made from.
    pub samples: usize,
    /// One scale per operator group (see [`GROUPS`]) in place of `scale`, when the fit chose
    /// them; `None` in calibrations from before groups were fitted, and when one scale was
    /// better.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_scales: Option<[f64; GROUPS.len()]>,
}

/// One model's raw estimate and measured latency.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSample {
    pub raw: RawCost,
    pub measured_ms: f64,
}

/// Why no calibration could be fitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalibrationError {
    #[error("calibration needs at least 2 measured models with finite, positive latencies; got {0}")]
    TooFewSamples(usize),
}

/// The forms [`Calibration::fit`] chooses from, richest first. Columns: the raw total, each
/// group's raw cost, the layer count, a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `Σ_g scale_g · raw_g + per_layer · layers + constant`.
    Groups,
    /// `scale · raw + per_layer · layers + constant`.
    ScaleLayersConstant,
    /// `scale · raw + constant`.
    ScaleConstant,
    /// `scale · raw`.
    Scale,
}

impl Calibration {
    /// The identity: estimates pass through unchanged.
    pub const IDENTITY: Calibration =
        Calibration { scale: 1.0, per_layer_ms: 0.0, constant_ms: 0.0, samples: 0, group_scales: None };

    pub fn apply(&self, raw: &RawCost) -> f64 {
        let scaled = match &self.group_scales {
            Some(g) => g.iter().zip(&raw.by_group_ms).map(|(s, r)| s * r).sum(),
            None => self.scale * raw.total_ms,
        };
        scaled + self.per_layer_ms * raw.layers as f64 + self.constant_ms
    }

    /// Fits a calibration to `samples` (non-finite or non-positive measurements are skipped).
    ///
    /// Several forms are fitted — a scale per operator group, or one scale, each with a
    /// per-layer term and a constant, then simpler ones — and the one whose leave-one-out
    /// relative error is smallest is kept: extra coefficients are used only where they predict
    /// models the fit has not seen. A group absent from every sample gets the samples' mean
    /// scale. When the layer counts do not vary, the per-layer term cannot be told from the
    /// constant and that form is skipped.
    pub fn fit(samples: &[CalibrationSample]) -> Result<Calibration, CalibrationError> {
        let rows: Vec<&CalibrationSample> = samples
            .iter()
            .filter(|s| s.measured_ms.is_finite() && s.measured_ms > 0.0 && s.raw.total_ms.is_finite())
            .collect();
        if rows.len() < 2 {
            return Err(CalibrationError::TooFewSamples(rows.len()));
        }
        let mut best: Option<(f64, Calibration)> = None;
        for form in [Form::Groups, Form::ScaleLayersConstant, Form::ScaleConstant, Form::Scale] {
            let Some(fitted) = fit_form(form, &rows) else {
                continue;
            };
            // Leave-one-out squared relative error; a form that cannot be fitted without some
            // row is not compared (the single-scale form always can).
            let mut loo = 0.0;
            let mut complete = true;
            for i in 0..rows.len() {
                let others: Vec<&CalibrationSample> =
                    rows.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| *r).collect();
                match fit_form(form, &others) {
                    Some(c) => {
                        loo += ((c.apply(&rows[i].raw) - rows[i].measured_ms) / rows[i].measured_ms).powi(2)
                    }
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if !complete && form != Form::Scale {
                continue;
            }
            if best.as_ref().is_none_or(|(e, _)| loo < *e) {
                best = Some((loo, fitted));
            }
        }
        best.map(|(_, c)| c).ok_or(CalibrationError::TooFewSamples(rows.len()))
    }
}

/// Least squares on relative error for one form; `None` when the rows cannot determine it.
fn fit_form(form: Form, rows: &[&CalibrationSample]) -> Option<Calibration> {
    let groups: Vec<usize> =
        (0..GROUPS.len()).filter(|g| rows.iter().any(|r| r.raw.by_group_ms[*g] > 0.0)).collect();
    let layers_vary = rows.iter().any(|r| r.raw.layers != rows[0].raw.layers);
    let columns: usize = match form {
        Form::Groups if groups.len() < 2 || !layers_vary => return None,
        Form::Groups => groups.len() + 2,
        Form::ScaleLayersConstant if !layers_vary => return None,
        Form::ScaleLayersConstant => 3,
        Form::ScaleConstant => 2,
        Form::Scale => 1,
    };
    // Two spare rows: a form needs more models than coefficients to be judged.
    if rows.len() < columns + 2 && form != Form::Scale {
        return None;
    }
    let design = |s: &CalibrationSample| -> Vec<f64> {
        let r = &s.raw;
        let mut x: Vec<f64> = match form {
            Form::Groups => groups.iter().map(|g| r.by_group_ms[*g]).collect(),
            _ => vec![r.total_ms],
        };
        match form {
            Form::Groups | Form::ScaleLayersConstant => x.extend([r.layers as f64, 1.0]),
            Form::ScaleConstant => x.push(1.0),
            Form::Scale => {}
        }
        // Each row divided by the measurement: minimise Σ ((prediction − measured) / measured)².
        x.iter().map(|v| v / s.measured_ms).collect()
    };
    let mut ata = vec![vec![0.0f64; columns]; columns];
    let mut atb = vec![0.0f64; columns];
    for s in rows {
        let x = design(s);
        for i in 0..columns {
            atb[i] += x[i];
            for j in 0..columns {
                ata[i][j] += x[i] * x[j];
            }
        }
    }
    let c = solve(ata, atb)?;
    let samples = rows.len();
    Some(match form {
        Form::Groups => {
            let n = groups.len();
            // Absent groups take the mean of the fitted scales, weighted by the raw cost they scale.
            let (mut weighted, mut weight) = (0.0, 0.0);
            for (k, g) in groups.iter().enumerate() {
                let w: f64 = rows.iter().map(|r| r.raw.by_group_ms[*g]).sum();
                weighted += c[k] * w;
                weight += w;
            }
            let mean = if weight > 0.0 { weighted / weight } else { 1.0 };
            let mut scales = [mean; GROUPS.len()];
            for (k, g) in groups.iter().enumerate() {
                scales[*g] = c[k];
            }
            Calibration {
                scale: mean,
                per_layer_ms: c[n],
                constant_ms: c[n + 1],
                samples,
                group_scales: Some(scales),
            }
        }
        Form::ScaleLayersConstant => {
            Calibration { scale: c[0], per_layer_ms: c[1], constant_ms: c[2], samples, group_scales: None }
        }
        Form::ScaleConstant => {
            Calibration { scale: c[0], per_layer_ms: 0.0, constant_ms: c[1], samples, group_scales: None }
        }
        Form::Scale => {
            Calibration { scale: c[0], per_layer_ms: 0.0, constant_ms: 0.0, samples, group_scales: None }
        }
    })
}

/// Solves `a·x = b` by Gaussian elimination with partial pivoting; `None` when it is
/// (numerically) singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let scale = (0..n).map(|i| a[i][i].abs()).fold(0.0, f64::max);
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() <= 1e-10 * scale.max(f64::MIN_POSITIVE) {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row][col..n].iter_mut().zip(&pivot_row[col..n]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 models with varying raw cost split over the groups and varying depth; `truth` gives
    /// each model's latency and `noise` a relative error.
    fn synthetic(truth: impl Fn(&RawCost) -> f64, noise: impl Fn(usize) -> f64) -> Vec<CalibrationSample> {
        (0..30)
            .map(|i| {
                let by_group_ms = [
                    5.0 + (i * 3 % 7) as f64 * 4.0,
                    (i * 5 % 4) as f64 * 6.0,
                    2.0 + (i * 2 % 5) as f64 * 5.0,
                    0.0,
                    10.0 + i as f64,
                ];
                let raw =
                    RawCost { total_ms: by_group_ms.iter().sum(), by_group_ms, layers: 4 + (i * 7) % 23 };
                CalibrationSample { raw, measured_ms: truth(&raw) * (1.0 + noise(i)) }
            })
            .collect()
    }

    fn exact(_: usize) -> f64 {
        0.0
    }

    #[test]
    fn fit_recovers_known_coefficients_from_exact_data() {
        let c =
            Calibration::fit(&synthetic(|r| 1.3 * r.total_ms + 0.8 * r.layers as f64 + 5.0, exact)).unwrap();
        for s in synthetic(|r| 1.3 * r.total_ms + 0.8 * r.layers as f64 + 5.0, exact) {
            assert!((c.apply(&s.raw) - s.measured_ms).abs() < 1e-8 * s.measured_ms, "{c:?}");
        }
        assert!((c.per_layer_ms - 0.8).abs() < 1e-8, "{c:?}");
        assert!((c.constant_ms - 5.0).abs() < 1e-7, "{c:?}");
        assert_eq!(c.samples, 30);
    }

    #[test]
    fn fit_recovers_a_scale_per_group() {
        let scales = [0.9, 1.2, 1.15, 1.0, 1.05];
        let truth = |r: &RawCost| -> f64 {
            scales.iter().zip(&r.by_group_ms).map(|(s, g)| s * g).sum::<f64>() + 0.3 * r.layers as f64 + 2.0
        };
        let c = Calibration::fit(&synthetic(truth, exact)).unwrap();
        let g = c.group_scales.expect("per-group scales predict these models best");
        for k in [0, 1, 2, 4] {
            assert!((g[k] - scales[k]).abs() < 1e-8, "group {k}: {c:?}");
        }
        // No sample has gated DeltaNet: it takes the weighted mean of the fitted scales.
        assert!(g[3] > 0.9 && g[3] < 1.2, "{c:?}");
        assert!((c.per_layer_ms - 0.3).abs() < 1e-8 && (c.constant_ms - 2.0).abs() < 1e-7, "{c:?}");
    }

    #[test]
    fn per_group_scales_beat_one_scale_when_the_groups_differ_and_noise_is_small() {
        let truth = |r: &RawCost| {
            0.85 * r.by_group_ms[0] + 1.25 * r.by_group_ms[2] + r.by_group_ms[1] + r.by_group_ms[4]
        };
        let noise = |i: usize| 0.01 * ((i * 37 % 11) as f64 / 5.0 - 1.0);
        let samples = synthetic(truth, noise);
        let c = Calibration::fit(&samples).unwrap();
        assert!(c.group_scales.is_some(), "{c:?}");
        let worst = samples.iter().map(|s| (c.apply(&s.raw) / s.measured_ms - 1.0).abs()).fold(0.0, f64::max);
        assert!(worst < 0.03, "worst relative error {worst}");
    }

    #[test]
    fn fit_with_one_percent_noise_lands_near_the_true_coefficients() {
        // Deterministic ±1 % noise, alternating in sign with a varying size.
        let noise = |i: usize| 0.01 * ((i * 37 % 11) as f64 / 5.0 - 1.0);
        let samples = synthetic(|r| 0.9 * r.total_ms + 1.5 * r.layers as f64 + 3.0, noise);
        let c = Calibration::fit(&samples).unwrap();
        for s in &samples {
            let truth = 0.9 * s.raw.total_ms + 1.5 * s.raw.layers as f64 + 3.0;
            assert!((c.apply(&s.raw) / truth - 1.0).abs() < 0.03, "{c:?}");
        }
    }

    #[test]
    fn constant_layer_count_leaves_the_per_layer_term_at_zero() {
        let samples: Vec<_> = (1..10)
            .map(|i| {
                let raw =
                    RawCost { total_ms: i as f64, by_group_ms: [i as f64, 0.0, 0.0, 0.0, 0.0], layers: 12 };
                CalibrationSample { raw, measured_ms: 2.0 * i as f64 + 1.0 }
            })
            .collect();
        let c = Calibration::fit(&samples).unwrap();
        assert_eq!(c.per_layer_ms, 0.0);
        assert!((c.scale - 2.0).abs() < 1e-9 && (c.constant_ms - 1.0).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn too_few_usable_samples_is_an_error() {
        let raw = RawCost { total_ms: 1.0, by_group_ms: [1.0, 0.0, 0.0, 0.0, 0.0], layers: 2 };
        let one = [CalibrationSample { raw, measured_ms: 1.0 }];
        assert_eq!(Calibration::fit(&one), Err(CalibrationError::TooFewSamples(1)));
        let nan = [one[0], CalibrationSample { raw, measured_ms: f64::NAN }];
        assert_eq!(Calibration::fit(&nan), Err(CalibrationError::TooFewSamples(1)));
    }

    #[test]
    fn a_stored_calibration_without_group_scales_still_reads() {
        let c: Calibration =
            serde_json::from_str(r#"{"scale":1.1,"per_layer_ms":0.2,"constant_ms":3.0,"samples":30}"#)
                .unwrap();
        assert_eq!(c.group_scales, None);
        let raw = RawCost { total_ms: 10.0, by_group_ms: [4.0, 0.0, 0.0, 0.0, 6.0], layers: 5 };
        assert!((c.apply(&raw) - (11.0 + 1.0 + 3.0)).abs() < 1e-12);
    }
}
