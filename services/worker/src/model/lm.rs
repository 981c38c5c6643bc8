//! The hybrid language model assembled from a `search_space` layer list.
//!
//! `tokens → embedding (+ meta tokens in front) → [x + op(rmsnorm(x))] per layer → rmsnorm →
//! head`. Each layer of the [`ModelSpec`] becomes one pre-norm residual sub-layer whose operator
//! is built from that layer's spec, so the burn parameter count equals the closed form in
//! `search_space::ModelSpec::params`.
//!
//! Training runs every operator's whole-sequence form; decoding prefills the prompt (meta tokens
//! first) through the same forms while filling per-layer caches and states, then advances one
//! token at a time with each operator's `step`.

use burn::module::Module;
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::prelude::*;
use search_space::{LayerSpec, ModelSpec};

use super::attention::{Attention, AttentionConfig, KvCache};
use super::embedding::{TokenEmbedding, TokenEmbeddingConfig};
use super::ffn::{Ffn, FfnConfig};
use super::mamba2::{Mamba2, Mamba2Config, Mamba2State};
use super::weight_norm::{Side, normalize_linear};

/// Epsilon of the sub-layer and final RMSNorms (the Nemotron-Flash configs use 1e-6).
const NORM_EPSILON: f64 = 1e-6;

/// One sub-layer's operator.
#[allow(clippy::large_enum_variant, reason = "one per layer, built once; boxing would not pay for itself")]
#[derive(Module, Debug)]
pub enum Operator<B: Backend> {
    Attention(Attention<B>),
    Mamba2(Mamba2<B>),
    Ffn(Ffn<B>),
}

/// What one sub-layer keeps between decode steps.
#[derive(Clone, Debug)]
pub enum LayerState<B: Backend> {
    Attention(KvCache<B>),
    Mamba2(Mamba2State<B>),
    /// FFNs are stateless.
    None,
}

/// A pre-norm residual sub-layer: `x + op(rmsnorm(x))`.
#[derive(Module, Debug)]
pub struct SubLayer<B: Backend> {
    pub norm: RmsNorm<B>,
    pub op: Operator<B>,
}

/// The whole model.
#[derive(Module, Debug)]
pub struct HybridLm<B: Backend> {
    pub embedding: TokenEmbedding<B>,
    pub layers: Vec<SubLayer<B>>,
    pub final_norm: RmsNorm<B>,
}

/// Per-layer caches and states of a decoding batch.
#[derive(Clone, Debug)]
pub struct DecodeState<B: Backend> {
    pub layers: Vec<LayerState<B>>,
}

/// A layer the burn model zoo cannot build yet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("layers[{index}]: {op} is not available in the worker's model zoo")]
pub struct UnsupportedLayer {
    pub index: usize,
    pub op: &'static str,
}

impl<B: Backend> HybridLm<B> {
    /// Builds the model of a (valid) spec with freshly initialised weights.
    pub fn init(spec: &ModelSpec, device: &B::Device) -> Result<Self, UnsupportedLayer> {
        let hidden = spec.hidden_size as usize;
        let layers = spec
            .layers
            .iter()
            .enumerate()
            .map(|(index, layer)| {
                let op = match layer {
                    LayerSpec::Attention(a) => {
                        Operator::Attention(AttentionConfig::from_spec(a, hidden).init(device))
                    }
                    LayerSpec::Mamba2(m) => Operator::Mamba2(Mamba2Config::from_spec(m, hidden).init(device)),
                    LayerSpec::Ffn(f) => Operator::Ffn(FfnConfig::from_spec(f, hidden).init(device)),
                    other => return Err(UnsupportedLayer { index, op: other.kind().name() }),
                };
                Ok(SubLayer { norm: RmsNormConfig::new(hidden).with_epsilon(NORM_EPSILON).init(device), op })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            embedding: TokenEmbeddingConfig::from_spec(spec).init(device),
            layers,
            final_norm: RmsNormConfig::new(hidden).with_epsilon(NORM_EPSILON).init(device),
        })
    }

