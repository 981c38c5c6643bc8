//! Synthetic proxy tasks: a corpus the program makes itself, scored by accuracy on the answers.
//!
//! The six tasks of the MAD suite (Poli et al., "Mechanistic Design and Scaling of Hybrid
//! Architectures", 2024; defaults from its task configurations) separate token mixers cheaply:
//! attention-free mixers are expected to lose on recall, and that is what a search that cuts the
//! KV cache needs to see.
//!
//! | task | what the model must do | MAD defaults |
//! |---|---|---|
//! | `in_context_recall` | key-value pairs, a new random map each sequence; every repeated key's value is scored | vocab 16 |
//! | `fuzzy_recall` | the same with keys and values of 1 to 3 tokens | vocab 16, motifs ≤ 3 |
//! | `noisy_recall` | the same as recall with pairs of noise tokens between the pairs | vocab 32, noise vocab 16, 20 % noise |
//! | `selective_copying` | tokens scattered among blanks, then a copy token: write them out in order | vocab 16, 16 tokens |
//! | `compression` | a random sequence, then a compression token: write it out again | vocab 16, 31 tokens |
//! | `memorization` | one fixed key-value map for the whole run; each key is followed by an insert token whose target is its value | vocab 256 |
//!
//! # Examples
//! An example is `seq_len` inputs, `seq_len` targets and a mask of the scored targets; loss and
//! accuracy count the scored targets only. The three recall tasks are next-token prediction
//! (targets are the inputs shifted by one) and score the value tokens of keys seen earlier in the
//! sequence (MAD's multi-query form). Copying, compression and memorization follow MAD in
//! giving targets that are not the next input: after the copy or compression token the inputs
//! are blanks and the targets are the tokens to write out, and in memorization the value never
//! appears in the input, so it cannot be read from context. Examples fill the run's sequence
//! length (MAD's per-task lengths are replaced by the run's `seq_len`); what a task's layout does
//! not fill is padded on the left with the task's pad token, unscored.
//!
//! Departures from MAD, and why: MAD's compression task decodes the whole sequence from one
//! position's output with a separate MLP decoder; a language model has no such decoder, so here
//! the sequence is written out after the compression token, one token per blank. Attention can
//! look back at the original and recurrent mixers must carry it in their state, which is what
//! the task is meant to separate. In fuzzy recall the keys of one sequence are prefix-free (no
//! key is the start of another), so the end of a key is known when it is read and the first
//! value token is recoverable from the context.
//!
//! # Vocabulary
//! Each task uses ids `0..vocab` with its special tokens at the top. In a mix the tasks get
//! disjoint id ranges (task `i` is offset by the vocabularies of the tasks before it), so tasks
//! never share a token and the model's vocabulary is the sum.
//!
//! # Determinism
//! Every example is a pure function of a seed and an index: a ChaCha8 stream selected by the
//! index. Training row `r` of step `s` is example `s · batch + r` of the run's seed and takes the
//! tasks in turn; validation examples come from the data seed ([`SyntheticConfig::seed`]) and
//! never change with the run's seed, so runs are compared on the same questions. The
//! memorization map is drawn once from the data seed too. Training draws fresh examples every
//! step (no fixed training set).
//!
//! # Corpus strings
//! `synthetic:TASK[?KEY=VALUE[&KEY=VALUE]...][,TASK...]`, for example
//! `synthetic:in_context_recall,noisy_recall?noise=0.4&vocab=48`. Task names take `_` or `-`.
//! Keys: `vocab` (all tasks), `noise_vocab` and `noise` (noisy recall), `key_motif` and
//! `value_motif` (fuzzy recall), `copy` (selective copying: tokens to copy), `tokens`
//! (compression: tokens to reconstruct).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::Batch;

/// One of the six tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    InContextRecall,
    FuzzyRecall,
    NoisyRecall,
    SelectiveCopying,
    Compression,
    Memorization,
}

impl Task {
    pub const ALL: [Task; 6] = [
        Task::InContextRecall,
        Task::FuzzyRecall,
        Task::NoisyRecall,
        Task::SelectiveCopying,
        Task::Compression,
        Task::Memorization,
    ];

