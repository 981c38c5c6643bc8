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

use std::sync::Mutex;

use crate::kernels::{Kernels, TrainingBackend};
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::prelude::*;
use search_space::{LayerSpec, ModelSpec};

use super::attention::{Attention, AttentionConfig, KvCache};
use super::deltanet::{DeltaNet, DeltaNetConfig, DeltaNetState};
use super::embedding::{TokenEmbedding, TokenEmbeddingConfig};
use super::ffn::{Ffn, FfnConfig};
use super::gated_deltanet::{GatedDeltaNet, GatedDeltaNetConfig};
use super::init::residual_output_std;
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
    DeltaNet(DeltaNet<B>),
    GatedDeltaNet(GatedDeltaNet<B>),
    Ffn(Ffn<B>),
}

/// What one sub-layer keeps between decode steps.
#[derive(Clone, Debug)]
pub enum LayerState<B: Backend> {
    Attention(KvCache<B>),
    Mamba2(Mamba2State<B>),
    /// DeltaNet and Gated DeltaNet.
    Delta(DeltaNetState<B>),
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

/// Serialises "seed the backend, then draw the weights": backends keep one process-wide RNG, so
/// two models initialised at once would interleave their draws.
static SEEDED_INIT: Mutex<()> = Mutex::new(());

impl<B: Kernels> HybridLm<B> {
    /// Every float parameter by its module path (`layers.3.op.Ffn.up_proj.weight`), in the
    /// module's order, with its values read back: for tests and diagnostics, not a hot path.
    pub fn named_parameters(&self) -> Vec<(String, Vec<f32>)> {
        struct Collect {
            path: Vec<String>,
            found: Vec<(String, Vec<f32>)>,
        }
        impl<B: Backend> ModuleVisitor<B> for Collect {
            fn enter_module(&mut self, name: &str, _container_type: &str) {
                self.path.push(name.to_owned());
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let values = param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
                self.found.push((self.path.join("."), values));
            }
        }
        let mut collect = Collect { path: vec![], found: vec![] };
        self.visit(&mut collect);
        collect.found
    }

    /// Builds the model with weights drawn from `seed`: the same seed gives the same weights.
    /// burn creates parameters lazily, so every parameter is materialised here, under the seed,
    /// rather than at some later first use.
    pub fn init_seeded(spec: &ModelSpec, seed: u64, device: &B::Device) -> Self {
        struct Materialize;
        impl<B: Kernels> ModuleVisitor<B> for Materialize {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let _ = param.val();
            }
        }
        let _guard = SEEDED_INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        B::seed(device, seed);
        let model = Self::init(spec, device);
        model.visit(&mut Materialize);
        model
    }

    /// Builds the model of a (valid) spec with freshly initialised weights: normal with
    /// deviation 0.02, the output projections scaled down by depth (see [`super::init`]).
    pub fn init(spec: &ModelSpec, device: &B::Device) -> Self {
        let hidden = spec.hidden_size as usize;
        let out_std = residual_output_std(spec.layers.len());
        let layers = spec
            .layers
            .iter()
            .map(|layer| {
                let op = match layer {
                    LayerSpec::Attention(a) => Operator::Attention(
                        AttentionConfig::from_spec(a, hidden)
                            .with_meta_tokens(spec.meta_tokens as usize)
                            .with_output_init_std(out_std)
                            .init(device),
                    ),
                    LayerSpec::Mamba2(m) => Operator::Mamba2(
                        Mamba2Config::from_spec(m, hidden).with_output_init_std(out_std).init(device),
                    ),
                    LayerSpec::DeltaNet(d) => Operator::DeltaNet(
                        DeltaNetConfig::from_spec(d, hidden).with_output_init_std(out_std).init(device),
                    ),
                    LayerSpec::GatedDeltaNet(d) => Operator::GatedDeltaNet(
                        GatedDeltaNetConfig::from_spec(d, hidden).with_output_init_std(out_std).init(device),
                    ),
                    LayerSpec::Ffn(f) => Operator::Ffn(
                        FfnConfig::from_spec(f, hidden).with_output_init_std(out_std).init(device),
                    ),
                };
                SubLayer { norm: RmsNormConfig::new(hidden).with_epsilon(NORM_EPSILON).init(device), op }
            })
            .collect();
        Self {
            embedding: TokenEmbeddingConfig::from_spec(spec).init(device),
            layers,
            final_norm: RmsNormConfig::new(hidden).with_epsilon(NORM_EPSILON).init(device),
        }
    }

