//! The decode benchmark: a candidate's measured end-to-end latency on this device.
//!
//! Prefill `prompt_len` tokens (meta tokens first) at batch `batch`, then generate `gen_len`
//! tokens one step at a time with the model's caches and states, feeding back the greedy choice so
//! the work is that of real generation. Warm-up runs first; then `repeats` timed runs, of which
//! the median is reported. This is the ground truth the latency table is calibrated against.

use std::time::Instant;

use crate::kernels::Kernels;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::Serialize;

use crate::model::lm::HybridLm;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DecodeSetting {
    pub batch: usize,
    pub prompt_len: usize,
    pub gen_len: usize,
    pub warmup: usize,
    pub repeats: usize,
}

/// Median timings of the timed runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecodeReport {
    pub setting: DecodeSetting,
    /// Prefill of the prompt.
    pub prefill_ms: f64,
    /// All generated tokens (excluding prefill).
    pub generate_ms: f64,
    /// Prefill plus generation.
    pub total_ms: f64,
    /// Time per decode step (one token for the whole batch): the prefill yields the first
    /// generated token, the other `gen_len - 1` come from steps.
    pub per_token_ms: f64,
    /// Every timed run's total, for spread.
    pub totals_ms: Vec<f64>,
}

/// A setting that cannot be measured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Runs the benchmark on `model`. Prompt tokens are random ids of the model's vocabulary.
pub fn bench<B: Kernels>(
    model: &HybridLm<B>,
    setting: DecodeSetting,
    device: &B::Device,
) -> Result<DecodeReport, DecodeError> {
    if setting.batch == 0 || setting.prompt_len == 0 || setting.gen_len == 0 || setting.repeats == 0 {
        return Err(DecodeError(
            "batch, prompt length, generated length and repeats must all be at least 1".into(),
        ));
    }
    let vocab = model.vocab_size();
    let prompt = Tensor::<B, 2>::random(
        [setting.batch, setting.prompt_len],
        Distribution::Uniform(0.0, vocab as f64),
        device,
    )
    .int()
    .clamp(0, vocab as i64 - 1);
    let mut runs = Vec::with_capacity(setting.repeats);
    for run in 0..setting.warmup + setting.repeats {
        let timing = generate(model, prompt.clone(), setting.gen_len);
        if run >= setting.warmup {
            runs.push(timing);
        }
    }
    let median = |f: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let prefill_ms = median(|r| r.0);
    let generate_ms = median(|r| r.1);
    let totals_ms: Vec<f64> = runs.iter().map(|r| r.0 + r.1).collect();
    let mut sorted = totals_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(DecodeReport {
        setting,
        prefill_ms,
        generate_ms,
        total_ms: sorted[sorted.len() / 2],
        per_token_ms: generate_ms / (setting.gen_len - 1).max(1) as f64,
        totals_ms,
    })
}

/// One timed generation: (prefill ms, generation ms). Reading the chosen token back each step
/// forces the backend to finish the step's work, as a real generation loop does.
fn generate<B: Kernels>(model: &HybridLm<B>, prompt: Tensor<B, 2, Int>, gen_len: usize) -> (f64, f64) {
    let start = Instant::now();
    let (logits, mut state) = model.prefill(prompt);
    let mut next = logits.argmax(1).squeeze_dim::<1>(1);
    let _ = next.clone().into_data();
    let prefill_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    for _ in 1..gen_len {
        let logits = model.step(next, &mut state);
        next = logits.argmax(1).squeeze_dim::<1>(1);
        let _ = next.clone().into_data();
    }
    (prefill_ms, start.elapsed().as_secs_f64() * 1e3)
}