    /// The name in corpus strings and reports.
    pub fn name(self) -> &'static str {
        match self {
            Task::InContextRecall => "in_context_recall",
            Task::FuzzyRecall => "fuzzy_recall",
            Task::NoisyRecall => "noisy_recall",
            Task::SelectiveCopying => "selective_copying",
            Task::Compression => "compression",
            Task::Memorization => "memorization",
        }
    }

    /// The parameter keys this task accepts in a corpus string.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Task::InContextRecall | Task::Memorization => &["vocab"],
            Task::FuzzyRecall => &["vocab", "key_motif", "value_motif"],
            Task::NoisyRecall => &["vocab", "noise_vocab", "noise"],
            Task::SelectiveCopying => &["vocab", "copy"],
            Task::Compression => &["vocab", "tokens"],
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = SyntheticError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().replace('-', "_");
        Task::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| SyntheticError::UnknownTask(s.to_owned()))
    }
}

/// One task with its parameters. Defaults are MAD's baseline settings (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    pub task: Task,
    /// Ids the task uses, its special tokens included.
    pub vocab: usize,
    /// Noisy recall: ids reserved for noise.
    pub noise_vocab: usize,
    /// Noisy recall: the chance that a pair slot holds two noise tokens instead of a pair.
    pub noise: f64,
    /// Fuzzy recall: the longest key, in tokens.
    pub key_motif: usize,
    /// Fuzzy recall: the longest value, in tokens.
    pub value_motif: usize,
    /// Selective copying: the tokens to copy.
    pub copy: usize,
    /// Compression: the tokens to reconstruct.
    pub tokens: usize,
}

impl TaskSpec {
    /// The task with MAD's baseline parameters.
    pub fn new(task: Task) -> Self {
        let vocab = match task {
            Task::NoisyRecall => 32,
            Task::Memorization => 256,
            _ => 16,
        };
        Self { task, vocab, noise_vocab: 16, noise: 0.2, key_motif: 3, value_motif: 3, copy: 16, tokens: 31 }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), SyntheticError> {
        let bad = |reason: &str| SyntheticError::BadParameter {
            task: self.task,
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if !self.task.keys().contains(&key) {
            return Err(SyntheticError::UnknownParameter {
                task: self.task,
                key: key.to_owned(),
                allowed: self.task.keys().join(", "),
            });
        }
        if key == "noise" {
            let p: f64 = value.parse().map_err(|_| bad("not a number"))?;
            if !(0.0..1.0).contains(&p) {
                return Err(bad("must be in [0, 1)"));
            }
            self.noise = p;
            return Ok(());
        }
        let n: usize = value.parse().map_err(|_| bad("not a whole number"))?;
        match key {
            "vocab" => self.vocab = n,
            "noise_vocab" => self.noise_vocab = n,
            "key_motif" => self.key_motif = n,
            "value_motif" => self.value_motif = n,
            "copy" => self.copy = n,
            _ => self.tokens = n,
        }
        Ok(())
    }

    /// Keys and values of the recall tasks and memorization: ids `0..k` are keys, `k..2k` values.
    fn key_count(&self) -> usize {
        match self.task {
            Task::NoisyRecall => self.vocab.saturating_sub(1 + self.noise_vocab) / 2,
            Task::Memorization => self.vocab.saturating_sub(2) / 2,
            _ => self.vocab.saturating_sub(1) / 2,
        }
    }

    /// The pad token (the blank for copying and compression).
    fn pad(&self) -> u32 {
        match self.task {
            Task::SelectiveCopying | Task::Compression | Task::Memorization => (self.vocab - 2) as u32,
            _ => (self.vocab - 1) as u32,
        }
    }

    /// Checks the parameters against each other and against the sequence length.
    fn check(&self, seq_len: usize) -> Result<(), SyntheticError> {
        let bad = |reason: String| Err(SyntheticError::Infeasible { task: self.task, reason });
        match self.task {
            Task::InContextRecall | Task::FuzzyRecall | Task::NoisyRecall | Task::Memorization => {
                if self.key_count() < 1 {
                    return bad(format!("vocab {} leaves no room for keys and values", self.vocab));
                }
            }
            Task::SelectiveCopying | Task::Compression => {
                if self.vocab < 3 {
                    return bad(format!(
                        "vocab {} leaves no content tokens besides the two specials",
                        self.vocab
                    ));
                }
            }
        }
        match self.task {
            Task::NoisyRecall if self.noise > 0.0 && self.noise_vocab == 0 => {
                bad("noise needs noise_vocab ≥ 1".into())
            }
            Task::FuzzyRecall if self.key_motif == 0 || self.value_motif == 0 => {
                bad("key_motif and value_motif must be at least 1".into())
            }
            Task::FuzzyRecall if self.key_motif > self.key_count() || self.value_motif > self.key_count() => {
                bad(format!(
                    "motifs of {} tokens need at least that many keys and values",
                    self.key_motif.max(self.value_motif)
                ))
            }
            Task::FuzzyRecall if seq_len < 2 * (self.key_motif + self.value_motif) => {
                bad(format!("seq_len {seq_len} holds fewer than two pairs"))
            }
            Task::SelectiveCopying if self.copy == 0 || seq_len < 2 * self.copy + 1 => {
                bad(format!("copying {} tokens needs seq_len ≥ {}", self.copy, 2 * self.copy + 1))
            }
            Task::Compression if self.tokens == 0 || seq_len < 2 * self.tokens + 1 => {
                bad(format!("reconstructing {} tokens needs seq_len ≥ {}", self.tokens, 2 * self.tokens + 1))
            }
            _ if seq_len < 4 => bad(format!("seq_len {seq_len} is below 4")),
            _ => Ok(()),
        }
    }

    /// The parameters that differ from the defaults, as in a corpus string.
    fn changed(&self) -> Vec<String> {
        let d = TaskSpec::new(self.task);
        let mut out = Vec::new();
        for key in self.task.keys() {
            let (mine, default) = match *key {
                "vocab" => (self.vocab.to_string(), d.vocab.to_string()),
                "noise_vocab" => (self.noise_vocab.to_string(), d.noise_vocab.to_string()),
                "noise" => (self.noise.to_string(), d.noise.to_string()),
                "key_motif" => (self.key_motif.to_string(), d.key_motif.to_string()),
                "value_motif" => (self.value_motif.to_string(), d.value_motif.to_string()),
                "copy" => (self.copy.to_string(), d.copy.to_string()),
                _ => (self.tokens.to_string(), d.tokens.to_string()),
            };
            if mine != default {
                out.push(format!("{key}={mine}"));
            }
        }
        out
    }
}

/// A mix of synthetic tasks: the corpus `synthetic:...` names.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    pub tasks: Vec<TaskSpec>,
    /// Seeds the validation examples and the memorization map (not the training examples, which
    /// follow the run's seed).
    pub seed: u64,
}

