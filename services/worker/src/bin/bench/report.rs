//! What a run measures, and how much of everything it runs.

use serde::Serialize;

use super::backends::BackendRow;
use super::{BATCH, GEN_LEN, SEQ};

/// How much of everything to run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub batch: usize,
    pub seq_len: usize,
    pub widths: Vec<usize>,
    /// Untimed optimiser steps before the timed ones.
    pub train_warmup: usize,
    pub train_steps: usize,
    /// Untimed and timed forward + backward passes of a mixer alone.
    pub naive_warmup: usize,
    pub naive_runs: usize,
    pub decode_prompts: Vec<usize>,
    pub decode_gen_len: usize,
    pub decode_repeats: usize,
    /// Widths of the backend comparison.
    pub backend_widths: Vec<usize>,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
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

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// What the OS says this process may run in parallel.
    pub available_parallelism: usize,
    /// `RAYON_NUM_THREADS`, which caps the CPU backends' thread pools when set.
    pub rayon_num_threads: Option<String>,
    /// `/proc/loadavg` at the start and at the end of the run.
    pub load_at_start: Option<String>,
    pub load_at_end: Option<String>,
    /// The backend that trains, and the one that decodes.
    pub train_backend: String,
    pub decode_backend: String,
    pub data: String,
}

/// Min, median, mean and max of repeated measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Spread {
    pub fn of(runs: Vec<f64>) -> Self {
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
    pub fn range_k(&self) -> String {
        format!("{:.1}–{:.1}k", self.min / 1e3, self.max / 1e3)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainRow {
    pub model: String,
    pub layers: String,
    pub d_model: usize,
    pub params: usize,
    pub backend: String,
    pub tokens_per_s: Spread,
    /// This model's median over attention's at the same width.
    pub vs_attention: Option<f64>,
    /// The loss of every step, warm-up included.
    pub losses: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NaiveRow {
    pub mixer: String,
    pub d_model: usize,
    pub chunked_tokens_per_s: Spread,
    pub per_token_tokens_per_s: Spread,
    pub speed_up: f64,
    /// Chunked tokens/s over the attention mixer's, both alone at the same width.
    pub vs_attention: f64,
    /// `max |chunked − per-token| / max |per-token|` over the outputs of one batch.
    pub output_difference: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DecodeRow {
    pub model: String,
    pub d_model: usize,
    pub prompt_len: usize,
    pub gen_len: usize,
    pub prefill_ms: f64,
    pub per_token_ms: f64,
    /// Every timed run's total (prefill + generation), for spread.
    pub totals_ms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub plan: Plan,
    pub train: Vec<TrainRow>,
    pub naive: Vec<NaiveRow>,
    pub decode: Vec<DecodeRow>,
    pub backends: Vec<BackendRow>,
    pub all_checks_passed: bool,
}
