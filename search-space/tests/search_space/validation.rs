//! Bad documents produce errors that name the field path and the reason.

use search_space::{Architecture, ParseError};

fn err(text: &str) -> String {
    Architecture::from_json(text).expect_err("document is invalid").to_string()
}

const MODEL: &str = r#""model": {"hidden_size": 1000, "vocab_size": 256,
    "attention": {"num_heads": 12, "num_kv_heads": 4}, "mamba2": {"head_dim": 8}}"#;

#[test]
fn hidden_size_not_divisible_by_heads_names_the_mixer_that_needs_it() {
    let text = format!(
        r#"{{{MODEL}, "genome": {{"stages": [
            {{"block": {{"mixers": ["mamba2"], "ratio": "0:1", "ffns_per_mixer": 0}}, "blocks": 1}},
            {{"block": {{"mixers": ["attention", "mamba2"], "ratio": "1:1", "ffns_per_mixer": 0}}, "blocks": 1}}
        ]}}}}"#
    );
    assert_eq!(
        err(&text),
        "genome.stages[1].block.mixers[0]: hidden size 1000 is not divisible by 12 attention heads"
    );
}

#[test]
fn unknown_operator_names_its_path() {
    let text = r#"{"model": {"hidden_size": 128, "vocab_size": 256, "attention": {"num_heads": 4, "num_kv_heads": 2}},
        "genome": {"stages": [{"block": {"mixers": ["lstm"], "ratio": "0:1", "ffns_per_mixer": 1}, "blocks": 1}]}}"#;
    let e = err(text);
    assert!(
        e.starts_with("genome.stages[0].block.mixers[0]: unknown operator `lstm`; expected one of"),
        "{e}"
    );

    let in_layers = r#"{"model": {"hidden_size": 128, "vocab_size": 256}, "layers": ["A", "F", "Q"]}"#;
    assert!(err(in_layers).starts_with("layers[2]: unknown operator `Q`"), "{}", err(in_layers));
}

#[test]
fn out_of_range_fields_are_all_reported_with_paths() {
    let text = r#"{"model": {"hidden_size": 0, "vocab_size": 256,
        "attention": {"num_heads": 6, "num_kv_heads": 4}, "ffn": {"expand_ratio": -1.0}}, "layers": ["A"]}"#;
    let e = err(text);
    assert_eq!(
        e,
        "model.hidden_size: must be in 1..=65536, got 0; \
         model.attention.num_kv_heads: 6 query heads are not divisible by 4 KV heads; \
         model.ffn.expand_ratio: must be in (0, 64], got -1"
    );
}

#[test]
fn genome_structure_errors_name_the_stage() {
    let text = r#"{"model": {"hidden_size": 128, "vocab_size": 256, "attention": {"num_heads": 4, "num_kv_heads": 2}},
        "genome": {"stages": [
            {"block": {"mixers": ["attention", "attention"], "ratio": "1:2", "ffns_per_mixer": 3}, "blocks": 0},
            {"block": {"mixers": ["attention"], "ratio": "1:1", "ffns_per_mixer": 1}, "blocks": 1}
        ]}}"#;
    assert_eq!(
        err(text),
        "genome.stages[0].block.mixers[1]: repeats attention; a two-kind block needs two different mixers; \
         genome.stages[0].block.ffns_per_mixer: must be 0, 1 or 2, got 3; \
         genome.stages[0].blocks: must be at least 1; \
         genome.stages[1].block.mixers: ratio 1:1 needs 2 mixer kinds, got 1"
    );
}

#[test]
fn malformed_documents_name_the_field() {
    let wrong_type = r#"{"model": {"hidden_size": "big", "vocab_size": 256}, "layers": ["A"]}"#;
    let e = Architecture::from_json(wrong_type).unwrap_err();
    assert!(matches!(&e, ParseError::Syntax { path, .. } if path == "model.hidden_size"), "{e}");

    let typo = r#"{"model": {"hiden_size": 128, "vocab_size": 256}, "layers": ["A"]}"#;
    let e = err(typo);
    assert!(e.starts_with("model.hiden_size: unknown field `hiden_size`, expected one of"), "{e}");

    let bad_ratio = r#"{"model": {"hidden_size": 128, "vocab_size": 256},
        "genome": {"stages": [{"block": {"mixers": ["mamba2"], "ratio": "2:1", "ffns_per_mixer": 1}, "blocks": 1}]}}"#;
    assert!(
        err(bad_ratio).starts_with("genome.stages[0].block.ratio: unknown mixer ratio `2:1`"),
        "{}",
        err(bad_ratio)
    );

    assert!(err("{not json").starts_with("(document): key must be a string"), "{}", err("{not json"));

    let both =
        r#"{"model": {"hidden_size": 128, "vocab_size": 256}, "layers": ["A"], "genome": {"stages": []}}"#;
    assert!(err(both).contains("give either `genome` or `layers`, not both"), "{}", err(both));
}
