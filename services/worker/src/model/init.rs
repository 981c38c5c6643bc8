//! Weight initialisation shared by the operators, as in the reference model code.
//!
//! - Every projection (and the short convolutions' filters) starts normal with mean 0 and
//!   standard deviation [`INIT_STD`] = 0.02, biases at zero: the `_init_weights` of
//!   Nemotron-Flash's Hugging Face model (`modeling_nemotron_flash.py`, `nn.Linear` and
//!   `nn.Conv1d` alike) and of fla's Gated DeltaNet (`modeling_gated_deltanet.py`), not PyTorch's
//!   `nn.Linear` default (uniform in ±1/√fan_in, burn's default too), whose spread shrinks with
//!   the width and so would differ between the widths a search compares.
//! - The projections that write to the residual stream (attention's and the delta rules'
//!   `o_proj`, Mamba2's `out_proj`, the FFN's `down_proj`) start at
//!   [`residual_output_std`]`(N) = 0.02 / √N` for `N` residual sub-layers, so the residual
//!   stream's variance at initialisation does not grow with depth. That is GPT-2's scaled
//!   initialisation as Megatron-LM writes it (`scaled_init_method_normal`: σ / √(2·num_layers),
//!   two residual sub-layers per block; here every sub-layer is one residual, so `N` counts them
//!   directly). mamba_ssm (`_init_weights(rescale_prenorm_residual=True)`) and older fla apply the
//!   same 1/√N to a kaiming-uniform draw instead; Nemotron-Flash's own `_init_weights` does not
//!   rescale by depth.

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

/// Standard deviation of every projection at initialisation (`initializer_range` of the
/// reference configs).
pub const INIT_STD: f64 = 0.02;

/// Standard deviation of the output projections of a model with `sublayers` residual
/// sub-layers: [`INIT_STD`]` / √sublayers`.
pub fn residual_output_std(sublayers: usize) -> f64 {
    INIT_STD / (sublayers.max(1) as f64).sqrt()
}

/// A projection without bias whose weights start normal with mean 0 and deviation `std`.
pub fn linear<B: Backend>(d_in: usize, d_out: usize, std: f64, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out)
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}
