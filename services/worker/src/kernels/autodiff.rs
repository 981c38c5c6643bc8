//! `Autodiff<Flex>`'s kernels: flex's forward kernels recorded as one node of the graph
//! each, whose backward is the matching [`cpu`] gradient loop. A node keeps only its inputs
//! (no intermediates) and recomputes what its backward needs from them; the decay matrix, whose
//! gradient is a function of its output alone, keeps its output instead.

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_autodiff::NodeId;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

use super::Causal;
use super::cpu::{self, ConvShape, GateOrder, NormShape};
use super::flex::{conv_shape, dense, from_values, is_f32, norm_shape, values};
use super::{Kernels, composed};

/// An autodiff tensor over flex, whatever the checkpointing strategy.
type Primitive = <Autodiff<Flex> as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

fn primitive<C: CheckpointStrategy, const D: usize>(t: Tensor<Autodiff<Flex, C>, D>) -> Primitive {
    t.into_primitive().tensor()
}

fn tensor<C: CheckpointStrategy, const D: usize>(t: Primitive) -> Tensor<Autodiff<Flex, C>, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The inner flex tensor of an autodiff tensor, to run the forward kernel on.
fn inner<const D: usize>(t: &Primitive) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t.primitive.clone()))
}

/// The flex tensor a forward kernel returned, to record as a node's output.
fn output<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    t.into_primitive().tensor()
}

/// An input of a node, read back in its backward.
fn input(checkpointer: &mut Checkpointer, id: NodeId) -> FlexTensor {
    dense(checkpointer.retrieve_node_output::<FlexTensor>(id))
}

/// The short convolution; `N` is 2 without a bias and 3 with one.
#[derive(Debug)]
struct ShortConv<const N: usize>;

/// The nodes of `x`, the weight and the bias, the shape, and whether SiLU follows.
type ConvState = (NodeId, NodeId, Option<NodeId>, ConvShape, bool);

fn conv_backward<const N: usize>(
    ops: Ops<ConvState, N>,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    let grad = dense(grads.consume::<Flex>(&ops.node));
    let (x_id, weight_id, bias_id, shape, silu) = ops.state;
    let x = input(checkpointer, x_id);
    let weight = input(checkpointer, weight_id);
    let bias = bias_id.map(|id| input(checkpointer, id));
    let (gx, gw, gb) = cpu::conv_backward(
        values(&x),
        values(&weight),
        bias.as_ref().map(values),
        values(&grad),
        shape,
        silu,
    );
    let ConvShape { batch, seq, channels, kernel } = shape;
    let grads_of = [
        from_values(gx, &[batch, seq, channels]),
        from_values(gw, &[channels, kernel]),
        from_values(gb, &[channels]),
    ];
    for (parent, g) in ops.parents.iter().zip(grads_of) {
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, g);
        }
    }
}

impl Backward<Flex, 2> for ShortConv<2> {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        conv_backward(ops, grads, checkpointer);
    }
}

impl Backward<Flex, 3> for ShortConv<3> {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        conv_backward(ops, grads, checkpointer);
    }
}

/// The gated RMSNorm of `x` by `gate`, with a weight.
#[derive(Debug)]
struct GatedNorm;

impl Backward<Flex, 3> for GatedNorm {
    /// The nodes of `x`, the gate and the weight, the shape, the gate order and `eps`.
    type State = (NodeId, NodeId, NodeId, NormShape, GateOrder, f32);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = dense(grads.consume::<Flex>(&ops.node));
        let (x_id, gate_id, weight_id, shape, order, epsilon) = ops.state;
        let dims = grad.layout().shape().to_vec();
        let x = input(checkpointer, x_id);
        let gate = input(checkpointer, gate_id);
        let weight = input(checkpointer, weight_id);
        let (gx, gg, gw) = cpu::gated_norm_backward(
            values(&x),
            values(&gate),
            values(&weight),
            values(&grad),
            shape,
            order,
            epsilon,
        );
        let grads_of = [from_values(gx, &dims), from_values(gg, &dims), from_values(gw, &[shape.width])];
        for (parent, g) in ops.parents.iter().zip(grads_of) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

/// The within-chunk decay matrix of the cumulative log decays.
#[derive(Debug)]
struct CausalDecay;

impl Backward<Flex, 1> for CausalDecay {
    /// The node's own output, which is all its backward reads.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = dense(grads.consume::<Flex>(&ops.node));
        let decay = ops.state;
        let dims = decay.layout().shape().to_vec();
        let (m, l) = (dims[0], dims[1]);
        if let [Some(node)] = &ops.parents {
            let g = cpu::causal_decay_backward(values(&decay), values(&grad), m, l);
            grads.register::<Flex>(node.id, from_values(g, &[m, l]));
        }
    }
}

