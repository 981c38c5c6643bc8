//! Depth-width scaling laws over a sweep search's results.
//!
//! A sweep (`algorithm.kind = "sweep"`) trains one block pattern over a grid of depths × widths
//! (× token budgets). [`fit_sweep`] reads its finished trials as observations
//! `(D, W[, N], loss)`, fits `L(D, W[, N]) = L0 + a·D^-α + b·W^-β [+ c·N^-γ]` with the
//! `scaling-law` crate, adds bootstrap intervals and the held-out extrapolation check (fit the
//! smaller half of the grid by `D·W²`, predict the larger half), and returns a [`ScalingFit`]
//! report that the store keeps whole. [`recommend`] enumerates (D, W) pairs, estimates each one's
//! decode latency from the device's LUT, and ranks those within a latency budget by the fitted
//! loss. The recommendation's [`SpaceConstraint`] turns it into an evolutionary search's width
//! and depth limits.
//!
//! # Runtime model
//! Pure functions over stored rows plus a [`LatencyModel`]; the HTTP handlers, the CLI and the
//! UI call them. A fit of a few hundred observations with 200 resamples takes milliseconds.

use std::collections::BTreeMap;

use api::{Algorithm, SearchSpec};
use scaling_law::{Form, Observation, Split};
use schemars::JsonSchema;
use search_space::{ModelSettings, OpKind};
use serde::{Deserialize, Serialize};

use crate::latency::LatencyModel;
use crate::search::{sweep_architecture, sweep_depth};
use crate::store::{MemberRow, TrialRow, TrialState};

/// Most bootstrap resamples one fit may ask for.
pub const MAX_RESAMPLES: u32 = 2_000;
/// Most (depth, width) pairs one recommendation evaluates.
pub const MAX_RECOMMEND_GRID: usize = 4_096;
/// Most runners-up a recommendation lists.
pub const MAX_TOP: u32 = 100;

/// Which law to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FitForm {
    /// `L0 + a·D^-α + b·W^-β`, on the results of one token budget.
    DepthWidth,
    /// `L0 + a·D^-α + b·W^-β + c·N^-γ`, on the results of every budget.
    DepthWidthTokens,
}

impl FitForm {
    pub fn law(self) -> Form {
        match self {
            FitForm::DepthWidth => Form::DepthWidth,
            FitForm::DepthWidthTokens => Form::DepthWidthTokens,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FitForm::DepthWidth => "depth_width",
            FitForm::DepthWidthTokens => "depth_width_tokens",
        }
    }
}

/// How to fit a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FitRequest {
    /// The law; by default the token form when the sweep has results at three or more budgets.
    #[serde(default)]
    pub form: Option<FitForm>,
    /// For `depth_width`: the budget whose results are fitted; by default the largest.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Bootstrap resamples for the coefficient intervals: 0 for none, otherwise at least 2.
    #[serde(default = "default_resamples")]
    #[schemars(range(max = MAX_RESAMPLES), extend("not" = { "const": 1 }))]
    pub resamples: u32,
    /// Nominal coverage of the intervals, strictly between 0 and 1.
    #[serde(default = "default_level")]
    #[schemars(extend("exclusiveMinimum" = 0, "exclusiveMaximum" = 1))]
    pub level: f64,
    /// Seeds the bootstrap; the same data and seed give the same intervals.
    #[serde(default)]
    pub seed: u64,
}

fn default_resamples() -> u32 {
    200
}

fn default_level() -> f64 {
    0.9
}

impl Default for FitRequest {
    fn default() -> Self {
        Self { form: None, tokens: None, resamples: default_resamples(), level: default_level(), seed: 0 }
    }
}

/// One fitted coefficient and its bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Coefficient {
    /// `l0`, `a`, `alpha`, `b`, `beta`, `c` or `gamma`.
    pub name: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
}

/// One finished trial of the sweep, as fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SweepObservation {
    pub candidate_id: i64,
    /// Blocks of the pattern.
    pub depth: u32,
    /// Hidden size.
    pub width: u32,
    /// Training tokens.
    pub tokens: u64,
    /// Validation loss, nats per token.
    pub loss: f64,
    pub ppl: f64,
    /// The fitted law's loss here (at this budget for the token form).
    pub predicted_loss: f64,
}

