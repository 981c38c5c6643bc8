//! Does a law fitted on small models predict the large ones?
//!
//! The observations are split by model size: by default those whose size proxy `D·W²` (the
//! parameter count of the blocks, up to a constant) is at or below the median are fitted, and
//! the rest are predicted. The report gives the relative error of each prediction in loss and
//! in perplexity (`exp(loss)`); the paper's claim is within 5.3 % in perplexity. Perplexity
//! magnifies loss errors: a relative loss error `ε` at loss `L` is roughly a perplexity error
//! of `ε·L`.

use serde::{Deserialize, Serialize};

use crate::fit::{Fit, FitError, FitOptions, fit, validate};
use crate::{Form, Observation};

/// The size proxy used to order models: `depth · width²`.
pub fn size_proxy(depth: f64, width: f64) -> f64 {
    depth * width * width
}

/// Which observations are fitted; the rest are predicted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Fit those whose [`size_proxy`] is at or below the median size (the mean of the two
    /// middle sizes for an even count).
    #[default]
    Median,
    /// Fit those whose [`size_proxy`] is at or below this threshold.
    SizeAtMost(f64),
    /// `mask[i]` true: observation `i` is fitted; false: it is predicted.
    Mask(Vec<bool>),
}

/// One predicted observation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtrapolationRow {
    /// Position in the observations given.
    pub index: usize,
    pub observation: Observation,
    pub predicted_loss: f64,
    /// Signed: `(predicted − observed) / observed`.
    pub loss_rel_error: f64,
    pub observed_ppl: f64,
    pub predicted_ppl: f64,
    /// Signed, as for loss.
    pub ppl_rel_error: f64,
}

/// The fit on the smaller models and its errors on the larger ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extrapolation {
    pub fit: Fit,
    /// Indices of the observations fitted.
    pub fitted: Vec<usize>,
    /// The size threshold used, for [`Split::Median`] and [`Split::SizeAtMost`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_threshold: Option<f64>,
    /// One row per predicted observation, in input order.
    pub rows: Vec<ExtrapolationRow>,
    /// Mean and max of `|loss_rel_error|` over the rows.
    pub loss_mean_rel_error: f64,
    pub loss_max_rel_error: f64,
    /// Mean and max of `|ppl_rel_error|` over the rows.
    pub ppl_mean_rel_error: f64,
    pub ppl_max_rel_error: f64,
}

/// Fits `form` on one part of `observations` (see [`Split`]) and predicts the other.
pub fn extrapolation(
    observations: &[Observation],
    form: Form,
    options: &FitOptions,
    split: &Split,
) -> Result<Extrapolation, FitError> {
    // Values are checked on the whole set first, so errors name positions in `observations`.
    if let Err(e) = validate(observations, form)
        && matches!(e, FitError::InvalidValue { .. } | FitError::MissingTokens { .. })
    {
        return Err(e);
    }
    let size = |o: &Observation| size_proxy(o.depth, o.width);
    let (in_fit, size_threshold): (Vec<bool>, Option<f64>) = match split {
        Split::Mask(mask) => {
            if mask.len() != observations.len() {
                return Err(FitError::SplitMaskLength { expected: observations.len(), got: mask.len() });
            }
            (mask.clone(), None)
        }
        Split::SizeAtMost(threshold) => {
            if threshold.is_nan() {
                return Err(FitError::InvalidThreshold(*threshold));
            }
            (observations.iter().map(|o| size(o) <= *threshold).collect(), Some(*threshold))
        }
        Split::Median => {
            let threshold = median(observations.iter().map(size).collect());
            (observations.iter().map(|o| size(o) <= threshold).collect(), Some(threshold))
        }
    };
    let fitted: Vec<usize> = (0..observations.len()).filter(|i| in_fit[*i]).collect();
    let held_out = observations.len() - fitted.len();
    let needed = form.parameters();
    if fitted.len() < needed || held_out == 0 {
        return Err(FitError::SplitTooSmall { form, fitting: fitted.len(), held_out, needed });
    }
    let subset: Vec<Observation> = fitted.iter().map(|i| observations[*i]).collect();
    let law = fit(&subset, form, options)?;

    let rows: Vec<ExtrapolationRow> = observations
        .iter()
        .enumerate()
        .filter(|(i, _)| !in_fit[*i])
        .map(|(index, o)| {
            let predicted_loss = law.predict(o.depth, o.width, o.tokens);
            let (observed_ppl, predicted_ppl) = (o.loss.exp(), predicted_loss.exp());
            ExtrapolationRow {
                index,
                observation: *o,
                predicted_loss,
                loss_rel_error: (predicted_loss - o.loss) / o.loss,
                observed_ppl,
                predicted_ppl,
                ppl_rel_error: (predicted_ppl - observed_ppl) / observed_ppl,
            }
        })
        .collect();
    let summary = |error: fn(&ExtrapolationRow) -> f64| {
        let abs: Vec<f64> = rows.iter().map(|r| error(r).abs()).collect();
        (abs.iter().sum::<f64>() / abs.len() as f64, abs.iter().copied().fold(0.0, f64::max))
    };
    let (loss_mean_rel_error, loss_max_rel_error) = summary(|r| r.loss_rel_error);
    let (ppl_mean_rel_error, ppl_max_rel_error) = summary(|r| r.ppl_rel_error);
    Ok(Extrapolation {
        fit: law,
        fitted,
        size_threshold,
        rows,
        loss_mean_rel_error,
        loss_max_rel_error,
        ppl_mean_rel_error,
        ppl_max_rel_error,
    })
}

