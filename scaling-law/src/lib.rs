//! Depth-width scaling laws for small language models.
//!
//! Following Nemotron-Flash's depth-width study, the validation loss of a model family trained
//! at a fixed token budget is modelled as a function of its depth `D` (layers or blocks) and
//! width `W` (hidden size), and optionally of the training tokens `N`:
//!
//! ```text
//! L(D, W)    = L0 + a·D^-α + b·W^-β                  (Form::DepthWidth)
//! L(D, W, N) = L0 + a·D^-α + b·W^-β + c·N^-γ         (Form::DepthWidthTokens)
//! ```
//!
//! with every coefficient `a, b, c, α, β, γ` positive and `L0 ≥ 0`. A law fitted on small models
//! is used to predict larger ones (the paper reports extrapolation within 5.3 % of the true
//! perplexity), and to choose the depth and width with the lowest predicted loss under a latency
//! budget.
//!
//! # Layout
//! - this file: [`Observation`], [`Form`], [`Coefficients`] and the formula;
//! - [`fit`](mod@fit): [`fit()`](fit::fit), multi-start Levenberg-Marquardt in log-parameter
//!   space, and [`FitError`], every reason a fit is refused or fails;
//! - [`bootstrap`](mod@bootstrap): case-resampling percentile intervals per coefficient;
//! - [`extrapolation`](mod@extrapolation): fit the smaller models, score the larger ones in loss
//!   and perplexity;
//! - [`recommend`](mod@recommend): the best (D, W) within a latency budget, latencies supplied by
//!   the caller (for example from `lut::Lut::estimate`).
//!
//! # Runtime model
//! Pure: no IO, no async, no database, no threads. Every result is a deterministic function of
//! its inputs (the bootstrap's of its seed too).
//!
//! # Example
//! ```
//! use scaling_law::{Form, FitOptions, Observation, fit, recommend};
//!
//! // Losses of a 3×3 grid of trained models, here from a known law.
//! let law = |d: f64, w: f64| 1.2 + 2.0 * d.powf(-0.6) + 30.0 * w.powf(-0.9);
//! let mut observations = Vec::new();
//! for depth in [4.0, 8.0, 16.0] {
//!     for width in [128.0, 256.0, 512.0] {
//!         observations.push(Observation::new(depth, width, law(depth, width)));
//!     }
//! }
//! let law_fit = fit(&observations, Form::DepthWidth, &FitOptions::default())?;
//! assert!((law_fit.coefficients.alpha - 0.6).abs() < 1e-4);
//! // A larger model than any observed:
//! let predicted = law_fit.predict(32.0, 1024.0, None);
//! assert!((predicted - law(32.0, 1024.0)).abs() < 1e-6);
//!
//! // Candidates with their latency (ms) on the target device; the budget is 10 ms.
//! let candidates = [(12.0, 512.0, 8.0), (24.0, 384.0, 9.5), (32.0, 768.0, 14.0)];
//! let pick = recommend(&law_fit, candidates, 10.0, 3)?;
//! assert_eq!((pick.best.depth, pick.best.width), (24.0, 384.0));
//! assert_eq!(pick.runners_up.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bootstrap;
pub mod extrapolation;
pub mod fit;
pub mod recommend;

pub use bootstrap::{Interval, Intervals, bootstrap};
pub use extrapolation::{Extrapolation, ExtrapolationRow, Split, extrapolation, size_proxy};
pub use fit::{Field, Fit, FitError, FitOptions, fit};
pub use recommend::{Candidate, RecommendError, Recommendation, recommend};

use std::fmt;

use serde::{Deserialize, Serialize};

/// One trained model: its depth, width, optionally its training tokens, and its loss.
///
/// Loss is in nats per token (the model's cross-entropy); its perplexity is `exp(loss)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// Layers or blocks.
    pub depth: f64,
    /// Hidden size.
    pub width: f64,
    /// Training tokens; needed by [`Form::DepthWidthTokens`], ignored by [`Form::DepthWidth`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<f64>,
    pub loss: f64,
}

impl Observation {
    /// An observation at the fixed token budget (no token count).
    pub fn new(depth: f64, width: f64, loss: f64) -> Self {
        Self { depth, width, tokens: None, loss }
    }

    /// An observation with its training token count.
    pub fn with_tokens(depth: f64, width: f64, tokens: f64, loss: f64) -> Self {
        Self { depth, width, tokens: Some(tokens), loss }
    }
}

/// Which law to fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// `L0 + a·D^-α + b·W^-β`: every model trained on the same token budget.
    DepthWidth,
    /// `L0 + a·D^-α + b·W^-β + c·N^-γ`: token budgets vary too.
    DepthWidthTokens,
}

impl Form {
    /// Number of fitted coefficients (5 or 7).
    pub fn parameters(self) -> usize {
        match self {
            Form::DepthWidth => 5,
            Form::DepthWidthTokens => 7,
        }
    }

    /// Whether the form has the `c·N^-γ` term.
    pub fn has_tokens(self) -> bool {
        self == Form::DepthWidthTokens
    }

    /// The formula, for reports.
    pub fn formula(self) -> &'static str {
        match self {
            Form::DepthWidth => "L0 + a·D^-α + b·W^-β",
            Form::DepthWidthTokens => "L0 + a·D^-α + b·W^-β + c·N^-γ",
        }
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Form::DepthWidth => "depth-width",
            Form::DepthWidthTokens => "depth-width-tokens",
        })
    }
}

