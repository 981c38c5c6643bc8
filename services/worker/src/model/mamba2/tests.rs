use super::*;
use crate::backend::{Cpu, CpuAutodiff};
use crate::kernels::TrainingBackend;
use crate::model::ssd::reference_scan;
use search_space::ops::LayerSpec;

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

/// Agreement asked of every form of the mixer with the reference and with each other, relative
/// to the output scale. Measured: 7e-8 to 2.2e-7 (f32 against f64).
const TOLERANCE: f64 = 1e-4;

/// The dimensions of a test mixer.
#[derive(Clone, Copy, Debug)]
struct Dims {
    hidden: usize,
    heads: usize,
    head_dim: usize,
    state: usize,
    groups: usize,
    chunk: usize,
}

/// A mixer whose `D`, norm weight, `dt_bias` and conv bias are random too, so that no term of
/// the equations hides behind an initial 1, 0 or a tiny step size, and whose projections and
/// conv filters are drawn wider than the model's initialisation (0.02), so that at these tiny
/// widths every nonlinearity sees inputs of order one.
fn mixer<B: Kernels>(d: Dims, device: &B::Device) -> Mamba2<B> {
    let mut m = Mamba2Config::new(d.hidden, d.heads, d.head_dim, d.state)
        .with_groups(d.groups)
        .with_chunk_size(d.chunk)
        .with_init_std(0.2)
        .with_output_init_std(0.2)
        .init::<B>(device);
    let channels = m.conv.weight.dims()[0];
    m.conv.weight =
        Param::from_tensor(Tensor::random(m.conv.weight.dims(), Distribution::Uniform(-0.5, 0.5), device));
    m.conv.bias =
        Some(Param::from_tensor(Tensor::random([channels], Distribution::Uniform(-0.5, 0.5), device)));
    m.d = Param::from_tensor(Tensor::random([d.heads], Distribution::Normal(1.0, 0.5), device));
    m.norm.weight =
        Param::from_tensor(Tensor::random([d.heads * d.head_dim], Distribution::Normal(1.0, 0.3), device));
    m.dt_bias = Param::from_tensor(Tensor::random([d.heads], Distribution::Uniform(-3.0, 0.5), device));
    m
}

fn input<B: Backend>(batch: usize, seq: usize, d: Dims, device: &B::Device) -> Tensor<B, 3> {
    Tensor::random([batch, seq, d.hidden], Distribution::Normal(0.0, 1.0), device)
}

/// Runs `step` over every token of `x` from `state`, returning the outputs as a sequence.
fn step_through<B: Kernels>(m: &Mamba2<B>, x: Tensor<B, 3>, state: &mut Mamba2State<B>) -> Tensor<B, 3> {
    let [batch, seq, hidden] = x.dims();
    let ys = (0..seq)
        .map(|t| m.step(x.clone().slice([0..batch, t..t + 1, 0..hidden]).reshape([batch, hidden]), state))
        .collect();
    Tensor::stack(ys, 1)
}

/// The mixer's parameters in f64, and its forward pass written from the equations one token
/// and one channel at a time (the scan is [`reference_scan`], the recurrence itself).
#[derive(Clone, Debug)]
struct Reference {
    dims: Dims,
    kernel: usize,
    epsilon: f64,
    /// In the order of [`PARAMETERS`].
    params: [Vec<f64>; 8],
}

const PARAMETERS: [&str; 8] =
    ["in_proj", "conv.weight", "conv.bias", "dt_bias", "A_log", "D", "norm", "out_proj"];

impl Reference {
    fn of<B: Kernels>(m: &Mamba2<B>, dims: Dims) -> Self {
        let conv_bias = m.conv.bias.as_ref().expect("Mamba2's conv has a bias");
        Self {
            dims,
            kernel: m.conv.kernel,
            epsilon: m.norm.epsilon,
            params: [
                host(m.in_proj.weight.val()),
                host(m.conv.weight.val()),
                host(conv_bias.val()),
                host(m.dt_bias.val()),
                host(m.a_log.val()),
                host(m.d.val()),
                host(m.norm.weight.val()),
                host(m.out_proj.weight.val()),
            ],
        }
    }