/// Median of finite values (mean of the two middle ones for an even count); NaN when empty.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    #[test]
    fn the_median_split_fits_the_smaller_half() {
        let observations = synthetic::grid(synthetic::true_law, 0.0, 0);
        let e =
            extrapolation(&observations, Form::DepthWidth, &FitOptions::default(), &Split::Median).unwrap();
        // Sizes are 2^13 … 2^22 with ties; the median is (2^17 + 2^18)/2, so the 8 models up to
        // 2^17 are fitted and the 8 from 2^18 up predicted.
        assert_eq!(e.fitted.len(), 8);
        assert_eq!(e.rows.len(), 8);
        let threshold = e.size_threshold.unwrap();
        assert_eq!(threshold, 1.5 * 2f64.powi(17));
        for i in &e.fitted {
            assert!(size_proxy(observations[*i].depth, observations[*i].width) <= threshold);
        }
        for r in &e.rows {
            assert!(size_proxy(r.observation.depth, r.observation.width) > threshold);
        }
    }

    #[test]
    fn extrapolating_noise_free_data_from_its_own_law_has_no_error() {
        let observations = synthetic::grid(synthetic::true_law, 0.0, 0);
        let e =
            extrapolation(&observations, Form::DepthWidth, &FitOptions::default(), &Split::Median).unwrap();
        eprintln!(
            "own law: loss error mean {:.2e} max {:.2e}; ppl error mean {:.2e} max {:.2e}",
            e.loss_mean_rel_error, e.loss_max_rel_error, e.ppl_mean_rel_error, e.ppl_max_rel_error
        );
        // Exact data from the fitted family: only solver tolerance remains (measured max 3e-16
        // in loss, 9e-16 in perplexity); the bound is 1e-6.
        assert!(e.loss_max_rel_error < 1e-6 && e.ppl_max_rel_error < 1e-6);
        for r in &e.rows {
            assert!((r.observed_ppl - r.observation.loss.exp()).abs() < 1e-12);
        }
    }

    #[test]
    fn extrapolating_data_from_a_different_law_shows_a_visible_error() {
        // The true law plus a depth-width interaction 8·(D·W)^-0.5, which the fitted family
        // cannot represent: 0.71 nats at D·W = 128 down to 0.09 nats at D·W = 8192.
        let interacting = |d: f64, w: f64| synthetic::true_law(d, w) + 8.0 * (d * w).powf(-0.5);
        let observations = synthetic::grid(interacting, 0.0, 0);
        let e =
            extrapolation(&observations, Form::DepthWidth, &FitOptions::default(), &Split::Median).unwrap();
        eprintln!(
            "interaction law: loss error mean {:.2e} max {:.2e}; ppl error mean {:.2e} max {:.2e}",
            e.loss_mean_rel_error, e.loss_max_rel_error, e.ppl_mean_rel_error, e.ppl_max_rel_error
        );
        // Measured: loss error mean 7.5 %, max 17.8 %; perplexity mean 13.9 %, max 27.1 %,
        // against ~1e-16 for the own-law case. Bounds: max above 5 % in loss and 10 % in
        // perplexity, far beyond solver tolerance.
        assert!(e.loss_max_rel_error > 0.05, "{}", e.loss_max_rel_error);
        assert!(e.ppl_max_rel_error > 0.10, "{}", e.ppl_max_rel_error);
        assert!(e.ppl_max_rel_error > e.loss_max_rel_error);
    }

    #[test]
    fn an_explicit_mask_or_threshold_chooses_the_fitted_models() {
        let observations = synthetic::grid(synthetic::true_law, 0.0, 0);
        // Fit depths 2–8, predict depth 16.
        let mask: Vec<bool> = observations.iter().map(|o| o.depth < 16.0).collect();
        let e = extrapolation(&observations, Form::DepthWidth, &FitOptions::default(), &Split::Mask(mask))
            .unwrap();
        assert_eq!((e.fitted.len(), e.rows.len(), e.size_threshold), (12, 4, None));
        assert!(e.rows.iter().all(|r| r.observation.depth == 16.0));
        let t = extrapolation(
            &observations,
            Form::DepthWidth,
            &FitOptions::default(),
            &Split::SizeAtMost(2f64.powi(19)),
        )
        .unwrap();
        assert_eq!(t.rows.len(), 16 - 12); // sizes 2^13 … 2^19: 12 models
    }

    #[test]
    fn a_split_that_leaves_too_little_on_either_side_is_refused() {
        let observations = synthetic::grid(synthetic::true_law, 0.0, 0);
        let o = FitOptions::default();
        assert_eq!(
            extrapolation(&observations, Form::DepthWidth, &o, &Split::SizeAtMost(2f64.powi(14)))
                .unwrap_err(),
            FitError::SplitTooSmall { form: Form::DepthWidth, fitting: 2, held_out: 14, needed: 5 }
        );
        let everything =
            extrapolation(&observations, Form::DepthWidth, &o, &Split::SizeAtMost(f64::INFINITY));
        assert_eq!(
            everything.unwrap_err().to_string(),
            "the split leaves 16 observations to fit (the depth-width form needs at least 5) and 0 to predict (at least 1 is needed)"
        );
        assert_eq!(
            extrapolation(&observations, Form::DepthWidth, &o, &Split::Mask(vec![true; 3])).unwrap_err(),
            FitError::SplitMaskLength { expected: 16, got: 3 }
        );
        assert_eq!(
            extrapolation(&observations, Form::DepthWidth, &o, &Split::SizeAtMost(f64::NAN))
                .unwrap_err()
                .to_string(),
            "the split size threshold must be a number, not NaN"
        );
        // A bad value names its position in the full list, not in the fitted part.
        let mut bad = observations.clone();
        bad[14].loss = f64::NAN;
        assert!(matches!(
            extrapolation(&bad, Form::DepthWidth, &o, &Split::Median),
            Err(FitError::InvalidValue { index: 14, .. })
        ));
        // Fitting only depth 2 and 4 leaves two distinct depths: unidentifiable.
        let mask: Vec<bool> = observations.iter().map(|o| o.depth <= 4.0).collect();
        assert!(matches!(
            extrapolation(&observations, Form::DepthWidth, &o, &Split::Mask(mask)),
            Err(FitError::Unidentifiable { distinct: 2, .. })
        ));
    }
}
