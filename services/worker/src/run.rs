//! Whole jobs on a chosen device: prepare data, build the model, train and score it; or build a
//! model and measure its decode latency. The command line and the pull loop call these, so they
//! never name a burn backend themselves.

use crate::kernels::TrainingBackend;
use burn::module::{AutodiffModule, Module};
use search_space::ModelSpec;
use serde::Serialize;

use crate::backend::{Cpu, CpuAutodiff, CpuDevice, Precision, describe};
use std::collections::BTreeMap;

use crate::data::batches::TokenStream;
use crate::data::{
    CorpusSource, DataConfig, DataError, PreparedData, ShardSet, SyntheticTasks, Tokenizer, TokenizerSpec,
    prepare,
};
use crate::decode::{DecodeError, DecodeReport, DecodeSetting, bench};
use crate::model::lm::HybridLm;
use crate::train::{
    Outcome, Progress, TrainConfig, TrainData, TrainError, evaluate, evaluate_tasks, train_on_devices,
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

/// The devices one training run uses: one, or several GPUs of a node that train it data
/// parallel (`cuda:0,1,2,3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSet {
    Cpu,
    /// CUDA GPUs by index, in order; the first reports and is scored on.
    Cuda(Vec<usize>),
}

impl DeviceSet {
    /// The device that reports, is measured and is fingerprinted: the first.
    pub fn primary(&self) -> DeviceChoice {
        match self {
            DeviceSet::Cpu => DeviceChoice::Cpu,
            DeviceSet::Cuda(indices) => DeviceChoice::Cuda(indices[0]),
        }
    }

    /// How many devices a run spreads over (at least one: a set is never empty).
    pub fn count(&self) -> usize {
        match self {
            DeviceSet::Cpu => 1,
            DeviceSet::Cuda(indices) => indices.len(),
        }
    }

    /// The most of these devices (in order) over which a batch of `batch_size` rows, in
    /// micro-batches of `micro_batch`, splits evenly: all of them when it does.
    pub fn usable_for(&self, batch_size: usize, micro_batch: Option<usize>) -> DeviceSet {
        match self {
            DeviceSet::Cpu => DeviceSet::Cpu,
            DeviceSet::Cuda(indices) => {
                let n = (1..=indices.len())
                    .rev()
                    .find(|&n| crate::train::check_split(batch_size, micro_batch, n).is_ok())
                    .unwrap_or(1);
                DeviceSet::Cuda(indices[..n].to_vec())
            }
        }
    }
}

impl From<DeviceChoice> for DeviceSet {
    fn from(choice: DeviceChoice) -> Self {
        match choice {
            DeviceChoice::Cpu => DeviceSet::Cpu,
            DeviceChoice::Cuda(i) => DeviceSet::Cuda(vec![i]),
        }
    }
}

impl std::str::FromStr for DeviceSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(list) = s.strip_prefix("cuda:").filter(|l| l.contains(',')) else {
            return s
                .parse::<DeviceChoice>()
                .map(DeviceSet::from)
                .map_err(|e| format!("{e}, or cuda:0,1,.."));
        };
        let mut indices = Vec::new();
        for part in list.split(',') {
            let index: usize = part.trim().parse().map_err(|_| {
                format!("unknown device `{s}`: `{part}` is not a GPU index; expected cuda:0,1,..")
            })?;
            if indices.contains(&index) {
                return Err(format!("device list `{s}` names cuda:{index} twice"));
            }
            indices.push(index);
        }
        Ok(DeviceSet::Cuda(indices))
    }
}