    /// `x`: `[batch, seq, hidden]` row-major → `[batch, seq, hidden]`.
    fn forward(&self, x: &[f64], batch: usize, seq: usize) -> Vec<f64> {
        let [in_w, conv_w, conv_b, dt_bias, a_log, skip, norm_w, out_w] = &self.params;
        let Dims { hidden, heads, head_dim: p, state: n, groups: g, .. } = self.dims;
        let (di, bc, k) = (heads * p, g * n, self.kernel);
        let channels = di + 2 * bc;
        let width = di + channels + heads;
        let rows = batch * seq;
        let silu = |v: f64| v / (1.0 + (-v).exp());

        // [z, x, B, C, dt] = u · W_in (burn stores Linear weights as [in, out]).
        let mut proj = vec![0.0; rows * width];
        for row in 0..rows {
            for o in 0..width {
                proj[row * width + o] = (0..hidden).map(|i| x[row * hidden + i] * in_w[i * width + o]).sum();
            }
        }
        // Causal depthwise conv with bias over [x, B, C], then SiLU.
        let mut xbc = vec![0.0; rows * channels];
        for bi in 0..batch {
            for t in 0..seq {
                for c in 0..channels {
                    let mut acc = conv_b[c];
                    for j in 0..k {
                        if let Some(src) = (t + j).checked_sub(k - 1) {
                            acc += conv_w[c * k + j] * proj[(bi * seq + src) * width + di + c];
                        }
                    }
                    xbc[(bi * seq + t) * channels + c] = silu(acc);
                }
            }
        }
        let column = |from: usize, len: usize| -> Vec<f64> {
            (0..rows)
                .flat_map(|row| xbc[row * channels + from..row * channels + from + len].to_vec())
                .collect()
        };
        let (xs, bm, cm) = (column(0, di), column(di, bc), column(di + bc, bc));
        let dt: Vec<f64> = (0..rows * heads)
            .map(|i| {
                let v = proj[(i / heads) * width + di + channels + i % heads] + dt_bias[i % heads];
                v.exp().ln_1p()
            })
            .collect();
        let a: Vec<f64> = a_log.iter().map(|v| -v.exp()).collect();
        let (y, _) = reference_scan(&xs, &dt, &a, &bm, &cm, None, [batch, seq, heads, p, n, g]);

        // y + D·x, gated by silu(z), RMS-normalised per group, scaled, projected out.
        let group_width = di / g;
        let mut out = vec![0.0; rows * hidden];
        for row in 0..rows {
            let mut u: Vec<f64> = (0..di)
                .map(|c| (y[row * di + c] + skip[c / p] * xs[row * di + c]) * silu(proj[row * width + c]))
                .collect();
            for group in u.chunks_mut(group_width) {
                let mean_sq = group.iter().map(|v| v * v).sum::<f64>() / group_width as f64;
                let scale = 1.0 / (mean_sq + self.epsilon).sqrt();
                group.iter_mut().for_each(|v| *v *= scale);
            }
            for (c, v) in u.iter_mut().enumerate() {
                *v *= norm_w[c];
            }
            for o in 0..hidden {
                out[row * hidden + o] = (0..di).map(|c| u[c] * out_w[c * hidden + o]).sum();
            }
        }
        out
    }
}

#[test]
fn chunked_forward_stepping_and_the_reference_agree() {
    let device = Default::default();
    // (seq, chunk, groups): exact chunks, a ragged tail, shorter than one chunk, two groups.
    for (seq, chunk, groups) in [(12, 4, 1), (13, 4, 1), (3, 4, 1), (10, 4, 2)] {
        let dims = Dims { hidden: 8, heads: 4, head_dim: 3, state: 5, groups, chunk };
        let m = mixer::<Cpu>(dims, &device);
        let x = input::<Cpu>(2, seq, dims, &device);
        let want = Reference::of(&m, dims).forward(&host(x.clone()), 2, seq);

        let chunked = relative_error(&host(m.forward(x.clone())), &want);
        let stepped =
            relative_error(&host(step_through(&m, x.clone(), &mut m.zero_state(2, &device))), &want);
        let looped = relative_error(&host(m.forward_scan(x, Scan::PerToken)), &want);
        assert!(
            chunked < TOLERANCE && stepped < TOLERANCE && looped < TOLERANCE,
            "seq {seq}, chunk {chunk}, groups {groups}: chunked {chunked:e}, step {stepped:e}, loop {looped:e}"
        );
    }
}

