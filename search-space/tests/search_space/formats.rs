use search_space::nemotron_flash;
use search_space::presets::{NEMOTRON_FLASH_1B_LAYERS, PRESETS};
use search_space::{Architecture, MixerKind, ParseError};
use serde_json::json;

use crate::helpers::{arch, expanded};

#[test]
fn nemotron_flash_1b_layer_types_export_equals_the_published_list() {
    let cfg = nemotron_flash::export(&expanded("nemotron-flash-1b")).unwrap();
    let published: Vec<&str> = NEMOTRON_FLASH_1B_LAYERS
        .iter()
        .map(|c| match *c {
            "D" => "deltanet",
            "M2" => "m2",
            "A" => "a",
            "F" => "f",
            other => panic!("unexpected code {other}"),
        })
        .collect();
    assert_eq!(cfg["layer_types"], json!(published));
    assert_eq!(cfg["model_type"], "nemotron_flash");
    assert_eq!(cfg["hidden_size"], 2048);
    assert_eq!(cfg["num_attention_heads"], 16);
    assert_eq!(cfg["num_key_value_heads"], 4);
    assert_eq!(cfg["ffn_expand_ratio"], 3);
    assert_eq!(cfg["intermediate_size"], 0);
    assert_eq!(cfg["num_memory_tokens"], 256);
    assert_eq!(cfg["vocab_size"], 131_072);
    assert_eq!(cfg["tie_word_embeddings"], true);
    assert_eq!(cfg["num_hidden_layers"], 24);
}

#[test]
fn nemotron_flash_config_round_trips_for_every_exportable_preset() {
    for (name, _) in PRESETS {
        let spec = expanded(name);
        let cfg = nemotron_flash::export(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = nemotron_flash::import(cfg.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back_spec = back.expand().unwrap();
        assert_eq!(back_spec, spec, "{name}");
        assert_eq!(back_spec.canonical_hash(), spec.canonical_hash(), "{name}");
        // And the config written from the import is the same config.
        assert_eq!(nemotron_flash::export(&back_spec).unwrap(), cfg, "{name}");
    }
}

#[test]
fn gated_deltanet_cannot_be_exported_and_the_error_names_the_layer() {
    let mut a = arch("tiny-transformer");
    a.topology = search_space::Topology::Layers(vec![
        "A".parse().unwrap(),
        "F".parse().unwrap(),
        "GD".parse().unwrap(),
        "F".parse().unwrap(),
    ]);
    let err = nemotron_flash::export(&a.expand().unwrap()).unwrap_err();
    assert_eq!(err.to_string(), "layers[2]: gated_deltanet has no Nemotron-Flash layer type");
}

#[test]
fn ffn_width_the_format_cannot_derive_is_refused() {
    let mut a = arch("tiny-transformer");
    a.model.ffn.multiple_of = 1;
    a.model.ffn.expand_ratio = 2.5; // 320 units: not a multiple of 128
    let err = nemotron_flash::export(&a.expand().unwrap()).unwrap_err();
    assert!(
        err.to_string().starts_with("layers[1]: ffn intermediate size 320 is not a multiple of 128"),
        "{err}"
    );
}

#[test]
fn import_reads_inline_ffns_and_old_mamba_codes() {
    let cfg = json!({
        "model_type": "nemotron_flash",
        "hidden_size": 256,
        "vocab_size": 1000,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "layer_types": ["a", "m"],
        "mamba_d_state": 16,
        "mamba2_headdim": 32,
    });
    let arch = nemotron_flash::import(cfg).unwrap();
    let spec = arch.expand().unwrap();
    assert_eq!(spec.pattern(), "A F M2 F");
    assert_eq!(
        spec.layers[1],
        search_space::LayerSpec::Ffn(search_space::ops::FfnSpec { intermediate_size: 512 })
    );
    assert!(!spec.tied_embeddings, "the format's default is untied");
}

#[test]
fn import_names_the_bad_field() {
    let bad_type = json!({
        "model_type": "nemotron_flash", "hidden_size": 256, "vocab_size": 10, "num_attention_heads": 4,
        "layer_types": ["a", "lstm"], "ffn_expand_ratio": 2
    });
    let err = nemotron_flash::import(bad_type).unwrap_err();
    assert_eq!(err.to_string(), "layer_types[1]: unknown layer type `lstm`; expected deltanet, m2, a or f");

    let wrong_kind = json!({"model_type": "llama", "hidden_size": 256, "vocab_size": 10,
        "num_attention_heads": 4, "layer_types": []});
    assert_eq!(
        nemotron_flash::import(wrong_kind).unwrap_err().to_string(),
        "model_type: expected `nemotron_flash`, got `llama`"
    );

    let wrong_type = json!({"model_type": "nemotron_flash", "hidden_size": "wide", "vocab_size": 10,
        "num_attention_heads": 4, "layer_types": []});
    let err = nemotron_flash::import(wrong_type).unwrap_err();
    assert!(matches!(err, ParseError::Syntax { ref path, .. } if path == "hidden_size"), "{err}");
}

#[test]
fn frontier_json_round_trips_exactly() {
    for (name, _) in PRESETS {
        let a = arch(name);
        let text = a.to_json();
        let back = Architecture::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, a, "{name}");
        assert_eq!(back.to_json(), text, "{name}");
    }
}

#[test]
fn frontier_json_document_reads_as_documented() {
    let text = r#"{
        "format": "frontier/architecture",
        "version": 1,
        "model": {"hidden_size": 256, "vocab_size": 256, "attention": {"num_heads": 4, "num_kv_heads": 4}},
        "genome": {"stages": [
            {"block": {"mixers": ["deltanet", "attention"], "ratio": "1:3", "ffns_per_mixer": 1}, "blocks": 2}
        ]}
    }"#;
    let a = Architecture::from_json(text).unwrap();
    let spec = a.expand().unwrap();
    assert_eq!(spec.pattern(), "D F A F A F A F D F A F A F A F");
    assert_eq!(
        a.model.mamba2,
        search_space::model::Mamba2Settings::default(),
        "omitted settings take defaults"
    );
    let layers_text = r#"{"model": {"hidden_size": 256, "vocab_size": 256,
        "attention": {"num_heads": 4, "num_kv_heads": 4}}, "layers": ["D", "F", "attention", "ffn"]}"#;
    let b = Architecture::from_json(layers_text).unwrap();
    assert_eq!(b.expand().unwrap().pattern(), "D F A F");
    assert_eq!(b.operators()[2], search_space::OpKind::Mixer(MixerKind::Attention));
}
