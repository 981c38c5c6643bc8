//! `frontier submit --dry-run`: what a search's trials will cost before any GPU is spent.
//!
//! Candidates are sampled from the spec's space (and its seed designs) and expanded at the
//! widest hidden size, the upper bound of what width selection picks. For each:
//! - **parameters**, from `search_space`'s closed-form count;
//! - **training FLOPs** per token: `6 × (layer parameters + head)` for the matrix products of
//!   the forward and backward passes, plus attention's scores and values, `3 × 4 × c × d_attn`
//!   per attention layer with `c` the mean causal context (`seq_len / 2`, or the window);
//!   the recurrent mixers' scans are small next to their projections and not counted;
//! - **memory per device** at the micro-batch: f32 weights, gradients and AdamW's two moments
//!   (16 bytes per parameter), and activations estimated as in Korthikanti et al. (2022,
//!   "Reducing activation recomputation"): `34 × s × b × h` bytes per sub-layer in f32, plus
//!   the attention scores (`5 × heads × s² × b × 4` bytes per attention layer; burn keeps them
//!   under autodiff) and the logits (`3 × s × b × vocab × 4` bytes);
//! - **device-hours**: from a measured throughput (`--tokens-per-s`, e.g. from `frontier
//!   train` on the target GPU), or else from FLOPs at a stated peak and utilisation.

use std::fmt::Write as _;

use anyhow::Result;
use api::SearchSpec;
use search_space::{Architecture, LayerSpec, ModelSpec, space::rng};

/// Candidates sampled for the estimate.
const SAMPLES: usize = 256;

/// How fast a device trains, for device-hours.
#[derive(Clone, Copy, Debug)]
pub enum Throughput {
    /// Measured tokens per second per device.
    Measured { tokens_per_s: f64 },
    /// Peak dense TFLOP/s and the share of it training reaches.
    Peak { tflops: f64, utilisation: f64 },
}

/// One candidate's training cost at the spec's proxy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrialCost {
    pub params: u64,
    pub flops_per_token: f64,
    pub memory_bytes: f64,
}

/// The cost of training `model` with the spec's batch shape.
pub fn trial_cost(model: &ModelSpec, seq_len: u64, micro_batch: u64) -> TrialCost {
    let h = f64::from(model.hidden_size);
    let (s, b) = (seq_len as f64, micro_batch as f64);
    let counts = model.params();
    let head = f64::from(model.vocab_size) * h;
    let mut flops = 6.0 * (counts.layers as f64 + head);
    let mut activations = 0.0;
    for layer in &model.layers {
        activations += 34.0 * s * b * h;
        if let LayerSpec::Attention(a) = layer {
            let context = a.sliding_window.map_or(s / 2.0, |w| f64::from(w).min(s / 2.0));
            let d_attn = f64::from(a.num_heads) * f64::from(a.head_dim);
            flops += 12.0 * context * d_attn;
            activations += 5.0 * f64::from(a.num_heads) * s * s * b * 4.0;
        }
    }
    activations += 3.0 * s * b * f64::from(model.vocab_size) * 4.0;
    TrialCost {
        params: counts.total,
        flops_per_token: flops,
        memory_bytes: 16.0 * counts.total as f64 + activations,
    }
}

/// Device-hours to train `tokens` tokens.
pub fn device_hours(cost: &TrialCost, tokens: f64, throughput: Throughput) -> f64 {
    match throughput {
        Throughput::Measured { tokens_per_s } => tokens / tokens_per_s / 3600.0,
        Throughput::Peak { tflops, utilisation } => {
            cost.flops_per_token * tokens / (tflops * 1e12 * utilisation) / 3600.0
        }
    }
}

/// Tokens the whole search trains: each planned candidate at the first rung's budget, and the
/// share successive halving promotes at each higher rung's.
pub fn search_tokens(spec: &SearchSpec) -> f64 {
    let planned = spec.algorithm.planned_candidates() as f64;
    match &spec.halving {
        None => planned * spec.proxy.tokens as f64,
        Some(h) => (0..h.rungs)
            .map(|rung| {
                (planned / f64::from(h.eta).powi(rung as i32)).ceil()
                    * h.budget(spec.proxy.tokens, rung) as f64
            })
            .sum(),
    }
}

