//! Checkpoints and resumption, gradient accumulation, and data outside the vocabulary.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use api::proxy::CheckpointEvery;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use worker::backend::CpuDevice;
use worker::checkpoint::{CheckpointNote, Checkpointing};
use worker::data::TrainBatches;
use worker::model::lm::HybridLm;
use worker::train::{Outcome, TrainConfig, TrainData, TrainError, TrainReport, Trainer, train_on_data};

use crate::{B, config, shakespeare, spec};

/// 40 steps of 8 × 64 tokens on the hybrid (attention, Mamba2 and DeltaNet layers).
fn run_config() -> TrainConfig {
    config(40 * 512)
}

fn with_checkpoints(dir: &Path, key: &str) -> TrainConfig {
    let checkpointing = Checkpointing::new(dir.to_owned(), CheckpointEvery::Steps(10), key.to_owned());
    TrainConfig { checkpoint: Some(checkpointing), ..run_config() }
}

/// Trains the hybrid (seed 3) on the test text; `stop_at` panics in the progress callback at that
/// step, as a process killed mid-run would stop.
fn run(config: &TrainConfig, stop_at: Option<u64>) -> Option<TrainReport> {
    let device = CpuDevice::default();
    let text = shakespeare();
    let (train, validation) = text.split_at(100_000);
    let model = HybridLm::<B>::init_seeded(&spec("tiny-hybrid"), 3, &device);
    let data = TrainData::Text { train: train.into(), validation: validation[..8192].into() };
    let result = catch_unwind(AssertUnwindSafe(|| {
        train_on_data(model, data, config, &device, |p| {
            assert!(Some(p.step) != stop_at, "killed at step {}", p.step);
        })
    }));
    match result {
        Ok(Ok((Outcome::Completed(report), _))) => Some(report),
        Ok(other) => panic!("the run did not complete: {:?}", other.map(|(o, _)| o)),
        Err(_) => None,
    }
}

fn checkpoint_steps(dir: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    e.ok()?.file_name().to_str()?.strip_prefix("step-")?.strip_suffix(".ckpt")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    steps.sort_unstable();
    steps
}

#[test]
fn a_run_killed_part_way_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_run_ends() {
    let reference = run(&run_config(), None).expect("the uninterrupted run completes");
    let dir = tempfile::tempdir().unwrap();
    let config = with_checkpoints(dir.path(), "job-a");

    // Killed at step 25: checkpoints at 10 and 20 are on disk, nothing of step 25 is.
    assert!(run(&config, Some(25)).is_none());
    assert_eq!(checkpoint_steps(dir.path()), [10, 20]);
    let notes = config.checkpoint.as_ref().unwrap().take_notes();
    assert!(notes.is_empty(), "a first run resumes nothing: {notes:?}");

    let resumed = run(&config, None).expect("the resumed run completes");
    let notes = config.checkpoint.as_ref().unwrap().take_notes();
    assert!(
        matches!(notes.as_slice(), [CheckpointNote::Resumed { step: 20, .. }]),
        "the run resumes from the newest checkpoint: {notes:?}"
    );
    assert_eq!(resumed.resumed_from_step, Some(20));
    // The same steps on the same batches from the same state: the same result.
    assert!(
        (resumed.val_loss - reference.val_loss).abs() < 1e-5,
        "{} vs {}",
        resumed.val_loss,
        reference.val_loss
    );
    assert!((resumed.train_loss - reference.train_loss).abs() < 1e-5);
    assert_eq!(resumed.loss_curve.len(), 40);
    for ((s1, l1), (s2, l2)) in resumed.loss_curve.iter().zip(&reference.loss_curve) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() < 1e-5, "step {s1}: {l1} vs {l2}");
    }
    // Only the two newest are kept: 20 and 30 (a checkpoint is never written after the last step).
    assert_eq!(checkpoint_steps(dir.path()), [20, 30]);
    config.checkpoint.as_ref().unwrap().remove().unwrap();
    assert!(!dir.path().exists(), "removing a finished trial's checkpoints removes its folder");
}

#[test]
fn a_torn_newest_checkpoint_is_skipped_for_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_checkpoints(dir.path(), "job-b");
    assert!(run(&config, Some(25)).is_none());
    let newest = dir.path().join("step-000000000020.ckpt");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();

    let resumed = run(&config, None).expect("the resumed run completes");
    assert_eq!(resumed.resumed_from_step, Some(10));
    let notes = config.checkpoint.as_ref().unwrap().take_notes();
    match notes.as_slice() {
        [CheckpointNote::Skipped { file, reason }, CheckpointNote::Resumed { step: 10, .. }] => {
            assert_eq!(file, "step-000000000020.ckpt");
            assert!(reason.starts_with("torn"), "{reason}");
        }
        other => panic!("expected the torn checkpoint skipped, then a resume at 10: {other:?}"),
    }
}

