//! The delta-rule recurrence that DeltaNet and Gated DeltaNet share, in a chunked training form
//! and a one-token decoding form, plus the small pieces of their front end.
//!
//! Per head, with a state `S ∈ R^{dk×dv}`, a write strength `β_t ∈ (0, 1)` and (Gated DeltaNet
//! only) a log-decay `g_t ≤ 0`:
//!
//! ```text
//! u_t = β_t (v_t − (e^{g_t} S_{t−1})ᵀ k_t)       the corrected value to write
//! S_t = e^{g_t} S_{t−1} + k_t u_tᵀ
//! o_t = S_tᵀ q_t
//! ```
//!
//! Plain DeltaNet is the case `g_t = 0`.
//!
//! # Why the training form is chunked
//!
//! A per-token loop costs one small operation per token and, under autodiff, a backward whose
//! slicing allocates a full-size gradient per time step, so its cost grows with the square of
//! the length. The chunked form cuts the sequence into chunks of `C` tokens, does everything
//! that does not depend on the carried state as batched matrix products over all chunks at
//! once, and loops only over chunks, with one `dk×dk` by `dk×dv` product per chunk.
//!
//! Within a chunk starting from state `S`, write `G_t = Σ_{j≤t} g_j` (a cumulative sum inside
//! the chunk), `γ_t = e^{G_t}` and `Γ_{tj} = e^{G_t − G_j}` for `j ≤ t`. Unrolling the
//! recurrence gives, for the rows `u_t` of `U`,
//!
//! ```text
//! u_t + β_t Σ_{j<t} Γ_{tj} (k_tᵀ k_j) u_j = β_t v_t − β_t γ_t Sᵀ k_t
//! ```
//!
//! that is `(I + A) U = diag(β) V − diag(βγ) K S` with `A` strictly lower triangular,
//! `A_{tj} = β_t Γ_{tj} k_tᵀ k_j`. With `T = (I + A)^{-1}` (the WY/UT representation):
//! `U = Ũ − W S` where `Ũ = T diag(β) V` and `W = T diag(βγ) K`, both free of `S`. Then
//!
//! ```text
//! O      = (QKᵀ ⊙ Γ ⊙ causal) Ũ + (diag(γ) Q − (QKᵀ ⊙ Γ ⊙ causal) W) S
//! S_next = (γ_C I − K̂ᵀ W) S + K̂ᵀ Ũ,      K̂ = diag(γ_C / γ) K
//! ```
//!
//! so every chunk reduces to an affine map of its starting state; the loop over chunks applies
//! those maps, and the outputs are then one more batched product with the stacked states.
//! `T` is formed by recursive block doubling (see [`invert_unit_lower`]): it is an exact
//! blocked triangular inversion, so it needs no per-row loop and, unlike a Neumann series over
//! the whole chunk, forms powers of `A` only inside its 8×8 diagonal blocks. All decay factors
//! are exponentials of non-positive numbers, so nothing overflows however strong the decay.
//!
//! Sequences that are not a multiple of the (evened-out) chunk are padded at the end with
//! `k = v = q = 0`, `β = 0` and `g = 0`: padded tokens write nothing and decay nothing, so the
//! outputs and the final state are those of the real tokens.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::ops::PadMode;

use super::chunk::{Causal, causal_decay};
use super::contiguous;
use super::conv::{ConvState, ShortConv};
use crate::kernels::Kernels;

/// The `eps` under the square root of the q/k L2 normalisation.
pub const L2_NORM_EPSILON: f64 = 1e-6;

/// How the delta rule runs over a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The chunked WY form with chunks of at most this many tokens: the training form.
    Chunked(usize),
    /// One recurrence step per token: the reference, and a baseline for measurements.
    PerToken,
}

/// Runs the delta rule over a sequence in the chosen form.
///
/// # Shapes
/// - `q`, `k`: `[batch, heads, seq, dk]`; `v`: `[batch, heads, seq, dv]`
/// - `beta`, `log_decay`: `[batch, heads, seq]`
/// - `state`: `[batch, heads, dk, dv]`
/// - returns the outputs `[batch, heads, seq, dv]` and the state after the last token
pub fn delta_rule<B: Kernels>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    beta: Tensor<B, 3>,
    log_decay: Option<Tensor<B, 3>>,
    state: Tensor<B, 4>,
    scan: Scan,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    match scan {
        Scan::Chunked(chunk) => chunked_delta_rule(q, k, v, beta, log_decay, state, chunk),
        Scan::PerToken => recurrent_delta_rule(q, k, v, beta, log_decay, state),
    }
}

/// Decay factors of every chunk, all `exp` of non-positive numbers.
struct ChunkDecay<B: Backend> {
    /// `γ_t = e^{G_t}`, `[z, C, 1]`.
    from_start: Tensor<B, 3>,
    /// `Γ_{tj} = e^{G_t − G_j}` on and below the diagonal, zero above, `[z, C, C]`.
    pairwise: Tensor<B, 3>,
    /// `γ_C / γ_t = e^{G_C − G_t}`, `[z, C, 1]`.
    to_end: Tensor<B, 3>,
    /// `γ_C`, `[z, 1, 1]`.
    whole: Tensor<B, 3>,
}

