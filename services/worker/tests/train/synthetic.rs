//! Training on synthetic tasks: the masked loss, per-task scores, and a task actually learnt.

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use worker::backend::{Cpu, CpuDevice};
use worker::data::{CorpusSource, DataConfig, SyntheticConfig, SyntheticTasks, Task};
use worker::model::lm::HybridLm;
use worker::run::{DeviceChoice, train_job};
use worker::train::{
    Outcome, TrainConfig, TrainData, TrainError, Trainer, evaluate_tasks, masked_cross_entropy, train_on_data,
};

use super::{B, spec};

/// A fixed pseudo-random `[n, vocab]` logit matrix and targets.
fn logits_and_targets(n: usize, vocab: usize) -> (Vec<f32>, Vec<i64>) {
    let logits = (0..n * vocab).map(|i| ((i * 7919 % 113) as f32 / 17.0).sin() * 3.0).collect();
    let targets = (0..n).map(|i| (i * 5 % vocab) as i64).collect();
    (logits, targets)
}

fn tensors(logits: &[f32], targets: &[i64], n: usize, vocab: usize) -> (Tensor<Cpu, 2>, Tensor<Cpu, 1, Int>) {
    let device = CpuDevice::default();
    (
        Tensor::from_data(TensorData::new(logits.to_vec(), [n, vocab]), &device),
        Tensor::from_data(TensorData::new(targets.to_vec(), [n]), &device),
    )
}

#[test]
fn masked_loss_is_the_mean_cross_entropy_over_scored_targets_only() {
    let (n, vocab) = (12, 9);
    let (logits, targets) = logits_and_targets(n, vocab);
    let scored: Vec<bool> = (0..n).map(|i| i % 3 == 1).collect();
    // Reference in f64: −log softmax(row)[target], averaged over scored rows.
    let mut want = 0.0;
    for i in (0..n).filter(|&i| scored[i]) {
        let row: Vec<f64> = logits[i * vocab..(i + 1) * vocab].iter().map(|&x| f64::from(x)).collect();
        let max = row.iter().copied().fold(f64::MIN, f64::max);
        let log_sum = row.iter().map(|x| (x - max).exp()).sum::<f64>().ln() + max;
        want += log_sum - row[targets[i] as usize];
    }
    want /= scored.iter().filter(|&&s| s).count() as f64;
    let (l, t) = tensors(&logits, &targets, n, vocab);
    let got: f64 = masked_cross_entropy(l, t, &scored).into_scalar().elem();
    assert!((got - want).abs() < 1e-5, "masked loss {got}, reference {want}");

    // Changing an unscored target changes nothing.
    let mut other = targets.clone();
    other[0] = (other[0] + 1) % vocab as i64;
    let (l, t) = tensors(&logits, &other, n, vocab);
    let again: f64 = masked_cross_entropy(l, t, &scored).into_scalar().elem();
    assert_eq!(got, again);

    // Every target scored: burn's cross-entropy.
    let (l, t) = tensors(&logits, &targets, n, vocab);
    let all: f64 = masked_cross_entropy(l.clone(), t.clone(), &[true; 12]).into_scalar().elem();
    let plain: f64 =
        CrossEntropyLossConfig::new().init(&CpuDevice::default()).forward(l, t).into_scalar().elem();
    assert!((all - plain).abs() < 1e-5, "{all} vs {plain}");
}

fn tiny(tokens: u64, seq_len: usize) -> TrainConfig {
    TrainConfig {
        tokens,
        seq_len,
        batch_size: 8,
        lr: 3e-3,
        eval_tokens: Some(4096),
        ..TrainConfig::default()
    }
}

