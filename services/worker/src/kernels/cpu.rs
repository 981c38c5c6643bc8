//! The fused kernels as plain f32 loops over row-major slices: one pass over memory where the
//! tensor-operation form makes several, each with its own allocation. Rows are independent and
//! run in parallel on rayon's pool (the same pool the flex backend uses); gradients of weights
//! shared by all rows are summed from per-task partials.

use rayon::prelude::*;

/// `σ(a) = 1 / (1 + e^{−a})`.
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
}

/// `silu(a) = a σ(a)` and its derivative `σ(a) (1 + a (1 − σ(a)))`.
fn silu_and_slope(a: f32) -> (f32, f32) {
    let s = sigmoid(a);
    (a * s, s * (1.0 + a * (1.0 - s)))
}

/// How many rows of `width` one parallel task takes: enough tasks to balance the pool, each
/// large enough that scheduling it costs little against its work.
fn rows_per_task(rows: usize, width: usize) -> usize {
    let tasks = 4 * rayon::current_num_threads();
    rows.div_ceil(tasks).max(4096usize.div_ceil(width.max(1))).max(1)
}

/// Shape of a short causal convolution: `[batch, seq, channels]` with `kernel` taps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub seq: usize,
    pub channels: usize,
    pub kernel: usize,
}

/// `[channels, kernel]` filters as `[kernel, channels]`: one contiguous row per tap.
fn taps_first(weight: &[f32], channels: usize, kernel: usize) -> Vec<f32> {
    (0..kernel).flat_map(|j| (0..channels).map(move |c| weight[c * kernel + j])).collect()
}

/// The pre-activation of one output row: `bias + Σ_j w[:, j] ⊙ x[t − (K − 1) + j]`, zeros
/// before the sequence start. `batch_x` is the batch element's `[seq, channels]`.
fn conv_row(
    batch_x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    t: usize,
    shape: ConvShape,
    out: &mut [f32],
) {
    let (c, k) = (shape.channels, shape.kernel);
    match bias {
        Some(b) => out.copy_from_slice(b),
        None => out.fill(0.0),
    }
    for j in 0..k {
        // Tap j reads token t − (K − 1) + j.
        let Some(src) = (t + j).checked_sub(k - 1) else { continue };
        let row = &batch_x[src * c..(src + 1) * c];
        let w = &taps[j * c..(j + 1) * c];
        for ((o, &x), &w) in out.iter_mut().zip(row).zip(w) {
            *o += w * x;
        }
    }
}

/// Depthwise causal convolution, then SiLU when `silu`.
///
/// - `x`: `[batch, seq, channels]`; `weight`: `[channels, kernel]`; `bias`: `[channels]`
/// - returns `[batch, seq, channels]`
pub fn conv_forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: ConvShape,
    silu: bool,
) -> Vec<f32> {
    let ConvShape { batch, seq, channels: c, kernel: k } = shape;
    let taps = taps_first(weight, c, k);
    let mut y = vec![0.0f32; batch * seq * c];
    let rows = rows_per_task(batch * seq, c);
    y.par_chunks_mut(rows * c).enumerate().for_each(|(task, block)| {
        for (i, out) in block.chunks_mut(c).enumerate() {
            let r = task * rows + i;
            let (b, t) = (r / seq, r % seq);
            conv_row(&x[b * seq * c..(b + 1) * seq * c], &taps, bias, t, shape, out);
            if silu {
                out.iter_mut().for_each(|v| *v = silu_and_slope(*v).0);
            }
        }
    });
    y
}

