//! Proxy training: a candidate trained for a token budget, then scored on held-out text.
//!
//! One run is `steps = ⌊tokens / (batch · seq_len)⌋` optimiser steps on seeded random windows of
//! the training stream: AdamW (plain Adam with weight normalisation, which replaces weight decay),
//! linear warm-up then cosine decay to `min_lr_ratio · lr`, clipping of the global gradient norm
//! (as PyTorch's `clip_grad_norm_`, not burn's per-tensor clipping), and a stop with
//! [`Outcome::Diverged`] at the first non-finite loss. The same seed gives the same weights, the
//! same batches and the same result. Validation runs over consecutive windows of the held-out
//! stream and reports mean loss and perplexity.
//!
//! On synthetic tasks ([`crate::data::synthetic`]) each batch carries a mask of the scored
//! targets: the loss is the mean over scored targets only, and validation reports the loss and
//! the accuracy (argmax = target at scored targets) of each task on a fixed set of examples.
//!
//! The loop is a step function ([`Trainer::step`]) and a driver ([`train`]); progress goes to a
//! callback that the CLI draws as a progress bar and the worker sends as heartbeats.

use std::collections::BTreeMap;

use crate::kernels::{Kernels, TrainingBackend};
use burn::module::{ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::Serialize;

use crate::checkpoint::Checkpointing;
use crate::data::batches::TokenStream;
use crate::data::synthetic::TaskScores;
use crate::data::{Batch, BatchError, SyntheticTasks, TrainBatches, ValidationBatches};
use crate::model::lm::HybridLm;
use crate::model::param_groups;

mod driver;
mod parallel;
pub use driver::{RunState, TrainData, train, train_on_data, train_on_devices};
pub use parallel::{Peer, check_split};

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainConfig {
    /// Training tokens (inputs seen), the budget of the run.
    pub tokens: u64,
    pub seq_len: usize,
    /// Sequences per optimiser step (the global batch).
    pub batch_size: usize,
    /// Sequences per forward/backward pass; the step accumulates `batch_size / micro_batch`
    /// passes. `None` is one pass of the whole batch.
    pub micro_batch: Option<usize>,
    /// Peak learning rate (the paper: 5e-4 at scale; tiny models like more).
    pub lr: f64,
    /// Learning rate at the end of the cosine, as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// Share of the steps spent warming up linearly from zero.
    pub warmup_fraction: f64,
    /// AdamW weight decay, on the weight matrices only ([`param_groups`]); ignored (zero) with
    /// weight normalisation.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this; `None` leaves gradients alone.
    pub grad_clip: Option<f64>,
    /// Rescale residual-stream vectors to unit norm after every step (paper Sec. 2.3).
    pub weight_norm: bool,
    /// Seeds the weights and the batch order.
    pub seed: u64,
    /// Most validation tokens to score; the whole held-out stream when `None`. On synthetic
    /// tasks it sets the validation examples per task (see [`validation_examples`]).
    pub eval_tokens: Option<usize>,
    /// Where and how often to save the run's state, so it can resume after being killed.
    #[serde(skip)]
    pub checkpoint: Option<Checkpointing>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            tokens: 200_000,
            seq_len: 256,
            batch_size: 8,
            micro_batch: None,
            lr: 2e-3,
            min_lr_ratio: 0.1,
            warmup_fraction: 0.05,
            weight_decay: 0.1,
            grad_clip: Some(1.0),
            weight_norm: false,
            seed: 0,
            eval_tokens: Some(65_536),
            checkpoint: None,
        }
    }
}

/// A training problem found before any step ran.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("token budget {tokens} is smaller than one batch ({batch_size} × {seq_len} = {} tokens)", batch_size * seq_len)]
    BudgetBelowOneBatch { tokens: u64, batch_size: usize, seq_len: usize },
    #[error("training data: {0}")]
    Train(#[source] BatchError),
    #[error("validation data: {0}")]
    Validation(#[source] BatchError),
    #[error("{0}")]
    Config(String),
    /// The data holds an id the model's vocabulary does not (a corrupt shard, or a shard set
    /// made with another tokenizer).
    #[error("training data: token id {id} at step {step} is outside the model's vocabulary of {vocab_size}")]
    TokenOutOfRange { id: u32, step: u64, vocab_size: usize },
    /// A checkpoint could not be written or restored.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The replicas of a data parallel run could not exchange their gradients.
    #[error("data parallel: {0}")]
    Parallel(String),
}

/// Progress after one step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Progress {
    pub step: u64,
    pub steps: u64,
    pub tokens: u64,
    pub loss: f64,
    pub lr: f64,
    pub tokens_per_s: f64,
}

