//! DeltaNet, the linear-attention token mixer that writes to its memory with the delta rule.
//!
//! For an input `x_t` (width `hidden`) and `H` heads of size `d`:
//!
//! ```text
//! q_t, k_t, v_t = silu(conv(W_q x)), silu(conv(W_k x)), silu(conv(W_v x))   short causal convs
//! q_t, k_t      = per head, q / ‖q‖ and k / ‖k‖
//! β_t           = sigmoid(W_b x_t)                                          one per head
//! u_t = β_t (v_t − S_{t−1}ᵀ k_t),   S_t = S_{t−1} + k_t u_tᵀ,   o_t = S_tᵀ q_t  per head, S_0 = 0
//! y_t = W_o · concat_heads(rmsnorm(o_t) · w)
//! ```
//!
//! as in the Nemotron-Flash reference module: projections and convs without bias, one RMSNorm
//! weight of size `d` shared by the heads. The recurrence itself lives in
//! [`delta_rule`](super::delta_rule), whose documentation explains why training runs it in
//! chunks (the WY form) rather than token by token; [`DeltaNet::step`] runs it one token at a
//! time for decoding.

use crate::kernels::Kernels;
use burn::module::Module;
use burn::nn::{Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, silu};
use search_space::ops::DeltaNetSpec;

use super::conv::{ConvState, ShortConv, ShortConvConfig};
use super::delta_rule::{
    L2_NORM_EPSILON, Scan, conv_branch, delta_rule, delta_rule_step, l2_normalize, token_major,
};
use super::init::linear;

/// Configuration of a [`DeltaNet`].
#[derive(Config, Debug)]
pub struct DeltaNetConfig {
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
    /// `eps` of the per-head output RMSNorm.
    #[config(default = 1e-5)]
    pub norm_epsilon: f64,
    /// Deviation of the normal initial weights of the projections that read the input.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Deviation of the normal initial weights of the output projection, which writes to the
    /// residual stream; the model scales it by depth ([`super::init::residual_output_std`]).
    #[config(default = 0.02)]
    pub output_init_std: f64,
}

/// The DeltaNet token mixer.
#[derive(Module, Debug)]
pub struct DeltaNet<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub q_conv: ShortConv<B>,
    pub k_conv: ShortConv<B>,
    pub v_conv: ShortConv<B>,
    /// Write strength β, one per head.
    pub b_proj: Linear<B>,
    /// Per-head output norm; its weight (size `head_dim`) is shared by the heads.
    pub o_norm: RmsNorm<B>,
    pub o_proj: Linear<B>,
    pub num_heads: usize,
    pub head_dim: usize,
    pub chunk_size: usize,
}

/// What a DeltaNet or Gated DeltaNet layer keeps between decoding steps; owned by the caller.
#[derive(Clone, Debug)]
pub struct DeltaNetState<B: Backend> {
    pub conv_q: ConvState<B>,
    pub conv_k: ConvState<B>,
    pub conv_v: ConvState<B>,
    /// The delta-rule memory, `[batch, heads, head_dim, head_dim]`.
    pub s: Tensor<B, 4>,
}

/// The input side DeltaNet and Gated DeltaNet share: q, k and v projections each followed by a
/// short causal conv and SiLU, L2-normalised q and k, and the write strength β = sigmoid(W_b x).
/// A borrowed view of a mixer's parameters, so both mixers keep their own (record) layout.
pub(crate) struct DeltaInputs<'a, B: Backend> {
    pub q_proj: &'a Linear<B>,
    pub k_proj: &'a Linear<B>,
    pub v_proj: &'a Linear<B>,
    pub q_conv: &'a ShortConv<B>,
    pub k_conv: &'a ShortConv<B>,
    pub v_conv: &'a ShortConv<B>,
    pub b_proj: &'a Linear<B>,
    pub num_heads: usize,
    pub head_dim: usize,
}

