//! `frontier lut`: latency tables on this machine, in the local (or any) store.
//!
//! - `profile` measures every operator shape a search space needs at the given widths and writes
//!   the entries, under this device's fingerprint, to the store;
//! - `show` lists the tables, or one table's entries and calibration;
//! - `export` / `import` move a table between machines as JSON or CSV;
//! - `validate` samples architectures, measures their decode latency end to end, and reports the
//!   estimator's fidelity before and after calibration (the calibration is stored);
//! - `depth-sweep` measures attention+FFN models of several depths at one parameter count.
//!
//! Embedded mode: the store is opened directly from `--database-url` (SQLite by default).
//! Latency here means the decode steps after the prompt, as the LUT estimates it; a model is
//! measured with the worker's decode benchmark generating one token more than the setting, because
//! the benchmark's prefill yields the first token and its steps are timed separately.
//!
//! # Layout
//! - this file: the subcommands, the arguments they share, and reading settings, presets and spaces;
//! - [`profile`]: `profile`, and [`ensure_profiled`] for `frontier run`;
//! - [`show`]: `show`, and a stored table read back with its calibration;
//! - [`exchange`]: `export` and `import`, JSON and CSV;
//! - [`measure`]: whole models timed end to end, the machine's load, a table covering them;
//! - [`validate`] and [`depth`]: the two commands that measure.

mod depth;
mod exchange;
mod measure;
mod profile;
mod show;
mod validate;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use coordinator::Store;
use lut::DeploymentSetting;
use search_space::presets::{PRESETS, preset};
use search_space::{Dtype, ModelSettings, OpKind, SearchSpace};
use worker::profile::fingerprint;
use worker::run::DeviceChoice;

use depth::{DepthArgs, depth_sweep};
use exchange::{ExportArgs, ImportArgs, export, import};
pub use profile::ensure_profiled;
use profile::{ProfileArgs, profile_cmd};
use show::{ShowArgs, show};
use validate::{ValidateArgs, validate};

#[derive(Debug, Subcommand)]
pub enum LutCommand {
    /// Profile the operator shapes of a search space on this device and store them.
    Profile(ProfileArgs),
    /// List the stored tables, or one table's entries (with --setting).
    Show(ShowArgs),
    /// Write one table (entries and calibration) as JSON or CSV.
    Export(ExportArgs),
    /// Read a table written by `export` into the store.
    Import(ImportArgs),
    /// Measure sampled architectures end to end and report the estimator's fidelity.
    Validate(ValidateArgs),
    /// Measured and estimated latency of attention+FFN models of several depths, same parameters.
    DepthSweep(DepthArgs),
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Storage URL: `sqlite://PATH` or `postgres://...`.
    #[arg(long, env = "FRONTIER_DATABASE_URL", default_value = "sqlite://frontier.db")]
    database_url: String,
}

#[derive(Debug, Args)]
pub struct SpaceArgs {
    /// Deployment setting, e.g. `batch=1,prompt=64,gen=256`; dtype defaults to the device's (f32 on CPU).
    #[arg(long)]
    setting: String,
    /// Hidden sizes to profile or sample (comma-separated); the search space's when omitted.
    #[arg(long, value_delimiter = ',')]
    hidden: Vec<u32>,
    /// Search-space bounds (JSON); the paper's space when omitted.
    #[arg(long)]
    space: Option<PathBuf>,
    /// Preset whose model settings (heads, state sizes, FFN ratio, vocabulary) dimension the operators.
    #[arg(long, default_value = "tiny-hybrid")]
    settings: String,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

pub fn run(cmd: LutCommand) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cmd {
            LutCommand::Profile(a) => profile_cmd(a).await,
            LutCommand::Show(a) => show(a).await,
            LutCommand::Export(a) => export(a).await,
            LutCommand::Import(a) => import(a).await,
            LutCommand::Validate(a) => validate(a).await,
            LutCommand::DepthSweep(a) => depth_sweep(a).await,
        }
    })
}

async fn open(store: &StoreArgs) -> Result<Store> {
    Store::connect(&store.database_url).await.context("cannot open the store")
}

/// The setting, with dtype defaulting to what the device computes in. burn's CPU backend
/// computes in f32, so a table keyed bf16 would describe latencies it never measured.
fn parse_setting(s: &str, device: DeviceChoice) -> Result<DeploymentSetting> {
    let setting = parse_stored_setting(s)?;
    if device == DeviceChoice::Cpu && setting.dtype != Dtype::F32 {
        bail!("the CPU backend computes in f32; use dtype=f32 (or leave dtype out) in --setting");
    }
    Ok(setting)
}

/// A setting naming a stored table: dtype defaults to f32 as when profiling on the CPU.
fn parse_stored_setting(s: &str) -> Result<DeploymentSetting> {
    let explicit = s.split(',').any(|p| p.trim().starts_with("dtype"));
    let text = if explicit { s.to_owned() } else { format!("{s},dtype=f32") };
    Ok(text.parse()?)
}

fn settings_of(name: &str) -> Result<ModelSettings> {
    preset(name).map(|a| a.model).with_context(|| {
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        format!("unknown preset `{name}`; presets are {}", names.join(", "))
    })
}

fn load_space(path: Option<&Path>) -> Result<SearchSpace> {
    let space: SearchSpace = match path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            search_space::error::from_json_str(&text).with_context(|| path.display().to_string())?
        }
        None => SearchSpace::default(),
    };
    space.validate().context("invalid search space")?;
    Ok(space)
}

/// The space, its model settings and the widths to use.
fn resolve(args: &SpaceArgs) -> Result<(SearchSpace, ModelSettings, Vec<u32>, DeploymentSetting)> {
    let space = load_space(args.space.as_deref())?;
    let settings = settings_of(&args.settings)?;
    let hidden = if args.hidden.is_empty() { space.hidden_sizes.clone() } else { args.hidden.clone() };
    for &h in &hidden {
        let s = settings.with_hidden_size(h);
        for kind in space.mixers.iter().map(|m| OpKind::Mixer(*m)).chain([OpKind::Ffn]) {
            s.layer(kind).map_err(|e| anyhow::anyhow!("--hidden {h}: {e}"))?;
        }
    }
    Ok((space, settings, hidden, parse_setting(&args.setting, args.device)?))
}

async fn default_device(given: Option<String>) -> Result<String> {
    match given {
        Some(d) => Ok(d),
        None => Ok(fingerprint(DeviceChoice::Cpu)?.fingerprint),
    }
}
