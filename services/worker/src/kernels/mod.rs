//! Fused kernels for the elementwise-heavy pieces of the models: the short causal convolution
//! with its SiLU, the gated RMSNorm, the within-chunk decay matrix of the chunked scans (with the
//! causal masks of their chunks, [`Causal`]), and the SwiGLU activation of the FFN.
//!
//! Written with burn's tensor operations, each of these is a chain of full-size passes over
//! memory, and under autodiff every pass also stores its inputs and has its own backward. On
//! the flex CPU backend that dominated the recurrent mixers' time outside the recurrence
//! itself. [`Kernels`] is the extension trait the models call instead:
//!
//! - every method has a default written in tensor operations (the [`composed`] forms), which
//!   is what the CUDA and ndarray backends run, differentiated by burn's own autodiff;
//! - the flex backend overrides them with single-pass loops ([`cpu`]), and `Autodiff<Flex>`
//!   gives each a hand-written backward, also a single pass (see `autodiff.rs`).
//!
//! Measured on 2 cores, forward + backward at d_model 256 (batch 8 × seq 256): conv + SiLU
//! 4.5 ms fused against 20 ms composed, the gated norm of Gated DeltaNet 4.3 against 12.7 ms,
//! SwiGLU at the FFN's width 768 18 against 39 ms.
//!
//! Tests check the fused forms and their gradients against the composed forms.

mod causal;
pub mod composed;
pub mod cpu;

mod autodiff;
mod flex;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

pub use causal::Causal;
pub use cpu::GateOrder;

/// `x` copied into row-major order when it is a strided view (a slice, a narrowed or
/// transposed tensor), and `x` itself when it already is row-major: reshaping through one
/// dimension copies only when the layout needs it.
///
/// On the flex CPU backend an elementwise operation whose operand is a strided view walks it
/// element by element, about ten times slower than on contiguous memory, and autodiff saves
/// such operands for the backward pass, where every product with them pays again. A view
/// used by more than one such operation is worth one copy.
pub(crate) fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    x.reshape([dims.iter().product::<usize>()]).reshape(dims)
}

/// A backend the models run on: burn's [`Backend`] plus the fused kernels.
pub trait Kernels: Backend {
    /// Depthwise causal convolution over the sequence, zeros before its start, then SiLU
    /// when `silu`: `y[t, c] = act(bias[c] + Σ_j w[c, j] · x[t − (K − 1) + j, c])`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, channels]`; `weight`: `[channels, kernel]`; `bias`: `[channels]`
    /// - returns `[batch, seq, channels]`
    fn short_conv(
        x: Tensor<Self, 3>,
        weight: Tensor<Self, 2>,
        bias: Option<Tensor<Self, 1>>,
        silu: bool,
    ) -> Tensor<Self, 3> {
        composed::short_conv(x, weight, bias, silu)
    }

    /// RMSNorm of the last dimension with a SiLU gate, each of `groups` equal parts of the
    /// last dimension normalised on its own: `rmsnorm(x) · w · silu(g)` or
    /// `rmsnorm(x · silu(g)) · w` as `order` says.
    ///
    /// # Shapes
    /// - `x`, `gate`: `[..., width]`; `weight`: `[width]` → `[..., width]`
    fn gated_rms_norm<const D: usize>(
        x: Tensor<Self, D>,
        gate: Tensor<Self, D>,
        weight: Tensor<Self, 1>,
        groups: usize,
        order: GateOrder,
        epsilon: f64,
    ) -> Tensor<Self, D> {
        composed::gated_rms_norm(x, gate, weight, groups, order, epsilon)
    }

    /// `silu(gate) ⊙ up`, the SwiGLU FFN's activation.
    ///
    /// # Shapes
    /// - `gate`, `up`: `[..., width]` → `[..., width]`
    fn swiglu<const D: usize>(gate: Tensor<Self, D>, up: Tensor<Self, D>) -> Tensor<Self, D> {
        composed::swiglu(gate, up)
    }

    /// The within-chunk decay matrix `exp(G_i − G_j)` inside the `causal` triangle and 0
    /// outside, from the cumulative log decays `G` of each chunk (the models call it through
    /// `model::chunk::causal_decay`).
    ///
    /// # Shapes
    /// - `cum`: `[m, l]` → `[m, l, l]`
    fn causal_decay(cum: Tensor<Self, 2>, causal: Causal) -> Tensor<Self, 3> {
        composed::causal_decay(cum, causal)
    }
}

/// A backend to train on: autodiff over a [`Kernels`] backend, itself with the kernels, so a
/// model and its inference copy (`valid()`) both run.
pub trait TrainingBackend: AutodiffBackend<InnerBackend: Kernels> + Kernels {}

impl<A> TrainingBackend for A
where
    A: AutodiffBackend + Kernels,
    A::InnerBackend: Kernels,
{
}

#[cfg(feature = "cuda")]
impl Kernels for burn::backend::Cuda {}

#[cfg(feature = "cuda")]
impl Kernels for burn::backend::Autodiff<burn::backend::Cuda> {}

#[cfg(feature = "ndarray")]
impl Kernels for burn::backend::NdArray {}

#[cfg(feature = "ndarray")]
impl Kernels for burn::backend::Autodiff<burn::backend::NdArray> {}

#[cfg(test)]
mod tests;
