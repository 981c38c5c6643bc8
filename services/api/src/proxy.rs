//! The proxy training that scores a candidate: its budget, batch shape, data, tokenizer and
//! checkpoints, and their validation.
//!
//! The strings a spec uses for data are parsed here, once, for every side: [`TokenizerChoice`]
//! (`bytes`, `bpe:N`, `file:NAME.json`), [`CorpusRef`] (`synthetic:TASKS`, `shards:NAME`, or a
//! path) and [`CheckpointEvery`] (`500 steps`, `10 min`). Names a worker resolves under its data
//! folder must be relative and stay inside it ([`data_path_problem`]).

use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use search_space::ValidationErrors;
use search_space::model::MAX_META_TOKENS;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::accuracy::{self, SYNTHETIC_PREFIX};
use crate::spec::{
    MAX_BATCH_SIZE, MAX_BATCH_TOKENS, MAX_BPE_VOCAB, MAX_CORPUS_CHARS, MAX_EVAL_TOKENS, MAX_LR,
    MAX_PROXY_TOKENS, MAX_SEQ_LEN, NOT_BLANK, text_problem,
};

/// The byte tokenizer's vocabulary: one id per byte value.
pub const BYTE_VOCAB: u32 = 256;

/// The prefix of a corpus that names a prepared shard set (`frontier data prepare`).
pub const SHARDS_PREFIX: &str = "shards:";
/// A proxy corpus answered from a tabular benchmark instead of training: `table:NAME`, a table
/// file `NAME.json.gz` in the coordinator's table folder (`frontier serve --table-dir`).
pub const TABLE_PREFIX: &str = "table:";

/// The prefix of a tokenizer that names a tokenizer file.
pub const FILE_PREFIX: &str = "file:";

/// The proxy training budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyBudget {
    /// Training tokens per candidate (the top rung's budget with successive halving); at least
    /// one batch (`seq_len × batch_size`).
    #[schemars(range(min = 1, max = MAX_PROXY_TOKENS))]
    pub tokens: u64,
    #[schemars(range(min = 1, max = MAX_SEQ_LEN))]
    pub seq_len: u32,
    /// Sequences per optimiser step (the global batch); `seq_len × batch_size` is at most 2^24
    /// tokens.
    #[schemars(range(min = 1, max = MAX_BATCH_SIZE))]
    pub batch_size: u32,
    /// Sequences per forward/backward pass when the global batch does not fit the device at
    /// once: the step accumulates `batch_size / micro_batch` micro-batches' gradients, which
    /// gives the gradient of the whole batch. Must divide `batch_size`; absent means one pass.
    #[schemars(range(min = 1, max = MAX_BATCH_SIZE))]
    pub micro_batch: Option<u32>,
    /// Peak learning rate of the cosine schedule, in (0, [`MAX_LR`]]. Far above ~0.1 AdamW
    /// usually diverges; such a trial is recorded as diverged, not refused.
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = MAX_LR))]
    pub lr: f64,
    /// Share of the steps spent warming up.
    #[schemars(extend("minimum" = 0, "exclusiveMaximum" = 1))]
    pub warmup_fraction: f64,
    /// The paper's weight normalisation after every step.
    pub weight_norm: bool,
    /// Meta tokens prepended to every sequence (overrides `model.meta_tokens` for the proxy).
    #[schemars(range(max = MAX_META_TOKENS))]
    pub meta_tokens: Option<u32>,
    /// `bytes` (default), `bpe:N` (a BPE of N tokens, 260 ≤ N ≤ 262144, trained on the corpus)
    /// or `file:NAME.json` (a Hugging Face `tokenizer.json` in every worker's data folder). Its
    /// vocabulary must fit the model's `vocab_size`.
    #[schemars(length(min = 1, max = MAX_CORPUS_CHARS), pattern(r"^(?:bytes|bpe:\+?[0-9]{1,10}|file:[^\u0000]+)$"))]
    pub tokenizer: String,
    /// The training corpus as workers see it: a path relative to the worker's data folder (a
    /// file or folder of .txt/.jsonl), `shards:NAME` (a shard set `frontier data prepare`
    /// wrote there), or `synthetic:TASK[,TASK...]` for the built-in tasks.
    #[schemars(length(min = 1, max = MAX_CORPUS_CHARS), pattern(NOT_BLANK))]
    pub corpus: String,
    /// Most validation tokens scored per trial.
    #[schemars(range(min = 1, max = MAX_EVAL_TOKENS))]
    pub eval_tokens: Option<u64>,
    /// Also measure each candidate's real decode latency at the target setting on the worker.
    pub measure_latency: bool,
    /// How often a worker with a checkpoint folder saves the trial's whole training state, so a
    /// re-leased trial resumes where the last attempt stopped: `N steps` or `N min`. Absent: no
    /// checkpoints.
    pub checkpoint_every: Option<CheckpointEvery>,
}

