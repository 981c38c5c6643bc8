use search_space::ops::{AttentionSpec, DeltaNetSpec, FfnSpec, LayerSpec, Mamba2Spec};
use search_space::presets::{NEMOTRON_FLASH_1B_LAYERS, PRESETS};
use search_space::{Dtype, OpKind};

use crate::helpers::{expanded, rel_diff};

#[test]
fn nemotron_flash_1b_has_the_published_parameter_count() {
    let params = expanded("nemotron-flash-1b").params();
    // Published: 0.96 B. Tolerance ±2 % for details the paper does not state (Mamba2 state size).
    let billions = params.total as f64 / 1e9;
    assert!(rel_diff(billions, 0.96) <= 0.02, "nemotron-flash-1b has {billions:.4} B parameters");
    assert_eq!(params.head, 0, "embeddings are tied");
    assert_eq!(params.embedding, 131_072 * 2048);
    assert_eq!(params.meta_tokens, 256 * 2048);
}

#[test]
fn nemotron_flash_3b_has_the_published_parameter_count() {
    let billions = expanded("nemotron-flash-3b").params().total as f64 / 1e9;
    assert!(rel_diff(billions, 2.7) <= 0.03, "nemotron-flash-3b has {billions:.4} B parameters");
}

#[test]
fn nemotron_flash_1b_expands_to_the_published_layer_list() {
    let spec = expanded("nemotron-flash-1b");
    let codes: Vec<&str> = spec.op_kinds().iter().map(|k| k.code()).collect();
    assert_eq!(codes, NEMOTRON_FLASH_1B_LAYERS);
    let ffn = spec.layers.iter().find_map(|l| match l {
        LayerSpec::Ffn(f) => Some(f.intermediate_size),
        _ => None,
    });
    assert_eq!(ffn, Some(6144));
    let attn = spec.layers.iter().find_map(|l| match l {
        LayerSpec::Attention(a) => Some(a.clone()),
        _ => None,
    });
    let attn = attn.expect("has attention");
    assert_eq!((attn.num_heads, attn.num_kv_heads, attn.head_dim), (16, 4, 128));
}

/// Each layer's count written out by hand from the reference module definitions, at hidden 2048.
#[test]
fn per_layer_parameter_counts_match_the_reference_modules() {
    let h = 2048u64;
    let attn = LayerSpec::Attention(AttentionSpec {
        num_heads: 16,
        num_kv_heads: 4,
        head_dim: 128,
        sliding_window: None,
        rope_theta: 1e4,
    });
    // norm + q (h×h) + k, v (h×512 each) + o (h×h)
    assert_eq!(attn.params(2048), h + h * h + 2 * h * 512 + h * h);

    let mamba = LayerSpec::Mamba2(Mamba2Spec {
        d_inner: 4096,
        num_heads: 64,
        head_dim: 64,
        state_size: 128,
        groups: 1,
        conv_kernel: 4,
    });
    // norm + in_proj h×(2·4096 + 2·128 + 64) + conv (4352×4 + 4352) + dt_bias/A_log/D (3·64)
    // + gated norm 4096 + out_proj 4096×h
    let expected = h + h * 8512 + 4352 * 5 + 192 + 4096 + 4096 * h;
    assert_eq!(mamba.params(2048), expected);

    let d = DeltaNetSpec { num_heads: 16, head_dim: 128, conv_kernel: 4 };
    // norm + q,k,v (3·h×h) + beta (h×16) + 3 convs (3·h×4) + o_norm 128 + o_proj h×h
    let deltanet = h + 3 * h * h + h * 16 + 3 * h * 4 + 128 + h * h;
    assert_eq!(LayerSpec::DeltaNet(d.clone()).params(2048), deltanet);
    // gated adds a_proj (h×16), A_log and dt_bias (2·16) and g_proj (h×h)
    assert_eq!(LayerSpec::GatedDeltaNet(d).params(2048), deltanet + h * 16 + 32 + h * h);

    // norm + gate, up, down
    assert_eq!(LayerSpec::Ffn(FfnSpec { intermediate_size: 6144 }).params(2048), h + 3 * h * 6144);
}