/// Gradients of [`conv_forward`] with respect to `x`, `weight` (`[channels, kernel]`) and the
/// bias (`[channels]`), given the output gradient `grad`. The pre-activation is recomputed
/// rather than stored: four multiply-adds per element.
pub fn conv_backward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    grad: &[f32],
    shape: ConvShape,
    silu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let ConvShape { batch, seq, channels: c, kernel: k } = shape;
    let taps = taps_first(weight, c, k);
    let mut grad_x = vec![0.0f32; batch * seq * c];
    // One task per batch element: each sums its own share of the weight and bias gradients.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = grad_x
        .par_chunks_mut(seq * c)
        .enumerate()
        .map(|(b, gx)| {
            let xb = &x[b * seq * c..(b + 1) * seq * c];
            let gb = &grad[b * seq * c..(b + 1) * seq * c];
            // The gradient at the pre-activation.
            let mut ga = gb.to_vec();
            if silu {
                let mut a = vec![0.0f32; c];
                for t in 0..seq {
                    conv_row(xb, &taps, bias, t, shape, &mut a);
                    for (g, &a) in ga[t * c..(t + 1) * c].iter_mut().zip(&a) {
                        *g *= silu_and_slope(a).1;
                    }
                }
            }
            let mut grad_taps = vec![0.0f32; k * c];
            let mut grad_bias = vec![0.0f32; c];
            for t in 0..seq {
                let g = &ga[t * c..(t + 1) * c];
                grad_bias.iter_mut().zip(g).for_each(|(s, &g)| *s += g);
                for j in 0..k {
                    let Some(src) = (t + j).checked_sub(k - 1) else { continue };
                    let w = &taps[j * c..(j + 1) * c];
                    let xs = &xb[src * c..(src + 1) * c];
                    let gxs = &mut gx[src * c..(src + 1) * c];
                    let gw = &mut grad_taps[j * c..(j + 1) * c];
                    for i in 0..c {
                        gxs[i] += w[i] * g[i];
                        gw[i] += g[i] * xs[i];
                    }
                }
            }
            (grad_taps, grad_bias)
        })
        .collect();
    let mut grad_taps = vec![0.0f32; k * c];
    let mut grad_bias = vec![0.0f32; c];
    for (gw, gb) in &partials {
        grad_taps.iter_mut().zip(gw).for_each(|(s, v)| *s += v);
        grad_bias.iter_mut().zip(gb).for_each(|(s, v)| *s += v);
    }
    let grad_weight = (0..c).flat_map(|i| (0..k).map(|j| grad_taps[j * c + i]).collect::<Vec<_>>()).collect();
    (grad_x, grad_weight, grad_bias)
}

/// Where the SiLU gate of a gated RMSNorm applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateOrder {
    /// `rmsnorm(x) · w · silu(g)` (Gated DeltaNet).
    NormThenGate,
    /// `rmsnorm(x · silu(g)) · w` (Mamba2).
    GateThenNorm,
}

/// Shape of a gated RMSNorm: `rows` rows of `width`, each cut into `groups` equal groups that
/// are normalised separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormShape {
    pub rows: usize,
    pub width: usize,
    pub groups: usize,
}

/// Gated RMSNorm of every row, `1/√(mean(v²) + eps)` over each group of `v`.
///
/// - `x`, `gate`: `[rows, width]`; `weight`: `[width]`
pub fn gated_norm_forward(
    x: &[f32],
    gate: &[f32],
    weight: &[f32],
    shape: NormShape,
    order: GateOrder,
    epsilon: f32,
) -> Vec<f32> {
    let NormShape { rows, width, groups } = shape;
    let gw = width / groups;
    let mut y = vec![0.0f32; rows * width];
    let per_task = rows_per_task(rows, width);
    y.par_chunks_mut(per_task * width).enumerate().for_each(|(task, block)| {
        let start = task * per_task * width;
        for (i, out) in block.chunks_mut(gw).enumerate() {
            let at = start + i * gw;
            let (xs, gs) = (&x[at..at + gw], &gate[at..at + gw]);
            let ws = &weight[(at % width)..(at % width) + gw];
            match order {
                GateOrder::NormThenGate => {
                    let r = inverse_rms(xs.iter().copied(), gw, epsilon);
                    for (((o, &x), &g), &w) in out.iter_mut().zip(xs).zip(gs).zip(ws) {
                        *o = x * r * w * silu_and_slope(g).0;
                    }
                }
                GateOrder::GateThenNorm => {
                    for ((o, &x), &g) in out.iter_mut().zip(xs).zip(gs) {
                        *o = x * silu_and_slope(g).0;
                    }
                    let r = inverse_rms(out.iter().copied(), gw, epsilon);
                    out.iter_mut().zip(ws).for_each(|(o, &w)| *o *= r * w);
                }
            }
        }
    });
    y
}

