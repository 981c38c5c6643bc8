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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use coordinator::Store;
use coordinator::store::{NewDevice, NewLutEntry};
use lut::fidelity::relative_error;
use lut::{
    Calibration, CalibrationSample, DeploymentSetting, Fidelity, GROUPS, Lut, LutEntry, OpShape, RawCost,
    fidelity, shapes_for,
};
use search_space::presets::{PRESETS, preset};
use search_space::space::rng;
use search_space::{Architecture, Dtype, ModelSettings, ModelSpec, OpKind, SearchSpace};
use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::decode::DecodeSetting;
use worker::profile::{ProfileConfig, fingerprint, profile};
use worker::run::{DeviceChoice, decode_job};

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

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Device fingerprint; this machine's CPU when omitted.
    #[arg(long)]
    device: Option<String>,
    /// Show this setting's entries; all tables are listed when omitted.
    #[arg(long)]
    setting: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Device fingerprint; this machine's CPU when omitted.
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    setting: String,
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A file written by `frontier lut export` (JSON, or CSV by its `.csv` extension).
    file: PathBuf,
}

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
async fn profile_into(
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

fn rows(device: &str, setting: &DeploymentSetting, entries: &[LutEntry]) -> Vec<NewLutEntry> {
    entries
        .iter()
        .map(|e| NewLutEntry {
            device: device.to_owned(),
            setting_key: setting.key(),
            op_key: e.op.to_string(),
            median_ms: e.median_ms,
            p10_ms: e.p10_ms,
            p90_ms: e.p90_ms,
            repeats: i64::from(e.repeats),
        })
        .collect()
}

/// The stored table of a device and setting, with its calibration when one is stored.
async fn load_lut(store: &Store, device: &str, setting: &DeploymentSetting) -> Result<Lut> {
    let rows = store.lut_entries(device, &setting.key()).await?;
    let calibration = match store.lut_calibration(device, &setting.key()).await? {
        Some(c) => Some(
            serde_json::from_value::<Calibration>(c.coefficients)
                .context("stored calibration is malformed")?,
        ),
        None => None,
    };
    // The coordinator's reading of stored rows: one that does not parse is skipped with a warning.
    Ok(coordinator::latency::table_from_rows(device, setting, &rows, calibration))
}

async fn profile_cmd(args: ProfileArgs) -> Result<String> {
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

async fn default_device(given: Option<String>) -> Result<String> {
    match given {
        Some(d) => Ok(d),
        None => Ok(fingerprint(DeviceChoice::Cpu)?.fingerprint),
    }
}

async fn show(args: ShowArgs) -> Result<String> {
    let store = open(&args.store).await?;
    let mut out = String::new();
    let Some(setting) = args.setting else {
        let tables = store.lut_tables(args.device.as_deref()).await?;
        if tables.is_empty() {
            return Ok("no latency tables; run `frontier lut profile --setting ...` first\n".into());
        }
        writeln!(out, "{:<60} {:<40} {:>7}", "device", "setting", "entries")?;
        for t in tables {
            writeln!(out, "{:<60} {:<40} {:>7}", t.device, t.setting_key, t.entries)?;
        }
        return Ok(out);
    };
    let setting = parse_stored_setting(&setting)?;
    let device = default_device(args.device).await?;
    let lut = load_lut(&store, &device, &setting).await?;
    if lut.entries().is_empty() {
        bail!("no entries for device `{device}` under {}", setting.key());
    }
    writeln!(out, "device {device}, setting {}", setting.key())?;
    writeln!(
        out,
        "{:<72} {:>10} {:>10} {:>10} {:>7}",
        "operator", "median_ms", "p10_ms", "p90_ms", "repeats"
    )?;
    for e in lut.entries() {
        writeln!(
            out,
            "{:<72} {:>10.4} {:>10.4} {:>10.4} {:>7}",
            e.op.to_string(),
            e.median_ms,
            e.p10_ms,
            e.p90_ms,
            e.repeats
        )?;
    }
    match lut.calibration() {
        Some(c) => writeln!(out, "calibration: {}", describe(c))?,
        None => writeln!(out, "calibration: none (run `frontier lut validate`)")?,
    }
    Ok(out)
}

/// The exchange document: one table of one device.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LutDocument {
    format: String,
    version: u32,
    device: String,
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    device_kind: Option<String>,
    #[serde(default)]
    device_info: serde_json::Value,
    setting: DeploymentSetting,
    entries: Vec<LutEntry>,
    #[serde(default)]
    calibration: Option<Calibration>,
}

const FORMAT: &str = "frontier/lut";
const CSV_HEADER: &str = "device,setting,op_key,median_ms,p10_ms,p90_ms,repeats";

async fn export(args: ExportArgs) -> Result<String> {
    let store = open(&args.store).await?;
    let setting = parse_stored_setting(&args.setting)?;
    let device = default_device(args.device).await?;
    let lut = load_lut(&store, &device, &setting).await?;
    if lut.entries().is_empty() {
        bail!("no entries for device `{device}` under {}", setting.key());
    }
    let text = match args.format {
        Format::Json => {
            let row = store.get_device(&device).await?;
            let doc = LutDocument {
                format: FORMAT.into(),
                version: 1,
                device: device.clone(),
                device_name: row.as_ref().map(|d| d.name.clone()),
                device_kind: row.as_ref().map(|d| d.kind.clone()),
                device_info: row.map(|d| d.info).unwrap_or_default(),
                setting,
                entries: lut.entries().to_vec(),
                calibration: lut.calibration().copied(),
            };
            serde_json::to_string_pretty(&doc)? + "\n"
        }
        Format::Csv => {
            let mut s = format!("{CSV_HEADER}\n");
            for e in lut.entries() {
                writeln!(
                    s,
                    "{},{},{},{},{},{},{}",
                    csv_field(&device),
                    csv_field(&setting.key()),
                    csv_field(&e.op.to_string()),
                    e.median_ms,
                    e.p10_ms,
                    e.p90_ms,
                    e.repeats
                )?;
            }
            s
        }
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(format!("wrote {} entries to {}\n", lut.entries().len(), path.display()))
        }
        None => Ok(text),
    }
}

