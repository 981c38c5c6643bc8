use crate::helpers::{fails, frontier, json, ok, stderr, stdout};

/// A few KB of the public-domain test corpus, copied to a temp dir.
fn corpus(dir: &std::path::Path, bytes: usize) -> String {
    let text = testdata::tinyshakespeare_bytes();
    let file = dir.join("corpus.txt");
    std::fs::write(&file, &text[..bytes]).expect("temp dir is writable");
    file.to_str().expect("temp paths are UTF-8").to_owned()
}

#[test]
fn train_prints_one_json_line_with_the_scores() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 40_000);
    let out = ok(&[
        "train",
        "--preset",
        "tiny-transformer",
        "--corpus",
        &corpus,
        "--tokens",
        "2048",
        "--seq-len",
        "64",
        "--batch",
        "8",
        "--eval-untrained",
        "--json",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let line = json(&out);
    assert_eq!(line["outcome"], "completed");
    assert_eq!(line["steps"], 4);
    for field in ["val_loss", "val_ppl", "tokens_per_s", "untrained_val_loss"] {
        assert!(line[field].as_f64().is_some_and(f64::is_finite), "{field}: {line}");
    }
    let (loss, ppl) = (line["val_loss"].as_f64().unwrap(), line["val_ppl"].as_f64().unwrap());
    assert!((ppl - loss.exp()).abs() < 1e-6 * ppl);
    assert!(loss < line["untrained_val_loss"].as_f64().unwrap(), "four steps already help: {line}");
}

/// bf16 runs on the CPU backend too: the same device-independent path a GPU takes (the device's
/// float type set before the model exists), so the GPU check only adds the GPU.
#[test]
fn bf16_training_reports_its_precision_and_lowers_the_loss_like_f32() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 40_000);
    let run = |precision: &str| {
        json(&ok(&[
            "train",
            "--preset",
            "tiny-transformer",
            "--corpus",
            &corpus,
            "--tokens",
            "8192",
            "--seq-len",
            "64",
            "--batch",
            "8",
            "--precision",
            precision,
            "--eval-untrained",
            "--json",
        ]))
    };
    let (bf16, f32) = (run("bf16"), run("f32"));
    assert!(bf16["device"].as_str().unwrap().ends_with(", bf16"), "{bf16}");
    assert!(!f32["device"].as_str().unwrap().contains("bf16"), "{f32}");
    let loss = |line: &serde_json::Value, field: &str| line[field].as_f64().unwrap();
    // The same weights rounded to bf16 score about the same before training (bf16 keeps 8 bits
    // of mantissa: a relative error near 0.4 % per value).
    let untrained = (loss(&bf16, "untrained_val_loss") - loss(&f32, "untrained_val_loss")).abs();
    assert!(untrained < 0.02 * loss(&f32, "untrained_val_loss"), "bf16 {bf16} vs f32 {f32}");
    // 16 steps lower the loss in both, and bf16 ends within a tenth of f32's improvement.
    let gain = |line: &serde_json::Value| loss(line, "untrained_val_loss") - loss(line, "val_loss");
    assert!(gain(&f32) > 0.3 && gain(&bf16) > 0.3, "bf16 {bf16} vs f32 {f32}");
    assert!((gain(&bf16) - gain(&f32)).abs() < 0.1 * gain(&f32), "bf16 {bf16} vs f32 {f32}");
}

#[test]
fn a_sampled_architecture_can_be_measured_directly() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.json");
    let sample = ok(&["space", "sample", "--seed", "3", "--count", "1", "--settings", "tiny-hybrid"]);
    std::fs::write(&one, &sample).unwrap();
    let out = ok(&[
        "decode-bench",
        "--arch",
        one.to_str().unwrap(),
        "--prompt-len",
        "4",
        "--gen-len",
        "2",
        "--repeats",
        "1",
        "--json",
    ]);
    assert_eq!(json(&out)["arch"], "sample-3-0");

    let many = dir.path().join("many.json");
    std::fs::write(&many, ok(&["space", "sample", "--count", "2", "--settings", "tiny-hybrid"])).unwrap();
    let err = fails(&["decode-bench", "--arch", many.to_str().unwrap()]);
    assert!(err.contains("holds 2 architectures"), "{err}");
}