/// A model of the larger half predicted by the law fitted on the smaller half.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeldOutPrediction {
    pub depth: u32,
    pub width: u32,
    pub tokens: u64,
    pub observed_loss: f64,
    pub predicted_loss: f64,
    pub observed_ppl: f64,
    pub predicted_ppl: f64,
    /// Signed, `(predicted − observed) / observed`.
    pub ppl_rel_error: f64,
}

/// Fit on the smaller models (`D·W²` at or below the median), predict the larger ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExtrapolationReport {
    pub fitted: usize,
    pub held_out: usize,
    pub loss_mean_rel_error: f64,
    pub loss_max_rel_error: f64,
    pub ppl_mean_rel_error: f64,
    pub ppl_max_rel_error: f64,
    pub rows: Vec<HeldOutPrediction>,
}

/// The bootstrap behind the intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BootstrapSummary {
    pub level: f64,
    pub requested: usize,
    /// Resamples whose fit converged; the intervals are their percentiles.
    pub succeeded: usize,
    pub seed: u64,
}

/// A fitted law: what `POST /api/v1/searches/{id}/scaling-fits` answers and the store keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScalingFit {
    pub id: i64,
    pub search_id: i64,
    pub created_at_ms: i64,
    pub form: FitForm,
    pub formula: String,
    /// The sweep's block, repeated `depth` times.
    pub pattern: Vec<OpKind>,
    /// The budget fitted, for `depth_width`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    pub coefficients: Vec<Coefficient>,
    /// Root mean squared residual, nats.
    pub rmse: f64,
    /// Coefficient of determination; absent when every loss is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    pub n: usize,
    /// Whether the least-squares solver converged; `false` when the data push a term to its bound
    /// (for example, loss that does not fall with depth at this budget): the coefficients are the
    /// best found, and that term is not pinned down.
    pub converged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extrapolation: Option<ExtrapolationReport>,
    /// Why there is no extrapolation check (too few models for a split), when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extrapolation_unavailable: Option<String>,
    pub observations: Vec<SweepObservation>,
}

impl ScalingFit {
    /// The law as the `scaling-law` crate predicts with it.
    pub fn coefficients(&self) -> scaling_law::Coefficients {
        let get = |name: &str| self.coefficients.iter().find(|c| c.name == name).map(|c| c.value);
        scaling_law::Coefficients {
            l0: get("l0").unwrap_or(f64::NAN),
            a: get("a").unwrap_or(f64::NAN),
            alpha: get("alpha").unwrap_or(f64::NAN),
            b: get("b").unwrap_or(f64::NAN),
            beta: get("beta").unwrap_or(f64::NAN),
            c: get("c"),
            gamma: get("gamma"),
        }
    }

    /// The data-free law at `tokens` (the token form) or as fitted.
    pub fn law_at(&self, tokens: Option<u64>) -> scaling_law::Fit {
        let fit = scaling_law::Fit {
            form: self.form.law(),
            coefficients: self.coefficients(),
            rmse: self.rmse,
            r2: self.r2.unwrap_or(f64::NAN),
            n: self.n,
            residuals: Vec::new(),
            converged: self.converged,
        };
        match tokens {
            Some(t) => fit.at_tokens(t as f64),
            None => fit,
        }
    }

    /// The largest budget the sweep trained.
    pub fn largest_tokens(&self) -> Option<u64> {
        self.observations.iter().map(|o| o.tokens).max()
    }
}

/// Why a sweep cannot be fitted, or a recommendation made: a field of the request (422) or the
/// state of the search (409).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScalingError {
    #[error("{field}: {message}")]
    Field { field: &'static str, message: String },
    #[error("{0}")]
    State(String),
}

fn field(field: &'static str, message: impl Into<String>) -> ScalingError {
    ScalingError::Field { field, message: message.into() }
}

/// The sweep's pattern, or why the search is not a sweep.
pub fn sweep_pattern(spec: &SearchSpec) -> Result<&[OpKind], ScalingError> {
    match &spec.algorithm {
        Algorithm::Sweep { pattern, .. } => Ok(pattern),
        other => Err(ScalingError::State(format!(
            "scaling laws are fitted to sweep searches; this one is `{}`",
            other.name()
        ))),
    }
}

