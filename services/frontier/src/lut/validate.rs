//! `frontier lut validate`: sampled architectures measured end to end against the estimator, before
//! and after calibration; the calibration is stored.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use clap::Args;
use lut::fidelity::relative_error;
use lut::{Calibration, CalibrationSample, Fidelity, GROUPS, RawCost, fidelity};
use search_space::Architecture;
use search_space::space::rng;
use serde::Serialize;
use serde_json::json;

use super::measure::{busy_warning, load_average, lut_covering, measure};
use super::show::describe;
use super::{SpaceArgs, StoreArgs, open, resolve};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    space: SpaceArgs,
    /// Architectures to sample and measure.
    #[arg(long, default_value_t = 30)]
    samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Timed decode runs per architecture (median taken).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn raw_cost(c: &Case) -> RawCost {
    RawCost { total_ms: c.raw_ms, by_group_ms: c.raw_by_group_ms, layers: c.layers }
}

/// One validated architecture.
#[derive(Debug, Serialize)]
struct Case {
    pattern: String,
    hidden: u32,
    layers: usize,
    measured_ms: f64,
    raw_ms: f64,
    /// `raw_ms` split over the calibration's operator groups (`lut::GROUPS`).
    raw_by_group_ms: [f64; GROUPS.len()],
    calibrated_ms: f64,
    loo_ms: f64,
    extrapolated: bool,
}

fn fidelity_line(label: &str, f: &Fidelity) -> String {
    format!(
        "{label:<34} Spearman {:.3}  Kendall tau {:.3}  MAPE {:.1} %  within ±5 % {:.0} %  within ±10 % {:.0} %\n",
        f.spearman,
        f.kendall_tau,
        f.mape_pct,
        100.0 * f.within_5pct,
        100.0 * f.within_10pct
    )
}

pub(super) async fn validate(args: ValidateArgs) -> Result<String> {
    if args.samples < 3 {
        bail!("--samples must be at least 3 to fit a calibration and rank models");
    }
    let (space, settings, hidden, setting) = resolve(&args.space)?;
    let mut r = rng(args.seed);
    let mut models = Vec::with_capacity(args.samples);
    for i in 0..args.samples {
        let genome = space.sample(&mut r).context("sampling failed")?;
        let h = hidden[i % hidden.len()];
        models.push(Architecture::from_genome(settings.with_hidden_size(h), genome).expand()?);
    }
    let store = open(&args.store).await?;
    let (fp, lut) = lut_covering(&store, args.space.device, &setting, &models).await?;
    let load_before = load_average();
    let mut cases = Vec::with_capacity(models.len());
    for (i, m) in models.iter().enumerate() {
        let estimate = lut.estimate(m).map_err(|e| anyhow::anyhow!("{}: {e}", m.pattern()))?;
        let measured_ms = measure(m, &setting, args.repeats, args.space.device)?;
        eprintln!(
            "measured {}/{}: hidden {} {} layers: {measured_ms:.2} ms (raw estimate {:.2} ms)",
            i + 1,
            models.len(),
            m.hidden_size,
            m.layers.len(),
            estimate.raw_ms
        );
        cases.push(Case {
            pattern: m.pattern(),
            hidden: m.hidden_size,
            layers: m.layers.len(),
            measured_ms,
            raw_ms: estimate.raw_ms,
            raw_by_group_ms: estimate.raw_by_group_ms,
            calibrated_ms: f64::NAN,
            loo_ms: f64::NAN,
            extrapolated: estimate.extrapolated,
        });
    }
    let load_after = load_average();
    let sample = |c: &Case| CalibrationSample { raw: raw_cost(c), measured_ms: c.measured_ms };
    let all: Vec<CalibrationSample> = cases.iter().map(sample).collect();
    let calibration = Calibration::fit(&all)?;
    for (i, case) in cases.iter_mut().enumerate() {
        // Leave-one-out: each case is predicted by a calibration that never saw it.
        let others: Vec<CalibrationSample> =
            all.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, s)| *s).collect();
        let loo = Calibration::fit(&others)?;
        case.calibrated_ms = calibration.apply(&raw_cost(case));
        case.loo_ms = loo.apply(&raw_cost(case));
    }
    let measured: Vec<f64> = cases.iter().map(|c| c.measured_ms).collect();
    let col = |f: fn(&Case) -> f64| cases.iter().map(f).collect::<Vec<f64>>();
    let raw = fidelity(&col(|c| c.raw_ms), &measured);
    let fitted = fidelity(&col(|c| c.calibrated_ms), &measured);
    let loo = fidelity(&col(|c| c.loo_ms), &measured);
    // The cases are kept with the figures so the devices page can plot measured against estimated.
    let report = json!({ "raw": raw, "calibrated": fitted, "calibrated_leave_one_out": loo,
                         "samples": cases.len(), "load_average": [load_before, load_after], "cases": cases });
    store.put_lut_calibration(&fp, &setting.key(), &serde_json::to_value(calibration)?, &report).await?;
    let mut worst: Vec<&Case> = cases.iter().collect();
    worst.sort_by(|a, b| {
        relative_error(b.loo_ms, b.measured_ms)
            .abs()
            .total_cmp(&relative_error(a.loo_ms, a.measured_ms).abs())
    });
    if args.json {
        let out = json!({ "device": fp, "setting": setting.key(), "fidelity": report,
                          "calibration": calibration, "cases": cases });
        return Ok(serde_json::to_string_pretty(&out)? + "\n");
    }
    let mut out = String::new();
    writeln!(out, "device {fp}, setting {}, {} sampled architectures", setting.key(), cases.len())?;
    writeln!(out, "load average (1/5/15 min) before measuring: {load_before}; after: {load_after}")?;
    if let Some(warning) = busy_warning(&load_before) {
        writeln!(out, "{warning}")?;
    }
    out += &fidelity_line("uncalibrated:", &raw);
    out += &fidelity_line("calibrated (fit on these samples):", &fitted);
    out += &fidelity_line("calibrated (leave-one-out):", &loo);
    writeln!(out, "calibration stored: {}", describe(&calibration))?;
    writeln!(out, "worst 5 (leave-one-out):")?;
    for c in worst.iter().take(5) {
        writeln!(
            out,
            "  {:+6.1} %  measured {:8.2} ms  estimated {:8.2} ms  hidden {:4}  {}",
            100.0 * relative_error(c.loo_ms, c.measured_ms),
            c.measured_ms,
            c.loo_ms,
            c.hidden,
            c.pattern
        )?;
    }
    Ok(out)
}