/// The finished run's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainReport {
    pub steps: u64,
    pub tokens: u64,
    /// Mean training loss over the last tenth of the steps.
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_ppl: f64,
    /// Training throughput (optimiser steps only, validation excluded).
    pub tokens_per_s: f64,
    pub train_seconds: f64,
    /// Synthetic tasks only: the share of each task's scored targets predicted right (argmax).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<BTreeMap<String, f64>>,
    /// Synthetic tasks only: each task's mean validation loss over its scored targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_loss: Option<BTreeMap<String, f64>>,
    /// The step a checkpoint restored the run to, when it resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from_step: Option<u64>,
    /// Every step's training loss, `(step, loss)`, across resumptions.
    #[serde(skip)]
    pub loss_curve: Vec<(u64, f64)>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Completed(TrainReport),
    /// The loss became NaN or infinite at `step`; the run stopped there.
    Diverged {
        step: u64,
        loss: f64,
    },
}

/// Warm-up then cosine decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub peak: f64,
    pub min: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl Schedule {
    pub fn new(config: &TrainConfig, total_steps: u64) -> Self {
        let warmup_steps = ((total_steps as f64 * config.warmup_fraction).round() as u64).min(total_steps);
        Self { peak: config.lr, min: config.lr * config.min_lr_ratio, warmup_steps, total_steps }
    }

    /// Learning rate of step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = (self.total_steps - self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        self.min + 0.5 * (self.peak - self.min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// The optimiser every run uses: AdamW as burn implements it, over the language model.
pub type LmOptimizer<B> = OptimizerAdaptor<AdamW, HybridLm<B>, B>;

/// A training run in progress: the model, its optimiser and where it is.
pub struct Trainer<'a, B: TrainingBackend> {
    pub model: HybridLm<B>,
    pub(crate) optimizer: LmOptimizer<B>,
    batches: BatchSource<'a>,
    schedule: Schedule,
    config: TrainConfig,
    pub(crate) step: u64,
    vocab_size: usize,
    device: B::Device,
}

impl<B: TrainingBackend> std::fmt::Debug for Trainer<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("step", &self.step).field("config", &self.config).finish()
    }
}

/// Where a trainer's batches come from.
#[derive(Clone, Debug)]
pub enum BatchSource<'a> {
    /// Seeded random windows of a token stream.
    Text(TrainBatches<'a>),
    /// Fresh synthetic examples, a pure function of the seed and the step.
    Synthetic { tasks: &'a SyntheticTasks, seed: u64, batch_size: usize },
}

impl BatchSource<'_> {
    /// The batch of `step`.
    pub fn batch(&self, step: u64) -> Batch {
        match self {
            BatchSource::Text(windows) => windows.batch(step),
            BatchSource::Synthetic { tasks, seed, batch_size } => tasks.train_batch(*seed, step, *batch_size),
        }
    }
}

impl<'a, B: TrainingBackend> Trainer<'a, B> {
    /// Checks the budget and the data, and sets up the optimiser.
    pub fn new(
        model: HybridLm<B>,
        train_tokens: impl Into<TokenStream<'a>>,
        config: TrainConfig,
        device: B::Device,
    ) -> Result<Self, TrainError> {
        check(&config)?;
        let batches = TrainBatches::new(train_tokens, config.seq_len, config.batch_size, config.seed)
            .map_err(TrainError::Train)?;
        Self::with_source(model, BatchSource::Text(batches), config, device)
    }

    /// A trainer on synthetic tasks generated at the configured sequence length.
    pub fn on_tasks(
        model: HybridLm<B>,
        tasks: &'a SyntheticTasks,
        config: TrainConfig,
        device: B::Device,
    ) -> Result<Self, TrainError> {
        check(&config)?;
        check_tasks(tasks, &config)?;
        let source = BatchSource::Synthetic { tasks, seed: config.seed, batch_size: config.batch_size };
        Self::with_source(model, source, config, device)
    }

