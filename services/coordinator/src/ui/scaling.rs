//! One scaling-law fit of a sweep search: its coefficients with their bootstrap intervals, the
//! held-out extrapolation check, measured loss against depth with the fitted curve per width, and
//! a recommendation form that plots the evaluated (depth, width) grid against a latency budget.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::chart::{self, Axes, Frame, Scale, px};
use super::{UiError, UiPath, UiReader, format, query, render_html};
use crate::app::scaling::{get_fit, run_recommend};
use crate::app::{AppError, AppState};
use crate::scaling::{FitForm, RecommendRequest, Recommendation, RecommendedModel, ScalingFit};

/// Colours of the per-width series (CSS classes `s0`…`s7`), repeated past eight widths.
const SERIES: usize = 8;
/// Points sampled along each fitted curve.
const CURVE_SAMPLES: usize = 48;

const LOSS_FRAME: Frame = Frame::new(620.0, 380.0);
const GRID_FRAME: Frame = Frame::new(620.0, 380.0);

/// The recommendation form's query string; every field optional, blank meaning absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendParams {
    #[serde(default)]
    pub budget_ms: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub setting: Option<String>,
}

fn filled(v: Option<&String>) -> Option<String> {
    v.map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// One row of the coefficient table.
#[derive(Debug)]
pub struct CoefficientRow {
    pub name: String,
    pub symbol: &'static str,
    /// Full precision, for scripts and tests.
    pub raw: String,
    pub value: String,
    pub lower: String,
    pub upper: String,
}

fn symbol(name: &str) -> &'static str {
    match name {
        "l0" => "L₀",
        "a" => "a",
        "alpha" => "α",
        "b" => "b",
        "beta" => "β",
        "c" => "c",
        "gamma" => "γ",
        _ => "",
    }
}

fn fixed(v: f64, decimals: usize) -> String {
    if v.is_finite() { format!("{v:.decimals$}") } else { "—".to_owned() }
}