/// The chunked (WY/UT) form of [`delta_rule`]; see the module documentation for the algebra.
///
/// `chunk` is the longest chunk. The sequence is cut into as many chunks as that needs, evened
/// out (`⌈seq / ⌈seq / chunk⌉⌉` tokens each), so a sequence past a multiple of `chunk` is not
/// padded by most of a chunk, and a sequence shorter than `chunk` is one chunk of its own
/// length; a tail of at most `chunk / 8` tokens past whole chunks runs token by token instead.
///
/// # Shapes
/// As [`delta_rule`].
pub fn chunked_delta_rule<B: Kernels>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    beta: Tensor<B, 3>,
    log_decay: Option<Tensor<B, 3>>,
    initial: Tensor<B, 4>,
    chunk: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    assert!(chunk > 0, "the chunk size must be positive");
    let [batch, heads, seq, dk] = q.dims();
    let dv = v.dims()[3];
    let device = q.device();
    if seq == 0 {
        return (Tensor::zeros([batch, heads, 0, dv], &device), initial);
    }
    // A few tokens past whole chunks (meta tokens make a 256-token batch 260 long) are cheaper
    // run one by one after the chunks than as a sequence of shorter chunks: that measured 20%
    // slower at d_model 256, its chunk matrices padded back to a power of two for inversion.
    let tail = seq % chunk;
    if seq > chunk && tail > 0 && tail <= chunk / 8 {
        let bulk = seq - tail;
        let split = |t: Tensor<B, 4>| (t.clone().slice_dim(2, 0..bulk), t.slice_dim(2, bulk..seq));
        let split3 = |t: Tensor<B, 3>| (t.clone().slice_dim(2, 0..bulk), t.slice_dim(2, bulk..seq));
        let ((q0, q1), (k0, k1), (v0, v1), (b0, b1)) = (split(q), split(k), split(v), split3(beta));
        let (g0, g1) = match log_decay.map(split3) {
            Some((g0, g1)) => (Some(g0), Some(g1)),
            None => (None, None),
        };
        let (o0, s) = chunked_delta_rule(q0, k0, v0, b0, g0, initial, chunk);
        let (o1, s) = recurrent_delta_rule(q1, k1, v1, b1, g1, s);
        return (Tensor::cat(vec![o0, o1], 2), s);
    }
    let n = seq.div_ceil(chunk);
    let c = seq.div_ceil(n);
    let pad = n * c - seq;
    let z = batch * heads * n;

    let pad4 = |t: Tensor<B, 4>| if pad > 0 { t.pad([(0, pad), (0, 0)], PadMode::Constant(0.0)) } else { t };
    let pad3 = |t: Tensor<B, 3>| if pad > 0 { t.pad([(0, pad)], PadMode::Constant(0.0)) } else { t };
    let q = pad4(q).reshape([z, c, dk]);
    let k = pad4(k).reshape([z, c, dk]);
    let v = pad4(v).reshape([z, c, dv]);
    let beta = pad3(beta).reshape([z, c, 1]);

    let decay = log_decay.map(|g| {
        let cum = pad3(g).reshape([z, c]).cumsum(1);
        let pairwise = causal_decay(cum.clone(), Causal::Inclusive);
        let cum = cum.reshape([z, c, 1]);
        let last = cum.clone().slice_dim(1, c - 1..c);
        ChunkDecay {
            from_start: cum.clone().exp(),
            pairwise,
            to_end: (last.clone() - cum).exp(),
            whole: last.exp(),
        }
    });

    let k_t = k.clone().swap_dims(1, 2);
    let a = k.clone().matmul(k_t.clone()) * beta.clone();
    let scores = q.clone().matmul(k_t);
    // The decay matrix is already zero above the diagonal; `A` also drops the diagonal.
    let (a, scores) = match &decay {
        Some(d) => (a * d.pairwise.clone(), scores * d.pairwise.clone()),
        None => (a, Causal::Inclusive.apply(scores)),
    };
    let a = Causal::Strict.apply(a);

    let t = invert_unit_lower(a);
    let k_beta = k.clone() * beta.clone();
    let (k_write, q_read, k_carry) = match &decay {
        Some(d) => (k_beta * d.from_start.clone(), q * d.from_start.clone(), k * d.to_end.clone()),
        None => (k_beta, q, k),
    };
    let u = t.clone().matmul(v * beta);
    let w = t.matmul(k_write);

    // Everything that multiplies the chunk's starting state, and everything that does not.
    let o_local = scores.clone().matmul(u.clone());
    let o_from_state = q_read - scores.matmul(w.clone());
    let k_carry_t = k_carry.swap_dims(1, 2);
    let eye = Tensor::<B, 2>::eye(dk, &device).reshape([1, dk * dk]).repeat_dim(0, z);
    let keep = match decay {
        Some(d) => eye * d.whole.reshape([z, 1]),
        None => eye,
    }
    .reshape([z, dk, dk]);
    let transition = (keep - k_carry_t.clone().matmul(w)).reshape([batch * heads, n, dk, dk]);
    let written = k_carry_t.matmul(u).reshape([batch * heads, n, dk, dv]);

    let mut s = initial.reshape([batch * heads, 1, dk, dv]);
    let mut starts = Vec::with_capacity(n);
    for i in 0..n {
        starts.push(s.clone());
        s = transition.clone().slice_dim(1, i..i + 1).matmul(s) + written.clone().slice_dim(1, i..i + 1);
    }
    let starts = Tensor::cat(starts, 1).reshape([z, dk, dv]);
    let o = (o_local + o_from_state.matmul(starts)).reshape([batch, heads, n * c, dv]);
    let o = if pad > 0 { o.slice_dim(2, 0..seq) } else { o };
    (o, s.reshape([batch, heads, dk, dv]))
}