impl Default for ProxyBudget {
    fn default() -> Self {
        Self {
            tokens: 200_000,
            seq_len: 128,
            batch_size: 8,
            micro_batch: None,
            lr: 3e-3,
            warmup_fraction: 0.05,
            weight_norm: false,
            meta_tokens: None,
            tokenizer: "bytes".to_owned(),
            corpus: String::new(),
            eval_tokens: Some(16_384),
            measure_latency: false,
            checkpoint_every: None,
        }
    }
}

impl ProxyBudget {
    /// Sequences per forward/backward pass.
    pub fn micro_batch_size(&self) -> u32 {
        self.micro_batch.unwrap_or(self.batch_size)
    }

    /// Every problem of the budget, with its path under `proxy.`; `vocab_size` is the model's,
    /// which the tokenizer's vocabulary must fit.
    pub fn validate(&self, vocab_size: u32, errs: &mut ValidationErrors) {
        let p = self;
        if p.seq_len == 0 || p.seq_len > MAX_SEQ_LEN {
            errs.push("proxy.seq_len", format!("must be in 1..={MAX_SEQ_LEN}, got {}", p.seq_len));
        }
        if p.batch_size == 0 || p.batch_size > MAX_BATCH_SIZE {
            errs.push("proxy.batch_size", format!("must be in 1..={MAX_BATCH_SIZE}, got {}", p.batch_size));
        }
        if let Some(m) = p.micro_batch
            && (m == 0 || !p.batch_size.is_multiple_of(m))
        {
            errs.push(
                "proxy.micro_batch",
                format!("must divide batch_size ({}) into equal micro-batches, got {m}", p.batch_size),
            );
        }
        let batch = u64::from(p.seq_len) * u64::from(p.batch_size);
        if batch > MAX_BATCH_TOKENS {
            errs.push(
                "proxy.batch_size",
                format!(
                    "a batch of seq_len × batch_size = {batch} tokens is over the cap of {MAX_BATCH_TOKENS}"
                ),
            );
        }
        if p.tokens > MAX_PROXY_TOKENS {
            errs.push("proxy.tokens", format!("must be at most {MAX_PROXY_TOKENS}, got {}", p.tokens));
        } else if p.tokens < batch.max(1) {
            errs.push(
                "proxy.tokens",
                format!("must be at least one batch (seq_len × batch_size = {batch}), got {}", p.tokens),
            );
        }
        if !(p.lr.is_finite() && p.lr > 0.0 && p.lr <= MAX_LR) {
            errs.push("proxy.lr", format!("must be in (0, {MAX_LR}], got {}", p.lr));
        }
        if !(0.0..1.0).contains(&p.warmup_fraction) {
            errs.push("proxy.warmup_fraction", format!("must be in [0, 1), got {}", p.warmup_fraction));
        }
        let corpus = if p.corpus.trim().is_empty() {
            errs.push(
                "proxy.corpus",
                "must name the training corpus as workers see it (a path, shards:NAME or synthetic:TASKS)",
            );
            None
        } else if let Some(problem) = text_problem(&p.corpus, MAX_CORPUS_CHARS, true) {
            errs.push("proxy.corpus", problem);
            None
        } else {
            accuracy::validate_corpus(&p.corpus, errs);
            match p.corpus.parse::<CorpusRef>() {
                Ok(corpus) => Some(corpus),
                Err(problem) => {
                    errs.push("proxy.corpus", problem);
                    None
                }
            }
        };
        match p.tokenizer.parse::<TokenizerChoice>() {
            Err(problem) => errs.push("proxy.tokenizer", problem),
            Ok(choice) => {
                if let Some(needed) = choice.vocab_size()
                    && needed > vocab_size
                {
                    errs.push(
                        "proxy.tokenizer",
                        format!(
                            "the {choice} tokenizer has {needed} ids, more than the model's vocabulary of {vocab_size} (model.vocab_size)"
                        ),
                    );
                }
                if matches!(corpus, Some(CorpusRef::Synthetic(_))) && choice != TokenizerChoice::Bytes {
                    errs.push(
                        "proxy.tokenizer",
                        format!("a synthetic corpus brings its own vocabulary; the {choice} tokenizer does not apply"),
                    );
                }
            }
        }
        match p.eval_tokens {
            Some(0) => errs.push("proxy.eval_tokens", "must be at least 1 when given"),
            Some(n) if n > MAX_EVAL_TOKENS => {
                errs.push("proxy.eval_tokens", format!("must be at most {MAX_EVAL_TOKENS}, got {n}"))
            }
            _ => {}
        }
        if let Some(m) = p.meta_tokens
            && m > MAX_META_TOKENS
        {
            errs.push("proxy.meta_tokens", format!("must be at most {MAX_META_TOKENS}, got {m}"));
        }
    }
}

