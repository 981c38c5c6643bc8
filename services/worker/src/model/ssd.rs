//! The selective state-space scan of Mamba2 (SSD), in a chunked form for training and a
//! one-token form for decoding.
//!
//! Per head `h` with head width `P` and state size `N`, with `B` and `C` shared by the heads of
//! one group:
//!
//! ```text
//! H_t = exp(dt_t · A) · H_{t-1} + dt_t · x_t ⊗ B_t        H ∈ R^{P×N}
//! y_t = H_t · C_t
//! ```
//!
//! (the `D · x_t` skip is added by the caller). Unrolled, `y_t = Σ_{s≤t} (C_t·B_s) ·
//! exp(Σ_{s<k≤t} dt_k A) · dt_s x_s`: a causal, decay-weighted attention whose scores factor
//! through the state. A per-token loop over `t` is cheap to run forward but slow to train: each
//! step is a handful of tiny ops, and its backward pass grows with the square of the length.
//! [`chunked_scan`] instead cuts the sequence into chunks of `L` tokens and does, with batched
//! matmuls only:
//!
//! 1. within each chunk, the quadratic form `Y_diag = (C Bᵀ ∘ Λ) (dt·x)` where
//!    `Λ[i, j] = exp(Σ_{j<k≤i} dt_k A)` for `i ≥ j` and 0 above the diagonal;
//! 2. each chunk's own contribution to the state at its end,
//!    `S_c = Σ_j exp(Σ_{j<k≤end} dt_k A) · (dt_j x_j) ⊗ B_j`;
//! 3. the state entering every chunk, by the same decay-matrix trick one level up: a matmul of
//!    the chunk-level decay matrix with `[initial, S_0, S_1, ...]`;
//! 4. the carried state's output, `Y_off[i] = exp(Σ_{k≤i} dt_k A) · (state_in · C_i)`.
//!
//! Chunks are evened out to `⌈seq / ⌈seq / L⌉⌉` tokens each; a sequence that is not a multiple
//! of that is padded at the end with `dt = 0`, which neither decays nor writes the state, so the
//! outputs and the final state are those of the real tokens.

use burn::prelude::*;
use burn::tensor::Bool;

use super::chunk::{Causal, causal_decay};
use crate::kernels::Kernels;

/// The within-chunk scores `(C Bᵀ)[i, j] · exp(cum[i] - cum[j])` for `i ≥ j`, 0 above the
/// diagonal, for every head, from the within-chunk cumulative log decays `cum` and the
/// per-group `C Bᵀ`.
///
/// Within one chunk the cumulative sums stay small (at most `L` steps of `dt·A`), so taking the
/// difference loses little precision. Every operation here runs on `L²` entries per head and
/// chunk, the largest tensors of the scan; [`causal_decay`] forms the masked decays in three
/// fast passes, and `C Bᵀ` is repeated out to every head of its group first because a
/// broadcast along a middle dimension is the CPU backend's slow path.
///
/// # Shapes
/// - `cum`: `[batch, groups, r, chunks, l]`
/// - `cb`: `[batch, groups, 1, chunks, l, l]`
/// - returns `[batch, groups, r, chunks, l, l]`
fn intra_chunk_scores<B: Kernels>(cum: Tensor<B, 5>, cb: Tensor<B, 6>) -> Tensor<B, 6> {
    let [batch, groups, r, chunks, l] = cum.dims();
    let decay = causal_decay(cum.reshape([batch * groups * r * chunks, l]), Causal::Inclusive)
        .reshape([batch, groups, r, chunks, l, l]);
    decay * cb.repeat_dim(2, r)
}

