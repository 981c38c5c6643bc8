//! `frontier train` and `frontier decode-bench`: one candidate, on this machine.
//!
//! Both take the architecture the way `frontier space` does (`--arch FILE` or `--preset NAME`;
//! `tiny-hybrid` when neither is given) and hand the real work to the worker crate.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use search_space::ModelSpec;
use serde_json::json;
use worker::backend::Precision;
use worker::data::{CorpusSource, DataConfig, TokenizerSpec};
use worker::decode::DecodeSetting;
use worker::run::{DeviceSet, decode_job, set_precision, train_job};
use worker::train::{Outcome, Progress, TrainConfig};

use crate::space::{Source, load};

/// Which model to use: `--arch FILE`, `--preset NAME`, or `tiny-hybrid`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Architecture document (what `space sample` and `space export --format frontier` write) or
    /// Nemotron-Flash config.json.
    #[arg(long, conflicts_with = "preset")]
    arch: Option<PathBuf>,
    /// A named preset (see `frontier space presets`).
    #[arg(long)]
    preset: Option<String>,
    /// Override the number of meta tokens prepended to every sequence.
    #[arg(long)]
    meta_tokens: Option<u32>,
    /// Seed of the initial weights (and, for training, of the batch order).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, or cuda / cuda:N in builds with the `cuda` feature; for training, cuda:0,1,..
    /// trains data parallel over those GPUs.
    #[arg(long, default_value = "cpu")]
    device: DeviceSet,
}