/// Five significant figures, in scientific notation when a fixed form would hide them (a
/// coefficient a fit drove towards 0 reads `2.0407e-19`, not `0.0000`).
fn significant(v: f64) -> String {
    if !v.is_finite() {
        "—".to_owned()
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

fn percent(v: f64) -> String {
    if v.is_finite() { format!("{:.2} %", 100.0 * v) } else { "—".to_owned() }
}

#[derive(Debug)]
pub struct HeldOutRow {
    pub depth: u32,
    pub width: u32,
    pub tokens: String,
    pub observed_loss: String,
    pub predicted_loss: String,
    pub observed_ppl: String,
    pub predicted_ppl: String,
    pub ppl_rel_error: String,
}

/// The held-out extrapolation figures.
#[derive(Debug)]
pub struct ExtrapolationView {
    pub fitted: usize,
    pub held_out: usize,
    pub loss_mean: String,
    pub loss_max: String,
    pub ppl_mean: String,
    pub ppl_max: String,
    pub rows: Vec<HeldOutRow>,
}

/// One measured point of the loss-vs-depth plot.
#[derive(Debug)]
pub struct ObsMark {
    pub series: usize,
    pub depth: u32,
    pub width: u32,
    pub loss: String,
    pub cx: String,
    pub cy: String,
    pub title: String,
}

/// The fitted curve of one width.
#[derive(Debug)]
pub struct FitLine {
    pub series: usize,
    pub width: u32,
    pub points: String,
}

#[derive(Debug)]
pub struct LegendItem {
    pub series: usize,
    pub width: u32,
}

#[derive(Debug)]
pub struct LossChart {
    pub axes: Axes,
    pub marks: Vec<ObsMark>,
    pub lines: Vec<FitLine>,
    pub legend: Vec<LegendItem>,
    /// Which observations are drawn: `all 16 observations` or the largest budget's.
    pub note: String,
}

/// Measured loss against depth, one series per width, with the law's curve across the depth
/// range. For the token form only the largest budget's observations are drawn, against the law
/// at that budget.
pub fn loss_chart(fit: &ScalingFit) -> LossChart {
    let (tokens, note) = match fit.form {
        FitForm::DepthWidthTokens => {
            let t = fit.largest_tokens();
            (
                t,
                t.map_or_else(String::new, |t| {
                    format!("at the largest budget, {} tokens", format::count(t as i64))
                }),
            )
        }
        FitForm::DepthWidth => {
            (None, fit.tokens.map_or_else(String::new, |t| format!("at {} tokens", format::count(t as i64))))
        }
    };
    let law = fit.law_at(tokens);
    let observations: Vec<_> =
        fit.observations.iter().filter(|o| tokens.is_none_or(|t| o.tokens == t)).collect();
    let widths: Vec<u32> =
        observations.iter().map(|o| o.width).collect::<BTreeSet<_>>().into_iter().collect();
    let series = |w: u32| widths.iter().position(|&x| x == w).unwrap_or(0) % SERIES;
    let (dlo, dhi) = observations.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), o| {
        (lo.min(f64::from(o.depth)), hi.max(f64::from(o.depth)))
    });
    let samples: Vec<f64> = if dlo.is_finite() && dhi > dlo {
        (0..CURVE_SAMPLES).map(|i| dlo + (dhi - dlo) * i as f64 / (CURVE_SAMPLES - 1) as f64).collect()
    } else if dlo.is_finite() {
        vec![dlo]
    } else {
        Vec::new()
    };
    let curves: Vec<(u32, Vec<(f64, f64)>)> = widths
        .iter()
        .map(|&w| {
            let points = samples
                .iter()
                .map(|&d| (d, law.predict(d, f64::from(w), None)))
                .filter(|p| p.1.is_finite())
                .collect();
            (w, points)
        })
        .collect();
    let mut xy: Vec<(f64, f64)> = observations.iter().map(|o| (f64::from(o.depth), o.loss)).collect();
    xy.extend(curves.iter().flat_map(|(_, c)| c.iter().copied()));
    let frame = LOSS_FRAME;
    let (x, y) = chart::scales_for(&frame, &xy, &[]);
    let marks = observations
        .iter()
        .map(|o| ObsMark {
            series: series(o.width),
            depth: o.depth,
            width: o.width,
            loss: o.loss.to_string(),
            cx: px(x.map(f64::from(o.depth))),
            cy: px(y.map(o.loss)),
            title: format!(
                "depth {} · width {} · loss {:.4} (law {:.4}) · PPL {:.3}",
                o.depth, o.width, o.loss, o.predicted_loss, o.ppl
            ),
        })
        .collect();
    let lines = curves
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(w, c)| FitLine {
            series: series(*w),
            width: *w,
            points: chart::polyline(c.iter().map(|&(d, l)| (x.map(d), y.map(l)))),
        })
        .collect();
    LossChart {
        axes: Axes::new(frame, &x, &y, "depth (blocks)", "validation loss (nats/token)"),
        marks,
        lines,
        legend: widths.iter().map(|&w| LegendItem { series: series(w), width: w }).collect(),
        note,
    }
}

/// One evaluated (depth, width) pair of the recommendation grid.
#[derive(Debug)]
pub struct GridMark {
    pub class: &'static str,
    pub radius: &'static str,
    pub depth: u32,
    pub width: u32,
    pub latency: String,
    pub cx: String,
    pub cy: String,
    pub title: String,
}

#[derive(Debug)]
pub struct GridChart {
    pub axes: Axes,
    pub marks: Vec<GridMark>,
    pub feasible: usize,
}

