//! The fused kernels against the composed forms: outputs, and every gradient under autodiff.

use burn::tensor::Distribution;

use super::Causal;
use super::*;
use crate::backend::{Cpu, CpuAutodiff};

type A = CpuAutodiff;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().expect("f32 data")
}

/// `max |got − want| / max |want|`.
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// Forward tolerance: the fused loops sum in another order (and the norms in f64).
const FORWARD_TOLERANCE: f32 = 1e-5;
/// Gradient tolerance, relative to the largest entry of each gradient.
const GRADIENT_TOLERANCE: f32 = 1e-4;

fn random<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Gradients of `Σ y ⊙ r` for a fixed random `r`, with respect to every input, from `f` run
/// on leaves built from `inputs`.
fn gradients<const D: usize, const N: usize>(
    inputs: &[Tensor<Cpu, 3>; N],
    r: &Tensor<Cpu, D>,
    f: impl Fn(&[Tensor<A, 3>; N]) -> Tensor<A, D>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let leaves: [Tensor<A, 3>; N] = inputs.clone().map(|t| Tensor::<A, 3>::from_inner(t).require_grad());
    let y = f(&leaves);
    let out = values(y.clone().inner());
    let grads = (y * Tensor::from_inner(r.clone())).sum().backward();
    let g = leaves.iter().map(|l| values(l.grad(&grads).expect("every input gets a gradient"))).collect();
    (out, g)
}

fn assert_agree(name: &str, fused: (Vec<f32>, Vec<Vec<f32>>), reference: (Vec<f32>, Vec<Vec<f32>>)) {
    let e = relative_error(&fused.0, &reference.0);
    assert!(e < FORWARD_TOLERANCE, "{name}: outputs differ by {e:e} of scale");
    for (i, (g, want)) in fused.1.iter().zip(&reference.1).enumerate() {
        let e = relative_error(g, want);
        assert!(e < GRADIENT_TOLERANCE, "{name}: gradient of input {i} differs by {e:e} of scale");
    }
}

/// Inputs are packed as rank-3 tensors; a weight `[c, k]` travels as `[1, c, k]`.
fn as_weight<B: Backend>(t: &Tensor<B, 3>) -> Tensor<B, 2> {
    let [_, c, k] = t.dims();
    t.clone().reshape([c, k])
}

fn as_vector<B: Backend>(t: &Tensor<B, 3>) -> Tensor<B, 1> {
    let n = t.dims().iter().product::<usize>();
    t.clone().reshape([n])
}

#[test]
fn fused_short_conv_and_its_gradients_match_the_composed_form() {
    let device = Default::default();
    // Sequences longer and shorter than the kernel; kernel 4 as in the mixers, 1 and 3 too.
    for (batch, seq, channels, kernel) in [(2, 9, 5, 4), (3, 2, 4, 4), (1, 7, 3, 1), (2, 6, 8, 3)] {
        let x = random::<Cpu, 3>([batch, seq, channels], &device);
        let w = random::<Cpu, 3>([1, channels, kernel], &device);
        let b = random::<Cpu, 3>([1, 1, channels], &device);
        let r = random::<Cpu, 3>([batch, seq, channels], &device);
        for silu in [false, true] {
            let name = format!("conv {batch}x{seq}x{channels} k{kernel} silu {silu}");
            // Inference backend.
            let fused = values(Cpu::short_conv(x.clone(), as_weight(&w), Some(as_vector(&b)), silu));
            let want = values(composed::short_conv(x.clone(), as_weight(&w), Some(as_vector(&b)), silu));
            let e = relative_error(&fused, &want);
            assert!(e < FORWARD_TOLERANCE, "{name}: inference output differs by {e:e}");
            // Training backend, with and without a bias.
            assert_agree(
                &name,
                gradients(&[x.clone(), w.clone(), b.clone()], &r, |[x, w, b]| {
                    A::short_conv(x.clone(), as_weight(w), Some(as_vector(b)), silu)
                }),
                gradients(&[x.clone(), w.clone(), b.clone()], &r, |[x, w, b]| {
                    composed::short_conv(x.clone(), as_weight(w), Some(as_vector(b)), silu)
                }),
            );
            assert_agree(
                &format!("{name} without bias"),
                gradients(&[x.clone(), w.clone()], &r, |[x, w]| {
                    A::short_conv(x.clone(), as_weight(w), None, silu)
                }),
                gradients(&[x.clone(), w.clone()], &r, |[x, w]| {
                    composed::short_conv(x.clone(), as_weight(w), None, silu)
                }),
            );
        }
    }
}