/// Every finished (done) trial of a sweep as `(candidate, depth, width, tokens, loss, ppl)`.
pub fn sweep_points(
    pattern: &[OpKind],
    members: &[MemberRow],
    trials: &[TrialRow],
) -> Vec<(i64, u32, u32, u64, f64, f64)> {
    let shapes: BTreeMap<i64, (u32, u32)> = members
        .iter()
        .filter_map(|m| {
            let arch: search_space::Architecture =
                serde_json::from_value(m.candidate.architecture.clone()).ok()?;
            let depth = sweep_depth(&arch, pattern)?;
            Some((m.candidate.id, (depth, u32::try_from(m.candidate.hidden_size).ok()?)))
        })
        .collect();
    let mut points: Vec<_> = trials
        .iter()
        .filter(|t| t.state == TrialState::Done)
        .filter_map(|t| {
            let &(depth, width) = shapes.get(&t.candidate_id)?;
            let loss = t.val_loss.or_else(|| t.ppl.map(f64::ln))?;
            let ppl = t.ppl.unwrap_or_else(|| loss.exp());
            (loss.is_finite() && loss > 0.0).then_some((
                t.candidate_id,
                depth,
                width,
                u64::try_from(t.budget_tokens).unwrap_or(0),
                loss,
                ppl,
            ))
        })
        .collect();
    points.sort_by_key(|p| (p.3, p.1, p.2, p.0));
    points
}

