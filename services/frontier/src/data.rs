//! `frontier data {prepare, verify, show}`: corpora tokenized once into shard sets that workers
//! read window by window (`proxy.corpus = "shards:NAME"`).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use worker::data::shardset::{DEFAULT_SHARD_TOKENS, Manifest, PrepareProgress};
use worker::data::{PrepareConfig, ShardSet, TrainBatches, prepare_shards};

use crate::train::tokenizer_spec;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Tokenize a corpus into a shard set: fixed-size binary shards, a manifest and the
    /// tokenizer, written in parallel into a new folder.
    Prepare(PrepareArgs),
    /// Check a shard set: every shard's hash against the manifest, every id inside the
    /// vocabulary.
    Verify(SetArgs),
    /// Print a shard set's manifest summary.
    Show(SetArgs),
    /// Measure batch assembly from the shard files on one core (tokens/s), beside the same
    /// windows cut from the stream held in memory when it fits.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The shard set's folder.
    dir: PathBuf,
    #[arg(long, default_value_t = 2048)]
    seq_len: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Batches timed per round.
    #[arg(long, default_value_t = 2000)]
    batches: u64,
    /// Rounds; the table shows the median and the range.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Largest stream copied into memory for the side-by-side row, in tokens.
    #[arg(long, default_value_t = 1 << 28)]
    max_memory_tokens: usize,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// A text file, a JSONL file with a `text` field, or a folder of .txt/.md/.jsonl files; any
    /// of them may be compressed (.gz, .zst).
    #[arg(long)]
    corpus: PathBuf,
    /// `bytes`, `bpe:N` (train a byte-level BPE of N ids on the training side) or a
    /// tokenizer.json path (a Hugging Face tokenizer).
    #[arg(long, default_value = "bytes")]
    tokenizer: String,
    /// The folder to create (it must not exist). Put it in the workers' data folder and name it
    /// in a spec as `shards:NAME`.
    #[arg(long)]
    out: PathBuf,
    /// Share of each file held out for validation.
    #[arg(long, default_value_t = 0.01)]
    val_fraction: f64,
    /// Tokens per shard file.
    #[arg(long, default_value_t = DEFAULT_SHARD_TOKENS)]
    shard_tokens: u64,
    /// Print the manifest as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The shard set's folder.
    dir: PathBuf,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

pub fn run(command: DataCommand) -> Result<String> {
    match command {
        DataCommand::Prepare(args) => prepare(args),
        DataCommand::Verify(args) => {
            let set = open(&args)?;
            set.verify().with_context(|| format!("verifying {}", args.dir.display()))?;
            Ok(format!(
                "{}: ok, {} shards hashed, every id below {}\n",
                args.dir.display(),
                set.manifest.train.len() + set.manifest.validation.len(),
                set.manifest.tokenizer.vocab_size
            ))
        }
        DataCommand::Bench(args) => bench(&args),
        DataCommand::Show(args) => {
            let set = open(&args)?;
            if args.json {
                return Ok(serde_json::to_string_pretty(&set.manifest)? + "\n");
            }
            Ok(summary(&args.dir, &set.manifest))
        }
    }
}

/// Tokens per second of assembling `batches` consecutive batches from `source`, from step `first`.
fn time_round(source: &TrainBatches<'_>, batches: u64, first: u64) -> f64 {
    let started = Instant::now();
    let mut checksum = 0u64;
    for step in first..first + batches {
        let batch = source.batch(step);
        // Read what was assembled, so the work cannot be skipped.
        checksum = checksum.wrapping_add(u64::from(batch.inputs[batch.inputs.len() / 2]));
    }
    std::hint::black_box(checksum);
    batches as f64 * source.tokens_per_batch() as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

/// The median and the range of some rates.
fn spread(mut rates: Vec<f64>) -> (f64, f64, f64) {
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rates[0], rates[rates.len() - 1])
}