#[test]
fn prefill_then_step_matches_the_full_forward() {
    let device = Default::default();
    let dims = Dims { hidden: 8, heads: 4, head_dim: 3, state: 5, groups: 1, chunk: 4 };
    let m = mixer::<Cpu>(dims, &device);
    let (batch, seq) = (2, 11);
    let x = input::<Cpu>(batch, seq, dims, &device);
    let part = |from: usize, to: usize| x.clone().slice([0..batch, from..to, 0..dims.hidden]);

    // A prefill longer than a chunk, one shorter than the conv window, then single tokens.
    let (first, state) = m.forward_with_state(part(0, 6), m.zero_state(batch, &device));
    let (second, mut state) = m.forward_with_state(part(6, 8), state);
    let rest = step_through(&m, part(8, seq), &mut state);
    let pieces = Tensor::cat(vec![first, second, rest], 1);

    let (whole, whole_state) = m.forward_with_state(x.clone(), m.zero_state(batch, &device));
    let want = host(m.forward(x));
    let err = relative_error(&host(pieces), &want);
    assert!(err < TOLERANCE, "prefill + step vs forward: {err:e}");
    assert!(relative_error(&host(whole), &want) < TOLERANCE);
    let ssm = relative_error(&host(state.ssm), &host(whole_state.ssm));
    let conv = relative_error(&host(state.conv.window), &host(whole_state.conv.window));
    assert!(ssm < TOLERANCE && conv < TOLERANCE, "final states: scan {ssm:e}, conv {conv:e}");
}

/// The gradient of `Σ w ∘ forward(x)` by autodiff, at the inputs and at entries of every
/// parameter, against central differences of the f64 reference (step 1e-6, exact to about
/// 1e-9): what is left is the f32 error of the chunked backward pass. Measured: up to 8.4e-7 of
/// `1 + |gradient|`; asked: 1e-4.
#[test]
fn chunked_gradients_match_finite_differences_of_the_reference() {
    type A = CpuAutodiff;
    let device = Default::default();
    for groups in [1, 2] {
        let dims = Dims { hidden: 6, heads: 2, head_dim: 2, state: 3, groups, chunk: 3 };
        let (batch, seq) = (2, 7);
        let m = mixer::<A>(dims, &device);
        let x = input::<A>(batch, seq, dims, &device).require_grad();
        let w = input::<A>(batch, seq, dims, &device);
        let grads = (m.forward(x.clone()) * w.clone()).sum().backward();

        let grad = |t: Tensor<A, 2>| host(t.grad(&grads).expect("gradient"));
        let grad1 = |t: Tensor<A, 1>| host(t.grad(&grads).expect("gradient"));
        let autodiff = [
            grad(m.in_proj.weight.val()),
            grad(m.conv.weight.val()),
            grad1(m.conv.bias.as_ref().expect("conv bias").val()),
            grad1(m.dt_bias.val()),
            grad1(m.a_log.val()),
            grad1(m.d.val()),
            grad1(m.norm.weight.val()),
            grad(m.out_proj.weight.val()),
        ];
        let x_grad = host(x.grad(&grads).expect("input gradient"));

        let reference = Reference::of(&m, dims);
        let (xh, wh) = (host(x), host(w));
        let loss = |r: &Reference, x: &[f64]| -> f64 {
            r.forward(x, batch, seq).iter().zip(&wh).map(|(a, b)| a * b).sum()
        };
        let h = 1e-6;
        let check = |name: &str, i: usize, got: f64, numeric: f64| {
            let err = (got - numeric).abs() / (1.0 + numeric.abs());
            assert!(
                err < 1e-4,
                "groups {groups}: d loss / d {name}[{i}]: autodiff {got}, finite difference {numeric}"
            );
        };
        for (k, name) in PARAMETERS.iter().enumerate() {
            let len = reference.params[k].len();
            for i in [0, len / 2, len - 1] {
                let (mut plus, mut minus) = (reference.clone(), reference.clone());
                plus.params[k][i] += h;
                minus.params[k][i] -= h;
                check(name, i, autodiff[k][i], (loss(&plus, &xh) - loss(&minus, &xh)) / (2.0 * h));
            }
        }
        for i in [0, xh.len() / 3, xh.len() - 1] {
            let (mut plus, mut minus) = (xh.clone(), xh.clone());
            plus[i] += h;
            minus[i] -= h;
            check("x", i, x_grad[i], (loss(&reference, &plus) - loss(&reference, &minus)) / (2.0 * h));
        }
    }
}

