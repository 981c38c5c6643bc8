//! Frontier's worker: it turns a candidate architecture into a trained burn model and the
//! measurements the search ranks it by.
//!
//! # Layout
//! - [`model`]: one file per operator (attention, Mamba2, DeltaNet, Gated DeltaNet, SwiGLU FFN,
//!   embeddings with meta tokens), each generic over the backend, and [`model::lm::HybridLm`],
//!   the language model assembled from a `search_space` layer list.
//! - [`kernels`]: the fused kernels (short conv + SiLU, gated RMSNorm) the models call, in
//!   tensor operations on every backend and as single-pass loops on the flex CPU backend.
//! - [`data`]: corpora, tokenizers, the shard cache and seeded batches.
//! - [`train`]: the proxy trainer (a step function and its driver), with gradient accumulation.
//! - [`checkpoint`]: a run's state saved atomically and resumed after the worker was killed.
//! - [`decode`]: the decode benchmark, a candidate's measured latency.
//! - [`run`]: whole jobs on a chosen device, for the command line and the pull loop.
//! - [`profile`]: the LUT profiler (operator shapes in decode mode) and the device fingerprint.
//! - [`pull`]: the loop that leases trials from the coordinator over HTTP and runs them.
//! - [`backend`]: the concrete burn backends.
//!
//! # Runtime model
//! Synchronous and compute-bound: one job at a time on the chosen device; burn's CPU backend uses
//! every core. The worker never touches the database.

pub mod checkpoint;
pub mod data;
pub mod decode;
pub mod kernels;
pub mod model;
pub mod profile;
pub mod pull;
pub mod run;
pub mod train;

pub mod backend {
    //! The burn backends the worker trains and measures on.
    //!
    //! Models are written generically over `B: Kernels` (a burn `Backend`
    //! with the fused kernels of [`crate::kernels`]); these aliases pick
    //! the concrete backends so call sites agree on one choice. The CPU
    //! backend is burn's `flex`: on burn 0.21 it trained the attention and
    //! hybrid models 1.03-1.11x faster than `ndarray` with identical results
    //! (the `bench` binary's backend section, built with `--features ndarray`,
    //! measures this). CUDA is compiled in only with the `cuda` feature.

    use burn::tensor::backend::Backend;

    /// The default CPU backend: `flex`, with f32 floats and i32 integers.
    pub type Cpu = burn::backend::Flex;

    /// The CPU backend with automatic differentiation, for training.
    pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

    /// The CPU backend's device (there is only one CPU device).
    pub type CpuDevice = burn::backend::flex::FlexDevice;

    /// The CUDA backend (with kernel fusion), f32 floats and i32 integers.
    #[cfg(feature = "cuda")]
    pub type Cuda = burn::backend::Cuda;

    /// The CUDA backend with automatic differentiation, for training.
    #[cfg(feature = "cuda")]
    pub type CudaAutodiff = burn::backend::Autodiff<Cuda>;

    /// A CUDA device, chosen by its index.
    #[cfg(feature = "cuda")]
    pub type CudaDevice = burn::backend::cuda::CudaDevice;

    /// The device every run uses unless told otherwise: the CPU. A build
    /// with `cuda` may still run on a machine without a GPU, so a GPU is
    /// opted into at run time, never assumed.
    pub fn default_device() -> CpuDevice {
        CpuDevice::default()
    }

    /// The CUDA device with the given index. Creating it touches no driver;
    /// the first tensor operation on it does.
    #[cfg(feature = "cuda")]
    pub fn cuda_device(index: usize) -> CudaDevice {
        CudaDevice::new(index)
    }

    /// A short human description of a backend on a device, such as
    /// `flex on Cpu` or `fusion<cubecl<cuda>> on Cuda(0)`, to go into device
    /// fingerprints so results from different backends are never mixed.
    ///
    /// For GPU backends burn asks the runtime for its name, which starts the
    /// device's client: call it on a machine that has that device.
    pub fn describe<B: Backend>(device: &B::Device) -> String {
        format!("{} on {:?}", B::name(device), device)
    }

