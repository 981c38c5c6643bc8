//! The depth and width with the lowest predicted loss under a latency budget.
//!
//! The caller supplies each candidate's latency on the target device (for example from
//! `lut::Lut::estimate` on the model the (D, W) pair describes), so this stays pure. Candidates
//! at or under the budget are ranked by predicted loss; ties go to the faster candidate, then
//! to the earlier one.

use serde::{Deserialize, Serialize};

use crate::fit::Fit;

/// One ranked candidate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub depth: f64,
    pub width: f64,
    pub latency_ms: f64,
    pub predicted_loss: f64,
    /// `exp(predicted_loss)`.
    pub predicted_ppl: f64,
}

/// The best candidate within the budget and the next best.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recommendation {
    pub budget_ms: f64,
    /// Candidates given.
    pub considered: usize,
    /// Candidates whose latency is at or under the budget.
    pub within_budget: usize,
    pub best: Candidate,
    /// The next `top − 1` within the budget, best first.
    pub runners_up: Vec<Candidate>,
}

/// Why no recommendation could be made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RecommendError {
    #[error("{}", nothing_fits(*.budget_ms, *.considered, *.fastest_ms))]
    NothingFits { budget_ms: f64, considered: usize, fastest_ms: Option<f64> },
    #[error("the latency budget must be positive; got {0} ms")]
    InvalidBudget(f64),
    #[error(
        "candidate {index} (depth {depth}, width {width}, {latency_ms} ms): depth and width must be finite and positive, latency finite and not negative"
    )]
    InvalidCandidate { index: usize, depth: f64, width: f64, latency_ms: f64 },
    #[error(
        "the law has a token term; fix the training budget first with Fit::at_tokens(tokens) so predicted losses are at that budget"
    )]
    TokensForm,
}

fn nothing_fits(budget_ms: f64, considered: usize, fastest_ms: Option<f64>) -> String {
    match fastest_ms {
        None => format!("no candidates were given for the {budget_ms} ms budget"),
        Some(fastest) => format!(
            "none of the {considered} candidates fits the {budget_ms} ms budget; the fastest takes {fastest} ms"
        ),
    }
}

