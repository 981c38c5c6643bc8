//! Model-level settings and the expanded model.
//!
//! [`ModelSettings`] says how each operator kind is dimensioned at a given hidden size (heads,
//! state sizes, FFN ratio, ...): a genome or a layer pattern plus these settings expand into a
//! [`ModelSpec`], the flat, fully dimensioned layer list with closed-form parameter and decode
//! memory counts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::ops::{
    AttentionSpec, DecodeState, DeltaNetSpec, FfnSpec, LayerSpec, Mamba2Spec, MixerKind, OpKind,
};

/// Attention settings shared by every attention layer of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AttentionSettings {
    /// Query heads; head dim = hidden / heads.
    #[schemars(range(min = 1, max = MAX_DIM))]
    pub num_heads: u32,
    /// Key/value heads (grouped-query attention); must divide `num_heads`.
    #[schemars(range(min = 1, max = MAX_DIM))]
    pub num_kv_heads: u32,
    /// Sliding window in tokens; `null` for full attention. The paper searches with 512.
    #[schemars(range(min = 1))]
    pub sliding_window: Option<u32>,
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub rope_theta: f64,
}

impl Default for AttentionSettings {
    fn default() -> Self {
        Self { num_heads: 16, num_kv_heads: 4, sliding_window: None, rope_theta: 10_000.0 }
    }
}

/// Mamba2 settings shared by every Mamba2 layer of a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Mamba2Settings {
    /// Inner width = expand · hidden.
    #[schemars(range(min = 1, max = MAX_EXPAND))]
    pub expand: u32,
    /// Channels per SSM head; heads = inner width / head_dim.
    #[schemars(range(min = 1, max = MAX_DIM))]
    pub head_dim: u32,
    #[schemars(range(min = 1, max = MAX_DIM))]
    pub state_size: u32,
    #[schemars(range(min = 1, max = MAX_DIM))]
    pub groups: u32,
    #[schemars(range(min = 1, max = MAX_CONV_KERNEL))]
    pub conv_kernel: u32,
}

impl Default for Mamba2Settings {
    fn default() -> Self {
        Self { expand: 2, head_dim: 64, state_size: 128, groups: 1, conv_kernel: 4 }
    }
}

/// DeltaNet / Gated DeltaNet settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeltaNetSettings {
    /// Heads; head dim = hidden / heads (keys and values alike).
    #[schemars(range(min = 1, max = MAX_DIM))]
    pub num_heads: u32,
    #[schemars(range(min = 1, max = MAX_CONV_KERNEL))]
    pub conv_kernel: u32,
}

impl Default for DeltaNetSettings {
    fn default() -> Self {
        Self { num_heads: 16, conv_kernel: 4 }
    }
}

/// FFN settings: intermediate size = ⌊expand_ratio · hidden / multiple_of⌋ · multiple_of,
/// the rule the Nemotron-Flash config uses with `multiple_of = 128`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FfnSettings {
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = MAX_FFN_EXPAND))]
    pub expand_ratio: f64,
    #[schemars(range(min = 1, max = MAX_DIM))]
    pub multiple_of: u32,
}

impl Default for FfnSettings {
    fn default() -> Self {
        Self { expand_ratio: 3.0, multiple_of: 128 }
    }
}

/// Everything besides the layer pattern that fixes a model's dimensions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    #[schemars(range(min = 1, max = MAX_HIDDEN))]
    pub hidden_size: u32,
    #[schemars(range(min = 1, max = MAX_VOCAB))]
    pub vocab_size: u32,
    #[serde(default = "yes")]
    pub tied_embeddings: bool,
    /// Learnable embeddings prepended to every sequence (paper: 256).
    #[serde(default)]
    #[schemars(range(max = MAX_META_TOKENS))]
    pub meta_tokens: u32,
    #[serde(default)]
    pub attention: AttentionSettings,
    #[serde(default)]
    pub mamba2: Mamba2Settings,
    #[serde(default)]
    pub deltanet: DeltaNetSettings,
    #[serde(default)]
    pub gated_deltanet: DeltaNetSettings,
    #[serde(default)]
    pub ffn: FfnSettings,
}

fn yes() -> bool {
    true
}

// Upper bounds that keep counts far from overflow and catch typos (a hidden size of 2^31).
/// Largest hidden size.
pub const MAX_HIDDEN: u32 = 65_536;
/// Largest vocabulary.
pub const MAX_VOCAB: u32 = 4_194_304;
/// Most meta tokens.
pub const MAX_META_TOKENS: u32 = 65_536;
/// Largest head count, head dimension, state size, group count or FFN rounding multiple.
pub const MAX_DIM: u32 = 65_536;
/// Largest Mamba2 expansion factor (inner width = expand · hidden).
pub const MAX_EXPAND: u32 = 64;
/// Largest FFN expansion ratio.
pub const MAX_FFN_EXPAND: f64 = 64.0;
/// Longest short convolution.
pub const MAX_CONV_KERNEL: u32 = 1024;