impl SyntheticConfig {
    /// The given tasks with their default parameters.
    pub fn new(tasks: impl IntoIterator<Item = Task>) -> Self {
        Self { tasks: tasks.into_iter().map(TaskSpec::new).collect(), seed: 0 }
    }
}

impl FromStr for SyntheticConfig {
    type Err = SyntheticError;

    /// Parses the part after `synthetic:` (see the module doc).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tasks: Vec<TaskSpec> = Vec::new();
        for item in s.split(',') {
            let (name, params) = item.split_once('?').unwrap_or((item, ""));
            let mut spec = TaskSpec::new(name.parse()?);
            for pair in params.split('&').filter(|p| !p.is_empty()) {
                let (key, value) =
                    pair.split_once('=').ok_or_else(|| SyntheticError::BadPair(pair.to_owned()))?;
                spec.set(key.trim(), value.trim())?;
            }
            if tasks.iter().any(|t| t.task == spec.task) {
                return Err(SyntheticError::DuplicateTask(spec.task));
            }
            tasks.push(spec);
        }
        Ok(Self { tasks, seed: 0 })
    }
}

impl fmt::Display for SyntheticConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .tasks
            .iter()
            .map(|t| {
                let changed = t.changed();
                if changed.is_empty() {
                    t.task.to_string()
                } else {
                    format!("{}?{}", t.task, changed.join("&"))
                }
            })
            .collect();
        write!(f, "synthetic:{}", items.join(","))
    }
}

/// Why a synthetic corpus could not be set up.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SyntheticError {
    #[error(
        "unknown synthetic task `{0}`; expected in_context_recall, fuzzy_recall, noisy_recall, selective_copying, compression or memorization"
    )]
    UnknownTask(String),
    #[error("synthetic task {0} is named twice")]
    DuplicateTask(Task),
    #[error("`{0}` is not a KEY=VALUE parameter")]
    BadPair(String),
    #[error("synthetic task {task} has no parameter `{key}` (it takes {allowed})")]
    UnknownParameter { task: Task, key: String, allowed: String },
    #[error("synthetic task {task}: {key}={value}: {reason}")]
    BadParameter { task: Task, key: String, value: String, reason: String },
    #[error("synthetic task {task}: {reason}")]
    Infeasible { task: Task, reason: String },
}