/// Fits the sweep's finished trials; `id`, `search_id` and `created_at_ms` are left 0 for the
/// caller to fill from the stored row.
pub fn fit_sweep(
    pattern: &[OpKind],
    points: &[(i64, u32, u32, u64, f64, f64)],
    request: &FitRequest,
) -> Result<ScalingFit, ScalingError> {
    if request.resamples > MAX_RESAMPLES {
        return Err(field(
            "resamples",
            format!("must be at most {MAX_RESAMPLES}, got {}", request.resamples),
        ));
    }
    if !(request.level > 0.0 && request.level < 1.0) {
        return Err(field("level", format!("must lie strictly between 0 and 1, got {}", request.level)));
    }
    let mut budgets: Vec<u64> = points.iter().map(|p| p.3).collect();
    budgets.sort_unstable();
    budgets.dedup();
    if points.is_empty() {
        return Err(ScalingError::State(
            "the sweep has no finished trials yet; fit it once its models have trained".into(),
        ));
    }
    let form = request.form.unwrap_or(if budgets.len() >= scaling_law::fit::MIN_DISTINCT {
        FitForm::DepthWidthTokens
    } else {
        FitForm::DepthWidth
    });
    let (tokens, chosen): (Option<u64>, Vec<_>) = match form {
        FitForm::DepthWidthTokens => {
            if request.tokens.is_some() {
                return Err(field(
                    "tokens",
                    "applies to the depth_width form only; the token form fits every budget",
                ));
            }
            if budgets.len() < 3 {
                return Err(field(
                    "form",
                    format!(
                        "the token form needs finished results at 3 or more token budgets; this sweep has {}",
                        budgets.len()
                    ),
                ));
            }
            (None, points.to_vec())
        }
        FitForm::DepthWidth => {
            let t = match request.tokens {
                Some(t) if budgets.contains(&t) => t,
                Some(t) => {
                    let listed: Vec<String> = budgets.iter().map(u64::to_string).collect();
                    return Err(field(
                        "tokens",
                        format!(
                            "{t} is not a budget with finished results; the sweep has {}",
                            listed.join(", ")
                        ),
                    ));
                }
                None => *budgets.last().unwrap_or(&0),
            };
            (Some(t), points.iter().filter(|p| p.3 == t).copied().collect())
        }
    };
    let law = form.law();
    let observations: Vec<Observation> = chosen
        .iter()
        .map(|&(_, d, w, n, loss, _)| Observation::with_tokens(f64::from(d), f64::from(w), n as f64, loss))
        .collect();
    let options = scaling_law::FitOptions::default();
    let state = |e: scaling_law::FitError| ScalingError::State(format!("the fit failed: {e}"));
    let (point, intervals) = if request.resamples == 0 {
        (scaling_law::fit(&observations, law, &options).map_err(state)?, None)
    } else if request.resamples == 1 {
        return Err(field("resamples", "must be 0 (no intervals) or at least 2"));
    } else {
        let b = scaling_law::bootstrap(
            &observations,
            law,
            &options,
            request.resamples as usize,
            request.seed,
            request.level,
        )
        .map_err(state)?;
        (b.fit.clone(), Some(b))
    };
    let values = point.coefficients.values();
    let names = scaling_law::Coefficients::names(law);
    let interval_of = |name: &str| {
        let b = intervals.as_ref()?;
        match name {
            "l0" => Some(b.l0),
            "a" => Some(b.a),
            "alpha" => Some(b.alpha),
            "b" => Some(b.b),
            "beta" => Some(b.beta),
            "c" => b.c,
            "gamma" => b.gamma,
            _ => None,
        }
    };
    let coefficients = names
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let i = interval_of(name);
            Coefficient {
                name: (*name).to_owned(),
                value,
                lower: i.map(|i| i.lower),
                upper: i.map(|i| i.upper),
            }
        })
        .collect();
    let with_tokens = law.has_tokens();
    let (extrapolation, extrapolation_unavailable) =
        match scaling_law::extrapolation(&observations, law, &options, &Split::Median) {
            Ok(x) => {
                let rows = x
                    .rows
                    .iter()
                    .map(|r| {
                        let (_, d, w, n, _, _) = chosen[r.index];
                        HeldOutPrediction {
                            depth: d,
                            width: w,
                            tokens: n,
                            observed_loss: r.observation.loss,
                            predicted_loss: r.predicted_loss,
                            observed_ppl: r.observed_ppl,
                            predicted_ppl: r.predicted_ppl,
                            ppl_rel_error: r.ppl_rel_error,
                        }
                    })
                    .collect();
                let report = ExtrapolationReport {
                    fitted: x.fitted.len(),
                    held_out: x.rows.len(),
                    loss_mean_rel_error: x.loss_mean_rel_error,
                    loss_max_rel_error: x.loss_max_rel_error,
                    ppl_mean_rel_error: x.ppl_mean_rel_error,
                    ppl_max_rel_error: x.ppl_max_rel_error,
                    rows,
                };
                (Some(report), None)
            }
            Err(e) => (None, Some(e.to_string())),
        };
    let observations = chosen
        .iter()
        .map(|&(candidate_id, depth, width, tokens, loss, ppl)| SweepObservation {
            candidate_id,
            depth,
            width,
            tokens,
            loss,
            ppl,
            predicted_loss: point.predict(
                f64::from(depth),
                f64::from(width),
                with_tokens.then_some(tokens as f64),
            ),
        })
        .collect();
    Ok(ScalingFit {
        id: 0,
        search_id: 0,
        created_at_ms: 0,
        form,
        formula: law.formula().to_owned(),
        pattern: pattern.to_vec(),
        tokens,
        coefficients,
        rmse: point.rmse,
        r2: point.r2.is_finite().then_some(point.r2),
        n: point.n,
        converged: point.converged,
        bootstrap: intervals.as_ref().map(|b| BootstrapSummary {
            level: b.level,
            requested: b.requested,
            succeeded: b.succeeded,
            seed: request.seed,
        }),
        extrapolation,
        extrapolation_unavailable,
        observations,
    })
}

/// What to recommend for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// The device whose latency table scores each model; by default the one device with a table
    /// at the setting.
    #[serde(default)]
    #[schemars(length(min = 1, max = api::spec::MAX_KEY_CHARS), pattern(api::spec::NOT_BLANK))]
    pub device: Option<String>,
    /// Deployment setting, e.g. `batch=1,prompt=128,gen=1024`; by default the sweep's target.
    #[serde(default)]
    #[schemars(length(min = 1, max = api::spec::MAX_KEY_CHARS), pattern(api::spec::NOT_BLANK))]
    pub setting: Option<String>,
    /// The latency budget, milliseconds per decode of the setting.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub budget_ms: f64,
    /// Depths (blocks) to consider; by default 1 to twice the deepest swept.
    #[serde(default)]
    #[schemars(inner(range(min = 1, max = api::spec::MAX_SWEEP_DEPTH)))]
    pub depths: Vec<u32>,
    /// Widths to consider; by default every multiple of 16 from half the narrowest to twice the
    /// widest swept that dimensions the model settings.
    #[serde(default)]
    #[schemars(inner(range(min = 1, max = search_space::model::MAX_HIDDEN)))]
    pub widths: Vec<u32>,
    /// For a token law: the training budget to predict at; by default the largest swept.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// The best and up to `top − 1` runners-up.
    #[serde(default = "default_top")]
    #[schemars(range(min = 1, max = MAX_TOP))]
    pub top: u32,
}