/// The grid as marks at (depth, width): those within the budget filled, the best highlighted and
/// drawn last, so it sits on top.
pub fn grid_chart(r: &Recommendation) -> GridChart {
    let frame = GRID_FRAME;
    let xy: Vec<(f64, f64)> = r.grid.iter().map(|g| (f64::from(g.depth), f64::from(g.width))).collect();
    let (x, y) = chart::scales_for(&frame, &xy, &[]);
    let x = Scale { d0: x.d0.max(0.0), ..x };
    let is_best = |d: u32, w: u32| d == r.best.depth && w == r.best.width;
    let is_runner_up = |d: u32, w: u32| r.runners_up.iter().any(|m| m.depth == d && m.width == w);
    let mut grid: Vec<_> = r.grid.iter().collect();
    grid.sort_by_key(|g| (is_best(g.depth, g.width), is_runner_up(g.depth, g.width)));
    let marks = grid
        .iter()
        .map(|g| {
            let class = match (g.within_budget, is_best(g.depth, g.width), is_runner_up(g.depth, g.width)) {
                (true, true, _) => "grid-point feasible best",
                (false, true, _) => "grid-point best",
                (true, false, true) => "grid-point feasible runner-up",
                (true, false, false) => "grid-point feasible",
                (false, false, _) => "grid-point",
            };
            GridMark {
                class,
                radius: if is_best(g.depth, g.width) { "7" } else { "3.5" },
                depth: g.depth,
                width: g.width,
                latency: g.latency_ms.to_string(),
                cx: px(x.map(f64::from(g.depth))),
                cy: px(y.map(f64::from(g.width))),
                title: format!(
                    "depth {} · width {} · {} · predicted loss {:.4}{}",
                    g.depth,
                    g.width,
                    format::ms(Some(g.latency_ms)),
                    g.predicted_loss,
                    if g.within_budget { "" } else { " · over the budget" }
                ),
            }
        })
        .collect();
    GridChart {
        axes: Axes::new(frame, &x, &y, "depth (blocks)", "width (hidden size)"),
        marks,
        feasible: r.grid.iter().filter(|g| g.within_budget).count(),
    }
}

/// One recommended model as the table shows it.
#[derive(Debug)]
pub struct ModelRow {
    pub rank: usize,
    pub depth: u32,
    pub width: u32,
    pub layers: u32,
    pub params: String,
    pub latency: String,
    pub latency_raw: String,
    pub loss: String,
    pub ppl: String,
    pub within_sweep: &'static str,
}

impl ModelRow {
    fn of(rank: usize, m: &RecommendedModel) -> Self {
        Self {
            rank,
            depth: m.depth,
            width: m.width,
            layers: m.layers,
            params: format::count(i64::try_from(m.params).unwrap_or(i64::MAX)),
            latency: format::ms(Some(m.latency_ms)),
            latency_raw: m.latency_ms.to_string(),
            loss: fixed(m.predicted_loss, 4),
            ppl: format::ppl(Some(m.predicted_ppl)),
            within_sweep: if m.within_sweep { "yes" } else { "no (extrapolated)" },
        }
    }
}

/// A recommendation as the page shows it.
#[derive(Debug)]
pub struct RecommendationView {
    pub device: String,
    pub setting: String,
    pub budget: String,
    pub tokens: Option<String>,
    pub considered: usize,
    pub within_budget: usize,
    pub models: Vec<ModelRow>,
    pub hidden_sizes: String,
    pub max_operators: u32,
    pub chart: GridChart,
}

fn recommendation_view(r: &Recommendation) -> RecommendationView {
    RecommendationView {
        device: r.device.clone(),
        setting: r.setting.clone(),
        budget: format::ms(Some(r.budget_ms)),
        tokens: r.tokens.map(|t| format::count(t as i64)),
        considered: r.considered,
        within_budget: r.within_budget,
        models: std::iter::once(&r.best)
            .chain(&r.runners_up)
            .enumerate()
            .map(|(i, m)| ModelRow::of(i + 1, m))
            .collect(),
        hidden_sizes: r.constraint.hidden_sizes.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        max_operators: r.constraint.max_operators,
        chart: grid_chart(r),
    }
}

