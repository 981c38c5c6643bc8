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