#[test]
fn a_run_on_all_six_tasks_reports_loss_and_accuracy_for_each() {
    let device = CpuDevice::default();
    let tasks = SyntheticTasks::new(&SyntheticConfig::new(Task::ALL), 64).unwrap();
    let model_spec =
        search_space::ModelSpec { vocab_size: tasks.vocab_size() as u32, ..spec("tiny-transformer") };
    let model = HybridLm::<B>::init_seeded(&model_spec, 0, &device);
    let (outcome, _) =
        train_on_data(model, TrainData::Synthetic(&tasks), &tiny(2 * 8 * 64, 64), &device, |_| {}).unwrap();
    let Outcome::Completed(report) = outcome else { panic!("diverged: {outcome:?}") };
    let accuracy = report.accuracy.expect("synthetic runs report accuracy");
    let loss = report.task_loss.expect("and per-task loss");
    let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(accuracy.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted
    });
    assert!(accuracy.values().all(|a| (0.0..=1.0).contains(a)), "{accuracy:?}");
    assert!(loss.values().all(|l| l.is_finite() && *l > 0.0), "{loss:?}");
    // The pooled loss lies between the tasks' losses.
    let (lo, hi) = loss.values().fold((f64::MAX, f64::MIN), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    assert!(lo <= report.val_loss && report.val_loss <= hi, "{} not in [{lo}, {hi}]", report.val_loss);
}

#[test]
fn a_tiny_model_learns_memorization_and_the_untrained_one_guesses() {
    // Seven facts (vocab 16), one per key: an MLP memorises them in a few dozen steps; before
    // training the argmax is right about one time in sixteen.
    let device = CpuDevice::default();
    let config: SyntheticConfig = "memorization?vocab=16".parse().unwrap();
    let tasks = SyntheticTasks::new(&config, 32).unwrap();
    let model_spec = search_space::ModelSpec { vocab_size: 16, ..spec("tiny-transformer") };
    let model = HybridLm::<B>::init_seeded(&model_spec, 0, &device);
    let untrained = evaluate_tasks(&model.valid(), &tasks, 8, Some(4096), &device).accuracy["memorization"];
    let (outcome, _) =
        train_on_data(model, TrainData::Synthetic(&tasks), &tiny(60 * 8 * 32, 32), &device, |_| {}).unwrap();
    let Outcome::Completed(report) = outcome else { panic!("diverged: {outcome:?}") };
    let learnt = report.accuracy.unwrap()["memorization"];
    assert!(untrained < 0.3, "untrained accuracy {untrained}");
    assert!(learnt > 0.95, "accuracy after 60 steps {learnt} (untrained {untrained})");
}

#[test]
fn tasks_made_for_another_sequence_length_are_refused() {
    let device = CpuDevice::default();
    let tasks = SyntheticTasks::new(&SyntheticConfig::new([Task::InContextRecall]), 64).unwrap();
    let model = HybridLm::<B>::init_seeded(&spec("tiny-transformer"), 0, &device);
    let err = Trainer::on_tasks(model, &tasks, tiny(4096, 32), device).unwrap_err();
    assert!(matches!(err, TrainError::Config(_)), "{err}");
    assert_eq!(err.to_string(), "the synthetic tasks were generated for seq_len 64, the run uses 32");
}

#[test]
fn train_job_sizes_the_model_to_the_task_vocabulary_and_exposes_accuracy() {
    let source: CorpusSource = "synthetic:in_context_recall,selective_copying?vocab=8".parse().unwrap();
    let data = DataConfig::from_source(source);
    let run = train_job(&spec("tiny-hybrid"), &data, &tiny(2 * 8 * 64, 64), DeviceChoice::Cpu, true, |_| {})
        .unwrap();
    assert_eq!((run.vocab_size, run.tokenizer.as_str()), (24, "synthetic"));
    let accuracy = run.accuracy().expect("per-task accuracy");
    assert_eq!(accuracy.len(), 2);
    assert_eq!(run.untrained_accuracy.as_ref().map(|a| a.len()), Some(2));
    // The report serialises the map as JSON for the worker to post.
    let json = serde_json::to_value(&run).unwrap();
    assert!(json["outcome"]["accuracy"]["in_context_recall"].is_number(), "{json}");
    assert!(json["untrained_accuracy"]["selective_copying"].is_number(), "{json}");
}

#[test]
fn a_synthetic_corpus_refuses_a_text_tokenizer() {
    let mut data = DataConfig::from_source("synthetic:compression".parse().unwrap());
    data.tokenizer = worker::data::TokenizerSpec::TrainBpe { vocab_size: 512 };
    let err = train_job(&spec("tiny-hybrid"), &data, &tiny(4096, 64), DeviceChoice::Cpu, false, |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("has its own vocabulary"), "{err}");
}
