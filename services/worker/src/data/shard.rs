//! Token streams cached on disk, so a corpus is tokenized once.
//!
//! # Format
//! A shard is one file: a fixed 96-byte header, then the tokens, all little-endian.
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `FRTOKENS` |
//! | 8 | 4 | format version ([`SHARD_VERSION`]) |
//! | 12 | 4 | bytes per token: 2 when the vocabulary fits in `u16` (at most 65,536 ids), else 4 |
//! | 16 | 4 | vocabulary size the ids were produced with |
//! | 20 | 4 | reserved, zero |
//! | 24 | 8 | token count |
//! | 32 | 32 | content key: what the tokens were made from ([`ContentKey`]) |
//! | 64 | 32 | SHA-256 of the token bytes |
//! | 96 | count x width | the tokens |
//!
//! A shard is trusted only when every field agrees with what the reader expects and the payload
//! hashes to the stored digest: a truncated write, a flipped bit or a file left by other data is
//! reported as a [`ShardError`], and the caller rebuilds it. Shards are written to a temporary
//! file in the same directory and renamed into place, so a reader never sees half a shard even
//! when two workers fill the same cache at once.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The first eight bytes of every shard.
pub const SHARD_MAGIC: [u8; 8] = *b"FRTOKENS";

/// The shard format version; bump it when the layout changes so old shards are rebuilt.
pub const SHARD_VERSION: u32 = 1;

/// Bytes before the first token.
pub const SHARD_HEADER_BYTES: usize = 96;

/// The largest vocabulary whose ids are stored as `u16`.
const U16_VOCAB_LIMIT: usize = 1 << 16;

/// A SHA-256 digest naming what a cached artefact was made from.
///
/// Keys are built with [`ContentKey::builder`] from length-prefixed fields, so two different
/// field lists never hash the same bytes, and from content and fixed-width little-endian
/// numbers only, so the same inputs give the same key on every machine.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentKey(pub [u8; 32]);

impl ContentKey {
    /// Starts a key in a named domain (say `"corpus/v1"`), so keys of different kinds never
    /// collide even over equal fields.
    pub fn builder(domain: &str) -> ContentKeyBuilder {
        let mut hasher = Sha256::new();
        hasher.update(b"frontier-content-key");
        let mut builder = ContentKeyBuilder { hasher };
        builder = builder.bytes(domain.as_bytes());
        builder
    }

    /// The key as 64 lowercase hex digits, for file names.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentKey({})", self.to_hex())
    }
}

impl fmt::Display for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Feeds fields into a [`ContentKey`].
#[derive(Clone, Debug)]
pub struct ContentKeyBuilder {
    hasher: Sha256,
}

impl ContentKeyBuilder {
    /// Adds a byte string, prefixed by its length.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }

    /// Adds a number.
    pub fn u64(mut self, value: u64) -> Self {
        self.hasher.update(value.to_le_bytes());
        self
    }

    /// Adds another key.
    pub fn key(self, key: &ContentKey) -> Self {
        self.bytes(&key.0)
    }

    /// Finishes the key.
    pub fn finish(self) -> ContentKey {
        ContentKey(self.hasher.finalize().into())
    }
}

/// How wide each stored token id is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenWidth {
    /// Two bytes: vocabularies of at most 65,536 ids.
    U16,
    /// Four bytes: larger vocabularies.
    U32,
}

impl TokenWidth {
    /// The narrowest width that holds every id below `vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= U16_VOCAB_LIMIT { Self::U16 } else { Self::U32 }
    }

    /// Bytes per stored token.
    pub fn bytes(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }
}

/// Why a shard could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// There is no shard at the path yet.
    #[error("shard {path} does not exist")]
    Missing { path: PathBuf },
    /// The file exists but could not be read.
    #[error("cannot read shard {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The shard could not be written.
    #[error("cannot write shard {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not a complete, intact shard of the expected data.
    #[error("shard {path} is not usable: {defect}")]
    Defective { path: PathBuf, defect: ShardDefect },
    /// A token to be written is not below the vocabulary size.
    #[error("token id {id} is outside the vocabulary of {vocab_size} ids")]
    TokenOutOfVocabulary { id: u32, vocab_size: usize },
    /// The vocabulary does not fit the format's 32-bit header field.
    #[error("a vocabulary of {vocab_size} ids does not fit a shard")]
    VocabularyTooLarge { vocab_size: usize },
}