/// The SwiGLU activation `silu(gate) ⊙ up`.
#[derive(Debug)]
struct SwiGlu;

impl Backward<Flex, 2> for SwiGlu {
    /// The nodes of the gate and of `up`.
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = dense(grads.consume::<Flex>(&ops.node));
        let dims = grad.layout().shape().to_vec();
        let gate = input(checkpointer, ops.state.0);
        let up = input(checkpointer, ops.state.1);
        let (gg, gu) = cpu::swiglu_backward(values(&gate), values(&up), values(&grad));
        for (parent, g) in ops.parents.iter().zip([gg, gu]) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, from_values(g, &dims));
            }
        }
    }
}

impl<C: CheckpointStrategy> Kernels for Autodiff<Flex, C> {
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
        let (x, weight, bias) = (primitive(x), primitive(weight), bias.map(primitive));
        let forward = |x: &Primitive, weight: &Primitive, bias: Option<&Primitive>| {
            output(Flex::short_conv(inner(x), inner(weight), bias.map(inner), silu))
        };
        let out = match bias {
            None => match ShortConv::<2>
                .prepare::<C>([x.node.clone(), weight.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&weight), None, shape, silu);
                    prep.finish(state, forward(&x, &weight, None))
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(&x, &weight, None)),
            },
            Some(bias) => match ShortConv::<3>
                .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = (
                        prep.checkpoint(&x),
                        prep.checkpoint(&weight),
                        Some(prep.checkpoint(&bias)),
                        shape,
                        silu,
                    );
                    prep.finish(state, forward(&x, &weight, Some(&bias)))
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(&x, &weight, Some(&bias))),
            },
        };
        tensor(out)
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
        let forward = || {
            output(Flex::gated_rms_norm::<D>(inner(&x), inner(&gate), inner(&weight), groups, order, epsilon))
        };
        let out = match GatedNorm
            .prepare::<C>([x.node.clone(), gate.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&gate),
                    prep.checkpoint(&weight),
                    shape,
                    order,
                    epsilon as f32,
                );
                prep.finish(state, forward())
            }
            OpsKind::UnTracked(prep) => prep.finish(forward()),
        };
        tensor(out)
    }

    fn causal_decay(cum: Tensor<Self, 2>, causal: Causal) -> Tensor<Self, 3> {
        if !is_f32(&cum) {
            return composed::causal_decay(cum, causal);
        }
        let cum = primitive(cum);
        let decay = output(Flex::causal_decay(inner(&cum), causal));
        let out = match CausalDecay.prepare::<C>([cum.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(decay.clone(), decay),
            OpsKind::UnTracked(prep) => prep.finish(decay),
        };
        tensor(out)
    }

    fn swiglu<const D: usize>(gate: Tensor<Self, D>, up: Tensor<Self, D>) -> Tensor<Self, D> {
        if !is_f32(&gate) || !is_f32(&up) || gate.dims() != up.dims() {
            return composed::swiglu(gate, up);
        }
        let (gate, up) = (primitive(gate), primitive(up));
        let forward = || output(Flex::swiglu::<D>(inner(&gate), inner(&up)));
        let out = match SwiGlu.prepare::<C>([gate.node.clone(), up.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&gate), prep.checkpoint(&up));
                prep.finish(state, forward())
            }
            OpsKind::UnTracked(prep) => prep.finish(forward()),
        };
        tensor(out)
    }
}
