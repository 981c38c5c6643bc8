//! `frontier space ...`: the search space from the command line.
//!
//! Architectures are read from a Frontier architecture document, a Nemotron-Flash
//! `config.json` (recognised by its `model_type`), or a named preset.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use search_space::presets::{PRESETS, preset};
use search_space::{Architecture, Dtype, ModelSpec, SearchSpace, nemotron_flash, space::rng};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum SpaceCommand {
    /// Draw random genomes from a search space, as architecture documents (a JSON array).
    Sample(SampleArgs),
    /// Show an architecture: layers, parameters, decode memory.
    Show(ShowArgs),
    /// Write an architecture as a Frontier document or a Nemotron-Flash config.json.
    Export(ExportArgs),
    /// Check an architecture file; exits non-zero with the problems when it is invalid.
    Validate {
        /// Architecture document or Nemotron-Flash config.json.
        file: PathBuf,
    },
    /// List the named presets.
    Presets,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Seed of the generator; the same seed gives the same genomes on every machine.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many genomes to draw.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Search-space bounds (JSON); the paper's space when omitted.
    #[arg(long)]
    space: Option<PathBuf>,
    /// Preset whose model settings (vocabulary, heads, state sizes, ...) the samples use.
    #[arg(long, default_value = "nemotron-flash-1b")]
    settings: String,
}

/// Where an architecture comes from: a file or a preset.
#[derive(Debug, Args)]
pub struct Source {
    /// Architecture document or Nemotron-Flash config.json.
    #[arg(conflicts_with = "preset", required_unless_present = "preset")]
    file: Option<PathBuf>,
    /// A named preset instead of a file (see `frontier space presets`).
    #[arg(long)]
    preset: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    source: Source,
    /// Batch size for the decode-memory figure.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Context length (prompt + generated tokens) for the decode-memory figure.
    #[arg(long, default_value_t = 8192)]
    context: u64,
    /// Element type of caches and states: f32, bf16, f16 or fp8.
    #[arg(long, default_value = "bf16", value_parser = parse_dtype)]
    dtype: Dtype,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Frontier's architecture document (`architecture.json`).
    Frontier,
    /// Nemotron-Flash Hugging Face config (`config.json`).
    NemotronFlash,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    source: Source,
    #[arg(long, value_enum)]
    format: Format,
    /// Directory to write into (created if missing).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

fn parse_dtype(s: &str) -> Result<Dtype, String> {
    s.parse()
}

/// Runs one subcommand and returns what it prints.
pub fn run(cmd: SpaceCommand) -> Result<String> {
    match cmd {
        SpaceCommand::Sample(args) => sample(args),
        SpaceCommand::Show(args) => show(args),
        SpaceCommand::Export(args) => export(args),
        SpaceCommand::Validate { file } => validate(&file),
        SpaceCommand::Presets => {
            let mut out = String::new();
            for (name, about) in PRESETS {
                writeln!(out, "{name:<20} {about}")?;
            }
            Ok(out)
        }
    }
}

fn sample(args: SampleArgs) -> Result<String> {
    let space: SearchSpace = match &args.space {
        Some(path) => {
            let text = read(path)?;
            search_space::error::from_json_str(&text).with_context(|| format!("{}", path.display()))?
        }
        None => SearchSpace::default(),
    };
    space.validate().with_context(|| "invalid search space")?;
    let settings = named_preset(&args.settings)?.model;
    space
        .check_model(&settings)
        .with_context(|| format!("search space does not fit preset {}", args.settings))?;
    let mut r = rng(args.seed);
    let mut out = Vec::with_capacity(args.count as usize);
    for i in 0..args.count {
        let genome = space.sample(&mut r).context("sampling failed")?;
        let arch =
            Architecture::from_genome(settings.clone(), genome).named(format!("sample-{}-{i}", args.seed));
        out.push(arch);
    }
    Ok(serde_json::to_string_pretty(&out)? + "\n")
}

impl Source {
    pub fn file(path: PathBuf) -> Self {
        Self { file: Some(path), preset: None }
    }