/// The coefficients of a law, in the units of the observations (layers, hidden size, tokens).
///
/// `c` and `gamma` are `Some` exactly for [`Form::DepthWidthTokens`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coefficients {
    pub l0: f64,
    pub a: f64,
    pub alpha: f64,
    pub b: f64,
    pub beta: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
}

impl Coefficients {
    /// The predicted loss. The token term is added when the law has one and `tokens` is given;
    /// a law with a token term asked without tokens gives its unlimited-data limit
    /// (`c·N^-γ → 0`), `L0 + a·D^-α + b·W^-β`.
    pub fn predict(&self, depth: f64, width: f64, tokens: Option<f64>) -> f64 {
        let data_free = self.l0 + self.a * depth.powf(-self.alpha) + self.b * width.powf(-self.beta);
        match (self.c, self.gamma, tokens) {
            (Some(c), Some(gamma), Some(n)) => data_free + c * n.powf(-gamma),
            _ => data_free,
        }
    }

    /// The values in the order of [`Coefficients::names`]; the token pair only when present.
    pub fn values(&self) -> Vec<f64> {
        let mut v = vec![self.l0, self.a, self.alpha, self.b, self.beta];
        if let (Some(c), Some(gamma)) = (self.c, self.gamma) {
            v.extend([c, gamma]);
        }
        v
    }

    /// Coefficient names for `form`, matching [`Coefficients::values`].
    pub fn names(form: Form) -> &'static [&'static str] {
        match form {
            Form::DepthWidth => &["l0", "a", "alpha", "b", "beta"],
            Form::DepthWidthTokens => &["l0", "a", "alpha", "b", "beta", "c", "gamma"],
        }
    }
}

/// Perplexity of a loss in nats: `exp(loss)`.
pub fn perplexity(loss: f64) -> f64 {
    loss.exp()
}

/// Synthetic observations from a known law, shared by the tests of every module.
#[cfg(test)]
pub(crate) mod synthetic {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::{Coefficients, Observation};

    /// L0 = 1.2, a = 2.0, α = 0.6, b = 30, β = 0.9.
    pub const TRUE: Coefficients =
        Coefficients { l0: 1.2, a: 2.0, alpha: 0.6, b: 30.0, beta: 0.9, c: None, gamma: None };
    /// The same with c = 200, γ = 0.3 (the token term is 0.40 at 1e9 tokens, 0.17 at 1.6e10).
    pub const TRUE_TOKENS: Coefficients = Coefficients { c: Some(200.0), gamma: Some(0.3), ..TRUE };
    pub const DEPTHS: [f64; 4] = [2.0, 4.0, 8.0, 16.0];
    pub const WIDTHS: [f64; 4] = [64.0, 128.0, 256.0, 512.0];
    pub const TOKENS: [f64; 3] = [1e9, 4e9, 1.6e10];

    /// One standard normal draw (Box-Muller).
    pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// The 4×4 depth-width grid under `law`, plus Gaussian noise of standard deviation `sigma`.
    pub fn grid(law: impl Fn(f64, f64) -> f64, sigma: f64, seed: u64) -> Vec<Observation> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        for d in DEPTHS {
            for w in WIDTHS {
                out.push(Observation::new(d, w, law(d, w) + sigma * normal(&mut rng)));
            }
        }
        out
    }

    /// The 4×4×3 depth-width-tokens grid under [`TRUE_TOKENS`], plus noise.
    pub fn token_grid(sigma: f64, seed: u64) -> Vec<Observation> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        for d in DEPTHS {
            for w in WIDTHS {
                for n in TOKENS {
                    let loss = TRUE_TOKENS.predict(d, w, Some(n)) + sigma * normal(&mut rng);
                    out.push(Observation::with_tokens(d, w, n, loss));
                }
            }
        }
        out
    }

    /// The true data-free law as a closure.
    pub fn true_law(d: f64, w: f64) -> f64 {
        TRUE.predict(d, w, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_follows_the_formula_and_drops_the_token_term_without_tokens() {
        let c = synthetic::TRUE_TOKENS;
        // 1.2 + 2·4^-0.6 + 30·256^-0.9 = 1.2 + 0.870551 + 0.206137
        let data_free = 1.2 + 2.0 * 4f64.powf(-0.6) + 30.0 * 256f64.powf(-0.9);
        assert!((c.predict(4.0, 256.0, None) - data_free).abs() < 1e-12);
        let with_tokens = data_free + 200.0 * 1e9f64.powf(-0.3);
        assert!((c.predict(4.0, 256.0, Some(1e9)) - with_tokens).abs() < 1e-12);
        // The data-free law ignores tokens.
        assert_eq!(synthetic::TRUE.predict(4.0, 256.0, Some(1e9)), data_free);
        assert_eq!(c.values().len(), Coefficients::names(Form::DepthWidthTokens).len());
    }

    #[test]
    fn observations_and_forms_round_trip_through_json() {
        let o = Observation::with_tokens(8.0, 512.0, 1e9, 2.5);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<Observation>(&json).unwrap(), o);
        let plain: Observation = serde_json::from_str(r#"{"depth":2,"width":64,"loss":3.0}"#).unwrap();
        assert_eq!(plain.tokens, None);
        assert_eq!(serde_json::to_string(&Form::DepthWidthTokens).unwrap(), r#""depth_width_tokens""#);
        assert_eq!(Form::DepthWidth.to_string(), "depth-width");
    }
}