#[test]
fn a_checkpoint_of_another_job_is_reported_and_never_loaded() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(&with_checkpoints(dir.path(), "job-c"), Some(15)).is_none());
    assert_eq!(checkpoint_steps(dir.path()), [10]);

    // Another job finds the folder (a trial id reused after the database was reset, say).
    let other = with_checkpoints(dir.path(), "job-d");
    let report = run(&other, None).expect("the other job trains from scratch");
    assert_eq!(report.resumed_from_step, None);
    let notes = other.checkpoint.as_ref().unwrap().take_notes();
    match notes.as_slice() {
        [CheckpointNote::Skipped { reason, .. }] => assert!(reason.contains("another job"), "{reason}"),
        other => panic!("expected one skipped checkpoint: {other:?}"),
    }
    let reference = run(&run_config(), None).unwrap();
    assert!((report.val_loss - reference.val_loss).abs() < 1e-5);
}

/// The largest relative difference `‖a − b‖ / ‖b‖` over the parameters' gradients.
fn max_relative_difference(model: &HybridLm<B>, a: &GradientsParams, b: &GradientsParams) -> f64 {
    struct Compare<'a> {
        a: &'a GradientsParams,
        b: &'a GradientsParams,
        worst: f64,
        seen: usize,
    }
    impl ModuleVisitor<B> for Compare<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            type Inner = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;
            // Every parameter is used by the forward pass, so each has a gradient on both sides.
            let (Some(a), Some(b)) = (self.a.get::<Inner, D>(param.id), self.b.get::<Inner, D>(param.id))
            else {
                panic!("parameter {} lacks a gradient on one side", param.id);
            };
            let diff = (a - b.clone()).powi_scalar(2).sum().into_scalar().elem::<f64>().sqrt();
            let norm = b.powi_scalar(2).sum().into_scalar().elem::<f64>().sqrt();
            self.worst = self.worst.max(diff / norm.max(1e-30));
            self.seen += 1;
        }
    }
    let mut compare = Compare { a, b, worst: 0.0, seen: 0 };
    model.visit(&mut compare);
    assert!(compare.seen > 10, "only {} parameters compared", compare.seen);
    compare.worst
}

#[test]
fn four_micro_batches_of_two_give_the_gradients_of_one_batch_of_eight() {
    let device = CpuDevice::default();
    let text = shakespeare();
    let model = HybridLm::<B>::init_seeded(&spec("tiny-hybrid"), 5, &device);
    let batch = TrainBatches::new(&text, 64, 8, 5).unwrap().batch(0);
    let whole = Trainer::new(model.clone(), &text, config(8 * 64), device).unwrap();
    let split =
        Trainer::new(model.clone(), &text, TrainConfig { micro_batch: Some(2), ..config(8 * 64) }, device)
            .unwrap();
    let (loss_whole, grads_whole) = whole.gradients(&batch);
    let (loss_split, grads_split) = split.gradients(&batch);
    assert!((loss_whole - loss_split).abs() < 1e-5 * loss_whole, "{loss_whole} vs {loss_split}");
    let worst = max_relative_difference(&model, &grads_split.unwrap(), &grads_whole.unwrap());
    assert!(worst < 1e-5, "largest relative gradient difference {worst:e}");
    // A micro-batch that does not divide the batch is refused.
    let err = Trainer::new(model, &text, TrainConfig { micro_batch: Some(3), ..config(8 * 64) }, device)
        .unwrap_err();
    assert!(matches!(err, TrainError::Config(_)), "{err}");
}

#[test]
fn an_id_outside_the_vocabulary_stops_the_run_with_an_error() {
    let device = CpuDevice::default();
    let mut text = shakespeare()[..4096].to_vec();
    text.iter_mut().step_by(97).for_each(|id| *id = 300);
    let model = HybridLm::<B>::init_seeded(&spec("tiny-transformer"), 0, &device);
    let mut trainer = Trainer::new(model, &text, config(4 * 512), device).unwrap();
    let err = trainer.step().unwrap_err();
    assert!(matches!(err, TrainError::TokenOutOfRange { id: 300, step: 0, vocab_size: 256 }), "{err}");
}
