//! Weight normalisation (Nemotron-Flash, Sec. 2.3).
//!
//! After every optimiser step, each vector that lives in the residual stream's dimension is put
//! back on the unit sphere: the rows of every matrix that reads the residual stream (attention's
//! and DeltaNet's q, k, v, DeltaNet's β projection b, Gated DeltaNet's decay a, β b and output
//! gate g besides, Mamba2's in_proj, the FFN's gate and up; a row of the `[out, in]` matrix is
//! one output unit's weights over the hidden dimension) and the columns of matrices whose output
//! is added to it (o, down, out_proj). Updates then change directions rather than norms, which
//! the paper found to train better; weight decay is off when it is on. The token and meta-token
//! embeddings and the head are outside the layers and are left as they are.
//!
//! burn stores a `Linear` weight as `[in, out]`, so "rows of `[out, in]`" are burn's columns
//! (normalise over dim 0) and "columns of `[out, in]`" are burn's rows (normalise over dim 1).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Smallest norm divided by; keeps an all-zero vector at zero instead of NaN.
const EPSILON: f64 = 1e-12;

/// Which side of the residual stream a projection sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Reads the residual stream: each output unit's weights over `hidden` get unit norm.
    Reads,
    /// Writes to the residual stream: each input unit's weights over `hidden` get unit norm.
    Writes,
}

/// Rescales one projection's weights. The rescaling is done outside the autodiff graph and the
/// result is a fresh leaf, trainable exactly when the old weight was: it replaces the parameter,
/// it is not a step of the next forward pass.
pub fn normalize_linear<B: AutodiffBackend>(mut linear: Linear<B>, side: Side) -> Linear<B> {
    let dim = match side {
        Side::Reads => 0,
        Side::Writes => 1,
    };
    linear.weight = linear.weight.map(|w| {
        let trainable = w.is_require_grad();
        let w = w.inner();
        let norm = w.clone().powi_scalar(2).sum_dim(dim).sqrt().clamp_min(EPSILON);
        let leaf = Tensor::from_inner(w / norm);
        if trainable { leaf.require_grad() } else { leaf }
    });
    linear
}

/// L2 norms of the vectors [`normalize_linear`] rescales, for tests and diagnostics.
pub fn vector_norms<B: Backend>(linear: &Linear<B>, side: Side) -> Vec<f32> {
    let dim = match side {
        Side::Reads => 0,
        Side::Writes => 1,
    };
    let norms = linear.weight.val().powi_scalar(2).sum_dim(dim).sqrt();
    norms.into_data().to_vec::<f32>().unwrap_or_default()
}