/// `(I + A)^{-1}` for strictly lower-triangular `A`, by recursive block doubling.
///
/// Start from the inverses of the 8×8 diagonal blocks (see [`invert_small_blocks`]) and double
/// the block size: a block `[[L₁₁, 0], [L₂₁, L₂₂]]` whose halves are already inverted (`T₁₁`,
/// `T₂₂`) has the inverse `[[T₁₁, 0], [−T₂₂ L₂₁ T₁₁, T₂₂]]`. Each level handles every block of
/// every matrix in one batched product, so a chunk of `C` takes `log₂(C / 8)` levels of a few
/// operations each (instead of `C` sequential rows for forward substitution), and the products
/// only ever touch the `s×s` quarters, about `C³/3` multiply-adds in all. Measured on the flex
/// CPU backend for 128 matrices of 64×64, forward and backward: 21 ms (24 ms doubling up from
/// 1×1 blocks), against 406 ms for forward substitution written row by row with tensor
/// operations.
///
/// A size that is not a power of two is padded to the next one with zeros (the inverse of
/// `[[I + A, 0], [0, I]]` is `[[T, 0], [0, I]]`) and the corner cut back out.
///
/// # Shapes
/// - `a`: `[z, C, C]` → `[z, C, C]`
pub fn invert_unit_lower<B: Backend>(a: Tensor<B, 3>) -> Tensor<B, 3> {
    let [z, size, _] = a.dims();
    if !size.is_power_of_two() {
        let extra = size.next_power_of_two() - size;
        let padded = a.pad([(0, extra), (0, extra)], PadMode::Constant(0.0));
        return invert_unit_lower(padded).slice([0..z, 0..size, 0..size]);
    }
    let c = size;
    let device = a.device();
    let flat = a.reshape([z, c * c]);
    // Inverted diagonal blocks, `[z, C / s, s, s]`, starting from the smallest blocks inverted
    // directly (see `invert_small_blocks`).
    let mut s = SMALL_BLOCK.min(c);
    let mut t = invert_small_blocks(flat.clone(), c, s);
    while s < c {
        let m = 2 * s;
        let blocks = c / m;
        // The lower-left s×s quarter of every diagonal m×m block.
        let lower_left = gather_blocks(flat.clone(), c, m, s, s).reshape([z, blocks, s, s]);
        let halves = t.reshape([z, blocks, 2, s, s]);
        let t11 = halves.clone().slice_dim(2, 0..1).reshape([z, blocks, s, s]);
        let t22 = halves.slice_dim(2, 1..2).reshape([z, blocks, s, s]);
        let off = t22.clone().matmul(lower_left).matmul(t11.clone()).neg();
        let top = Tensor::cat(vec![t11, Tensor::zeros([z, blocks, s, s], &device)], 3);
        let bottom = Tensor::cat(vec![off, t22], 3);
        t = Tensor::cat(vec![top, bottom], 2);
        s = m;
    }
    t.reshape([z, c, c])
}

/// The `size × size` blocks along the diagonal of `C × C` matrices flattened to `[z, C²]`, one
/// every `stride` rows and columns, each starting `row_offset` rows below the diagonal (0: the
/// diagonal blocks; `size` with `stride = 2·size`: the lower-left quarters of the diagonal
/// blocks of twice that size). Gathered by flat index: a broadcast mask over the whole matrix
/// measured ten times slower on the CPU. Returns `[z, (C / stride) · size²]`, block by block.
fn gather_blocks<B: Backend>(
    flat: Tensor<B, 2>,
    c: usize,
    stride: usize,
    row_offset: usize,
    size: usize,
) -> Tensor<B, 2> {
    let blocks = c / stride;
    let index: Vec<i64> = (0..blocks)
        .flat_map(|p| {
            (0..size).flat_map(move |i| {
                (0..size).map(move |j| ((p * stride + row_offset + i) * c + p * stride + j) as i64)
            })
        })
        .collect();
    let index =
        Tensor::<B, 1, Int>::from_data(TensorData::new(index, [blocks * size * size]), &flat.device());
    flat.select(1, index)
}

/// Size of the diagonal blocks [`invert_unit_lower`] inverts directly before doubling.
const SMALL_BLOCK: usize = 8;

