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
use super::conv::{ConvState, ShortConv};
use crate::kernels::{Kernels, contiguous};

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
pub(crate) mod reference;

#[cfg(test)]
mod tests;