#[derive(Template)]
#[template(path = "scaling_fit.html")]
struct FitPage {
    title: String,
    id: i64,
    search_id: i64,
    search_name: String,
    form: &'static str,
    formula: String,
    pattern: String,
    tokens: Option<String>,
    n: usize,
    rmse: String,
    r2: String,
    converged: bool,
    created: String,
    level: Option<String>,
    bootstrap: Option<String>,
    coefficients: Vec<CoefficientRow>,
    extrapolation: Option<ExtrapolationView>,
    extrapolation_unavailable: Option<String>,
    loss: LossChart,
    budget_ms: String,
    device: String,
    setting: String,
    default_setting: String,
    recommendation: Option<RecommendationView>,
    recommend_error: Option<String>,
}

/// Why a recommendation could not be made, and the status the page answers with: a problem with
/// the form's input is a bad request, as on the other pages; the search's state a conflict.
fn recommend_problem(e: AppError) -> Result<(StatusCode, String), UiError> {
    match e {
        AppError::Invalid(fields) => Ok((
            StatusCode::BAD_REQUEST,
            fields.iter().map(|f| format!("{}: {}", f.path, f.message)).collect::<Vec<_>>().join("; "),
        )),
        AppError::BadRequest(m) => Ok((StatusCode::BAD_REQUEST, m)),
        AppError::Conflict(m) => Ok((StatusCode::CONFLICT, m)),
        other => Err(other.into()),
    }
}