/// The inverses of the `s × s` diagonal blocks of `I + A` (`A` strictly lower triangular, `s` a
/// power of two), `[z, C / s, s, s]`, from `A` flattened to `[z, C²]`.
///
/// A strictly lower triangular `s × s` block `L` is nilpotent (`Lˢ = 0`), so its inverse is the
/// finite series `Σ_{k<s} (−L)ᵏ = (I − L)(I + L²)(I + L⁴)…(I + L^{s/2})`: for `s = 8`, four
/// batched products where doubling up from 1×1 blocks takes three levels of a dozen small
/// operations each, most of them on matrices of one, two or four entries a side. Only powers
/// up to the seventh appear, of entries at most one in size for the delta rule's `A`.
fn invert_small_blocks<B: Backend>(flat: Tensor<B, 2>, c: usize, s: usize) -> Tensor<B, 4> {
    let [z, _] = flat.dims();
    let device = flat.device();
    let blocks = c / s;
    if s == 1 {
        return Tensor::ones([z, blocks, 1, 1], &device);
    }
    let rows = z * blocks;
    let l = gather_blocks(flat, c, s, 0, s).reshape([rows, s, s]);
    // The identity as one shared row of `s²` entries: a fast broadcast on the CPU backend.
    let eye = Tensor::<B, 2>::eye(s, &device).reshape([1, s * s]);
    let plus_eye = |m: Tensor<B, 3>| (m.reshape([rows, s * s]) + eye.clone()).reshape([rows, s, s]);
    let mut t = plus_eye(l.clone().neg());
    let mut power = l;
    let mut k = 1;
    while 2 * k < s {
        power = power.clone().matmul(power);
        t = t.matmul(plus_eye(power.clone()));
        k *= 2;
    }
    t.reshape([z, blocks, s, s])
}

/// One token of the delta rule: decays the state (if gated), writes the corrected value and
/// reads the output.
///
/// # Shapes
/// - `q`, `k`: `[batch, heads, dk]`; `v`: `[batch, heads, dv]`
/// - `beta`, `log_decay`: `[batch, heads]`
/// - `state`: `[batch, heads, dk, dv]`
/// - returns the output `[batch, heads, dv]` and the new state
pub fn delta_rule_step<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    beta: Tensor<B, 2>,
    log_decay: Option<Tensor<B, 2>>,
    state: Tensor<B, 4>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [batch, heads, dk] = k.dims();
    let dv = v.dims()[2];
    let state = match log_decay {
        Some(g) => state * g.exp().reshape([batch, heads, 1, 1]),
        None => state,
    };
    let k = k.reshape([batch, heads, 1, dk]);
    let remembered = k.clone().matmul(state.clone());
    let u = (v.reshape([batch, heads, 1, dv]) - remembered) * beta.reshape([batch, heads, 1, 1]);
    let state = state + k.swap_dims(2, 3).matmul(u);
    let o = q.reshape([batch, heads, 1, dk]).matmul(state.clone()).reshape([batch, heads, dv]);
    (o, state)
}

/// [`delta_rule`] as a loop of [`delta_rule_step`] over the tokens. It is the form decoding
/// uses, here over a whole sequence: a reference for the chunked form and a baseline for
/// measuring it, never the training path.
///
/// # Shapes
/// As [`delta_rule`].
pub fn recurrent_delta_rule<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    beta: Tensor<B, 3>,
    log_decay: Option<Tensor<B, 3>>,
    initial: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [batch, heads, seq, dk] = q.dims();
    let dv = v.dims()[3];
    let at =
        |t: &Tensor<B, 4>, i: usize, d: usize| t.clone().slice_dim(2, i..i + 1).reshape([batch, heads, d]);
    let mut state = initial;
    let mut outputs = Vec::with_capacity(seq);
    for i in 0..seq {
        let g = log_decay.as_ref().map(|g| g.clone().slice_dim(2, i..i + 1).reshape([batch, heads]));
        let b = beta.clone().slice_dim(2, i..i + 1).reshape([batch, heads]);
        let (o, next) = delta_rule_step(at(&q, i, dk), at(&k, i, dk), at(&v, i, dv), b, g, state);
        outputs.push(o.reshape([batch, heads, 1, dv]));
        state = next;
    }
    let o = if seq == 0 {
        Tensor::zeros([batch, heads, 0, dv], &state.device())
    } else {
        Tensor::cat(outputs, 2)
    };
    (o, state)
}

/// `x / sqrt(Σ x² + eps)` over the last dimension.
pub fn l2_normalize<B: Backend, const D: usize>(x: Tensor<B, D>, epsilon: f64) -> Tensor<B, D> {
    let sum_sq = x.clone().square().sum_dim(D - 1);
    x * (sum_sq + epsilon).sqrt().recip()
}

/// `log(1 + eˣ)`, computed as `x` above 20 so that `exp` never overflows (the two agree to
/// f32 precision there); the clamp keeps the unused branch's gradient finite.
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let large = x.clone().greater_elem(20.0);
    x.clone().clamp_max(20.0).exp().log1p().mask_where(large, x)
}