/// One example: `inputs`, `targets` and `scored` all have the sequence length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    /// Whether each target is an answer (counted in loss and accuracy).
    pub scored: Vec<bool>,
}

/// Uniform integers and coin flips from a ChaCha8 stream.
struct Draw(ChaCha8Rng);

impl Draw {
    fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self(rng)
    }

    /// Uniform in `0..n` by the widening multiply (bias below n / 2^64).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.0.next_u64()) * n as u128) >> 64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// `len` distinct ids from `start..start + n`, in random order.
    fn distinct(&mut self, start: usize, n: usize, len: usize) -> Vec<u32> {
        let mut pool: Vec<u32> = (start..start + n).map(|i| i as u32).collect();
        for i in 0..len {
            let j = i + self.below(n - i);
            pool.swap(i, j);
        }
        pool.truncate(len);
        pool
    }
}

/// A next-token example from a token sequence of `seq_len + 1` and the answer positions in it.
fn shifted(tokens: Vec<u32>, answers: &[bool]) -> Example {
    Example {
        inputs: tokens[..tokens.len() - 1].to_vec(),
        targets: tokens[1..].to_vec(),
        scored: answers[1..].to_vec(),
    }
}

/// Left-pads `tokens` (and its answer marks) to `len`.
fn pad_left(tokens: &mut Vec<u32>, answers: &mut Vec<bool>, len: usize, pad: u32) {
    let missing = len - tokens.len();
    tokens.splice(0..0, std::iter::repeat_n(pad, missing));
    answers.splice(0..0, std::iter::repeat_n(false, missing));
}

/// The task mix of a run, ready to generate examples at the run's sequence length.
#[derive(Clone, Debug)]
pub struct SyntheticTasks {
    config: SyntheticConfig,
    seq_len: usize,
    /// Id offset of each task in the shared vocabulary.
    offsets: Vec<u32>,
    /// The memorization map (value of key `k` at index `k`), task-local ids; empty if unused.
    memorization: Vec<u32>,
}

/// Names the validation examples' streams apart from anything else drawn from the data seed.
const VALIDATION_SALT: u64 = 0x7661_6c69_6461_7465;
/// Names the memorization map's stream.
const MEMORIZATION_SALT: u64 = 0x6d65_6d6f_7269_7a65;
/// Names the training examples' streams apart from the batch order of text corpora.
const TRAIN_SALT: u64 = 0x7472_6169_6e69_6e67;

impl SyntheticTasks {
    /// Checks the mix against the sequence length and draws the memorization map.
    pub fn new(config: &SyntheticConfig, seq_len: usize) -> Result<Self, SyntheticError> {
        let mut offsets = Vec::with_capacity(config.tasks.len());
        let mut next = 0u32;
        let mut memorization = Vec::new();
        for spec in &config.tasks {
            spec.check(seq_len)?;
            offsets.push(next);
            next += spec.vocab as u32;
            if spec.task == Task::Memorization {
                // A random bijection from keys onto values, as MAD's fixed map.
                let k = spec.key_count();
                let mut draw = Draw::new(config.seed ^ MEMORIZATION_SALT, 0);
                memorization = draw.distinct(k, k, k);
            }
        }
        Ok(Self { config: config.clone(), seq_len, offsets, memorization })
    }

    /// The model's vocabulary: every task's ids, side by side.
    pub fn vocab_size(&self) -> usize {
        self.config.tasks.iter().map(|t| t.vocab).sum()
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// Task names in order.
    pub fn task_names(&self) -> Vec<&'static str> {
        self.config.tasks.iter().map(|t| t.task.name()).collect()
    }

    /// The memorization map in task-local ids (the value of key `k` at index `k`).
    pub fn memorization_map(&self) -> &[u32] {
        &self.memorization
    }