impl<B: Kernels> DeltaInputs<'_, B> {
    /// q, k, v and β of a whole sequence, heads first (`[batch, heads, seq, d]`, β
    /// `[batch, heads, seq]`), advancing the conv windows of `state` when given.
    #[allow(clippy::type_complexity, reason = "the four inputs of the delta rule, named at the call")]
    pub fn sequence(
        &self,
        x: Tensor<B, 3>,
        mut state: Option<&mut DeltaNetState<B>>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 3>) {
        let (h, d) = (self.num_heads, self.head_dim);
        let q = conv_branch(self.q_proj, self.q_conv, x.clone(), state.as_mut().map(|s| &mut s.conv_q), h, d);
        let k = conv_branch(self.k_proj, self.k_conv, x.clone(), state.as_mut().map(|s| &mut s.conv_k), h, d);
        let v = conv_branch(self.v_proj, self.v_conv, x.clone(), state.as_mut().map(|s| &mut s.conv_v), h, d);
        // Normalised while still token-major (contiguous); the kernel wants heads first.
        let q = l2_normalize(q, L2_NORM_EPSILON).swap_dims(1, 2);
        let k = l2_normalize(k, L2_NORM_EPSILON).swap_dims(1, 2);
        let beta = sigmoid(self.b_proj.forward(x)).swap_dims(1, 2);
        (q, k, v.swap_dims(1, 2), beta)
    }

    /// q, k, v (`[batch, heads, d]`) and β (`[batch, heads]`) of one token, advancing the conv
    /// windows.
    #[allow(clippy::type_complexity, reason = "the four inputs of the delta rule, named at the call")]
    pub fn token(
        &self,
        x: Tensor<B, 2>,
        state: &mut DeltaNetState<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 2>) {
        let [batch, _] = x.dims();
        let (h, d) = (self.num_heads, self.head_dim);
        let branch = |proj: &Linear<B>, conv: &ShortConv<B>, window: &mut ConvState<B>| {
            silu(conv.step(proj.forward(x.clone()), window)).reshape([batch, h, d])
        };
        let q = l2_normalize(branch(self.q_proj, self.q_conv, &mut state.conv_q), L2_NORM_EPSILON);
        let k = l2_normalize(branch(self.k_proj, self.k_conv, &mut state.conv_k), L2_NORM_EPSILON);
        let v = branch(self.v_proj, self.v_conv, &mut state.conv_v);
        (q, k, v, sigmoid(self.b_proj.forward(x)))
    }

    /// An empty memory: the state before the first token.
    pub fn zero_state(&self, batch: usize, device: &B::Device) -> DeltaNetState<B> {
        DeltaNetState {
            conv_q: self.q_conv.zero_state(batch, device),
            conv_k: self.k_conv.zero_state(batch, device),
            conv_v: self.v_conv.zero_state(batch, device),
            s: Tensor::zeros([batch, self.num_heads, self.head_dim, self.head_dim], device),
        }
    }
}

impl DeltaNetConfig {
    /// The mixer a `search-space` layer spec describes, at model width `hidden`.
    pub fn from_spec(spec: &DeltaNetSpec, hidden: usize) -> Self {
        Self::new(hidden, spec.num_heads as usize, spec.head_dim as usize)
            .with_conv_kernel(spec.conv_kernel as usize)
    }

    /// Builds the mixer, projections and convs normal as in [`super::init`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> DeltaNet<B> {
        assert!(self.chunk_size > 0, "chunk_size must be positive");
        let width = self.num_heads * self.head_dim;
        let reads = |d_in, d_out| linear(d_in, d_out, self.init_std, device);
        let conv = || ShortConvConfig::new(width).with_kernel(self.conv_kernel).init(device);
        DeltaNet {
            q_proj: reads(self.hidden, width),
            k_proj: reads(self.hidden, width),
            v_proj: reads(self.hidden, width),
            q_conv: conv(),
            k_conv: conv(),
            v_conv: conv(),
            b_proj: reads(self.hidden, self.num_heads),
            o_norm: RmsNormConfig::new(self.head_dim).with_epsilon(self.norm_epsilon).init(device),
            o_proj: linear(width, self.hidden, self.output_init_std, device),
            num_heads: self.num_heads,
            head_dim: self.head_dim,
            chunk_size: self.chunk_size,
        }
    }
}

