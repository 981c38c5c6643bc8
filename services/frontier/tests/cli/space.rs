use std::path::Path;

use crate::helpers::{fails, frontier, json, ok, stderr};

#[test]
fn show_reports_the_published_parameter_counts() {
    for (preset, billions, tolerance) in [("nemotron-flash-1b", 0.96, 0.02), ("nemotron-flash-3b", 2.7, 0.03)]
    {
        let out = json(&ok(&["space", "show", "--preset", preset, "--json"]));
        let total = out["params"]["total"].as_u64().unwrap() as f64 / 1e9;
        assert!((total - billions).abs() / billions <= tolerance, "{preset}: {total} B");
    }
    let table = ok(&["space", "show", "--preset", "nemotron-flash-1b"]);
    assert!(table.contains("pattern: D F M2 F A F M2 F D F M2 F A F M2 F D F M2 F D F M2 F"), "{table}");
    assert!(table.contains("parameters: 965389440 = 965.39 M"), "{table}");
    assert!(table.contains("decode memory at batch 1, context 8192, bf16"), "{table}");
}

#[test]
fn show_reports_decode_memory_at_the_requested_setting() {
    let at = |ctx: &str| {
        let out = json(&ok(&["space", "show", "--preset", "transformer-1b", "--json", "--context", ctx]));
        out["decode_memory"]["kv_cache_bytes"].as_u64().unwrap()
    };
    // 12 attention layers × (k, v) × 4 KV heads × 128 × bf16, with 256 meta tokens in front.
    assert_eq!(at("1024"), 12 * 2 * 4 * 128 * 2 * (1024 + 256));
    assert_eq!(at("4096"), 12 * 2 * 4 * 128 * 2 * (4096 + 256));
}

#[test]
fn export_writes_a_nemotron_flash_config_with_the_published_layer_types() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("flash");
    let printed = ok(&[
        "space",
        "export",
        "--preset",
        "nemotron-flash-1b",
        "--format",
        "nemotron-flash",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    let path = out_dir.join("config.json");
    assert_eq!(printed.trim(), path.display().to_string());
    let cfg = json(&std::fs::read_to_string(&path).unwrap());
    let expected = [
        "deltanet", "f", "m2", "f", "a", "f", "m2", "f", "deltanet", "f", "m2", "f", "a", "f", "m2", "f",
        "deltanet", "f", "m2", "f", "deltanet", "f", "m2", "f",
    ];
    assert_eq!(cfg["layer_types"], serde_json::json!(expected));
    assert_eq!(cfg["model_type"], "nemotron_flash");

    // The exported config reads back as the same architecture.
    let original = json(&ok(&["space", "show", "--preset", "nemotron-flash-1b", "--json"]));
    let reread = json(&ok(&["space", "show", path.to_str().unwrap(), "--json"]));
    assert_eq!(reread["hash"], original["hash"]);
}

#[test]
fn frontier_export_validates_and_keeps_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&["space", "export", "--preset", "tiny-hybrid", "--format", "frontier", "-o", d]);
    let file = Path::new(d).join("architecture.json");
    let validated = ok(&["space", "validate", file.to_str().unwrap()]);
    let hash = json(&ok(&["space", "show", "--preset", "tiny-hybrid", "--json"]))["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(validated.contains("valid, 10 layers"), "{validated}");
    assert!(validated.trim_end().ends_with(&hash), "{validated} vs {hash}");
}

#[test]
fn sample_is_deterministic_and_every_sample_validates() {
    let a = ok(&["space", "sample", "--seed", "11", "--count", "5"]);
    assert_eq!(a, ok(&["space", "sample", "--seed", "11", "--count", "5"]));
    assert_ne!(a, ok(&["space", "sample", "--seed", "12", "--count", "5"]));
    let samples = json(&a);
    let samples = samples.as_array().unwrap();
    assert_eq!(samples.len(), 5);
    let dir = tempfile::tempdir().unwrap();
    for (i, s) in samples.iter().enumerate() {
        assert!(s["genome"]["stages"].as_array().unwrap().len() == 3);
        let file = dir.path().join(format!("{i}.json"));
        std::fs::write(&file, s.to_string()).unwrap();
        ok(&["space", "validate", file.to_str().unwrap()]);
    }
}

#[test]
fn invalid_files_get_one_clear_message_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"model": {"hidden_size": 1000, "vocab_size": 256, "attention": {"num_heads": 12, "num_kv_heads": 4},
            "mamba2": {"head_dim": 8}},
            "genome": {"stages": [{"block": {"mixers": ["mamba2", "attention"], "ratio": "1:1", "ffns_per_mixer": 1},
            "blocks": 2}]}}"#,
    )
    .unwrap();
    let err = fails(&["space", "validate", file.to_str().unwrap()]);
    assert!(
        err.ends_with(
            "genome.stages[0].block.mixers[1]: hidden size 1000 is not divisible by 12 attention heads\n"
        ),
        "{err}"
    );
    assert!(err.contains("bad.json"), "{err}");

    std::fs::write(&file, r#"{"model": {"hidden_size": 128, "vocab_size": 256}, "layers": ["A", "LSTM"]}"#)
        .unwrap();
    let err = fails(&["space", "validate", file.to_str().unwrap()]);
    assert!(err.contains("layers[1]: unknown operator `LSTM`"), "{err}");

    std::fs::write(&file, "{ not json").unwrap();
    assert!(fails(&["space", "show", file.to_str().unwrap()]).contains("not valid JSON"));

    let missing = dir.path().join("missing.json");
    assert!(fails(&["space", "validate", missing.to_str().unwrap()]).contains("cannot read"));
    assert!(fails(&["space", "show", "--preset", "gpt-9"]).contains("unknown preset `gpt-9`"));
}

#[test]
fn exporting_what_the_format_cannot_hold_names_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gd.json");
    std::fs::write(
        &file,
        r#"{"model": {"hidden_size": 128, "vocab_size": 256, "attention": {"num_heads": 4, "num_kv_heads": 2},
            "gated_deltanet": {"num_heads": 4}}, "layers": ["A", "F", "GD", "F"]}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let err = fails(&[
        "space",
        "export",
        file.to_str().unwrap(),
        "--format",
        "nemotron-flash",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("layers[2]: gated_deltanet has no Nemotron-Flash layer type"), "{err}");
    assert!(!out.join("config.json").exists(), "nothing written on error");
}

#[test]
fn usage_errors_exit_with_status_two() {
    let o = frontier(&["space", "show"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("required arguments were not provided"), "{}", stderr(&o));
    let o = frontier(&["space", "export", "--preset", "tiny-hybrid", "--format", "onnx", "-o", "x"]);
    assert_eq!(o.status.code(), Some(2));
}
