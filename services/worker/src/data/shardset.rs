//! Shard sets: a corpus tokenized once (`frontier data prepare`) into fixed-size binary shards
//! and a manifest, which workers read window by window instead of reading the corpus.
//!
//! At the paper's scale a proxy reads ~10B tokens from a corpus far larger than memory, on many
//! workers at once. So the corpus is tokenized ahead of time, and a worker only opens the shard
//! files: a batch reads each of its windows with one positioned read (`pread`), so the worker's
//! memory does not grow with the set (a memory map did: the kernel maps pages around every
//! fault, and a 2 GB set's pages counted in the process's resident memory within a minute of
//! random windows), and the batch at step `s` is a pure function of `(seed, s)` as for an
//! in-memory stream ([`super::batches`]), so a resumed trial reads exactly the batches it would
//! have read.
//!
//! # Layout of a shard set folder
//! - `manifest.json` ([`Manifest`]): format and version, the tokenizer's name, vocabulary size
//!   and identity, the token width, and each shard's file, token count and SHA-256, for the
//!   training and the validation side.
//! - `tokenizer.json`: the tokenizer the ids were made with ([`Tokenizer::save`]'s format), so
//!   the set carries its vocabulary wherever it is copied.
//! - `train-00000.bin`, ..., `validation-00000.bin`: the ids, little-endian `u16` when the
//!   vocabulary fits (at most 65,536 ids), else `u32`, nothing else in the file. Each side is
//!   one stream: its shards in order, documents joined by [`super::DOCUMENT_SEPARATOR`].
//!
//! A set is written into a temporary folder beside its destination and renamed into place when
//! complete, so a half-written set is never read as one. Opening a set checks the manifest
//! against the files (each shard's size is its token count times the width) and the tokenizer
//! against the manifest; [`ShardSet::verify`] also re-hashes every shard and checks every id is
//! in the vocabulary (`frontier data verify`).
//!
//! # The split
//! Each corpus file is split on its own with [`split_documents`] (by document for JSONL files
//! with many documents, else by tail), so the validation side does not depend on which other
//! files are in the corpus and a file's text is read once.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::corpus::{self, Corpus, CorpusError};
use super::split::{SplitError, split_documents};
use super::tokenizer::{Tokenizer, TokenizerError};
use super::{DOCUMENT_SEPARATOR, TokenizerSpec};

/// The manifest's file name in a shard set folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The tokenizer's file name in a shard set folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The manifest's `format` value.
pub const MANIFEST_FORMAT: &str = "frontier/shards";
/// The manifest's `version` value this build reads and writes.
pub const MANIFEST_VERSION: u32 = 1;
/// Tokens per shard unless asked otherwise: 2^27 ids (256 MiB as `u16`).
pub const DEFAULT_SHARD_TOKENS: u64 = 1 << 27;
/// The most training text a `bpe:N` tokenizer is trained on, in bytes.
pub const BPE_TRAINING_BYTES: usize = 1 << 30;

/// How ids are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    /// The narrowest width that holds every id of a vocabulary.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 { TokenDtype::U16 } else { TokenDtype::U32 }
    }

    /// Bytes per id.
    pub fn width(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
}

/// The tokenizer a shard set was made with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// `bytes` or `bpe-N`.
    pub name: String,
    pub vocab_size: usize,
    /// [`Tokenizer::identity`] in hex: the same vocabulary and configuration, the same value.
    pub identity: String,
}

/// One shard file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The file name inside the set's folder.
    pub file: String,
    pub tokens: u64,
    /// SHA-256 of the file, in hex.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub tokenizer: TokenizerInfo,
    pub dtype: TokenDtype,
    /// The most tokens a shard holds (the last of a side may hold fewer).
    pub shard_tokens: u64,
    pub validation_fraction: f64,
    /// Corpus files read, documents and UTF-8 bytes of text.
    pub files: u64,
    pub documents: u64,
    pub text_bytes: u64,
    pub train: Vec<ShardInfo>,
    pub validation: Vec<ShardInfo>,
}

impl Manifest {
    /// Tokens on the training side.
    pub fn train_tokens(&self) -> u64 {
        self.train.iter().map(|s| s.tokens).sum()
    }

