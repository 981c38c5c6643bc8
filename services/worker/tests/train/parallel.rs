//! Data parallel training over two replicas (both on the CPU device: burn's collective runs the
//! same all-reduce whatever the devices), against one device on the whole batch.

use std::panic::{AssertUnwindSafe, catch_unwind};

use api::proxy::CheckpointEvery;
use worker::backend::CpuDevice;
use worker::checkpoint::{CheckpointNote, Checkpointing};
use worker::kernels::TrainingBackend;
use worker::model::lm::HybridLm;
use worker::train::{Outcome, TrainConfig, TrainData, TrainError, TrainReport, train_on_devices};

use crate::{B, config, shakespeare, spec};

/// 12 steps of 8 × 64 tokens on the hybrid (attention, Mamba2 and DeltaNet layers).
fn run_config() -> TrainConfig {
    config(12 * 512)
}

/// Trains the hybrid (seed 11) on `replicas` copies of the CPU device; `stop_at` panics in the
/// progress callback at that step, as a killed process stops. Returns the report and the
/// trained weights by name.
fn run(config: &TrainConfig, replicas: usize, stop_at: Option<u64>) -> Option<(TrainReport, Weights)> {
    run_on::<B>(config, &vec![CpuDevice::default(); replicas], stop_at)
}

type Weights = Vec<(String, Vec<f32>)>;

fn run_on<T: TrainingBackend>(
    config: &TrainConfig,
    devices: &[T::Device],
    stop_at: Option<u64>,
) -> Option<(TrainReport, Weights)> {
    let text = shakespeare();
    let (train, validation) = text.split_at(100_000);
    let model = HybridLm::<T>::init_seeded(&spec("tiny-hybrid"), 11, &devices[0]);
    let data = TrainData::Text { train: train.into(), validation: validation[..8192].into() };
    let result = catch_unwind(AssertUnwindSafe(|| {
        train_on_devices(model, data, config, devices, |p| {
            assert!(Some(p.step) != stop_at, "killed at step {}", p.step);
        })
    }));
    match result {
        Ok(Ok((Outcome::Completed(report), model))) => Some((report, model.named_parameters())),
        Ok(other) => panic!("the run did not complete: {:?}", other.map(|(o, _)| o)),
        Err(_) => None,
    }
}

/// The largest difference between two models' weights, relative to the largest weight.
fn weight_difference(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst: f64 = 0.0;
    for ((name_a, x), (name_b, y)) in a.iter().zip(b) {
        assert_eq!(name_a, name_b);
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        worst = worst.max(f64::from(diff / scale));
    }
    worst
}

fn assert_same_run(got: &TrainReport, want: &TrainReport, tolerance: f64) {
    assert_eq!(got.steps, want.steps);
    assert_eq!(got.loss_curve.len(), want.loss_curve.len());
    for ((s1, l1), (s2, l2)) in got.loss_curve.iter().zip(&want.loss_curve) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() <= tolerance * l2.abs(), "step {s1}: loss {l1} vs {l2}");
    }
    assert!(
        (got.val_loss - want.val_loss).abs() <= tolerance * want.val_loss,
        "validation loss {} vs {}",
        got.val_loss,
        want.val_loss
    );
}

#[test]
fn two_replicas_take_the_steps_of_one_device_on_the_whole_batch() {
    let (single, single_weights) = run(&run_config(), 1, None).unwrap();
    let (parallel, parallel_weights) = run(&run_config(), 2, None).unwrap();
    // Float sums in another order: the same run to about f32 rounding, compounded over 12 steps.
    assert_same_run(&parallel, &single, 1e-5);
    let diff = weight_difference(&parallel_weights, &single_weights);
    assert!(diff < 1e-4, "weights differ by {diff:e} of their largest value");
    // And the steps do change the weights (the comparison is not between two untrained models).
    let untrained =
        HybridLm::<B>::init_seeded(&spec("tiny-hybrid"), 11, &CpuDevice::default()).named_parameters();
    assert!(weight_difference(&untrained, &single_weights) > 1e-2);

    // Micro-batches inside each replica: 2 replicas × 2 micro-batches of 2 rows = the batch of 8.
    let micro = TrainConfig { micro_batch: Some(2), ..run_config() };
    let (accumulated, _) = run(&micro, 2, None).unwrap();
    assert_same_run(&accumulated, &single, 1e-5);
}

#[test]
fn a_batch_that_does_not_split_over_the_devices_is_refused_before_training() {
    let devices = vec![CpuDevice::default(); 3];
    let text = shakespeare();
    let model = HybridLm::<B>::init_seeded(&spec("tiny-transformer"), 0, &devices[0]);
    let data = TrainData::Text { train: text[..50_000].into(), validation: text[50_000..60_000].into() };
    let err =
        train_on_devices(model, data, &run_config(), &devices, |_| panic!("no step may run")).unwrap_err();
    assert!(matches!(err, TrainError::Config(_)), "{err}");
    assert!(err.to_string().contains("batch_size 8 does not split evenly over 3 devices"), "{err}");
}

#[test]
fn a_data_parallel_run_killed_part_way_resumes_on_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let checkpointing =
        Checkpointing::new(dir.path().to_owned(), CheckpointEvery::Steps(4), "dp-job".to_owned());
    let config = TrainConfig { checkpoint: Some(checkpointing), ..run_config() };
    // The leader dies at step 10: the other replica, waiting in an all-reduce, is released and
    // the run stops instead of hanging. Checkpoints at 4 and 8 are on disk.
    assert!(run(&config, 2, Some(10)).is_none());
    let (resumed, _) = run(&config, 1, None).expect("the resumed run completes on one device");
    assert_eq!(resumed.resumed_from_step, Some(8));
    let notes = config.checkpoint.as_ref().unwrap().take_notes();
    assert!(matches!(notes.as_slice(), [CheckpointNote::Resumed { step: 8, .. }]), "{notes:?}");
    let (reference, _) = run(&run_config(), 1, None).unwrap();
    assert_same_run(&resumed, &reference, 1e-5);
}

/// The same check on the GPU: two replicas over the node's first two GPUs (or twice the only
/// one: the collective does not care), against one GPU on the whole batch.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU; scripts/gpu-check.sh runs it"]
fn cuda_two_replicas_take_the_steps_of_one_device_on_the_whole_batch() {
    use worker::backend::{CudaAutodiff, cuda_device};
    let second = std::env::var("CUDA_SECOND_INDEX").ok().and_then(|i| i.parse().ok()).unwrap_or(0);
    let (single, single_weights) = run_on::<CudaAutodiff>(&run_config(), &[cuda_device(0)], None).unwrap();
    let (parallel, parallel_weights) =
        run_on::<CudaAutodiff>(&run_config(), &[cuda_device(0), cuda_device(second)], None).unwrap();
    // GPU reductions (and TF32 matmuls) round differently from one launch shape to another.
    assert_same_run(&parallel, &single, 1e-3);
    let diff = weight_difference(&parallel_weights, &single_weights);
    assert!(diff < 1e-2, "weights differ by {diff:e} of their largest value");
}
