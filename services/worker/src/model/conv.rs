//! The short depthwise causal convolution that Mamba2 and DeltaNet put after their input
//! projections.
//!
//! `y[t, c] = bias[c] + Σ_j w[c, j] · x[t - (K - 1) + j, c]` with zeros before the sequence start:
//! a PyTorch `Conv1d(groups = channels, padding = K - 1)` truncated to the input length. The
//! sequence form is the backend's [`Kernels::short_conv`] (fused with the SiLU that follows it
//! in the mixers); the decode step is a few tensor operations on a `K`-token window.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::kernels::Kernels;

/// Configuration of a [`ShortConv`].
#[derive(Config, Debug)]
pub struct ShortConvConfig {
    /// Channels; each has its own filter (depthwise).
    pub channels: usize,
    /// Kernel size K (taps), 4 in Mamba2 and DeltaNet.
    #[config(default = 4)]
    pub kernel: usize,
    /// Per-channel bias (Mamba2 has one, DeltaNet does not).
    #[config(default = false)]
    pub bias: bool,
    /// Deviation of the normal initial filters.
    #[config(default = 0.02)]
    pub init_std: f64,
}

/// Depthwise causal 1-D convolution.
#[derive(Module, Debug)]
pub struct ShortConv<B: Backend> {
    /// Filters, `[channels, kernel]`; tap `K - 1` multiplies the current token.
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub kernel: usize,
}

/// The last `K - 1` inputs, `[batch, K - 1, channels]`, oldest first.
#[derive(Clone, Debug)]
pub struct ConvState<B: Backend> {
    pub window: Tensor<B, 3>,
}

impl ShortConvConfig {
    /// Initialises as the reference models' `_init_weights` treat `nn.Conv1d`: filters normal
    /// with mean 0 and deviation `init_std`, bias zero (see [`super::init`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ShortConv<B> {
        let dist = Distribution::Normal(0.0, self.init_std);
        ShortConv {
            weight: Param::from_tensor(Tensor::random([self.channels, self.kernel], dist, device)),
            bias: self.bias.then(|| Param::from_tensor(Tensor::zeros([self.channels], device))),
            kernel: self.kernel,
        }
    }
}

impl<B: Kernels> ShortConv<B> {
    /// Filters a whole sequence.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, channels]` → `[batch, seq, channels]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        B::short_conv(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), false)
    }

    /// `silu(forward(x))` as one fused operation: how Mamba2 and DeltaNet use the conv.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, channels]` → `[batch, seq, channels]`
    pub fn forward_silu(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        B::short_conv(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), true)
    }

    /// An all-zero state: what the sequence start looks like.
    pub fn zero_state(&self, batch: usize, device: &B::Device) -> ConvState<B> {
        let channels = self.weight.dims()[0];
        ConvState { window: Tensor::zeros([batch, self.kernel.saturating_sub(1), channels], device) }
    }

    /// Filters one new token and advances the state.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels]` → `[batch, channels]`
    pub fn step(&self, x: Tensor<B, 2>, state: &mut ConvState<B>) -> Tensor<B, 2> {
        let [batch, channels] = x.dims();
        let k = self.kernel;
        let window = Tensor::cat(vec![state.window.clone(), x.reshape([batch, 1, channels])], 1);
        // [batch, K, C] · [1, K, C] summed over the taps.
        let w = self.weight.val().swap_dims(0, 1).reshape([1, k, channels]);
        let y = (window.clone() * w).sum_dim(1).reshape([batch, channels]);
        state.window = window.slice([0..batch, 1..k, 0..channels]);
        match &self.bias {
            Some(b) => y + b.val().reshape([1, channels]),
            None => y,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    type B = Cpu;

    fn values(t: Tensor<B, 3>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 data")
    }

    /// A reference written straight from the definition, element by element.
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        batch: usize,
        seq: usize,
        c: usize,
        k: usize,
    ) -> Vec<f32> {
        let mut y = vec![0.0; batch * seq * c];
        for b in 0..batch {
            for t in 0..seq {
                for ch in 0..c {
                    let mut acc = bias[ch];
                    for j in 0..k {
                        let src = t as isize - (k as isize - 1) + j as isize;
                        if src >= 0 {
                            acc += w[ch * k + j] * x[(b * seq + src as usize) * c + ch];
                        }
                    }
                    y[(b * seq + t) * c + ch] = acc;
                }
            }
        }
        y
    }

    #[test]
    fn forward_matches_the_definition_and_step_matches_forward() {
        let device = Default::default();
        let (batch, seq, c, k) = (2, 7, 5, 4);
        let mut conv = ShortConvConfig::new(c).with_bias(true).with_init_std(0.5).init::<B>(&device);
        // The bias starts at zero; a random one checks that it is added.
        conv.bias = Some(Param::from_tensor(Tensor::random([c], Distribution::Normal(0.0, 1.0), &device)));
        let x = Tensor::<B, 3>::random([batch, seq, c], Distribution::Normal(0.0, 1.0), &device);
        let y = values(conv.forward(x.clone()));
        let w = conv.weight.val().into_data().to_vec::<f32>().unwrap();
        let bias = conv.bias.as_ref().unwrap().val().into_data().to_vec::<f32>().unwrap();
        let expected = reference(&values(x.clone()), &w, &bias, batch, seq, c, k);
        for (a, b) in y.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let mut state = conv.zero_state(batch, &device);
        for t in 0..seq {
            let xt = x.clone().slice([0..batch, t..t + 1, 0..c]).reshape([batch, c]);
            let yt = conv.step(xt, &mut state).into_data().to_vec::<f32>().unwrap();
            for b in 0..batch {
                for ch in 0..c {
                    let want = expected[(b * seq + t) * c + ch];
                    assert!((yt[b * c + ch] - want).abs() < 1e-5, "t={t}: {} vs {want}", yt[b * c + ch]);
                }
            }
        }
    }
}