/// `1 / √(Σ v² / n + eps)`, summed in f64.
fn inverse_rms(v: impl Iterator<Item = f32>, n: usize, epsilon: f32) -> f32 {
    let sum: f64 = v.map(|v| f64::from(v) * f64::from(v)).sum();
    (1.0 / (sum / n as f64 + f64::from(epsilon)).sqrt()) as f32
}

/// Gradients of [`gated_norm_forward`] with respect to `x`, `gate` and `weight`.
///
/// With `n = v · r` the normalised group and `p` the gradient reaching `n`, the gradient at
/// `v` is `r (p − n · mean(p ⊙ n))`.
pub fn gated_norm_backward(
    x: &[f32],
    gate: &[f32],
    weight: &[f32],
    grad: &[f32],
    shape: NormShape,
    order: GateOrder,
    epsilon: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let NormShape { rows, width, groups } = shape;
    let gw = width / groups;
    let mut grad_x = vec![0.0f32; rows * width];
    let mut grad_gate = vec![0.0f32; rows * width];
    let per_task = rows_per_task(rows, width);
    let partials: Vec<Vec<f32>> = grad_x
        .par_chunks_mut(per_task * width)
        .zip(grad_gate.par_chunks_mut(per_task * width))
        .enumerate()
        .map(|(task, (gx_block, gg_block))| {
            let start = task * per_task * width;
            let mut grad_weight = vec![0.0f32; width];
            let mut v = vec![0.0f32; gw];
            let mut p = vec![0.0f32; gw];
            for (i, (gx, gg)) in gx_block.chunks_mut(gw).zip(gg_block.chunks_mut(gw)).enumerate() {
                let at = start + i * gw;
                let col = at % width;
                let (xs, gs, dy) = (&x[at..at + gw], &gate[at..at + gw], &grad[at..at + gw]);
                let ws = &weight[col..col + gw];
                let gws = &mut grad_weight[col..col + gw];
                match order {
                    GateOrder::NormThenGate => {
                        let r = inverse_rms(xs.iter().copied(), gw, epsilon);
                        let mut dot = 0.0f64;
                        for i in 0..gw {
                            let (s, ds) = silu_and_slope(gs[i]);
                            let n = xs[i] * r;
                            p[i] = dy[i] * ws[i] * s;
                            dot += f64::from(p[i]) * f64::from(n);
                            gg[i] = dy[i] * n * ws[i] * ds;
                            gws[i] += dy[i] * n * s;
                        }
                        let mean = (dot / gw as f64) as f32;
                        for i in 0..gw {
                            gx[i] = r * (p[i] - xs[i] * r * mean);
                        }
                    }
                    GateOrder::GateThenNorm => {
                        for i in 0..gw {
                            v[i] = xs[i] * silu_and_slope(gs[i]).0;
                        }
                        let r = inverse_rms(v.iter().copied(), gw, epsilon);
                        let mut dot = 0.0f64;
                        for i in 0..gw {
                            let n = v[i] * r;
                            p[i] = dy[i] * ws[i];
                            dot += f64::from(p[i]) * f64::from(n);
                            gws[i] += dy[i] * n;
                        }
                        let mean = (dot / gw as f64) as f32;
                        for i in 0..gw {
                            let (s, ds) = silu_and_slope(gs[i]);
                            let gv = r * (p[i] - v[i] * r * mean);
                            gx[i] = gv * s;
                            gg[i] = gv * xs[i] * ds;
                        }
                    }
                }
            }
            grad_weight
        })
        .collect();
    let mut grad_weight = vec![0.0f32; width];
    for part in &partials {
        grad_weight.iter_mut().zip(part).for_each(|(s, v)| *s += v);
    }
    (grad_x, grad_gate, grad_weight)
}

