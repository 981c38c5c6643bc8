//! 1. Training throughput.

use std::time::Instant;

use burn::prelude::*;
use worker::backend::describe;
use worker::kernels::TrainingBackend;
use worker::model::lm::HybridLm;
use worker::train::{TrainConfig, Trainer};

use super::report::{Plan, Spread, TrainRow};
use super::{MODELS, SEED, model_spec};

/// A [`Trainer`] whose steps are timed: `plan.train_warmup` untimed steps, then
/// `plan.train_steps` timed ones. Peers advance one step each in turn, so that a change in the
/// machine's load during the run falls on all of them alike rather than on whichever ran last.
pub struct TimedTrainer<'a, A: TrainingBackend> {
    trainer: Trainer<'a, A>,
    device: A::Device,
    warmup: usize,
    tokens_per_step: usize,
    rates: Vec<f64>,
    losses: Vec<f64>,
}

impl<'a, A: TrainingBackend> TimedTrainer<'a, A> {
    pub fn new(model: HybridLm<A>, tokens: &'a [u32], plan: &Plan, device: &A::Device) -> Self {
        let tokens_per_step = plan.batch * plan.seq_len;
        let config = TrainConfig {
            tokens: ((plan.train_warmup + plan.train_steps) * tokens_per_step) as u64,
            seq_len: plan.seq_len,
            batch_size: plan.batch,
            seed: SEED,
            ..TrainConfig::default()
        };
        let trainer =
            Trainer::new(model, tokens, config, device.clone()).expect("the bench's training setup is valid");
        TimedTrainer {
            trainer,
            device: device.clone(),
            warmup: plan.train_warmup,
            tokens_per_step,
            rates: Vec::with_capacity(plan.train_steps),
            losses: Vec::new(),
        }
    }

    pub fn step(&mut self) {
        let start = Instant::now();
        let (loss, _) = self.trainer.step().expect("the bench's corpus is inside the vocabulary");
        // The step reads its loss back before the backward pass; waiting here makes the backward
        // pass and the update part of the step on backends that queue work.
        A::sync(&self.device).expect("the device finishes its work");
        let seconds = start.elapsed().as_secs_f64();
        if self.losses.len() >= self.warmup {
            self.rates.push(self.tokens_per_step as f64 / seconds);
        }
        self.losses.push(loss);
    }

    /// Tokens/s of the timed steps, and the loss of every step.
    pub fn finish(self) -> (Spread, Vec<f64>) {
        (Spread::of(self.rates), self.losses)
    }
}

pub fn training_table<A: TrainingBackend>(plan: &Plan, tokens: &[u32], device: &A::Device) -> Vec<TrainRow> {
    println!(
        "\n1. Training throughput: Trainer::step (forward + backward + clip + AdamW), batch {} × seq {}, \
         4 mixers + 4 FFNs, {} warm-up + {} timed steps, the models of one width stepping in turn",
        plan.batch, plan.seq_len, plan.train_warmup, plan.train_steps
    );
    println!(
        "   target: every chunked recurrent mixer at ≥ 0.7× attention's tokens/s; tok/s is the median, range min–max"
    );
    println!(
        "{:>7}  {:<18} {:>9} {:>10}  {:<15} {:>11}  {:>6}  {:>13}",
        "d_model", "model", "params", "tok/s", "range", "× attention", "≥0.7×", "loss first→last"
    );
    let mut rows = Vec::new();
    for &width in &plan.widths {
        let mut trainers: Vec<_> = MODELS
            .iter()
            .map(|(_, layers)| {
                A::seed(device, SEED);
                let model = HybridLm::<A>::init(&model_spec(layers, width), device);
                (model.num_params(), TimedTrainer::new(model, tokens, plan, device))
            })
            .collect();
        for _ in 0..plan.train_warmup + plan.train_steps {
            for (_, trainer) in &mut trainers {
                trainer.step();
            }
        }
        let mut attention_rate = None;
        for ((name, layers), (params, trainer)) in MODELS.iter().zip(trainers) {
            let (rate, losses) = trainer.finish();
            if *name == "attention" {
                attention_rate = Some(rate.median);
            }
            let vs_attention = attention_rate.map(|a| rate.median / a);
            let target = match (*name, vs_attention) {
                ("mamba2" | "deltanet" | "gated deltanet", Some(r)) if r >= 0.7 => "yes",
                ("mamba2" | "deltanet" | "gated deltanet", Some(_)) => "NO",
                _ => "",
            };
            println!(
                "{:>7}  {:<18} {:>9} {:>10.0}  {:<15} {:>11}  {:>6}  {:>6.3}→{:.3}",
                width,
                name,
                params,
                rate.median,
                rate.range_k(),
                vs_attention.map(|r| format!("{r:.2}")).unwrap_or_default(),
                target,
                losses[0],
                losses[losses.len() - 1],
            );
            rows.push(TrainRow {
                model: name.to_string(),
                layers: layers.join(" "),
                d_model: width,
                params,
                backend: describe::<A>(device),
                tokens_per_s: rate,
                vs_attention,
                losses,
            });
        }
    }
    rows
}