    /// Size of the output vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.embedding.tokens.weight.dims()[0]
    }

    /// Puts every residual-stream vector of every projection back on the unit sphere (see
    /// [`super::weight_norm`]); the trainer calls it after each optimiser step when weight
    /// normalisation is on.
    pub fn normalize_weights(mut self) -> Self {
        use Side::{Reads, Writes};
        self.layers = self
            .layers
            .into_iter()
            .map(|mut layer| {
                layer.op = match layer.op {
                    Operator::Attention(mut a) => {
                        a.q_proj = normalize_linear(a.q_proj, Reads);
                        a.k_proj = normalize_linear(a.k_proj, Reads);
                        a.v_proj = normalize_linear(a.v_proj, Reads);
                        a.o_proj = normalize_linear(a.o_proj, Writes);
                        Operator::Attention(a)
                    }
                    Operator::Mamba2(mut m) => {
                        m.in_proj = normalize_linear(m.in_proj, Reads);
                        m.out_proj = normalize_linear(m.out_proj, Writes);
                        Operator::Mamba2(m)
                    }
                    Operator::Ffn(mut f) => {
                        f.gate_proj = normalize_linear(f.gate_proj, Reads);
                        f.up_proj = normalize_linear(f.up_proj, Reads);
                        f.down_proj = normalize_linear(f.down_proj, Writes);
                        Operator::Ffn(f)
                    }
                };
                layer
            })
            .collect();
        self
    }

    /// Next-token logits at every input position (meta positions removed).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` → `[batch, seq, vocab]`
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let mut x = self.embedding.forward(tokens);
        for layer in &self.layers {
            let h = layer.norm.forward(x.clone());
            let h = match &layer.op {
                Operator::Attention(a) => a.forward(h, 0),
                Operator::Mamba2(m) => m.forward(h),
                Operator::Ffn(f) => f.forward(h),
            };
            x = x + h;
        }
        let x = self.embedding.drop_meta_positions(x);
        self.embedding.logits(self.final_norm.forward(x))
    }

    /// Runs the prompt (meta tokens first) and returns the logits of its last position together
    /// with the filled caches and states.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` → `[batch, vocab]`
    pub fn prefill(&self, tokens: Tensor<B, 2, Int>) -> (Tensor<B, 2>, DecodeState<B>) {
        let mut state = DecodeState {
            layers: self
                .layers
                .iter()
                .map(|l| match &l.op {
                    Operator::Attention(a) => LayerState::Attention(a.empty_cache()),
                    Operator::Mamba2(_) => LayerState::None,
                    Operator::Ffn(_) => LayerState::None,
                })
                .collect(),
        };
        let mut x = self.embedding.forward(tokens);
        for (layer, s) in self.layers.iter().zip(state.layers.iter_mut()) {
            let h = layer.norm.forward(x.clone());
            let h = match (&layer.op, s) {
                (Operator::Attention(a), LayerState::Attention(cache)) => a.forward_with_cache(h, cache),
                (Operator::Mamba2(m), s) => {
                    let (y, filled) = m.forward_with_state(h.clone(), m.zero_state(h.dims()[0], &h.device()));
                    *s = LayerState::Mamba2(filled);
                    y
                }
                (Operator::Ffn(f), _) => f.forward(h),
                (op, _) => unreachable!("no state for {op:?}"),
            };
            x = x + h;
        }
        let [batch, len, hidden] = x.dims();
        let last = x.slice([0..batch, len - 1..len, 0..hidden]).reshape([batch, hidden]);
        (self.embedding.logits(self.final_norm.forward(last)), state)
    }

    /// Advances every sequence by one token.
    ///
    /// # Shapes
    /// - `tokens`: `[batch]` → `[batch, vocab]`
    pub fn step(&self, tokens: Tensor<B, 1, Int>, state: &mut DecodeState<B>) -> Tensor<B, 2> {
        let mut x = self.embedding.embed_step(tokens);
        for (layer, s) in self.layers.iter().zip(state.layers.iter_mut()) {
            let h = layer.norm.forward(x.clone());
            let h = match (&layer.op, s) {
                (Operator::Attention(a), LayerState::Attention(cache)) => a.step(h, cache),
                (Operator::Mamba2(m), LayerState::Mamba2(state)) => m.step(h, state),
                (Operator::Ffn(f), _) => f.forward(h),
                (op, _) => unreachable!("no state for {op:?}"),
            };
            x = x + h;
        }
        self.embedding.logits(self.final_norm.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::tensor::Distribution;
    use search_space::presets::preset;

    type B = Cpu;

    fn spec(name: &str) -> ModelSpec {
        preset(name).unwrap().expand().unwrap()
    }

    #[test]
    fn parameter_count_equals_the_closed_form() {
        let device = Default::default();
        let spec = spec("tiny-transformer");
        let model = HybridLm::<B>::init(&spec, &device).unwrap();
        assert_eq!(model.num_params() as u64, spec.params().total);
    }

    #[test]
    fn prefill_then_steps_give_the_same_logits_as_the_full_forward() {
        let device = Default::default();
        let spec = spec("tiny-transformer");
        let model = HybridLm::<B>::init(&spec, &device).unwrap();
        let tokens = Tensor::<B, 2>::random([2, 12], Distribution::Uniform(0.0, 255.0), &device).int();
        let full = model.forward(tokens.clone()).into_data().to_vec::<f32>().unwrap();
        let (mut logits, mut state) = model.prefill(tokens.clone().slice([0..2, 0..5]));
        let vocab = 256;
        let at = |b: usize, t: usize| &full[(b * 12 + t) * vocab..(b * 12 + t + 1) * vocab];
        for t in 4..12 {
            let got = logits.clone().into_data().to_vec::<f32>().unwrap();
            for b in 0..2 {
                let want = at(b, t);
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let err = got[b * vocab..(b + 1) * vocab]
                    .iter()
                    .zip(want)
                    .fold(0f32, |m, (a, w)| m.max((a - w).abs()));
                assert!(err <= 1e-4 * scale.max(1.0), "position {t}, sequence {b}: error {err}");
            }
            if t + 1 < 12 {
                let next = tokens.clone().slice([0..2, t + 1..t + 2]).reshape([2]);
                logits = model.step(next, &mut state);
            }
        }
    }
}
