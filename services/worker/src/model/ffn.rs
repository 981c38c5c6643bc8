//! The SwiGLU feed-forward network: `y = W_down (silu(W_gate x) ⊙ W_up x)`, no biases.
//!
//! It acts on each position independently, so one `forward` serves training, prefill and decode
//! alike. The three projections are kept as separate `Linear`s named as in the reference
//! checkpoints (`gate_proj`, `up_proj`, `down_proj`) rather than burn's `SwiGlu`, whose
//! `linear_inner`/`linear_outer` would make weight mapping guesswork.

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;

use crate::kernels::Kernels;
use search_space::ops::FfnSpec;

use super::init::linear;

/// Configuration of an [`Ffn`].
#[derive(Config, Debug)]
pub struct FfnConfig {
    /// Model width: the size of the input and output vectors.
    pub hidden: usize,
    /// Width of the gated inner layer.
    pub intermediate_size: usize,
    /// Deviation of the normal initial weights of the projections that read the input.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Deviation of the normal initial weights of the output projection, which writes to the
    /// residual stream; the model scales it by depth ([`super::init::residual_output_std`]).
    #[config(default = 0.02)]
    pub output_init_std: f64,
}

/// SwiGLU feed-forward network.
#[derive(Module, Debug)]
pub struct Ffn<B: Backend> {
    /// `[hidden, intermediate_size]`, passed through SiLU.
    pub gate_proj: Linear<B>,
    /// `[hidden, intermediate_size]`.
    pub up_proj: Linear<B>,
    /// `[intermediate_size, hidden]`.
    pub down_proj: Linear<B>,
}

impl FfnConfig {
    /// The configuration of the FFN layer `spec` at model width `hidden`.
    pub fn from_spec(spec: &FfnSpec, hidden: usize) -> Self {
        FfnConfig::new(hidden, spec.intermediate_size as usize)
    }

    /// Builds the layer, projections normal as in [`super::init`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> Ffn<B> {
        Ffn {
            gate_proj: linear(self.hidden, self.intermediate_size, self.init_std, device),
            up_proj: linear(self.hidden, self.intermediate_size, self.init_std, device),
            down_proj: linear(self.intermediate_size, self.hidden, self.output_init_std, device),
        }
    }
}

impl<B: Kernels> Ffn<B> {
    /// Applies the FFN to every position.
    ///
    /// # Shapes
    /// - `x`: `[..., hidden]` → `[..., hidden]` (`[batch, seq, hidden]` in training,
    ///   `[batch, hidden]` when decoding)
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let gate = self.gate_proj.forward(x.clone());
        self.down_proj.forward(B::swiglu(gate, self.up_proj.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff};
    use burn::module::Param;
    use burn::tensor::Distribution;
    use search_space::ops::LayerSpec;

    type B = Cpu;

    fn linear(weight: [[f32; 2]; 2]) -> Linear<B> {
        Linear { weight: Param::from_tensor(Tensor::from_floats(weight, &Default::default())), bias: None }
    }

    #[test]
    fn forward_matches_a_hand_computed_case() {
        let device = Default::default();
        // Weights are `[d_in, d_out]`: y = x · W. Gate and up differ so swapping them shows.
        let ffn = Ffn::<B> {
            gate_proj: linear([[2.0, 0.5], [0.5, -1.0]]),
            up_proj: linear([[1.0, 1.0], [1.0, 3.0]]),
            down_proj: linear([[1.0, -1.0], [0.5, 2.0]]),
        };
        let x = Tensor::<B, 3>::from_floats([[[1.0, -2.0], [0.5, 3.0]]], &device);
        // Token 1: gate = [1, 2.5], up = [−1, −5], silu(gate)·up = [−0.731059, −11.551773],
        // y = [−0.731059 − 5.775886, 0.731059 − 23.103546].
        // Token 2: gate = [2.5, −2.75], up = [3.5, 9.5], silu(gate)·up = [8.086241, −1.569764].
        let want = [-6.506_945, -22.372_487, 7.301_359, -11.225_768];
        let got = ffn.forward(x.clone()).into_data().to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
        }
        // A decode step is the same map on `[batch, hidden]`.
        let step = ffn.forward(x.reshape([2, 2])).into_data().to_vec::<f32>().unwrap();
        assert_eq!(step, got);
    }

    #[test]
    fn parameter_count_matches_the_search_space() {
        let spec = FfnSpec { intermediate_size: 56 };
        let hidden = 24;
        let ffn = FfnConfig::from_spec(&spec, hidden).init::<B>(&Default::default());
        let want = LayerSpec::Ffn(spec).params(hidden as u32) - hidden as u64;
        assert_eq!(ffn.num_params() as u64, want);
    }

    #[test]
    fn gradients_reach_every_projection() {
        let device = Default::default();
        let ffn = FfnConfig::new(8, 12).init::<CpuAutodiff>(&device);
        let x = Tensor::<CpuAutodiff, 3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), &device);
        let grads = ffn.forward(x).powi_scalar(2).mean().backward();
        for (name, l) in [("gate", &ffn.gate_proj), ("up", &ffn.up_proj), ("down", &ffn.down_proj)] {
            let norm: f32 = l.weight.grad(&grads).expect("a gradient").powi_scalar(2).sum().into_scalar();
            assert!(norm.is_finite() && norm > 0.0, "{name}_proj gradient norm {norm}");
        }
    }
}