impl ModelArgs {
    fn spec(&self) -> Result<(String, ModelSpec)> {
        let source = match (&self.arch, &self.preset) {
            (Some(file), _) => Source::file(file.clone()),
            (None, Some(name)) => Source::preset(name.clone()),
            (None, None) => Source::preset("tiny-hybrid".into()),
        };
        let (label, arch) = load(&source)?;
        let mut spec = arch.expand().with_context(|| label.clone())?;
        if let Some(meta) = self.meta_tokens {
            spec.meta_tokens = meta;
        }
        Ok((arch.name.unwrap_or(label), spec))
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file, directory of text files, or JSONL with a `text` field (any of them .gz or
    /// .zst); `shards:DIR` for a shard set from `frontier data prepare`; or synthetic tasks:
    /// `synthetic:TASK[?KEY=VALUE&...][,TASK...]` with tasks in_context_recall, fuzzy_recall,
    /// noisy_recall, selective_copying, compression, memorization (scored by per-task accuracy).
    #[arg(long)]
    corpus: String,
    /// Training-token budget.
    #[arg(long)]
    tokens: u64,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Sequences per optimiser step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Sequences per forward/backward pass: the step accumulates the gradients of
    /// `batch / micro-batch` passes (must divide --batch).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Float type of weights, activations and gradients: f32, or bf16 (half the memory; the
    /// GPU's bf16 tensor cores).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Weight normalisation after every step (weight decay off, as in the paper).
    #[arg(long)]
    weight_norm: bool,
    /// `bytes` (default), `bpe:N` (train a BPE of N ids on the corpus) or a tokenizer.json path
    /// (`file:PATH` also reads). With `shards:DIR`, the set's own tokenizer (`bytes` or its file).
    #[arg(long, default_value = "bytes")]
    tokenizer: String,
    /// Share of the corpus held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Most validation tokens to score.
    #[arg(long, default_value_t = 65_536)]
    eval_tokens: usize,
    /// Where tokenized shards are cached (tokenized once, reused after).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Also score the model before training, to compare.
    #[arg(long)]
    eval_untrained: bool,
    /// Print one JSON line on stdout instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    #[arg(long, default_value_t = 128)]
    gen_len: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

/// A `--tokenizer` value (`bytes`, `bpe:N`, `file:PATH` or a `.json` path), read by the one
/// parser of tokenizer strings ([`api::proxy::TokenizerChoice::from_cli`]).
pub(crate) fn tokenizer_spec(s: &str) -> Result<TokenizerSpec> {
    let choice = api::proxy::TokenizerChoice::from_cli(s).map_err(|e| anyhow::anyhow!("--tokenizer: {e}"))?;
    Ok(TokenizerSpec::from_choice(choice, None))
}

/// A one-line progress display on stderr: redrawn in place on a terminal, every tenth of the
/// run otherwise (logs stay short).
fn progress_printer(quiet: bool) -> impl FnMut(Progress) {
    let tty = std::io::stderr().is_terminal();
    move |p: Progress| {
        if quiet {
            return;
        }
        let tenth = (p.steps / 10).max(1);
        if !tty && !p.step.is_multiple_of(tenth) && p.step != p.steps {
            return;
        }
        let width = 30;
        let done = (p.step * width / p.steps.max(1)) as usize;
        let bar = format!("{}{}", "#".repeat(done), ".".repeat(width as usize - done));
        let line = format!(
            "[{bar}] step {}/{}  loss {:.4}  lr {:.2e}  {:.0} tok/s",
            p.step, p.steps, p.loss, p.lr, p.tokens_per_s
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty { write!(err, "\r{line}") } else { writeln!(err, "{line}") };
        if tty && p.step == p.steps {
            let _ = writeln!(err);
        }
    }
}

pub fn train(args: TrainArgs) -> Result<String> {
    let (name, spec) = args.model.spec()?;
    if args.tokens == 0 {
        bail!("--tokens must be at least one batch ({} × {})", args.batch, args.seq_len);
    }
    let corpus: CorpusSource = args.corpus.parse().context("--corpus")?;
    let data = DataConfig {
        corpus: corpus.clone(),
        tokenizer: tokenizer_spec(&args.tokenizer)?,
        validation_fraction: args.val_fraction,
        cache_dir: args.cache_dir.clone(),
        max_vocab: None,
    };
    let config = TrainConfig {
        tokens: args.tokens,
        seq_len: args.seq_len,
        batch_size: args.batch,
        micro_batch: args.micro_batch,
        lr: args.lr,
        weight_norm: args.weight_norm,
        seed: args.model.seed,
        eval_tokens: Some(args.eval_tokens),
        ..TrainConfig::default()
    };
    set_precision(&args.model.device, args.precision)?;
    let run = train_job(
        &spec,
        &data,
        &config,
        args.model.device.clone(),
        args.eval_untrained,
        progress_printer(args.json),
    )
    .with_context(|| format!("training {name} on {corpus}"))?;
    if args.json {
        let mut line = json!({
            "arch": name,
            "hash": spec.canonical_hash(),
            "params": run.params,
            "device": run.device,
            "tokenizer": run.tokenizer,
            "untrained_val_loss": run.untrained_val_loss,
            "untrained_val_ppl": run.untrained_val_loss.map(f64::exp),
            "train_tokens_available": run.train_tokens_available,
            "peak_rss_bytes": peak_rss_bytes(),
        });
        if let (Some(line), Some(accuracy)) = (line.as_object_mut(), &run.untrained_accuracy) {
            line.insert("untrained_accuracy".into(), serde_json::to_value(accuracy)?);
        }
        let fields = serde_json::to_value(&run.outcome)?;
        if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
            line.extend(fields.clone());
        }
        return Ok(serde_json::to_string(&line)? + "\n");
    }
    let mut out = format!("{name}: {} parameters on {} ({})\n", run.params, run.device, run.tokenizer);
    if let Some(loss) = run.untrained_val_loss {
        out += &format!("untrained: val loss {loss:.4}, val PPL {:.2}\n", loss.exp());
    }
    if let Some(accuracy) = &run.untrained_accuracy {
        out += &format!("untrained accuracy: {}\n", accuracy_list(accuracy));
    }
    match run.outcome {
        Outcome::Completed(r) => {
            out += &format!(
                "trained {} tokens in {} steps ({:.1} s, {:.0} tokens/s): train loss {:.4}, val loss {:.4}, val PPL {:.2}\n",
                r.tokens, r.steps, r.train_seconds, r.tokens_per_s, r.train_loss, r.val_loss, r.val_ppl
            );
            if let Some(accuracy) = &r.accuracy {
                out += &format!("accuracy: {}\n", accuracy_list(accuracy));
            }
            Ok(out)
        }
        Outcome::Diverged { step, loss } => bail!("training diverged at step {step} (loss {loss})"),
    }
}

/// The process's peak resident memory (Linux's `VmHWM`), for comparing data pipelines; `None`
/// where the kernel does not say.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// `task 0.931, task 0.120` in task order.
fn accuracy_list(accuracy: &std::collections::BTreeMap<String, f64>) -> String {
    accuracy.iter().map(|(task, a)| format!("{task} {a:.3}")).collect::<Vec<_>>().join(", ")
}

pub fn decode_bench(args: DecodeArgs) -> Result<String> {
    let (name, spec) = args.model.spec()?;
    let setting = DecodeSetting {
        batch: args.batch,
        prompt_len: args.prompt_len,
        gen_len: args.gen_len,
        warmup: args.warmup,
        repeats: args.repeats,
    };
    if args.model.device.count() > 1 {
        let first = DeviceSet::from(args.model.device.primary());
        bail!(
            "--device {}: decode is measured on one device; name one, e.g. --device {first}",
            args.model.device
        );
    }
    let (report, device) = decode_job(&spec, setting, args.model.seed, args.model.device.primary())
        .with_context(|| format!("decode benchmark of {name}"))?;
    if args.json {
        let line = json!({"arch": name, "hash": spec.canonical_hash(), "device": device, "report": report});
        return Ok(serde_json::to_string(&line)? + "\n");
    }
    Ok(format!(
        "{name} on {device}: batch {}, prompt {}, generate {}: total {:.2} ms (prefill {:.2} ms, {:.3} ms/token), median of {}\n",
        setting.batch,
        setting.prompt_len,
        setting.gen_len,
        report.total_ms,
        report.prefill_ms,
        report.per_token_ms,
        setting.repeats
    ))
}