/// Ranks the `(depth, width, latency_ms)` candidates with latency `≤ budget_ms` by the loss
/// `fit` predicts, and returns the best and up to `top − 1` runners-up (`top` 0 or 1: none).
///
/// Needs a data-free law ([`Fit::at_tokens`] turns a token law into one).
pub fn recommend(
    fit: &Fit,
    candidates: impl IntoIterator<Item = (f64, f64, f64)>,
    budget_ms: f64,
    top: usize,
) -> Result<Recommendation, RecommendError> {
    if fit.form.has_tokens() {
        return Err(RecommendError::TokensForm);
    }
    if budget_ms.is_nan() || budget_ms <= 0.0 {
        return Err(RecommendError::InvalidBudget(budget_ms));
    }
    let mut considered = 0;
    let mut fastest_ms: Option<f64> = None;
    let mut within = Vec::new();
    for (index, (depth, width, latency_ms)) in candidates.into_iter().enumerate() {
        considered += 1;
        let valid = depth.is_finite()
            && depth > 0.0
            && width.is_finite()
            && width > 0.0
            && latency_ms.is_finite()
            && latency_ms >= 0.0;
        if !valid {
            return Err(RecommendError::InvalidCandidate { index, depth, width, latency_ms });
        }
        fastest_ms = Some(fastest_ms.map_or(latency_ms, |f| f.min(latency_ms)));
        if latency_ms <= budget_ms {
            let predicted_loss = fit.predict(depth, width, None);
            within.push(Candidate {
                depth,
                width,
                latency_ms,
                predicted_loss,
                predicted_ppl: predicted_loss.exp(),
            });
        }
    }
    // Stable: equal loss and latency keep input order.
    within.sort_by(|x, y| {
        x.predicted_loss.total_cmp(&y.predicted_loss).then(x.latency_ms.total_cmp(&y.latency_ms))
    });
    let within_budget = within.len();
    let mut ranked = within.into_iter().take(top.max(1));
    let best = ranked.next().ok_or(RecommendError::NothingFits { budget_ms, considered, fastest_ms })?;
    Ok(Recommendation { budget_ms, considered, within_budget, best, runners_up: ranked.collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::TRUE;
    use crate::{Coefficients, Form};

    fn law() -> Fit {
        Fit {
            form: Form::DepthWidth,
            coefficients: TRUE,
            rmse: 0.0,
            r2: 1.0,
            n: 16,
            residuals: vec![],
            converged: true,
        }
    }

    /// A made-up latency: proportional to depth·width.
    fn latency(d: f64, w: f64) -> f64 {
        d * w / 1000.0
    }

    fn grid() -> Vec<(f64, f64, f64)> {
        let mut out = Vec::new();
        for d in [4.0, 8.0, 12.0, 16.0, 24.0, 32.0] {
            for w in [256.0, 384.0, 512.0, 768.0, 1024.0] {
                out.push((d, w, latency(d, w)));
            }
        }
        out
    }

    #[test]
    fn the_lowest_predicted_loss_within_the_budget_wins() {
        let fit = law();
        let budget = 8.0;
        let r = recommend(&fit, grid(), budget, 4).unwrap();
        let best_by_scan = grid()
            .into_iter()
            .filter(|c| c.2 <= budget)
            .map(|(d, w, _)| (fit.predict(d, w, None), d, w))
            .min_by(|x, y| x.0.total_cmp(&y.0))
            .unwrap();
        assert_eq!((r.best.depth, r.best.width), (best_by_scan.1, best_by_scan.2));
        assert_eq!(r.best.predicted_loss, best_by_scan.0);
        assert_eq!(r.best.predicted_ppl, best_by_scan.0.exp());
        assert_eq!(r.considered, 30);
        assert_eq!(r.runners_up.len(), 3);
        let losses: Vec<f64> =
            std::iter::once(&r.best).chain(&r.runners_up).map(|c| c.predicted_loss).collect();
        assert!(losses.windows(2).all(|p| p[0] <= p[1]));
        assert!(std::iter::once(&r.best).chain(&r.runners_up).all(|c| c.latency_ms <= budget));
    }

    #[test]
    fn the_budget_is_inclusive_and_exact() {
        let fit = law();
        // Deeper and wider is always better under this law; only latency holds it back.
        let candidates = [(8.0, 512.0, 10.0), (16.0, 512.0, 10.000_000_001), (8.0, 256.0, 5.0)];
        let r = recommend(&fit, candidates, 10.0, 10).unwrap();
        assert_eq!((r.best.depth, r.best.width, r.best.latency_ms), (8.0, 512.0, 10.0));
        assert_eq!(r.within_budget, 2);
        assert_eq!(r.runners_up.len(), 1);
        let wider = recommend(&fit, candidates, 10.000_000_001, 1).unwrap();
        assert_eq!(wider.best.depth, 16.0);
        assert!(wider.runners_up.is_empty());
    }

    #[test]
    fn equal_predictions_prefer_the_faster_candidate() {
        let fit = law();
        let r = recommend(&fit, [(8.0, 512.0, 9.0), (8.0, 512.0, 7.0)], 10.0, 2).unwrap();
        assert_eq!(r.best.latency_ms, 7.0);
    }

    #[test]
    fn nothing_within_the_budget_is_reported_with_the_fastest_latency() {
        let fit = law();
        let e = recommend(&fit, grid(), 0.5, 3).unwrap_err();
        assert_eq!(
            e,
            RecommendError::NothingFits { budget_ms: 0.5, considered: 30, fastest_ms: Some(1.024) }
        );
        assert_eq!(
            e.to_string(),
            "none of the 30 candidates fits the 0.5 ms budget; the fastest takes 1.024 ms"
        );
        let none = recommend(&fit, Vec::new(), 5.0, 3).unwrap_err();
        assert_eq!(none.to_string(), "no candidates were given for the 5 ms budget");
    }

    #[test]
    fn invalid_budgets_candidates_and_token_laws_are_refused() {
        let fit = law();
        for budget in [0.0, -1.0, f64::NAN] {
            assert!(matches!(recommend(&fit, grid(), budget, 1), Err(RecommendError::InvalidBudget(_))));
        }
        let e = recommend(&fit, [(8.0, 512.0, 1.0), (0.0, 512.0, 1.0)], 5.0, 1).unwrap_err();
        assert!(matches!(e, RecommendError::InvalidCandidate { index: 1, .. }));
        assert!(matches!(
            recommend(&fit, [(8.0, 512.0, f64::NAN)], 5.0, 1),
            Err(RecommendError::InvalidCandidate { index: 0, .. })
        ));
        let token_law = Fit {
            form: Form::DepthWidthTokens,
            coefficients: Coefficients { c: Some(200.0), gamma: Some(0.3), ..TRUE },
            ..law()
        };
        assert_eq!(recommend(&token_law, grid(), 8.0, 1).unwrap_err(), RecommendError::TokensForm);
        let fixed = token_law.at_tokens(1e10);
        assert!(recommend(&fixed, grid(), 8.0, 1).is_ok());
    }
}