pub async fn show(
    _: UiReader,
    State(state): State<AppState>,
    UiPath(id): UiPath<i64>,
    params: Result<Query<RecommendParams>, QueryRejection>,
) -> Result<Response, UiError> {
    let params = query(params)?;
    let fit = get_fit(&state, id).await?;
    let search = state.store.get_search(fit.search_id).await?;
    let default_setting = search
        .as_ref()
        .and_then(|s| s.spec.pointer("/target/setting"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let budget_text = filled(params.budget_ms.as_ref());
    let device = filled(params.device.as_ref());
    let setting = filled(params.setting.as_ref());
    let mut status = StatusCode::OK;
    let mut recommendation = None;
    let mut recommend_error = None;
    if let Some(text) = &budget_text {
        let outcome = match text.parse::<f64>() {
            Ok(budget_ms) => {
                let request = RecommendRequest {
                    device: device.clone(),
                    setting: setting.clone(),
                    budget_ms,
                    depths: Vec::new(),
                    widths: Vec::new(),
                    tokens: None,
                    top: 5,
                };
                run_recommend(&state, &fit, &request).await
            }
            Err(_) => Err(AppError::field("budget_ms", format!("`{text}` is not a number of milliseconds"))),
        };
        match outcome {
            Ok(r) => recommendation = Some(recommendation_view(&r)),
            Err(e) => {
                let (code, message) = recommend_problem(e)?;
                status = code;
                recommend_error = Some(message);
            }
        }
    }
    let level = fit.bootstrap.as_ref().map(|b| format!("{:.0} %", 100.0 * b.level));
    let page = FitPage {
        title: format!("Scaling-law fit {id}"),
        id,
        search_id: fit.search_id,
        search_name: search.map_or_else(|| format!("search {}", fit.search_id), |s| s.name),
        form: fit.form.as_str(),
        formula: fit.formula.clone(),
        pattern: fit.pattern.iter().map(|o| o.code()).collect::<Vec<_>>().join(" "),
        tokens: fit.tokens.map(|t| format::count(t as i64)),
        n: fit.n,
        rmse: fixed(fit.rmse, 5),
        r2: fit.r2.map_or_else(|| "—".to_owned(), |r| fixed(r, 5)),
        converged: fit.converged,
        created: format::utc(fit.created_at_ms),
        bootstrap: fit
            .bootstrap
            .as_ref()
            .map(|b| format!("{} of {} resamples converged (seed {})", b.succeeded, b.requested, b.seed)),
        level,
        coefficients: fit
            .coefficients
            .iter()
            .map(|c| CoefficientRow {
                name: c.name.clone(),
                symbol: symbol(&c.name),
                raw: c.value.to_string(),
                value: significant(c.value),
                lower: c.lower.map_or_else(|| "—".to_owned(), significant),
                upper: c.upper.map_or_else(|| "—".to_owned(), significant),
            })
            .collect(),
        extrapolation: fit.extrapolation.as_ref().map(|x| ExtrapolationView {
            fitted: x.fitted,
            held_out: x.held_out,
            loss_mean: percent(x.loss_mean_rel_error),
            loss_max: percent(x.loss_max_rel_error),
            ppl_mean: percent(x.ppl_mean_rel_error),
            ppl_max: percent(x.ppl_max_rel_error),
            rows: x
                .rows
                .iter()
                .map(|r| HeldOutRow {
                    depth: r.depth,
                    width: r.width,
                    tokens: format::count(r.tokens as i64),
                    observed_loss: fixed(r.observed_loss, 4),
                    predicted_loss: fixed(r.predicted_loss, 4),
                    observed_ppl: format::ppl(Some(r.observed_ppl)),
                    predicted_ppl: format::ppl(Some(r.predicted_ppl)),
                    ppl_rel_error: if r.ppl_rel_error.is_finite() {
                        format!("{:+.2} %", 100.0 * r.ppl_rel_error)
                    } else {
                        "—".to_owned()
                    },
                })
                .collect(),
        }),
        extrapolation_unavailable: fit.extrapolation_unavailable.clone(),
        loss: loss_chart(&fit),
        budget_ms: budget_text.unwrap_or_default(),
        device: device.unwrap_or_default(),
        setting: setting.unwrap_or_default(),
        default_setting,
        recommendation,
        recommend_error,
    };
    Ok((status, render_html(&page)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::{Coefficient, SweepObservation};

    fn fit(form: FitForm, tokens: &[u64]) -> ScalingFit {
        let coefficient =
            |name: &str, value: f64| Coefficient { name: name.into(), value, lower: None, upper: None };
        let mut coefficients = vec![
            coefficient("l0", 1.5),
            coefficient("a", 2.0),
            coefficient("alpha", 0.5),
            coefficient("b", 40.0),
            coefficient("beta", 0.8),
        ];
        if form == FitForm::DepthWidthTokens {
            coefficients.extend([coefficient("c", 100.0), coefficient("gamma", 0.3)]);
        }
        let mut observations = Vec::new();
        for &t in tokens {
            for d in [2, 4, 8] {
                for w in [64, 128] {
                    observations.push(SweepObservation {
                        candidate_id: 1,
                        depth: d,
                        width: w,
                        tokens: t,
                        loss: 3.0,
                        ppl: 3f64.exp(),
                        predicted_loss: 3.0,
                    });
                }
            }
        }
        ScalingFit {
            id: 1,
            search_id: 1,
            created_at_ms: 0,
            form,
            formula: String::new(),
            pattern: Vec::new(),
            tokens: None,
            coefficients,
            rmse: 0.0,
            r2: None,
            n: observations.len(),
            converged: true,
            bootstrap: None,
            extrapolation: None,
            extrapolation_unavailable: None,
            observations,
        }
    }

    #[test]
    fn coefficients_keep_their_magnitude() {
        assert_eq!(significant(7.78364), "7.7836");
        assert_eq!(significant(2.0407e-19), "2.0407e-19");
        assert_eq!(significant(0.0), "0.0000");
        assert_eq!(significant(f64::NAN), "—");
    }

    #[test]
    fn the_loss_plot_has_a_mark_per_observation_and_a_curve_per_width() {
        let c = loss_chart(&fit(FitForm::DepthWidth, &[4096]));
        assert_eq!(c.marks.len(), 6);
        assert_eq!(c.lines.len(), 2);
        assert_eq!(c.legend.len(), 2);
        assert!(c.lines.iter().all(|l| l.points.split(' ').count() == CURVE_SAMPLES));
    }

    #[test]
    fn the_token_form_draws_the_largest_budget_only() {
        let c = loss_chart(&fit(FitForm::DepthWidthTokens, &[1000, 2000, 4000]));
        assert_eq!(c.marks.len(), 6, "one budget's observations");
        assert_eq!(c.lines.len(), 2);
        assert!(c.note.contains("4000"), "{}", c.note);
    }
}
