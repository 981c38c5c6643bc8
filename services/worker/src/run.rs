//! Whole jobs on a chosen device: prepare data, build the model, train and score it; or build a
//! model and measure its decode latency. The command line and the pull loop call these, so they
//! never name a burn backend themselves.

use crate::kernels::TrainingBackend;
use burn::module::{AutodiffModule, Module};
use search_space::ModelSpec;
use serde::Serialize;

use crate::backend::{Cpu, CpuAutodiff, CpuDevice, describe};
use std::collections::BTreeMap;

use crate::data::batches::TokenStream;
use crate::data::{
    CorpusSource, DataConfig, DataError, PreparedData, ShardSet, SyntheticTasks, Tokenizer, TokenizerSpec,
    prepare,
};
use crate::decode::{DecodeError, DecodeReport, DecodeSetting, bench};
use crate::model::lm::HybridLm;
use crate::train::{
    Outcome, Progress, TrainConfig, TrainData, TrainError, evaluate, evaluate_tasks, train_on_data,
    validation_examples,
};

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
    /// Synthetic tasks only: each task's accuracy before training, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untrained_accuracy: Option<BTreeMap<String, f64>>,
    pub params: u64,
    pub device: String,
    /// The tokenizer's name; `synthetic` for synthetic tasks.
    pub tokenizer: String,
    pub vocab_size: usize,
    /// Tokens of the training stream; for synthetic tasks, the budget (every example is fresh).
    pub train_tokens_available: usize,
    /// Tokens of the validation stream; for synthetic tasks, the tokens of the fixed examples.
    pub validation_tokens_available: usize,
}

impl TrainRun {
    /// Per-task accuracy after training (synthetic tasks only).
    pub fn accuracy(&self) -> Option<&BTreeMap<String, f64>> {
        match &self.outcome {
            Outcome::Completed(report) => report.accuracy.as_ref(),
            Outcome::Diverged { .. } => None,
        }
    }
}

/// The data a job trains on, made ready.
enum Prepared {
    Text(PreparedData),
    /// A shard set on disk, read window by window: nothing of the corpus is in memory.
    Shards(Box<ShardSet>),
    Synthetic(SyntheticTasks),
}

impl Prepared {
    fn vocab_size(&self) -> usize {
        match self {
            Prepared::Text(p) => p.tokenizer.vocab_size(),
            Prepared::Shards(set) => set.tokenizer.vocab_size(),
            Prepared::Synthetic(t) => t.vocab_size(),
        }
    }

    /// The tokenizer and both token streams of a text corpus, in memory or shards on disk;
    /// `None` for synthetic tasks.
    fn streams(&self) -> Option<(&Tokenizer, TokenStream<'_>, TokenStream<'_>)> {
        match self {
            Prepared::Text(p) => Some((&p.tokenizer, (&p.train).into(), (&p.validation).into())),
            Prepared::Shards(set) => Some((&set.tokenizer, (&set.train).into(), (&set.validation).into())),
            Prepared::Synthetic(_) => None,
        }
    }

    fn tokenizer_name(&self) -> String {
        match self {
            Prepared::Text(p) => p.tokenizer.name(),
            Prepared::Shards(set) => set.tokenizer.name(),
            Prepared::Synthetic(_) => "synthetic".to_owned(),
        }
    }
}

/// Opens a shard set and checks it was made with the tokenizer the run names: `bytes` for a
/// byte-level set, or a tokenizer file with the same vocabulary and configuration.
fn open_shards(dir: &std::path::Path, tokenizer: &TokenizerSpec) -> Result<ShardSet, DataError> {
    let set = ShardSet::open(dir)?;
    let requested = match tokenizer {
        TokenizerSpec::Bytes => Tokenizer::Bytes,
        TokenizerSpec::File(path) => Tokenizer::load(path)?,
        TokenizerSpec::TrainBpe { vocab_size } => {
            return Err(DataError::TokenizerMismatch {
                set: dir.to_owned(),
                set_tokenizer: set.tokenizer.name(),
                requested: format!("bpe:{vocab_size} (a shard set is tokenized already)"),
            });
        }
    };
    if requested.identity() != set.tokenizer.identity() {
        return Err(DataError::TokenizerMismatch {
            set: dir.to_owned(),
            set_tokenizer: set.tokenizer.name(),
            requested: requested.name(),
        });
    }
    Ok(set)
}

