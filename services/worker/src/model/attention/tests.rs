use super::*;
use crate::backend::{Cpu, CpuAutodiff};
use burn::module::Param;
use burn::nn::attention::generate_autoregressive_mask;
use burn::tensor::Distribution;
use search_space::ops::LayerSpec;

type B = Cpu;

fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().expect("f32 data")
}

fn bools(t: Tensor<B, 2, Bool>) -> Vec<bool> {
    t.into_data().to_vec::<bool>().expect("bool data")
}

/// `max |got − want| / max |want|`: one number per comparison that does not blow up on the
/// entries that happen to be near zero.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
    let scale = want.iter().map(|w| w.abs()).fold(0.0, f32::max);
    diff / scale
}

fn random(shape: [usize; 3]) -> Tensor<B, 3> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

/// Token `t` of `x` `[batch, seq, hidden]`, as `[batch, hidden]`.
fn token(x: &Tensor<B, 3>, t: usize) -> Tensor<B, 2> {
    let [batch, _, hidden] = x.dims();
    x.clone().narrow(1, t, 1).reshape([batch, hidden])
}

/// Attention written from the equations in the module doc, one scalar at a time in f64:
/// projections, rotate-half RoPE at positions `0..seq`, per-head softmax over the visible keys
/// (the window and the meta tokens), output projection.
fn reference(attn: &Attention<B>, x: &Tensor<B, 3>) -> Vec<f32> {
    let [batch, seq, hidden] = x.dims();
    let (h, kv, d) = (attn.num_heads, attn.num_kv_heads, attn.head_dim);
    let half = d / 2;
    let xs = host(x.clone());
    let w = |l: &Linear<B>| host(l.weight.val().unsqueeze::<3>());
    let (wq, wk, wv, wo) = (w(&attn.q_proj), w(&attn.k_proj), w(&attn.v_proj), w(&attn.o_proj));
    // y = x · W with W `[d_in, d_out]`, row-major.
    let matvec = |v: &[f64], w: &[f32], d_out: usize| -> Vec<f64> {
        (0..d_out)
            .map(|o| v.iter().enumerate().map(|(i, vi)| vi * f64::from(w[i * d_out + o])).sum())
            .collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        for i in 0..half {
            let angle = pos as f64 * attn.rope_theta.powf(-((2 * i) as f64) / d as f64);
            let (a, b) = (v[i], v[i + half]);
            v[i] = a * angle.cos() - b * angle.sin();
            v[i + half] = b * angle.cos() + a * angle.sin();
        }
    };
    let mut out = Vec::with_capacity(batch * seq * hidden);
    for bi in 0..batch {
        let row = |t: usize| -> Vec<f64> {
            xs[(bi * seq + t) * hidden..(bi * seq + t + 1) * hidden].iter().map(|&v| f64::from(v)).collect()
        };
        let (mut qs, mut ks, mut vs) = (vec![], vec![], vec![]);
        for t in 0..seq {
            let xt = row(t);
            let mut q = matvec(&xt, &wq, h * d);
            let mut k = matvec(&xt, &wk, kv * d);
            for head in 0..h {
                rope(&mut q[head * d..(head + 1) * d], t);
            }
            for head in 0..kv {
                rope(&mut k[head * d..(head + 1) * d], t);
            }
            qs.push(q);
            ks.push(k);
            vs.push(matvec(&xt, &wv, kv * d));
        }
        for (t, qt) in qs.iter().enumerate() {
            let first = attn.sliding_window.map_or(0, |w| (t + 1).saturating_sub(w));
            let visible: Vec<usize> = (0..=t).filter(|&s| s >= first || s < attn.meta_tokens).collect();
            let mut heads = vec![0.0; h * d];
            for head in 0..h {
                let g = head / (h / kv);
                let q = &qt[head * d..(head + 1) * d];
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&s| {
                        let k = &ks[s][g * d..(g + 1) * d];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for (&s, p) in visible.iter().zip(&weights) {
                    for e in 0..d {
                        heads[head * d + e] += p / total * vs[s][g * d + e];
                    }
                }
            }
            out.extend(matvec(&heads, &wo, hidden).into_iter().map(|v| v as f32));
        }
    }
    out
}

fn gqa_config(window: Option<usize>) -> AttentionConfig {
    // 4 query heads over 2 key/value heads; θ small enough that every frequency turns visibly
    // over a dozen positions, so a wrong position would show; projections wider than the
    // model's initialisation (0.02), so that the scores, and with them the softmax, vary.
    AttentionConfig::new(16, 4, 2, 6)
        .with_sliding_window(window)
        .with_rope_theta(100.0)
        .with_init_std(0.2)
        .with_output_init_std(0.2)
}

#[test]
fn rope_rotates_each_half_pair_by_position_times_frequency() {
    let device = Default::default();
    // head_dim 4, θ = 100: pair 0 = (x0, x2) turns by pos rad, pair 1 = (x1, x3) by pos/10 rad.
    let (cos, sin) = rope_angles::<B>(2, 2, 4, 100.0, &device);
    let x = Tensor::<B, 4>::from_floats([[[[1.0, 2.0, 3.0, 4.0]], [[1.0, 2.0, 3.0, 4.0]]]], &device);
    let got = host(rotate_half(x, cos, sin));
    // pos 2: [1·cos2 − 3·sin2, 2·cos0.2 − 4·sin0.2, 3·cos2 + 1·sin2, 4·cos0.2 + 2·sin0.2], then pos 3.
    let want = [
        -3.144_039_1,
        1.165_455_8,
        -0.339_143_08,
        4.317_605,
        -1.413_352_5,
        0.728_592_15,
        -2.828_857_5,
        4.412_386_4,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "got {got:?}, want {want:?}");
    }
}