#[test]
fn untied_embeddings_add_an_output_head() {
    let mut arch = crate::helpers::arch("tiny-transformer");
    let tied = arch.expand().unwrap().params();
    arch.model.tied_embeddings = false;
    let untied = arch.expand().unwrap().params();
    assert_eq!(untied.head, 256 * 128);
    assert_eq!(untied.total, tied.total + 256 * 128);
}

#[test]
fn full_attention_cache_grows_with_context_and_sliding_window_caps_it() {
    let mut arch = crate::helpers::arch("transformer-1b");
    let spec = arch.expand().unwrap();
    let meta = 256u64;
    let at = |ctx: u64| spec.decode_memory(1, ctx, Dtype::Bf16).kv_cache_bytes;
    // 12 layers × 2 (k, v) × 4 KV heads × 128 dims × 2 bytes per token
    let per_token = 12 * 2 * 4 * 128 * 2;
    assert_eq!(at(1024), per_token * (1024 + meta));
    assert_eq!(at(8192), per_token * (8192 + meta));

    arch.model.attention.sliding_window = Some(512);
    let windowed = arch.expand().unwrap();
    // The window's 512 recent entries and the 256 meta tokens, which stay visible to every query.
    let mem = windowed.decode_memory(1, 8192, Dtype::Bf16);
    assert_eq!(mem.kv_cache_bytes, per_token * (512 + meta));
    assert_eq!(windowed.decode_memory(4, 8192, Dtype::F32).kv_cache_bytes, per_token * (512 + meta) * 4 * 2);
    // Before the window fills, everything seen so far.
    assert_eq!(windowed.decode_memory(1, 100, Dtype::Bf16).kv_cache_bytes, per_token * (100 + meta));
}

#[test]
fn a_sliding_window_caches_the_meta_tokens_besides_the_window() {
    let mut arch = crate::helpers::arch("transformer-1b");
    arch.model.attention.sliding_window = Some(512);
    let per_token = 12 * 2 * 4 * 128 * 2;
    for meta in [0u32, 1, 256] {
        arch.model.meta_tokens = meta;
        let spec = arch.expand().unwrap();
        let kv = spec.decode_memory(1, 65_536, Dtype::Bf16).kv_cache_bytes;
        assert_eq!(kv, per_token * (512 + u64::from(meta)), "{meta} meta tokens");
    }
}

#[test]
fn recurrent_state_is_flat_in_context() {
    let spec = expanded("mamba2-1b");
    let short = spec.decode_memory(1, 128, Dtype::Bf16);
    let long = spec.decode_memory(1, 65_536, Dtype::Bf16);
    assert_eq!(short, long);
    assert_eq!(short.kv_cache_bytes, 0);
    // 12 layers × 64 heads × 64 head dim × 128 state × 2 bytes
    assert_eq!(short.recurrent_state_bytes, 12 * 64 * 64 * 128 * 2);
    // 12 layers × (4096 + 2·128) conv channels × 3 kept inputs × 2 bytes
    assert_eq!(short.conv_state_bytes, 12 * 4352 * 3 * 2);

    let d = expanded("deltanet-1b").decode_memory(2, 4096, Dtype::F32);
    // 12 layers × 16 heads × 128 × 128 × batch 2 × 4 bytes
    assert_eq!(d.recurrent_state_bytes, 12 * 16 * 128 * 128 * 2 * 4);
    // q, k, v convs: 12 layers × 3 × 2048 × 3 × 2 × 4
    assert_eq!(d.conv_state_bytes, 12 * 3 * 2048 * 3 * 2 * 4);
}

#[test]
fn every_preset_expands_and_validates() {
    for (name, _) in PRESETS {
        let spec = expanded(name);
        spec.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(spec.layers.iter().any(|l| l.kind().is_mixer()), "{name} has a mixer");
        assert!(spec.op_kinds().contains(&OpKind::Ffn), "{name} has an FFN");
    }
}
