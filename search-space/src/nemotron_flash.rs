//! The Nemotron-Flash Hugging Face `config.json` (`model_type: "nemotron_flash"`).
//!
//! The format describes a model by `layer_types` (`"deltanet"`, `"m2"`, `"a"`, `"f"`) plus one
//! setting per operator kind (heads, Mamba2 state and head sizes, FFN expand ratio, ...). It cannot
//! hold Gated DeltaNet, layers of one kind with different dimensions, or Mamba2 with several
//! groups: export names the first layer it cannot write. Import accepts what the format's own
//! loader accepts, including `intermediate_size > 0` (an FFN inside every mixer layer).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::architecture::Architecture;
use crate::error::{ParseError, ValidationErrors, from_json_value};
use crate::model::{
    AttentionSettings, DeltaNetSettings, FfnSettings, Mamba2Settings, ModelSettings, ModelSpec,
    ffn_intermediate,
};
use crate::ops::{LayerSpec, MixerKind, OpKind};

pub const MODEL_TYPE: &str = "nemotron_flash";

/// The format derives the FFN width as ⌊ratio · hidden⌋ rounded down to a multiple of this.
const FFN_MULTIPLE: u32 = 128;

/// Layer type string of an operator, or `None` when the format has none.
fn layer_type(op: OpKind) -> Option<&'static str> {
    match op {
        OpKind::Mixer(MixerKind::DeltaNet) => Some("deltanet"),
        OpKind::Mixer(MixerKind::Mamba2) => Some("m2"),
        OpKind::Mixer(MixerKind::Attention) => Some("a"),
        OpKind::Ffn => Some("f"),
        OpKind::Mixer(MixerKind::GatedDeltaNet) => None,
    }
}