/// Quotes a CSV field when it holds a comma or quote (keys and settings do).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// Splits one CSV line with quoted fields; `None` on an unterminated quote.
fn csv_split(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut()?.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut()?.push(c),
        }
    }
    (!quoted).then_some(fields)
}

/// A parsed import: one device, and entries per setting.
type Imported = (String, Option<LutDocument>, BTreeMap<String, (DeploymentSetting, Vec<LutEntry>)>);

fn parse_csv(text: &str, file: &str) -> Result<Imported> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, header)) if header.trim() == CSV_HEADER => {}
        Some((i, _)) => bail!("{file}: line {}: header must be `{CSV_HEADER}`", i + 1),
        None => bail!("{file}: empty file"),
    }
    let mut device: Option<String> = None;
    let mut tables: BTreeMap<String, (DeploymentSetting, Vec<LutEntry>)> = BTreeMap::new();
    for (i, line) in lines {
        let at = |field: &str| format!("{file}: line {}, field {field}", i + 1);
        let fields =
            csv_split(line).with_context(|| format!("{file}: line {}: unterminated quote", i + 1))?;
        if fields.len() != 7 {
            bail!("{file}: line {}: expected 7 fields ({CSV_HEADER}), got {}", i + 1, fields.len());
        }
        match &device {
            Some(d) if *d != fields[0] => {
                bail!("{}: one file holds one device; `{}` differs from `{d}`", at("device"), fields[0])
            }
            _ => device = Some(fields[0].clone()),
        }
        let setting: DeploymentSetting = fields[1].parse().with_context(|| at("setting"))?;
        let op: OpShape = fields[2].parse().with_context(|| at("op_key"))?;
        let number = |k: usize, name: &str| -> Result<f64> {
            let v: f64 = fields[k]
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{}: `{}` is not a number", at(name), fields[k]))?;
            if !(v.is_finite() && v >= 0.0) {
                bail!("{}: must be a finite, non-negative number of milliseconds", at(name));
            }
            Ok(v)
        };
        let entry = LutEntry {
            op,
            median_ms: number(3, "median_ms")?,
            p10_ms: number(4, "p10_ms")?,
            p90_ms: number(5, "p90_ms")?,
            repeats: fields[6]
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{}: `{}` is not a whole number", at("repeats"), fields[6]))?,
        };
        tables.entry(setting.key()).or_insert((setting, Vec::new())).1.push(entry);
    }
    let device = device.with_context(|| format!("{file}: no entries"))?;
    Ok((device, None, tables))
}

fn parse_json(text: &str, file: &str) -> Result<Imported> {
    let doc: LutDocument = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("{file}: line {}, column {}: {e}", e.line(), e.column()))?;
    if doc.format != FORMAT || doc.version != 1 {
        bail!(
            "{file}: field format/version: expected `{FORMAT}` version 1, got `{}` version {}",
            doc.format,
            doc.version
        );
    }
    for (i, e) in doc.entries.iter().enumerate() {
        for (name, v) in [("median_ms", e.median_ms), ("p10_ms", e.p10_ms), ("p90_ms", e.p90_ms)] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{file}: entries[{i}].{name}: must be a finite, non-negative number of milliseconds");
            }
        }
    }
    let mut tables = BTreeMap::new();
    tables.insert(doc.setting.key(), (doc.setting, doc.entries.clone()));
    Ok((doc.device.clone(), Some(doc), tables))
}