    /// Size of the output vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.embedding.tokens.weight.dims()[0]
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
                Operator::DeltaNet(d) => d.forward(h),
                Operator::GatedDeltaNet(d) => d.forward(h),
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
        let batch = tokens.dims()[0];
        let device = tokens.device();
        let mut state = DecodeState {
            layers: self
                .layers
                .iter()
                .map(|l| match &l.op {
                    Operator::Attention(a) => LayerState::Attention(a.empty_cache()),
                    Operator::Mamba2(m) => LayerState::Mamba2(m.zero_state(batch, &device)),
                    Operator::DeltaNet(d) => LayerState::Delta(d.zero_state(batch, &device)),
                    Operator::GatedDeltaNet(d) => LayerState::Delta(d.zero_state(batch, &device)),
                    Operator::Ffn(_) => LayerState::None,
                })
                .collect(),
        };
        let mut x = self.embedding.forward(tokens);
        for (layer, s) in self.layers.iter().zip(state.layers.iter_mut()) {
            let h = layer.norm.forward(x.clone());
            let h = match (&layer.op, s) {
                (Operator::Attention(a), LayerState::Attention(cache)) => a.forward_with_cache(h, cache),
                (Operator::Mamba2(m), LayerState::Mamba2(s)) => {
                    let (y, filled) = m.forward_with_state(h, s.clone());
                    *s = filled;
                    y
                }
                (Operator::DeltaNet(d), LayerState::Delta(s)) => d.forward_with_state(h, s),
                (Operator::GatedDeltaNet(d), LayerState::Delta(s)) => d.forward_with_state(h, s),
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
                (Operator::DeltaNet(d), LayerState::Delta(state)) => d.step(h, state),
                (Operator::GatedDeltaNet(d), LayerState::Delta(state)) => d.step(h, state),
                (Operator::Ffn(f), _) => f.forward(h),
                (op, _) => unreachable!("no state for {op:?}"),
            };
            x = x + h;
        }
        self.embedding.logits(self.final_norm.forward(x))
    }
}