fn default_top() -> u32 {
    5
}

/// One recommended model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecommendedModel {
    pub depth: u32,
    pub width: u32,
    /// Operators (sub-layers): depth × pattern length.
    pub layers: u32,
    pub params: u64,
    /// Estimated (calibrated) decode latency at the setting.
    pub latency_ms: f64,
    pub predicted_loss: f64,
    pub predicted_ppl: f64,
    /// Inside the swept depth and width range (an interpolation, not an extrapolation).
    pub within_sweep: bool,
}

/// The limits a recommendation puts on an evolutionary search's space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceConstraint {
    /// `space.hidden_sizes`.
    pub hidden_sizes: Vec<u32>,
    /// `space.max_operators`.
    pub max_operators: u32,
}

/// One (depth, width) pair evaluated, for plots.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GridPoint {
    pub depth: u32,
    pub width: u32,
    pub latency_ms: f64,
    pub predicted_loss: f64,
    pub within_budget: bool,
}

/// The answer of `POST /api/v1/scaling-fits/{id}/recommend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Recommendation {
    pub fit_id: i64,
    pub device: String,
    pub setting: String,
    pub budget_ms: f64,
    /// The training budget the losses are predicted at (token law only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    pub considered: usize,
    pub within_budget: usize,
    pub best: RecommendedModel,
    pub runners_up: Vec<RecommendedModel>,
    /// Use in an evolutionary search: its widths and operator cap.
    pub constraint: SpaceConstraint,
    /// Every pair evaluated.
    pub grid: Vec<GridPoint>,
}

/// Checks the request's lists and fills the defaults from the fit.
pub fn recommend_grid(
    fit: &ScalingFit,
    model: &ModelSettings,
    request: &RecommendRequest,
) -> Result<(Vec<u32>, Vec<u32>), ScalingError> {
    if !(request.budget_ms.is_finite() && request.budget_ms > 0.0) {
        return Err(field(
            "budget_ms",
            format!("must be a positive number of milliseconds, got {}", request.budget_ms),
        ));
    }
    if !(1..=MAX_TOP).contains(&request.top) {
        return Err(field("top", format!("must be in 1..={MAX_TOP}, got {}", request.top)));
    }
    let deepest = fit.observations.iter().map(|o| o.depth).max().unwrap_or(1);
    let narrowest = fit.observations.iter().map(|o| o.width).min().unwrap_or(16);
    let widest = fit.observations.iter().map(|o| o.width).max().unwrap_or(16);
    let depths: Vec<u32> = if request.depths.is_empty() {
        (1..=deepest.saturating_mul(2).min(api::spec::MAX_SWEEP_DEPTH)).collect()
    } else {
        for (i, &d) in request.depths.iter().enumerate() {
            if d == 0 || d > api::spec::MAX_SWEEP_DEPTH {
                return Err(field(
                    "depths",
                    format!("depths[{i}] must be in 1..={}, got {d}", api::spec::MAX_SWEEP_DEPTH),
                ));
            }
        }
        request.depths.clone()
    };
    let fits_model = |w: u32| sweep_architecture(model, &fit.pattern, 1, w).expand().is_ok();
    let widths: Vec<u32> = if request.widths.is_empty() {
        default_widths(model, &fit.pattern, narrowest, widest)
    } else {
        for (i, &w) in request.widths.iter().enumerate() {
            if w == 0 || w > search_space::model::MAX_HIDDEN || !fits_model(w) {
                return Err(field(
                    "widths",
                    format!("widths[{i}] = {w} does not dimension the sweep's model settings"),
                ));
            }
        }
        request.widths.clone()
    };
    if widths.is_empty() {
        return Err(field(
            "widths",
            "no width in the default range dimensions the model settings; list widths",
        ));
    }
    if depths.len().saturating_mul(widths.len()) > MAX_RECOMMEND_GRID {
        return Err(field(
            "depths",
            format!(
                "{} depths × {} widths is more than {MAX_RECOMMEND_GRID} models",
                depths.len(),
                widths.len()
            ),
        ));
    }
    Ok((depths, widths))
}