/// The decay matrix `Λ[.., i, j] = exp(Σ_{j<k≤i} log_decay[k])` for `i ≥ j`, 0 above the
/// diagonal, with every segment summed directly rather than as a difference of prefix sums.
///
/// Used between chunks, where prefix sums over a long sequence grow large and their difference
/// loses precision in f32 (over 8192 tokens with slow decay: state errors up to 1.5e-6 of scale
/// through differences, under 4e-7 this way). It costs one cumulative sum over a matrix of
/// `chunks + 1` squared entries per head, which is small.
///
/// # Shapes
/// - `log_decay`: `[d0, d1, d2, m]` → `[d0, d1, d2, m, m]`
fn segment_decay<B: Backend>(log_decay: Tensor<B, 4>) -> Tensor<B, 5> {
    let [d0, d1, d2, m] = log_decay.dims();
    let device = log_decay.device();
    let shape = [d0, d1, d2, m, m];
    // `true` where j ≥ i: entries that are not in any segment (j, i].
    let outside = Tensor::<B, 2, Bool>::tril_mask([m, m], -1, &device).reshape([1, 1, 1, m, m]).expand(shape);
    let future = Tensor::<B, 2, Bool>::tril_mask([m, m], 0, &device).reshape([1, 1, 1, m, m]).expand(shape);
    // rows[i, j] = log_decay[i], kept for j < i; the running sum down the rows then gives
    // Σ_{j<k≤i} log_decay[k] at (i, j).
    let rows = log_decay.unsqueeze_dim::<5>(4).expand(shape);
    rows.mask_fill(outside, 0.0).cumsum(3).exp().mask_fill(future, 0.0)
}

/// Appends `pad` zero steps along dimension 1.
fn pad_seq<B: Backend, const D: usize>(t: Tensor<B, D>, pad: usize) -> Tensor<B, D> {
    if pad == 0 {
        return t;
    }
    let mut shape = t.dims();
    shape[1] = pad;
    let zeros = Tensor::zeros(shape, &t.device());
    Tensor::cat(vec![t, zeros], 1)
}

