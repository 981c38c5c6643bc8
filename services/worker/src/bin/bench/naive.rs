//! 2. Chunked vs per-token training forms.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use search_space::LayerSpec;
use worker::kernels::{Kernels, TrainingBackend};
use worker::model::attention::{Attention, AttentionConfig};
use worker::model::delta_rule::Scan;
use worker::model::deltanet::DeltaNetConfig;
use worker::model::gated_deltanet::GatedDeltaNetConfig;
use worker::model::mamba2::{Mamba2, Mamba2Config};

use super::report::{NaiveRow, Plan, Spread};
use super::{FORMS_TOLERANCE, SEED, model_spec};

/// One mixer alone: a recurrent one, runnable in both forms, or attention, the reference.
#[allow(clippy::large_enum_variant, reason = "four are built per run; boxing would not pay for itself")]
pub enum Mixer<B: Kernels> {
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
pub fn mixer_rates<A: TrainingBackend>(
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

pub fn naive_table<A: TrainingBackend>(plan: &Plan, device: &A::Device) -> Vec<NaiveRow> {
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
pub fn naive_rows<A: TrainingBackend>(
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
pub fn relative_difference<B: Kernels, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    let scale = b.clone().abs().max().into_scalar().elem::<f64>();
    let diff = (a - b).abs().max().into_scalar().elem::<f64>();
    diff / scale.max(f64::MIN_POSITIVE)
}
