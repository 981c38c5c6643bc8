//! End-to-end tests of [`prepare`] on small generated corpora.

use super::*;

/// Writes `count` documents of a few lines each as `.txt` files in `dir`. Each document carries
/// its number, so a held-out document can be looked for in the training stream.
fn write_documents(dir: &Path, count: usize) {
    for i in 0..count {
        let text = format!(
            "Document {i} begins here.\nIt says marker-{i:04} once, among ordinary words.\nThe end of document {i}.\n"
        );
        fs::write(dir.join(format!("doc{i:04}.txt")), text).unwrap();
    }
}

fn config(corpus: &Path, cache: Option<&Path>) -> DataConfig {
    DataConfig { cache_dir: cache.map(Path::to_owned), ..DataConfig::new(corpus) }
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "shard"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn streams_decode_to_the_split_text_joined_by_newlines() {
    let corpus = tempfile::tempdir().unwrap();
    write_documents(corpus.path(), 60);
    let prepared = prepare(&DataConfig { validation_fraction: 0.2, ..config(corpus.path(), None) }).unwrap();

    let documents = Corpus::load(corpus.path()).unwrap();
    let split = split_documents(documents.documents(), 0.2).unwrap();
    assert!(matches!(prepared.split, SplitMethod::Documents { .. }), "{:?}", prepared.split);
    assert_eq!(prepared.tokenizer.decode(&prepared.train).unwrap(), split.train.join("\n"));
    assert_eq!(prepared.tokenizer.decode(&prepared.validation).unwrap(), split.validation.join("\n"));
    assert_eq!(prepared.stream_cache, CacheUse::Uncached);
}

#[test]
fn validation_documents_never_reach_the_training_stream_or_the_bpe_vocabulary() {
    let corpus = tempfile::tempdir().unwrap();
    write_documents(corpus.path(), 80);
    let prepared = prepare(&DataConfig {
        tokenizer: TokenizerSpec::TrainBpe { vocab_size: 400 },
        validation_fraction: 0.25,
        ..config(corpus.path(), None)
    })
    .unwrap();
    let train = prepared.tokenizer.decode(&prepared.train).unwrap();
    let validation = prepared.tokenizer.decode(&prepared.validation).unwrap();
    let held_out: Vec<usize> = (0..80).filter(|i| validation.contains(&format!("marker-{i:04}"))).collect();
    assert!(held_out.len() >= 10, "{held_out:?}");
    for i in 0..80 {
        let marker = format!("marker-{i:04}");
        assert_ne!(train.contains(&marker), held_out.contains(&i), "{marker} is on both sides or neither");
    }
    // The vocabulary was learned from the training text alone, so it equals a BPE trained
    // directly on the training documents.
    let documents = Corpus::load(corpus.path()).unwrap();
    let split = split_documents(documents.documents(), 0.25).unwrap();
    let direct = Tokenizer::train_bpe(&split.train, 400).unwrap();
    assert_eq!(prepared.tokenizer.identity(), direct.identity());
}

#[test]
fn second_prepare_reads_the_cached_shards_without_tokenizing() {
    let corpus = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    write_documents(corpus.path(), 30);
    let config = config(corpus.path(), Some(cache.path()));

    let first = prepare(&config).unwrap();
    assert_eq!(first.stream_cache, CacheUse::Built);
    let second = prepare(&config).unwrap();
    assert_eq!(second.stream_cache, CacheUse::Reused);
    assert_eq!((&second.train, &second.validation), (&first.train, &first.validation));
    assert_eq!(shards(cache.path()).len(), 2, "one train and one validation shard, reused");

    // Proof that the streams come from the shard file and not from tokenizing: replace the
    // train shard with other valid tokens under the same key, and they are what comes back.
    let train_path =
        shards(cache.path()).into_iter().find(|p| p.to_str().unwrap().ends_with(".train.shard")).unwrap();
    let stream_key =
        train_path.file_name().unwrap().to_str().unwrap().trim_end_matches(".train.shard").to_owned();
    let key_bytes: Vec<u8> =
        (0..32).map(|i| u8::from_str_radix(&stream_key[2 * i..2 * i + 2], 16).unwrap()).collect();
    let (path, train_key) = stream_shard(cache.path(), &ContentKey(key_bytes.try_into().unwrap()), "train");
    assert_eq!(path, train_path);
    shard::write_shard(&train_path, &train_key, 256, &[1, 2, 3]).unwrap();
    assert_eq!(prepare(&config).unwrap().train, [1, 2, 3]);
}

#[test]
fn corrupted_or_truncated_shard_is_rebuilt_not_trusted() {
    let corpus = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    write_documents(corpus.path(), 30);
    let config = config(corpus.path(), Some(cache.path()));
    let first = prepare(&config).unwrap();

    for shard_path in shards(cache.path()) {
        let intact = fs::read(&shard_path).unwrap();

        let mut flipped = intact.clone();
        *flipped.last_mut().unwrap() ^= 0x20;
        fs::write(&shard_path, &flipped).unwrap();
        let rebuilt = prepare(&config).unwrap();
        assert!(
            matches!(&rebuilt.stream_cache, CacheUse::Rebuilt { reason } if reason.contains("checksum")),
            "{:?}",
            rebuilt.stream_cache
        );
        assert_eq!((&rebuilt.train, &rebuilt.validation), (&first.train, &first.validation));
        assert_eq!(fs::read(&shard_path).unwrap(), intact, "the rebuilt shard is written back");

        fs::write(&shard_path, &intact[..intact.len() - 3]).unwrap();
        let rebuilt = prepare(&config).unwrap();
        assert!(
            matches!(&rebuilt.stream_cache, CacheUse::Rebuilt { reason } if reason.contains("truncated")),
            "{:?}",
            rebuilt.stream_cache
        );
        assert_eq!((&rebuilt.train, &rebuilt.validation), (&first.train, &first.validation));
        assert_eq!(prepare(&config).unwrap().stream_cache, CacheUse::Reused);
    }
}

#[test]
fn changed_corpus_tokenizer_or_fraction_gets_new_shards() {
    let corpus = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    write_documents(corpus.path(), 30);
    let base = config(corpus.path(), Some(cache.path()));
    prepare(&base).unwrap();
    assert_eq!(shards(cache.path()).len(), 2);

    let other_fraction = DataConfig { validation_fraction: 0.3, ..base.clone() };
    assert_eq!(prepare(&other_fraction).unwrap().stream_cache, CacheUse::Built);
    assert_eq!(shards(cache.path()).len(), 4);

    let bpe = DataConfig { tokenizer: TokenizerSpec::TrainBpe { vocab_size: 300 }, ..base.clone() };
    assert_eq!(prepare(&bpe).unwrap().stream_cache, CacheUse::Built);
    assert_eq!(shards(cache.path()).len(), 6);

    fs::write(corpus.path().join("doc0000.txt"), "An edited first document.\n").unwrap();
    let edited = prepare(&base).unwrap();
    assert_eq!(edited.stream_cache, CacheUse::Built);
    assert_eq!(shards(cache.path()).len(), 8);
}

#[test]
fn trained_bpe_is_cached_and_reused_with_its_shards() {
    let corpus = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    write_documents(corpus.path(), 30);
    let config = DataConfig {
        tokenizer: TokenizerSpec::TrainBpe { vocab_size: 320 },
        ..config(corpus.path(), Some(cache.path()))
    };
    let first = prepare(&config).unwrap();
    assert_eq!(
        (first.tokenizer_cache.clone(), first.stream_cache.clone()),
        (CacheUse::Built, CacheUse::Built)
    );
    assert!(first.tokenizer.vocab_size() > 256 && first.tokenizer.vocab_size() <= 320);

    let second = prepare(&config).unwrap();
    assert_eq!((second.tokenizer_cache, second.stream_cache), (CacheUse::Reused, CacheUse::Reused));
    assert_eq!(second.tokenizer.identity(), first.tokenizer.identity());
    assert_eq!(second.train, first.train);

    // A damaged tokenizer file is retrained, and the same tokenizer comes out.
    let json: Vec<PathBuf> = fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(".bpe.json"))
        .collect();
    assert_eq!(json.len(), 1);
    fs::write(&json[0], "{ truncated").unwrap();
    let third = prepare(&config).unwrap();
    assert!(matches!(third.tokenizer_cache, CacheUse::Rebuilt { .. }), "{:?}", third.tokenizer_cache);
    assert_eq!(third.tokenizer.identity(), first.tokenizer.identity());
    assert_eq!(third.stream_cache, CacheUse::Reused);
}

