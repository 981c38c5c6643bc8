//! The driver of a run: resume, the step loop on one device or data parallel over several,
//! progress and checkpoints, then scoring.

use std::time::Instant;

use burn::module::AutodiffModule;
use serde::Serialize;

use super::parallel::{self, CollectiveLease, Peer};
use super::{Outcome, Progress, TrainConfig, TrainError, TrainReport, Trainer, evaluate, evaluate_tasks};
use crate::checkpoint::Resume;
use crate::data::batches::TokenStream;
use crate::data::{SyntheticTasks, ValidationBatches};
use crate::kernels::TrainingBackend;
use crate::model::lm::HybridLm;

/// What a run trains on and is scored on.
#[derive(Clone, Copy, Debug)]
pub enum TrainData<'a> {
    /// Token streams: random training windows, validation over consecutive windows.
    Text { train: TokenStream<'a>, validation: TokenStream<'a> },
    /// Synthetic tasks: fresh training examples, per-task loss and accuracy on fixed ones.
    Synthetic(&'a SyntheticTasks),
}

/// Trains a model for the configured budget and scores it on the validation stream.
pub fn train<B: TrainingBackend>(
    model: HybridLm<B>,
    train_tokens: &[u32],
    validation_tokens: &[u32],
    config: &TrainConfig,
    device: &B::Device,
    progress: impl FnMut(Progress),
) -> Result<(Outcome, HybridLm<B>), TrainError> {
    let data = TrainData::Text { train: train_tokens.into(), validation: validation_tokens.into() };
    train_on_data(model, data, config, device, progress)
}

/// Where a run stands, beyond its model and optimiser: what a checkpoint keeps besides them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RunState {
    /// Every step's loss so far.
    pub curve: Vec<(u64, f64)>,
    /// Seconds spent in optimiser steps so far, over every attempt.
    pub train_seconds: f64,
}

/// Trains a model for the configured budget on `data` and scores it.
///
/// With `config.checkpoint`, the run first resumes from the newest usable checkpoint of the
/// same job (model, optimiser, step and [`RunState`]; the batches follow from the step), saves
/// one at the configured interval, and reports what it resumed from as a
/// [`crate::checkpoint::CheckpointNote`]. The resumed run takes the same steps on the same
/// batches as an uninterrupted one, so it ends with the same weights.
pub fn train_on_data<B: TrainingBackend>(
    model: HybridLm<B>,
    data: TrainData<'_>,
    config: &TrainConfig,
    device: &B::Device,
    progress: impl FnMut(Progress),
) -> Result<(Outcome, HybridLm<B>), TrainError> {
    train_on_devices(model, data, config, std::slice::from_ref(device), progress)
}