    fn with_source(
        model: HybridLm<B>,
        batches: BatchSource<'a>,
        config: TrainConfig,
        device: B::Device,
    ) -> Result<Self, TrainError> {
        check(&config)?;
        let per_step = (config.batch_size * config.seq_len) as u64;
        let steps = config.tokens / per_step;
        if steps == 0 {
            return Err(TrainError::BudgetBelowOneBatch {
                tokens: config.tokens,
                batch_size: config.batch_size,
                seq_len: config.seq_len,
            });
        }
        // PyTorch's defaults where burn's differ (eps 1e-8, not 1e-5), betas of LM training. The
        // decay is applied per parameter group in `step`, not by the optimiser.
        let optimizer = AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.95)
            .with_epsilon(1e-8)
            .with_weight_decay(0.0)
            .init();
        let model = if config.weight_norm { model.normalize_weights() } else { model };
        let vocab_size = model.vocab_size();
        Ok(Self {
            model,
            optimizer,
            batches,
            schedule: Schedule::new(&config, steps),
            config,
            step: 0,
            vocab_size,
            device,
        })
    }

    pub fn total_steps(&self) -> u64 {
        self.schedule.total_steps
    }

    /// Optimiser steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.schedule.total_steps
    }

    /// The device the run trains on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The same run on another device: the model's weights and the optimiser's state copied
    /// there, at the same step, for a data parallel replica.
    fn replica(&self, device: B::Device) -> Self {
        Self {
            model: self.model.clone().fork(&device),
            optimizer: self.optimizer.clone(),
            batches: self.batches.clone(),
            schedule: self.schedule,
            config: TrainConfig { checkpoint: None, ..self.config.clone() },
            step: self.step,
            vocab_size: self.vocab_size,
            device,
        }
    }

    /// One optimiser step; returns the step's loss (before the update) and learning rate. A
    /// non-finite loss is returned without updating the model; an id outside the vocabulary is
    /// an error before anything is computed.
    pub fn step(&mut self) -> Result<(f64, f64), TrainError> {
        self.step_with(None)
    }

    /// [`Trainer::step`], or with `peer` this replica's part of a data parallel step: the
    /// gradient of its slice of the batch, summed with the other replicas' before the update
    /// (see [`parallel`]). Every replica checks the whole batch, so all stop on a bad id together.
    pub fn step_with(&mut self, peer: Option<&Peer>) -> Result<(f64, f64), TrainError> {
        let batch = self.batches.batch(self.step);
        if let Some(&id) =
            batch.inputs.iter().chain(&batch.targets).find(|&&id| id as usize >= self.vocab_size)
        {
            return Err(TrainError::TokenOutOfRange { id, step: self.step, vocab_size: self.vocab_size });
        }
        let lr = self.schedule.lr(self.step);
        let (loss_value, grads) = match peer {
            None => self.gradients(&batch),
            Some(peer) => {
                let part = batch.rows(peer.rows(batch.rows));
                let (local, grads) = self.weighted_gradients(&part, scored_targets(&batch), false);
                let loss = peer.sum_scalar::<B>(local, &self.device)?;
                match grads.filter(|_| loss.is_finite()) {
                    Some(grads) => (loss, Some(peer.sum_gradients::<B>(grads)?)),
                    None => (loss, None),
                }
            }
        };
        self.step += 1;
        let Some(mut grads) = grads.filter(|_| loss_value.is_finite()) else {
            return Ok((loss_value, lr));
        };
        if let Some(max_norm) = self.config.grad_clip {
            clip_global_norm(&self.model, &mut grads, max_norm);
        }
        // The optimiser consumes the module and returns the updated one. Modules are handles to
        // reference-counted tensors, so this clone copies no weights; it only stands in `self`
        // for the duration of the step. It is taken after the forward pass, so every parameter
        // is already materialised (a clone of a never-used lazy parameter would draw new ones).
        let model = self.model.clone();
        let weight_decay = if self.config.weight_norm { 0.0 } else { self.config.weight_decay };
        let mut model = param_groups::adamw_step(&mut self.optimizer, lr, weight_decay, model, grads);
        if self.config.weight_norm {
            model = model.normalize_weights();
        }
        self.model = model;
        Ok((loss_value, lr))
    }

    /// The mean loss of `batch` over its scored targets and its gradients, computed in
    /// micro-batches of `config.micro_batch` rows when set: each micro-batch's mean loss is
    /// weighted by its share of the batch's scored targets before its backward pass and the
    /// gradients are summed, so the result is the whole batch's gradient (up to float rounding)
    /// while only one micro-batch's activations are alive at a time. `None` gradients when a
    /// micro-batch's loss is not finite (the step is then skipped).
    pub fn gradients(&self, batch: &Batch) -> (f64, Option<GradientsParams>) {
        let micro = self.config.micro_batch.unwrap_or(batch.rows).clamp(1, batch.rows.max(1));
        if micro >= batch.rows {
            let loss = loss_of(&self.model, batch, &self.device);
            let value = loss.clone().into_scalar().elem::<f64>();
            let grads = value.is_finite().then(|| GradientsParams::from_grads(loss.backward(), &self.model));
            return (value, grads);
        }
        self.weighted_gradients(batch, scored_targets(batch), true)
    }

    /// The gradients of `part`'s share of a batch with `total` scored targets: each micro-batch's
    /// mean loss weighted by its scored targets over `total`, summed. A micro-batch with nothing
    /// scored is skipped when `skip_empty`; a data parallel replica keeps it (its zero gradient),
    /// so every replica sends every parameter's gradient to the all-reduce.
    fn weighted_gradients(
        &self,
        batch: &Batch,
        total: usize,
        skip_empty: bool,
    ) -> (f64, Option<GradientsParams>) {
        let micro = self.config.micro_batch.unwrap_or(batch.rows).clamp(1, batch.rows.max(1));
        let total = total.max(1) as f64;
        let mut accumulator = GradientsAccumulator::<HybridLm<B>>::new();
        let mut loss_sum = 0.0;
        for start in (0..batch.rows).step_by(micro) {
            let micro_batch = batch.rows(start..(start + micro).min(batch.rows));
            let weight = scored_targets(&micro_batch) as f64 / total;
            if weight == 0.0 && skip_empty {
                continue;
            }
            let loss = loss_of(&self.model, &micro_batch, &self.device).mul_scalar(weight);
            let value = loss.clone().into_scalar().elem::<f64>();
            if !value.is_finite() {
                return (value, None);
            }
            loss_sum += value;
            accumulator.accumulate(&self.model, GradientsParams::from_grads(loss.backward(), &self.model));
        }
        (loss_sum, Some(accumulator.grads()))
    }
}