    pub fn preset(name: String) -> Self {
        Self { file: None, preset: Some(name) }
    }
}

/// Reads an architecture from a preset or a file of either format.
pub fn load(source: &Source) -> Result<(String, Architecture)> {
    if let Some(name) = &source.preset {
        return Ok((name.clone(), named_preset(name)?));
    }
    let Some(path) = &source.file else { bail!("give an architecture FILE or --preset NAME") };
    Ok((path.display().to_string(), load_file(path)?))
}

fn load_file(path: &Path) -> Result<Architecture> {
    let text = read(path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
    // `space sample` writes an array of documents; a one-element array is one architecture.
    let (value, text) = match value {
        serde_json::Value::Array(mut items) if items.len() == 1 => {
            let item = items.remove(0);
            let text = item.to_string();
            (item, text)
        }
        serde_json::Value::Array(items) => bail!(
            "{} holds {} architectures; give a file with one (for example `space sample --count 1`)",
            path.display(),
            items.len()
        ),
        other => (other, text),
    };
    let arch = if value.get("model_type").is_some() {
        nemotron_flash::import(value)
    } else {
        Architecture::from_json(&text)
    };
    arch.with_context(|| format!("{}", path.display()))
}

fn named_preset(name: &str) -> Result<Architecture> {
    preset(name).with_context(|| {
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        format!("unknown preset `{name}`; presets are {}", names.join(", "))
    })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn expand(label: &str, arch: &Architecture) -> Result<ModelSpec> {
    arch.expand().with_context(|| label.to_owned())
}

fn show(args: ShowArgs) -> Result<String> {
    let (label, arch) = load(&args.source)?;
    let spec = expand(&label, &arch)?;
    let params = spec.params();
    let memory = spec.decode_memory(args.batch, args.context, args.dtype);
    let hash = spec.canonical_hash();
    let mut out = String::new();
    if args.json {
        let doc = json!({
            "name": arch.name,
            "hash": hash,
            "pattern": spec.pattern(),
            "params": params,
            "decode_memory": memory,
            "setting": {"batch": args.batch, "context": args.context, "dtype": args.dtype},
            "model": spec,
        });
        return Ok(serde_json::to_string_pretty(&doc)? + "\n");
    }
    writeln!(out, "{}  (hash {hash})", arch.name.as_deref().unwrap_or(&label))?;
    writeln!(
        out,
        "hidden {}, vocab {}, {} embeddings, {} meta tokens, {} layers ({} mixers)",
        spec.hidden_size,
        spec.vocab_size,
        if spec.tied_embeddings { "tied" } else { "untied" },
        spec.meta_tokens,
        spec.layers.len(),
        spec.mixer_count()
    )?;
    writeln!(out, "pattern: {}", spec.pattern())?;
    writeln!(
        out,
        "parameters: {} = {} (embedding {}, meta tokens {}, layers {}, head {})",
        params.total,
        count(params.total),
        count(params.embedding),
        count(params.meta_tokens),
        count(params.layers),
        count(params.head)
    )?;
    writeln!(
        out,
        "decode memory at batch {}, context {}, {}: {} (KV cache {}, recurrent state {}, conv state {})",
        args.batch,
        args.context,
        args.dtype.name(),
        mib(memory.total_bytes),
        mib(memory.kv_cache_bytes),
        mib(memory.recurrent_state_bytes),
        mib(memory.conv_state_bytes)
    )?;
    writeln!(out, "{:>4}  {:<4} {:>12}  {:>12}", "#", "op", "params", "state/seq")?;
    for (i, layer) in spec.layers.iter().enumerate() {
        let state =
            layer.decode_state(u64::from(spec.meta_tokens), args.context).total() * args.dtype.bytes();
        writeln!(
            out,
            "{i:>4}  {:<4} {:>12}  {:>12}",
            layer.kind().code(),
            count(layer.params(spec.hidden_size)),
            mib(state)
        )?;
    }
    Ok(out)
}

fn export(args: ExportArgs) -> Result<String> {
    let mut out = String::new();
    let (label, arch) = load(&args.source)?;
    let spec = expand(&label, &arch)?;
    let (file, text) = match args.format {
        Format::Frontier => ("architecture.json", arch.to_json()),
        Format::NemotronFlash => {
            let cfg = nemotron_flash::export(&spec)
                .with_context(|| format!("{label} cannot be written as a Nemotron-Flash config"))?;
            ("config.json", serde_json::to_string_pretty(&cfg)?)
        }
    };
    fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let path = args.out.join(file);
    fs::write(&path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(out, "{}", path.display())?;
    Ok(out)
}

fn validate(file: &Path) -> Result<String> {
    let mut out = String::new();
    let arch = load_file(file)?;
    let spec = expand(&file.display().to_string(), &arch)?;
    writeln!(
        out,
        "{}: valid, {} layers, {} parameters, hash {}",
        file.display(),
        spec.layers.len(),
        count(spec.params().total),
        spec.canonical_hash()
    )?;
    Ok(out)
}

/// A count in the unit that reads best: `0.965 B`, `16.84 M`, `3.2 K`.
fn count(n: u64) -> String {
    let x = n as f64;
    match n {
        1_000_000_000.. => format!("{:.3} B", x / 1e9),
        1_000_000.. => format!("{:.2} M", x / 1e6),
        1_000.. => format!("{:.1} K", x / 1e3),
        _ => n.to_string(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}