    /// Tokens on the validation side.
    pub fn validation_tokens(&self) -> u64 {
        self.validation.iter().map(|s| s.tokens).sum()
    }
}

/// Why a shard set could not be written, opened or verified.
#[derive(Debug, thiserror::Error)]
pub enum ShardSetError {
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    #[error(transparent)]
    Split(#[from] SplitError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("shard set {path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} already exists; choose another --out or remove it")]
    Exists { path: PathBuf },
    #[error("{path} is not a shard set manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("shard set {dir}: {problem}")]
    Inconsistent { dir: PathBuf, problem: String },
    #[error("shards must hold at least one token (got --shard-tokens {0})")]
    ShardSize(u64),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ShardSetError + '_ {
    move |source| ShardSetError::Io { path: path.to_owned(), source }
}

/// What `frontier data prepare` does.
#[derive(Clone, Debug, PartialEq)]
pub struct PrepareConfig {
    /// A text file, a JSONL file or a folder of them (compressed with gzip or zstd or not).
    pub corpus: PathBuf,
    pub tokenizer: TokenizerSpec,
    /// The share of each file held out for validation, in `[0, 1)`.
    pub validation_fraction: f64,
    pub shard_tokens: u64,
    /// The folder to create; it must not exist.
    pub out: PathBuf,
}

/// How far [`prepare_shards`] has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareProgress {
    pub files_done: usize,
    pub files: usize,
    pub text_bytes: u64,
    pub tokens: u64,
}

/// Tokenizes the corpus into a new shard set at `config.out`; see the module doc.
pub fn prepare_shards(
    config: &PrepareConfig,
    mut progress: impl FnMut(PrepareProgress),
) -> Result<Manifest, ShardSetError> {
    if config.shard_tokens == 0 {
        return Err(ShardSetError::ShardSize(config.shard_tokens));
    }
    if config.out.exists() {
        return Err(ShardSetError::Exists { path: config.out.clone() });
    }
    let files = corpus::corpus_files(&config.corpus)?;
    let tokenizer = match &config.tokenizer {
        TokenizerSpec::Bytes => Tokenizer::Bytes,
        TokenizerSpec::File(path) => Tokenizer::load(path)?,
        TokenizerSpec::TrainBpe { vocab_size } => {
            let sample = training_sample(&files, config.validation_fraction)?;
            let texts: Vec<&str> = sample.iter().map(String::as_str).collect();
            Tokenizer::train_bpe(&texts, *vocab_size)?
        }
    };
    let parent = config.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let staging =
        tempfile::Builder::new().prefix(".frontier-shards-").tempdir_in(parent).map_err(io_error(parent))?;
    let dtype = TokenDtype::for_vocab(tokenizer.vocab_size());
    let mut train = ShardWriter::new(staging.path(), "train", dtype, config.shard_tokens);
    let mut validation = ShardWriter::new(staging.path(), "validation", dtype, config.shard_tokens);
    let separator = tokenizer.encode(DOCUMENT_SEPARATOR)?;
    let mut done = PrepareProgress { files_done: 0, files: files.len(), text_bytes: 0, tokens: 0 };
    let (mut documents, mut text_bytes) = (0u64, 0u64);
    // Files are read and tokenized a few at a time in parallel and written in corpus order, so
    // memory holds a handful of files and the output does not depend on the thread count.
    let group = rayon::current_num_threads().max(1) * 2;
    for chunk in files.chunks(group) {
        let encoded: Vec<Result<EncodedFile, ShardSetError>> =
            chunk.par_iter().map(|file| encode_file(file, &tokenizer, config.validation_fraction)).collect();
        for file in encoded {
            let file = file?;
            documents += file.documents;
            text_bytes += file.text_bytes;
            train.append_segments(&file.train, &separator).map_err(io_error(staging.path()))?;
            validation.append_segments(&file.validation, &separator).map_err(io_error(staging.path()))?;
            done.files_done += 1;
            done.text_bytes = text_bytes;
            done.tokens = train.total_tokens + validation.total_tokens;
            progress(done);
        }
    }
    let train = train.finish().map_err(io_error(staging.path()))?;
    let validation = validation.finish().map_err(io_error(staging.path()))?;
    if train.is_empty() {
        return Err(CorpusError::Empty { path: config.corpus.clone() }.into());
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        version: MANIFEST_VERSION,
        tokenizer: TokenizerInfo {
            name: tokenizer.name(),
            vocab_size: tokenizer.vocab_size(),
            identity: tokenizer.identity().to_hex(),
        },
        dtype,
        shard_tokens: config.shard_tokens,
        validation_fraction: config.validation_fraction,
        files: files.len() as u64,
        documents,
        text_bytes,
        train,
        validation,
    };
    tokenizer.save(&staging.path().join(TOKENIZER_FILE))?;
    let manifest_path = staging.path().join(MANIFEST_FILE);
    let json =
        serde_json::to_string_pretty(&manifest).map_err(|e| io_error(&manifest_path)(io::Error::other(e)))?;
    fs::write(&manifest_path, json + "\n").map_err(io_error(&manifest_path))?;
    let staged = staging.keep();
    fs::rename(&staged, &config.out).map_err(|source| {
        let _ = fs::remove_dir_all(&staged);
        ShardSetError::Io { path: config.out.clone(), source }
    })?;
    Ok(manifest)
}