/// What is wrong with a name a worker resolves under its data folder, if anything: it must be
/// relative, without `..` parts and without control characters, so it cannot leave that folder
/// (the worker checks again where the name leads, symbolic links included).
pub fn data_path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if path.chars().any(char::is_control) {
        return Some("must not contain control characters".to_owned());
    }
    // `\\server` and `C:` are absolute elsewhere; a spec is read by workers on any system.
    if path.starts_with('/') || path.starts_with('\\') || path.as_bytes().get(1) == Some(&b':') {
        return Some(format!(
            "`{}` must be relative to the workers' data folder (--data-dir), not absolute",
            shown(path)
        ));
    }
    if path.split(['/', '\\']).any(|part| part == "..") {
        return Some(format!("`{}` must stay inside the workers' data folder (no `..`)", shown(path)));
    }
    None
}

/// At most 60 characters of a value, for messages.
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if s.chars().nth(60).is_some() {
        out.push('…');
    }
    out
}

/// Which tokenizer a proxy trains with, parsed from `bytes`, `bpe:N` or `file:NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerChoice {
    /// One id per byte.
    Bytes,
    /// A byte-level BPE of at most `vocab_size` ids, trained on the corpus's training side.
    Bpe { vocab_size: u32 },
    /// A tokenizer file: relative to the worker's data folder in a spec, any path on the command
    /// line.
    File(String),
}

impl TokenizerChoice {
    /// The vocabulary it produces, when known without reading a file.
    pub fn vocab_size(&self) -> Option<u32> {
        match self {
            TokenizerChoice::Bytes => Some(BYTE_VOCAB),
            TokenizerChoice::Bpe { vocab_size } => Some(*vocab_size),
            TokenizerChoice::File(_) => None,
        }
    }

    /// Parses a command-line tokenizer, where a bare path ending in `.json` also names a file and
    /// the path need not be relative.
    pub fn from_cli(s: &str) -> Result<Self, String> {
        match s.strip_prefix(FILE_PREFIX) {
            Some(path) if !path.is_empty() => Ok(TokenizerChoice::File(path.to_owned())),
            _ if s.ends_with(".json") => Ok(TokenizerChoice::File(s.to_owned())),
            _ => s.parse(),
        }
    }
}

impl FromStr for TokenizerChoice {
    type Err = String;

