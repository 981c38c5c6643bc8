//! 4. Backend comparison and correctness on a second backend.
//!
//! The same models trained side by side on two backends from identical weights and
//! batches, and the checks that the second computes what the first does. Only a build with a
//! second backend (`ndarray` or `cuda`) runs it; the tests use its weight copy in any build.
#![cfg_attr(not(any(feature = "ndarray", feature = "cuda")), allow(dead_code))]

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::Serialize;
use worker::backend::describe;
use worker::kernels::{Kernels, TrainingBackend};
use worker::model::lm::HybridLm;

use super::naive::relative_difference;
use super::report::{Report, Spread};
use super::train::TimedTrainer;
use super::{SEED, model_spec};

#[derive(Clone, Debug, Serialize)]
pub struct BackendRow {
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
pub struct Tolerance {
    /// Of `max |Δ logits| / max |logits|`, and of decode against forward.
    logits: f64,
    /// Of `max |Δ loss|` over the training steps.
    loss: f64,
}

impl Tolerance {
    /// Two f32 CPU backends: the same arithmetic summed in different orders.
    #[cfg(feature = "ndarray")]
    pub const CPU: Tolerance = Tolerance { logits: 1e-4, loss: 1e-3 };
    /// A GPU against the CPU: matmuls may run at reduced internal precision (TF32).
    #[cfg(feature = "cuda")]
    pub const GPU: Tolerance = Tolerance { logits: 1e-2, loss: 2e-2 };
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
pub fn copy_weights<S: Kernels, T: Kernels>(from: &HybridLm<S>, to: HybridLm<T>) -> HybridLm<T> {
    let mut collected = CollectWeights(Vec::new());
    from.visit(&mut collected);
    let mut load = LoadWeights(collected.0.into_iter());
    let copied = to.map(&mut load);
    assert!(load.0.next().is_none(), "both models have the same parameters");
    copied
}

/// Seeded random token ids `[rows, len]` below `vocab`, the same on every backend.
pub fn token_ids<B: Kernels>(rows: usize, len: usize, vocab: usize, device: &B::Device) -> Tensor<B, 2, Int> {
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
            logits = model.step(tokens.clone().slice([0..rows, t + 1..t + 2]).reshape([rows]), &mut state);
        }
    }
    worst
}

/// Trains the same models from the same weights and batches on the reference backend `R` and
/// the other backend `O`, side by side, and checks that `O` computes what `R` does.
pub fn compare_backends<R: TrainingBackend, O: TrainingBackend>(
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
            let loss_difference =
                reference_losses.iter().zip(&other_losses).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
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