#[test]
fn tokenizer_file_spec_loads_the_saved_tokenizer() {
    let corpus = tempfile::tempdir().unwrap();
    write_documents(corpus.path(), 10);
    let text: String = (0..10).map(|i| format!("marker-{i:04} words words\n")).collect();
    let saved = Tokenizer::train_bpe(&[&text], 290).unwrap();
    let path = corpus.path().join("tokenizer.json");
    saved.save(&path).unwrap();
    let prepared =
        prepare(&DataConfig { tokenizer: TokenizerSpec::File(path), ..config(corpus.path(), None) }).unwrap();
    assert_eq!(prepared.tokenizer.identity(), saved.identity());
    assert_eq!(prepared.tokenizer_cache, CacheUse::Uncached);
}

#[test]
fn prepare_reports_corpus_and_split_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = prepare(&config(&dir.path().join("absent"), None)).unwrap_err();
    assert!(matches!(missing, DataError::Corpus(CorpusError::NotFound { .. })), "{missing:?}");

    write_documents(dir.path(), 3);
    let bad_fraction =
        prepare(&DataConfig { validation_fraction: 1.0, ..config(dir.path(), None) }).unwrap_err();
    assert!(matches!(bad_fraction, DataError::Split(SplitError::InvalidFraction(_))), "{bad_fraction:?}");
}

#[test]
fn prepared_streams_feed_the_batchers() {
    let corpus = tempfile::tempdir().unwrap();
    write_documents(corpus.path(), 40);
    let prepared = prepare(&config(corpus.path(), None)).unwrap();
    let train = TrainBatches::new(&prepared.train, 32, 4, 0).unwrap();
    assert_eq!(train.batch(0).inputs.len(), 128);
    let validation = ValidationBatches::new(&prepared.validation, 32, 4).unwrap();
    assert_eq!(validation.target_tokens(), (prepared.validation.len() - 1) / 32 * 32);
    // A budget of one window larger than the validation stream is refused.
    let too_long = prepared.validation.len();
    assert!(matches!(
        ValidationBatches::new(&prepared.validation, too_long, 1),
        Err(BatchError::StreamTooShort { .. })
    ));
}