    /// The spec's form: the file name must stay inside the worker's data folder.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "bytes" {
            return Ok(TokenizerChoice::Bytes);
        }
        if let Some(name) = s.strip_prefix(FILE_PREFIX) {
            return match data_path_problem(name) {
                None => Ok(TokenizerChoice::File(name.to_owned())),
                Some(problem) => Err(format!("tokenizer file {problem}")),
            };
        }
        match s.strip_prefix("bpe:").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) if (260..=MAX_BPE_VOCAB).contains(&n) => Ok(TokenizerChoice::Bpe { vocab_size: n }),
            _ => Err(format!(
                "must be `bytes`, `bpe:N` with 260 ≤ N ≤ {MAX_BPE_VOCAB}, or `file:NAME.json`, got `{}`",
                shown(s)
            )),
        }
    }
}

impl fmt::Display for TokenizerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerChoice::Bytes => f.write_str("bytes"),
            TokenizerChoice::Bpe { vocab_size } => write!(f, "bpe:{vocab_size}"),
            TokenizerChoice::File(path) => write!(f, "{FILE_PREFIX}{path}"),
        }
    }
}

/// Where a proxy's training data comes from, parsed from a spec's `proxy.corpus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorpusRef {
    /// Built-in synthetic tasks: the text after `synthetic:` (parsed by the worker).
    Synthetic(String),
    /// A shard set prepared by `frontier data prepare`, by its folder under the data folder.
    Shards(String),
    /// A text file, JSONL file or folder under the data folder.
    Path(String),
    /// A tabular benchmark the coordinator answers trials from, by name.
    Table(String),
}

impl FromStr for CorpusRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(tasks) = s.strip_prefix(SYNTHETIC_PREFIX) {
            return Ok(CorpusRef::Synthetic(tasks.to_owned()));
        }
        if let Some(name) = s.strip_prefix(TABLE_PREFIX) {
            let plain = !name.is_empty()
                && name.len() <= 100
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !name.starts_with('.');
            return if plain {
                Ok(CorpusRef::Table(name.to_owned()))
            } else {
                Err(format!(
                    "table name `{}` must be 1–100 letters, digits, `-`, `_` or `.`, not starting with `.`",
                    shown(name)
                ))
            };
        }
        if let Some(name) = s.strip_prefix(SHARDS_PREFIX) {
            return match data_path_problem(name) {
                None => Ok(CorpusRef::Shards(name.to_owned())),
                Some(problem) => Err(format!("shard set {problem}")),
            };
        }
        match data_path_problem(s) {
            None => Ok(CorpusRef::Path(s.to_owned())),
            Some(problem) => Err(format!("corpus path {problem}")),
        }
    }
}

/// How often a training run saves a checkpoint: `N steps` or `N min` (also `N step`, `Nmin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointEvery {
    Steps(u64),
    Minutes(u64),
}

impl FromStr for CheckpointEvery {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(digits);
        let n: u64 = n.parse().map_err(|_| format!("must be `N steps` or `N min`, got `{}`", shown(s)))?;
        if n == 0 {
            return Err("must be at least 1 step or 1 minute".to_owned());
        }
        match unit.trim() {
            "steps" | "step" => Ok(CheckpointEvery::Steps(n)),
            "min" | "mins" | "minutes" | "minute" => Ok(CheckpointEvery::Minutes(n)),
            _ => Err(format!("must be `N steps` or `N min`, got `{}`", shown(s))),
        }
    }
}

impl fmt::Display for CheckpointEvery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointEvery::Steps(n) => write!(f, "{n} steps"),
            CheckpointEvery::Minutes(n) => write!(f, "{n} min"),
        }
    }
}

