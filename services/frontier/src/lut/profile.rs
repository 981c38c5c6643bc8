//! `frontier lut profile`, and the profiling `frontier run` does before a search: operator shapes
//! measured on this device and written to the store under its fingerprint.

use anyhow::{Result, bail};
use clap::Args;
use coordinator::Store;
use coordinator::store::{NewDevice, NewLutEntry};
use lut::{DeploymentSetting, LutEntry, OpShape, shapes_for};
use search_space::{Architecture, Dtype, ModelSettings, OpKind, SearchSpace};
use worker::profile::{ProfileConfig, fingerprint, profile};
use worker::run::DeviceChoice;

use super::{SpaceArgs, StoreArgs, open, resolve};

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    space: SpaceArgs,
    /// Untimed repeats per shape.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed repeats per shape.
    #[arg(long, default_value_t = 15)]
    repeats: usize,
    /// Decode steps per timed repeat.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Copies of each sub-layer stepped through in turn, so weights stream from memory as in a
    /// model of about that depth.
    #[arg(long, default_value_t = 24)]
    stack: usize,
}

/// Every shape the space's models need at these widths: one model per width holding each mixer
/// of the space and an FFN says it all, since settings fix every operator's dimensions.
fn space_shapes(
    space: &SearchSpace,
    settings: &ModelSettings,
    hidden: &[u32],
    setting: &DeploymentSetting,
) -> Result<Vec<OpShape>> {
    let mut out = Vec::new();
    for &h in hidden {
        let ops: Vec<OpKind> = space.mixers.iter().map(|m| OpKind::Mixer(*m)).chain([OpKind::Ffn]).collect();
        let model = Architecture::from_layers(settings.with_hidden_size(h), ops).expand()?;
        for shape in shapes_for(&model, setting) {
            if !out.contains(&shape) {
                out.push(shape);
            }
        }
    }
    Ok(out)
}

/// Profiles `shapes` here and writes them under this device's fingerprint; returns the fingerprint.
pub(super) async fn profile_into(
    store: &Store,
    shapes: &[OpShape],
    setting: &DeploymentSetting,
    config: ProfileConfig,
    device: DeviceChoice,
) -> Result<String> {
    let info = fingerprint(device)?;
    store
        .upsert_device(&NewDevice {
            fingerprint: info.fingerprint.clone(),
            name: info.name.clone(),
            kind: info.kind.clone(),
            info: info.info.clone(),
        })
        .await?;
    let total = shapes.len();
    let entries = profile(shapes, setting, config, device, |i, shape| {
        eprintln!("profiling {}/{total}: {shape}", i + 1);
    })?;
    store.put_lut_entries(&rows(&info.fingerprint, setting, &entries)).await?;
    Ok(info.fingerprint)
}

pub(super) fn rows(device: &str, setting: &DeploymentSetting, entries: &[LutEntry]) -> Vec<NewLutEntry> {
    NewLutEntry::rows(device, setting, entries)
}

pub(super) async fn profile_cmd(args: ProfileArgs) -> Result<String> {
    let (space, settings, hidden, setting) = resolve(&args.space)?;
    let shapes = space_shapes(&space, &settings, &hidden, &setting)?;
    let store = open(&args.store).await?;
    let config = ProfileConfig {
        warmup: args.warmup,
        repeats: args.repeats,
        steps_per_repeat: args.steps,
        stack: args.stack,
    };
    let device = profile_into(&store, &shapes, &setting, config, args.space.device).await?;
    Ok(format!(
        "profiled {} operator shapes at hidden {} under {} on {device}\n",
        shapes.len(),
        hidden.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        setting.key()
    ))
}

/// Makes sure this machine's latency table for a search covers every operator shape the search
/// can propose, profiling the missing ones (used by `frontier run` before it starts the search).
pub async fn ensure_profiled(store: &Store, spec: &api::SearchSpec, device: DeviceChoice) -> Result<()> {
    let setting = spec.target.deployment().map_err(|e| anyhow::anyhow!("target.setting: {}", e.reason))?;
    if device == DeviceChoice::Cpu && setting.dtype != Dtype::F32 {
        bail!(
            "target.setting: the CPU backend computes in f32, so a latency table measured here is keyed dtype=f32; \
             write `{},dtype=f32`",
            spec.target.setting
        );
    }
    let info = fingerprint(device)?;
    let shapes = match &spec.algorithm {
        // A sweep's block at every swept width, and at the ends of the range a recommendation
        // considers, so every width in between is interpolated rather than extrapolated.
        api::Algorithm::Sweep { pattern, widths, .. } => {
            let (lo, hi) =
                (widths.iter().min().copied().unwrap_or(64), widths.iter().max().copied().unwrap_or(64));
            let range = coordinator::scaling::default_widths(&spec.model, pattern, lo, hi);
            let mut hidden = widths.clone();
            hidden.extend(range.first().into_iter().chain(range.last()));
            let mut out: Vec<OpShape> = Vec::new();
            for h in hidden {
                let model = coordinator::search::sweep_architecture(&spec.model, pattern, 1, h).expand()?;
                for shape in shapes_for(&model, &setting) {
                    if !out.contains(&shape) {
                        out.push(shape);
                    }
                }
            }
            out
        }
        _ => space_shapes(&spec.space, &spec.model, &spec.space.hidden_sizes, &setting)?,
    };
    // A budget relative to a preset needs the preset scored too.
    let mut shapes = shapes;
    if let Some(rel) = &spec.target.latency_budget_of
        && let Some(arch) = search_space::presets::preset(&rel.preset)
    {
        for shape in shapes_for(&arch.expand()?, &setting) {
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
    }
    let have: std::collections::BTreeSet<String> =
        store.lut_entries(&info.fingerprint, &setting.key()).await?.into_iter().map(|r| r.op_key).collect();
    let missing: Vec<OpShape> = shapes.into_iter().filter(|s| !have.contains(&s.to_string())).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "profiling {} operator shapes for `{}` on {} (once per machine and setting)",
        missing.len(),
        setting.key(),
        info.name
    );
    profile_into(store, &missing, &setting, ProfileConfig::default(), device).await?;
    Ok(())
}