#[test]
fn causal_mask_without_a_cache_is_burns_autoregressive_mask() {
    let device = Default::default();
    let attn = AttentionConfig::new(8, 2, 2, 4).init::<B>(&device);
    let ours = bools(attn.mask(0, 5, &[0, 1, 2, 3, 4], &device));
    let burns = bools(generate_autoregressive_mask::<B>(1, 5, &device).reshape([5, 5]));
    assert_eq!(ours, burns);
    // true = masked: the first query sees only the first key.
    assert_eq!(&ours[..5], &[false, true, true, true, true]);
}

#[test]
fn window_mask_after_a_cache_hides_keys_older_than_the_window_and_future_keys() {
    let device = Default::default();
    let attn = AttentionConfig::new(8, 2, 2, 4).with_sliding_window(Some(3)).init::<B>(&device);
    // 3 cached keys at positions 7, 8, 9, then queries 10 and 11 with their own keys.
    let got = bools(attn.mask(10, 2, &[7, 8, 9, 10, 11], &device));
    #[rustfmt::skip]
    let want = [
        true, false, false, false, true,  // query 10 sees 8, 9, 10
        true, true, false, false, false,  // query 11 sees 9, 10, 11
    ];
    assert_eq!(got, want);
}

#[test]
fn window_mask_keeps_the_meta_tokens_visible_to_every_query() {
    let device = Default::default();
    let attn =
        AttentionConfig::new(8, 2, 2, 4).with_sliding_window(Some(2)).with_meta_tokens(2).init::<B>(&device);
    // A cache holding the meta tokens 0 and 1 and the recent key 7, then queries 8 and 9.
    let got = bools(attn.mask(8, 2, &[0, 1, 7, 8, 9], &device));
    #[rustfmt::skip]
    let want = [
        false, false, false, false, true,  // query 8 sees 0, 1 and 7, 8
        false, false, true, false, false,  // query 9 sees 0, 1 and 8, 9
    ];
    assert_eq!(got, want);
    // Without a cache: the meta tokens are positions 0 and 1 of the sequence itself.
    let got = bools(attn.mask(0, 5, &[0, 1, 2, 3, 4], &device));
    #[rustfmt::skip]
    let want = [
        false, true,  true,  true,  true,
        false, false, true,  true,  true,
        false, false, false, true,  true,
        false, false, false, false, true,   // query 3 sees 0, 1 and 2, 3: meta and window overlap
        false, false, true,  false, false,  // query 4 sees 0, 1 and 3, 4
    ];
    assert_eq!(got, want);
}