/// Runs the scan over a whole sequence in chunks of `chunk` tokens (see the module doc), from
/// `initial` (zeros when `None`). Returns the outputs, without the `D · x` skip, and the state
/// after the last token.
///
/// `dt` must be positive (after the softplus) and `a` negative, as Mamba2 builds them: the
/// within-chunk decays rely on every log decay `dt · a` being at most 0.
///
/// # Shapes
/// - `x`: `[batch, seq, heads, head_dim]`
/// - `dt`: `[batch, seq, heads]`
/// - `a`: `[heads]`
/// - `b`, `c`: `[batch, seq, groups, state]`, `heads` a multiple of `groups`; head `h` reads
///   group `h / (heads / groups)`
/// - `initial`: `[batch, heads, head_dim, state]`
/// - returns `([batch, seq, heads, head_dim], [batch, heads, head_dim, state])`
pub fn chunked_scan<B: Kernels>(
    x: Tensor<B, 4>,
    dt: Tensor<B, 3>,
    a: Tensor<B, 1>,
    b: Tensor<B, 4>,
    c: Tensor<B, 4>,
    initial: Option<Tensor<B, 4>>,
    chunk: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [batch, seq, heads, p] = x.dims();
    let [_, _, groups, n] = b.dims();
    assert!(seq > 0, "the scan needs at least one token");
    assert!(chunk > 0, "chunk size must be positive");
    assert_eq!(heads % groups, 0, "heads ({heads}) must be a multiple of groups ({groups})");
    let device = x.device();
    let r = heads / groups;
    // As many chunks as `chunk` tokens each need, evened out: a sequence a few tokens past a
    // multiple of `chunk` (meta tokens put 260 in front of a 256-token batch) is cut into
    // slightly shorter chunks rather than padded by most of a chunk, and a sequence shorter than
    // one chunk is one chunk of its own length. At most `chunks - 1` padding steps remain.
    let chunks = seq.div_ceil(chunk);
    let l = seq.div_ceil(chunks);
    let padded = chunks * l;
    let pad = padded - seq;

    // Of x the scan only needs dt·x; of dt and A only the log decays dt·A. Both are formed
    // before the layout change below, where their operands are contiguous. Padding appends zeros
    // to them: a zero log decay keeps the state, a zero dt·x writes nothing.
    let xdt = pad_seq(x * dt.clone().unsqueeze_dim::<4>(3), pad);
    let log_decay = pad_seq(dt * a.reshape([1, 1, heads]), pad);

    // Everything below is laid out [batch, group, head-in-group, chunk, position, ...]. B and C
    // keep a size-1 head axis, so `C Bᵀ` is computed once per group.
    let xdt = xdt.reshape([batch, chunks, l, groups, r, p]).permute([0, 3, 4, 1, 2, 5]);
    let cum = log_decay.reshape([batch, chunks, l, groups, r]).permute([0, 3, 4, 1, 2]).cumsum(4);
    let to_chunks = |t: Tensor<B, 4>| -> Tensor<B, 6> {
        pad_seq(t, pad).reshape([batch, chunks, l, groups, n]).permute([0, 3, 1, 2, 4]).unsqueeze_dim(2)
    };
    let b = to_chunks(b);
    let c = to_chunks(c);

    // 1. Within chunks.
    let scores = intra_chunk_scores(cum.clone(), c.clone().matmul(b.clone().swap_dims(4, 5)));
    let y_diag = scores.matmul(xdt.clone());

    // 2. Each chunk's contribution to the state at its end.
    let chunk_total = cum.clone().slice([0..batch, 0..groups, 0..r, 0..chunks, l - 1..l]);
    let to_end = (chunk_total.clone() - cum.clone()).exp().unsqueeze_dim::<6>(5);
    // The decay goes onto B (repeated per head, `N` wide) rather than onto dt·x (`P` wide,
    // and still in a permuted layout that the product would have to copy).
    let states = xdt.clone().swap_dims(4, 5).matmul(b.repeat_dim(2, r) * to_end); // [batch, g, r, chunks, p, n]

    // 3. The state entering each chunk. Row z of the chunk-level decay matrix combines the
    //    initial state (column 0) and chunk states 0..z-1, each decayed to the start of chunk z.
    let initial = match initial {
        Some(s) => s.reshape([batch, groups, r, 1, p, n]),
        None => Tensor::zeros([batch, groups, r, 1, p, n], &device),
    };
    let stacked = Tensor::cat(vec![initial, states], 3).reshape([batch, groups, r, chunks + 1, p * n]);
    let totals = Tensor::cat(
        vec![Tensor::zeros([batch, groups, r, 1], &device), chunk_total.reshape([batch, groups, r, chunks])],
        3,
    );
    let carried = segment_decay(totals).matmul(stacked); // [batch, g, r, chunks + 1, p·n]
    let entering = carried
        .clone()
        .slice([0..batch, 0..groups, 0..r, 0..chunks, 0..p * n])
        .reshape([batch, groups, r, chunks, p, n]);
    let last = carried
        .slice([0..batch, 0..groups, 0..r, chunks..chunks + 1, 0..p * n])
        .reshape([batch, heads, p, n]);

    // 4. What the carried state contributes inside each chunk.
    let y_off = c.matmul(entering.swap_dims(4, 5)) * cum.exp().unsqueeze_dim::<6>(5);

    let y = (y_diag + y_off).permute([0, 3, 4, 1, 2, 5]).reshape([batch, padded, heads, p]);
    let y = if pad > 0 { y.slice([0..batch, 0..seq, 0..heads, 0..p]) } else { y };
    (y, last)
}