/// Writes the `config.json` object for a model.
pub fn export(spec: &ModelSpec) -> Result<Value, ValidationErrors> {
    spec.validate()?;
    let mut errs = ValidationErrors::new();
    let h = spec.hidden_size;
    // The first layer of each kind fixes that kind's settings; later ones must agree.
    let mut first: Vec<(usize, &LayerSpec)> = Vec::new();
    let mut layer_types = Vec::with_capacity(spec.layers.len());
    for (i, layer) in spec.layers.iter().enumerate() {
        let path = format!("layers[{i}]");
        let Some(code) = layer_type(layer.kind()) else {
            errs.push(path, format!("{} has no Nemotron-Flash layer type", layer.kind().name()));
            continue;
        };
        layer_types.push(code);
        match first.iter().find(|(_, l)| l.kind() == layer.kind()) {
            Some((j, earlier)) if *earlier != layer => errs.push(
                path,
                format!(
                    "{} differs from layers[{j}]; the format holds one setting per operator kind",
                    layer.kind().name()
                ),
            ),
            Some(_) => {}
            None => {
                if let Err(msg) = check_exportable(layer, h) {
                    errs.push(path, msg);
                }
                first.push((i, layer));
            }
        }
    }
    let find = |kind: MixerKind| {
        first.iter().find_map(|(i, l)| (l.kind() == OpKind::Mixer(kind)).then_some((*i, *l)))
    };
    let attention = find(MixerKind::Attention).and_then(|(_, l)| match l {
        LayerSpec::Attention(a) => Some(a.clone()),
        _ => None,
    });
    let deltanet = find(MixerKind::DeltaNet).and_then(|(i, l)| match l {
        LayerSpec::DeltaNet(d) => Some((i, d.clone())),
        _ => None,
    });
    let mamba = find(MixerKind::Mamba2).and_then(|(_, l)| match l {
        LayerSpec::Mamba2(m) => Some(m.clone()),
        _ => None,
    });
    let ffn = first.iter().find_map(|(_, l)| match l {
        LayerSpec::Ffn(f) => Some(f.intermediate_size),
        _ => None,
    });
    // DeltaNet layers take their head count from `num_attention_heads`.
    if let (Some(a), Some((i, d))) = (&attention, &deltanet)
        && a.num_heads != d.num_heads
    {
        errs.push(
            format!("layers[{i}]"),
            format!(
                "deltanet has {} heads but attention has {}; the format gives both num_attention_heads",
                d.num_heads, a.num_heads
            ),
        );
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let defaults = Mamba2Settings::default();
    let (num_heads, num_kv_heads) = match (&attention, &deltanet) {
        (Some(a), _) => (a.num_heads, a.num_kv_heads),
        (None, Some((_, d))) => (d.num_heads, d.num_heads),
        (None, None) => (AttentionSettings::default().num_heads, AttentionSettings::default().num_kv_heads),
    };
    let ffn_ratio = ffn.map(|i| ratio_value(i, h));
    Ok(json!({
        "architectures": ["NemotronFlashForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_nemotron_flash.NemotronFlashConfig",
            "AutoModelForCausalLM": "modeling_nemotron_flash.NemotronFlashForCausalLM"
        },
        "model_type": MODEL_TYPE,
        "vocab_size": spec.vocab_size,
        "tie_word_embeddings": spec.tied_embeddings,
        "num_memory_tokens": spec.meta_tokens,
        "hidden_size": h,
        "num_hidden_layers": spec.layers.len(),
        "layer_types": layer_types,
        // FFNs are their own "f" layers, so the mixer layers carry none.
        "intermediate_size": 0,
        "ffn_expand_ratio": ffn_ratio,
        "mlp_hidden_act": "silu",
        "hidden_act": "silu",
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "attn_hidden_size": -1,
        "kq_head_dim": -1,
        "v_head_dim": -1,
        "kq_norm": "none",
        "rope": true,
        "rope_theta": attention.as_ref().map_or(10_000.0, |a| a.rope_theta),
        "sliding_window": attention.as_ref().and_then(|a| a.sliding_window),
        "global_attn_idx": [],
        "mamba_d_state": mamba.as_ref().map_or(defaults.state_size, |m| m.state_size),
        "mamba_d_conv": mamba.as_ref().map_or(defaults.conv_kernel, |m| m.conv_kernel),
        "mamba_expand": mamba.as_ref().map_or(defaults.expand, |m| m.d_inner / h),
        "mamba2_headdim": mamba.as_ref().map_or(defaults.head_dim, |m| m.head_dim),
        "d_conv": deltanet.as_ref().map_or(4, |(_, d)| d.conv_kernel),
        "rms_norm_eps": 1e-6,
        "torch_dtype": "bfloat16",
    }))
}

/// The expand ratio as JSON: an integer when whole (`3`, not `3.0`), else the exact quotient.
fn ratio_value(intermediate: u32, hidden: u32) -> Value {
    if intermediate.is_multiple_of(hidden) {
        json!(intermediate / hidden)
    } else {
        json!(f64::from(intermediate) / f64::from(hidden))
    }
}

fn check_exportable(layer: &LayerSpec, h: u32) -> Result<(), String> {
    match layer {
        LayerSpec::Attention(a) if a.num_heads * a.head_dim != h => Err(format!(
            "attention heads × head dim = {} but hidden size is {h}; the format derives head dim from hidden size",
            a.num_heads * a.head_dim
        )),
        LayerSpec::DeltaNet(d) if d.num_heads * d.head_dim != h => Err(format!(
            "deltanet heads × head dim = {} but hidden size is {h}; the format derives head dim from hidden size",
            d.num_heads * d.head_dim
        )),
        LayerSpec::Mamba2(m) if m.groups != 1 => {
            Err(format!("mamba2 has {} groups; the format holds 1", m.groups))
        }
        LayerSpec::Mamba2(m) if m.d_inner % h != 0 => {
            Err(format!("mamba2 inner width {} is not a whole multiple of hidden size {h}", m.d_inner))
        }
        LayerSpec::Ffn(f)
            if ffn_intermediate(h, f64::from(f.intermediate_size) / f64::from(h), FFN_MULTIPLE)
                != f.intermediate_size =>
        {
            Err(format!(
                "ffn intermediate size {} is not a multiple of {FFN_MULTIPLE}, which the format's ffn_expand_ratio requires",
                f.intermediate_size
            ))
        }
        _ => Ok(()),
    }
}

/// The fields Frontier reads; the defaults are those of the format's configuration class.
#[derive(Debug, Deserialize)]
struct FlashConfig {
    model_type: String,
    hidden_size: u32,
    vocab_size: u32,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    num_memory_tokens: u32,
    layer_types: Vec<String>,
    #[serde(default)]
    intermediate_size: u32,
    #[serde(default)]
    ffn_expand_ratio: Option<f64>,
    num_attention_heads: u32,
    #[serde(default)]
    num_key_value_heads: Option<u32>,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default)]
    sliding_window: Option<u32>,
    #[serde(default = "default_d_state")]
    mamba_d_state: u32,
    #[serde(default = "default_conv")]
    mamba_d_conv: u32,
    #[serde(default = "default_expand")]
    mamba_expand: u32,
    #[serde(default = "default_headdim")]
    mamba2_headdim: u32,
    #[serde(default = "default_conv")]
    d_conv: u32,
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_d_state() -> u32 {
    16
}
fn default_conv() -> u32 {
    4
}
fn default_expand() -> u32 {
    2
}
fn default_headdim() -> u32 {
    64
}