impl<B: Kernels> DeltaNet<B> {
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
        let (q, k, v, beta) = self.inputs().token(x, state);
        let (o, s) = delta_rule_step(q, k, v, beta, None, state.s.clone());
        state.s = s;
        self.o_proj.forward(self.o_norm.forward(o).reshape([batch, self.num_heads * self.head_dim]))
    }

    fn mix(&self, x: Tensor<B, 3>, mut state: Option<&mut DeltaNetState<B>>, scan: Scan) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let (h, d) = (self.num_heads, self.head_dim);
        let initial = match &state {
            Some(s) => s.s.clone(),
            None => Tensor::zeros([batch, h, d, d], &x.device()),
        };
        let (q, k, v, beta) = self.inputs().sequence(x, state.as_deref_mut());
        let (o, last) = delta_rule(q, k, v, beta, None, initial, scan);
        if let Some(s) = state {
            s.s = last;
        }
        let o = self.o_norm.forward(token_major(o)).reshape([batch, seq, h * d]);
        self.o_proj.forward(o)
    }

    pub(crate) fn inputs(&self) -> DeltaInputs<'_, B> {
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
    use crate::model::delta_rule::reference::{self, Weights, relative_error, values};
    use burn::tensor::Distribution;
    use burn::tensor::backend::AutodiffBackend;
    use search_space::ops::LayerSpec;

    type B = Cpu;

    fn weights<B: Backend>(m: &DeltaNet<B>, hidden: usize) -> Weights {
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
            o_norm: values(m.o_norm.gamma.val()),
            o_proj: values(m.o_proj.weight.val()),
            norm_epsilon: m.o_norm.epsilon,
            gate: None,
        }
    }

    /// A mixer whose output norm weight is not all ones, so that a mix-up of it shows, and whose
    /// projections and convs are drawn wider than the model's initialisation (0.02), so that
    /// at these tiny widths every nonlinearity sees inputs of order one.
    fn mixer<B: Kernels>(config: &DeltaNetConfig, device: &B::Device) -> DeltaNet<B> {
        let mut m = config.clone().with_init_std(0.2).with_output_init_std(0.2).init::<B>(device);
        m.o_norm.gamma =
            m.o_norm.gamma.map(|w| w.random_like(Distribution::Uniform(0.5, 1.5)).require_grad());
        for conv in [&mut m.q_conv, &mut m.k_conv, &mut m.v_conv] {
            conv.weight =
                conv.weight.clone().map(|w| w.random_like(Distribution::Uniform(-0.5, 0.5)).require_grad());
        }
        m
    }

    fn step_through(m: &DeltaNet<B>, x: Tensor<B, 3>, state: &mut DeltaNetState<B>) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let ys: Vec<_> = (0..seq)
            .map(|t| {
                m.step(x.clone().slice_dim(1, t..t + 1).reshape([batch, hidden]), state).unsqueeze_dim(1)
            })
            .collect();
        Tensor::cat(ys, 1)
    }

    /// Relative error (max-abs difference over max-abs reference) below 1e-5 (measured: at most
    /// 5e-7) between the chunked forward, the decoding steps, the per-token burn loop and the
    /// f64 reference, for sequences that fill whole chunks, end in a partial chunk, or are
    /// shorter than one chunk.
    #[test]
    fn chunked_forward_equals_decoding_steps_and_the_naive_reference() {
        let device = Default::default();
        B::seed(&device, 10);
        let (batch, hidden) = (2, 12);
        // heads × head_dim need not equal hidden.
        let config = DeltaNetConfig::new(hidden, 2, 8).with_chunk_size(8);
        let m = mixer::<B>(&config, &device);
        let w = weights(&m, hidden);
        for seq in [16, 13, 5] {
            let x = Tensor::<B, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);
            let want = reference::forward(&w, &values(x.clone()), batch, seq);
            let chunked = values(m.forward(x.clone()));
            let stepped = values(step_through(&m, x.clone(), &mut m.zero_state(batch, &device)));
            let per_token = values(m.forward_scan(x, Scan::PerToken));
            for (name, got) in [("chunked", &chunked), ("stepped", &stepped), ("per-token", &per_token)] {
                let err = relative_error(got, &want);
                assert!(err < 1e-5, "seq {seq}: {name} form off the reference by {err}");
            }
        }
    }

    #[test]
    fn prefill_then_steps_equal_the_full_forward() {
        let device = Default::default();
        B::seed(&device, 11);
        let (batch, hidden, seq, prefill) = (2, 16, 19, 11);
        let m = mixer::<B>(&DeltaNetConfig::new(hidden, 4, 4).with_chunk_size(4), &device);
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
    /// the input and of every kind of parameter. Tolerance: 1e-5 + 1e-4·|derivative| (measured: at most 2e-6).
    #[test]
    fn chunked_gradients_match_finite_differences_of_the_reference() {
        type A = CpuAutodiff;
        let device = Default::default();
        <A as Backend>::seed(&device, 12);
        let (batch, seq, hidden) = (2, 7, 8);
        let m =
            mixer::<A>(&DeltaNetConfig::new(hidden, 2, 4).with_chunk_size(4).with_conv_kernel(3), &device);
        let x = Tensor::<A, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let r = Tensor::<A, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);
        let grads = (m.forward(x.clone()) * r.clone()).sum().backward();
        let grad =
            |t: Option<Tensor<<A as AutodiffBackend>::InnerBackend, 2>>| values(t.expect("has a gradient"));
        let grad1 =
            |t: Option<Tensor<<A as AutodiffBackend>::InnerBackend, 1>>| values(t.expect("has a gradient"));
        let got_x = values(x.grad(&grads).expect("x has a gradient"));
        let got_q = grad(m.q_proj.weight.grad(&grads));
        let got_k_conv = grad(m.k_conv.weight.grad(&grads));
        let got_v = grad(m.v_proj.weight.grad(&grads));
        let got_b = grad(m.b_proj.weight.grad(&grads));
        let got_norm = grad1(m.o_norm.gamma.grad(&grads));
        let got_o = grad(m.o_proj.weight.grad(&grads));

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
        type Pick = fn(&mut Weights) -> &mut Vec<f64>;
        let params: [(&str, Pick, &Vec<f64>); 6] = [
            ("q_proj", |w| &mut w.q_proj, &got_q),
            ("k_conv", |w| &mut w.k_conv, &got_k_conv),
            ("v_proj", |w| &mut w.v_proj, &got_v),
            ("b_proj", |w| &mut w.b_proj, &got_b),
            ("o_norm", |w| &mut w.o_norm, &got_norm),
            ("o_proj", |w| &mut w.o_proj, &got_o),
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
            let m = DeltaNetConfig::from_spec(&spec, hidden as usize).init::<B>(&device);
            let want = LayerSpec::DeltaNet(spec).params(hidden) - u64::from(hidden);
            assert_eq!(
                m.num_params() as u64,
                want,
                "hidden {hidden}, {num_heads}×{head_dim}, kernel {conv_kernel}"
            );
        }
    }
}
