//! The Mamba2 token mixer (state-space duality, SSD), as in the Nemotron-Flash reference.
//!
//! For an input `u ∈ R^{hidden}` per token:
//!
//! ```text
//! [z, x, B, C, dt] = in_proj(u)                       widths d_inner, d_inner, G·N, G·N, heads
//! [x, B, C]        = silu(conv([x, B, C]))            depthwise causal conv with bias
//! dt               = softplus(dt + dt_bias)           per head
//! A                = -exp(A_log)                      per head
//! H_t              = exp(dt_t·A) · H_{t-1} + dt_t · x_t ⊗ B_t      per head, H ∈ R^{P×N}
//! y_t              = H_t · C_t + D · x_t
//! out              = out_proj(rmsnorm(y · silu(z)) · w)
//! ```
//!
//! with `P = head_dim`, `N = state_size` and `B`, `C` shared by the heads of each of `G` groups;
//! the gated RMSNorm normalises each group's `d_inner / G` channels on their own.
//!
//! [`Mamba2::forward`] is the training form: everything but the scan runs over the whole
//! sequence at once, and the scan is [`chunked_scan`], which turns the recurrence into batched
//! matmuls over chunks of `chunk_size` tokens (see [`super::ssd`] for why and how). A per-token
//! loop would be correct too, but its many tiny ops and a backward pass that grows with the
//! square of the length make it slower to train: 2.7-2.9x at d_model 128, seq 256, batch 8 on
//! the CPU backend (the ignored `training_throughput_chunked_vs_per_token_loop` test), 5x at
//! seq 1024, batch 2.
//!
//! [`Mamba2::step`] advances a caller-owned [`Mamba2State`] by one token for decoding, and
//! [`Mamba2::forward_with_state`] runs the chunked form from a state and returns the next one,
//! so a prompt can be prefilled in one call and then decoded token by token.

use crate::kernels::{Kernels, contiguous};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::silu;
use search_space::ops::Mamba2Spec;

use super::conv::{ConvState, ShortConv, ShortConvConfig};
use super::delta_rule::Scan;
use super::init::linear;
use super::norm::{GatedRmsNorm, GatedRmsNormConfig};
use super::ssd::{chunked_scan, scan_step, sequential_scan};

/// Configuration of a [`Mamba2`] mixer.
#[derive(Config, Debug)]
pub struct Mamba2Config {
    /// Model width: the mixer's input and output.
    pub hidden: usize,
    /// Heads; each has its own decay rate `A`, step size `dt` and skip weight `D`.
    pub num_heads: usize,
    /// Channels per head `P`; the inner width is `num_heads · head_dim`.
    pub head_dim: usize,
    /// State size `N` of `B` and `C`.
    pub state_size: usize,
    /// Groups of heads that share one `B` and `C` (1 in Nemotron-Flash).
    #[config(default = 1)]
    pub groups: usize,
    /// Taps of the causal convolution over `[x, B, C]`.
    #[config(default = 4)]
    pub conv_kernel: usize,
    /// Tokens per chunk of the training scan. Any sequence length works; the last chunk is
    /// padded.
    #[config(default = 64)]
    pub chunk_size: usize,
    /// Lower end of the log-uniform range the initial step sizes are drawn from.
    #[config(default = 1e-3)]
    pub dt_min: f64,
    /// Upper end of the log-uniform range the initial step sizes are drawn from.
    #[config(default = 1e-1)]
    pub dt_max: f64,
    /// Initial step sizes below this are raised to it.
    #[config(default = 1e-4)]
    pub dt_init_floor: f64,
    /// Epsilon of the gated RMSNorm.
    #[config(default = 1e-5)]
    pub norm_epsilon: f64,
    /// Deviation of the normal initial weights of `in_proj`.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Deviation of the normal initial weights of `out_proj`, which writes to the
    /// residual stream; the model scales it by depth ([`super::init::residual_output_std`]).
    #[config(default = 0.02)]
    pub output_init_std: f64,
}