/// The targets a batch's loss is the mean over: all of them for text, the masked ones for tasks.
fn scored_targets(batch: &Batch) -> usize {
    batch.scored.as_ref().map_or(batch.rows * batch.seq_len, |s| s.iter().filter(|&&x| x).count())
}

fn check(config: &TrainConfig) -> Result<(), TrainError> {
    let bad = |m: &str| Err(TrainError::Config(m.to_owned()));
    if config.seq_len == 0 {
        return bad("seq_len must be at least 1");
    }
    if config.batch_size == 0 {
        return bad("batch_size must be at least 1");
    }
    if config.micro_batch.is_some_and(|m| m == 0 || !config.batch_size.is_multiple_of(m)) {
        return bad("micro_batch must divide batch_size into equal micro-batches");
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return bad("lr must be a positive number");
    }
    if !(0.0..=1.0).contains(&config.min_lr_ratio) {
        return bad("min_lr_ratio must be in [0, 1]");
    }
    if !(0.0..=1.0).contains(&config.warmup_fraction) {
        return bad("warmup_fraction must be in [0, 1]");
    }
    if config.grad_clip.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        return bad("grad_clip must be a positive number");
    }
    Ok(())
}

fn check_tasks(tasks: &SyntheticTasks, config: &TrainConfig) -> Result<(), TrainError> {
    if tasks.seq_len() != config.seq_len {
        return Err(TrainError::Config(format!(
            "the synthetic tasks were generated for seq_len {}, the run uses {}",
            tasks.seq_len(),
            config.seq_len
        )));
    }
    Ok(())
}

/// The model's logits for a batch as `[rows · seq_len, vocab]`, and the targets as `[rows · seq_len]`.
fn logits_and_targets<B: Kernels>(
    model: &HybridLm<B>,
    batch: &Batch,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let (rows, seq) = (batch.rows, batch.seq_len);
    let ids = |v: &[u32]| {
        let data: Vec<i64> = v.iter().map(|&t| i64::from(t)).collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(data, [rows * seq]), device)
    };
    let logits = model.forward(ids(&batch.inputs).reshape([rows, seq]));
    let vocab = logits.dims()[2];
    (logits.reshape([rows * seq, vocab]), ids(&batch.targets))
}

/// Mean cross-entropy over the scored targets of a batch (all of them for text).
fn loss_of<B: Kernels>(model: &HybridLm<B>, batch: &Batch, device: &B::Device) -> Tensor<B, 1> {
    let (logits, targets) = logits_and_targets(model, batch, device);
    match &batch.scored {
        None => CrossEntropyLossConfig::new().init(device).forward(logits, targets),
        Some(scored) => masked_cross_entropy(logits, targets, scored),
    }
}

