//! Proxy training end to end on the CPU backend: real text and synthetic tasks, tiny models.

mod parallel;
mod resume;
mod synthetic;

use burn::module::AutodiffModule;
use search_space::presets::{preset, tiny_settings};
use search_space::{Architecture, ModelSpec};
use worker::backend::{CpuAutodiff, CpuDevice};
use worker::model::lm::HybridLm;
use worker::model::weight_norm::{Side, vector_norms};
use worker::train::{Outcome, TrainConfig, TrainError, Trainer, evaluate, train};

type B = CpuAutodiff;

/// The test corpus (public-domain text), as bytes = byte-tokenizer ids.
fn shakespeare() -> Vec<u32> {
    testdata::tinyshakespeare_bytes().into_iter().map(u32::from).collect()
}

fn spec(name: &str) -> ModelSpec {
    preset(name).expect("preset exists").expand().expect("presets expand")
}

fn config(tokens: u64) -> TrainConfig {
    TrainConfig { tokens, seq_len: 64, batch_size: 8, lr: 3e-3, eval_tokens: None, ..TrainConfig::default() }
}

#[test]
fn tiny_hybrid_overfits_two_kilobytes_of_text() {
    let device = CpuDevice::default();
    let text = &shakespeare()[..2048];
    let model = HybridLm::<B>::init_seeded(&spec("tiny-hybrid"), 1, &device);
    let untrained = evaluate(&model.valid(), text, 64, 8, None, &device).unwrap();
    // 150 steps of 512 tokens: every window of the 2 KB is seen many times.
    let (outcome, _) = train(model, text, text, &config(150 * 512), &device, |_| {}).unwrap();
    let Outcome::Completed(report) = outcome else { panic!("diverged: {outcome:?}") };
    // From ~ln 256 = 5.5 nats untrained to well under a nat per byte once memorised.
    assert!(untrained > 5.0, "untrained loss {untrained}");
    assert!(report.val_loss < 1.0, "loss on the memorised text is {}", report.val_loss);
    assert_eq!(report.steps, 150);
    assert!((report.val_ppl - report.val_loss.exp()).abs() < 1e-9);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let device = CpuDevice::default();
    let text = &shakespeare()[..20_000];
    let run = |seed: u64| {
        let model = HybridLm::<B>::init_seeded(&spec("tiny-hybrid"), seed, &device);
        let mut trainer = Trainer::new(model, text, TrainConfig { seed, ..config(3 * 512) }, device).unwrap();
        (0..3).map(|_| trainer.step().unwrap().0).collect::<Vec<f64>>()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
}

/// Here rather than beside the model: burn's CPU backend draws from one process-wide RNG, and
/// the model's unit tests draw random tensors in parallel threads, between a seed and its draws.
/// Nothing in this binary draws outside `init_seeded`.
#[test]
fn the_same_seed_draws_the_same_weights_and_another_seed_others() {
    let device = CpuDevice::default();
    let layers = ["A", "F", "M2", "F", "D", "F", "GD", "F"].iter().map(|c| c.parse().unwrap()).collect();
    let spec = Architecture::from_layers(tiny_settings(), layers).expand().unwrap();
    let a = HybridLm::<B>::init_seeded(&spec, 9, &device).named_parameters();
    assert_eq!(a, HybridLm::<B>::init_seeded(&spec, 9, &device).named_parameters());
    let b = HybridLm::<B>::init_seeded(&spec, 10, &device).named_parameters();
    // Every drawn weight differs; only the fixed ones (norm gains, D, Mamba2's A_log, conv
    // biases at zero) may agree.
    for ((path, x), (_, y)) in a.iter().zip(&b) {
        if path.ends_with("proj.weight") || path.contains("embedding") || path.ends_with("conv.weight") {
            assert_ne!(x, y, "{path} is the same under another seed");
        }
    }
}

#[test]
fn budget_smaller_than_one_batch_is_refused_before_training() {
    let device = CpuDevice::default();
    let text = shakespeare();
    let model = HybridLm::<B>::init_seeded(&spec("tiny-transformer"), 0, &device);
    let err = train(model, &text, &text, &config(511), &device, |_| panic!("no step may run")).unwrap_err();
    assert!(matches!(err, TrainError::BudgetBelowOneBatch { tokens: 511, .. }), "{err}");
    assert_eq!(err.to_string(), "token budget 511 is smaller than one batch (8 × 64 = 512 tokens)");
}

#[test]
fn data_shorter_than_one_window_is_refused() {
    let device = CpuDevice::default();
    let text = shakespeare();
    let model = HybridLm::<B>::init_seeded(&spec("tiny-transformer"), 0, &device);
    let err = train(model, &text, &text[..10], &config(4096), &device, |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::Validation(_)), "{err}");
}

#[test]
fn a_non_finite_loss_stops_the_run_as_diverged() {
    let device = CpuDevice::default();
    let text = shakespeare();
    let model = HybridLm::<B>::init_seeded(&spec("tiny-transformer"), 0, &device);
    // An absurd learning rate without clipping blows the weights up within a few steps.
    let cfg = TrainConfig { lr: 1e12, grad_clip: None, warmup_fraction: 0.0, ..config(64 * 512) };
    let mut steps_seen = 0;
    let (outcome, _) = train(model, &text, &text, &cfg, &device, |p| steps_seen = p.step).unwrap();
    match outcome {
        Outcome::Diverged { step, loss } => {
            assert!(!loss.is_finite());
            assert!(step < 64, "stopped at step {step}");
            assert_eq!(steps_seen, step - 1, "progress reported every finite step, none after");
        }
        Outcome::Completed(r) => panic!("expected divergence, got {r:?}"),
    }
}

#[test]
fn weight_normalization_holds_after_every_step() {
    let device = CpuDevice::default();
    let text = shakespeare();
    let layers = ["A", "F", "M2", "F", "D", "F"].iter().map(|c| c.parse().unwrap()).collect();
    let spec = Architecture::from_layers(tiny_settings(), layers).expand().unwrap();
    let model = HybridLm::<B>::init_seeded(&spec, 0, &device);
    let cfg = TrainConfig { weight_norm: true, ..config(2 * 512) };
    let mut trainer = Trainer::new(model, &text, cfg, device).unwrap();
    for _ in 0..2 {
        let (loss, _) = trainer.step().unwrap();
        assert!(loss.is_finite());
        let model = &trainer.model;
        for layer in &model.layers {
            if let worker::model::lm::Operator::Ffn(f) = &layer.op {
                for n in vector_norms(&f.up_proj, Side::Reads)
                    .into_iter()
                    .chain(vector_norms(&f.down_proj, Side::Writes))
                {
                    assert!((n - 1.0).abs() < 1e-5, "norm {n} after a step");
                }
            }
        }
    }
}

#[test]
fn progress_reports_every_step_with_throughput() {
    let device = CpuDevice::default();
    let text = shakespeare();
    let model = HybridLm::<B>::init_seeded(&spec("tiny-transformer"), 0, &device);
    let mut seen = Vec::new();
    let (outcome, _) =
        train(model, &text, &text[..4096], &config(4 * 512), &device, |p| seen.push(p)).unwrap();
    assert!(matches!(outcome, Outcome::Completed(_)));
    assert_eq!(seen.iter().map(|p| p.step).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(seen.iter().all(|p| p.tokens == p.step * 512 && p.tokens_per_s > 0.0 && p.loss.is_finite()));
    // Warm-up then decay: the learning rate peaks early and ends lower.
    assert!(seen[3].lr < seen.iter().map(|p| p.lr).fold(0.0, f64::max));
}