/// Advances the scan by one token: decays the state, writes `dt · x ⊗ B`, reads with `C`.
/// Returns the output (without the `D · x` skip) and the new state.
///
/// # Shapes
/// - `state`: `[batch, heads, head_dim, state]`
/// - `x`: `[batch, heads, head_dim]`
/// - `dt`: `[batch, heads]`
/// - `a`: `[heads]`
/// - `b`, `c`: `[batch, groups, state]`
/// - returns `([batch, heads, head_dim], [batch, heads, head_dim, state])`
pub fn scan_step<B: Backend>(
    state: Tensor<B, 4>,
    x: Tensor<B, 3>,
    dt: Tensor<B, 2>,
    a: Tensor<B, 1>,
    b: Tensor<B, 3>,
    c: Tensor<B, 3>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [batch, heads, p, n] = state.dims();
    let groups = b.dims()[1];
    let r = heads / groups;
    let per_head = |t: Tensor<B, 3>| -> Tensor<B, 4> {
        t.reshape([batch, groups, 1, n]).expand([batch, groups, r, n]).reshape([batch, heads, 1, n])
    };
    let decay = (dt.clone() * a.reshape([1, heads])).exp().reshape([batch, heads, 1, 1]);
    let write = (x * dt.reshape([batch, heads, 1])).reshape([batch, heads, p, 1]) * per_head(b);
    let state = state * decay + write;
    let y = state.clone().matmul(per_head(c).swap_dims(2, 3)).reshape([batch, heads, p]);
    (y, state)
}

/// The same scan as a loop of [`scan_step`] over the tokens: the naive training form, kept to
/// check [`chunked_scan`] and to measure what chunking buys.
pub fn sequential_scan<B: Backend>(
    x: Tensor<B, 4>,
    dt: Tensor<B, 3>,
    a: Tensor<B, 1>,
    b: Tensor<B, 4>,
    c: Tensor<B, 4>,
    initial: Option<Tensor<B, 4>>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [batch, seq, heads, p] = x.dims();
    let [_, _, groups, n] = b.dims();
    let mut state = initial.unwrap_or_else(|| Tensor::zeros([batch, heads, p, n], &x.device()));
    let mut ys = Vec::with_capacity(seq);
    for t in 0..seq {
        let (y, next) = scan_step(
            state,
            x.clone().slice([0..batch, t..t + 1, 0..heads, 0..p]).reshape([batch, heads, p]),
            dt.clone().slice([0..batch, t..t + 1, 0..heads]).reshape([batch, heads]),
            a.clone(),
            b.clone().slice([0..batch, t..t + 1, 0..groups, 0..n]).reshape([batch, groups, n]),
            c.clone().slice([0..batch, t..t + 1, 0..groups, 0..n]).reshape([batch, groups, n]),
        );
        ys.push(y);
        state = next;
    }
    (Tensor::stack(ys, 1), state)
}

