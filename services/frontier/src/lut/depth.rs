//! `frontier lut depth-sweep`: measured and estimated latency of attention+FFN models of several
//! depths at one parameter count.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use clap::Args;
use lut::fidelity::relative_error;
use search_space::{Architecture, ModelSettings, ModelSpec, OpKind};
use worker::run::DeviceChoice;

use super::measure::{busy_warning, load_average, lut_covering, measure};
use super::{StoreArgs, open, parse_setting, settings_of};

#[derive(Debug, Args)]
pub struct DepthArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Deployment setting, e.g. `batch=1,prompt=64,gen=256`.
    #[arg(long)]
    setting: String,
    /// Depths (attention+FFN blocks) to compare.
    #[arg(long, value_delimiter = ',', default_value = "6,12,18,24,30")]
    depths: Vec<u32>,
    /// Parameter count every model is sized to (closest width); the 12-block model at hidden 128
    /// of the settings when omitted.
    #[arg(long)]
    params: Option<u64>,
    /// Preset whose model settings dimension the models.
    #[arg(long, default_value = "tiny-hybrid")]
    settings: String,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

/// The width (a multiple of 16, which every preset's head counts divide) whose `depth`-block
/// attention+FFN model has the parameter count closest to `params`.
fn width_for(settings: &ModelSettings, depth: u32, params: u64) -> Result<(u32, ModelSpec)> {
    let mut best: Option<(u64, u32, ModelSpec)> = None;
    for h in (16..=8192).step_by(16) {
        let Ok(model) = attention_ffn(&settings.with_hidden_size(h), depth) else {
            continue;
        };
        let gap = model.params().total.abs_diff(params);
        if best.as_ref().is_none_or(|b| gap < b.0) {
            best = Some((gap, h, model));
        }
    }
    best.map(|(_, h, m)| (h, m)).with_context(|| format!("no width fits depth {depth}"))
}

/// `depth` blocks of attention then FFN.
fn attention_ffn(settings: &ModelSettings, depth: u32) -> Result<ModelSpec> {
    let ops: Vec<OpKind> =
        (0..depth).flat_map(|_| [OpKind::Mixer(search_space::MixerKind::Attention), OpKind::Ffn]).collect();
    Ok(Architecture::from_layers(settings.clone(), ops).expand()?)
}

pub(super) async fn depth_sweep(args: DepthArgs) -> Result<String> {
    let setting = parse_setting(&args.setting, args.device)?;
    let settings = settings_of(&args.settings)?;
    if args.depths.is_empty() || args.depths.contains(&0) {
        bail!("--depths must list depths of at least 1 block");
    }
    let params = match args.params {
        Some(p) => p,
        None => attention_ffn(&settings.with_hidden_size(128), 12)?.params().total,
    };
    let mut models = Vec::new();
    for &d in &args.depths {
        models.push((d, width_for(&settings, d, params)?));
    }
    let store = open(&args.store).await?;
    let specs: Vec<ModelSpec> = models.iter().map(|(_, (_, m))| m.clone()).collect();
    let (fp, lut) = lut_covering(&store, args.device, &setting, &specs).await?;
    let mut out = String::new();
    writeln!(out, "device {fp}, setting {}, attention+FFN blocks at ~{params} parameters", setting.key())?;
    let load_before = load_average();
    writeln!(out, "load average before: {load_before}")?;
    if let Some(warning) = busy_warning(&load_before) {
        writeln!(out, "{warning}")?;
    }
    writeln!(
        out,
        "{:>5} {:>6} {:>10} {:>12} {:>14} {:>8}",
        "depth", "hidden", "params", "measured_ms", "estimated_ms", "error"
    )?;
    for (depth, (hidden, model)) in &models {
        let estimate = lut.estimate(model).map_err(|e| anyhow::anyhow!("depth {depth}: {e}"))?;
        let measured = measure(model, &setting, args.repeats, args.device)?;
        writeln!(
            out,
            "{:>5} {:>6} {:>10} {:>12.2} {:>14.2} {:>+7.1}%",
            depth,
            hidden,
            model.params().total,
            measured,
            estimate.latency_ms,
            100.0 * relative_error(estimate.latency_ms, measured)
        )?;
    }
    writeln!(out, "load average after: {}", load_average())?;
    writeln!(
        out,
        "estimates are {}",
        if lut.calibration().is_some() {
            "calibrated (stored calibration)"
        } else {
            "raw (no calibration stored)"
        }
    )?;
    Ok(out)
}