    /// The float type a device computes and keeps weights in.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum Precision {
        /// f32 everywhere (the default).
        #[default]
        F32,
        /// bfloat16 for every float tensor the device creates: weights, activations, gradients
        /// and the optimiser's moments (burn 0.21's modules hold one dtype, so there are no f32
        /// master weights). Halves memory and uses the GPU's bf16 tensor cores.
        Bf16,
    }

    impl std::str::FromStr for Precision {
        type Err = String;

        fn from_str(s: &str) -> Result<Self, Self::Err> {
            match s {
                "f32" => Ok(Precision::F32),
                "bf16" => Ok(Precision::Bf16),
                _ => Err(format!("unknown precision `{s}`; expected f32 or bf16")),
            }
        }
    }

    impl std::fmt::Display for Precision {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                Precision::F32 => "f32",
                Precision::Bf16 => "bf16",
            })
        }
    }

    /// Makes `precision` the float type of every tensor `device` creates from now on. burn
    /// fixes a device's types at its first tensor, for the life of the process: call this
    /// before anything runs on the device. Setting the type it already has is not an error.
    pub fn set_precision<B: Backend>(device: &B::Device, precision: Precision) -> Result<(), String> {
        use burn::tensor::{DType, Element, get_device_settings, set_default_dtypes};
        let (float, name) = match precision {
            Precision::F32 => (DType::F32, "f32"),
            Precision::Bf16 => (DType::BF16, "bf16"),
        };
        match set_default_dtypes::<B>(device, float, <B::IntElem as Element>::dtype()) {
            Ok(()) => Ok(()),
            Err(_) if DType::from(get_device_settings::<B>(device).float_dtype) == float => Ok(()),
            Err(e) => Err(format!("cannot compute in {name} on {device:?}: {e}")),
        }
    }

    /// The float type `device` computes in.
    pub fn precision_of<B: Backend>(device: &B::Device) -> Precision {
        let float = burn::tensor::DType::from(burn::tensor::get_device_settings::<B>(device).float_dtype);
        if float == burn::tensor::DType::BF16 { Precision::Bf16 } else { Precision::F32 }
    }

    /// [`describe`] for the default backend and device.
    pub fn default_description() -> String {
        describe::<Cpu>(&default_device())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use burn::tensor::{Tensor, activation::softmax, backend::AutodiffBackend};

        fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
            t.into_data().to_vec::<f32>().expect("float tensor data reads as f32")
        }

        fn assert_close(got: &[f32], want: &[f32], tol: f32) {
            assert_eq!(got.len(), want.len(), "length: got {got:?}, want {want:?}");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= tol,
                    "element {i}: got {g}, want {w} (tolerance {tol}); all: {got:?}"
                );
            }
        }

        /// Checks a 2x3 @ 3x2 matmul and a row softmax on `B` against values
        /// worked out by hand. `softmax_tol` is per backend: GPU exp kernels
        /// may be a few ulps less exact than the CPU's.
        fn check_matmul_and_softmax<B: Backend>(device: &B::Device, softmax_tol: f32) {
            let a = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], device);
            let b = Tensor::<B, 2>::from_floats([[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]], device);

            // [1 2 3; 4 5 6] @ [7 8; 9 10; 11 12] = [58 64; 139 154]. Small
            // integers are exact in f32 (and in TF32), so any error beyond
            // rounding noise would mean a wrong kernel.
            let product = a.matmul(b);
            assert_eq!(product.dims(), [2, 2]);
            assert_close(&values(product), &[58.0, 64.0, 139.0, 154.0], 1e-4);

            // softmax([1, 2, 3]) = e^k / (e + e^2 + e^3); a constant row gives
            // 1/3 each.
            let logits = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], device);
            let probs = softmax(logits, 1);
            let third = 1.0 / 3.0;
            assert_close(
                &values(probs),
                &[0.090_030_57, 0.244_728_48, 0.665_240_96, third, third, third],
                softmax_tol,
            );
        }

        /// Checks that the gradient of sum(x^2) is 2x on the autodiff backend `B`.
        fn check_square_gradient<B: AutodiffBackend>(device: &B::Device) {
            let x = Tensor::<B, 1>::from_floats([1.0, -2.0, 3.5, 0.0], device).require_grad();
            let loss = x.clone().powi_scalar(2).sum();
            // 1 + 4 + 12.25 + 0
            assert_close(&values(loss.clone()), &[17.25], 1e-5);

            let grads = loss.backward();
            let grad = x.grad(&grads).expect("x requires a gradient");
            // d/dx sum(x^2) = 2x, exact in f32 for these inputs.
            assert_close(&values(grad), &[2.0, -4.0, 7.0, 0.0], 1e-6);
        }

        #[test]
        fn description_names_backend_and_device() {
            assert_eq!(default_description(), "flex on Cpu");
            assert_eq!(describe::<CpuAutodiff>(&default_device()), "autodiff<flex> on Cpu");
        }

        #[test]
        fn cpu_matmul_and_softmax_match_hand_values() {
            // 1e-6 is a few f32 ulps at these magnitudes.
            check_matmul_and_softmax::<Cpu>(&default_device(), 1e-6);
        }

        #[test]
        fn cpu_autodiff_gradient_of_sum_of_squares_is_twice_x() {
            check_square_gradient::<CpuAutodiff>(&default_device());
        }

        // The CUDA checks need a GPU and its driver, which build machines
        // lack: run them with `cargo test -p worker --features cuda -- --ignored`.
        #[cfg(feature = "cuda")]
        #[test]
        #[ignore = "needs an NVIDIA GPU"]
        fn cuda_matmul_softmax_and_gradient_match_hand_values() {
            let device = cuda_device(0);
            let description = describe::<Cuda>(&device);
            assert!(description.ends_with("on Cuda(0)"), "{description}");
            check_matmul_and_softmax::<Cuda>(&device, 1e-5);
            check_square_gradient::<CudaAutodiff>(&device);
        }
    }
}