/// [`train_on_data`] over one or several devices: with more than one, data parallel (see
/// [`parallel`]), each device taking an equal slice of every batch; the first device's replica
/// reports, checkpoints and is scored. A checkpoint is the same whatever the number of devices,
/// so a run may resume on another node with another count.
pub fn train_on_devices<B: TrainingBackend>(
    model: HybridLm<B>,
    data: TrainData<'_>,
    config: &TrainConfig,
    devices: &[B::Device],
    progress: impl FnMut(Progress),
) -> Result<(Outcome, HybridLm<B>), TrainError> {
    let Some(device) = devices.first() else {
        return Err(TrainError::Config("a run needs at least one device".to_owned()));
    };
    parallel::check_split(config.batch_size, config.micro_batch, devices.len())?;
    let mut trainer = match data {
        TrainData::Text { train, validation } => {
            // Fail on unusable validation data before spending the budget.
            ValidationBatches::new(validation, config.seq_len, config.batch_size)
                .map_err(TrainError::Validation)?;
            Trainer::new(model, train, config.clone(), device.clone())?
        }
        TrainData::Synthetic(tasks) => Trainer::on_tasks(model, tasks, config.clone(), device.clone())?,
    };
    let mut state = RunState::default();
    let mut resumed_from_step = None;
    if let Some(checkpointing) = &config.checkpoint
        && let Some(Resume { step, state: saved }) = checkpointing.resume(&mut trainer)?
    {
        resumed_from_step = Some(step);
        state = saved;
    }
    if devices.len() == 1 {
        if let Some(diverged) = run_steps(&mut trainer, None, &mut state, config, progress)? {
            return Ok((diverged, trainer.model));
        }
    } else {
        let world = devices.len();
        let _collective = CollectiveLease::<B>::take();
        let replicas: Vec<_> = devices[1..].iter().map(|d| trainer.replica(d.clone())).collect();
        let outcome = std::thread::scope(|scope| {
            let others: Vec<_> = replicas
                .into_iter()
                .enumerate()
                .map(|(i, mut replica)| {
                    let peer = Peer { rank: i + 1, world };
                    let device = replica.device().clone();
                    scope.spawn(move || peer.run::<B, _>(&device, || follow_steps(&mut replica, &peer)))
                })
                .collect();
            let leader = Peer { rank: 0, world };
            let leader = leader
                .run::<B, _>(device, || run_steps(&mut trainer, Some(&leader), &mut state, config, progress));
            let mut failure = None;
            for handle in others {
                match handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failure = failure.or(Some(e)),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            // The leader's own error explains a failure best; the others then only saw the reset.
            match leader {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(Err(e)) => Err(e),
                Ok(Ok(diverged)) => failure.map_or(Ok(diverged), Err),
            }
        })?;
        if let Some(diverged) = outcome {
            return Ok((diverged, trainer.model));
        }
    }
    finish_run(trainer, data, config, state, resumed_from_step)
}

/// The leader's loop: steps until the budget is spent, reporting progress and saving
/// checkpoints; `Some(Outcome::Diverged)` at the first non-finite loss.
fn run_steps<B: TrainingBackend>(
    trainer: &mut Trainer<'_, B>,
    peer: Option<&Peer>,
    state: &mut RunState,
    config: &TrainConfig,
    mut progress: impl FnMut(Progress),
) -> Result<Option<Outcome>, TrainError> {
    let mut checkpoints = config.checkpoint.as_ref().map(|c| c.schedule());
    let per_step = (config.batch_size * config.seq_len) as u64;
    let steps = trainer.total_steps();
    let started = Instant::now();
    let (first_step, seconds_before) = (trainer.steps_done(), state.train_seconds);
    while !trainer.is_done() {
        let (loss, lr) = trainer.step_with(peer)?;
        let step = trainer.step;
        if !loss.is_finite() {
            return Ok(Some(Outcome::Diverged { step, loss }));
        }
        state.curve.push((step, loss));
        let elapsed = started.elapsed().as_secs_f64();
        state.train_seconds = seconds_before + elapsed;
        progress(Progress {
            step,
            steps,
            tokens: step * per_step,
            loss,
            lr,
            tokens_per_s: ((step - first_step) * per_step) as f64 / elapsed.max(1e-9),
        });
        if let (Some(checkpointing), Some(due)) = (&config.checkpoint, checkpoints.as_mut())
            && !trainer.is_done()
            && due.is_due(step)
        {
            checkpointing.save(trainer, state)?;
        }
    }
    Ok(None)
}

/// Another replica's loop: the same steps, stopping where the leader stops (the all-reduced
/// loss is the same on every replica).
fn follow_steps<B: TrainingBackend>(replica: &mut Trainer<'_, B>, peer: &Peer) -> Result<(), TrainError> {
    while !replica.is_done() {
        let (loss, _) = replica.step_with(Some(peer))?;
        if !loss.is_finite() {
            break;
        }
    }
    Ok(())
}

/// Scores the trained model and assembles the report.
fn finish_run<B: TrainingBackend>(
    trainer: Trainer<'_, B>,
    data: TrainData<'_>,
    config: &TrainConfig,
    state: RunState,
    resumed_from_step: Option<u64>,
) -> Result<(Outcome, HybridLm<B>), TrainError> {
    let device = trainer.device.clone();
    let device = &device;
    let per_step = (config.batch_size * config.seq_len) as u64;
    let steps = trainer.total_steps();
    let tail = (steps / 10).max(1);
    let train_seconds = state.train_seconds;
    let tail_losses: Vec<f64> =
        state.curve.iter().filter(|(step, _)| *step > steps - tail).map(|(_, loss)| *loss).collect();
    let model = trainer.model;
    let valid = model.valid();
    let (val_loss, accuracy, task_loss) = match data {
        TrainData::Text { validation, .. } => {
            let loss =
                evaluate(&valid, validation, config.seq_len, config.batch_size, config.eval_tokens, device)?;
            (loss, None, None)
        }
        TrainData::Synthetic(tasks) => {
            let scores = evaluate_tasks(&valid, tasks, config.batch_size, config.eval_tokens, device);
            (scores.pooled_loss, Some(scores.accuracy), Some(scores.loss))
        }
    };
    let tokens = steps * per_step;
    let report = TrainReport {
        steps,
        tokens,
        train_loss: tail_losses.iter().sum::<f64>() / tail_losses.len().max(1) as f64,
        val_loss,
        val_ppl: val_loss.exp(),
        tokens_per_s: tokens as f64 / train_seconds.max(1e-9),
        train_seconds,
        accuracy,
        task_loss,
        resumed_from_step,
        loss_curve: state.curve,
    };
    Ok((Outcome::Completed(report), model))
}