/// The training side of the corpus's files, up to [`BPE_TRAINING_BYTES`], to train a BPE on.
fn training_sample(files: &[PathBuf], validation_fraction: f64) -> Result<Vec<String>, ShardSetError> {
    let mut sample = Vec::new();
    let mut bytes = 0;
    for file in files {
        let Some(corpus) = load_file(file)? else { continue };
        let split = split_documents(corpus.documents(), validation_fraction)?;
        for segment in split.train {
            bytes += segment.len();
            sample.push(segment.to_owned());
        }
        if bytes >= BPE_TRAINING_BYTES {
            break;
        }
    }
    Ok(sample)
}

/// One corpus file's documents; `None` for a file without text, which a folder may hold.
fn load_file(file: &Path) -> Result<Option<Corpus>, ShardSetError> {
    match Corpus::load(file) {
        Ok(corpus) => Ok(Some(corpus)),
        Err(CorpusError::Empty { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One corpus file, split and tokenized.
struct EncodedFile {
    documents: u64,
    text_bytes: u64,
    train: Vec<Vec<u32>>,
    validation: Vec<Vec<u32>>,
}

fn encode_file(
    file: &Path,
    tokenizer: &Tokenizer,
    validation_fraction: f64,
) -> Result<EncodedFile, ShardSetError> {
    let Some(corpus) = load_file(file)? else {
        return Ok(EncodedFile { documents: 0, text_bytes: 0, train: Vec::new(), validation: Vec::new() });
    };
    let split = split_documents(corpus.documents(), validation_fraction)?;
    Ok(EncodedFile {
        documents: corpus.documents().len() as u64,
        text_bytes: corpus.total_bytes() as u64,
        train: tokenizer.encode_all(&split.train)?,
        validation: tokenizer.encode_all(&split.validation)?,
    })
}

/// Writes one side of a set as numbered shards of at most `shard_tokens` ids each.
struct ShardWriter {
    dir: PathBuf,
    side: &'static str,
    dtype: TokenDtype,
    shard_tokens: u64,
    current: Option<(BufWriter<File>, Sha256, u64)>,
    shards: Vec<ShardInfo>,
    total_tokens: u64,
}

impl ShardWriter {
    fn new(dir: &Path, side: &'static str, dtype: TokenDtype, shard_tokens: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            side,
            dtype,
            shard_tokens,
            current: None,
            shards: Vec::new(),
            total_tokens: 0,
        }
    }

    /// Appends documents, each after the separator unless it is the side's first.
    fn append_segments(&mut self, segments: &[Vec<u32>], separator: &[u32]) -> io::Result<()> {
        for segment in segments {
            if self.total_tokens > 0 {
                self.append(separator)?;
            }
            self.append(segment)?;
        }
        Ok(())
    }

    fn append(&mut self, mut ids: &[u32]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(ids.len().min(1 << 20) * self.dtype.width());
        while !ids.is_empty() {
            if self.current.is_none() {
                let name = format!("{}-{:05}.bin", self.side, self.shards.len());
                let file = File::create(self.dir.join(&name))?;
                self.shards.push(ShardInfo { file: name, tokens: 0, sha256: String::new() });
                self.current = Some((BufWriter::with_capacity(1 << 20, file), Sha256::new(), 0));
            }
            let Some((writer, hasher, written)) = self.current.as_mut() else { unreachable!() };
            let room = (self.shard_tokens - *written) as usize;
            let (now, rest) = ids.split_at(room.min(ids.len()));
            bytes.clear();
            match self.dtype {
                // Every id fits: the dtype was chosen from the vocabulary, and the tokenizer
                // yields ids below it.
                TokenDtype::U16 => bytes.extend(now.iter().flat_map(|&id| (id as u16).to_le_bytes())),
                TokenDtype::U32 => bytes.extend(now.iter().flat_map(|&id| id.to_le_bytes())),
            }
            writer.write_all(&bytes)?;
            hasher.update(&bytes);
            *written += now.len() as u64;
            self.total_tokens += now.len() as u64;
            if *written == self.shard_tokens {
                self.close_current()?;
            }
            ids = rest;
        }
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some((writer, hasher, written)) = self.current.take() {
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let info = self.shards.last_mut().expect("a shard is open");
            info.tokens = written;
            info.sha256 = hex(&hasher.finalize());
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<Vec<ShardInfo>> {
        self.close_current()?;
        Ok(self.shards)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One side of a shard set: the shards' ids as one stream, read where a window asks.
#[derive(Debug)]
pub struct ShardStream {
    files: Vec<(File, PathBuf)>,
    /// The stream position of each shard's first id, and the total after the last.
    starts: Vec<usize>,
    dtype: TokenDtype,
}

impl ShardStream {
    /// Ids in the stream.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the ids at `start..start + n` to `out`, across shard boundaries.
    ///
    /// # Panics
    /// When the range runs past the end of the stream (callers cut windows inside it), or a
    /// shard cannot be read (a storage fault; see the comment inside).
    pub fn extend_into(&self, start: usize, n: usize, out: &mut Vec<u32>) {
        assert!(start + n <= self.len(), "window {start}+{n} runs past the stream's {} ids", self.len());
        let mut shard = self.starts.partition_point(|&s| s <= start) - 1;
        let (mut at, end) = (start, start + n);
        out.reserve(n);
        while at < end {
            let local = at - self.starts[shard];
            let take = (self.starts[shard + 1] - at).min(end - at);
            let width = self.dtype.width();
            let mut bytes = vec![0u8; take * width];
            let (file, path) = &self.files[shard];
            // The size was checked against the manifest when the set was opened and shards are
            // never rewritten in place, so a failed read is a storage fault (a lost network
            // mount, a disk error), not bad input: the trial stops with the file's name.
            if let Err(e) = file.read_exact_at(&mut bytes, (local * width) as u64) {
                panic!("reading {} at id {local}: {e}", path.display());
            }
            match self.dtype {
                TokenDtype::U16 => {
                    out.extend(bytes.chunks_exact(2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]]))));
                }
                TokenDtype::U32 => {
                    out.extend(bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
                }
            }
            at += take;
            shard += 1;
        }
    }

    /// The whole stream in memory (for small sets and tests).
    pub fn to_vec(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len());
        self.extend_into(0, self.len(), &mut out);
        out
    }
}

/// An opened shard set: its manifest, tokenizer and both sides open.
#[derive(Debug)]
pub struct ShardSet {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub tokenizer: Tokenizer,
    pub train: ShardStream,
    pub validation: ShardStream,
}

impl ShardSet {
    /// Opens the set in `dir`: reads and checks the manifest, the tokenizer and every shard's
    /// size, and keeps the shards open. Nothing is read beyond the manifest and tokenizer.
    pub fn open(dir: &Path) -> Result<Self, ShardSetError> {
        let inconsistent = |problem: String| ShardSetError::Inconsistent { dir: dir.to_owned(), problem };
        if !dir.is_dir() {
            return Err(ShardSetError::Missing { path: dir.to_owned() });
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&manifest_path).map_err(io_error(&manifest_path))?;
        let bad = |reason: String| ShardSetError::BadManifest { path: manifest_path.clone(), reason };
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if manifest.format != MANIFEST_FORMAT || manifest.version != MANIFEST_VERSION {
            return Err(bad(format!(
                "format {} version {}, expected {MANIFEST_FORMAT} version {MANIFEST_VERSION}",
                manifest.format, manifest.version
            )));
        }
        let tokenizer = Tokenizer::load(&dir.join(TOKENIZER_FILE))?;
        if tokenizer.identity().to_hex() != manifest.tokenizer.identity
            || tokenizer.vocab_size() != manifest.tokenizer.vocab_size
        {
            return Err(inconsistent(format!(
                "{TOKENIZER_FILE} is {} with {} ids, not the manifest's {} with {} ids",
                tokenizer.name(),
                tokenizer.vocab_size(),
                manifest.tokenizer.name,
                manifest.tokenizer.vocab_size
            )));
        }
        if TokenDtype::for_vocab(manifest.tokenizer.vocab_size).width() > manifest.dtype.width() {
            return Err(inconsistent(format!(
                "{:?} ids cannot hold a vocabulary of {}",
                manifest.dtype, manifest.tokenizer.vocab_size
            )));
        }
        let train = map_side(dir, &manifest.train, manifest.dtype)?;
        let validation = map_side(dir, &manifest.validation, manifest.dtype)?;
        if train.is_empty() {
            return Err(inconsistent("the training side holds no tokens".to_owned()));
        }
        Ok(Self { dir: dir.to_owned(), manifest, tokenizer, train, validation })
    }

    /// Re-hashes every shard against the manifest and checks every id is inside the vocabulary.
    pub fn verify(&self) -> Result<(), ShardSetError> {
        let vocab = self.manifest.tokenizer.vocab_size;
        for (infos, stream) in
            [(&self.manifest.train, &self.train), (&self.manifest.validation, &self.validation)]
        {
            for (info, (_, path)) in infos.iter().zip(&stream.files) {
                let digest = hex(&Sha256::digest(fs::read(path).map_err(io_error(path))?));
                if digest != info.sha256 {
                    return Err(ShardSetError::Inconsistent {
                        dir: self.dir.clone(),
                        problem: format!(
                            "{} hashes to {digest}, the manifest says {}",
                            info.file, info.sha256
                        ),
                    });
                }
            }
            let mut ids = Vec::new();
            let chunk = 1 << 22;
            let mut start = 0;
            while start < stream.len() {
                ids.clear();
                let n = chunk.min(stream.len() - start);
                stream.extend_into(start, n, &mut ids);
                if let Some(offset) = ids.iter().position(|&id| id as usize >= vocab) {
                    return Err(ShardSetError::Inconsistent {
                        dir: self.dir.clone(),
                        problem: format!(
                            "id {} at stream position {} is outside the vocabulary of {vocab}",
                            ids[offset],
                            start + offset
                        ),
                    });
                }
                start += n;
            }
        }
        Ok(())
    }
}

/// Maps one side's shards after checking each file's size against the manifest.
fn map_side(dir: &Path, infos: &[ShardInfo], dtype: TokenDtype) -> Result<ShardStream, ShardSetError> {
    let mut files = Vec::with_capacity(infos.len());
    let mut starts = vec![0usize];
    for info in infos {
        let inconsistent = |problem: String| ShardSetError::Inconsistent { dir: dir.to_owned(), problem };
        if info.file.contains(['/', '\\']) || info.file.starts_with('.') {
            return Err(inconsistent(format!("shard name `{}` is not a plain file name", info.file)));
        }
        let path = dir.join(&info.file);
        let file = File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => {
                inconsistent(format!("the manifest names {}, which is missing", info.file))
            }
            _ => ShardSetError::Io { path: path.clone(), source },
        })?;
        let bytes = file.metadata().map_err(io_error(&path))?.len();
        let expected = info.tokens * dtype.width() as u64;
        if bytes != expected || info.tokens == 0 {
            return Err(inconsistent(format!(
                "{} holds {bytes} bytes; the manifest says {} tokens × {} bytes = {expected}",
                info.file,
                info.tokens,
                dtype.width()
            )));
        }
        files.push((file, path));
        starts.push(starts.last().copied().unwrap_or(0) + info.tokens as usize);
    }
    Ok(ShardStream { files, starts, dtype })
}

#[cfg(test)]
mod tests;