impl ModelSettings {
    /// The same settings at another width.
    pub fn with_hidden_size(&self, hidden_size: u32) -> Self {
        Self { hidden_size, ..self.clone() }
    }

    /// Checks the settings that do not depend on which operators are used.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if self.hidden_size == 0 || self.hidden_size > MAX_HIDDEN {
            errs.push("hidden_size", format!("must be in 1..={MAX_HIDDEN}, got {}", self.hidden_size));
        }
        if self.vocab_size == 0 || self.vocab_size > MAX_VOCAB {
            errs.push("vocab_size", format!("must be in 1..={MAX_VOCAB}, got {}", self.vocab_size));
        }
        if self.meta_tokens > MAX_META_TOKENS {
            errs.push("meta_tokens", format!("must be at most {MAX_META_TOKENS}, got {}", self.meta_tokens));
        }
        let a = &self.attention;
        bounded(&mut errs, "attention.num_heads", a.num_heads, MAX_DIM);
        bounded(&mut errs, "attention.num_kv_heads", a.num_kv_heads, MAX_DIM);
        if a.num_kv_heads > 0 && !a.num_heads.is_multiple_of(a.num_kv_heads) {
            errs.push(
                "attention.num_kv_heads",
                format!("{} query heads are not divisible by {} KV heads", a.num_heads, a.num_kv_heads),
            );
        }
        if a.sliding_window == Some(0) {
            errs.push("attention.sliding_window", "must be at least 1 token (or null for full attention)");
        }
        if !(a.rope_theta.is_finite() && a.rope_theta > 0.0) {
            errs.push("attention.rope_theta", format!("must be a positive number, got {}", a.rope_theta));
        }
        let m = &self.mamba2;
        bounded(&mut errs, "mamba2.expand", m.expand, MAX_EXPAND);
        bounded(&mut errs, "mamba2.head_dim", m.head_dim, MAX_DIM);
        bounded(&mut errs, "mamba2.state_size", m.state_size, MAX_DIM);
        bounded(&mut errs, "mamba2.groups", m.groups, MAX_DIM);
        bounded(&mut errs, "mamba2.conv_kernel", m.conv_kernel, MAX_CONV_KERNEL);
        for (name, d) in [("deltanet", &self.deltanet), ("gated_deltanet", &self.gated_deltanet)] {
            bounded(&mut errs, &format!("{name}.num_heads"), d.num_heads, MAX_DIM);
            bounded(&mut errs, &format!("{name}.conv_kernel"), d.conv_kernel, MAX_CONV_KERNEL);
        }
        if !(self.ffn.expand_ratio.is_finite()
            && self.ffn.expand_ratio > 0.0
            && self.ffn.expand_ratio <= MAX_FFN_EXPAND)
        {
            errs.push(
                "ffn.expand_ratio",
                format!("must be in (0, {MAX_FFN_EXPAND}], got {}", self.ffn.expand_ratio),
            );
        }
        bounded(&mut errs, "ffn.multiple_of", self.ffn.multiple_of, MAX_DIM);
        errs.into_result(())
    }

    /// Dimensions one operator at this width. The error message says which setting clashes with
    /// the hidden size; the caller adds the path of the operator that asked for it.
    pub fn layer(&self, op: OpKind) -> Result<LayerSpec, String> {
        let h = self.hidden_size;
        match op {
            OpKind::Mixer(MixerKind::Attention) => {
                let a = &self.attention;
                if a.num_heads == 0 || !h.is_multiple_of(a.num_heads) {
                    return Err(format!(
                        "hidden size {h} is not divisible by {} attention heads",
                        a.num_heads
                    ));
                }
                Ok(LayerSpec::Attention(AttentionSpec {
                    num_heads: a.num_heads,
                    num_kv_heads: a.num_kv_heads,
                    head_dim: h / a.num_heads,
                    sliding_window: a.sliding_window,
                    rope_theta: a.rope_theta,
                }))
            }
            OpKind::Mixer(MixerKind::Mamba2) => {
                let m = &self.mamba2;
                let d_inner = h.checked_mul(m.expand).ok_or("mamba2 inner width overflows")?;
                if m.head_dim == 0 || d_inner % m.head_dim != 0 {
                    return Err(format!(
                        "mamba2 inner width {d_inner} (expand {} × hidden {h}) is not divisible by head dim {}",
                        m.expand, m.head_dim
                    ));
                }
                let num_heads = d_inner / m.head_dim;
                if m.groups == 0 || !num_heads.is_multiple_of(m.groups) {
                    return Err(format!("mamba2 {num_heads} heads are not divisible by {} groups", m.groups));
                }
                Ok(LayerSpec::Mamba2(Mamba2Spec {
                    d_inner,
                    num_heads,
                    head_dim: m.head_dim,
                    state_size: m.state_size,
                    groups: m.groups,
                    conv_kernel: m.conv_kernel,
                }))
            }
            OpKind::Mixer(kind @ (MixerKind::DeltaNet | MixerKind::GatedDeltaNet)) => {
                let d = if kind == MixerKind::DeltaNet { &self.deltanet } else { &self.gated_deltanet };
                if d.num_heads == 0 || !h.is_multiple_of(d.num_heads) {
                    return Err(format!(
                        "hidden size {h} is not divisible by {} {} heads",
                        d.num_heads,
                        kind.name()
                    ));
                }
                let spec = DeltaNetSpec {
                    num_heads: d.num_heads,
                    head_dim: h / d.num_heads,
                    conv_kernel: d.conv_kernel,
                };
                Ok(if kind == MixerKind::DeltaNet {
                    LayerSpec::DeltaNet(spec)
                } else {
                    LayerSpec::GatedDeltaNet(spec)
                })
            }
            OpKind::Ffn => {
                let f = &self.ffn;
                let intermediate = ffn_intermediate(h, f.expand_ratio, f.multiple_of);
                if intermediate == 0 {
                    return Err(format!(
                        "ffn expand ratio {} × hidden {h} rounds down to 0 at a multiple of {}",
                        f.expand_ratio, f.multiple_of
                    ));
                }
                Ok(LayerSpec::Ffn(FfnSpec { intermediate_size: intermediate }))
            }
        }
    }
}