/// What is wrong with a shard file that exists.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardDefect {
    #[error("{bytes} bytes is shorter than the {SHARD_HEADER_BYTES}-byte header")]
    ShorterThanHeader { bytes: usize },
    #[error("wrong magic bytes")]
    BadMagic,
    #[error("format version {found}, expected {SHARD_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("{found} bytes per token, expected {expected}")]
    WrongWidth { found: u32, expected: usize },
    #[error("made with a vocabulary of {found} ids, expected {expected}")]
    WrongVocabulary { found: u32, expected: usize },
    #[error("{found} bytes of tokens, the header promises {expected} (truncated or overlong)")]
    WrongLength { found: usize, expected: u128 },
    #[error("its content key {found} differs from the expected {expected}")]
    KeyMismatch { found: ContentKey, expected: ContentKey },
    #[error("the tokens do not match their checksum")]
    ChecksumMismatch,
    #[error("token id {id} at position {position} is outside the vocabulary of {vocab_size} ids")]
    TokenOutOfVocabulary { id: u32, position: usize, vocab_size: usize },
}

/// Writes `tokens` as a shard at `path` (atomically: a temporary file renamed into place).
///
/// Every id must be below `vocab_size`; the width is [`TokenWidth::for_vocab`].
pub fn write_shard(
    path: &Path,
    key: &ContentKey,
    vocab_size: usize,
    tokens: &[u32],
) -> Result<(), ShardError> {
    let vocab_field = u32::try_from(vocab_size).map_err(|_| ShardError::VocabularyTooLarge { vocab_size })?;
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(ShardError::TokenOutOfVocabulary { id, vocab_size });
    }
    let width = TokenWidth::for_vocab(vocab_size);
    let mut payload = Vec::with_capacity(tokens.len() * width.bytes());
    match width {
        // Every id is below vocab_size <= 65,536, so it fits in u16.
        TokenWidth::U16 => tokens.iter().for_each(|&id| payload.extend((id as u16).to_le_bytes())),
        TokenWidth::U32 => tokens.iter().for_each(|&id| payload.extend(id.to_le_bytes())),
    }

    let mut file = Vec::with_capacity(SHARD_HEADER_BYTES + payload.len());
    file.extend(SHARD_MAGIC);
    file.extend(SHARD_VERSION.to_le_bytes());
    file.extend((width.bytes() as u32).to_le_bytes());
    file.extend(vocab_field.to_le_bytes());
    file.extend(0u32.to_le_bytes());
    file.extend((tokens.len() as u64).to_le_bytes());
    file.extend(key.0);
    file.extend(Sha256::digest(&payload));
    debug_assert_eq!(file.len(), SHARD_HEADER_BYTES);
    file.extend(payload);

    let write_error = |source| ShardError::Write { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    temp.write_all(&file).map_err(write_error)?;
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(path).map_err(|e| write_error(e.error))?;
    Ok(())
}

/// Reads the shard at `path`, checking that it is intact and holds the data named by `key`,
/// tokenized with a vocabulary of `vocab_size` ids.
pub fn read_shard(path: &Path, key: &ContentKey, vocab_size: usize) -> Result<Vec<u32>, ShardError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ShardError::Missing { path: path.to_owned() });
        }
        Err(source) => return Err(ShardError::Read { path: path.to_owned(), source }),
    };
    decode_shard(&bytes, key, vocab_size)
        .map_err(|defect| ShardError::Defective { path: path.to_owned(), defect })
}

