//! Whole jobs on a chosen device: prepare data, build the model, train and score it; or build a
//! model and measure its decode latency. The command line and the pull loop call these, so they
//! never name a burn backend themselves.

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use search_space::ModelSpec;
use serde::Serialize;

use crate::backend::{Cpu, CpuAutodiff, CpuDevice, describe};
use crate::data::{DataConfig, DataError, PreparedData, prepare};
use crate::decode::{DecodeError, DecodeReport, DecodeSetting, bench};
use crate::model::lm::HybridLm;
use crate::train::{Outcome, Progress, TrainConfig, TrainError, evaluate, train};

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    /// A CUDA GPU by index (builds with the `cuda` feature only).
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(DeviceChoice::Cuda(i)),
                _ => Err(format!("unknown device `{s}`; expected cpu, cuda or cuda:N")),
            },
        }
    }
}

/// Why a job could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("invalid architecture: {0}")]
    Architecture(#[from] search_space::ValidationErrors),
    #[error("this build has no CUDA support; rebuild with `--features cuda`")]
    NoCuda,
    #[error("{0}")]
    Profile(String),
}

/// A finished training job.
#[derive(Clone, Debug, Serialize)]
pub struct TrainRun {
    pub outcome: Outcome,
    /// Validation loss of the model before training, when asked for.
    pub untrained_val_loss: Option<f64>,
    pub params: u64,
    pub device: String,
    pub tokenizer: String,
    pub vocab_size: usize,
    pub train_tokens_available: usize,
    pub validation_tokens_available: usize,
}

/// Prepares the corpus, sizes the model's vocabulary to the tokenizer, trains and scores it.
pub fn train_job(
    spec: &ModelSpec,
    data: &DataConfig,
    config: &TrainConfig,
    device: DeviceChoice,
    score_untrained: bool,
    progress: impl FnMut(Progress),
) -> Result<TrainRun, RunError> {
    let prepared = prepare(data)?;
    // The proxy is trained with the proxy's tokenizer: the architecture's vocabulary describes
    // deployment, the tokenizer decides what the model sees here.
    let spec = ModelSpec { vocab_size: prepared.tokenizer.vocab_size() as u32, ..spec.clone() };
    spec.validate()?;
    match device {
        DeviceChoice::Cpu => train_on::<CpuAutodiff>(
            &spec,
            &prepared,
            config,
            &CpuDevice::default(),
            score_untrained,
            progress,
        ),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => train_on::<crate::backend::CudaAutodiff>(
            &spec,
            &prepared,
            config,
            &crate::backend::cuda_device(i),
            score_untrained,
            progress,
        ),
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => Err(RunError::NoCuda),
    }
}

fn train_on<B: AutodiffBackend>(
    spec: &ModelSpec,
    prepared: &PreparedData,
    config: &TrainConfig,
    device: &B::Device,
    score_untrained: bool,
    progress: impl FnMut(Progress),
) -> Result<TrainRun, RunError> {
    let model = HybridLm::<B>::init_seeded(spec, config.seed, device);
    let params = model.num_params() as u64;
    let untrained_val_loss = if score_untrained {
        Some(evaluate(
            &model.valid(),
            &prepared.validation,
            config.seq_len,
            config.batch_size,
            config.eval_tokens,
            device,
        )?)
    } else {
        None
    };
    let (outcome, _) = train(model, &prepared.train, &prepared.validation, config, device, progress)?;
    Ok(TrainRun {
        outcome,
        untrained_val_loss,
        params,
        device: describe::<B>(device),
        tokenizer: prepared.tokenizer.name(),
        vocab_size: prepared.tokenizer.vocab_size(),
        train_tokens_available: prepared.train.len(),
        validation_tokens_available: prepared.validation.len(),
    })
}

/// Builds the model (weights from `seed`) and measures its decode latency.
pub fn decode_job(
    spec: &ModelSpec,
    setting: DecodeSetting,
    seed: u64,
    device: DeviceChoice,
) -> Result<(DecodeReport, String), RunError> {
    spec.validate()?;
    match device {
        DeviceChoice::Cpu => {
            let device = CpuDevice::default();
            let model = HybridLm::<Cpu>::init_seeded(spec, seed, &device);
            Ok((bench(&model, setting, &device)?, describe::<Cpu>(&device)))
        }
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => {
            let device = crate::backend::cuda_device(i);
            let model = HybridLm::<crate::backend::Cuda>::init_seeded(spec, seed, &device);
            Ok((bench(&model, setting, &device)?, describe::<crate::backend::Cuda>(&device)))
        }
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => Err(RunError::NoCuda),
    }
}
