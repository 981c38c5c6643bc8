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

mod args;
mod backends;
mod decoding;
mod naive;
mod report;
#[cfg(test)]
mod tests;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use search_space::presets::tiny_settings;
use search_space::{Architecture, ModelSpec, OpKind};
use worker::backend::{CpuAutodiff, default_device, describe};
use worker::kernels::TrainingBackend;

use args::{Args, DeviceArg};
use decoding::decode_table;
use naive::naive_table;
use report::{Machine, Plan, Report};
use train::training_table;

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
    let args = Args::parse();
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
