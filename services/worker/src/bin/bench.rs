//! Training and decoding benchmarks of the worker's models, with peers measured side by side in
//! one run and printed as tables (and, with `--json FILE`, written as JSON).
//!
//! ```text
//! cargo run --release -p worker --bin bench -- [--quick] [--json FILE] [--corpus PATH]
//!                                               [--sections LIST] [--device cpu|cuda[:N]]
//! ```
//!
//! 1. **Training throughput**: tokens/s of [`Trainer::step`] (forward, backward, clipping and
//!    the AdamW update) at batch 8 × seq 256, for pure attention, pure Mamba2, pure DeltaNet,
//!    pure Gated DeltaNet and the Nemotron-Flash pattern, all 4 mixers + 4 FFNs deep, at d_model
//!    128 and 256. The "× attention" column is each model's speed over attention's at the same
//!    width; the target is at least 0.7 for every chunked recurrent mixer.
//! 2. **Chunked vs per-token**: forward + backward of each recurrent mixer alone, in its chunked
//!    training form and in the per-token recurrence it replaces, with the largest difference
//!    between the two outputs as a check that both compute the same thing, and the chunked
//!    form's speed over the attention mixer's alone at the same width ("× attention", target
//!    at least 0.7), at each width of the training table.
//! 3. **Decode**: milliseconds per generated token at batch 1 after prompts of growing length,
//!    through [`worker::decode::bench`]: attention's step reads a cache that grows with the
//!    context, the recurrent mixers' steps do not.
//! 4. **Backend comparison** (built with `--features ndarray`): the training table for attention
//!    and the hybrid on `flex` and `ndarray` side by side, from identical weights and batches,
//!    with checks that `ndarray` computes what `flex` does (logits, prefill + decode steps against
//!    the full forward, losses along the run). On `--device cuda` the same comparison runs for
//!    every model between `flex` and CUDA, as the GPU correctness check.
//!
//! Training runs on `flex` with autodiff (or on CUDA with `--device cuda`), decoding on the same
//! backend without autodiff. Timings come from a warm process with warm-up steps first; the
//! models of one table step in turn rather than one after another, so that a change in the
//! machine's load falls on all of them alike. Spreads are min-max over the timed repetitions.
//! The process exits non-zero when a correctness check fails (the per-token forms against the
//! chunked ones, a second backend against the first), never because of a timing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use search_space::presets::tiny_settings;
use search_space::{Architecture, LayerSpec, ModelSpec, OpKind};
use serde::Serialize;
use worker::backend::{CpuAutodiff, default_device, describe};
use worker::decode::{self, DecodeSetting};
use worker::kernels::{Kernels, TrainingBackend};
use worker::model::attention::{Attention, AttentionConfig};
use worker::model::delta_rule::Scan;
use worker::model::deltanet::DeltaNetConfig;
use worker::model::gated_deltanet::GatedDeltaNetConfig;
use worker::model::lm::HybridLm;
use worker::model::mamba2::{Mamba2, Mamba2Config};
use worker::train::{TrainConfig, Trainer};

/// Sequences per training batch.
const BATCH: usize = 8;
/// Tokens per training sequence.
const SEQ: usize = 256;
/// Seeds weights, inputs and batch order, so every model of a table starts from the same draw.
const SEED: u64 = 7;
/// Largest `max |chunked − per-token| / scale` of section 2 that still counts as the same
/// computation: f32 rounding gives about 5e-7 on the CPU, a wrong form gives order 1, and the
/// margin leaves room for GPU matmuls at reduced internal precision.
const FORMS_TOLERANCE: f64 = 1e-2;
/// Tokens generated after each prompt in the decode table.
const GEN_LEN: usize = 64;
/// Random training tokens drawn when no corpus is given.
const RANDOM_TOKENS: usize = 1 << 20;

const USAGE: &str = "\
usage: bench [--quick] [--json FILE] [--corpus PATH] [--sections LIST] [--device cpu|cuda[:N]]

  --quick          fewer steps and configurations: a smoke run of about a minute on two cores
  --json FILE      also write every measurement as JSON to FILE
  --corpus PATH    train on this text (file, JSONL or directory; byte tokens) instead of
                   random bytes
  --sections LIST  comma-separated subset of train,naive,decode,backends (default: all)
  --device DEV     cpu (default) or cuda[:N] (needs the `cuda` feature)";

/// The models of every table: 4 mixers + 4 FFNs each.
const MODELS: [(&str, [&str; 8]); 5] = [
    ("attention", ["A", "F", "A", "F", "A", "F", "A", "F"]),
    ("mamba2", ["M2", "F", "M2", "F", "M2", "F", "M2", "F"]),
    ("deltanet", ["D", "F", "D", "F", "D", "F", "D", "F"]),
    ("gated deltanet", ["GD", "F", "GD", "F", "GD", "F", "GD", "F"]),
    ("hybrid D-M2-A-M2", ["D", "F", "M2", "F", "A", "F", "M2", "F"]),
];

/// Which models take part in the CPU backend comparison.
#[cfg(feature = "ndarray")]
const BACKEND_MODELS: [&str; 2] = ["attention", "hybrid D-M2-A-M2"];

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("a correctness check failed (see the tables above)");
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments and plan