    /// Example `index` of task `task` (an index into the mix) from `seed`, in task-local ids.
    pub fn local_example(&self, task: usize, seed: u64, index: u64) -> Example {
        let spec = &self.config.tasks[task];
        let mut draw = Draw::new(seed, index);
        match spec.task {
            Task::InContextRecall | Task::NoisyRecall => self.recall(spec, &mut draw),
            Task::FuzzyRecall => self.fuzzy_recall(spec, &mut draw),
            Task::SelectiveCopying => self.selective_copying(spec, &mut draw),
            Task::Compression => self.compression(spec, &mut draw),
            Task::Memorization => self.memorization(spec, &mut draw),
        }
    }

    /// [`Self::local_example`] moved to the task's ids in the shared vocabulary.
    pub fn example(&self, task: usize, seed: u64, index: u64) -> Example {
        let mut example = self.local_example(task, seed, index);
        let offset = self.offsets[task];
        for id in example.inputs.iter_mut().chain(example.targets.iter_mut()) {
            *id += offset;
        }
        example
    }

    /// The training batch of `step`: row `r` is example `step · batch_size + r` of the run's
    /// seed, and rows take the tasks in turn.
    pub fn train_batch(&self, seed: u64, step: u64, batch_size: usize) -> Batch {
        let n = self.config.tasks.len() as u64;
        let first = step * batch_size as u64;
        let examples = (first..first + batch_size as u64).map(|i| (i % n) as usize).zip(first..);
        self.batch(examples.map(|(task, index)| self.example(task, seed ^ TRAIN_SALT, index)))
    }

    /// Validation batches of one task: `examples` examples from the data seed, `batch_size` per
    /// batch (the last may be smaller).
    pub fn validation_batches(&self, task: usize, examples: usize, batch_size: usize) -> Vec<Batch> {
        let seed = self.config.seed ^ VALIDATION_SALT;
        let n = self.config.tasks.len() as u64;
        (0..examples as u64)
            .collect::<Vec<_>>()
            .chunks(batch_size.max(1))
            .map(|chunk| self.batch(chunk.iter().map(|&i| self.example(task, seed, i * n + task as u64))))
            .collect()
    }

    fn batch(&self, examples: impl Iterator<Item = Example>) -> Batch {
        let mut batch = Batch {
            inputs: Vec::new(),
            targets: Vec::new(),
            scored: Some(Vec::new()),
            rows: 0,
            seq_len: self.seq_len,
        };
        for e in examples {
            batch.inputs.extend(e.inputs);
            batch.targets.extend(e.targets);
            if let Some(scored) = &mut batch.scored {
                scored.extend(e.scored);
            }
            batch.rows += 1;
        }
        batch
    }

    /// In-context recall, and noisy recall when the spec has noise: pairs `k v` with a map drawn
    /// afresh for each sequence; a value is an answer when its key came before.
    fn recall(&self, spec: &TaskSpec, draw: &mut Draw) -> Example {
        let len = self.seq_len + 1;
        let k = spec.key_count();
        let noise = if spec.task == Task::NoisyRecall { spec.noise } else { 0.0 };
        let mut map: Vec<Option<u32>> = vec![None; k];
        let (mut tokens, mut answers) = (Vec::with_capacity(len), Vec::with_capacity(len));
        while tokens.len() + 2 <= len {
            if noise > 0.0 && draw.chance(noise) {
                for _ in 0..2 {
                    tokens.push((2 * k + draw.below(spec.noise_vocab)) as u32);
                    answers.push(false);
                }
                continue;
            }
            let key = draw.below(k);
            let seen = map[key].is_some();
            let value = *map[key].get_or_insert_with(|| (k + draw.below(k)) as u32);
            tokens.extend([key as u32, value]);
            answers.extend([false, seen]);
        }
        pad_left(&mut tokens, &mut answers, len, spec.pad());
        shifted(tokens, &answers)
    }