/// The dry-run report for a validated spec.
pub fn report(spec: &SearchSpec, throughput: Throughput) -> Result<String> {
    let widest = spec.space.hidden_sizes.iter().copied().max().unwrap_or(spec.model.hidden_size);
    let settings = spec.model.with_hidden_size(widest);
    let mut r = rng(spec.seed);
    let mut costs = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let genome = spec.space.sample(&mut r).map_err(|e| anyhow::anyhow!("sampling the space: {e}"))?;
        let model = Architecture::from_genome(settings.clone(), genome).expand();
        if let Ok(model) = model {
            costs.push(trial_cost(
                &model,
                u64::from(spec.proxy.seq_len),
                u64::from(spec.proxy.micro_batch_size()),
            ));
        }
    }
    anyhow::ensure!(!costs.is_empty(), "no sampled candidate expands at hidden size {widest}");
    let pick = |f: &dyn Fn(&TrialCost) -> f64| {
        let mut v: Vec<f64> = costs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let tokens = spec.proxy.tokens as f64;
    let params = pick(&|c| c.params as f64);
    let flops = pick(&|c| c.flops_per_token * tokens);
    let memory = pick(&|c| c.memory_bytes);
    let hours = pick(&|c| device_hours(c, tokens, throughput));
    let search_hours: f64 = {
        let per_token: Vec<f64> = costs.iter().map(|c| device_hours(c, 1.0, throughput)).collect();
        per_token.iter().sum::<f64>() / per_token.len() as f64 * search_tokens(spec)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} candidates planned, {} tokens per trial at the top rung, batch {} × {} (micro-batch {})",
        spec.name,
        spec.algorithm.planned_candidates(),
        spec.proxy.tokens,
        spec.proxy.batch_size,
        spec.proxy.seq_len,
        spec.proxy.micro_batch_size()
    );
    let _ = writeln!(out, "{} sampled candidates at hidden size {widest} (the widest):", costs.len());
    let _ = writeln!(out, "{:<34} {:>12} {:>12} {:>12}", "per trial", "min", "median", "max");
    let row = |out: &mut String,
               name: &str,
               (lo, mid, hi): (f64, f64, f64),
               unit: f64,
               fmt: &dyn Fn(f64) -> String| {
        let _ =
            writeln!(out, "{name:<34} {:>12} {:>12} {:>12}", fmt(lo / unit), fmt(mid / unit), fmt(hi / unit));
    };
    row(&mut out, "parameters (M)", params, 1e6, &|v| format!("{v:.1}"));
    row(&mut out, "training FLOPs (1e18)", flops, 1e18, &|v| format!("{v:.2}"));
    row(&mut out, "memory per device (GiB)", memory, f64::from(1u32 << 30), &|v| format!("{v:.1}"));
    row(&mut out, "device-hours", hours, 1.0, &|v| format!("{v:.1}"));
    let basis = match throughput {
        Throughput::Measured { tokens_per_s } => {
            format!("at a measured {tokens_per_s:.0} tokens/s per device")
        }
        Throughput::Peak { tflops, utilisation } => format!(
            "at {tflops:.0} peak TFLOP/s and {:.0} % utilisation (give --tokens-per-s for a measured rate)",
            utilisation * 100.0
        ),
    };
    let _ = writeln!(
        out,
        "whole search: {:.3e} tokens, about {search_hours:.0} device-hours {basis}",
        search_tokens(spec)
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use search_space::presets::preset;

    #[test]
    fn the_published_1b_model_costs_what_its_size_says() {
        let model = preset("nemotron-flash-1b").unwrap().expand().unwrap();
        let cost = trial_cost(&model, 4096, 8);
        // 0.965 B parameters; 6N FLOPs per token within a few percent (attention and the head
        // add the rest).
        assert!((cost.params as f64 - 0.965e9).abs() < 0.01e9, "{}", cost.params);
        let six_n = 6.0 * cost.params as f64;
        assert!(cost.flops_per_token > six_n && cost.flops_per_token < 1.3 * six_n, "{cost:?}");
        // Weights, gradients and moments alone are 16 bytes per parameter.
        assert!(cost.memory_bytes > 16.0 * cost.params as f64);
        // 10B tokens at 60k tokens/s: 46.3 hours.
        let hours = device_hours(&cost, 1e10, Throughput::Measured { tokens_per_s: 60_000.0 });
        assert!((hours - 46.296).abs() < 0.01, "{hours}");
    }

    #[test]
    fn halving_trains_fewer_tokens_than_every_candidate_at_the_top_budget() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/text.toml"))
            .unwrap();
        let spec = SearchSpec::from_toml(&text).unwrap();
        let h = spec.halving.unwrap();
        let planned = spec.algorithm.planned_candidates() as f64;
        let tokens = search_tokens(&spec);
        assert!(tokens < planned * spec.proxy.tokens as f64);
        assert!(tokens >= planned * h.budget(spec.proxy.tokens, 0) as f64);
        let report = report(&spec, Throughput::Peak { tflops: 100.0, utilisation: 0.5 }).unwrap();
        assert!(report.contains("device-hours") && report.contains("parameters (M)"), "{report}");
    }
}
