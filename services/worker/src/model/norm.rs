//! RMS normalisation, plain and gated.
//!
//! Mamba2 normalises after gating, `rmsnorm(y · silu(z))`; Gated DeltaNet gates after
//! normalising, `rmsnorm(o) · silu(g)` (per head). [`GatedRmsNorm`] does both, chosen by
//! `norm_before_gate`, as the backend's fused [`Kernels::gated_rms_norm`]. The plain pre-norm of
//! every sub-layer is burn's `RmsNorm`.

use burn::module::{Module, Param};
use burn::prelude::*;

use crate::kernels::{GateOrder, Kernels};

/// Configuration of a [`GatedRmsNorm`].
#[derive(Config, Debug)]
pub struct GatedRmsNormConfig {
    /// Width of the normalised (last) dimension.
    pub width: usize,
    /// Normalise first, then gate (Gated DeltaNet); otherwise gate first (Mamba2).
    #[config(default = false)]
    pub norm_before_gate: bool,
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

/// RMSNorm with a SiLU gate, over the last dimension.
#[derive(Module, Debug)]
pub struct GatedRmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub norm_before_gate: bool,
    pub epsilon: f64,
}

impl GatedRmsNormConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> GatedRmsNorm<B> {
        GatedRmsNorm {
            weight: Param::from_tensor(Tensor::ones([self.width], device)),
            norm_before_gate: self.norm_before_gate,
            epsilon: self.epsilon,
        }
    }
}

impl<B: Kernels> GatedRmsNorm<B> {
    /// # Shapes
    /// - `x`, `gate`: `[..., width]` → `[..., width]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, gate: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_groups(x, gate, 1)
    }

    /// [`forward`](Self::forward) with each of `groups` equal parts of the last dimension
    /// normalised on its own (Mamba2 with several groups).
    ///
    /// # Shapes
    /// - `x`, `gate`: `[..., width]` → `[..., width]`
    pub fn forward_groups<const D: usize>(
        &self,
        x: Tensor<B, D>,
        gate: Tensor<B, D>,
        groups: usize,
    ) -> Tensor<B, D> {
        let order = if self.norm_before_gate { GateOrder::NormThenGate } else { GateOrder::GateThenNorm };
        B::gated_rms_norm(x, gate, self.weight.val(), groups, order, self.epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    #[test]
    fn gated_norm_orders_gate_and_norm_as_configured() {
        let device = Default::default();
        let x = Tensor::<Cpu, 2>::from_floats([[1.0, -2.0, 3.0, 0.5]], &device);
        let z = Tensor::<Cpu, 2>::from_floats([[0.5, 1.0, -1.0, 2.0]], &device);
        let silu = |v: f32| v / (1.0 + (-v).exp());
        let xs = [1.0f32, -2.0, 3.0, 0.5];
        let zs = [0.5f32, 1.0, -1.0, 2.0];
        let rms = |v: &[f32]| (v.iter().map(|a| a * a).sum::<f32>() / v.len() as f32 + 1e-5).sqrt();

        let after = GatedRmsNormConfig::new(4).init::<Cpu>(&device).forward(x.clone(), z.clone());
        let gated: Vec<f32> = xs.iter().zip(&zs).map(|(a, b)| a * silu(*b)).collect();
        let r = rms(&gated);
        let want: Vec<f32> = gated.iter().map(|g| g / r).collect();
        for (a, b) in after.into_data().to_vec::<f32>().unwrap().iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }

        let before =
            GatedRmsNormConfig::new(4).with_norm_before_gate(true).init::<Cpu>(&device).forward(x, z);
        let r = rms(&xs);
        let want: Vec<f32> = xs.iter().zip(&zs).map(|(a, b)| a / r * silu(*b)).collect();
        for (a, b) in before.into_data().to_vec::<f32>().unwrap().iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
