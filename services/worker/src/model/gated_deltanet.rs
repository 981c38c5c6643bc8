//! Gated DeltaNet: DeltaNet whose memory also decays, with a gated output norm.
//!
//! Everything of [`DeltaNet`](super::deltanet) plus, per head and token,
//!
//! ```text
//! g_t = −exp(A_log) · softplus(W_a x_t + dt_bias)          a log-decay, g_t ≤ 0
//! u_t = β_t (v_t − (e^{g_t} S_{t−1})ᵀ k_t),   S_t = e^{g_t} S_{t−1} + k_t u_tᵀ,   o_t = S_tᵀ q_t
//! y_t = W_o · concat_heads(rmsnorm(o_t) · w · silu(W_g x_t))   normalise, then gate
//! ```
//!
//! as in the Nemotron-Flash reference module (no biases; `A_log` and `dt_bias` one per head).
//! The decay is parameterised like Mamba2's: `exp(A_log) · softplus(·)` keeps it positive and
//! `dt_bias` starts it in a useful range. The training form is the chunked delta rule of
//! [`delta_rule`](super::delta_rule) with the decay folded into its within-chunk factors.

use crate::kernels::Kernels;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::Distribution;
use search_space::ops::DeltaNetSpec;

use super::conv::{ShortConv, ShortConvConfig};
use super::delta_rule::{Scan, delta_rule, delta_rule_step, softplus, token_major};
use super::deltanet::{DeltaInputs, DeltaNetState};
use super::init::linear;
use super::norm::{GatedRmsNorm, GatedRmsNormConfig};

/// Smallest initial `A`: a draw below it is raised to it.
const A_INIT_FLOOR: f64 = 1e-6;

/// Configuration of a [`GatedDeltaNet`].
#[derive(Config, Debug)]
pub struct GatedDeltaNetConfig {
    /// Model width: the mixer's input and output size.
    pub hidden: usize,
    /// Number of heads, each with its own `head_dim × head_dim` state.
    pub num_heads: usize,
    /// Size of each head's query, key and value.
    pub head_dim: usize,
    /// Taps of the short causal convolutions on q, k and v.
    #[config(default = 4)]
    pub conv_kernel: usize,
    /// Longest chunk of the training form, in tokens.
    #[config(default = 64)]
    pub chunk_size: usize,
    /// `eps` of the per-head gated output RMSNorm.
    #[config(default = 1e-5)]
    pub norm_epsilon: f64,
    /// `A = exp(A_log)` starts uniform in `[a_init_min, a_init_max]`: U(0, 16) as in fla's
    /// `GatedDeltaNet` (`fla/layers/gated_deltanet.py`, also its `_init_weights`), so some heads
    /// start with almost no decay (long memory) and others forget within a few tokens.
    #[config(default = 0.0)]
    pub a_init_min: f64,
    #[config(default = 16.0)]
    pub a_init_max: f64,
    /// `softplus(dt_bias)` starts log-uniform in `[dt_min, dt_max]`.
    #[config(default = 0.001)]
    pub dt_min: f64,
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Deviation of the normal initial weights of the projections that read the input.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Deviation of the normal initial weights of the output projection, which writes to the
    /// residual stream; the model scales it by depth ([`super::init::residual_output_std`]).
    #[config(default = 0.02)]
    pub output_init_std: f64,
}

/// The Gated DeltaNet token mixer.
#[derive(Module, Debug)]
pub struct GatedDeltaNet<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub q_conv: ShortConv<B>,
    pub k_conv: ShortConv<B>,
    pub v_conv: ShortConv<B>,
    /// Write strength β, one per head.
    pub b_proj: Linear<B>,
    /// Decay input, one per head.
    pub a_proj: Linear<B>,
    /// `log A` per head: the decay rate's scale.
    pub a_log: Param<Tensor<B, 1>>,
    /// Added to the decay input before the softplus, per head.
    pub dt_bias: Param<Tensor<B, 1>>,
    /// Output gate.
    pub g_proj: Linear<B>,
    /// Per-head output norm, normalising before gating; its weight (size `head_dim`) is shared
    /// by the heads.
    pub o_norm: GatedRmsNorm<B>,
    pub o_proj: Linear<B>,
    pub num_heads: usize,
    pub head_dim: usize,
    pub chunk_size: usize,
}