/// `Γ[r, i, j] = exp(G[r, i] − G[r, j])` for `j ≤ i` (`j < i` when `strict`), 0 elsewhere:
/// only the kept triangle is ever exponentiated.
///
/// - `cum`: `[m, l]` → `[m, l, l]`
pub fn causal_decay_forward(cum: &[f32], m: usize, l: usize, strict: bool) -> Vec<f32> {
    let mut out = vec![0.0f32; m * l * l];
    let per_task = rows_per_task(m, l * l);
    out.par_chunks_mut(per_task * l * l).enumerate().for_each(|(task, block)| {
        for (k, matrix) in block.chunks_mut(l * l).enumerate() {
            let g = &cum[(task * per_task + k) * l..][..l];
            for (i, row) in matrix.chunks_mut(l).enumerate() {
                let end = if strict { i } else { i + 1 };
                for (o, &gj) in row[..end].iter_mut().zip(&g[..end]) {
                    *o = (g[i] - gj).exp();
                }
            }
        }
    });
    out
}

/// Gradient of [`causal_decay_forward`] from its output `decay` and the output gradient:
/// `∂/∂G[r, k] = Σ_j grad[r, k, j] Γ[r, k, j] − Σ_i grad[r, i, k] Γ[r, i, k]` (`Γ` is zero
/// outside the triangle, so the sums run over it alone).
pub fn causal_decay_backward(decay: &[f32], grad: &[f32], m: usize, l: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * l];
    let per_task = rows_per_task(m, l * l);
    out.par_chunks_mut(per_task * l).enumerate().for_each(|(task, block)| {
        let mut column = vec![0.0f32; l];
        for (k, gc) in block.chunks_mut(l).enumerate() {
            let at = (task * per_task + k) * l * l;
            let (d, g) = (&decay[at..at + l * l], &grad[at..at + l * l]);
            column.fill(0.0);
            for i in 0..l {
                let (dr, gr) = (&d[i * l..(i + 1) * l], &g[i * l..(i + 1) * l]);
                let mut row = 0.0f32;
                for ((c, &dv), &gv) in column.iter_mut().zip(dr).zip(gr) {
                    let p = dv * gv;
                    row += p;
                    *c += p;
                }
                gc[i] = row;
            }
            gc.iter_mut().zip(&column).for_each(|(o, c)| *o -= c);
        }
    });
    out
}

/// `silu(gate) ⊙ up`, elementwise.
pub fn swiglu_forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; gate.len()];
    let chunk = rows_per_task(gate.len(), 1);
    out.par_chunks_mut(chunk).zip(gate.par_chunks(chunk)).zip(up.par_chunks(chunk)).for_each(
        |((o, g), u)| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = silu_and_slope(g).0 * u;
            }
        },
    );
    out
}

/// Gradients of [`swiglu_forward`] with respect to `gate` and `up`.
pub fn swiglu_backward(gate: &[f32], up: &[f32], grad: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut grad_gate = vec![0.0f32; gate.len()];
    let mut grad_up = vec![0.0f32; gate.len()];
    let chunk = rows_per_task(gate.len(), 1);
    grad_gate
        .par_chunks_mut(chunk)
        .zip(grad_up.par_chunks_mut(chunk))
        .zip(gate.par_chunks(chunk).zip(up.par_chunks(chunk)).zip(grad.par_chunks(chunk)))
        .for_each(|((gg, gu), ((g, u), dy))| {
            for i in 0..gg.len() {
                let (s, ds) = silu_and_slope(g[i]);
                gg[i] = dy[i] * u[i] * ds;
                gu[i] = dy[i] * s;
            }
        });
    (grad_gate, grad_up)
}