/// Reads a `config.json` object into an architecture with a free layer list.
pub fn import(value: Value) -> Result<Architecture, ParseError> {
    let cfg: FlashConfig = from_json_value(value)?;
    let mut errs = ValidationErrors::new();
    if cfg.model_type != MODEL_TYPE {
        errs.push("model_type", format!("expected `{MODEL_TYPE}`, got `{}`", cfg.model_type));
        return Err(errs.into());
    }
    if cfg.hidden_size == 0 {
        errs.push("hidden_size", "must be at least 1");
        return Err(errs.into());
    }
    let inline_ffn = cfg.intermediate_size > 0;
    let mut layers = Vec::new();
    let mut has_f = false;
    for (i, t) in cfg.layer_types.iter().enumerate() {
        let op = match t.as_str() {
            "deltanet" => OpKind::Mixer(MixerKind::DeltaNet),
            "m" | "m2" => OpKind::Mixer(MixerKind::Mamba2),
            "a" => OpKind::Mixer(MixerKind::Attention),
            "f" => OpKind::Ffn,
            other => {
                errs.push(
                    format!("layer_types[{i}]"),
                    format!("unknown layer type `{other}`; expected deltanet, m2, a or f"),
                );
                continue;
            }
        };
        has_f |= op == OpKind::Ffn;
        layers.push(op);
        // With intermediate_size > 0 every mixer layer ends in its own FFN.
        if inline_ffn && op.is_mixer() {
            layers.push(OpKind::Ffn);
        }
    }
    let h = cfg.hidden_size;
    // "f" layers are sized by ffn_expand_ratio when given, else by intermediate_size.
    let f_size = match cfg.ffn_expand_ratio {
        Some(r) => ffn_intermediate(h, r, FFN_MULTIPLE),
        None => cfg.intermediate_size,
    };
    let ffn_size = match (has_f, inline_ffn) {
        (true, true) if f_size != cfg.intermediate_size => {
            errs.push(
                "ffn_expand_ratio",
                format!(
                    "gives \"f\" layers {f_size} units while intermediate_size gives mixer layers {}; Frontier models have one FFN size",
                    cfg.intermediate_size
                ),
            );
            0
        }
        (true, _) => f_size,
        (false, _) => cfg.intermediate_size,
    };
    if has_f && ffn_size == 0 {
        errs.push("ffn_expand_ratio", "\"f\" layers need ffn_expand_ratio or intermediate_size");
    }
    if !errs.is_empty() {
        return Err(errs.into());
    }
    let ffn = if ffn_size > 0 {
        FfnSettings { expand_ratio: f64::from(ffn_size) / f64::from(h), multiple_of: 1 }
    } else {
        FfnSettings::default()
    };
    let heads = cfg.num_attention_heads;
    let model = ModelSettings {
        hidden_size: h,
        vocab_size: cfg.vocab_size,
        tied_embeddings: cfg.tie_word_embeddings,
        meta_tokens: cfg.num_memory_tokens,
        attention: AttentionSettings {
            num_heads: heads,
            num_kv_heads: cfg.num_key_value_heads.unwrap_or(heads),
            sliding_window: cfg.sliding_window,
            rope_theta: cfg.rope_theta,
        },
        mamba2: Mamba2Settings {
            expand: cfg.mamba_expand,
            head_dim: cfg.mamba2_headdim,
            state_size: cfg.mamba_d_state,
            groups: 1,
            conv_kernel: cfg.mamba_d_conv,
        },
        deltanet: DeltaNetSettings { num_heads: heads, conv_kernel: cfg.d_conv },
        gated_deltanet: DeltaNetSettings { num_heads: heads, conv_kernel: cfg.d_conv },
        ffn,
    };
    let arch = Architecture::from_layers(model, layers);
    arch.expand()?;
    Ok(arch)
}
