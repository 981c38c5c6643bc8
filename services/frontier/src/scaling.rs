//! `frontier scaling-law {fit, show, recommend}`: depth-width scaling laws over a sweep search,
//! through a coordinator's API.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use coordinator::scaling::{
    FitForm, FitRequest, RecommendRequest, Recommendation, RecommendedModel, ScalingFit,
};
use serde_json::Value;

use crate::service::{ClientArgs, read_spec, text_table};

#[derive(Debug, Subcommand)]
pub enum ScalingCommand {
    /// Fit L(D, W[, N]) = L0 + a·D^-α + b·W^-β [+ c·N^-γ] to a sweep's finished trials.
    Fit(FitArgs),
    /// Show a stored fit.
    Show(ShowArgs),
    /// The depth and width with the lowest predicted loss within a latency budget.
    Recommend(RecommendArgs),
}

pub fn run(cmd: ScalingCommand) -> Result<String> {
    match cmd {
        ScalingCommand::Fit(args) => fit(args),
        ScalingCommand::Show(args) => show(args),
        ScalingCommand::Recommend(args) => recommend(args),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormArg {
    /// L0 + a·D^-α + b·W^-β on one token budget's results.
    DepthWidth,
    /// L0 + a·D^-α + b·W^-β + c·N^-γ on every budget's results.
    DepthWidthTokens,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// The sweep search's id.
    search: i64,
    /// The law; by default the token form when the sweep has results at three or more budgets.
    #[arg(long, value_enum)]
    form: Option<FormArg>,
    /// For depth-width: the budget whose results are fitted (default: the largest).
    #[arg(long)]
    tokens: Option<u64>,
    /// Bootstrap resamples for the intervals (0: none).
    #[arg(long, default_value_t = 200)]
    resamples: u32,
    /// Interval coverage.
    #[arg(long, default_value_t = 0.9)]
    level: f64,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the JSON the API returns.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn fit(args: FitArgs) -> Result<String> {
    let request = FitRequest {
        form: args.form.map(|f| match f {
            FormArg::DepthWidth => FitForm::DepthWidth,
            FormArg::DepthWidthTokens => FitForm::DepthWidthTokens,
        }),
        tokens: args.tokens,
        resamples: args.resamples,
        level: args.level,
        seed: args.seed,
    };
    let body = serde_json::to_value(&request)?;
    let path = format!("/api/v1/searches/{}/scaling-fits", args.search);
    let answer = args.client.blocking()?.json(reqwest::Method::POST, &path, Some(&body))?;
    fit_output(answer, args.json)
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The fit's id.
    fit: i64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn show(args: ShowArgs) -> Result<String> {
    let path = format!("/api/v1/scaling-fits/{}", args.fit);
    let answer = args.client.blocking()?.json(reqwest::Method::GET, &path, None)?;
    fit_output(answer, args.json)
}

fn fit_output(answer: Value, json: bool) -> Result<String> {
    if json {
        return Ok(format!("{answer}\n"));
    }
    let fit: ScalingFit = serde_json::from_value(answer).context("the coordinator's fit does not parse")?;
    Ok(fit_text(&fit))
}

/// A fit as people read it.
pub fn fit_text(fit: &ScalingFit) -> String {
    let at = fit.tokens.map(|t| format!(" at {t} tokens")).unwrap_or_default();
    let mut out = format!(
        "fit {} of search {}: {}{at}, {} ({} observations)\n",
        fit.id,
        fit.search_id,
        fit.form.as_str(),
        fit.formula,
        fit.n
    );
    let level = fit.bootstrap.as_ref().map(|b| format!("{:.0}% interval", b.level * 100.0));
    let rows = fit
        .coefficients
        .iter()
        .map(|c| {
            let interval = match (c.lower, c.upper) {
                (Some(l), Some(u)) => format!("[{}, {}]", sig(l), sig(u)),
                _ => "-".into(),
            };
            vec![c.name.clone(), sig(c.value), interval]
        })
        .collect();
    out.push_str(&text_table(&["coefficient", "value", level.as_deref().unwrap_or("interval")], rows));
    let r2 = fit.r2.map(|r| format!("{r:.4}")).unwrap_or_else(|| "-".into());
    out.push_str(&format!("rmse {} nats, R² {r2}\n", sig(fit.rmse)));
    if !fit.converged {
        out.push_str(
            "note: the solver did not converge: the data push a term towards its bound (a coefficient \
             or exponent heading to 0 or infinity), so that term is not pinned down by this sweep\n",
        );
    }
    if let Some(b) = &fit.bootstrap {
        out.push_str(&format!(
            "bootstrap: {} of {} resamples fitted (seed {})\n",
            b.succeeded, b.requested, b.seed
        ));
    }
    match (&fit.extrapolation, &fit.extrapolation_unavailable) {
        (Some(x), _) => out.push_str(&format!(
            "extrapolation: fitted the {} smaller models (D·W² at or below the median), predicted the {} larger: \
             perplexity error mean {:.2} %, max {:.2} % (loss mean {:.2} %, max {:.2} %)\n",
            x.fitted,
            x.held_out,
            100.0 * x.ppl_mean_rel_error,
            100.0 * x.ppl_max_rel_error,
            100.0 * x.loss_mean_rel_error,
            100.0 * x.loss_max_rel_error
        )),
        (None, Some(reason)) => out.push_str(&format!("extrapolation: not checked: {reason}\n")),
        (None, None) => {}
    }
    out
}

fn sig(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e5 || x.abs() < 1e-3) { format!("{x:.4e}") } else { format!("{x:.5}") }
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// The fit's id.
    #[arg(long)]
    fit: i64,
    /// The latency budget in milliseconds (one decode of the setting).
    #[arg(long)]
    budget_ms: f64,
    /// Device fingerprint whose latency table scores the models (default: the one with a table).
    #[arg(long)]
    device: Option<String>,
    /// Deployment setting, e.g. `batch=1,prompt=128,gen=1024` (default: the sweep's target).
    #[arg(long)]
    setting: Option<String>,
    /// Depths to consider, comma-separated (default: 1 to twice the deepest swept).
    #[arg(long, value_delimiter = ',')]
    depths: Vec<u32>,
    /// Widths to consider, comma-separated (default: multiples of 16 around the swept range).
    #[arg(long, value_delimiter = ',')]
    widths: Vec<u32>,
    /// For a token law: the training budget to predict at (default: the largest swept).
    #[arg(long)]
    tokens: Option<u64>,
    /// How many models to list.
    #[arg(long, default_value_t = 5)]
    top: u32,
    /// A search spec to constrain with the recommendation (its hidden sizes and operator cap).
    #[arg(long, requires = "write_spec")]
    spec: Option<PathBuf>,
    /// Where to write the constrained spec (JSON), ready for `frontier submit`.
    #[arg(long, requires = "spec")]
    write_spec: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn recommend(args: RecommendArgs) -> Result<String> {
    // The spec is read first, so a bad file is reported before any request.
    let spec = args.spec.as_deref().map(read_spec).transpose()?;
    let request = RecommendRequest {
        device: args.device,
        setting: args.setting,
        budget_ms: args.budget_ms,
        depths: args.depths,
        widths: args.widths,
        tokens: args.tokens,
        top: args.top,
    };
    let body = serde_json::to_value(&request)?;
    let path = format!("/api/v1/scaling-fits/{}/recommend", args.fit);
    let answer = args.client.blocking()?.json(reqwest::Method::POST, &path, Some(&body))?;
    let rec: Recommendation =
        serde_json::from_value(answer.clone()).context("the coordinator's recommendation does not parse")?;
    let mut out = if args.json { format!("{answer}\n") } else { recommendation_text(&rec) };
    if let (Some(mut spec), Some(target)) = (spec, args.write_spec) {
        spec.space.hidden_sizes = rec.constraint.hidden_sizes.clone();
        spec.space.max_operators = rec.constraint.max_operators;
        if let Err(e) = spec.validate() {
            bail!(
                "the spec constrained to hidden size {:?} and at most {} operators is not valid: {e}",
                rec.constraint.hidden_sizes,
                rec.constraint.max_operators
            );
        }
        let text = serde_json::to_string_pretty(&spec)?;
        std::fs::write(&target, text + "\n").with_context(|| format!("cannot write {}", target.display()))?;
        if !args.json {
            out.push_str(&format!(
                "wrote {} (submit it with `frontier submit {}`)\n",
                target.display(),
                target.display()
            ));
        }
    }
    Ok(out)
}

/// A recommendation as people read it.
pub fn recommendation_text(rec: &Recommendation) -> String {
    let at = rec.tokens.map(|t| format!(", losses at {t} training tokens")).unwrap_or_default();
    let mut out = format!(
        "budget {} ms on {} at {}{at}: {} of {} models fit\n",
        rec.budget_ms, rec.device, rec.setting, rec.within_budget, rec.considered
    );
    let row = |rank: usize, m: &RecommendedModel| {
        vec![
            rank.to_string(),
            m.depth.to_string(),
            m.width.to_string(),
            m.layers.to_string(),
            m.params.to_string(),
            format!("{:.3}", m.latency_ms),
            format!("{:.4}", m.predicted_loss),
            format!("{:.3}", m.predicted_ppl),
            if m.within_sweep { "yes" } else { "no" }.into(),
        ]
    };
    let rows =
        std::iter::once(&rec.best).chain(&rec.runners_up).enumerate().map(|(i, m)| row(i + 1, m)).collect();
    out.push_str(&text_table(
        &["rank", "depth", "width", "layers", "params", "latency_ms", "pred_loss", "pred_ppl", "in_sweep"],
        rows,
    ));
    out.push_str(&format!(
        "search constraint: space.hidden_sizes = {:?}, space.max_operators = {}\n",
        rec.constraint.hidden_sizes, rec.constraint.max_operators
    ));
    out
}