fn decode_shard(bytes: &[u8], key: &ContentKey, vocab_size: usize) -> Result<Vec<u32>, ShardDefect> {
    if bytes.len() < SHARD_HEADER_BYTES {
        return Err(ShardDefect::ShorterThanHeader { bytes: bytes.len() });
    }
    let (header, payload) = bytes.split_at(SHARD_HEADER_BYTES);
    let u32_at =
        |offset: usize| u32::from_le_bytes(header[offset..offset + 4].try_into().expect("a 4-byte slice"));
    if header[..8] != SHARD_MAGIC {
        return Err(ShardDefect::BadMagic);
    }
    let version = u32_at(8);
    if version != SHARD_VERSION {
        return Err(ShardDefect::UnsupportedVersion { found: version });
    }
    let width = TokenWidth::for_vocab(vocab_size);
    let stored_width = u32_at(12);
    if stored_width as usize != width.bytes() {
        return Err(ShardDefect::WrongWidth { found: stored_width, expected: width.bytes() });
    }
    let stored_vocab = u32_at(16);
    if stored_vocab as usize != vocab_size {
        return Err(ShardDefect::WrongVocabulary { found: stored_vocab, expected: vocab_size });
    }
    let count = u64::from_le_bytes(header[24..32].try_into().expect("an 8-byte slice"));
    // u128 so a corrupted count cannot overflow the comparison.
    let expected_len = u128::from(count) * width.bytes() as u128;
    if payload.len() as u128 != expected_len {
        return Err(ShardDefect::WrongLength { found: payload.len(), expected: expected_len });
    }
    let stored_key = ContentKey(header[32..64].try_into().expect("a 32-byte slice"));
    if stored_key != *key {
        return Err(ShardDefect::KeyMismatch { found: stored_key, expected: *key });
    }
    if Sha256::digest(payload).as_slice() != &header[64..96] {
        return Err(ShardDefect::ChecksumMismatch);
    }

    let tokens: Vec<u32> = match width {
        TokenWidth::U16 => {
            payload.chunks_exact(2).map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))).collect()
        }
        TokenWidth::U32 => {
            payload.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
    };
    if let Some((position, &id)) = tokens.iter().enumerate().find(|(_, id)| **id as usize >= vocab_size) {
        return Err(ShardDefect::TokenOutOfVocabulary { id, position, vocab_size });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ContentKey {
        ContentKey::builder("test").bytes(name.as_bytes()).finish()
    }

    fn defect(result: Result<Vec<u32>, ShardError>) -> ShardDefect {
        match result {
            Err(ShardError::Defective { defect, .. }) => defect,
            other => panic!("expected a defective shard, got {other:?}"),
        }
    }

    #[test]
    fn shard_round_trips_tokens_as_u16_for_small_vocabularies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.shard");
        let tokens = vec![0, 1, 255, 65_535, 7];
        write_shard(&path, &key("a"), 65_536, &tokens).unwrap();
        // 2 bytes per token: the u16 width was chosen.
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, SHARD_HEADER_BYTES + 2 * tokens.len());
        assert_eq!(read_shard(&path, &key("a"), 65_536).unwrap(), tokens);
    }

    #[test]
    fn shard_round_trips_tokens_as_u32_for_large_vocabularies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.shard");
        let tokens = vec![0, 65_536, 99_999, 3];
        write_shard(&path, &key("a"), 100_000, &tokens).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, SHARD_HEADER_BYTES + 4 * tokens.len());
        assert_eq!(read_shard(&path, &key("a"), 100_000).unwrap(), tokens);
    }

    #[test]
    fn empty_stream_is_a_valid_shard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.shard");
        write_shard(&path, &key("e"), 256, &[]).unwrap();
        assert_eq!(read_shard(&path, &key("e"), 256).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn token_outside_the_vocabulary_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.shard");
        let err = write_shard(&path, &key("a"), 256, &[1, 256]).unwrap_err();
        assert!(matches!(err, ShardError::TokenOutOfVocabulary { id: 256, vocab_size: 256 }), "{err:?}");
        assert!(!path.exists());
    }

    #[test]
    fn missing_shard_is_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_shard(&dir.path().join("none.shard"), &key("a"), 256).unwrap_err();
        assert!(matches!(err, ShardError::Missing { .. }), "{err:?}");
    }

    #[test]
    fn truncated_shard_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.shard");
        write_shard(&path, &key("a"), 256, &[1, 2, 3, 4]).unwrap();
        let bytes = fs::read(&path).unwrap();

        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(
            defect(read_shard(&path, &key("a"), 256)),
            ShardDefect::WrongLength { found: 7, expected: 8 }
        );
        fs::write(&path, &bytes[..50]).unwrap();
        assert_eq!(defect(read_shard(&path, &key("a"), 256)), ShardDefect::ShorterThanHeader { bytes: 50 });
    }

    #[test]
    fn flipped_token_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.shard");
        write_shard(&path, &key("a"), 256, &[1, 2, 3, 4]).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[SHARD_HEADER_BYTES + 2] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(defect(read_shard(&path, &key("a"), 256)), ShardDefect::ChecksumMismatch);
    }

    #[test]
    fn shard_of_other_data_or_another_vocabulary_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.shard");
        write_shard(&path, &key("a"), 256, &[1, 2]).unwrap();
        assert!(matches!(defect(read_shard(&path, &key("b"), 256)), ShardDefect::KeyMismatch { .. }));
        assert_eq!(
            defect(read_shard(&path, &key("a"), 512)),
            ShardDefect::WrongVocabulary { found: 256, expected: 512 }
        );
        assert_eq!(
            defect(read_shard(&path, &key("a"), 70_000)),
            ShardDefect::WrongWidth { found: 2, expected: 4 }
        );
    }

    #[test]
    fn file_that_is_not_a_shard_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.shard");
        fs::write(&path, vec![b'x'; 200]).unwrap();
        assert_eq!(defect(read_shard(&path, &key("a"), 256)), ShardDefect::BadMagic);
    }

    #[test]
    fn content_keys_separate_fields_and_domains() {
        let ab_c = ContentKey::builder("d").bytes(b"ab").bytes(b"c").finish();
        let a_bc = ContentKey::builder("d").bytes(b"a").bytes(b"bc").finish();
        let other_domain = ContentKey::builder("e").bytes(b"ab").bytes(b"c").finish();
        assert_ne!(ab_c, a_bc);
        assert_ne!(ab_c, other_domain);
        assert_eq!(ab_c, ContentKey::builder("d").bytes(b"ab").bytes(b"c").finish());
        assert_eq!(ab_c.to_hex().len(), 64);
    }
}