/// The Mamba2 token mixer (see the module doc for the equations).
#[derive(Module, Debug)]
pub struct Mamba2<B: Backend> {
    /// `hidden → [z, x, B, C, dt]`, no bias.
    pub in_proj: Linear<B>,
    /// Depthwise causal convolution over `[x, B, C]`, with bias.
    pub conv: ShortConv<B>,
    /// Added to the projected `dt` before the softplus, `[heads]`.
    pub dt_bias: Param<Tensor<B, 1>>,
    /// `A = -exp(a_log)`, `[heads]`: stored as a log so that `A` stays negative (the state
    /// decays) whatever the optimiser does.
    pub a_log: Param<Tensor<B, 1>>,
    /// Skip weight `D` of `D · x`, `[heads]`.
    pub d: Param<Tensor<B, 1>>,
    /// Gated RMSNorm over `y · silu(z)`, weight `[d_inner]`.
    pub norm: GatedRmsNorm<B>,
    /// `d_inner → hidden`, no bias.
    pub out_proj: Linear<B>,
    pub num_heads: usize,
    pub head_dim: usize,
    pub state_size: usize,
    pub groups: usize,
    pub chunk_size: usize,
}

/// What [`Mamba2`] carries from one token to the next while decoding.
#[derive(Clone, Debug)]
pub struct Mamba2State<B: Backend> {
    /// The last `kernel - 1` inputs of the convolution over `[x, B, C]`.
    pub conv: ConvState<B>,
    /// The scan state `H`, `[batch, heads, head_dim, state_size]`.
    pub ssm: Tensor<B, 4>,
}

impl Mamba2Config {
    /// The mixer of a `search-space` layer at model width `hidden`.
    ///
    /// # Panics
    /// If the spec's `d_inner` is not `num_heads · head_dim`.
    pub fn from_spec(spec: &Mamba2Spec, hidden: usize) -> Self {
        assert_eq!(
            spec.d_inner,
            spec.num_heads * spec.head_dim,
            "Mamba2 spec: d_inner must equal num_heads · head_dim"
        );
        Self::new(hidden, spec.num_heads as usize, spec.head_dim as usize, spec.state_size as usize)
            .with_groups(spec.groups as usize)
            .with_conv_kernel(spec.conv_kernel as usize)
    }

    /// Inner width `num_heads · head_dim`.
    pub fn d_inner(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Initialises as the reference does: projections and conv normal as in [`super::init`]
    /// (conv bias 0), `A_log = log(1..=heads)`, `dt_bias` the inverse softplus of step sizes
    /// drawn log-uniformly in `[dt_min, dt_max]`, `D = 1`, norm weight 1.
    ///
    /// # Panics
    /// If a width is zero or `num_heads` is not a multiple of `groups`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mamba2<B> {
        let (heads, groups) = (self.num_heads, self.groups);
        assert!(
            self.hidden > 0 && heads > 0 && self.head_dim > 0 && self.state_size > 0,
            "Mamba2: hidden, num_heads, head_dim and state_size must be positive"
        );
        assert!(
            groups > 0 && heads % groups == 0,
            "Mamba2: num_heads ({heads}) must be a multiple of groups ({groups})"
        );
        assert!(
            self.conv_kernel > 0 && self.chunk_size > 0,
            "Mamba2: conv_kernel and chunk_size must be positive"
        );
        let d_inner = self.d_inner();
        let bc = groups * self.state_size;

        let log_dt = Tensor::<B, 1>::random(
            [heads],
            Distribution::Uniform(self.dt_min.ln(), self.dt_max.ln()),
            device,
        );
        let dt = log_dt.exp().clamp_min(self.dt_init_floor);
        // softplus(y) = dt  ⇔  y = dt + log(1 - exp(-dt)).
        let dt_bias = dt.clone() + dt.neg().exp().neg().add_scalar(1.0).log();
        let a_log = Tensor::<B, 1, Int>::arange(1..heads as i64 + 1, device).float().log();

        Mamba2 {
            in_proj: linear(self.hidden, 2 * d_inner + 2 * bc + heads, self.init_std, device),
            conv: ShortConvConfig::new(d_inner + 2 * bc)
                .with_kernel(self.conv_kernel)
                .with_bias(true)
                .init(device),
            dt_bias: Param::from_tensor(dt_bias),
            a_log: Param::from_tensor(a_log),
            d: Param::from_tensor(Tensor::ones([heads], device)),
            norm: GatedRmsNormConfig::new(d_inner).with_epsilon(self.norm_epsilon).init(device),
            out_proj: linear(d_inner, self.hidden, self.output_init_std, device),
            num_heads: heads,
            head_dim: self.head_dim,
            state_size: self.state_size,
            groups,
            chunk_size: self.chunk_size,
        }
    }
}