impl GatedDeltaNetConfig {
    /// The mixer a `search-space` layer spec describes, at model width `hidden`.
    pub fn from_spec(spec: &DeltaNetSpec, hidden: usize) -> Self {
        Self::new(hidden, spec.num_heads as usize, spec.head_dim as usize)
            .with_conv_kernel(spec.conv_kernel as usize)
    }

    /// Builds the mixer, projections and convs normal as in [`super::init`], `A` and `dt_bias`
    /// as in fla.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GatedDeltaNet<B> {
        assert!(self.chunk_size > 0, "chunk_size must be positive");
        let (h, width) = (self.num_heads, self.num_heads * self.head_dim);
        let reads = |d_in, d_out| linear(d_in, d_out, self.init_std, device);
        let conv = || ShortConvConfig::new(width).with_kernel(self.conv_kernel).init(device);
        // A draw of exactly 0 (about one in 2²⁴) would make `A_log` −∞; the floor keeps it finite.
        let a = Tensor::<B, 1>::random([h], Distribution::Uniform(self.a_init_min, self.a_init_max), device)
            .clamp_min(A_INIT_FLOOR);
        let dt =
            Tensor::<B, 1>::random([h], Distribution::Uniform(self.dt_min.ln(), self.dt_max.ln()), device)
                .exp()
                .clamp_min(1e-4);
        // The inverse of softplus, dt + log(1 − e^{−dt}), so that softplus(dt_bias) = dt.
        let dt_bias = dt.clone() + dt.neg().exp().neg().log1p();
        GatedDeltaNet {
            q_proj: reads(self.hidden, width),
            k_proj: reads(self.hidden, width),
            v_proj: reads(self.hidden, width),
            q_conv: conv(),
            k_conv: conv(),
            v_conv: conv(),
            b_proj: reads(self.hidden, h),
            a_proj: reads(self.hidden, h),
            a_log: Param::from_tensor(a.log()),
            dt_bias: Param::from_tensor(dt_bias),
            g_proj: reads(self.hidden, width),
            o_norm: GatedRmsNormConfig::new(self.head_dim)
                .with_norm_before_gate(true)
                .with_epsilon(self.norm_epsilon)
                .init(device),
            o_proj: linear(width, self.hidden, self.output_init_std, device),
            num_heads: h,
            head_dim: self.head_dim,
            chunk_size: self.chunk_size,
        }
    }
}

