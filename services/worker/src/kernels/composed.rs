//! The kernels written with burn's tensor operations: the defaults of
//! [`Kernels`](super::Kernels), run on every backend without fused loops and differentiated by
//! burn's autodiff, and the reference the fused forms are tested against.

use burn::prelude::*;
use burn::tensor::activation::silu;

use super::GateOrder;
use super::{Causal, contiguous};

/// [`Kernels::short_conv`](super::Kernels::short_conv) as a sum of `K` shifted, weighted
/// copies of the input: for kernel 4 much cheaper than a general convolution.
pub fn short_conv<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    act: bool,
) -> Tensor<B, 3> {
    let [batch, seq, channels] = x.dims();
    let k = weight.dims()[1];
    let padded =
        if k > 1 { Tensor::cat(vec![Tensor::zeros([batch, k - 1, channels], &x.device()), x], 1) } else { x };
    let mut y: Option<Tensor<B, 3>> = None;
    for j in 0..k {
        let tap = weight.clone().slice([0..channels, j..j + 1]).reshape([1, 1, channels]);
        // A shifted window of a batch is a strided view, and the product's backward would
        // multiply the gradient by it element by element: one copy measured twice as fast on
        // the flex backend for the whole convolution (forward and backward, `[8, 256, 128]`).
        let term = contiguous(padded.clone().slice([0..batch, j..j + seq, 0..channels])) * tap;
        y = Some(match y {
            Some(acc) => acc + term,
            None => term,
        });
    }
    let y = y.expect("a kernel has at least one tap");
    let y = match bias {
        Some(b) => y + b.reshape([1, 1, channels]),
        None => y,
    };
    if act { silu(y) } else { y }
}

/// `x / √(mean(x², last dim) + eps)`.
pub fn rms_normalize<B: Backend, const D: usize>(x: Tensor<B, D>, epsilon: f64) -> Tensor<B, D> {
    let mean_sq = x.clone().powi_scalar(2).mean_dim(D - 1);
    x * (mean_sq + epsilon).sqrt().recip()
}

/// [`Kernels::gated_rms_norm`](super::Kernels::gated_rms_norm).
pub fn gated_rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gate: Tensor<B, D>,
    weight: Tensor<B, 1>,
    groups: usize,
    order: GateOrder,
    epsilon: f64,
) -> Tensor<B, D> {
    let dims = x.dims();
    let width = dims[D - 1];
    assert!(groups > 0 && width.is_multiple_of(groups), "{groups} groups do not divide a width of {width}");
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut shape = [1; D];
    shape[D - 1] = width;
    let weight = weight.reshape(shape);
    let by_group =
        |t: Tensor<B, D>| rms_normalize(t.reshape([rows, groups, width / groups]), epsilon).reshape(dims);
    match order {
        GateOrder::NormThenGate => by_group(x) * weight * silu(gate),
        GateOrder::GateThenNorm => by_group(x * silu(gate)) * weight,
    }
}

/// [`Kernels::causal_decay`](super::Kernels::causal_decay): all `L²` differences out of one
/// batched product, `[G_i, 1] · [1, −G_j]ᵀ` (products by one are exact, so each entry is the
/// correctly rounded difference); the triangle is cut by adding a shared row that is 0 inside
/// and hugely negative outside, which `exp` turns into exact zeros. Three full-size passes
/// forward (product, add, exp), with no `inf` or `NaN` in either pass.
pub fn causal_decay<B: Backend>(cum: Tensor<B, 2>, causal: Causal) -> Tensor<B, 3> {
    let [m, l] = cum.dims();
    let device = cum.device();
    let column = cum.reshape([m, l, 1]);
    let ones = Tensor::<B, 3>::ones([m, l, 1], &device);
    let left = Tensor::cat(vec![column.clone(), ones.clone()], 2);
    let right = Tensor::cat(vec![ones, column.neg()], 2).swap_dims(1, 2);
    let differences = left.matmul(right).reshape([m, l * l]);
    (differences + causal.log_keep_row::<B>(l, &device)).exp().reshape([m, l, l])
}

/// [`Kernels::swiglu`](super::Kernels::swiglu).
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    silu(gate) * up
}