#[test]
fn forward_matches_a_naive_reference() {
    let device = Default::default();
    for (window, meta) in [(None, 0), (Some(3), 0), (Some(3), 2), (None, 2)] {
        let attn = gqa_config(window).with_meta_tokens(meta).init::<B>(&device);
        let x = random([2, 9, 16]);
        let got = host(attn.forward(x.clone(), 0));
        let err = rel_err(&got, &reference(&attn, &x));
        assert!(err < 1e-5, "window {window:?}, {meta} meta tokens: relative error {err}");
    }
}

/// Windows and meta-token counts the decoding tests run: full attention, a plain window, and a
/// window with meta tokens that the sequences run far past.
const DECODE_CASES: [(Option<usize>, usize); 4] = [(None, 0), (Some(4), 0), (Some(3), 2), (None, 2)];

#[test]
fn decode_steps_with_the_cache_match_the_full_forward() {
    let device = Default::default();
    for (window, meta) in DECODE_CASES {
        let attn = gqa_config(window).with_meta_tokens(meta).init::<B>(&device);
        let x = random([2, 11, 16]);
        let full = attn.forward(x.clone(), 0);
        let mut cache = attn.empty_cache();
        for t in 0..11 {
            let got = host(attn.step(token(&x, t), &mut cache));
            let err = rel_err(&got, &host(token(&full, t)));
            assert!(err < 1e-4, "window {window:?}, {meta} meta tokens, token {t}: relative error {err}");
        }
        assert_eq!(cache.position(), 11);
    }
}

#[test]
fn prefill_in_chunks_then_steps_match_the_full_forward() {
    let device = Default::default();
    for (window, meta) in DECODE_CASES {
        let attn = gqa_config(window).with_meta_tokens(meta).init::<B>(&device);
        let x = random([2, 14, 16]);
        let full = attn.forward(x.clone(), 0);
        let mut cache = attn.empty_cache();
        // Two prefill chunks, the second longer than the window and attending over a cache,
        // then single steps.
        let mut got = vec![];
        for (start, len) in [(0, 3), (3, 6)] {
            got.push(attn.forward_with_cache(x.clone().narrow(1, start, len), &mut cache));
        }
        for t in 9..14 {
            got.push(attn.step(token(&x, t), &mut cache).unsqueeze_dim(1));
        }
        let err = rel_err(&host(Tensor::cat(got, 1)), &host(full));
        assert!(err < 1e-4, "window {window:?}, {meta} meta tokens: relative error {err}");
    }
}

#[test]
fn sliding_window_hides_keys_older_than_the_window() {
    let device = Default::default();
    let (w, t) = (3, 8);
    let attn = gqa_config(Some(w)).init::<B>(&device);
    let x = random([1, 10, 16]);
    // Changing token s changes only k_s and v_s as far as y_t (t ≠ s) is concerned.
    let perturbed = |s: usize| {
        let bump = Tensor::<B, 3>::ones([1, 1, 16], &device) * 3.0;
        x.clone().slice_assign([0..1, s..s + 1, 0..16], x.clone().narrow(1, s, 1) + bump)
    };
    let y_t = |x: Tensor<B, 3>| host(token(&attn.forward(x, 0), t));
    let y_t_decoded = |x: Tensor<B, 3>| {
        let mut cache = attn.empty_cache();
        let mut y = None;
        for s in 0..=t {
            y = Some(attn.step(token(&x, s), &mut cache));
        }
        host(y.expect("at least one step"))
    };
    for y_at in [&y_t as &dyn Fn(Tensor<B, 3>) -> Vec<f32>, &y_t_decoded] {
        let base = y_at(x.clone());
        let outside = rel_err(&y_at(perturbed(t - w)), &base);
        assert!(outside < 1e-6, "a key {w} positions back changed y_t by {outside}");
        let inside = rel_err(&y_at(perturbed(t - w + 1)), &base);
        assert!(inside > 1e-3, "a key inside the window left y_t unchanged ({inside})");
    }
}

#[test]
fn sliding_window_cache_keeps_only_the_window() {
    let device = Default::default();
    let attn = gqa_config(Some(4)).init::<B>(&device);
    let x = random([1, 12, 16]);
    let mut cache = attn.empty_cache();
    attn.forward_with_cache(x.clone().narrow(1, 0, 6), &mut cache);
    assert_eq!(cache.len(), 4);
    for t in 6..12 {
        attn.step(token(&x, t), &mut cache);
        assert_eq!(cache.len(), 4);
    }
    assert_eq!(cache.position(), 12);
    let full = gqa_config(None).init::<B>(&device);
    let mut cache = full.empty_cache();
    full.forward_with_cache(x, &mut cache);
    assert_eq!(cache.len(), 12);
}