impl<B: Kernels> GatedDeltaNet<B> {
    /// Mixes a whole sequence from an empty memory, in the chunked training form.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mix(x, None, Scan::Chunked(self.chunk_size))
    }

    /// [`forward`](Self::forward) continuing from `state` and advancing it past the sequence:
    /// a prefill, after which [`step`](Self::step) continues.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward_with_state(&self, x: Tensor<B, 3>, state: &mut DeltaNetState<B>) -> Tensor<B, 3> {
        self.mix(x, Some(state), Scan::Chunked(self.chunk_size))
    }

    /// [`forward`](Self::forward) with the recurrence run in the given form; the per-token form
    /// is there to check and to measure the chunked one against.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward_scan(&self, x: Tensor<B, 3>, scan: Scan) -> Tensor<B, 3> {
        self.mix(x, None, scan)
    }

    /// An empty memory: the state before the first token.
    pub fn zero_state(&self, batch: usize, device: &B::Device) -> DeltaNetState<B> {
        self.inputs().zero_state(batch, device)
    }

    /// Mixes one new token and advances `state`.
    ///
    /// # Shapes
    /// - `x`: `[batch, hidden]` → `[batch, hidden]`
    pub fn step(&self, x: Tensor<B, 2>, state: &mut DeltaNetState<B>) -> Tensor<B, 2> {
        let [batch, _] = x.dims();
        let (h, d) = (self.num_heads, self.head_dim);
        let (q, k, v, beta) = self.inputs().token(x.clone(), state);
        let g = self.log_decay(x.clone());
        let (o, s) = delta_rule_step(q, k, v, beta, Some(g), state.s.clone());
        state.s = s;
        let gate = self.g_proj.forward(x).reshape([batch, h, d]);
        self.o_proj.forward(self.o_norm.forward(o, gate).reshape([batch, h * d]))
    }

    /// `g = −exp(A_log) · softplus(W_a x + dt_bias)`, per head.
    ///
    /// # Shapes
    /// - `x`: `[..., hidden]` → `[..., heads]`
    fn log_decay<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut shape = [1; D];
        shape[D - 1] = self.num_heads;
        let rate = self.a_log.val().exp().reshape(shape);
        softplus(self.a_proj.forward(x) + self.dt_bias.val().reshape(shape)) * rate.neg()
    }

    fn mix(&self, x: Tensor<B, 3>, mut state: Option<&mut DeltaNetState<B>>, scan: Scan) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let (h, d) = (self.num_heads, self.head_dim);
        let initial = match &state {
            Some(s) => s.s.clone(),
            None => Tensor::zeros([batch, h, d, d], &x.device()),
        };
        let (q, k, v, beta) = self.inputs().sequence(x.clone(), state.as_deref_mut());
        let g = self.log_decay(x.clone()).swap_dims(1, 2);
        let (o, last) = delta_rule(q, k, v, beta, Some(g), initial, scan);
        if let Some(s) = state {
            s.s = last;
        }
        let gate = self.g_proj.forward(x).reshape([batch, seq, h, d]);
        let o = self.o_norm.forward(token_major(o), gate).reshape([batch, seq, h * d]);
        self.o_proj.forward(o)
    }

    fn inputs(&self) -> DeltaInputs<'_, B> {
        DeltaInputs {
            q_proj: &self.q_proj,
            k_proj: &self.k_proj,
            v_proj: &self.v_proj,
            q_conv: &self.q_conv,
            k_conv: &self.k_conv,
            v_conv: &self.v_conv,
            b_proj: &self.b_proj,
            num_heads: self.num_heads,
            head_dim: self.head_dim,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff};
    use crate::model::delta_rule::reference::{self, GateWeights, Weights, relative_error, values};
    use burn::tensor::backend::AutodiffBackend;
    use search_space::ops::LayerSpec;

    type B = Cpu;

    fn weights<B: Backend>(m: &GatedDeltaNet<B>, hidden: usize) -> Weights {
        Weights {
            hidden,
            heads: m.num_heads,
            head_dim: m.head_dim,
            kernel: m.q_conv.kernel,
            q_proj: values(m.q_proj.weight.val()),
            k_proj: values(m.k_proj.weight.val()),
            v_proj: values(m.v_proj.weight.val()),
            q_conv: values(m.q_conv.weight.val()),
            k_conv: values(m.k_conv.weight.val()),
            v_conv: values(m.v_conv.weight.val()),
            b_proj: values(m.b_proj.weight.val()),
            o_norm: values(m.o_norm.weight.val()),
            o_proj: values(m.o_proj.weight.val()),
            norm_epsilon: m.o_norm.epsilon,
            gate: Some(GateWeights {
                a_proj: values(m.a_proj.weight.val()),
                a_log: values(m.a_log.val()),
                dt_bias: values(m.dt_bias.val()),
                g_proj: values(m.g_proj.weight.val()),
            }),
        }
    }

    /// A mixer whose output norm weight is not all ones, so that a mix-up of it shows, and whose
    /// projections and convs are drawn wider than the model's initialisation (0.02), so that
    /// at these tiny widths every nonlinearity sees inputs of order one.
    fn mixer<B: Kernels>(config: &GatedDeltaNetConfig, device: &B::Device) -> GatedDeltaNet<B> {
        let mut m = config.clone().with_init_std(0.2).with_output_init_std(0.2).init::<B>(device);
        m.o_norm.weight =
            m.o_norm.weight.map(|w| w.random_like(Distribution::Uniform(0.5, 1.5)).require_grad());
        for conv in [&mut m.q_conv, &mut m.k_conv, &mut m.v_conv] {
            conv.weight =
                conv.weight.clone().map(|w| w.random_like(Distribution::Uniform(-0.5, 0.5)).require_grad());
        }
        m
    }

    fn step_through(m: &GatedDeltaNet<B>, x: Tensor<B, 3>, state: &mut DeltaNetState<B>) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let ys: Vec<_> = (0..seq)
            .map(|t| {
                m.step(x.clone().slice_dim(1, t..t + 1).reshape([batch, hidden]), state).unsqueeze_dim(1)
            })
            .collect();
        Tensor::cat(ys, 1)
    }

    /// Relative error (max-abs difference over max-abs reference) below 1e-5 between the
    /// chunked forward, the decoding steps, the per-token burn loop and the f64 reference, for
    /// sequences that fill whole chunks, end in a partial chunk, or are shorter than one chunk;
    /// once with the initial decay and once with a decay a hundred times stronger.
    #[test]
    fn chunked_forward_equals_decoding_steps_and_the_naive_reference() {
        let device = Default::default();
        B::seed(&device, 20);
        let (batch, hidden) = (2, 12);
        let config = GatedDeltaNetConfig::new(hidden, 2, 8).with_chunk_size(8);
        let mild = mixer::<B>(&config, &device);
        let mut strong = mixer::<B>(&config, &device);
        strong.a_log = strong.a_log.map(|a| a + 100f64.ln());
        for (name, m) in [("initial decay", &mild), ("strong decay", &strong)] {
            let w = weights(m, hidden);
            for seq in [16, 13, 5] {
                let x = Tensor::<B, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);
                let want = reference::forward(&w, &values(x.clone()), batch, seq);
                let chunked = values(m.forward(x.clone()));
                let stepped = values(step_through(m, x.clone(), &mut m.zero_state(batch, &device)));
                let per_token = values(m.forward_scan(x, Scan::PerToken));
                for (form, got) in [("chunked", &chunked), ("stepped", &stepped), ("per-token", &per_token)] {
                    let err = relative_error(got, &want);
                    assert!(err < 1e-5, "{name}, seq {seq}: {form} form off the reference by {err}");
                }
            }
        }
    }

    #[test]
    fn prefill_then_steps_equal_the_full_forward() {
        let device = Default::default();
        B::seed(&device, 21);
        let (batch, hidden, seq, prefill) = (2, 16, 19, 11);
        let m = mixer::<B>(&GatedDeltaNetConfig::new(hidden, 4, 4).with_chunk_size(4), &device);
        let x = Tensor::<B, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);
        let full = m.forward(x.clone());
        let mut state = m.zero_state(batch, &device);
        let head = m.forward_with_state(x.clone().slice_dim(1, 0..prefill), &mut state);
        let tail = step_through(&m, x.slice_dim(1, prefill..seq), &mut state);
        let err = relative_error(&values(Tensor::cat(vec![head, tail], 1)), &values(full));
        assert!(err < 1e-5, "prefill + steps off the full forward by {err}");
    }

    /// Gradients of the chunked form (f32, autodiff) against central differences of the f64
    /// reference (step 1e-4, so their own error is far below f32 precision), for entries of
    /// the input and of every kind of parameter, the decay and gate ones included.
    /// Tolerance: 1e-5 + 1e-4·|derivative|.
    #[test]
    fn chunked_gradients_match_finite_differences_of_the_reference() {
        type A = CpuAutodiff;
        let device = Default::default();
        <A as Backend>::seed(&device, 22);
        let (batch, seq, hidden) = (2, 7, 8);
        let m = mixer::<A>(
            &GatedDeltaNetConfig::new(hidden, 2, 4).with_chunk_size(4).with_conv_kernel(3),
            &device,
        );
        let x = Tensor::<A, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let r = Tensor::<A, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);
        let grads = (m.forward(x.clone()) * r.clone()).sum().backward();
        let grad =
            |t: Option<Tensor<<A as AutodiffBackend>::InnerBackend, 2>>| values(t.expect("has a gradient"));
        let grad1 =
            |t: Option<Tensor<<A as AutodiffBackend>::InnerBackend, 1>>| values(t.expect("has a gradient"));
        let got_x = values(x.grad(&grads).expect("x has a gradient"));
        let got_k = grad(m.k_proj.weight.grad(&grads));
        let got_q_conv = grad(m.q_conv.weight.grad(&grads));
        let got_b = grad(m.b_proj.weight.grad(&grads));
        let got_a = grad(m.a_proj.weight.grad(&grads));
        let got_a_log = grad1(m.a_log.grad(&grads));
        let got_dt = grad1(m.dt_bias.grad(&grads));
        let got_g = grad(m.g_proj.weight.grad(&grads));
        let got_norm = grad1(m.o_norm.weight.grad(&grads));

        let base = weights(&m, hidden);
        let xs = values(x);
        let rs = values(r);
        let loss = |w: &Weights, x: &[f64]| -> f64 {
            reference::forward(w, x, batch, seq).iter().zip(&rs).map(|(y, r)| y * r).sum()
        };
        let h = 1e-4;
        let check = |name: &str, got: f64, plus: f64, minus: f64| {
            let want = (plus - minus) / (2.0 * h);
            assert!(
                (got - want).abs() <= 1e-5 + 1e-4 * want.abs(),
                "d loss / d {name}: autodiff {got}, differences {want}"
            );
        };
        for i in [0, 17, 60, 111] {
            let (mut p, mut n) = (xs.clone(), xs.clone());
            p[i] += h;
            n[i] -= h;
            check(&format!("x[{i}]"), got_x[i], loss(&base, &p), loss(&base, &n));
        }
        fn gate(w: &mut Weights) -> &mut GateWeights {
            w.gate.as_mut().expect("gated weights")
        }
        type Pick = fn(&mut Weights) -> &mut Vec<f64>;
        let params: [(&str, Pick, &Vec<f64>); 8] = [
            ("k_proj", |w| &mut w.k_proj, &got_k),
            ("q_conv", |w| &mut w.q_conv, &got_q_conv),
            ("b_proj", |w| &mut w.b_proj, &got_b),
            ("a_proj", |w| &mut gate(w).a_proj, &got_a),
            ("a_log", |w| &mut gate(w).a_log, &got_a_log),
            ("dt_bias", |w| &mut gate(w).dt_bias, &got_dt),
            ("g_proj", |w| &mut gate(w).g_proj, &got_g),
            ("o_norm", |w| &mut w.o_norm, &got_norm),
        ];
        for (name, pick, got) in params {
            let mut entries = vec![0, got.len() / 2, got.len() - 1];
            entries.dedup();
            for i in entries {
                let (mut p, mut n) = (base.clone(), base.clone());
                pick(&mut p)[i] += h;
                pick(&mut n)[i] -= h;
                check(&format!("{name}[{i}]"), got[i], loss(&p, &xs), loss(&n, &xs));
            }
        }
    }

    #[test]
    fn parameter_count_equals_the_search_space_closed_form() {
        let device = Default::default();
        for (hidden, num_heads, head_dim, conv_kernel) in [(64, 4, 16, 4), (48, 2, 32, 3), (32, 8, 8, 2)] {
            let spec = DeltaNetSpec { num_heads, head_dim, conv_kernel };
            let m = GatedDeltaNetConfig::from_spec(&spec, hidden as usize).init::<B>(&device);
            let want = LayerSpec::GatedDeltaNet(spec).params(hidden) - u64::from(hidden);
            assert_eq!(
                m.num_params() as u64,
                want,
                "hidden {hidden}, {num_heads}×{head_dim}, kernel {conv_kernel}"
            );
        }
    }

    #[test]
    fn initial_decay_rates_a_are_uniform_in_0_to_16_as_in_fla() {
        let device = Default::default();
        let m = GatedDeltaNetConfig::new(8, 4096, 2).init::<B>(&device);
        let a = values(m.a_log.val().exp());
        assert!(a.iter().all(|&a| a > 0.0 && a <= 16.0 + 1e-4), "A outside (0, 16]");
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((mean - 8.0).abs() < 0.3, "mean A {mean}, uniform in (0, 16] has 8");
        // U(1, 16) would never go below 1; U(0, 16) does for a sixteenth of the heads.
        let below_one = a.iter().filter(|&&a| a < 1.0).count() as f64 / a.len() as f64;
        assert!((below_one - 1.0 / 16.0).abs() < 0.015, "{below_one} of the heads start below 1");
    }

    #[test]
    fn initial_decay_rates_lie_in_their_configured_ranges() {
        let device = Default::default();
        let config = GatedDeltaNetConfig::new(8, 64, 2);
        let m = config.init::<B>(&device);
        for a in values(m.a_log.val().exp()) {
            assert!((config.a_init_min - 1e-5..=config.a_init_max + 1e-4).contains(&a), "A = {a}");
        }
        for dt in values(softplus(m.dt_bias.val())) {
            assert!(
                (config.dt_min * 0.999..=config.dt_max * 1.001).contains(&dt),
                "softplus(dt_bias) = {dt}"
            );
        }
    }
}