/// ⌊ratio · hidden / multiple⌋ · multiple. The small epsilon keeps ratios such as 8/3, which are
/// not exact in binary, from rounding one below the intended integer.
pub fn ffn_intermediate(hidden: u32, ratio: f64, multiple_of: u32) -> u32 {
    if multiple_of == 0 || !ratio.is_finite() || ratio <= 0.0 {
        return 0;
    }
    let raw = (ratio * f64::from(hidden) + 1e-6).floor();
    if raw >= f64::from(u32::MAX) {
        return 0;
    }
    let raw = raw as u32;
    raw / multiple_of * multiple_of
}

fn bounded(errs: &mut ValidationErrors, path: &str, v: u32, max: u32) {
    if v == 0 {
        errs.push(path, "must be at least 1");
    } else if v > max {
        errs.push(path, format!("must be at most {max}, got {v}"));
    }
}

/// Bytes per element of a deployment dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    F32,
    Bf16,
    F16,
    Fp8,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
            Dtype::Fp8 => "fp8",
        }
    }

    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
            Dtype::Fp8 => 1,
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Dtype::F32),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            "f16" | "fp16" | "float16" => Ok(Dtype::F16),
            "fp8" | "f8" => Ok(Dtype::Fp8),
            _ => Err(format!("unknown dtype `{s}`; expected f32, bf16, f16 or fp8")),
        }
    }
}

/// A fully dimensioned model: what gets trained, profiled, hashed and exported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub hidden_size: u32,
    pub vocab_size: u32,
    pub tied_embeddings: bool,
    pub meta_tokens: u32,
    pub layers: Vec<LayerSpec>,
}

/// Parameter count broken down the way papers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ParamCount {
    /// Token embedding table (vocab × hidden).
    pub embedding: u64,
    /// Meta-token embeddings (meta_tokens × hidden).
    pub meta_tokens: u64,
    /// All sub-layers, their pre-norms included.
    pub layers: u64,
    /// Final RMSNorm.
    pub final_norm: u64,
    /// Output head; 0 when tied to the embedding.
    pub head: u64,
    pub total: u64,
}

/// Decoding memory in bytes at a batch size, context length and dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DecodeMemory {
    pub kv_cache_bytes: u64,
    pub recurrent_state_bytes: u64,
    pub conv_state_bytes: u64,
    pub total_bytes: u64,
}

impl ModelSpec {
    pub fn op_kinds(&self) -> Vec<OpKind> {
        self.layers.iter().map(LayerSpec::kind).collect()
    }

    /// The layer pattern in short codes, e.g. `D F M2 F A F`.
    pub fn pattern(&self) -> String {
        self.layers.iter().map(|l| l.kind().code()).collect::<Vec<_>>().join(" ")
    }

    pub fn mixer_count(&self) -> usize {
        self.layers.iter().filter(|l| l.kind().is_mixer()).count()
    }