/// The widths a recommendation considers by default: every multiple of 16 from half the
/// narrowest to twice the widest swept that dimensions the model settings.
pub fn default_widths(model: &ModelSettings, pattern: &[OpKind], narrowest: u32, widest: u32) -> Vec<u32> {
    let lo = (narrowest / 2).max(16).div_ceil(16) * 16;
    let hi = widest.saturating_mul(2).min(search_space::model::MAX_HIDDEN);
    (lo..=hi).step_by(16).filter(|&w| sweep_architecture(model, pattern, 1, w).expand().is_ok()).collect()
}

/// Ranks every (depth, width) of the grid within the budget by predicted loss.
#[allow(clippy::too_many_arguments)]
pub fn recommend(
    fit: &ScalingFit,
    model: &ModelSettings,
    latency: &dyn LatencyModel,
    device: String,
    setting: String,
    depths: &[u32],
    widths: &[u32],
    request: &RecommendRequest,
) -> Result<Recommendation, ScalingError> {
    let tokens = match fit.form {
        FitForm::DepthWidthTokens => Some(request.tokens.or(fit.largest_tokens()).unwrap_or(1)),
        FitForm::DepthWidth => {
            if request.tokens.is_some() {
                return Err(field("tokens", "applies to a token law only; this fit is at one budget"));
            }
            None
        }
    };
    if tokens == Some(0) {
        return Err(field("tokens", "must be at least 1"));
    }
    let law = fit.law_at(tokens);
    let mut grid = Vec::with_capacity(depths.len() * widths.len());
    let mut params = BTreeMap::new();
    let mut unscorable = None;
    for &d in depths {
        for &w in widths {
            let Ok(spec) = sweep_architecture(model, &fit.pattern, d, w).expand() else {
                continue;
            };
            match latency.estimate_ms(&spec) {
                Ok(latency_ms) => {
                    params.insert((d, w), spec.params().total);
                    grid.push((f64::from(d), f64::from(w), latency_ms));
                }
                Err(e) => unscorable = Some(e),
            }
        }
    }
    if grid.is_empty() {
        return Err(ScalingError::State(format!(
            "no model of the grid could be scored with the latency table: {}",
            unscorable.unwrap_or_else(|| "no model expands".into())
        )));
    }
    let top = request.top as usize;
    let ranked =
        scaling_law::recommend(&law, grid.iter().copied(), request.budget_ms, top).map_err(|e| match e {
            scaling_law::RecommendError::NothingFits { .. } => field("budget_ms", e.to_string()),
            other => ScalingError::State(other.to_string()),
        })?;
    let (dmin, dmax) = span(fit.observations.iter().map(|o| o.depth));
    let (wmin, wmax) = span(fit.observations.iter().map(|o| o.width));
    let pattern_len = fit.pattern.len() as u32;
    let model_of = |c: &scaling_law::Candidate| {
        let (depth, width) = (c.depth as u32, c.width as u32);
        RecommendedModel {
            depth,
            width,
            layers: depth * pattern_len,
            params: params.get(&(depth, width)).copied().unwrap_or(0),
            latency_ms: c.latency_ms,
            predicted_loss: c.predicted_loss,
            predicted_ppl: c.predicted_ppl,
            within_sweep: (dmin..=dmax).contains(&depth) && (wmin..=wmax).contains(&width),
        }
    };
    let best = model_of(&ranked.best);
    let grid = grid
        .iter()
        .map(|&(d, w, latency_ms)| GridPoint {
            depth: d as u32,
            width: w as u32,
            latency_ms,
            predicted_loss: law.predict(d, w, None),
            within_budget: latency_ms <= request.budget_ms,
        })
        .collect();
    Ok(Recommendation {
        fit_id: fit.id,
        device,
        setting,
        budget_ms: request.budget_ms,
        tokens,
        considered: ranked.considered,
        within_budget: ranked.within_budget,
        constraint: SpaceConstraint { hidden_sizes: vec![best.width], max_operators: best.layers },
        runners_up: ranked.runners_up.iter().map(model_of).collect(),
        best,
        grid,
    })
}

fn span(values: impl Iterator<Item = u32>) -> (u32, u32) {
    values.fold((u32::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}