async fn import(args: ImportArgs) -> Result<String> {
    let file = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {file}"))?;
    let is_csv = args.file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let (device, doc, tables) = if is_csv { parse_csv(&text, &file)? } else { parse_json(&text, &file)? };
    let store = open(&args.store).await?;
    if store.get_device(&device).await?.is_none() || doc.is_some() {
        let (name, kind, info) = match &doc {
            Some(d) => (
                d.device_name.clone().unwrap_or_else(|| device.clone()),
                d.device_kind.clone().unwrap_or_else(|| "unknown".into()),
                d.device_info.clone(),
            ),
            None => (device.clone(), "unknown".into(), json!({})),
        };
        store.upsert_device(&NewDevice { fingerprint: device.clone(), name, kind, info }).await?;
    }
    let mut count = 0;
    for (setting, entries) in tables.values() {
        count += store.put_lut_entries(&rows(&device, setting, entries)).await?;
    }
    if let Some(c) = doc.as_ref().and_then(|d| d.calibration.map(|c| (d.setting, c))) {
        store
            .put_lut_calibration(
                &device,
                &c.0.key(),
                &serde_json::to_value(c.1)?,
                &json!({ "imported": file }),
            )
            .await?;
    }
    Ok(format!("imported {count} entries for device `{device}` ({} settings)\n", tables.len()))
}

fn raw_cost(c: &Case) -> RawCost {
    RawCost { total_ms: c.raw_ms, by_group_ms: c.raw_by_group_ms, layers: c.layers }
}

/// A calibration as a formula.
fn describe(c: &Calibration) -> String {
    let scaled = match &c.group_scales {
        Some(g) => {
            GROUPS.iter().zip(g).map(|(name, s)| format!("{s:.4} × {name}")).collect::<Vec<_>>().join(" + ")
        }
        None => format!("{:.4} × raw", c.scale),
    };
    format!(
        "measured ≈ {scaled} + {:.4} ms × layers + {:.4} ms ({} samples)",
        c.per_layer_ms, c.constant_ms, c.samples
    )
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A warning when other work was using the cores the measurement needs: the 1-minute load
/// average before measuring was above the cores left free by the compute threads (plus half a
/// core of slack). Such timings come out slower than the table's, and the figures mean little.
fn busy_warning(load_before: &str) -> Option<String> {
    let load: f64 = load_before.split_whitespace().next()?.parse().ok()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let free = cores.saturating_sub(worker::profile::compute_threads()) as f64;
    (load > free + 0.5).then(|| {
        format!(
            "warning: the load average before measuring ({load:.2}) shows other work on this machine's {cores} cores; \
             measured latencies are inflated and compared against a table profiled at another load. \
             Validate on an idle device, or with `--threads N` leaving cores free."
        )
    })
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

/// Measures one model's decode latency (the setting's decode steps after the prompt).
fn measure(
    spec: &ModelSpec,
    setting: &DeploymentSetting,
    repeats: usize,
    device: DeviceChoice,
) -> Result<f64> {
    let decode = DecodeSetting {
        batch: setting.batch_size as usize,
        prompt_len: setting.prompt_tokens.max(1) as usize,
        gen_len: setting.generated_tokens as usize + 1,
        warmup: 1,
        repeats,
    };
    let (report, _) = decode_job(spec, decode, 0, device)?;
    Ok(report.generate_ms)
}

/// The table for these models, profiling first whatever it cannot score.
async fn lut_covering(
    store: &Store,
    device: DeviceChoice,
    setting: &DeploymentSetting,
    models: &[ModelSpec],
) -> Result<(String, Lut)> {
    let fp = fingerprint(device)?.fingerprint;
    let lut = load_lut(store, &fp, setting).await?;
    let mut missing: Vec<OpShape> = Vec::new();
    for m in models {
        if let Err(e) = lut.estimate(m) {
            for s in e.missing {
                if !missing.contains(&s) {
                    missing.push(s);
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok((fp, lut));
    }
    eprintln!("the table lacks {} operator shapes for these models; profiling them now", missing.len());
    profile_into(store, &missing, setting, ProfileConfig::default(), device).await?;
    Ok((fp.clone(), load_lut(store, &fp, setting).await?))
}

async fn validate(args: ValidateArgs) -> Result<String> {
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

async fn depth_sweep(args: DepthArgs) -> Result<String> {
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