#[test]
fn fused_gated_norm_and_its_gradients_match_the_composed_form() {
    let device = Default::default();
    for (rows, width, groups) in [(6, 8, 1), (5, 12, 3), (1, 4, 2)] {
        let x = random::<Cpu, 3>([rows, 1, width], &device);
        let g = random::<Cpu, 3>([rows, 1, width], &device);
        let w = random::<Cpu, 3>([1, 1, width], &device);
        let r = random::<Cpu, 3>([rows, 1, width], &device);
        for order in [GateOrder::NormThenGate, GateOrder::GateThenNorm] {
            let name = format!("norm {rows}x{width} groups {groups} {order:?}");
            let fused = values(Cpu::gated_rms_norm(x.clone(), g.clone(), as_vector(&w), groups, order, 1e-5));
            let want =
                values(composed::gated_rms_norm(x.clone(), g.clone(), as_vector(&w), groups, order, 1e-5));
            let e = relative_error(&fused, &want);
            assert!(e < FORWARD_TOLERANCE, "{name}: inference output differs by {e:e}");
            assert_agree(
                &name,
                gradients(&[x.clone(), g.clone(), w.clone()], &r, |[x, g, w]| {
                    A::gated_rms_norm(x.clone(), g.clone(), as_vector(w), groups, order, 1e-5)
                }),
                gradients(&[x.clone(), g.clone(), w.clone()], &r, |[x, g, w]| {
                    composed::gated_rms_norm(x.clone(), g.clone(), as_vector(w), groups, order, 1e-5)
                }),
            );
        }
    }
}

#[test]
fn fused_causal_decay_and_its_gradient_match_the_composed_form() {
    let device = Default::default();
    // Decays from slight to strong, chunk sizes with and without a power of two.
    for (m, l, strength) in [(4, 8, 0.05), (3, 13, 1.0), (2, 64, 0.3)] {
        let g = Tensor::<Cpu, 2>::random([m, l], Distribution::Uniform(-strength, 0.0), &device);
        let cum = g.cumsum(1).reshape([m, l, 1]);
        let inputs = [cum.clone()];
        let r = random::<Cpu, 3>([m, l, l], &device);
        for causal in [Causal::Inclusive, Causal::Strict] {
            let name = format!("decay {m}x{l} strength {strength} {causal:?}");
            let flat = |t: &Tensor<Cpu, 3>| t.clone().reshape([m, l]);
            let fused = values(Cpu::causal_decay(flat(&cum), causal));
            let want = values(composed::causal_decay(flat(&cum), causal));
            let e = relative_error(&fused, &want);
            assert!(e < FORWARD_TOLERANCE, "{name}: inference output differs by {e:e}");
            let flat = |t: &Tensor<A, 3>| t.clone().reshape([m, l]);
            assert_agree(
                &name,
                gradients(&inputs, &r, |[c]| A::causal_decay(flat(c), causal)),
                gradients(&inputs, &r, |[c]| composed::causal_decay(flat(c), causal)),
            );
        }
    }
}

#[test]
fn fused_swiglu_and_its_gradients_match_the_composed_form() {
    let device = Default::default();
    for (a, b, width) in [(2, 7, 12), (1, 1, 1), (3, 33, 96)] {
        let gate = random::<Cpu, 3>([a, b, width], &device).mul_scalar(3.0);
        let up = random::<Cpu, 3>([a, b, width], &device);
        let r = random::<Cpu, 3>([a, b, width], &device);
        let name = format!("swiglu {a}x{b}x{width}");
        let fused = values(Cpu::swiglu(gate.clone(), up.clone()));
        let want = values(composed::swiglu(gate.clone(), up.clone()));
        let e = relative_error(&fused, &want);
        assert!(e < FORWARD_TOLERANCE, "{name}: inference output differs by {e:e}");
        assert_agree(
            &name,
            gradients(&[gate.clone(), up.clone()], &r, |[g, u]| A::swiglu(g.clone(), u.clone())),
            gradients(&[gate.clone(), up.clone()], &r, |[g, u]| composed::swiglu(g.clone(), u.clone())),
        );
    }
}

#[test]
fn fused_kernels_read_strided_views_as_their_values() {
    // A transposed view goes through the same kernels as its row-major copy.
    let device = Default::default();
    let x = random::<Cpu, 3>([4, 6, 3], &device);
    let view = x.clone().swap_dims(0, 1);
    let copy = Tensor::<Cpu, 3>::from_data(view.clone().into_data(), &device);
    let w = random::<Cpu, 2>([3, 4], &device);
    assert_eq!(
        values(Cpu::short_conv(view.clone(), w.clone(), None, true)),
        values(Cpu::short_conv(copy.clone(), w, None, true))
    );
}

#[test]
fn untracked_inputs_get_no_gradient_and_tracked_ones_do() {
    let device = Default::default();
    let x = Tensor::<A, 3>::from_inner(random::<Cpu, 3>([2, 5, 4], &device));
    let w = Tensor::<A, 2>::from_inner(random::<Cpu, 2>([4, 4], &device)).require_grad();
    let grads = A::short_conv(x.clone(), w.clone(), None, true).sum().backward();
    assert!(x.grad(&grads).is_none(), "x was not tracked");
    let gw = values(w.grad(&grads).expect("the weight was tracked"));
    assert!(gw.iter().any(|v| *v != 0.0), "the weight's gradient is not all zeros");
}
