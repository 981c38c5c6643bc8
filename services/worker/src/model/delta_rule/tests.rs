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
        let uniform = Tensor::<B, 3>::random([z, c, c], Distribution::Uniform(-1.0, 1.0), &device).tril(-1);
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
        let gated = |chunk| GatedDeltaNetConfig::new(hidden, heads, hidden / heads).with_chunk_size(chunk);
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
    let k = l2_normalize(Tensor::<B2, 3>::random([z, 64, 32], Distribution::Normal(0.0, 1.0), &device), 1e-6);
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
