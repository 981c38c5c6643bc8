//! Pieces the chunked training forms of Mamba2 (SSD), DeltaNet and Gated DeltaNet share: the
//! causal masks ([`Causal`], defined beside the kernels that apply them) and the within-chunk
//! decay matrix, a [`Kernels`] operation.

use burn::prelude::*;

pub use crate::kernels::Causal;
use crate::kernels::Kernels;

/// The within-chunk decay matrix `Γ[i, j] = exp(G_i − G_j)` inside the `causal` triangle and 0
/// outside it, from the cumulative log decays `G` of each chunk (non-increasing along the
/// chunk, so every kept exponent is at most 0 and nothing overflows).
///
/// The backend's [`Kernels::causal_decay`]: on the flex CPU backend a loop that exponentiates
/// the kept triangle alone, with a backward that reads the output back; elsewhere three
/// full-size tensor passes (see [`composed::causal_decay`](crate::kernels::composed::causal_decay)).
///
/// # Shapes
/// - `cum`: `[m, l]` → `[m, l, l]`
pub fn causal_decay<B: Kernels>(cum: Tensor<B, 2>, causal: Causal) -> Tensor<B, 3> {
    B::causal_decay(cum, causal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff};
    use burn::tensor::Distribution;

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 data")
    }

    /// Against the definition, entry by entry in f64, for decays from almost none to e^-40 a step
    /// (whose products underflow to exact zeros), both triangles.
    #[test]
    fn causal_decay_is_the_masked_exponential_of_segment_sums() {
        let device = Default::default();
        let (m, l) = (3, 9);
        for strength in [1e-4, 0.3, 40.0] {
            let g = Tensor::<Cpu, 2>::random([m, l], Distribution::Uniform(-strength, 0.0), &device);
            let cum = g.cumsum(1);
            let g_host: Vec<f64> = values(cum.clone()).into_iter().map(f64::from).collect();
            for causal in [Causal::Inclusive, Causal::Strict] {
                let got = values(causal_decay(cum.clone(), causal));
                for r in 0..m {
                    for i in 0..l {
                        for j in 0..l {
                            let inside = match causal {
                                Causal::Inclusive => j <= i,
                                Causal::Strict => j < i,
                            };
                            let (gi, gj) = (g_host[r * l + i], g_host[r * l + j]);
                            let want = if inside { (gi - gj).exp() } else { 0.0 };
                            let got = f64::from(got[(r * l + i) * l + j]);
                            // f32 rounds the difference of two sums of size |G| by ~|G|·6e-8,
                            // and flushes what lies below its smallest normal number.
                            let tolerance =
                                1e-6 * (1.0 + gi.abs() + gj.abs()) * want + f64::from(f32::MIN_POSITIVE);
                            assert!(
                                (got - want).abs() <= tolerance,
                                "strength {strength}, {causal:?}, ({r}, {i}, {j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The gradient of `Σ Γ` against its closed form, `∂/∂G_k = Σ_{j<k} Γ[k, j] − Σ_{i>k} Γ[i, k]`,
    /// with decays strong enough that the masked triangle's exponents would overflow if they
    /// were ever evaluated: every entry stays finite and within 1e-5 relative.
    #[test]
    fn causal_decay_gradients_match_their_closed_form() {
        let device = Default::default();
        let (m, l) = (2, 8);
        let cum = Tensor::<CpuAutodiff, 2>::random([m, l], Distribution::Uniform(-30.0, 0.0), &device)
            .cumsum(1)
            .detach()
            .require_grad();
        let grads = causal_decay(cum.clone(), Causal::Inclusive).sum().backward();
        let got = values(cum.grad(&grads).expect("cum is tracked"));
        let g: Vec<f64> = values(cum.inner()).into_iter().map(f64::from).collect();
        for r in 0..m {
            let at = |i: usize| g[r * l + i];
            for k in 0..l {
                let want: f64 = (0..k).map(|j| (at(k) - at(j)).exp()).sum::<f64>()
                    - (k + 1..l).map(|i| (at(i) - at(k)).exp()).sum::<f64>();
                let got = f64::from(got[r * l + k]);
                assert!(got.is_finite(), "({r}, {k}): {got}");
                assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "({r}, {k}): {got} vs {want}");
            }
        }
    }
}