/// `log(1 + exp(v))` without overflow for large `v`: `max(v, 0) + log(1 + exp(-|v|))`.
fn softplus<B: Backend, const D: usize>(v: Tensor<B, D>) -> Tensor<B, D> {
    v.clone().clamp_min(0.0) + v.abs().neg().exp().log1p()
}

impl<B: Kernels> Mamba2<B> {
    fn d_inner(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of `B` (and of `C`): `groups · state_size`.
    fn bc_width(&self) -> usize {
        self.groups * self.state_size
    }

    /// Splits the input projection into `z`, `[x, B, C]` and the raw `dt`, each copied out
    /// contiguous (see [`contiguous`]: every part is used by several elementwise operations).
    fn split_projection<const D: usize>(&self, proj: Tensor<B, D>) -> [Tensor<B, D>; 3] {
        let (d_inner, conv_width) = (self.d_inner(), self.d_inner() + 2 * self.bc_width());
        let z = proj.clone().narrow(D - 1, 0, d_inner);
        let xbc = proj.clone().narrow(D - 1, d_inner, conv_width);
        let dt = proj.narrow(D - 1, d_inner + conv_width, self.num_heads);
        [contiguous(z), contiguous(xbc), contiguous(dt)]
    }

    /// Splits the convolved `[x, B, C]`, each part copied out contiguous.
    fn split_xbc<const D: usize>(&self, xbc: Tensor<B, D>) -> [Tensor<B, D>; 3] {
        let (d_inner, bc) = (self.d_inner(), self.bc_width());
        let x = xbc.clone().narrow(D - 1, 0, d_inner);
        let b = xbc.clone().narrow(D - 1, d_inner, bc);
        let c = xbc.narrow(D - 1, d_inner + bc, bc);
        [contiguous(x), contiguous(b), contiguous(c)]
    }

    /// `softplus(dt + dt_bias)`, per head on the last dimension.
    fn step_size<const D: usize>(&self, dt: Tensor<B, D>) -> Tensor<B, D> {
        let mut shape = [1; D];
        shape[D - 1] = self.num_heads;
        softplus(dt + self.dt_bias.val().reshape(shape))
    }

    /// `A = -exp(A_log)`, `[heads]`.
    fn decay_rate(&self) -> Tensor<B, 1> {
        self.a_log.val().exp().neg()
    }

    /// `D` repeated over each head's channels, `[d_inner]`.
    fn skip_weight(&self) -> Tensor<B, 1> {
        let (h, p) = (self.num_heads, self.head_dim);
        self.d.val().reshape([h, 1]).expand([h, p]).reshape([h * p])
    }

    /// `out_proj(rmsnorm(y · silu(z)) · w)`, normalising each group's channels separately.
    fn gate_and_project<const D: usize>(&self, y: Tensor<B, D>, z: Tensor<B, D>) -> Tensor<B, D> {
        self.out_proj.forward(self.norm.forward_groups(y, z, self.groups))
    }

    /// Convolves a whole sequence of `[x, B, C]` after `window` (zeros when `None`), with the
    /// SiLU after it, and returns the output with the window for what follows.
    fn conv_sequence(&self, xbc: Tensor<B, 3>, window: Option<Tensor<B, 3>>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [batch, seq, channels] = xbc.dims();
        let keep = self.conv.kernel - 1;
        match window {
            // The training path: no window to prepend, so the conv sees the sequence alone.
            None => {
                let y = self.conv.forward_silu(xbc.clone());
                let window = if seq >= keep {
                    xbc.slice([0..batch, seq - keep..seq, 0..channels])
                } else {
                    Tensor::cat(vec![Tensor::zeros([batch, keep - seq, channels], &xbc.device()), xbc], 1)
                };
                (y, window)
            }
            // The conv pads with zeros in front of what it is given; with the window in front,
            // the outputs for the new tokens only ever look back into real inputs.
            Some(window) => {
                let full = Tensor::cat(vec![window, xbc], 1);
                let y = self.conv.forward_silu(full.clone()).slice([0..batch, keep..keep + seq, 0..channels]);
                (y, full.slice([0..batch, seq..seq + keep, 0..channels]))
            }
        }
    }

    /// The whole mixer over a sequence, from `state` (the sequence start when `None`).
    fn mix(
        &self,
        x: Tensor<B, 3>,
        state: Option<Mamba2State<B>>,
        scan: Scan,
    ) -> (Tensor<B, 3>, Mamba2State<B>) {
        let [batch, seq, _] = x.dims();
        let (h, p, g, n) = (self.num_heads, self.head_dim, self.groups, self.state_size);
        let d_inner = self.d_inner();
        let (conv_window, ssm) = match state {
            Some(s) => (Some(s.conv.window), Some(s.ssm)),
            None => (None, None),
        };

        let [z, xbc, dt] = self.split_projection(self.in_proj.forward(x));
        let (xbc, window) = self.conv_sequence(xbc, conv_window);
        let [xs, b, c] = self.split_xbc(xbc);
        let dt = self.step_size(dt);
        let heads_x = xs.clone().reshape([batch, seq, h, p]);
        let (b, c) = (b.reshape([batch, seq, g, n]), c.reshape([batch, seq, g, n]));
        let a = self.decay_rate();
        let (y, ssm) = match scan {
            Scan::Chunked(chunk) => chunked_scan(heads_x, dt, a, b, c, ssm, chunk),
            Scan::PerToken => sequential_scan(heads_x, dt, a, b, c, ssm),
        };
        let y = y.reshape([batch, seq, d_inner]) + xs * self.skip_weight().reshape([1, 1, d_inner]);
        (self.gate_and_project(y, z), Mamba2State { conv: ConvState { window }, ssm })
    }

    /// Mixes a whole sequence from its start: the training form, chunked.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mix(x, None, Scan::Chunked(self.chunk_size)).0
    }

