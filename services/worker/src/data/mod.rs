//! The training data pipeline: text on disk to the token streams the trainer batches.
//!
//! Pure Rust and IO, no burn: everything here produces `Vec<u32>` ids that the trainer turns
//! into tensors on whatever backend it runs.
//!
//! # Layout
//! 1. [`corpus`] reads a text file, a JSONL file (`text` field) or a directory of them into
//!    documents, with typed errors for a missing path, no text, non-UTF-8 bytes and bad lines.
//! 2. [`split`] holds out the validation part *as text*, by document or by tail, so a BPE
//!    tokenizer is trained on the training text only and the validation text never reaches
//!    training in any form.
//! 3. [`tokenizer`] encodes: bytes (256 ids) by default, or byte-level BPE trained to a
//!    requested vocabulary size or loaded from a `tokenizer.json`.
//! 4. [`shard`] caches each tokenized stream in a checked binary file under a content key.
//! 5. [`batches`] cuts seeded random training windows and sequential validation windows, from a
//!    stream in memory or from a [`shardset`] on disk.
//!
//! At scale the corpus is tokenized once by [`prepare_shards`] (`frontier data prepare`) into a
//! [`shardset`]: fixed-size binary shards and a manifest that workers map instead of reading
//! text (`proxy.corpus = "shards:NAME"`).
//!
//! [`prepare`] runs steps 1 to 4 for a [`DataConfig`]; the trainer then builds
//! [`TrainBatches`] and [`ValidationBatches`] over the returned streams.
//!
//! A corpus may instead be [`synthetic`]: tasks generated from a seed (recall, copying,
//! compression, memorization), with their own small vocabulary and a mask of the scored
//! targets; no file is read. [`CorpusSource`] parses either kind from one string, the same way
//! on the command line and in a search spec.
//!
//! # Streams
//! Each side of the split is a list of text segments (whole documents, or the two parts of
//! the document the tail cut falls in). Each segment is encoded on its own and the encodings
//! are joined by the encoding of [`DOCUMENT_SEPARATOR`], a newline: it needs no id outside the
//! byte vocabulary, and a newline is what the model sees between paragraphs anyway, so the
//! decoded stream reads as the documents one after another. Segments are encoded separately so
//! a BPE merge never spans two documents and the split boundary is the same for every
//! tokenizer.
//!
//! # Cache
//! With a cache directory, each stream is stored as a shard named by a [`ContentKey`] over the
//! documents' text, the validation fraction and split version, and the tokenizer's identity;
//! a later [`prepare`] of the same data reads the shards instead of tokenizing, and a shard
//! that fails its checks is rebuilt. A BPE tokenizer trained by [`prepare`] is cached the same
//! way, keyed by the training text and the vocabulary size. Keys hash content, never file
//! names or times, so a copied corpus reuses its cache and an edited one never does.

pub mod batches;
pub mod corpus;
pub mod shard;
pub mod shardset;
pub mod split;
pub mod synthetic;
pub mod tokenizer;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use batches::{Batch, BatchError, TrainBatches, ValidationBatches};
pub use corpus::{Corpus, CorpusError};
pub use shard::{ContentKey, ShardError};
pub use shardset::{Manifest, PrepareConfig, ShardSet, ShardSetError, ShardStream, prepare_shards};
pub use split::{SplitError, SplitMethod, TextSplit, split_documents};
pub use synthetic::{SyntheticConfig, SyntheticError, SyntheticTasks, Task, TaskSpec};
pub use tokenizer::{BYTE_VOCAB_SIZE, Tokenizer, TokenizerError};

/// The text placed between consecutive segments of a stream (see the module doc).
pub const DOCUMENT_SEPARATOR: &str = "\n";

/// Which tokenizer a run uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerSpec {
    /// One token per byte (the default).
    Bytes,
    /// A byte-level BPE trained on the training text, with at most this many ids.
    TrainBpe { vocab_size: usize },
    /// A tokenizer file (a Hugging Face `tokenizer.json`, or one [`Tokenizer::save`] wrote).
    File(PathBuf),
}

