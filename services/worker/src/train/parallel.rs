//! Data parallel training: one trial over several devices of a node.
//!
//! Every device holds a replica of the model and of the optimiser, all started from the same
//! weights and state. At each step every replica takes its own contiguous slice of the step's
//! batch rows, computes the gradient of its share of the batch's mean loss (each slice's loss is
//! weighted by its share of the batch's scored targets, as micro-batches are), and the replicas
//! sum their gradients with burn's collective all-reduce. Each then clips and applies the same
//! update to its own copy, so the replicas stay equal without ever exchanging weights, and the
//! step is the single-device step on the whole batch (up to float rounding).
//!
//! The step's loss is all-reduced first: when it is not finite every replica skips the update
//! together, so none waits on a gradient the others never send. Replica 0 (the leader, on the
//! calling thread) reports progress, writes checkpoints and scores the model; the others run
//! their steps on their own threads. An error on any replica resets the collective, which
//! releases the others from a pending all-reduce with an error instead of a hang.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use burn::collective::{
    CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective, register, reset_collective,
};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::TrainError;
use crate::kernels::TrainingBackend;

/// burn's local collective is one per backend type and process: data parallel runs take turns.
static COLLECTIVE: Mutex<()> = Mutex::new(());

/// Holds the process's collective for one data parallel run; cleared when taken and released.
pub(crate) struct CollectiveLease<B: TrainingBackend> {
    _guard: std::sync::MutexGuard<'static, ()>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: TrainingBackend> CollectiveLease<B> {
    pub(crate) fn take() -> Self {
        let guard = COLLECTIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A run that failed before every peer finished leaves peers registered.
        reset_collective::<B::InnerBackend>();
        Self { _guard: guard, _backend: std::marker::PhantomData }
    }
}

impl<B: TrainingBackend> Drop for CollectiveLease<B> {
    fn drop(&mut self) {
        reset_collective::<B::InnerBackend>();
    }
}

/// One replica's place in a data parallel run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub rank: usize,
    pub world: usize,
}

impl Peer {
    fn id(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    /// The batch rows this replica trains on: the `rank`-th of `world` equal contiguous slices.
    pub fn rows(&self, batch_rows: usize) -> Range<usize> {
        let per = batch_rows / self.world;
        self.rank * per..(self.rank + 1) * per
    }

    /// Joins the collective, runs `steps` and leaves. When this replica fails or panics the
    /// collective is reset first, which ends every other replica's pending all-reduce with an
    /// error: a failure stops the run instead of leaving the others waiting forever.
    pub(crate) fn run<B: TrainingBackend, T>(
        &self,
        device: &B::Device,
        steps: impl FnOnce() -> Result<T, TrainError>,
    ) -> std::thread::Result<Result<T, TrainError>> {
        let result = catch_unwind(AssertUnwindSafe(|| {
            register::<B::InnerBackend>(self.id(), device.clone(), self.config())
                .map_err(collective_error)
                .and_then(|()| steps())
        }));
        if !matches!(result, Ok(Ok(_))) {
            reset_collective::<B::InnerBackend>();
        }
        let _ = finish_collective::<B::InnerBackend>(self.id());
        result
    }

    fn config(&self) -> CollectiveConfig {
        CollectiveConfig::default().with_num_devices(self.world)
    }

    /// The sum of `value` over every replica.
    pub(crate) fn sum_scalar<B: TrainingBackend>(
        &self,
        value: f64,
        device: &B::Device,
    ) -> Result<f64, TrainError> {
        let tensor =
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(vec![value as f32], [1]), device);
        let summed =
            all_reduce::<B::InnerBackend>(self.id(), tensor.into_primitive().tensor(), ReduceOperation::Sum)
                .map_err(collective_error)?;
        Ok(Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(summed))
            .into_scalar()
            .elem::<f64>())
    }

    /// Every replica's gradients summed, on every replica.
    pub(crate) fn sum_gradients<B: TrainingBackend>(
        &self,
        grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError> {
        grads.all_reduce::<B::InnerBackend>(self.id(), ReduceOperation::Sum).map_err(collective_error)
    }
}

fn collective_error(e: burn::collective::CollectiveError) -> TrainError {
    TrainError::Parallel(format!("{e:?}"))
}

/// Checks that `world` replicas can split the configured batch (and micro-batches) evenly.
pub fn check_split(batch_size: usize, micro_batch: Option<usize>, world: usize) -> Result<(), TrainError> {
    if world == 0 {
        return Err(TrainError::Config("a run needs at least one device".to_owned()));
    }
    if !batch_size.is_multiple_of(world) {
        return Err(TrainError::Config(format!(
            "batch_size {batch_size} does not split evenly over {world} devices"
        )));
    }
    let per_device = batch_size / world;
    if let Some(micro) = micro_batch
        && (micro == 0 || !per_device.is_multiple_of(micro))
    {
        return Err(TrainError::Config(format!(
            "micro_batch {micro} does not divide the {per_device} rows each of the {world} devices takes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_take_equal_contiguous_slices_covering_the_batch() {
        let world = 4;
        let slices: Vec<_> = (0..world).map(|rank| Peer { rank, world }.rows(8)).collect();
        assert_eq!(slices, [0..2, 2..4, 4..6, 6..8]);
    }

    #[test]
    fn a_batch_that_does_not_split_evenly_is_refused_with_the_numbers() {
        let err = check_split(6, None, 4).unwrap_err().to_string();
        assert!(err.contains("batch_size 6") && err.contains("4 devices"), "{err}");
        let err = check_split(8, Some(4), 4).unwrap_err().to_string();
        assert!(err.contains("micro_batch 4") && err.contains("2 rows"), "{err}");
        assert!(check_split(8, Some(2), 4).is_ok());
        assert!(check_split(8, None, 0).is_err());
    }
}