/// The scan written element by element from the recurrence, in f64: the reference the tensor
/// forms are checked against. Arrays are row-major with the shapes of [`chunked_scan`].
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference_scan(
    x: &[f64],
    dt: &[f64],
    a: &[f64],
    b: &[f64],
    c: &[f64],
    initial: Option<&[f64]>,
    [batch, seq, heads, p, n, groups]: [usize; 6],
) -> (Vec<f64>, Vec<f64>) {
    let r = heads / groups;
    let mut state = initial.map_or_else(|| vec![0.0; batch * heads * p * n], <[f64]>::to_vec);
    let mut y = vec![0.0; batch * seq * heads * p];
    for bi in 0..batch {
        for t in 0..seq {
            for h in 0..heads {
                let g = h / r;
                let step = dt[(bi * seq + t) * heads + h];
                let decay = (step * a[h]).exp();
                for i in 0..p {
                    let xi = x[((bi * seq + t) * heads + h) * p + i];
                    let mut out = 0.0;
                    for j in 0..n {
                        let s = &mut state[((bi * heads + h) * p + i) * n + j];
                        *s = decay * *s + step * xi * b[((bi * seq + t) * groups + g) * n + j];
                        out += *s * c[((bi * seq + t) * groups + g) * n + j];
                    }
                    y[((bi * seq + t) * heads + h) * p + i] = out;
                }
            }
        }
    }
    (y, state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff};
    use burn::tensor::Distribution;

    fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
        t.into_data().to_vec::<f32>().expect("f32 data").into_iter().map(f64::from).collect()
    }

    /// `max |got - want| / max |want|`: the error relative to the scale of the output.
    fn relative_error(got: &[f64], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
        err / scale
    }

    /// Random scan inputs shaped like Mamba2's: `dt` in (0.001, 0.5), `A` in [-8, -1], so the
    /// decays span from nearly 1 to strong forgetting within a chunk.
    struct Inputs<B: Backend> {
        x: Tensor<B, 4>,
        dt: Tensor<B, 3>,
        a: Tensor<B, 1>,
        b: Tensor<B, 4>,
        c: Tensor<B, 4>,
        initial: Tensor<B, 4>,
        dims: [usize; 6],
    }

    impl<B: Kernels> Inputs<B> {
        fn random([batch, seq, heads, p, n, groups]: [usize; 6], device: &B::Device) -> Self {
            let normal = Distribution::Normal(0.0, 1.0);
            Self {
                x: Tensor::random([batch, seq, heads, p], normal, device),
                dt: Tensor::random([batch, seq, heads], Distribution::Uniform(0.001, 0.5), device),
                a: Tensor::random([heads], Distribution::Uniform(-8.0, -1.0), device),
                b: Tensor::random([batch, seq, groups, n], normal, device),
                c: Tensor::random([batch, seq, groups, n], normal, device),
                initial: Tensor::random([batch, heads, p, n], normal, device),
                dims: [batch, seq, heads, p, n, groups],
            }
        }

        fn reference(&self, initial: bool) -> (Vec<f64>, Vec<f64>) {
            let init = host(self.initial.clone());
            reference_scan(
                &host(self.x.clone()),
                &host(self.dt.clone()),
                &host(self.a.clone()),
                &host(self.b.clone()),
                &host(self.c.clone()),
                initial.then_some(init.as_slice()),
                self.dims,
            )
        }

        fn chunked(&self, initial: bool, chunk: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
            chunked_scan(
                self.x.clone(),
                self.dt.clone(),
                self.a.clone(),
                self.b.clone(),
                self.c.clone(),
                initial.then(|| self.initial.clone()),
                chunk,
            )
        }
    }

    // The scan alone, in f32, against the f64 recurrence: errors measured at 4e-8..7e-7 of the
    // output scale; 1e-5 leaves room for other backends' summation orders.
    const SCAN_TOLERANCE: f64 = 1e-5;

    #[test]
    fn chunked_scan_matches_the_recurrence_for_any_length_and_chunk() {
        let device = Default::default();
        // (seq, chunk): one partial chunk, exact multiples, a ragged tail, chunk of one token,
        // chunks evened out to 6 (one padding step) and to 7 (none).
        for (seq, chunk) in [(5, 8), (12, 4), (13, 4), (7, 1), (16, 16), (17, 8), (21, 8)] {
            for groups in [1, 2] {
                let inputs = Inputs::<Cpu>::random([2, seq, 4, 3, 5, groups], &device);
                for initial in [false, true] {
                    let (want_y, want_state) = inputs.reference(initial);
                    let (y, state) = inputs.chunked(initial, chunk);
                    let (ey, es) =
                        (relative_error(&host(y), &want_y), relative_error(&host(state), &want_state));
                    assert!(
                        ey < SCAN_TOLERANCE && es < SCAN_TOLERANCE,
                        "seq {seq}, chunk {chunk}, groups {groups}, initial {initial}: output error {ey:e}, \
                         state error {es:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn stepping_token_by_token_matches_the_recurrence() {
        let device = Default::default();
        let inputs = Inputs::<Cpu>::random([2, 9, 4, 3, 5, 2], &device);
        let (want_y, want_state) = inputs.reference(true);
        let (y, state) = sequential_scan(
            inputs.x.clone(),
            inputs.dt.clone(),
            inputs.a.clone(),
            inputs.b.clone(),
            inputs.c.clone(),
            Some(inputs.initial.clone()),
        );
        assert!(relative_error(&host(y), &want_y) < SCAN_TOLERANCE);
        assert!(relative_error(&host(state), &want_state) < SCAN_TOLERANCE);
    }

    #[test]
    fn many_chunks_carry_the_state_across_a_long_sequence() {
        // 128 chunks of slow decay, so a chunk's state still matters many chunks later, and
        // prefix sums of the log decay reach about -300 over the sequence.
        let device = Default::default();
        let mut inputs = Inputs::<Cpu>::random([1, 8192, 2, 2, 3, 1], &device);
        inputs.dt = Tensor::random([1, 8192, 2], Distribution::Uniform(0.001, 0.1), &device);
        inputs.a = Tensor::random([2], Distribution::Uniform(-1.0, -0.5), &device);
        let (want_y, want_state) = inputs.reference(true);
        let (y, state) = inputs.chunked(true, 64);
        let (ey, es) = (relative_error(&host(y), &want_y), relative_error(&host(state), &want_state));
        assert!(ey < SCAN_TOLERANCE && es < SCAN_TOLERANCE, "output error {ey:e}, state error {es:e}");
    }

    /// Gradients of `Σ w ∘ y + Σ v ∘ state_out` through the chunked scan, by autodiff, against
    /// central differences of the f64 recurrence (step 1e-6, so the differences are exact to
    /// about 1e-9 and the comparison measures the f32 autodiff error alone). Measured: up to 5e-7
    /// of `1 + |gradient|`; asked: 1e-4.
    #[test]
    fn chunked_scan_gradients_match_finite_differences_of_the_recurrence() {
        let device = Default::default();
        let dims @ [batch, seq, heads, p, n, _] = [2, 7, 4, 2, 3, 2];
        let inputs = Inputs::<CpuAutodiff>::random(dims, &device);
        let w =
            Tensor::<CpuAutodiff, 4>::random([batch, seq, heads, p], Distribution::Normal(0.0, 1.0), &device);
        let v =
            Tensor::<CpuAutodiff, 4>::random([batch, heads, p, n], Distribution::Normal(0.0, 1.0), &device);

        let x = inputs.x.clone().require_grad();
        let dt = inputs.dt.clone().require_grad();
        let a = inputs.a.clone().require_grad();
        let b = inputs.b.clone().require_grad();
        let c = inputs.c.clone().require_grad();
        let init = inputs.initial.clone().require_grad();
        let (y, state) =
            chunked_scan(x.clone(), dt.clone(), a.clone(), b.clone(), c.clone(), Some(init.clone()), 3);
        let loss = (y * w.clone()).sum() + (state * v.clone()).sum();
        let grads = loss.backward();

        let (wh, vh) = (host(w), host(v));
        let args = vec![
            host(x.clone()),
            host(dt.clone()),
            host(a.clone()),
            host(b.clone()),
            host(c.clone()),
            host(init.clone()),
        ];
        let loss_at = |args: &[Vec<f64>]| -> f64 {
            let (y, s) =
                reference_scan(&args[0], &args[1], &args[2], &args[3], &args[4], Some(&args[5]), dims);
            y.iter().zip(&wh).map(|(a, b)| a * b).sum::<f64>()
                + s.iter().zip(&vh).map(|(a, b)| a * b).sum::<f64>()
        };
        let autodiff: Vec<Vec<f64>> = vec![
            host(x.grad(&grads).expect("x grad")),
            host(dt.grad(&grads).expect("dt grad")),
            host(a.grad(&grads).expect("a grad")),
            host(b.grad(&grads).expect("b grad")),
            host(c.grad(&grads).expect("c grad")),
            host(init.grad(&grads).expect("initial grad")),
        ];
        let names = ["x", "dt", "A", "B", "C", "initial"];
        let h = 1e-6;
        for (k, name) in names.iter().enumerate() {
            let len = args[k].len();
            // First, last and a middle entry of every input.
            for i in [0, len / 2, len - 1] {
                let mut plus = args.clone();
                plus[k][i] += h;
                let mut minus = args.clone();
                minus[k][i] -= h;
                let numeric = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h);
                let got = autodiff[k][i];
                let err = (got - numeric).abs() / (1.0 + numeric.abs());
                assert!(err < 1e-4, "d loss / d {name}[{i}]: autodiff {got}, finite difference {numeric}");
            }
        }
    }
}