    /// Mixes a sequence that continues from `state` and returns the state after its last token:
    /// prefilling with this and then calling [`Self::step`] gives what [`Self::forward`] gives
    /// on the whole sequence.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward_with_state(
        &self,
        x: Tensor<B, 3>,
        state: Mamba2State<B>,
    ) -> (Tensor<B, 3>, Mamba2State<B>) {
        self.mix(x, Some(state), Scan::Chunked(self.chunk_size))
    }

    /// The state at the start of a sequence: all zeros.
    pub fn zero_state(&self, batch: usize, device: &B::Device) -> Mamba2State<B> {
        Mamba2State {
            conv: self.conv.zero_state(batch, device),
            ssm: Tensor::zeros([batch, self.num_heads, self.head_dim, self.state_size], device),
        }
    }

    /// Mixes one new token and advances `state`.
    ///
    /// # Shapes
    /// - `x`: `[batch, hidden]` → `[batch, hidden]`
    pub fn step(&self, x: Tensor<B, 2>, state: &mut Mamba2State<B>) -> Tensor<B, 2> {
        let [batch, _] = x.dims();
        let (h, p, g, n) = (self.num_heads, self.head_dim, self.groups, self.state_size);
        let d_inner = self.d_inner();
        let [z, xbc, dt] = self.split_projection(self.in_proj.forward(x));
        let [xs, b, c] = self.split_xbc(silu(self.conv.step(xbc, &mut state.conv)));
        let (y, ssm) = scan_step(
            state.ssm.clone(),
            xs.clone().reshape([batch, h, p]),
            self.step_size(dt),
            self.decay_rate(),
            b.reshape([batch, g, n]),
            c.reshape([batch, g, n]),
        );
        state.ssm = ssm;
        let y = y.reshape([batch, d_inner]) + xs * self.skip_weight().reshape([1, d_inner]);
        self.gate_and_project(y, z)
    }

    /// [`forward`](Self::forward) with the scan run in the given form; the per-token form is
    /// there to check and to measure the chunked one against.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward_scan(&self, x: Tensor<B, 3>, scan: Scan) -> Tensor<B, 3> {
        self.mix(x, None, scan).0
    }
}

#[cfg(test)]
mod tests;