#[test]
fn parameter_count_matches_the_search_space_closed_form() {
    let device = Default::default();
    let specs = [
        // hidden, d_inner, heads, head_dim, state, groups, kernel
        (128, 256, 8, 32, 16, 1, 4),
        (96, 192, 6, 32, 8, 2, 4),
        (64, 64, 4, 16, 32, 1, 3),
        (1024, 2048, 32, 64, 128, 1, 4),
    ];
    for (hidden, d_inner, num_heads, head_dim, state_size, groups, conv_kernel) in specs {
        let spec = Mamba2Spec { d_inner, num_heads, head_dim, state_size, groups, conv_kernel };
        let m = Mamba2Config::from_spec(&spec, hidden as usize).init::<Cpu>(&device);
        let closed_form = LayerSpec::Mamba2(spec.clone()).params(hidden) - u64::from(hidden);
        assert_eq!(m.num_params() as u64, closed_form, "{spec:?} at hidden {hidden}");
    }
}

#[test]
fn initial_parameters_follow_the_reference_recipe() {
    let device = Default::default();
    let m = Mamba2Config::new(16, 6, 4, 8).init::<Cpu>(&device);
    let a_log = host(m.a_log.val());
    for (h, v) in a_log.iter().enumerate() {
        assert!((v - ((h + 1) as f64).ln()).abs() < 1e-6, "A_log[{h}] = {v}");
    }
    for dt in host(softplus(m.dt_bias.val())) {
        assert!((0.999e-3..=1.001e-1).contains(&dt), "initial dt {dt} outside [1e-3, 1e-1]");
    }
    assert!(host(m.d.val()).iter().all(|&v| v == 1.0));
    assert!(host(m.norm.weight.val()).iter().all(|&v| v == 1.0));
}

#[test]
#[should_panic(expected = "multiple of groups")]
fn heads_that_do_not_split_into_groups_are_rejected() {
    Mamba2Config::new(8, 3, 4, 4).with_groups(2).init::<Cpu>(&Default::default());
}

#[test]
#[should_panic(expected = "d_inner must equal")]
fn a_spec_whose_inner_width_is_not_heads_times_head_dim_is_rejected() {
    let spec =
        Mamba2Spec { d_inner: 100, num_heads: 4, head_dim: 32, state_size: 16, groups: 1, conv_kernel: 4 };
    Mamba2Config::from_spec(&spec, 64);
}

/// Forward + backward throughput of the chunked training form against the per-token loop, at
/// d_model 128 (expand 2, head_dim 32, N 16), seq 256, batch 8. A measurement, not a check:
/// `cargo test -p worker mamba2::tests::training_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; prints tokens/s"]
fn training_throughput_chunked_vs_per_token_loop() {
    fn tokens_per_s<B: TrainingBackend>(
        m: &Mamba2<B>,
        x: &Tensor<B, 3>,
        run: impl Fn(&Mamba2<B>, Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> f64 {
        let [batch, seq, _] = x.dims();
        let once = || {
            let loss = run(m, x.clone()).powi_scalar(2).mean();
            let grads = loss.backward();
            // Read one gradient back so the work is really done.
            let g = m.a_log.val().grad(&grads).expect("gradient");
            g.into_data();
        };
        once();
        let iters = 3;
        let start = std::time::Instant::now();
        for _ in 0..iters {
            once();
        }
        (iters * batch * seq) as f64 / start.elapsed().as_secs_f64()
    }

    let device = Default::default();
    let m = Mamba2Config::new(128, 8, 32, 16).with_chunk_size(64).init::<CpuAutodiff>(&device);
    let x = Tensor::<CpuAutodiff, 3>::random([8, 256, 128], Distribution::Normal(0.0, 1.0), &device);
    let chunked = tokens_per_s(&m, &x, |m, x| m.forward(x));
    let looped = tokens_per_s(&m, &x, |m, x| m.forward_scan(x, Scan::PerToken));
    println!("forward + backward, d_model 128, seq 256, batch 8 (tokens/s):");
    println!("  chunked (chunk 64):  {chunked:>10.0}");
    println!("  per-token loop:      {looped:>10.0}");
    println!("  speed-up:            {:>10.2}x", chunked / looped);
}