/// Where the models run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeviceArg {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Args {
    quick: bool,
    json: Option<PathBuf>,
    corpus: Option<PathBuf>,
    sections: Vec<String>,
    device: DeviceArg,
    help: bool,
}

const SECTIONS: [&str; 4] = ["train", "naive", "decode", "backends"];

impl Args {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Args {
            quick: false,
            json: None,
            corpus: None,
            sections: SECTIONS.iter().map(|s| s.to_string()).collect(),
            device: DeviceArg::Cpu,
            help: false,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--quick" => parsed.quick = true,
                "--json" => parsed.json = Some(value("--json")?.into()),
                "--corpus" => parsed.corpus = Some(value("--corpus")?.into()),
                "--sections" => {
                    let list = value("--sections")?;
                    parsed.sections = list.split(',').map(|s| s.trim().to_string()).collect();
                    if let Some(bad) = parsed.sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                        return Err(format!("unknown section {bad:?}"));
                    }
                }
                "--device" => parsed.device = parse_device(&value("--device")?)?,
                "-h" | "--help" => parsed.help = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(parsed)
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
}

fn parse_device(text: &str) -> Result<DeviceArg, String> {
    if text == "cpu" {
        return Ok(DeviceArg::Cpu);
    }
    if text == "cuda" || text.starts_with("cuda:") {
        #[cfg(feature = "cuda")]
        {
            let index = match text.strip_prefix("cuda:") {
                Some(i) => i.parse().map_err(|_| format!("bad CUDA device index in {text:?}"))?,
                None => 0,
            };
            return Ok(DeviceArg::Cuda(index));
        }
        #[cfg(not(feature = "cuda"))]
        return Err("this build has no CUDA backend: rebuild with `--features cuda`".into());
    }
    Err(format!("unknown device {text:?} (cpu or cuda[:N])"))
}

/// How much of everything to run.
#[derive(Clone, Debug, Serialize)]
struct Plan {
    quick: bool,
    batch: usize,
    seq_len: usize,
    widths: Vec<usize>,
    /// Untimed optimiser steps before the timed ones.
    train_warmup: usize,
    train_steps: usize,
    /// Untimed and timed forward + backward passes of a mixer alone.
    naive_warmup: usize,
    naive_runs: usize,
    decode_prompts: Vec<usize>,
    decode_gen_len: usize,
    decode_repeats: usize,
    /// Widths of the backend comparison.
    backend_widths: Vec<usize>,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                quick,
                batch: BATCH,
                seq_len: SEQ,
                widths: vec![128],
                train_warmup: 1,
                train_steps: 2,
                naive_warmup: 0,
                naive_runs: 1,
                decode_prompts: vec![64, 1024],
                decode_gen_len: 16,
                decode_repeats: 3,
                backend_widths: vec![128],
            }
        } else {
            Plan {
                quick,
                batch: BATCH,
                seq_len: SEQ,
                widths: vec![128, 256],
                train_warmup: 2,
                train_steps: 8,
                naive_warmup: 1,
                naive_runs: 3,
                decode_prompts: vec![64, 256, 1024, 2048],
                decode_gen_len: GEN_LEN,
                decode_repeats: 7,
                backend_widths: vec![128, 256],
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Clone, Debug, Serialize)]
struct Machine {
    /// What the OS says this process may run in parallel.
    available_parallelism: usize,
    /// `RAYON_NUM_THREADS`, which caps the CPU backends' thread pools when set.
    rayon_num_threads: Option<String>,
    /// `/proc/loadavg` at the start and at the end of the run.
    load_at_start: Option<String>,
    load_at_end: Option<String>,
    /// The backend that trains, and the one that decodes.
    train_backend: String,
    decode_backend: String,
    data: String,
}

/// Min, median, mean and max of repeated measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct Spread {
    median: f64,
    mean: f64,
    min: f64,
    max: f64,
    runs: Vec<f64>,
}

impl Spread {
    fn of(runs: Vec<f64>) -> Self {
        assert!(!runs.is_empty(), "a spread needs at least one run");
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Spread {
            median,
            mean: sorted.iter().sum::<f64>() / n as f64,
            min: sorted[0],
            max: sorted[n - 1],
            runs,
        }
    }

    /// `min–max` in thousands.
    fn range_k(&self) -> String {
        format!("{:.1}–{:.1}k", self.min / 1e3, self.max / 1e3)
    }
}