/// One of the q/k/v branches: projection, short causal conv (continuing `conv_state` when
/// given one), SiLU, and the split into heads.
///
/// # Shapes
/// - `x`: `[batch, seq, hidden]` → `[batch, seq, heads, head_dim]`
pub(crate) fn conv_branch<B: Kernels>(
    proj: &Linear<B>,
    conv: &ShortConv<B>,
    x: Tensor<B, 3>,
    conv_state: Option<&mut ConvState<B>>,
    heads: usize,
    head_dim: usize,
) -> Tensor<B, 4> {
    let [batch, seq, _] = x.dims();
    let y = proj.forward(x);
    let y = match conv_state {
        Some(state) => causal_conv_silu_from(conv, y, state),
        None => conv.forward_silu(y),
    };
    y.reshape([batch, seq, heads, head_dim])
}

/// `[batch, heads, seq, d]` → `[batch, seq, heads, d]`, copied into that layout rather than
/// left as a transposed view: elementwise operations on a transposed view measured about ten
/// times slower than on contiguous memory on the flex CPU backend.
pub(crate) fn token_major<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    contiguous(x.swap_dims(1, 2))
}

/// [`ShortConv::forward_silu`] that continues from `state` instead of zeros, and advances it.
///
/// The window is put in front of the input and the outputs for it are dropped: from position
/// `K − 1` on, the convolution sees exactly the window followed by the new tokens.
fn causal_conv_silu_from<B: Kernels>(
    conv: &ShortConv<B>,
    x: Tensor<B, 3>,
    state: &mut ConvState<B>,
) -> Tensor<B, 3> {
    let [_, seq, _] = x.dims();
    let kept = conv.kernel.saturating_sub(1);
    if kept == 0 {
        return conv.forward_silu(x);
    }
    let full = Tensor::cat(vec![state.window.clone(), x], 1);
    state.window = full.clone().slice_dim(1, seq..seq + kept);
    conv.forward_silu(full).slice_dim(1, kept..kept + seq)
}

#[cfg(test)]
pub(crate) mod reference {
    //! The whole mixer written per token from its equations, in f64 and plain loops, as the
    //! reference for the burn forms (and for finite differences of their gradients).

    use burn::prelude::*;

