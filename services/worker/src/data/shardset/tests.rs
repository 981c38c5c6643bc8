use std::io::Write;

use super::*;
use crate::data::batches::{TokenStream, TrainBatches, ValidationBatches};
use crate::data::{DataConfig, prepare};

/// A corpus of the first `bytes` bytes of the test text, in a file of its own.
fn corpus(dir: &Path, bytes: usize) -> PathBuf {
    let text = testdata::tinyshakespeare_bytes();
    let path = dir.join("corpus.txt");
    fs::write(&path, &text[..bytes]).unwrap();
    path
}

fn config(corpus: &Path, out: &Path, tokenizer: TokenizerSpec) -> PrepareConfig {
    PrepareConfig {
        corpus: corpus.to_owned(),
        tokenizer,
        validation_fraction: 0.1,
        shard_tokens: 7_001,
        out: out.to_owned(),
    }
}

#[test]
fn a_shard_set_holds_the_streams_of_the_in_memory_pipeline_across_its_shards() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 60_000);
    let out = dir.path().join("set");
    let mut seen = Vec::new();
    let manifest = prepare_shards(&config(&corpus, &out, TokenizerSpec::Bytes), |p| seen.push(p)).unwrap();
    assert_eq!(seen.last().map(|p| (p.files_done, p.files)), Some((1, 1)));
    // 54 000 training ids in shards of 7 001: seven full shards and a short one.
    assert_eq!(manifest.train.len(), 8, "{manifest:?}");
    assert!(manifest.train[..7].iter().all(|s| s.tokens == 7_001));
    assert_eq!(manifest.dtype, TokenDtype::U16);
    assert_eq!(manifest.tokenizer.name, "bytes");

    let set = ShardSet::open(&out).unwrap();
    set.verify().unwrap();
    let memory = prepare(&DataConfig { validation_fraction: 0.1, ..DataConfig::new(&corpus) }).unwrap();
    assert_eq!(set.train.to_vec(), memory.train);
    assert_eq!(set.validation.to_vec(), memory.validation);
    assert_eq!(set.manifest.train_tokens() as usize, memory.train.len());

    // The same step gives the same batch read from the shards as from memory, windows that
    // straddle a shard boundary included.
    let from_shards = TrainBatches::new(&set.train, 64, 16, 7).unwrap();
    let from_memory = TrainBatches::new(&memory.train, 64, 16, 7).unwrap();
    let mut straddled = false;
    for step in 0..50 {
        assert_eq!(from_shards.batch(step), from_memory.batch(step), "step {step}");
        straddled |= from_shards.offsets(step).iter().any(|&o| (o % 7_001) + 65 > 7_001);
    }
    assert!(straddled, "no window crossed a shard boundary; the check above proved less than it claims");
    let a: Vec<_> = ValidationBatches::new(&set.validation, 64, 4).unwrap().collect();
    let b: Vec<_> = ValidationBatches::new(TokenStream::Memory(&memory.validation), 64, 4).unwrap().collect();
    assert_eq!(a, b);
}

#[test]
fn a_bpe_shard_set_carries_its_tokenizer_and_a_folder_of_compressed_files_reads_as_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let text = testdata::tinyshakespeare_bytes();
    let plain = dir.path().join("plain");
    let packed = dir.path().join("packed");
    fs::create_dir_all(&plain).unwrap();
    fs::create_dir_all(&packed).unwrap();
    // Two files: one plain text, one JSONL of documents; packed with gzip and zstd.
    let part = |i: usize| String::from_utf8_lossy(&text[i * 30_000..(i + 1) * 30_000]).into_owned();
    let jsonl: String =
        (0..40).map(|i| serde_json::json!({ "text": part(i % 3) }).to_string() + "\n").collect();
    fs::write(plain.join("a.txt"), part(0)).unwrap();
    fs::write(plain.join("b.jsonl"), &jsonl).unwrap();
    let mut gz =
        flate2::write::GzEncoder::new(File::create(packed.join("a.txt.gz")).unwrap(), Default::default());
    gz.write_all(part(0).as_bytes()).unwrap();
    gz.finish().unwrap();
    fs::write(packed.join("b.jsonl.zst"), zstd::encode_all(jsonl.as_bytes(), 3).unwrap()).unwrap();

    let bpe = TokenizerSpec::TrainBpe { vocab_size: 300 };
    let a = prepare_shards(&config(&plain, &dir.path().join("a"), bpe.clone()), |_| {}).unwrap();
    let b = prepare_shards(&config(&packed, &dir.path().join("b"), bpe), |_| {}).unwrap();
    assert_eq!(a.documents, 41);
    assert_eq!((a.train.clone(), a.validation.clone()), (b.train.clone(), b.validation.clone()));
    assert_eq!(a.tokenizer, b.tokenizer);
    assert_eq!(a.tokenizer.vocab_size, 300);
    let set = ShardSet::open(&dir.path().join("a")).unwrap();
    assert_eq!(set.tokenizer.identity().to_hex(), a.tokenizer.identity);
    // A set made with the saved tokenizer file gives the same ids.
    let file = TokenizerSpec::File(dir.path().join("a").join(TOKENIZER_FILE));
    let c = prepare_shards(&config(&plain, &dir.path().join("c"), file), |_| {}).unwrap();
    assert_eq!(c.train, a.train);
}