#[derive(Clone, Debug, Serialize)]
struct TrainRow {
    model: String,
    layers: String,
    d_model: usize,
    params: usize,
    backend: String,
    tokens_per_s: Spread,
    /// This model's median over attention's at the same width.
    vs_attention: Option<f64>,
    /// The loss of every step, warm-up included.
    losses: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
struct NaiveRow {
    mixer: String,
    d_model: usize,
    chunked_tokens_per_s: Spread,
    per_token_tokens_per_s: Spread,
    speed_up: f64,
    /// Chunked tokens/s over the attention mixer's, both alone at the same width.
    vs_attention: f64,
    /// `max |chunked − per-token| / max |per-token|` over the outputs of one batch.
    output_difference: f64,
}

#[derive(Clone, Debug, Serialize)]
struct DecodeRow {
    model: String,
    d_model: usize,
    prompt_len: usize,
    gen_len: usize,
    prefill_ms: f64,
    per_token_ms: f64,
    /// Every timed run's total (prefill + generation), for spread.
    totals_ms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
struct Report {
    machine: Machine,
    plan: Plan,
    train: Vec<TrainRow>,
    naive: Vec<NaiveRow>,
    decode: Vec<DecodeRow>,
    backends: Vec<backends::BackendRow>,
    all_checks_passed: bool,
}

// ---------------------------------------------------------------------------------------------
// Driver

fn run(args: &Args) -> Result<bool, String> {
    let plan = Plan::new(args.quick);
    let (tokens, data) = training_tokens(args.corpus.as_ref())?;
    let load_at_start = load_average();
    let mut report = Report {
        machine: Machine {
            available_parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rayon_num_threads: std::env::var("RAYON_NUM_THREADS").ok(),
            load_at_start,
            load_at_end: None,
            train_backend: String::new(),
            decode_backend: String::new(),
            data,
        },
        plan,
        train: Vec::new(),
        naive: Vec::new(),
        decode: Vec::new(),
        backends: Vec::new(),
        all_checks_passed: true,
    };
    match args.device {
        DeviceArg::Cpu => {
            let device = default_device();
            measure_all::<CpuAutodiff>(args, &mut report, &tokens, &device);
            if args.wants("backends") {
                #[cfg(feature = "ndarray")]
                {
                    use burn::backend::ndarray::{NdArray, NdArrayDevice};
                    let models: Vec<_> =
                        MODELS.iter().filter(|(name, _)| BACKEND_MODELS.contains(name)).copied().collect();
                    let widths = report.plan.backend_widths.clone();
                    let tolerance = backends::Tolerance::CPU;
                    backends::compare_backends::<CpuAutodiff, burn::backend::Autodiff<NdArray>>(
                        &mut report,
                        &tokens,
                        (&device, &NdArrayDevice::default()),
                        &models,
                        &widths,
                        tolerance,
                    );
                }
                #[cfg(not(feature = "ndarray"))]
                println!(
                    "\n4. Backend comparison: skipped (build with `--features ndarray` to compare flex and ndarray)"
                );
            }
        }
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda(index) => {
            use worker::backend::{CudaAutodiff, cuda_device};
            let device = cuda_device(index);
            measure_all::<CudaAutodiff>(args, &mut report, &tokens, &device);
            if args.wants("backends") {
                // Every model, at the smallest width: the GPU's correctness check against flex.
                let widths = vec![report.plan.backend_widths[0]];
                backends::compare_backends::<CpuAutodiff, CudaAutodiff>(
                    &mut report,
                    &tokens,
                    (&default_device(), &device),
                    &MODELS,
                    &widths,
                    backends::Tolerance::GPU,
                );
            }
        }
    }
    report.machine.load_at_end = load_average();
    println!(
        "\nload average (1, 5, 15 min): {} at start, {} at end",
        report.machine.load_at_start.as_deref().unwrap_or("?"),
        report.machine.load_at_end.as_deref().unwrap_or("?"),
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| format!("JSON: {e}"))?;
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(report.all_checks_passed)
}

/// Runs sections 1-3 on the autodiff backend `A` (decoding on its inner backend).
fn measure_all<A: TrainingBackend>(args: &Args, report: &mut Report, tokens: &[u32], device: &A::Device) {
    report.machine.train_backend = describe::<A>(device);
    report.machine.decode_backend = describe::<A::InnerBackend>(device);
    let plan = report.plan.clone();
    let m = &report.machine;
    println!("worker bench{}", if plan.quick { " (--quick)" } else { "" });
    println!(
        "threads: {} available{}; load average (1, 5, 15 min): {}",
        m.available_parallelism,
        m.rayon_num_threads.as_ref().map(|n| format!(", RAYON_NUM_THREADS={n}")).unwrap_or_default(),
        m.load_at_start.as_deref().unwrap_or("?"),
    );
    println!("training backend: {}; decoding backend: {}", m.train_backend, m.decode_backend);
    println!("training data: {}", m.data);

    if args.wants("train") {
        report.train = training_table::<A>(&plan, tokens, device);
    }
    if args.wants("naive") {
        report.naive = naive_table::<A>(&plan, device);
        report.all_checks_passed &= report.naive.iter().all(|r| r.output_difference <= FORMS_TOLERANCE);
    }
    if args.wants("decode") {
        report.decode = decode_table::<A::InnerBackend>(&plan, device);
    }
}

/// The training stream: the corpus's training part in byte tokens, or seeded random bytes.
fn training_tokens(corpus: Option<&PathBuf>) -> Result<(Vec<u32>, String), String> {
    match corpus {
        Some(path) => {
            let data = worker::data::prepare(&worker::data::DataConfig::new(path))
                .map_err(|e| format!("corpus {}: {e}", path.display()))?;
            let described = format!("{} ({} byte tokens for training)", path.display(), data.train.len());
            Ok((data.train, described))
        }
        None => {
            let mut rng = ChaCha8Rng::seed_from_u64(SEED);
            let tokens = (0..RANDOM_TOKENS).map(|_| rng.next_u32() % 256).collect();
            Ok((tokens, format!("{RANDOM_TOKENS} random bytes (seed {SEED})")))
        }
    }
}

fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The expanded spec of a model of [`MODELS`] at `width`, from the tiny byte-level settings.
fn model_spec(layers: &[&str], width: usize) -> ModelSpec {
    let ops: Vec<OpKind> =
        layers.iter().map(|c| c.parse().expect("the model tables are written in valid codes")).collect();
    Architecture::from_layers(tiny_settings().with_hidden_size(width as u32), ops)
        .expand()
        .expect("the tiny settings dimension every operator at widths 128 and 256")
}

// ---------------------------------------------------------------------------------------------
// 1. Training throughput

/// A [`Trainer`] whose steps are timed: `plan.train_warmup` untimed steps, then
/// `plan.train_steps` timed ones. Peers advance one step each in turn, so that a change in the
/// machine's load during the run falls on all of them alike rather than on whichever ran last.
struct TimedTrainer<'a, A: TrainingBackend> {
    trainer: Trainer<'a, A>,
    device: A::Device,
    warmup: usize,
    tokens_per_step: usize,
    rates: Vec<f64>,
    losses: Vec<f64>,
}

impl<'a, A: TrainingBackend> TimedTrainer<'a, A> {
    fn new(model: HybridLm<A>, tokens: &'a [u32], plan: &Plan, device: &A::Device) -> Self {
        let tokens_per_step = plan.batch * plan.seq_len;
        let config = TrainConfig {
            tokens: ((plan.train_warmup + plan.train_steps) * tokens_per_step) as u64,
            seq_len: plan.seq_len,
            batch_size: plan.batch,
            seed: SEED,
            ..TrainConfig::default()
        };
        let trainer =
            Trainer::new(model, tokens, config, device.clone()).expect("the bench's training setup is valid");
        TimedTrainer {
            trainer,
            device: device.clone(),
            warmup: plan.train_warmup,
            tokens_per_step,
            rates: Vec::with_capacity(plan.train_steps),
            losses: Vec::new(),
        }
    }

