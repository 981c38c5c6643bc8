//! Causal masks of the `L × L` chunk matrices of the chunked scans, written so that every
//! full-size operation takes the flex CPU backend's fast paths.
//!
//! On that backend an elementwise operation is fast when both operands are contiguous, or when
//! the right-hand one is broadcast either as one row shared by every outer position or as one
//! scalar per row; anything else (a broadcast along a middle dimension, a transposed view, a
//! repeated boolean mask) walks the tensor element by element, about ten times slower. The
//! masks here are therefore float rows of `L²` entries, applied to matrices flattened to
//! `[m, L²]`.

use burn::prelude::*;
use burn::tensor::Bool;

/// Added to a log decay to make its `exp` exactly zero: far below any real log decay, and
/// finite, so no `inf` or `NaN` appears in the forward or the backward pass.
const MASKED: f32 = -1.0e30;

/// Which entries of an `L × L` chunk matrix a mask keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causal {
    /// `j ≤ i`: the diagonal and below.
    Inclusive,
    /// `j < i`: strictly below the diagonal.
    Strict,
}

impl Causal {
    /// `true` where `(i, j)` is outside the kept triangle, `[l, l]`.
    fn outside<B: Backend>(self, l: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
        // `tril_mask(offset)` is true where `j > i + offset`.
        match self {
            Causal::Inclusive => Tensor::tril_mask([l, l], 0, device),
            Causal::Strict => Tensor::tril_mask([l, l], -1, device),
        }
    }

    /// 1 inside the triangle and 0 outside, as one shared row `[1, L²]`.
    fn keep_row<B: Backend>(self, l: usize, device: &B::Device) -> Tensor<B, 2> {
        self.outside::<B>(l, device).bool_not().float().reshape([1, l * l])
    }

    /// 0 inside the triangle and a huge negative number outside, as one shared row `[1, L²]`.
    pub(crate) fn log_keep_row<B: Backend>(self, l: usize, device: &B::Device) -> Tensor<B, 2> {
        self.outside::<B>(l, device).float().mul_scalar(MASKED).reshape([1, l * l])
    }

    /// `x` with the entries outside the triangle set to zero.
    ///
    /// # Shapes
    /// - `x`: `[m, l, l]` → `[m, l, l]`
    pub fn apply<B: Backend>(self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [m, l, _] = x.dims();
        let keep = self.keep_row::<B>(l, &x.device());
        (x.reshape([m, l * l]) * keep).reshape([m, l, l])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 data")
    }

    #[test]
    fn apply_keeps_the_chosen_triangle() {
        let device = Default::default();
        let x = Tensor::<Cpu, 3>::ones([2, 4, 4], &device);
        let inclusive = values(Causal::Inclusive.apply(x.clone()));
        let strict = values(Causal::Strict.apply(x));
        for (n, (a, b)) in inclusive.iter().zip(&strict).enumerate() {
            let (i, j) = ((n / 4) % 4, n % 4);
            assert_eq!(*a, if j <= i { 1.0 } else { 0.0 });
            assert_eq!(*b, if j < i { 1.0 } else { 0.0 });
        }
    }
}