impl TokenizerSpec {
    /// The tokenizer a parsed spec or command-line choice names; a relative file name is read
    /// from `dir` when given (a worker's data folder).
    pub fn from_choice(choice: api::proxy::TokenizerChoice, dir: Option<&Path>) -> Self {
        use api::proxy::TokenizerChoice;
        match choice {
            TokenizerChoice::Bytes => TokenizerSpec::Bytes,
            TokenizerChoice::Bpe { vocab_size } => {
                TokenizerSpec::TrainBpe { vocab_size: vocab_size as usize }
            }
            TokenizerChoice::File(name) => {
                let path = PathBuf::from(name);
                TokenizerSpec::File(match dir {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path,
                })
            }
        }
    }
}

/// Where training data comes from: text on disk, or synthetic tasks.
///
/// Parsed from one string: `synthetic:TASK[?KEY=VALUE&...][,TASK...]` (see [`synthetic`] for
/// the tasks and keys) is a synthetic mix; anything else is a path to a text file, a JSONL file
/// or a directory.
#[derive(Clone, Debug, PartialEq)]
pub enum CorpusSource {
    Path(PathBuf),
    /// A shard set folder written by [`prepare_shards`].
    Shards(PathBuf),
    Synthetic(SyntheticConfig),
}

/// The prefix that marks a synthetic corpus string, as search specs spell it.
pub use api::accuracy::SYNTHETIC_PREFIX;

impl FromStr for CorpusSource {
    type Err = SyntheticError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(dir) = s.strip_prefix(api::proxy::SHARDS_PREFIX) {
            return Ok(CorpusSource::Shards(PathBuf::from(dir)));
        }
        match s.strip_prefix(SYNTHETIC_PREFIX) {
            Some(tasks) => Ok(CorpusSource::Synthetic(tasks.parse()?)),
            None => Ok(CorpusSource::Path(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for CorpusSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorpusSource::Path(path) => write!(f, "{}", path.display()),
            CorpusSource::Shards(dir) => write!(f, "{}{}", api::proxy::SHARDS_PREFIX, dir.display()),
            CorpusSource::Synthetic(config) => write!(f, "{config}"),
        }
    }
}

impl From<PathBuf> for CorpusSource {
    fn from(path: PathBuf) -> Self {
        CorpusSource::Path(path)
    }
}

/// What [`prepare`] reads and how.
#[derive(Clone, Debug, PartialEq)]
pub struct DataConfig {
    /// A text file, a JSONL file or a directory (see [`corpus`]), or synthetic tasks.
    pub corpus: CorpusSource,
    /// The tokenizer (text corpora only; synthetic tasks bring their own vocabulary).
    pub tokenizer: TokenizerSpec,
    /// The share of the corpus held out for validation, in `[0, 1)` (see [`split`]).
    pub validation_fraction: f64,
    /// Where shards and trained tokenizers are cached; `None` tokenizes every time.
    pub cache_dir: Option<PathBuf>,
    /// The largest vocabulary the tokenizer may have: the architecture's, in service mode,
    /// where the model must cover its tokenizer. `None` sizes the model to the tokenizer.
    pub max_vocab: Option<usize>,
}

impl DataConfig {
    /// Bytes tokenizer, a tenth held out, no cache.
    pub fn new(corpus: impl Into<PathBuf>) -> Self {
        Self::from_source(CorpusSource::Path(corpus.into()))
    }

    /// [`DataConfig::new`]'s settings for any source.
    pub fn from_source(corpus: CorpusSource) -> Self {
        Self {
            corpus,
            tokenizer: TokenizerSpec::Bytes,
            validation_fraction: 0.1,
            cache_dir: None,
            max_vocab: None,
        }
    }
}

/// Whether a cached artefact was used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// There is no cache for this artefact (no cache directory, or nothing to cache).
    Uncached,
    /// Not in the cache: made and stored.
    Built,
    /// Read from the cache; nothing was recomputed.
    Reused,
    /// In the cache but unusable, so made again and stored; the reason says what was wrong.
    Rebuilt { reason: String },
}

/// The token streams of a corpus, ready to batch.
#[derive(Clone, Debug)]
pub struct PreparedData {
    /// The tokenizer the streams were made with (for vocabulary size and decoding samples).
    pub tokenizer: Tokenizer,
    /// The training stream.
    pub train: Vec<u32>,
    /// The validation stream; empty when the fraction is zero.
    pub validation: Vec<u32>,
    /// How the split was made.
    pub split: SplitMethod,
    /// Whether the trained BPE tokenizer came from the cache.
    pub tokenizer_cache: CacheUse,
    /// Whether the streams came from the cache.
    pub stream_cache: CacheUse,
}