    fn step(&mut self) {
        let start = Instant::now();
        let (loss, _) = self.trainer.step().expect("the bench's corpus is inside the vocabulary");
        // The step reads its loss back before the backward pass; waiting here makes the backward
        // pass and the update part of the step on backends that queue work.
        A::sync(&self.device).expect("the device finishes its work");
        let seconds = start.elapsed().as_secs_f64();
        if self.losses.len() >= self.warmup {
            self.rates.push(self.tokens_per_step as f64 / seconds);
        }
        self.losses.push(loss);
    }

    /// Tokens/s of the timed steps, and the loss of every step.
    fn finish(self) -> (Spread, Vec<f64>) {
        (Spread::of(self.rates), self.losses)
    }
}

fn training_table<A: TrainingBackend>(plan: &Plan, tokens: &[u32], device: &A::Device) -> Vec<TrainRow> {
    println!(
        "\n1. Training throughput: Trainer::step (forward + backward + clip + AdamW), batch {} × seq {}, \
         4 mixers + 4 FFNs, {} warm-up + {} timed steps, the models of one width stepping in turn",
        plan.batch, plan.seq_len, plan.train_warmup, plan.train_steps
    );
    println!(
        "   target: every chunked recurrent mixer at ≥ 0.7× attention's tokens/s; tok/s is the median, range min–max"
    );
    println!(
        "{:>7}  {:<18} {:>9} {:>10}  {:<15} {:>11}  {:>6}  {:>13}",
        "d_model", "model", "params", "tok/s", "range", "× attention", "≥0.7×", "loss first→last"
    );
    let mut rows = Vec::new();
    for &width in &plan.widths {
        let mut trainers: Vec<_> = MODELS
            .iter()
            .map(|(_, layers)| {
                A::seed(device, SEED);
                let model = HybridLm::<A>::init(&model_spec(layers, width), device);
                (model.num_params(), TimedTrainer::new(model, tokens, plan, device))
            })
            .collect();
        for _ in 0..plan.train_warmup + plan.train_steps {
            for (_, trainer) in &mut trainers {
                trainer.step();
            }
        }
        let mut attention_rate = None;
        for ((name, layers), (params, trainer)) in MODELS.iter().zip(trainers) {
            let (rate, losses) = trainer.finish();
            if *name == "attention" {
                attention_rate = Some(rate.median);
            }
            let vs_attention = attention_rate.map(|a| rate.median / a);
            let target = match (*name, vs_attention) {
                ("mamba2" | "deltanet" | "gated deltanet", Some(r)) if r >= 0.7 => "yes",
                ("mamba2" | "deltanet" | "gated deltanet", Some(_)) => "NO",
                _ => "",
            };
            println!(
                "{:>7}  {:<18} {:>9} {:>10.0}  {:<15} {:>11}  {:>6}  {:>6.3}→{:.3}",
                width,
                name,
                params,
                rate.median,
                rate.range_k(),
                vs_attention.map(|r| format!("{r:.2}")).unwrap_or_default(),
                target,
                losses[0],
                losses[losses.len() - 1],
            );
            rows.push(TrainRow {
                model: name.to_string(),
                layers: layers.join(" "),
                d_model: width,
                params,
                backend: describe::<A>(device),
                tokens_per_s: rate,
                vs_attention,
                losses,
            });
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// 2. Chunked vs per-token training forms

/// One mixer alone: a recurrent one, runnable in both forms, or attention, the reference.
#[allow(clippy::large_enum_variant, reason = "four are built per run; boxing would not pay for itself")]
enum Mixer<B: Kernels> {
    Attention(Attention<B>),
    Mamba2(Mamba2<B>),
    DeltaNet(worker::model::deltanet::DeltaNet<B>),
    GatedDeltaNet(worker::model::gated_deltanet::GatedDeltaNet<B>),
}

impl<B: Kernels> Mixer<B> {
    /// The mixer of the first layer of `[code, F] × 4` at `width`.
    fn of(code: &str, width: usize, device: &B::Device) -> Self {
        let spec = model_spec(&[code, "F"], width);
        match &spec.layers[0] {
            LayerSpec::Attention(s) => Mixer::Attention(AttentionConfig::from_spec(s, width).init(device)),
            LayerSpec::Mamba2(s) => Mixer::Mamba2(Mamba2Config::from_spec(s, width).init(device)),
            LayerSpec::DeltaNet(s) => Mixer::DeltaNet(DeltaNetConfig::from_spec(s, width).init(device)),
            LayerSpec::GatedDeltaNet(s) => {
                Mixer::GatedDeltaNet(GatedDeltaNetConfig::from_spec(s, width).init(device))
            }
            other => panic!("{other:?} is not a token mixer"),
        }
    }

    fn forward(&self, x: Tensor<B, 3>, chunked: bool) -> Tensor<B, 3> {
        match (self, chunked) {
            // Attention has one form; "per-token" is never asked of it.
            (Mixer::Attention(m), _) => m.forward(x, 0),
            (Mixer::Mamba2(m), true) => m.forward(x),
            (Mixer::DeltaNet(m), true) => m.forward(x),
            (Mixer::GatedDeltaNet(m), true) => m.forward(x),
            (Mixer::Mamba2(m), false) => m.forward_scan(x, Scan::PerToken),
            (Mixer::DeltaNet(m), false) => m.forward_scan(x, Scan::PerToken),
            (Mixer::GatedDeltaNet(m), false) => m.forward_scan(x, Scan::PerToken),
        }
    }
}

/// Tokens/s of forward + backward (loss `mean(y²)`) through one form of the mixer.
fn mixer_rates<A: TrainingBackend>(
    mixer: &Mixer<A>,
    x: &Tensor<A, 3>,
    chunked: bool,
    plan: &Plan,
    device: &A::Device,
) -> Spread {
    let [batch, seq, _] = x.dims();
    let mut rates = Vec::new();
    for run in 0..plan.naive_warmup + plan.naive_runs {
        let start = Instant::now();
        let _gradients = mixer.forward(x.clone(), chunked).square().mean().backward();
        A::sync(device).expect("the device finishes its work");
        let seconds = start.elapsed().as_secs_f64();
        if run >= plan.naive_warmup {
            rates.push((batch * seq) as f64 / seconds);
        }
    }
    Spread::of(rates)
}

fn naive_table<A: TrainingBackend>(plan: &Plan, device: &A::Device) -> Vec<NaiveRow> {
    println!(
        "\n2. Chunked vs per-token training form, each mixer alone: forward + backward of mean(y²), \
         batch {} × seq {}, {} warm-up + {} timed runs",
        plan.batch, plan.seq_len, plan.naive_warmup, plan.naive_runs
    );
    println!("   check: the two forms' outputs within {FORMS_TOLERANCE:.0e} of their scale");
    println!(
        "   × attention: chunked tok/s over the attention mixer's (GQA, RoPE, causal), measured alone \
         at the same width just before each row; target ≥ 0.7"
    );
    println!(
        "{:>7}  {:<15} {:>13} {:<15} {:>13} {:<15} {:>9}  {:>11}  {:>16}  check",
        "d_model",
        "mixer",
        "chunked tok/s",
        "range",
        "per-token",
        "range",
        "speed-up",
        "× attention",
        "max |Δ out|/scale"
    );
    let mut rows = Vec::new();
    for &width in &plan.widths {
        A::seed(device, SEED);
        let attention = Mixer::<A>::of("A", width, device);
        rows.extend(naive_rows(&attention, width, plan, device));
    }
    rows
}

/// The rows of one width of [`naive_table`].
fn naive_rows<A: TrainingBackend>(
    attention: &Mixer<A>,
    width: usize,
    plan: &Plan,
    device: &A::Device,
) -> Vec<NaiveRow> {
    let mut rows = Vec::new();
    for (name, code) in [("mamba2", "M2"), ("deltanet", "D"), ("gated deltanet", "GD")] {
        A::seed(device, SEED);
        let mixer = Mixer::<A>::of(code, width, device);
        let x =
            Tensor::<A, 3>::random([plan.batch, plan.seq_len, width], Distribution::Normal(0.0, 1.0), device);
        let reference = mixer_rates(attention, &x, true, plan, device);
        let chunked = mixer_rates(&mixer, &x, true, plan, device);
        let vs_attention = chunked.median / reference.median;
        let per_token = mixer_rates(&mixer, &x, false, plan, device);
        let output_difference =
            relative_difference(mixer.forward(x.clone(), true), mixer.forward(x.clone(), false));
        let speed_up = chunked.median / per_token.median;
        println!(
            "{:>7}  {:<15} {:>13.0} {:<15} {:>13.0} {:<15} {:>8.2}×  {:>11.2}  {:>16.1e}  {}",
            width,
            name,
            chunked.median,
            chunked.range_k(),
            per_token.median,
            per_token.range_k(),
            speed_up,
            vs_attention,
            output_difference,
            if output_difference <= FORMS_TOLERANCE { "ok" } else { "FAILED" }
        );
        rows.push(NaiveRow {
            mixer: name.to_string(),
            d_model: width,
            chunked_tokens_per_s: chunked,
            per_token_tokens_per_s: per_token,
            speed_up,
            vs_attention,
            output_difference,
        });
    }
    rows
}

/// `max |a − b| / max |b|` over all elements.
fn relative_difference<B: Kernels, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    let scale = b.clone().abs().max().into_scalar().elem::<f64>();
    let diff = (a - b).abs().max().into_scalar().elem::<f64>();
    diff / scale.max(f64::MIN_POSITIVE)
}

// ---------------------------------------------------------------------------------------------
// 3. Decode

fn decode_table<B: Kernels>(plan: &Plan, device: &B::Device) -> Vec<DecodeRow> {
    let width = 128;
    println!(
        "\n3. Decode at batch 1, d_model {width}: ms per generated token after a prompt of each length \
         ({} tokens generated; median of {} runs after 1 warm-up)",
        plan.decode_gen_len, plan.decode_repeats
    );
    let mut header = format!("{:<18}", "model");
    for p in &plan.decode_prompts {
        header += &format!(" {:>9}", format!("ctx {p}"));
    }
    header += &format!("  {:>9}   prefill ms at each length", "last/first");
    println!("{header}");
    let mut rows = Vec::new();
    for (name, layers) in MODELS {
        let spec = model_spec(&layers, width);
        B::seed(device, SEED);
        let model = HybridLm::<B>::init(&spec, device);
        let mut line = format!("{name:<18}");
        let mut prefills = Vec::new();
        let mut per_token = Vec::new();
        for &prompt_len in &plan.decode_prompts {
            let setting = DecodeSetting {
                batch: 1,
                prompt_len,
                gen_len: plan.decode_gen_len,
                warmup: 1,
                repeats: plan.decode_repeats,
            };
            let report = decode::bench(&model, setting, device).expect("the decode settings are valid");
            line += &format!(" {:>9.2}", report.per_token_ms);
            prefills.push(format!("{:.0}", report.prefill_ms));
            per_token.push(report.per_token_ms);
            rows.push(DecodeRow {
                model: name.to_string(),
                d_model: width,
                prompt_len,
                gen_len: plan.decode_gen_len,
                prefill_ms: report.prefill_ms,
                per_token_ms: report.per_token_ms,
                totals_ms: report.totals_ms,
            });
        }
        let growth = per_token[per_token.len() - 1] / per_token[0];
        line += &format!("  {growth:>9.2}×  {}", prefills.join(" / "));
        println!("{line}");
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// 4. Backend comparison and correctness on a second backend

/// Section 4: the same models trained side by side on two backends from identical weights and
/// batches, and the checks that the second computes what the first does. Only a build with a
/// second backend (`ndarray` or `cuda`) runs it; the tests use its weight copy in any build.
#[cfg_attr(not(any(feature = "ndarray", feature = "cuda")), allow(dead_code))]
mod backends {
    use super::*;

    #[derive(Clone, Debug, Serialize)]
    pub(super) struct BackendRow {
        model: String,
        d_model: usize,
        reference_backend: String,
        other_backend: String,
        reference_tokens_per_s: Spread,
        other_tokens_per_s: Spread,
        /// Other median over reference median.
        other_vs_reference: f64,
        /// `max |Δ logits| / max |logits|` of the full forward, from identical weights and tokens.
        logits_difference: f64,
        /// The same for prefill + decode steps against the full forward, on the other backend alone.
        decode_vs_forward: f64,
        /// `max |Δ loss|` over the training steps, identical weights and batches.
        loss_difference: f64,
        reference_losses: Vec<f64>,
        other_losses: Vec<f64>,
        passed: bool,
    }

    /// How far a second backend may be from the reference.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Tolerance {
        /// Of `max |Δ logits| / max |logits|`, and of decode against forward.
        logits: f64,
        /// Of `max |Δ loss|` over the training steps.
        loss: f64,
    }

    impl Tolerance {
        /// Two f32 CPU backends: the same arithmetic summed in different orders.
        #[cfg(feature = "ndarray")]
        pub(super) const CPU: Tolerance = Tolerance { logits: 1e-4, loss: 1e-3 };
        /// A GPU against the CPU: matmuls may run at reduced internal precision (TF32).
        #[cfg(feature = "cuda")]
        pub(super) const GPU: Tolerance = Tolerance { logits: 1e-2, loss: 2e-2 };
    }

    /// Collects the data of every float parameter, in visiting order.
    struct CollectWeights(Vec<TensorData>);

    impl<B: Kernels> ModuleVisitor<B> for CollectWeights {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().into_data());
        }
    }

    /// Replaces every float parameter, in visiting order, with the next collected data.
    struct LoadWeights(std::vec::IntoIter<TensorData>);

    impl<B: Kernels> ModuleMapper<B> for LoadWeights {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let data = self.0.next().expect("both models have the same parameters");
            param.map(|old| {
                assert_eq!(old.shape(), data.shape, "parameter shapes differ");
                let new = Tensor::from_data(data, &old.device());
                if old.is_require_grad() { new.require_grad() } else { new }
            })
        }
    }

    /// `to` with the weights of `from`: both must be built from the same spec.
    pub(super) fn copy_weights<S: Kernels, T: Kernels>(from: &HybridLm<S>, to: HybridLm<T>) -> HybridLm<T> {
        let mut collected = CollectWeights(Vec::new());
        from.visit(&mut collected);
        let mut load = LoadWeights(collected.0.into_iter());
        let copied = to.map(&mut load);
        assert!(load.0.next().is_none(), "both models have the same parameters");
        copied
    }

    /// Seeded random token ids `[rows, len]` below `vocab`, the same on every backend.
    pub(super) fn token_ids<B: Kernels>(
        rows: usize,
        len: usize,
        vocab: usize,
        device: &B::Device,
    ) -> Tensor<B, 2, Int> {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let ids: Vec<i64> = (0..rows * len).map(|_| i64::from(rng.next_u32() % vocab as u32)).collect();
        Tensor::from_data(TensorData::new(ids, [rows, len]), device)
    }

    /// Prefills `split` tokens, decodes the rest one step at a time, and returns the largest
    /// difference from the full forward's logits at the same positions, relative to their scale.
    fn decode_vs_forward<B: Kernels>(model: &HybridLm<B>, tokens: Tensor<B, 2, Int>, split: usize) -> f64 {
        let [rows, len] = tokens.dims();
        let full = model.forward(tokens.clone());
        let vocab = full.dims()[2];
        let at = |t: usize| full.clone().slice([0..rows, t..t + 1, 0..vocab]).reshape([rows, vocab]);
        let (mut logits, mut state) = model.prefill(tokens.clone().slice([0..rows, 0..split]));
        let mut worst: f64 = 0.0;
        for t in split - 1..len {
            worst = worst.max(relative_difference(logits.clone(), at(t)));
            if t + 1 < len {
                logits =
                    model.step(tokens.clone().slice([0..rows, t + 1..t + 2]).reshape([rows]), &mut state);
            }
        }
        worst
    }

    /// Trains the same models from the same weights and batches on the reference backend `R` and
    /// the other backend `O`, side by side, and checks that `O` computes what `R` does.
    pub(super) fn compare_backends<R: TrainingBackend, O: TrainingBackend>(
        report: &mut Report,
        tokens: &[u32],
        (reference_device, other_device): (&R::Device, &O::Device),
        models: &[(&str, [&str; 8])],
        widths: &[usize],
        tolerance: Tolerance,
    ) {
        let plan = report.plan.clone();
        let reference_name = describe::<R>(reference_device);
        let other_name = describe::<O>(other_device);
        println!(
            "\n4. Backend comparison: {reference_name} vs {other_name}, Trainer::step at batch {} × seq {}, \
             {} warm-up + {} timed steps, identical weights and batches",
            plan.batch, plan.seq_len, plan.train_warmup, plan.train_steps
        );
        println!(
            "   checks: logits and decode-vs-forward within {:.0e} of scale, losses within {:.0e}",
            tolerance.logits, tolerance.loss
        );
        println!(
            "{:>7}  {:<18} {:>12} {:>12} {:>7}  {:>10} {:>10} {:>10}  check",
            "d_model", "model", "ref tok/s", "other tok/s", "other×", "Δ logits", "decode Δ", "max Δ loss"
        );
        for &width in widths {
            for &(name, layers) in models {
                let spec = model_spec(&layers, width);
                R::seed(reference_device, SEED);
                let reference = HybridLm::<R>::init(&spec, reference_device);
                let other = copy_weights(&reference, HybridLm::<O>::init(&spec, other_device));

                let vocab = spec.vocab_size as usize;
                let logits_difference = relative_difference(
                    Tensor::<O::InnerBackend, 3>::from_data(
                        reference.valid().forward(token_ids(2, 64, vocab, reference_device)).into_data(),
                        other_device,
                    ),
                    other.valid().forward(token_ids(2, 64, vocab, other_device)),
                );
                let decode_difference =
                    decode_vs_forward(&other.valid(), token_ids(2, 40, vocab, other_device), 24);

                let mut reference = TimedTrainer::new(reference, tokens, &plan, reference_device);
                let mut other = TimedTrainer::new(other, tokens, &plan, other_device);
                for _ in 0..plan.train_warmup + plan.train_steps {
                    reference.step();
                    other.step();
                }
                let (reference_rate, reference_losses) = reference.finish();
                let (other_rate, other_losses) = other.finish();
                let loss_difference = reference_losses
                    .iter()
                    .zip(&other_losses)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                let passed = logits_difference <= tolerance.logits
                    && decode_difference <= tolerance.logits
                    && loss_difference <= tolerance.loss
                    && other_losses.iter().all(|l| l.is_finite());
                report.all_checks_passed &= passed;
                let ratio = other_rate.median / reference_rate.median;
                println!(
                    "{:>7}  {:<18} {:>12.0} {:>12.0} {:>6.2}×  {:>10.1e} {:>10.1e} {:>10.1e}  {}",
                    width,
                    name,
                    reference_rate.median,
                    other_rate.median,
                    ratio,
                    logits_difference,
                    decode_difference,
                    loss_difference,
                    if passed { "ok" } else { "FAILED" }
                );
                report.backends.push(BackendRow {
                    model: name.to_string(),
                    d_model: width,
                    reference_backend: reference_name.clone(),
                    other_backend: other_name.clone(),
                    reference_tokens_per_s: reference_rate,
                    other_tokens_per_s: other_rate,
                    other_vs_reference: ratio,
                    logits_difference,
                    decode_vs_forward: decode_difference,
                    loss_difference,
                    reference_losses,
                    other_losses,
                    passed,
                });
            }
        }
        let rows: Vec<_> = report.backends.iter().filter(|r| r.other_backend == other_name).collect();
        if !rows.is_empty() {
            let mean_ratio = rows.iter().map(|r| r.other_vs_reference).sum::<f64>() / rows.len() as f64;
            let faster = if mean_ratio > 1.0 { &other_name } else { &reference_name };
            println!(
                "   {other_name} trains at {mean_ratio:.2}× the speed of {reference_name} on average over these rows: \
                 {faster} is faster"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backends::{copy_weights, token_ids};
    use super::*;
    use worker::backend::Cpu;

    type B = Cpu;

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 data")
    }

    #[test]
    fn per_token_mamba2_computes_the_same_outputs_as_the_chunked_forward() {
        let device = default_device();
        B::seed(&device, 1);
        for groups in [1, 2] {
            let m = Mamba2Config::new(16, 4, 8, 6).with_groups(groups).with_chunk_size(4).init::<B>(&device);
            // 11 tokens: two whole chunks and a partial one.
            let x = Tensor::<B, 3>::random([2, 11, 16], Distribution::Normal(0.0, 1.0), &device);
            let err = relative_difference(m.forward_scan(x.clone(), Scan::PerToken), m.forward(x));
            // Measured: 7.7e-8 with one group, 2.0e-8 with two (f32 rounding of two summation orders).
            assert!(err < 1e-5, "groups {groups}: per-token off the chunked form by {err}");
        }
    }

    #[test]
    fn copied_weights_reproduce_the_source_models_logits() {
        let device = default_device();
        let spec = model_spec(&MODELS[4].1, 128);
        B::seed(&device, 2);
        let source = HybridLm::<B>::init(&spec, &device);
        B::seed(&device, 3);
        let fresh = HybridLm::<B>::init(&spec, &device);
        let tokens = token_ids::<B>(1, 16, 256, &device);
        let before = values(fresh.forward(tokens.clone()));
        let copied = copy_weights(&source, fresh);
        let want = values(source.forward(tokens.clone()));
        assert_ne!(before, want, "differently seeded models must differ for this test to mean anything");
        assert_eq!(values(copied.forward(tokens)), want);
    }

    #[test]
    fn copied_weights_stay_trainable_on_an_autodiff_backend() {
        let device = default_device();
        let spec = model_spec(&MODELS[0].1, 128);
        let source = HybridLm::<CpuAutodiff>::init(&spec, &device);
        let copied = copy_weights(&source, HybridLm::<CpuAutodiff>::init(&spec, &device));
        let grads = copied.forward(token_ids(1, 8, 256, &device)).square().mean().backward();
        let grad = copied.final_norm.gamma.grad(&grads);
        assert!(grad.is_some(), "a copied parameter must still receive a gradient");
    }

    #[test]
    fn spread_reports_median_mean_and_range() {
        let s = Spread::of(vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.mean, s.min, s.max), (2.5, 4.0, 1.0, 10.0));
        assert_eq!(Spread::of(vec![5.0, 1.0, 3.0]).median, 3.0);
    }

    #[test]
    fn arguments_parse_into_a_plan_and_reject_unknown_input() {
        let parse = |s: &str| Args::parse(s.split_whitespace().map(String::from));
        let args = parse("--quick --json out.json --sections train,decode").expect("valid arguments");
        assert!(args.quick && args.wants("train") && args.wants("decode") && !args.wants("naive"));
        assert_eq!(args.json, Some(PathBuf::from("out.json")));
        assert_eq!(args.device, DeviceArg::Cpu);
        assert!(parse("--sections train,bogus").is_err());
        assert!(parse("--json").is_err());
        assert!(parse("--fast").is_err());
        assert!(parse("--device tpu").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(parse("--device cuda").is_err());
        #[cfg(feature = "cuda")]
        assert_eq!(parse("--device cuda:1").map(|a| a.device), Ok(DeviceArg::Cuda(1)));
    }
}