    /// Fuzzy recall: keys of 1..=key_motif distinct key tokens, values of 1..=value_motif
    /// distinct value tokens; the keys of one sequence are prefix-free (see the module doc).
    fn fuzzy_recall(&self, spec: &TaskSpec, draw: &mut Draw) -> Example {
        let len = self.seq_len + 1;
        let k = spec.key_count();
        let mut map: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
        let (mut tokens, mut answers) = (Vec::with_capacity(len), Vec::with_capacity(len));
        loop {
            let key = loop {
                let size = 1 + draw.below(spec.key_motif);
                let key = draw.distinct(0, k, size);
                // A key that is a proper prefix of a known key, or has one as a proper prefix,
                // would make the end of a key ambiguous; redraw it.
                let clash = map.iter().any(|(known, _)| {
                    let n = known.len().min(key.len());
                    known.len() != key.len() && known[..n] == key[..n]
                });
                if !clash {
                    break key;
                }
            };
            let known = map.iter().position(|(known, _)| *known == key);
            let value = match known {
                Some(i) => map[i].1.clone(),
                None => {
                    let size = 1 + draw.below(spec.value_motif);
                    draw.distinct(k, k, size)
                }
            };
            if tokens.len() + key.len() + value.len() > len {
                break;
            }
            answers.extend(std::iter::repeat_n(false, key.len()));
            answers.extend(std::iter::repeat_n(known.is_some(), value.len()));
            tokens.extend(&key);
            tokens.extend(&value);
            if known.is_none() {
                map.push((key, value));
            }
        }
        pad_left(&mut tokens, &mut answers, len, spec.pad());
        shifted(tokens, &answers)
    }

    /// Selective copying: `copy` content tokens at random places among blanks, the copy token,
    /// then one blank per token whose target is the next content token in order.
    fn selective_copying(&self, spec: &TaskSpec, draw: &mut Draw) -> Example {
        let (blank, copy_token) = (spec.pad(), (spec.vocab - 1) as u32);
        let region = self.seq_len - spec.copy - 1;
        let content: Vec<u32> = (0..spec.copy).map(|_| draw.below(spec.vocab - 2) as u32).collect();
        // Choose which `copy` of the `region` slots hold content (selection sampling keeps order).
        let mut inputs = Vec::with_capacity(self.seq_len);
        let mut placed = 0;
        for slot in 0..region {
            let left = spec.copy - placed;
            if left > 0 && draw.below(region - slot) < left {
                inputs.push(content[placed]);
                placed += 1;
            } else {
                inputs.push(blank);
            }
        }
        inputs.push(copy_token);
        inputs.extend(std::iter::repeat_n(blank, spec.copy));
        self.write_out(inputs, &content)
    }

    /// Compression (see the module doc): `tokens` random tokens, the compression token, then
    /// one blank per token whose target is the token to reconstruct; padded on the left.
    fn compression(&self, spec: &TaskSpec, draw: &mut Draw) -> Example {
        let (blank, compress) = (spec.pad(), (spec.vocab - 1) as u32);
        let content: Vec<u32> = (0..spec.tokens).map(|_| draw.below(spec.vocab - 2) as u32).collect();
        let mut inputs = vec![blank; self.seq_len - 2 * spec.tokens - 1];
        inputs.extend(&content);
        inputs.push(compress);
        inputs.extend(std::iter::repeat_n(blank, spec.tokens));
        self.write_out(inputs, &content)
    }

    /// Targets for a layout whose last `content.len()` inputs are blanks to be written as
    /// `content`; every other target is the next input, unscored.
    fn write_out(&self, inputs: Vec<u32>, content: &[u32]) -> Example {
        let start = self.seq_len - content.len();
        let mut targets: Vec<u32> = inputs[1..].to_vec();
        targets.push(inputs[self.seq_len - 1]);
        targets[start..].copy_from_slice(content);
        let scored = (0..self.seq_len).map(|i| i >= start).collect();
        Example { inputs, targets, scored }
    }

    /// Memorization: `key insert` pairs; the target at each insert token is the key's value
    /// under the run's fixed map.
    fn memorization(&self, spec: &TaskSpec, draw: &mut Draw) -> Example {
        let (pad, insert) = (spec.pad(), (spec.vocab - 1) as u32);
        let mut inputs = vec![pad; self.seq_len % 2];
        let mut targets = vec![pad; self.seq_len % 2];
        let mut scored = vec![false; self.seq_len % 2];
        while inputs.len() < self.seq_len {
            let key = draw.below(spec.key_count());
            inputs.extend([key as u32, insert]);
            targets.extend([insert, self.memorization[key]]);
            scored.extend([false, true]);
        }
        Example { inputs, targets, scored }
    }
}

/// Per-task scores of a validation pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskScores {
    /// Mean loss over each task's scored targets.
    pub loss: BTreeMap<String, f64>,
    /// Share of each task's scored targets the model's argmax gets right.
    pub accuracy: BTreeMap<String, f64>,
    /// Mean loss over every scored target of every task.
    pub pooled_loss: f64,
}

#[cfg(test)]
mod tests;