impl std::fmt::Display for DeviceSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSet::Cpu => f.write_str("cpu"),
            DeviceSet::Cuda(indices) => {
                let list: Vec<String> = indices.iter().map(usize::to_string).collect();
                write!(f, "cuda:{}", list.join(","))
            }
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
    #[error("{0}")]
    Precision(String),
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
    devices: impl Into<DeviceSet>,
    score_untrained: bool,
    progress: impl FnMut(Progress),
) -> Result<TrainRun, RunError> {
    let devices = devices.into();
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
    match devices {
        DeviceSet::Cpu => train_on::<CpuAutodiff>(
            &spec,
            &prepared,
            config,
            &[CpuDevice::default()],
            score_untrained,
            progress,
        ),
        #[cfg(feature = "cuda")]
        DeviceSet::Cuda(indices) => {
            let devices: Vec<_> = indices.iter().map(|&i| crate::backend::cuda_device(i)).collect();
            train_on::<crate::backend::CudaAutodiff>(
                &spec,
                &prepared,
                config,
                &devices,
                score_untrained,
                progress,
            )
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSet::Cuda(_) => Err(RunError::NoCuda),
    }
}

fn train_on<B: TrainingBackend>(
    spec: &ModelSpec,
    prepared: &Prepared,
    config: &TrainConfig,
    devices: &[B::Device],
    score_untrained: bool,
    progress: impl FnMut(Progress),
) -> Result<TrainRun, RunError> {
    let device = &devices[0];
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
                train_on_devices(model, TrainData::Text { train, validation }, config, devices, progress)?;
            TrainRun {
                outcome,
                untrained_val_loss,
                untrained_accuracy,
                params,
                device: describe_devices::<B>(devices),
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
            let (outcome, _) =
                train_on_devices(model, TrainData::Synthetic(tasks), config, devices, progress)?;
            let examples = validation_examples(tasks, config.eval_tokens) * tasks.task_names().len();
            TrainRun {
                outcome,
                untrained_val_loss,
                untrained_accuracy,
                params,
                device: describe_devices::<B>(devices),
                tokenizer: "synthetic".to_owned(),
                vocab_size: tasks.vocab_size(),
                train_tokens_available: usize::try_from(config.tokens).unwrap_or(usize::MAX),
                validation_tokens_available: examples * tasks.seq_len(),
            }
        }
    };
    Ok(run)
}

/// [`describe`] of the first device, with the count of the others of a data parallel run.
/// In bf16, says so.
fn describe_devices<B: TrainingBackend>(devices: &[B::Device]) -> String {
    let mut text = describe::<B>(&devices[0]);
    if crate::backend::precision_of::<B>(&devices[0]) == Precision::Bf16 {
        text.push_str(", bf16");
    }
    if devices.len() > 1 {
        text.push_str(&format!(" (data parallel over {} devices)", devices.len()));
    }
    text
}

/// Makes every device of `devices` compute in `precision` (see
/// [`crate::backend::set_precision`]): call it once, before the process runs anything there.
pub fn set_precision(devices: &DeviceSet, precision: Precision) -> Result<(), RunError> {
    match devices {
        DeviceSet::Cpu => crate::backend::set_precision::<Cpu>(&CpuDevice::default(), precision),
        #[cfg(feature = "cuda")]
        DeviceSet::Cuda(indices) => indices.iter().try_for_each(|&i| {
            crate::backend::set_precision::<crate::backend::Cuda>(&crate::backend::cuda_device(i), precision)
        }),
        #[cfg(not(feature = "cuda"))]
        DeviceSet::Cuda(_) => return Err(RunError::NoCuda),
    }
    .map_err(RunError::Precision)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_list_parses_in_order_and_prints_back() {
        let set: DeviceSet = "cuda:2,0,1".parse().unwrap();
        assert_eq!(set, DeviceSet::Cuda(vec![2, 0, 1]));
        assert_eq!(
            (set.count(), set.primary(), set.to_string()),
            (3, DeviceChoice::Cuda(2), "cuda:2,0,1".into())
        );
        assert_eq!("cuda".parse::<DeviceSet>().unwrap(), DeviceSet::Cuda(vec![0]));
        assert_eq!("cuda:3".parse::<DeviceSet>().unwrap(), DeviceSet::Cuda(vec![3]));
        assert_eq!("cpu".parse::<DeviceSet>().unwrap(), DeviceSet::Cpu);
        assert!("cuda:0,0".parse::<DeviceSet>().unwrap_err().contains("names cuda:0 twice"));
        assert!("cuda:0,".parse::<DeviceSet>().unwrap_err().contains("`` is not a GPU index"));
        assert!("tpu".parse::<DeviceSet>().unwrap_err().contains("unknown device `tpu`"));
    }

    #[test]
    fn a_batch_that_does_not_split_over_every_device_takes_the_most_it_splits_over() {
        let four = DeviceSet::Cuda(vec![0, 1, 2, 3]);
        assert_eq!(four.usable_for(16, None), four);
        assert_eq!(four.usable_for(6, None), DeviceSet::Cuda(vec![0, 1, 2]));
        // 8 rows over 4 devices is 2 each, which micro-batches of 4 cannot divide; over 2 it is 4.
        assert_eq!(four.usable_for(8, Some(4)), DeviceSet::Cuda(vec![0, 1]));
        assert_eq!(four.usable_for(7, None), DeviceSet::Cuda(vec![0]));
        assert_eq!(DeviceSet::Cpu.usable_for(7, None), DeviceSet::Cpu);
    }
}