/// Why [`prepare`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    #[error(transparent)]
    Split(#[from] SplitError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Synthetic(#[from] SyntheticError),
    /// [`prepare`] reads text; synthetic tasks are generated by [`SyntheticTasks`].
    #[error("{0} is generated, not read: build it with SyntheticTasks")]
    NotText(SyntheticConfig),
    /// A shard set is opened with [`ShardSet::open`], not tokenized again.
    #[error("{} is a prepared shard set: open it with ShardSet::open", .0.display())]
    Prepared(PathBuf),
    #[error(transparent)]
    ShardSet(#[from] ShardSetError),
    /// The tokenizer has more ids than the model's vocabulary.
    #[error(
        "the {tokenizer} tokenizer has {tokenizer_vocab} ids, more than the model's vocabulary of {model_vocab}"
    )]
    VocabularyTooSmall { tokenizer: String, tokenizer_vocab: usize, model_vocab: usize },
    /// A shard set's ids were made by another tokenizer than the one the run names.
    #[error(
        "the shard set {set} was tokenized with {set_tokenizer}, not the {requested} tokenizer the run names"
    )]
    TokenizerMismatch { set: PathBuf, set_tokenizer: String, requested: String },
    /// Synthetic tasks have their own vocabulary.
    #[error("a synthetic corpus has its own vocabulary; the {0} tokenizer does not apply")]
    TokenizerWithSynthetic(String),
    /// The cache directory could not be created.
    #[error("cannot create cache directory {path}")]
    CacheDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads, splits, tokenizes (or loads from the cache) the corpus of `config`.
pub fn prepare(config: &DataConfig) -> Result<PreparedData, DataError> {
    let path = match &config.corpus {
        CorpusSource::Path(path) => path,
        CorpusSource::Shards(dir) => return Err(DataError::Prepared(dir.clone())),
        CorpusSource::Synthetic(synthetic) => return Err(DataError::NotText(synthetic.clone())),
    };
    let corpus = Corpus::load(path)?;
    let split = split_documents(corpus.documents(), config.validation_fraction)?;
    let split_key = ContentKey::builder("split")
        .key(&corpus.content_key())
        .u64(config.validation_fraction.to_bits())
        .u64(split::SPLIT_VERSION)
        .finish();
    if let Some(dir) = &config.cache_dir {
        fs::create_dir_all(dir).map_err(|source| DataError::CacheDir { path: dir.clone(), source })?;
    }
    let cache_dir = config.cache_dir.as_deref();

    let (tokenizer, tokenizer_cache) = match &config.tokenizer {
        TokenizerSpec::Bytes => (Tokenizer::Bytes, CacheUse::Uncached),
        TokenizerSpec::File(path) => (Tokenizer::load(path)?, CacheUse::Uncached),
        TokenizerSpec::TrainBpe { vocab_size } => trained_bpe(&split, &split_key, *vocab_size, cache_dir)?,
    };

    let stream_key = ContentKey::builder("streams").key(&split_key).key(&tokenizer.identity()).finish();
    let (train, validation, stream_cache) = match cache_dir {
        Some(dir) => cached_streams(dir, &stream_key, &tokenizer, &split)?,
        None => {
            let (train, validation) = tokenize_split(&tokenizer, &split)?;
            (train, validation, CacheUse::Uncached)
        }
    };
    Ok(PreparedData { tokenizer, train, validation, split: split.method, tokenizer_cache, stream_cache })
}

/// The two sides of a split, as named in shard files and keys.
const STREAM_PARTS: [&str; 2] = ["train", "validation"];

/// The shard path and key of one part of the streams named by `stream_key`.
fn stream_shard(dir: &Path, stream_key: &ContentKey, part: &str) -> (PathBuf, ContentKey) {
    let key = ContentKey::builder("stream-part").key(stream_key).bytes(part.as_bytes()).finish();
    (dir.join(format!("{stream_key}.{part}.shard")), key)
}