    /// Values of any float tensor, widened to f64.
    pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
        t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data").into_iter().map(f64::from).collect()
    }

    /// The parts only Gated DeltaNet has. Matrices are `[input][output]`, row-major.
    #[derive(Clone, Debug)]
    pub struct GateWeights {
        pub a_proj: Vec<f64>,
        pub a_log: Vec<f64>,
        pub dt_bias: Vec<f64>,
        pub g_proj: Vec<f64>,
    }

    /// Every weight of a mixer. Matrices are `[input][output]`, row-major (burn's `Linear`
    /// layout); conv filters are `[channel][tap]`.
    #[derive(Clone, Debug)]
    pub struct Weights {
        pub hidden: usize,
        pub heads: usize,
        pub head_dim: usize,
        pub kernel: usize,
        pub q_proj: Vec<f64>,
        pub k_proj: Vec<f64>,
        pub v_proj: Vec<f64>,
        pub q_conv: Vec<f64>,
        pub k_conv: Vec<f64>,
        pub v_conv: Vec<f64>,
        pub b_proj: Vec<f64>,
        pub o_norm: Vec<f64>,
        pub o_proj: Vec<f64>,
        pub norm_epsilon: f64,
        pub gate: Option<GateWeights>,
    }

    fn linear(x: &[f64], w: &[f64], outputs: usize) -> Vec<f64> {
        let mut y = vec![0.0; outputs];
        for (i, xi) in x.iter().enumerate() {
            for (o, yo) in y.iter_mut().enumerate() {
                *yo += xi * w[i * outputs + o];
            }
        }
        y
    }

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn silu(x: f64) -> f64 {
        x * sigmoid(x)
    }

    /// Projection, causal conv and SiLU of one branch for one sequence: `[seq][width]`.
    fn branch(x: &[Vec<f64>], proj: &[f64], conv: &[f64], width: usize, kernel: usize) -> Vec<Vec<f64>> {
        let lin: Vec<Vec<f64>> = x.iter().map(|xt| linear(xt, proj, width)).collect();
        (0..x.len())
            .map(|t| {
                (0..width)
                    .map(|c| {
                        let mut acc = 0.0;
                        for j in 0..kernel {
                            let src = t as isize - (kernel as isize - 1) + j as isize;
                            if src >= 0 {
                                acc += conv[c * kernel + j] * lin[src as usize][c];
                            }
                        }
                        silu(acc)
                    })
                    .collect()
            })
            .collect()
    }

    fn l2(x: &[f64]) -> Vec<f64> {
        let n = (x.iter().map(|a| a * a).sum::<f64>() + super::L2_NORM_EPSILON).sqrt();
        x.iter().map(|a| a / n).collect()
    }

    /// The mixer's output for `x` (`[batch][seq][hidden]`, flattened), flattened the same way.
    pub fn forward(w: &Weights, x: &[f64], batch: usize, seq: usize) -> Vec<f64> {
        let (h, d, hidden) = (w.heads, w.head_dim, w.hidden);
        let width = h * d;
        let mut out = Vec::with_capacity(batch * seq * hidden);
        for b in 0..batch {
            let xs: Vec<Vec<f64>> =
                (0..seq).map(|t| x[(b * seq + t) * hidden..(b * seq + t + 1) * hidden].to_vec()).collect();
            let q = branch(&xs, &w.q_proj, &w.q_conv, width, w.kernel);
            let k = branch(&xs, &w.k_proj, &w.k_conv, width, w.kernel);
            let v = branch(&xs, &w.v_proj, &w.v_conv, width, w.kernel);
            // One d×d state per head, S[i][j] at i * d + j.
            let mut states = vec![vec![0.0; d * d]; h];
            for (t, xt) in xs.iter().enumerate() {
                let beta: Vec<f64> = linear(xt, &w.b_proj, h).into_iter().map(sigmoid).collect();
                let decay: Vec<f64> = match &w.gate {
                    Some(g) => linear(xt, &g.a_proj, h)
                        .iter()
                        .enumerate()
                        .map(|(head, a)| {
                            let z = a + g.dt_bias[head];
                            let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
                            (-g.a_log[head].exp() * softplus).exp()
                        })
                        .collect(),
                    None => vec![1.0; h],
                };
                let gate = w.gate.as_ref().map(|g| linear(xt, &g.g_proj, width));
                let mut mixed = vec![0.0; width];
                for head in 0..h {
                    let qh = l2(&q[t][head * d..(head + 1) * d]);
                    let kh = l2(&k[t][head * d..(head + 1) * d]);
                    let vh = &v[t][head * d..(head + 1) * d];
                    let s = &mut states[head];
                    for e in s.iter_mut() {
                        *e *= decay[head];
                    }
                    for j in 0..d {
                        let remembered: f64 = (0..d).map(|i| s[i * d + j] * kh[i]).sum();
                        let u = beta[head] * (vh[j] - remembered);
                        for i in 0..d {
                            s[i * d + j] += kh[i] * u;
                        }
                    }
                    let o: Vec<f64> = (0..d).map(|j| (0..d).map(|i| s[i * d + j] * qh[i]).sum()).collect();
                    let rms = (o.iter().map(|a| a * a).sum::<f64>() / d as f64 + w.norm_epsilon).sqrt();
                    for j in 0..d {
                        let mut y = o[j] / rms * w.o_norm[j];
                        if let Some(g) = &gate {
                            y *= silu(g[head * d + j]);
                        }
                        mixed[head * d + j] = y;
                    }
                }
                out.extend(linear(&mixed, &w.o_proj, hidden));
            }
        }
        out
    }

    /// `max |got − want| / max |want|`: the error relative to the output's scale.
    pub fn relative_error(got: &[f64], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f64, |m, a| m.max(a.abs()));
        let diff = got.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        diff / scale
    }
}

#[cfg(test)]
mod tests {
    use super::reference::{relative_error, values};
    use super::*;
    use crate::backend::Cpu;
    use burn::tensor::Distribution;

    type B = Cpu;

    fn random<const D: usize>(shape: [usize; D], device: &crate::backend::CpuDevice) -> Tensor<B, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    /// `(I + A)^{-1}` by forward substitution in f64, row by row from the definition.
    fn inverse_by_substitution(a: &[f64], c: usize) -> Vec<f64> {
        let mut t = vec![0.0; c * c];
        for i in 0..c {
            for col in 0..=i {
                let mut acc = if col == i { 1.0 } else { 0.0 };
                for j in col..i {
                    acc -= a[i * c + j] * t[j * c + col];
                }
                t[i * c + col] = acc;
            }
        }
        t
    }

    /// Against f64 forward substitution, for `A = tril(diag(β) K Kᵀ, −1)` with unit keys (what
    /// the chunked form inverts) and for entries uniform in ±1 (much worse conditioned). The
    /// tolerance is relative to the inverse's largest entry.
    #[test]
    fn block_doubling_inverts_unit_lower_triangular_matrices() {
        let device = Default::default();
        B::seed(&device, 1);
        let z = 3;
        // 5 and 52 are not powers of two: padded, inverted and cut back.
        for c in [1, 2, 5, 8, 52, 64] {
            let k = l2_normalize(random([z, c, 16], &device), L2_NORM_EPSILON);
            let beta = Tensor::<B, 3>::random([z, c, 1], Distribution::Uniform(0.0, 1.0), &device);
            let from_keys = (k.clone().matmul(k.swap_dims(1, 2)) * beta).tril(-1);
            let uniform =
                Tensor::<B, 3>::random([z, c, c], Distribution::Uniform(-1.0, 1.0), &device).tril(-1);
            for (name, a, tolerance) in [("keys", from_keys, 1e-5), ("uniform", uniform, 1e-4)] {
                let got = values(invert_unit_lower(a.clone()));
                let a = values(a);
                let want: Vec<f64> =
                    (0..z).flat_map(|i| inverse_by_substitution(&a[i * c * c..(i + 1) * c * c], c)).collect();
                let err = relative_error(&got, &want);
                assert!(err < tolerance, "C = {c}, {name}: inverse off by {err}");
            }
        }
    }

