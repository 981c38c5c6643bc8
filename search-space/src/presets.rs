//! Known designs as named presets: the published Nemotron-Flash models, pure baselines at the
//! same width, and tiny models for tests and demos.

use crate::architecture::Architecture;
use crate::genome::{BlockType, Genome, MixerRatio, Stage};
use crate::model::{AttentionSettings, DeltaNetSettings, FfnSettings, Mamba2Settings, ModelSettings};
use crate::ops::{MixerKind, OpKind};

/// Every preset name with a one-line description.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "nemotron-flash-1b",
        "Nemotron-Flash-1B: hidden 2048, 24 operators of DeltaNet, Mamba2, Attention and FFN",
    ),
    (
        "nemotron-flash-3b",
        "Nemotron-Flash-3B: hidden 3072, 36 operators of DeltaNet, Mamba2, Attention and FFN",
    ),
    ("transformer-1b", "pure Transformer at the 1B width: [A, F] x 12"),
    ("mamba2-1b", "pure Mamba2 at the 1B width: [M2, F] x 12"),
    ("deltanet-1b", "pure DeltaNet at the 1B width: [D, F] x 12"),
    (
        "tiny-hybrid",
        "byte-level hybrid, hidden 128: DeltaNet, Mamba2 and Attention with FFNs, for tests and demos",
    ),
    ("tiny-transformer", "byte-level Transformer, hidden 128: [A, F] x 2, for tests and demos"),
    ("tiny-mamba2", "byte-level pure Mamba2, hidden 128: [M2, F] x 2, the tiny Transformer's peer"),
    ("tiny-deltanet", "byte-level pure DeltaNet, hidden 128: [D, F] x 2, the tiny Transformer's peer"),
];

/// The preset of that name.
pub fn preset(name: &str) -> Option<Architecture> {
    let arch = match name {
        "nemotron-flash-1b" => {
            Architecture::from_layers(flash_1b_settings(), codes(&NEMOTRON_FLASH_1B_LAYERS))
        }
        "nemotron-flash-3b" => {
            let mut layers = Vec::new();
            for _ in 0..3 {
                layers.extend(codes(&["D", "F", "M2", "F", "A", "F", "M2", "F"]));
            }
            for _ in 0..3 {
                layers.extend(codes(&["D", "F", "M2", "F"]));
            }
            Architecture::from_layers(flash_3b_settings(), layers)
        }
        "transformer-1b" => Architecture::from_genome(flash_1b_settings(), uniform(MixerKind::Attention, 4)),
        "mamba2-1b" => Architecture::from_genome(flash_1b_settings(), uniform(MixerKind::Mamba2, 4)),
        "deltanet-1b" => Architecture::from_genome(flash_1b_settings(), uniform(MixerKind::DeltaNet, 4)),
        "tiny-hybrid" => Architecture::from_genome(
            tiny_settings(),
            Genome {
                stages: vec![
                    stage(vec![MixerKind::DeltaNet, MixerKind::Mamba2], MixerRatio::R1to1, 1, 1),
                    stage(vec![MixerKind::Attention], MixerRatio::R0to1, 1, 1),
                    stage(vec![MixerKind::Mamba2, MixerKind::DeltaNet], MixerRatio::R1to1, 1, 1),
                ],
            },
        ),
        "tiny-transformer" => Architecture::from_layers(tiny_settings(), codes(&["A", "F", "A", "F"])),
        "tiny-mamba2" => Architecture::from_layers(tiny_settings(), codes(&["M2", "F", "M2", "F"])),
        "tiny-deltanet" => Architecture::from_layers(tiny_settings(), codes(&["D", "F", "D", "F"])),
        _ => return None,
    };
    Some(arch.named(name))
}

/// The published Nemotron-Flash-1B operator list.
pub const NEMOTRON_FLASH_1B_LAYERS: [&str; 24] = [
    "D", "F", "M2", "F", "A", "F", "M2", "F", "D", "F", "M2", "F", "A", "F", "M2", "F", "D", "F", "M2", "F",
    "D", "F", "M2", "F",
];

fn codes(list: &[&str]) -> Vec<OpKind> {
    // The lists above are written in valid codes; a typo there is a bug caught by the tests.
    list.iter().filter_map(|c| c.parse().ok()).collect()
}

fn stage(mixers: Vec<MixerKind>, ratio: MixerRatio, ffns_per_mixer: u8, blocks: u32) -> Stage {
    Stage { block: BlockType { mixers, ratio, ffns_per_mixer }, blocks }
}

/// Three stages of `[mixer, F]` blocks, `blocks_per_stage` each.
fn uniform(mixer: MixerKind, blocks_per_stage: u32) -> Genome {
    Genome { stages: (0..3).map(|_| stage(vec![mixer], MixerRatio::R0to1, 1, blocks_per_stage)).collect() }
}

/// Nemotron-Flash-1B's settings: 16 query / 4 KV heads, FFN 3 × hidden, Mamba2 expand 2 with
/// 64-wide heads and state 128, DeltaNet with one head per attention head, 256 meta tokens,
/// 131 072-token vocabulary, tied embeddings.
pub fn flash_1b_settings() -> ModelSettings {
    ModelSettings {
        hidden_size: 2048,
        vocab_size: 131_072,
        tied_embeddings: true,
        meta_tokens: 256,
        attention: AttentionSettings {
            num_heads: 16,
            num_kv_heads: 4,
            sliding_window: None,
            rope_theta: 10_000.0,
        },
        mamba2: Mamba2Settings::default(),
        deltanet: DeltaNetSettings { num_heads: 16, conv_kernel: 4 },
        gated_deltanet: DeltaNetSettings { num_heads: 16, conv_kernel: 4 },
        ffn: FfnSettings { expand_ratio: 3.0, multiple_of: 128 },
    }
}

/// Nemotron-Flash-3B's settings: hidden 3072, 24 query / 6 KV heads, FFN 9216.
pub fn flash_3b_settings() -> ModelSettings {
    ModelSettings {
        hidden_size: 3072,
        attention: AttentionSettings {
            num_heads: 24,
            num_kv_heads: 6,
            sliding_window: None,
            rope_theta: 10_000.0,
        },
        deltanet: DeltaNetSettings { num_heads: 24, conv_kernel: 4 },
        gated_deltanet: DeltaNetSettings { num_heads: 24, conv_kernel: 4 },
        ..flash_1b_settings()
    }
}

/// Byte-level settings small enough to train in seconds on a CPU.
pub fn tiny_settings() -> ModelSettings {
    ModelSettings {
        hidden_size: 128,
        vocab_size: 256,
        tied_embeddings: true,
        meta_tokens: 4,
        attention: AttentionSettings {
            num_heads: 4,
            num_kv_heads: 2,
            sliding_window: None,
            rope_theta: 10_000.0,
        },
        mamba2: Mamba2Settings { expand: 2, head_dim: 32, state_size: 16, groups: 1, conv_kernel: 4 },
        deltanet: DeltaNetSettings { num_heads: 4, conv_kernel: 4 },
        gated_deltanet: DeltaNetSettings { num_heads: 4, conv_kernel: 4 },
        ffn: FfnSettings { expand_ratio: 3.0, multiple_of: 32 },
    }
}