#[test]
fn a_query_far_past_the_window_still_attends_to_the_meta_tokens() {
    let device = Default::default();
    let (w, meta, t) = (3, 2, 12);
    let attn = gqa_config(Some(w)).with_meta_tokens(meta).init::<B>(&device);
    let x = random([1, 14, 16]);
    let perturbed = |s: usize| {
        let bump = Tensor::<B, 3>::ones([1, 1, 16], &device) * 3.0;
        x.clone().slice_assign([0..1, s..s + 1, 0..16], x.clone().narrow(1, s, 1) + bump)
    };
    let y_t = |x: Tensor<B, 3>| host(token(&attn.forward(x, 0), t));
    let y_t_decoded = |x: Tensor<B, 3>| {
        let mut cache = attn.empty_cache();
        let mut y = None;
        for s in 0..=t {
            y = Some(attn.step(token(&x, s), &mut cache));
        }
        host(y.expect("at least one step"))
    };
    for y_at in [&y_t as &dyn Fn(Tensor<B, 3>) -> Vec<f32>, &y_t_decoded] {
        let base = y_at(x.clone());
        for s in 0..meta {
            let change = rel_err(&y_at(perturbed(s)), &base);
            assert!(change > 1e-3, "meta token {s} left y_{t} unchanged ({change})");
        }
        // Between the meta tokens and the window nothing is seen.
        for s in meta..=t - w {
            let change = rel_err(&y_at(perturbed(s)), &base);
            assert!(change < 1e-6, "key {s}, outside the window, changed y_{t} by {change}");
        }
    }
    // The naive masked softmax agrees at every position, this one included.
    let err = rel_err(&host(attn.forward(x.clone(), 0)), &reference(&attn, &x));
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn sliding_window_cache_keeps_the_meta_tokens_and_the_window() {
    let device = Default::default();
    let (w, meta) = (4, 3);
    let attn = gqa_config(Some(w)).with_meta_tokens(meta).init::<B>(&device);
    let x = random([1, 16, 16]);
    let mut cache = attn.empty_cache();
    attn.forward_with_cache(x.clone().narrow(1, 0, 9), &mut cache);
    assert_eq!(cache.len(), meta + w);
    assert_eq!(cache.key_positions(), [0, 1, 2, 5, 6, 7, 8]);
    for t in 9..16 {
        attn.step(token(&x, t), &mut cache);
        assert_eq!(cache.len(), meta + w);
    }
    assert_eq!(cache.key_positions(), [0, 1, 2, 12, 13, 14, 15]);
    // The kept keys are those of positions 0..meta and 12..16 in a cache that keeps everything.
    let mut unwindowed = attn.clone();
    unwindowed.sliding_window = None;
    let mut everything = unwindowed.empty_cache();
    unwindowed.forward_with_cache(x, &mut everything);
    let (kept, _) = cache.entries().unwrap();
    let (all, _) = everything.entries().unwrap();
    assert_eq!(host(kept.clone().narrow(2, 0, meta)), host(all.clone().narrow(2, 0, meta)));
    assert_eq!(host(kept.narrow(2, meta, w)), host(all.narrow(2, 12, w)));
}

#[test]
fn grouped_query_attention_equals_attention_with_repeated_kv_heads() {
    let device = Default::default();
    let gqa = gqa_config(None).init::<B>(&device);
    let mut mha = AttentionConfig::new(16, 4, 4, 6).with_rope_theta(100.0).init::<B>(&device);
    // Copies of the weights, never `clone()`s of the modules: burn initialises parameters lazily,
    // and a clone taken before the first use initialises again, to different random values.
    let copy = |l: &Linear<B>| Linear { weight: Param::from_tensor(l.weight.val()), bias: None };
    // Query head j reads key/value head j / 2: repeat each key/value head's columns twice.
    let repeat = |l: &Linear<B>| {
        let w = l.weight.val().reshape([16, 2, 1, 6]).repeat_dim(2, 2).reshape([16, 24]);
        Linear { weight: Param::from_tensor(w), bias: None }
    };
    mha.q_proj = copy(&gqa.q_proj);
    mha.k_proj = repeat(&gqa.k_proj);
    mha.v_proj = repeat(&gqa.v_proj);
    mha.o_proj = copy(&gqa.o_proj);
    let x = random([2, 7, 16]);
    let err = rel_err(&host(gqa.forward(x.clone(), 0)), &host(mha.forward(x, 0)));
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn parameter_count_matches_the_search_space() {
    let spec = AttentionSpec {
        num_heads: 6,
        num_kv_heads: 2,
        head_dim: 8,
        sliding_window: Some(16),
        rope_theta: 1e4,
    };
    let hidden = 40;
    let attn = AttentionConfig::from_spec(&spec, hidden).init::<B>(&Default::default());
    assert_eq!(attn.sliding_window, Some(16));
    let want = LayerSpec::Attention(spec).params(hidden as u32) - hidden as u64;
    assert_eq!(attn.num_params() as u64, want);
}

#[test]
fn gradients_reach_every_projection() {
    let device = Default::default();
    let attn = gqa_config(Some(3)).init::<CpuAutodiff>(&device);
    let x = Tensor::<CpuAutodiff, 3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &device);
    let grads = attn.forward(x, 0).powi_scalar(2).mean().backward();
    for (name, l) in [("q", &attn.q_proj), ("k", &attn.k_proj), ("v", &attn.v_proj), ("o", &attn.o_proj)] {
        let g = l.weight.grad(&grads).expect("a gradient");
        let norm: f32 = g.powi_scalar(2).sum().into_scalar();
        assert!(norm.is_finite() && norm > 0.0, "{name}_proj gradient norm {norm}");
    }
}

/// Speed, not a check: `cargo test -p worker model::attention -- --ignored --nocapture` (burn itself
/// is built at opt-level 3 in the test profile).
/// Prints training throughput at d_model 128, 4 heads, seq 256, batch 8 on `CpuAutodiff`, and the
/// decode step time against the cache length.
#[test]
#[ignore = "benchmark; run by hand"]
fn benchmark_training_throughput_and_decode_step_time() {
    use std::time::Instant;
    let device = Default::default();
    let (batch, seq, hidden) = (8, 256, 128);
    let attn = AttentionConfig::new(hidden, 4, 4, 32).init::<CpuAutodiff>(&device);
    let x = Tensor::<CpuAutodiff, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);
    let iteration = || {
        let loss = attn.forward(x.clone(), 0).powi_scalar(2).mean();
        let grads = loss.backward();
        let g = attn.q_proj.weight.grad(&grads).expect("a gradient");
        let _: f32 = g.sum().into_scalar();
    };
    iteration();
    let runs = 5;
    let started = Instant::now();
    for _ in 0..runs {
        iteration();
    }
    let secs = started.elapsed().as_secs_f64();
    let tokens_per_s = (runs * batch * seq) as f64 / secs;
    println!(
        "forward+backward, d_model {hidden}, 4 heads, seq {seq}, batch {batch}: {tokens_per_s:.0} tokens/s"
    );

    let attn = AttentionConfig::new(hidden, 4, 4, 32).init::<B>(&device);
    println!("decode step, batch 1, d_model {hidden}, 4 heads");
    println!("{:>12} {:>14}", "cache_len", "step_us");
    for cached in [64, 256, 1024, 4096] {
        let mut cache = attn.empty_cache();
        attn.forward_with_cache(random([1, cached, hidden]), &mut cache);
        let xs: Vec<Tensor<B, 2>> =
            (0..20).map(|_| Tensor::random([1, hidden], Distribution::Normal(0.0, 1.0), &device)).collect();
        // Warm-up steps so allocation patterns settle, timed on a copy of the cache each run.
        for x in xs.iter().take(3) {
            let mut warm = cache.clone();
            attn.step(x.clone(), &mut warm);
        }
        let started = Instant::now();
        for x in &xs {
            let y = attn.step(x.clone(), &mut cache);
            let _: f32 = y.sum().into_scalar();
        }
        let step_us = started.elapsed().as_secs_f64() * 1e6 / xs.len() as f64;
        println!("{cached:>12} {step_us:>14.1}");
    }
}