/// Mean cross-entropy of `logits` `[n, vocab]` against `targets` over the positions where
/// `scored` is true; zero when none is.
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    scored: &[bool],
) -> Tensor<B, 1> {
    let n = scored.len();
    let device = logits.device();
    let count = scored.iter().filter(|&&s| s).count().max(1);
    let weights: Vec<f32> = scored.iter().map(|&s| if s { 1.0 } else { 0.0 }).collect();
    let weights = Tensor::<B, 1>::from_data(TensorData::new(weights, [n]), &device);
    let picked = log_softmax(logits, 1).gather(1, targets.reshape([n, 1])).reshape([n]);
    picked.mul(weights).sum().neg().div_scalar(count as f64)
}

/// Summed loss, scored targets and right answers (argmax = target) of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchScore {
    pub loss_sum: f64,
    pub scored: usize,
    pub correct: usize,
}

impl BatchScore {
    fn add(&mut self, other: BatchScore) {
        self.loss_sum += other.loss_sum;
        self.scored += other.scored;
        self.correct += other.correct;
    }

    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.scored.max(1) as f64
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.scored.max(1) as f64
    }
}

/// Scores one batch at its scored targets (all of them for text).
pub fn score_batch<B: Kernels>(model: &HybridLm<B>, batch: &Batch, device: &B::Device) -> BatchScore {
    let (logits, targets) = logits_and_targets(model, batch, device);
    let n = batch.targets.len();
    let predicted = logits.clone().argmax(1).reshape([n]).into_data();
    let picked = log_softmax(logits, 1).gather(1, targets.reshape([n, 1])).reshape([n]).into_data();
    let mut score = BatchScore::default();
    for (i, (logp, guess)) in picked.iter::<f64>().zip(predicted.iter::<i64>()).enumerate() {
        if batch.scored.as_ref().is_none_or(|s| s[i]) {
            score.loss_sum -= logp;
            score.scored += 1;
            score.correct += usize::from(guess == i64::from(batch.targets[i]));
        }
    }
    score
}

/// Validation examples per task: the token budget spread over the tasks, at least 16 each; 256
/// each without a budget.
pub fn validation_examples(tasks: &SyntheticTasks, eval_tokens: Option<usize>) -> usize {
    let per_task = tasks.seq_len() * tasks.task_names().len();
    eval_tokens.map_or(256, |t| t / per_task.max(1)).max(16)
}

/// Loss and accuracy of each task on its fixed validation examples.
pub fn evaluate_tasks<B: Kernels>(
    model: &HybridLm<B>,
    tasks: &SyntheticTasks,
    batch_size: usize,
    eval_tokens: Option<usize>,
    device: &B::Device,
) -> TaskScores {
    let examples = validation_examples(tasks, eval_tokens);
    let mut scores = TaskScores::default();
    let mut pooled = BatchScore::default();
    for (task, name) in tasks.task_names().into_iter().enumerate() {
        let mut score = BatchScore::default();
        for batch in tasks.validation_batches(task, examples, batch_size) {
            score.add(score_batch(model, &batch, device));
        }
        scores.loss.insert(name.to_owned(), score.mean_loss());
        scores.accuracy.insert(name.to_owned(), score.accuracy());
        pooled.add(score);
    }
    scores.pooled_loss = pooled.mean_loss();
    scores
}

/// Scales all gradients by `max_norm / ‖g‖` when their global L2 norm exceeds `max_norm`.
fn clip_global_norm<B: TrainingBackend>(model: &HybridLm<B>, grads: &mut GradientsParams, max_norm: f64) {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: f64,
    }
    impl<B: TrainingBackend> ModuleVisitor<B> for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                self.total += g.powi_scalar(2).sum().into_scalar().elem::<f64>();
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl<B: TrainingBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut sum = SumSquares { grads, total: 0.0 };
    model.visit(&mut sum);
    let norm = sum.total.sqrt();
    if norm.is_finite() && norm > max_norm {
        model.visit(&mut Scale { grads, factor: max_norm / norm });
    }
}

/// Mean loss over consecutive windows of the validation stream.
pub fn evaluate<'a, B: Kernels>(
    model: &HybridLm<B>,
    validation: impl Into<TokenStream<'a>>,
    seq_len: usize,
    batch_size: usize,
    max_tokens: Option<usize>,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let windows = ValidationBatches::new(validation, seq_len, batch_size).map_err(TrainError::Validation)?;
    let (mut total, mut count) = (0.0, 0usize);
    for batch in windows {
        let n = batch.rows * batch.seq_len;
        total += loss_of(model, &batch, device).into_scalar().elem::<f64>() * n as f64;
        count += n;
        if max_tokens.is_some_and(|m| count >= m) {
            break;
        }
    }
    Ok(total / count.max(1) as f64)
}