    /// The kernel alone against the per-token loop, from a random non-zero state and with a
    /// decay strong enough (down to e^-30 per token) to underflow within a chunk.
    #[test]
    fn chunked_kernel_matches_the_per_token_loop_from_any_state_under_strong_decay() {
        let device = Default::default();
        B::seed(&device, 2);
        let (batch, heads, dk, dv) = (2, 3, 4, 5);
        // (20, 8) runs three chunks of 7 (one padding step); (17, 8) two chunks of 8 and then one
        // token by token.
        for (seq, chunk) in [(16, 8), (13, 4), (3, 64), (1, 8), (20, 8), (17, 8)] {
            let q = l2_normalize(random([batch, heads, seq, dk], &device), L2_NORM_EPSILON);
            let k = l2_normalize(random([batch, heads, seq, dk], &device), L2_NORM_EPSILON);
            let v = random([batch, heads, seq, dv], &device);
            let beta = Tensor::<B, 3>::random([batch, heads, seq], Distribution::Uniform(0.0, 1.0), &device);
            let g = Tensor::<B, 3>::random([batch, heads, seq], Distribution::Uniform(-30.0, 0.0), &device);
            let s0 = random([batch, heads, dk, dv], &device);
            for decay in [None, Some(g)] {
                let (o_ref, s_ref) = recurrent_delta_rule(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    beta.clone(),
                    decay.clone(),
                    s0.clone(),
                );
                let (o, s) = chunked_delta_rule(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    beta.clone(),
                    decay.clone(),
                    s0.clone(),
                    chunk,
                );
                let gated = decay.is_some();
                let err_o = relative_error(&values(o), &values(o_ref));
                let err_s = relative_error(&values(s), &values(s_ref));
                assert!(err_o < 1e-5, "seq {seq}, chunk {chunk}, gated {gated}: outputs off by {err_o}");
                assert!(err_s < 1e-5, "seq {seq}, chunk {chunk}, gated {gated}: state off by {err_s}");
            }
        }
    }

    /// Gradients of the chunked kernel against those of the per-token loop (itself checked
    /// against the f64 reference above), with respect to every input and the initial state, in
    /// each way a sequence can be cut: whole chunks (16 in chunks of 8), chunks evened out (21
    /// as three chunks of 7, their matrices padded to 8 for the inversion), and whole chunks
    /// followed by a token-by-token tail (33 and 17). Tolerance: 1e-4 of each gradient's largest
    /// entry.
    #[test]
    fn chunked_kernel_gradients_match_the_per_token_loop_however_the_sequence_is_cut() {
        type A = crate::backend::CpuAutodiff;
        let device = Default::default();
        <A as Backend>::seed(&device, 3);
        let (batch, heads, dk, dv) = (2, 2, 4, 3);
        for (seq, chunk) in [(16, 8), (21, 8), (33, 8), (17, 16)] {
            let normal = |shape: [usize; 4]| {
                Tensor::<A, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad()
            };
            let uniform = |low: f64, high: f64| {
                Tensor::<A, 3>::random([batch, heads, seq], Distribution::Uniform(low, high), &device)
                    .require_grad()
            };
            let (q, k, v) = (
                normal([batch, heads, seq, dk]),
                normal([batch, heads, seq, dk]),
                normal([batch, heads, seq, dv]),
            );
            let (beta, g, s0) = (uniform(0.0, 1.0), uniform(-2.0, 0.0), normal([batch, heads, dk, dv]));
            let weights =
                Tensor::<A, 4>::random([batch, heads, seq, dv], Distribution::Normal(0.0, 1.0), &device);
            let final_weights =
                Tensor::<A, 4>::random([batch, heads, dk, dv], Distribution::Normal(0.0, 1.0), &device);
            for decay in [None, Some(g.clone())] {
                let gradients = |scan: Scan| {
                    // Unit keys and queries, as the mixers feed the kernel.
                    let (qn, kn) =
                        (l2_normalize(q.clone(), L2_NORM_EPSILON), l2_normalize(k.clone(), L2_NORM_EPSILON));
                    let (o, s) = delta_rule(qn, kn, v.clone(), beta.clone(), decay.clone(), s0.clone(), scan);
                    let grads = ((o * weights.clone()).sum() + (s * final_weights.clone()).sum()).backward();
                    let mut all = vec![
                        values(q.grad(&grads).expect("q is tracked")),
                        values(k.grad(&grads).expect("k is tracked")),
                        values(v.grad(&grads).expect("v is tracked")),
                        values(beta.grad(&grads).expect("beta is tracked")),
                        values(s0.grad(&grads).expect("the state is tracked")),
                    ];
                    if decay.is_some() {
                        all.push(values(g.grad(&grads).expect("the decay is tracked")));
                    }
                    all
                };
                let chunked = gradients(Scan::Chunked(chunk));
                let per_token = gradients(Scan::PerToken);
                let gated = decay.is_some();
                for (n, (got, want)) in chunked.iter().zip(&per_token).enumerate() {
                    let err = relative_error(got, want);
                    assert!(err < 1e-4, "seq {seq}, chunk {chunk}, gated {gated}: gradient {n} off by {err}");
                }
            }
        }
    }