impl Serialize for CheckpointEvery {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CheckpointEvery {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for CheckpointEvery {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CheckpointEvery".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "`N steps` or `N min` (N ≥ 1).",
            "pattern": r"^\s*0*[1-9][0-9]{0,17}\s*(?:steps?|min|mins|minutes?)\s*$",
            "examples": ["500 steps", "10 min"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(proxy: &ProxyBudget, vocab: u32) -> Vec<(String, String)> {
        let mut errs = ValidationErrors::new();
        proxy.validate(vocab, &mut errs);
        errs.errors().iter().map(|e| (e.path.clone(), e.message.clone())).collect()
    }

    fn proxy(corpus: &str, tokenizer: &str) -> ProxyBudget {
        ProxyBudget { corpus: corpus.into(), tokenizer: tokenizer.into(), ..ProxyBudget::default() }
    }

    #[test]
    fn tokenizers_parse_in_every_form_and_refuse_the_rest() {
        assert_eq!("bytes".parse(), Ok(TokenizerChoice::Bytes));
        assert_eq!("bpe:512".parse(), Ok(TokenizerChoice::Bpe { vocab_size: 512 }));
        assert_eq!("file:tok/en.json".parse(), Ok(TokenizerChoice::File("tok/en.json".into())));
        for bad in ["bpe:12", "bpe:x", "sentencepiece", "file:/etc/passwd", "file:../x.json", "file:"] {
            assert!(bad.parse::<TokenizerChoice>().is_err(), "{bad}");
        }
        // The command line also takes any path to a tokenizer file.
        assert_eq!(TokenizerChoice::from_cli("/tmp/t.json"), Ok(TokenizerChoice::File("/tmp/t.json".into())));
        assert_eq!(TokenizerChoice::from_cli("bpe:300"), Ok(TokenizerChoice::Bpe { vocab_size: 300 }));
        assert_eq!(TokenizerChoice::from_cli("file:t.json").map(|t| t.to_string()), Ok("file:t.json".into()));
    }

    #[test]
    fn data_names_must_stay_inside_the_data_folder() {
        for good in ["corpus.txt", "books/", "a/b/c.jsonl", "shards-v1", ".", "./a", "a..b"] {
            assert_eq!(data_path_problem(good), None, "{good}");
        }
        for bad in ["/etc/passwd", "../../etc/shadow", "a/../../b", "C:\\x", "a\nb", ""] {
            assert!(data_path_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!("shards:web-v1".parse(), Ok(CorpusRef::Shards("web-v1".into())));
        assert!("shards:/data/web".parse::<CorpusRef>().unwrap_err().contains("relative"));
        assert_eq!(
            "synthetic:in_context_recall".parse(),
            Ok(CorpusRef::Synthetic("in_context_recall".into()))
        );
        assert_eq!("table:tiny-shakespeare".parse(), Ok(CorpusRef::Table("tiny-shakespeare".into())));
        for bad in ["table:", "table:../x", "table:a/b", "table:.hidden", "table:a b"] {
            assert!(bad.parse::<CorpusRef>().unwrap_err().contains("table name"), "{bad:?}");
        }
    }

    #[test]
    fn a_tokenizer_larger_than_the_model_vocabulary_is_refused_naming_both_sizes() {
        let errs = problems(&proxy("c.txt", "bpe:512"), 256);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "proxy.tokenizer");
        assert!(errs[0].1.contains("512 ids") && errs[0].1.contains("vocabulary of 256"), "{errs:?}");
        assert!(problems(&proxy("c.txt", "bpe:512"), 512).is_empty());
        assert!(problems(&proxy("c.txt", "file:t.json"), 256).is_empty(), "files are checked by workers");
    }

    #[test]
    fn micro_batches_must_divide_the_batch() {
        let with = |micro| ProxyBudget { micro_batch: Some(micro), ..proxy("c.txt", "bytes") };
        assert!(problems(&with(2), 256).is_empty());
        for bad in [0, 3, 16] {
            let errs = problems(&with(bad), 256);
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert_eq!(errs[0].0, "proxy.micro_batch");
        }
    }

    #[test]
    fn checkpoint_intervals_read_and_write_back() {
        assert_eq!("500 steps".parse(), Ok(CheckpointEvery::Steps(500)));
        assert_eq!("1step".parse(), Ok(CheckpointEvery::Steps(1)));
        assert_eq!(" 10 min ".parse(), Ok(CheckpointEvery::Minutes(10)));
        for bad in ["0 steps", "ten min", "5 hours", "", "5"] {
            assert!(bad.parse::<CheckpointEvery>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&CheckpointEvery::Minutes(3)).unwrap();
        assert_eq!(json, "\"3 min\"");
        assert_eq!(serde_json::from_str::<CheckpointEvery>(&json).unwrap(), CheckpointEvery::Minutes(3));
        let err = serde_json::from_str::<CheckpointEvery>("\"5 hours\"").unwrap_err();
        assert!(err.to_string().contains("N steps"), "{err}");
    }
}