impl<B: TrainingBackend> HybridLm<B> {
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
                    Operator::DeltaNet(mut d) => {
                        d.q_proj = normalize_linear(d.q_proj, Reads);
                        d.k_proj = normalize_linear(d.k_proj, Reads);
                        d.v_proj = normalize_linear(d.v_proj, Reads);
                        d.b_proj = normalize_linear(d.b_proj, Reads);
                        d.o_proj = normalize_linear(d.o_proj, Writes);
                        Operator::DeltaNet(d)
                    }
                    Operator::GatedDeltaNet(mut d) => {
                        d.q_proj = normalize_linear(d.q_proj, Reads);
                        d.k_proj = normalize_linear(d.k_proj, Reads);
                        d.v_proj = normalize_linear(d.v_proj, Reads);
                        d.a_proj = normalize_linear(d.a_proj, Reads);
                        d.b_proj = normalize_linear(d.b_proj, Reads);
                        d.g_proj = normalize_linear(d.g_proj, Reads);
                        d.o_proj = normalize_linear(d.o_proj, Writes);
                        Operator::GatedDeltaNet(d)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::tensor::Distribution;
    use search_space::presets::{preset, tiny_settings};
    use search_space::space::rng;
    use search_space::{Architecture, MixerKind, SearchSpace};

    type B = Cpu;

    fn spec(name: &str) -> ModelSpec {
        preset(name).unwrap().expand().unwrap()
    }

    /// The paper's space plus Gated DeltaNet, dimensioned with the tiny settings.
    fn random_specs(count: usize) -> Vec<ModelSpec> {
        let mut space = SearchSpace { hidden_sizes: vec![128], ..SearchSpace::default() };
        space.mixers.push(MixerKind::GatedDeltaNet);
        let mut r = rng(42);
        (0..count)
            .map(|_| {
                Architecture::from_genome(tiny_settings(), space.sample(&mut r).unwrap()).expand().unwrap()
            })
            .collect()
    }

    #[test]
    fn parameter_count_equals_the_closed_form_for_presets_and_random_architectures() {
        let device = Default::default();
        let mut specs = vec![spec("tiny-transformer"), spec("tiny-hybrid")];
        specs.extend(random_specs(20));
        for spec in specs {
            let model = HybridLm::<B>::init(&spec, &device);
            assert_eq!(model.num_params() as u64, spec.params().total, "{}", spec.pattern());
        }
    }

    /// Prefill of `split` tokens then single steps reproduce the training forward's logits.
    fn check_decode_matches_forward(spec: &ModelSpec, split: usize) {
        let device = Default::default();
        let model = HybridLm::<B>::init(spec, &device);
        let (batch, len, vocab) = (2, 12, spec.vocab_size as usize);
        let tokens = Tensor::<B, 2>::random([batch, len], Distribution::Uniform(0.0, 255.0), &device).int();
        let full = model.forward(tokens.clone()).into_data().to_vec::<f32>().unwrap();
        let (mut logits, mut state) = model.prefill(tokens.clone().slice([0..batch, 0..split]));
        for t in split - 1..len {
            let got = logits.clone().into_data().to_vec::<f32>().unwrap();
            for b in 0..batch {
                let want = &full[(b * len + t) * vocab..(b * len + t + 1) * vocab];
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
                let err = got[b * vocab..(b + 1) * vocab]
                    .iter()
                    .zip(want)
                    .fold(0f32, |m, (a, w)| m.max((a - w).abs()));
                assert!(err <= 1e-4 * scale, "{}: position {t}, sequence {b}: error {err}", spec.pattern());
            }
            if t + 1 < len {
                let next = tokens.clone().slice([0..batch, t + 1..t + 2]).reshape([batch]);
                logits = model.step(next, &mut state);
            }
        }
    }

    #[test]
    fn prefill_then_steps_give_the_same_logits_as_the_full_forward() {
        check_decode_matches_forward(&spec("tiny-transformer"), 5);
        check_decode_matches_forward(&spec("tiny-hybrid"), 5);
        let gated = Architecture::from_layers(
            tiny_settings(),
            ["GD", "F", "A", "F"].iter().map(|c| c.parse().unwrap()).collect(),
        );
        check_decode_matches_forward(&gated.expand().unwrap(), 3);
    }

    #[test]
    fn with_a_sliding_window_decoding_keeps_the_meta_tokens_in_view_as_the_forward_does() {
        // 4 meta tokens, a window of 3 and 12 tokens: the window slides far past the meta tokens
        // in the prefill and in the steps.
        let mut settings = tiny_settings();
        settings.attention.sliding_window = Some(3);
        assert_eq!(settings.meta_tokens, 4);
        let layers = ["A", "F", "M2", "F", "A", "F"].iter().map(|c| c.parse().unwrap()).collect();
        let spec = Architecture::from_layers(settings, layers).expand().unwrap();
        check_decode_matches_forward(&spec, 5);
        check_decode_matches_forward(&spec, 1);
        let model = HybridLm::<B>::init(&spec, &Default::default());
        let Operator::Attention(a) = &model.layers[0].op else { panic!("layer 0 is attention") };
        assert_eq!((a.sliding_window, a.meta_tokens), (Some(3), 4));
    }

    /// Mean and standard deviation.
    fn moments(values: &[f32]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn initial_weights_are_normal_0_02_with_the_output_projections_scaled_by_depth() {
        let mut settings = tiny_settings();
        settings.hidden_size = 256;
        settings.tied_embeddings = false;
        let layers = ["A", "F", "M2", "F", "D", "F", "GD", "F"].iter().map(|c| c.parse().unwrap()).collect();
        let spec = Architecture::from_layers(settings, layers).expand().unwrap();
        let model = HybridLm::<B>::init_seeded(&spec, 11, &Default::default());
        // 8 residual sub-layers: outputs start at 0.02 / √8.
        let out_std = 0.02 / 8f64.sqrt();
        let (mut reads, mut writes, mut filters) = (vec![], vec![], vec![]);
        let within = |got: f64, want: f64, tolerance: f64, what: &str| {
            assert!((got / want - 1.0).abs() <= tolerance, "{what}: std {got}, want {want}");
        };
        let mut checked = 0;
        for (path, values) in model.named_parameters() {
            let (mean, std) = moments(&values);
            let writes_residual = ["o_proj", "down_proj", "out_proj"].iter().any(|w| path.contains(w));
            let want = if writes_residual { out_std } else { 0.02 };
            if path.ends_with("proj.weight") || path.contains("head") || path.contains("embedding") {
                assert!(mean.abs() < 0.1 * want, "{path}: mean {mean}");
                // A large matrix alone is a precise estimate: within 5 %.
                if values.len() >= 16_384 {
                    within(std, want, 0.05, &path);
                    checked += 1;
                }
                if writes_residual {
                    writes.extend(values)
                } else if path.contains("_proj") {
                    reads.extend(values)
                }
            } else if path.ends_with("conv.weight") {
                filters.extend(values);
            } else if path.ends_with("conv.bias") {
                assert!(values.iter().all(|&v| v == 0.0), "{path} starts at zero");
            }
        }
        assert!(checked >= 15, "only {checked} large matrices checked");
        within(moments(&reads).1, 0.02, 0.02, "every projection that reads the residual stream");
        within(moments(&writes).1, out_std, 0.02, "every output projection");
        within(moments(&filters).1, 0.02, 0.05, "the short convolutions' filters");
    }

    #[test]
    fn weight_normalization_puts_every_projection_of_the_residual_stream_on_the_unit_sphere() {
        use crate::model::weight_norm::{Side, vector_norms};
        use burn::nn::Linear;
        use std::collections::BTreeSet;
        type A = crate::backend::CpuAutodiff;

        /// Every `Linear` weight inside the layers, with its path (`op.GatedDeltaNet.a_proj`).
        struct Projections {
            path: Vec<String>,
            owners: Vec<String>,
            found: Vec<(String, Tensor<B, 2>)>,
        }
        impl ModuleVisitor<A> for Projections {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.path.push(name.to_owned());
                self.owners.push(container_type.to_owned());
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.pop();
                self.owners.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
                let in_layers = self.path.first().is_some_and(|p| p == "layers");
                if in_layers && self.owners.last().is_some_and(|o| o == "Struct:Linear") {
                    let [d_in, d_out] = [param.dims()[0], param.dims()[1]];
                    let name = self.path[2..self.path.len() - 1].join(".");
                    self.found.push((name, param.val().inner().reshape([d_in, d_out])));
                }
            }
        }

        let device = Default::default();
        let mut settings = tiny_settings();
        settings.meta_tokens = 0;
        let layers = ["A", "F", "M2", "F", "D", "F", "GD", "F"].iter().map(|c| c.parse().unwrap()).collect();
        let spec = Architecture::from_layers(settings, layers).expand().unwrap();
        let hidden = spec.hidden_size as usize;
        let model = HybridLm::<A>::init(&spec, &device).normalize_weights();
        let mut walk = Projections { path: vec![], owners: vec![], found: vec![] };
        model.visit(&mut walk);
        // Output projections write to the residual stream; every other projection in a layer
        // reads it (their input is the normed residual stream).
        let writes = ["o_proj", "down_proj", "out_proj"];
        let mut seen = BTreeSet::new();
        for (name, weight) in walk.found {
            let [d_in, d_out] = weight.dims();
            let side = if writes.iter().any(|w| name.ends_with(w)) { Side::Writes } else { Side::Reads };
            match side {
                Side::Reads => assert_eq!(d_in, hidden, "{name} reads the residual stream"),
                Side::Writes => assert_eq!(d_out, hidden, "{name} writes to the residual stream"),
            }
            let norms = vector_norms(&Linear { weight: Param::from_tensor(weight), bias: None }, side);
            assert_eq!(norms.len(), if side == Side::Reads { d_out } else { d_in });
            for n in norms {
                assert!((n - 1.0).abs() < 1e-5, "{name}: norm {n}");
            }
            seen.insert(name);
        }
        let want = [
            "op.Attention.q_proj",
            "op.Attention.k_proj",
            "op.Attention.v_proj",
            "op.Attention.o_proj",
            "op.Mamba2.in_proj",
            "op.Mamba2.out_proj",
            "op.DeltaNet.q_proj",
            "op.DeltaNet.k_proj",
            "op.DeltaNet.v_proj",
            "op.DeltaNet.b_proj",
            "op.DeltaNet.o_proj",
            "op.GatedDeltaNet.q_proj",
            "op.GatedDeltaNet.k_proj",
            "op.GatedDeltaNet.v_proj",
            "op.GatedDeltaNet.a_proj",
            "op.GatedDeltaNet.b_proj",
            "op.GatedDeltaNet.g_proj",
            "op.GatedDeltaNet.o_proj",
            "op.Ffn.gate_proj",
            "op.Ffn.up_proj",
            "op.Ffn.down_proj",
        ];
        assert_eq!(seen, want.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    }
}
