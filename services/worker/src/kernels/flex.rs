//! The flex CPU backend's kernels: the [`cpu`] loops over the tensors' memory, for f32 tensors
//! (anything else takes the composed form).

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorData, TensorPrimitive};

use super::Causal;
use super::cpu::{self, ConvShape, GateOrder, NormShape};
use super::{Kernels, composed};

/// The tensor's memory in row-major order, copied only when it is a strided view.
pub(super) fn dense(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() }
}

/// The f32 values of a tensor [`dense`] returned.
pub(super) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a dense f32 tensor")
}

/// A flex tensor holding `values` in row-major order.
pub(super) fn from_values(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

fn primitive<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    dense(t.into_primitive().tensor())
}

fn tensor<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

pub(super) fn is_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    t.dtype() == DType::F32
}

/// The shape of a convolution of `x` (`[batch, seq, channels]`) by `weight` (`[channels, K]`).
pub(super) fn conv_shape(x: [usize; 3], weight: [usize; 2]) -> ConvShape {
    assert_eq!(x[2], weight[0], "the filters must match the channels");
    ConvShape { batch: x[0], seq: x[1], channels: x[2], kernel: weight[1] }
}

/// The shape of a gated norm of `x` over its last dimension in `groups` groups.
pub(super) fn norm_shape(dims: &[usize], groups: usize) -> NormShape {
    let width = dims[dims.len() - 1];
    assert!(groups > 0 && width.is_multiple_of(groups), "{groups} groups do not divide a width of {width}");
    NormShape { rows: dims[..dims.len() - 1].iter().product(), width, groups }
}

impl Kernels for Flex {
    fn short_conv(
        x: Tensor<Self, 3>,
        weight: Tensor<Self, 2>,
        bias: Option<Tensor<Self, 1>>,
        silu: bool,
    ) -> Tensor<Self, 3> {
        if !is_f32(&x) || !is_f32(&weight) || bias.as_ref().is_some_and(|b| !is_f32(b)) {
            return composed::short_conv(x, weight, bias, silu);
        }
        let shape = conv_shape(x.dims(), weight.dims());
        let dims = x.dims();
        let (x, weight, bias) = (primitive(x), primitive(weight), bias.map(primitive));
        let y = cpu::conv_forward(values(&x), values(&weight), bias.as_ref().map(values), shape, silu);
        tensor(from_values(y, &dims))
    }

    fn gated_rms_norm<const D: usize>(
        x: Tensor<Self, D>,
        gate: Tensor<Self, D>,
        weight: Tensor<Self, 1>,
        groups: usize,
        order: GateOrder,
        epsilon: f64,
    ) -> Tensor<Self, D> {
        if !is_f32(&x) || !is_f32(&gate) || !is_f32(&weight) {
            return composed::gated_rms_norm(x, gate, weight, groups, order, epsilon);
        }
        let dims = x.dims();
        let shape = norm_shape(&dims, groups);
        let (x, gate, weight) = (primitive(x), primitive(gate), primitive(weight));
        let y =
            cpu::gated_norm_forward(values(&x), values(&gate), values(&weight), shape, order, epsilon as f32);
        tensor(from_values(y, &dims))
    }

    fn causal_decay(cum: Tensor<Self, 2>, causal: Causal) -> Tensor<Self, 3> {
        if !is_f32(&cum) {
            return composed::causal_decay(cum, causal);
        }
        let [m, l] = cum.dims();
        let cum = primitive(cum);
        tensor(from_values(
            cpu::causal_decay_forward(values(&cum), m, l, causal == Causal::Strict),
            &[m, l, l],
        ))
    }

    fn swiglu<const D: usize>(gate: Tensor<Self, D>, up: Tensor<Self, D>) -> Tensor<Self, D> {
        if !is_f32(&gate) || !is_f32(&up) || gate.dims() != up.dims() {
            return composed::swiglu(gate, up);
        }
        let dims = gate.dims();
        let (gate, up) = (primitive(gate), primitive(up));
        tensor(from_values(cpu::swiglu_forward(values(&gate), values(&up)), &dims))
    }
}