#[test]
fn a_set_that_disagrees_with_its_manifest_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 30_000);
    let out = dir.path().join("set");
    prepare_shards(&config(&corpus, &out, TokenizerSpec::Bytes), |_| {}).unwrap();

    // Preparing into an existing folder never touches it.
    let again = prepare_shards(&config(&corpus, &out, TokenizerSpec::Bytes), |_| {}).unwrap_err();
    assert!(matches!(again, ShardSetError::Exists { .. }), "{again}");

    let missing = ShardSet::open(&dir.path().join("nowhere")).unwrap_err();
    assert!(matches!(missing, ShardSetError::Missing { .. }), "{missing}");

    // A truncated shard: its size disagrees with the manifest's count.
    let shard = out.join("train-00001.bin");
    let bytes = fs::read(&shard).unwrap();
    fs::write(&shard, &bytes[..bytes.len() - 2]).unwrap();
    let err = ShardSet::open(&out).unwrap_err().to_string();
    assert!(err.contains("train-00001.bin") && err.contains("the manifest says 7001 tokens"), "{err}");

    // Same size, different content: opening is cheap and passes; verifying finds it.
    let mut flipped = bytes.clone();
    flipped[10] ^= 1;
    fs::write(&shard, &flipped).unwrap();
    let set = ShardSet::open(&out).unwrap();
    let err = set.verify().unwrap_err().to_string();
    assert!(err.contains("train-00001.bin hashes to"), "{err}");

    // An id outside the vocabulary (a set edited by hand, or made with another tokenizer).
    let mut bad_id = bytes.clone();
    bad_id[..2].copy_from_slice(&300u16.to_le_bytes());
    fs::write(&shard, &bad_id).unwrap();
    let mut manifest: Manifest =
        serde_json::from_str(&fs::read_to_string(out.join(MANIFEST_FILE)).unwrap()).unwrap();
    manifest.train[1].sha256 = hex(&Sha256::digest(&bad_id));
    fs::write(out.join(MANIFEST_FILE), serde_json::to_string(&manifest).unwrap()).unwrap();
    let err = ShardSet::open(&out).unwrap().verify().unwrap_err().to_string();
    assert!(err.contains("id 300") && err.contains("vocabulary of 256"), "{err}");

    // A manifest naming a missing shard, and one that is not a manifest.
    fs::remove_file(&shard).unwrap();
    let err = ShardSet::open(&out).unwrap_err().to_string();
    assert!(err.contains("names train-00001.bin, which is missing"), "{err}");
    fs::write(out.join(MANIFEST_FILE), "{\"format\": 1}").unwrap();
    assert!(matches!(ShardSet::open(&out).unwrap_err(), ShardSetError::BadManifest { .. }));
}

#[test]
fn a_tokenizer_that_is_not_the_manifest_s_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 30_000);
    let out = dir.path().join("set");
    prepare_shards(&config(&corpus, &out, TokenizerSpec::Bytes), |_| {}).unwrap();
    let other = Tokenizer::train_bpe(&["some other text to learn merges from"], 260).unwrap();
    other.save(&out.join(TOKENIZER_FILE)).unwrap();
    let err = ShardSet::open(&out).unwrap_err().to_string();
    assert!(err.contains("not the manifest's bytes"), "{err}");
}