    pub fn params(&self) -> ParamCount {
        let h = u64::from(self.hidden_size);
        let embedding = u64::from(self.vocab_size) * h;
        let meta_tokens = u64::from(self.meta_tokens) * h;
        // Saturating: counts of absurd (but valid) models stay ordered instead of overflowing.
        let layers = self.layers.iter().fold(0u64, |acc, l| acc.saturating_add(l.params(self.hidden_size)));
        let final_norm = h;
        let head = if self.tied_embeddings { 0 } else { u64::from(self.vocab_size) * h };
        ParamCount {
            embedding,
            meta_tokens,
            layers,
            final_norm,
            head,
            total: [embedding, meta_tokens, layers, final_norm, head]
                .into_iter()
                .fold(0u64, u64::saturating_add),
        }
    }

    /// Memory held while decoding `batch` sequences of `context` tokens each. Meta tokens sit in
    /// front of every sequence, so attention caches them too, sliding-window attention included
    /// (`window + meta_tokens` entries).
    pub fn decode_memory(&self, batch: u64, context: u64, dtype: Dtype) -> DecodeMemory {
        let mut state = DecodeState::default();
        for l in &self.layers {
            state += l.decode_state(u64::from(self.meta_tokens), context);
        }
        // Saturating, as the parameter count: a huge batch or context must not overflow.
        let b = batch.saturating_mul(dtype.bytes());
        DecodeMemory {
            kv_cache_bytes: state.kv_cache.saturating_mul(b),
            recurrent_state_bytes: state.recurrent.saturating_mul(b),
            conv_state_bytes: state.conv.saturating_mul(b),
            total_bytes: state.total().saturating_mul(b),
        }
    }

    /// Checks that every layer is internally consistent, for models that arrive fully
    /// dimensioned (over HTTP, or from a file) rather than expanded here.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if self.hidden_size == 0 || self.hidden_size > MAX_HIDDEN {
            errs.push("hidden_size", format!("must be in 1..={MAX_HIDDEN}, got {}", self.hidden_size));
        }
        if self.vocab_size == 0 || self.vocab_size > MAX_VOCAB {
            errs.push("vocab_size", format!("must be in 1..={MAX_VOCAB}, got {}", self.vocab_size));
        }
        if self.meta_tokens > MAX_META_TOKENS {
            errs.push("meta_tokens", format!("must be at most {MAX_META_TOKENS}, got {}", self.meta_tokens));
        }
        if self.layers.is_empty() {
            errs.push("layers", "a model needs at least one layer");
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let path = format!("layers[{i}]");
            if let Err(msg) = check_layer(layer) {
                errs.push(path, msg);
            }
        }
        errs.into_result(())
    }
}

fn check_layer(layer: &LayerSpec) -> Result<(), String> {
    const MAX_DIM: u32 = 1 << 20;
    let dims: Vec<(&str, u32)> = match layer {
        LayerSpec::Attention(a) => {
            vec![("num_heads", a.num_heads), ("num_kv_heads", a.num_kv_heads), ("head_dim", a.head_dim)]
        }
        LayerSpec::Mamba2(m) => vec![
            ("d_inner", m.d_inner),
            ("num_heads", m.num_heads),
            ("head_dim", m.head_dim),
            ("state_size", m.state_size),
            ("groups", m.groups),
            ("conv_kernel", m.conv_kernel),
        ],
        LayerSpec::DeltaNet(d) | LayerSpec::GatedDeltaNet(d) => {
            vec![("num_heads", d.num_heads), ("head_dim", d.head_dim), ("conv_kernel", d.conv_kernel)]
        }
        LayerSpec::Ffn(f) => vec![("intermediate_size", f.intermediate_size)],
    };
    for (name, v) in dims {
        if v == 0 || v > MAX_DIM {
            return Err(format!("{} {name} must be in 1..={MAX_DIM}, got {v}", layer.kind().name()));
        }
    }
    match layer {
        LayerSpec::Attention(a) if a.num_heads % a.num_kv_heads != 0 => {
            Err(format!("{} query heads are not divisible by {} KV heads", a.num_heads, a.num_kv_heads))
        }
        LayerSpec::Attention(a) if a.sliding_window == Some(0) => {
            Err("sliding window must be at least 1".into())
        }
        LayerSpec::Attention(a) if !(a.rope_theta.is_finite() && a.rope_theta > 0.0) => {
            Err(format!("rope_theta must be positive, got {}", a.rope_theta))
        }
        LayerSpec::Mamba2(m) if m.num_heads.checked_mul(m.head_dim) != Some(m.d_inner) => Err(format!(
            "mamba2 d_inner {} is not num_heads {} × head_dim {}",
            m.d_inner, m.num_heads, m.head_dim
        )),
        LayerSpec::Mamba2(m) if m.num_heads % m.groups != 0 => {
            Err(format!("mamba2 {} heads are not divisible by {} groups", m.num_heads, m.groups))
        }
        _ => Ok(()),
    }
}