#[test]
fn decode_bench_reports_latency() {
    let out = ok(&[
        "decode-bench",
        "--preset",
        "tiny-hybrid",
        "--prompt-len",
        "8",
        "--gen-len",
        "4",
        "--repeats",
        "1",
        "--json",
    ]);
    let line = json(&out);
    assert!(line["report"]["total_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert_eq!(line["report"]["totals_ms"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_training_input_gets_one_clear_error_each() {
    let dir = tempfile::tempdir().unwrap();
    let good = corpus(dir.path(), 20_000);
    let base = |corpus: &str, tokens: &str| {
        vec![
            "train".to_owned(),
            "--corpus".into(),
            corpus.into(),
            "--tokens".into(),
            tokens.into(),
            "--seq-len".into(),
            "64".into(),
            "--batch".into(),
            "4".into(),
        ]
    };
    let run = |args: Vec<String>| fails(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let missing = dir.path().join("missing.txt");
    assert!(run(base(missing.to_str().unwrap(), "1024")).contains("does not exist"));

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = run(base(empty.to_str().unwrap(), "1024"));
    assert!(err.to_lowercase().contains("no text"), "{err}");

    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, b"hello \xff\xfe world").unwrap();
    let err = run(base(binary.to_str().unwrap(), "1024"));
    assert!(err.contains("UTF-8") && err.contains("binary.txt"), "{err}");

    let err = run(base(&good, "100"));
    assert!(err.contains("token budget 100 is smaller than one batch (4 × 64 = 256 tokens)"), "{err}");

    // Flag values that do not parse are usage errors (exit 2) naming the value and the reason.
    let usage = |flag: &str, value: &str| {
        let mut args = base(&good, "1024");
        args.extend([flag.to_owned(), value.to_owned()]);
        let o = frontier(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let err = usage("--precision", "fp8");
    assert!(err.contains("unknown precision `fp8`; expected f32 or bf16"), "{err}");
    assert!(usage("--device", "cuda:0,x").contains("`x` is not a GPU index"));
    assert!(usage("--device", "cuda:1,1").contains("names cuda:1 twice"));

    let arch = dir.path().join("arch.json");
    std::fs::write(&arch, r#"{"model": {"hidden_size": 100, "vocab_size": 256, "attention": {"num_heads": 3, "num_kv_heads": 1}}, "layers": ["A", "F"]}"#).unwrap();
    let mut args = base(&good, "1024");
    args.extend(["--arch".into(), arch.to_str().unwrap().into()]);
    let err = run(args);
    assert!(err.contains("layers[0]: hidden size 100 is not divisible by 3 attention heads"), "{err}");
}

#[test]
fn train_on_a_synthetic_task_reports_its_accuracy_in_the_json_line() {
    let out = ok(&[
        "train",
        "--preset",
        "tiny-hybrid",
        "--corpus",
        "synthetic:in_context_recall",
        "--tokens",
        "1024",
        "--seq-len",
        "64",
        "--batch",
        "8",
        "--eval-tokens",
        "2048",
        "--eval-untrained",
        "--json",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let line = json(&out);
    assert_eq!(line["outcome"], "completed");
    assert_eq!(line["tokenizer"], "synthetic");
    let accuracy = line["accuracy"].as_object().expect("an accuracy map");
    assert_eq!(accuracy.keys().collect::<Vec<_>>(), ["in_context_recall"]);
    assert!(accuracy["in_context_recall"].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{line}");
    assert!(line["untrained_accuracy"]["in_context_recall"].is_number(), "{line}");
    assert!(line["task_loss"]["in_context_recall"].as_f64().is_some_and(f64::is_finite), "{line}");
}

#[test]
fn without_a_preset_the_tiny_hybrid_trains_and_the_summary_lists_each_task() {
    let out = ok(&[
        "train",
        "--corpus",
        "synthetic:selective_copying?vocab=8,memorization?vocab=16",
        "--tokens",
        "512",
        "--seq-len",
        "64",
        "--batch",
        "8",
        "--eval-tokens",
        "2048",
    ]);
    assert!(out.starts_with("tiny-hybrid:"), "{out}");
    let accuracy = out.lines().find(|l| l.starts_with("accuracy: ")).expect("an accuracy line");
    assert!(accuracy.contains("memorization ") && accuracy.contains("selective_copying "), "{out}");
}

#[test]
fn a_bad_synthetic_corpus_gets_one_clear_error() {
    let base = |corpus: &str, seq_len: &str| {
        fails(&["train", "--corpus", corpus, "--tokens", "4096", "--seq-len", seq_len, "--batch", "4"])
    };
    let err = base("synthetic:recall", "64");
    assert!(err.contains("--corpus") && err.contains("unknown synthetic task `recall`"), "{err}");
    let err = base("synthetic:noisy_recall?noise=2", "64");
    assert!(err.contains("noise=2: must be in [0, 1)"), "{err}");
    let err = base("synthetic:selective_copying", "16");
    assert!(err.contains("copying 16 tokens needs seq_len ≥ 33"), "{err}");
}