/// Reads both streams from their shards in `dir`, or tokenizes and writes them when a shard is
/// missing or fails its checks.
fn cached_streams(
    dir: &Path,
    stream_key: &ContentKey,
    tokenizer: &Tokenizer,
    split: &TextSplit<'_>,
) -> Result<(Vec<u32>, Vec<u32>, CacheUse), DataError> {
    let vocab_size = tokenizer.vocab_size();
    let [train_shard, validation_shard] = STREAM_PARTS.map(|part| stream_shard(dir, stream_key, part));
    let cached = shard::read_shard(&train_shard.0, &train_shard.1, vocab_size).and_then(|train| {
        Ok((train, shard::read_shard(&validation_shard.0, &validation_shard.1, vocab_size)?))
    });
    let cache_use = match cached {
        Ok((train, validation)) => return Ok((train, validation, CacheUse::Reused)),
        Err(ShardError::Missing { .. }) => CacheUse::Built,
        Err(defect) => CacheUse::Rebuilt { reason: defect.to_string() },
    };
    let (train, validation) = tokenize_split(tokenizer, split)?;
    shard::write_shard(&train_shard.0, &train_shard.1, vocab_size, &train)?;
    shard::write_shard(&validation_shard.0, &validation_shard.1, vocab_size, &validation)?;
    Ok((train, validation, cache_use))
}

/// Names the BPE training recipe in cache keys; bump it when the trainer's settings change.
const BPE_RECIPE_VERSION: u64 = 1;

/// Trains a BPE tokenizer on the training side of `split`, or reads the one trained before.
fn trained_bpe(
    split: &TextSplit<'_>,
    split_key: &ContentKey,
    vocab_size: usize,
    cache_dir: Option<&Path>,
) -> Result<(Tokenizer, CacheUse), DataError> {
    let train = || Tokenizer::train_bpe(&split.train, vocab_size);
    let Some(dir) = cache_dir else {
        return Ok((train()?, CacheUse::Uncached));
    };
    let recipe = ContentKey::builder("tokenizer/bpe-recipe")
        .key(split_key)
        .u64(vocab_size as u64)
        .u64(BPE_RECIPE_VERSION)
        .finish();
    let path = dir.join(format!("{recipe}.bpe.json"));
    let cache_use = if path.exists() {
        match Tokenizer::load(&path) {
            // A training run never makes a vocabulary larger than requested, nor a byte one.
            Ok(tokenizer @ Tokenizer::Bpe(_)) if tokenizer.vocab_size() <= vocab_size => {
                return Ok((tokenizer, CacheUse::Reused));
            }
            Ok(other) => CacheUse::Rebuilt {
                reason: format!(
                    "{} holds a {} tokenizer, not a BPE of at most {vocab_size} ids",
                    path.display(),
                    other.name()
                ),
            },
            Err(error) => CacheUse::Rebuilt { reason: error.to_string() },
        }
    } else {
        CacheUse::Built
    };
    let tokenizer = train()?;
    // Write beside the final name and rename, so a concurrent reader never sees half a file.
    let temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|source| TokenizerError::Write { path: path.clone(), source })?;
    tokenizer.save(temp.path())?;
    temp.persist(&path).map_err(|e| TokenizerError::Write { path: path.clone(), source: e.error })?;
    Ok((tokenizer, cache_use))
}

/// Encodes both sides of a split into streams joined by the separator.
fn tokenize_split(
    tokenizer: &Tokenizer,
    split: &TextSplit<'_>,
) -> Result<(Vec<u32>, Vec<u32>), TokenizerError> {
    let separator = tokenizer.encode(DOCUMENT_SEPARATOR)?;
    let stream = |segments: &[&str]| -> Result<Vec<u32>, TokenizerError> {
        let encoded = tokenizer.encode_all(segments)?;
        let mut stream = Vec::with_capacity(encoded.iter().map(Vec::len).sum::<usize>() + encoded.len());
        for (i, ids) in encoded.iter().enumerate() {
            if i > 0 {
                stream.extend_from_slice(&separator);
            }
            stream.extend_from_slice(ids);
        }
        Ok(stream)
    };
    Ok((stream(&split.train)?, stream(&split.validation)?))
}

#[cfg(test)]
mod tests;