    /// Forward substitution written with tensor ops, one chunk row per step: the alternative
    /// to [`invert_unit_lower`] that the measurement below compares against.
    fn invert_by_rows(a: Tensor<B2, 3>) -> Tensor<B2, 3> {
        let [z, c, _] = a.dims();
        let device = a.device();
        let identity = Tensor::<B2, 2>::eye(c, &device).unsqueeze::<3>().repeat_dim(0, z);
        let mut rows = identity.clone().slice_dim(1, 0..1);
        for i in 1..c {
            let e = identity.clone().slice_dim(1, i..i + 1);
            let a_row = a.clone().slice([0..z, i..i + 1, 0..i]);
            rows = Tensor::cat(vec![rows.clone(), e - a_row.matmul(rows)], 1);
        }
        rows
    }

    type B2 = crate::backend::CpuAutodiff;

    /// Seconds per call of `f`, the best of `runs` after one warm-up call.
    fn seconds(runs: usize, mut f: impl FnMut()) -> f64 {
        f();
        (0..runs)
            .map(|_| {
                let start = std::time::Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// Training throughput (forward + backward through the mixer alone, CPU autodiff) at
    /// d_model 128, 4 heads of 32, batch 8 × seq 256 (and the same tokens as 2 × 1024), chunked
    /// at several chunk sizes versus per-token; and the two ways of inverting the chunk matrix.
    /// A measurement, not a check:
    /// `cargo test -p worker measure_delta_rule_training_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; prints a table"]
    fn measure_delta_rule_training_speed() {
        use crate::model::deltanet::DeltaNetConfig;
        use crate::model::gated_deltanet::GatedDeltaNetConfig;
        let device = Default::default();
        let (hidden, heads) = (128, 4);
        println!("mixer            batch×seq  form          tokens/s (forward + backward)");
        for (batch, seq) in [(8, 256), (2, 1024)] {
            let tokens = (batch * seq) as f64;
            let x = Tensor::<B2, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);
            let plain = |chunk| DeltaNetConfig::new(hidden, heads, hidden / heads).with_chunk_size(chunk);
            let gated =
                |chunk| GatedDeltaNetConfig::new(hidden, heads, hidden / heads).with_chunk_size(chunk);
            for chunk in [16, 32, 64] {
                let m = plain(chunk).init::<B2>(&device);
                let t = seconds(5, || {
                    let _ = m.forward(x.clone()).square().mean().backward();
                });
                println!("deltanet         {batch}×{seq:<6}  chunked {chunk:<5} {:>10.0}", tokens / t);
                let g = gated(chunk).init::<B2>(&device);
                let t = seconds(5, || {
                    let _ = g.forward(x.clone()).square().mean().backward();
                });
                println!("gated_deltanet   {batch}×{seq:<6}  chunked {chunk:<5} {:>10.0}", tokens / t);
            }
            let m = plain(64).init::<B2>(&device);
            let t = seconds(2, || {
                let _ = m.forward_scan(x.clone(), Scan::PerToken).square().mean().backward();
            });
            println!("deltanet         {batch}×{seq:<6}  per-token     {:>10.0}", tokens / t);
            let g = gated(64).init::<B2>(&device);
            let t = seconds(2, || {
                let _ = g.forward_scan(x.clone(), Scan::PerToken).square().mean().backward();
            });
            println!("gated_deltanet   {batch}×{seq:<6}  per-token     {:>10.0}", tokens / t);
        }

        // The chunk matrices of batch 8 × seq 256: batch · heads · seq / 64 of them, 64×64.
        let z = 8 * heads * 256 / 64;
        let k =
            l2_normalize(Tensor::<B2, 3>::random([z, 64, 32], Distribution::Normal(0.0, 1.0), &device), 1e-6);
        let a = k.clone().matmul(k.swap_dims(1, 2)).tril(-1).require_grad();
        for (name, invert) in [
            ("block doubling", invert_unit_lower::<B2> as fn(Tensor<B2, 3>) -> Tensor<B2, 3>),
            ("row substitution", invert_by_rows),
        ] {
            let t = seconds(5, || {
                let _ = invert(a.clone()).square().sum().backward();
            });
            println!("inverse of {z} 64×64 by {name}: {:.2} ms forward + backward", t * 1e3);
        }
    }

    #[test]
    fn softplus_is_finite_and_exact_at_large_inputs() {
        let device = Default::default();
        let x = Tensor::<B, 1>::from_floats([-100.0, -1.0, 0.0, 1.0, 19.0, 25.0, 1000.0], &device);
        let got = values(softplus(x));
        let want: Vec<f64> = [-100.0f64, -1.0, 0.0, 1.0, 19.0, 25.0, 1000.0]
            .iter()
            .map(|&x| x.max(0.0) + (-x.abs()).exp().ln_1p())
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
}