fn bench(args: &BenchArgs) -> Result<String> {
    if args.rounds == 0 || args.batches == 0 {
        bail!("--rounds and --batches must be at least 1");
    }
    let set =
        ShardSet::open(&args.dir).with_context(|| format!("opening shard set {}", args.dir.display()))?;
    let shards = TrainBatches::new(&set.train, args.seq_len, args.batch, 1).context("the training side")?;
    let memory = (set.train.len() <= args.max_memory_tokens).then(|| set.train.to_vec());
    let in_memory = match &memory {
        Some(tokens) => {
            Some(TrainBatches::new(tokens, args.seq_len, args.batch, 1).context("the training side")?)
        }
        None => None,
    };
    // One warm-up round pages the windows' code paths in; then the two sources alternate round
    // by round on this one thread, so drift on a shared machine falls on both.
    time_round(&shards, args.batches, 0);
    let (mut from_files, mut held) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds as u64 {
        let first = round * args.batches;
        from_files.push(time_round(&shards, args.batches, first));
        if let Some(source) = &in_memory {
            held.push(time_round(source, args.batches, first));
        }
    }
    let mut out = format!(
        "batch assembly on one core: {} × {} tokens per batch, {} batches per round, {} rounds\n\
         set {}: {} training tokens as {:?}\n",
        args.batch,
        args.seq_len,
        args.batches,
        args.rounds,
        args.dir.display(),
        set.manifest.train_tokens(),
        set.manifest.dtype
    );
    let _ = writeln!(out, "{:<28} {:>12} {:>16}", "source", "M tokens/s", "range");
    let row = |out: &mut String, name: &str, rates: Vec<f64>| {
        let (median, low, high) = spread(rates);
        let range = format!("{:.1}-{:.1}", low / 1e6, high / 1e6);
        let _ = writeln!(out, "{name:<28} {:>12.1} {range:>16}", median / 1e6);
    };
    row(&mut out, "shard files (pread)", from_files);
    if held.is_empty() {
        let _ = writeln!(out, "(the stream is over --max-memory-tokens: no in-memory row)");
    } else {
        row(&mut out, "the same stream in memory", held);
    }
    Ok(out)
}

fn open(args: &SetArgs) -> Result<ShardSet> {
    ShardSet::open(&args.dir).with_context(|| format!("opening shard set {}", args.dir.display()))
}

fn prepare(args: PrepareArgs) -> Result<String> {
    if !(0.0..1.0).contains(&args.val_fraction) {
        bail!("--val-fraction must be in [0, 1), got {}", args.val_fraction);
    }
    let config = PrepareConfig {
        corpus: args.corpus.clone(),
        tokenizer: tokenizer_spec(&args.tokenizer)?,
        validation_fraction: args.val_fraction,
        shard_tokens: args.shard_tokens,
        out: args.out.clone(),
    };
    let started = Instant::now();
    let manifest = prepare_shards(&config, progress_printer(started))
        .with_context(|| format!("preparing {} into {}", args.corpus.display(), args.out.display()))?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&manifest)? + "\n");
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut out = summary(&args.out, &manifest);
    let tokens = manifest.train_tokens() + manifest.validation_tokens();
    let _ = writeln!(
        out,
        "tokenized in {seconds:.1} s: {:.2} M tokens/s, {:.1} MB/s of text",
        tokens as f64 / seconds.max(1e-9) / 1e6,
        manifest.text_bytes as f64 / seconds.max(1e-9) / 1e6
    );
    Ok(out)
}

fn summary(dir: &std::path::Path, m: &Manifest) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} ({} ids, {:?}), {} files, {} documents, {} bytes of text",
        dir.display(),
        m.tokenizer.name,
        m.tokenizer.vocab_size,
        m.dtype,
        m.files,
        m.documents,
        m.text_bytes
    );
    let _ = writeln!(
        out,
        "  train: {} tokens in {} shards; validation: {} tokens in {} shards (fraction {})",
        m.train_tokens(),
        m.train.len(),
        m.validation_tokens(),
        m.validation.len(),
        m.validation_fraction
    );
    out
}

/// A one-line progress display on stderr: redrawn in place on a terminal, every twentieth of
/// the files otherwise (logs stay short).
fn progress_printer(started: Instant) -> impl FnMut(PrepareProgress) {
    let tty = std::io::stderr().is_terminal();
    move |p| {
        if !tty && p.files_done % p.files.div_ceil(20).max(1) != 0 && p.files_done != p.files {
            return;
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        let line = format!(
            "files {}/{}  {:.1} MB text  {} tokens  {:.2} M tokens/s",
            p.files_done,
            p.files,
            p.text_bytes as f64 / 1e6,
            p.tokens,
            p.tokens as f64 / seconds / 1e6
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty { write!(err, "\r{line}") } else { writeln!(err, "{line}") };
        if tty && p.files_done == p.files {
            let _ = writeln!(err);
        }
    }
}