/// Prepares the corpus (or sets up the synthetic tasks at the run's sequence length), sizes the
/// model's vocabulary to the tokenizer (or the tasks' vocabulary), trains and scores it.
pub fn train_job(
    spec: &ModelSpec,
    data: &DataConfig,
    config: &TrainConfig,
    device: DeviceChoice,
    score_untrained: bool,
    progress: impl FnMut(Progress),
) -> Result<TrainRun, RunError> {
    let prepared = match &data.corpus {
        CorpusSource::Path(_) => Prepared::Text(prepare(data)?),
        CorpusSource::Shards(dir) => Prepared::Shards(Box::new(open_shards(dir, &data.tokenizer)?)),
        CorpusSource::Synthetic(synthetic) => {
            if let TokenizerSpec::TrainBpe { .. } | TokenizerSpec::File(_) = data.tokenizer {
                let name = format!("{:?}", data.tokenizer);
                return Err(DataError::TokenizerWithSynthetic(name).into());
            }
            let tasks = SyntheticTasks::new(synthetic, config.seq_len).map_err(DataError::from)?;
            Prepared::Synthetic(tasks)
        }
    };
    if let Some(max) = data.max_vocab
        && prepared.vocab_size() > max
    {
        return Err(DataError::VocabularyTooSmall {
            tokenizer: prepared.tokenizer_name(),
            tokenizer_vocab: prepared.vocab_size(),
            model_vocab: max,
        }
        .into());
    }
    // The proxy is trained with the proxy's tokenizer: the architecture's vocabulary describes
    // deployment, the tokenizer decides what the model sees here.
    let spec = ModelSpec { vocab_size: prepared.vocab_size() as u32, ..spec.clone() };
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

fn train_on<B: TrainingBackend>(
    spec: &ModelSpec,
    prepared: &Prepared,
    config: &TrainConfig,
    device: &B::Device,
    score_untrained: bool,
    progress: impl FnMut(Progress),
) -> Result<TrainRun, RunError> {
    let model = HybridLm::<B>::init_seeded(spec, config.seed, device);
    let params = model.num_params() as u64;
    let (mut untrained_val_loss, mut untrained_accuracy) = (None, None);
    let run = match prepared {
        Prepared::Text(_) | Prepared::Shards(_) => {
            let Some((tokenizer, train, validation)) = prepared.streams() else {
                unreachable!("text corpora and shard sets have streams")
            };
            if score_untrained {
                untrained_val_loss = Some(evaluate(
                    &model.valid(),
                    validation,
                    config.seq_len,
                    config.batch_size,
                    config.eval_tokens,
                    device,
                )?);
            }
            let (outcome, _) =
                train_on_data(model, TrainData::Text { train, validation }, config, device, progress)?;
            TrainRun {
                outcome,
                untrained_val_loss,
                untrained_accuracy,
                params,
                device: describe::<B>(device),
                tokenizer: tokenizer.name(),
                vocab_size: tokenizer.vocab_size(),
                train_tokens_available: train.len(),
                validation_tokens_available: validation.len(),
            }
        }
        Prepared::Synthetic(tasks) => {
            if score_untrained {
                let scores =
                    evaluate_tasks(&model.valid(), tasks, config.batch_size, config.eval_tokens, device);
                untrained_val_loss = Some(scores.pooled_loss);
                untrained_accuracy = Some(scores.accuracy);
            }
            let (outcome, _) = train_on_data(model, TrainData::Synthetic(tasks), config, device, progress)?;
            let examples = validation_examples(tasks, config.eval_tokens) * tasks.task_names().len();
            TrainRun {
                outcome,
                untrained_val_loss,
                untrained_accuracy,
                params,
                device: describe::<B>(device),
                tokenizer: "synthetic".to_owned(),
                vocab_size: tasks.vocab_size(),
                train_tokens_available: usize::try_from(config.tokens).unwrap_or(usize::MAX),
                validation_tokens_available: examples * tasks.seq_len(),
            }
        }
    };
    Ok(run)
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
