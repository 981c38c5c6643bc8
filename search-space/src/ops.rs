//! Operators and fully dimensioned layers.
//!
//! A model is a flat list of [`LayerSpec`]s, each one pre-norm residual sub-layer
//! (`x + op(rmsnorm(x))`): a token mixer (Attention, Mamba2, DeltaNet, Gated DeltaNet) or an FFN.
//! This is the one representation that the burn models, the latency table and the exporters
//! consume, so every dimension that changes a layer's cost or its parameter count is here.
//!
//! Parameter counts follow the Nemotron-Flash reference modules: no biases in projections,
//! a depthwise causal convolution (with bias for Mamba2, without for DeltaNet), one RMSNorm
//! weight per sub-layer.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A token mixer kind: what a block type chooses between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MixerKind {
    Attention,
    Mamba2,
    DeltaNet,
    GatedDeltaNet,
}

/// Any operator kind a layer can have: a mixer or an FFN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Mixer(MixerKind),
    Ffn,
}

impl MixerKind {
    pub const ALL: [MixerKind; 4] =
        [MixerKind::Attention, MixerKind::Mamba2, MixerKind::DeltaNet, MixerKind::GatedDeltaNet];

    /// Long name, as written in genomes and specs.
    pub fn name(self) -> &'static str {
        match self {
            MixerKind::Attention => "attention",
            MixerKind::Mamba2 => "mamba2",
            MixerKind::DeltaNet => "deltanet",
            MixerKind::GatedDeltaNet => "gated_deltanet",
        }
    }

    /// Short code, as written in layer patterns (`D F M2 F A F`).
    pub fn code(self) -> &'static str {
        match self {
            MixerKind::Attention => "A",
            MixerKind::Mamba2 => "M2",
            MixerKind::DeltaNet => "D",
            MixerKind::GatedDeltaNet => "GD",
        }
    }
}

impl OpKind {
    pub fn code(self) -> &'static str {
        match self {
            OpKind::Mixer(m) => m.code(),
            OpKind::Ffn => "F",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Mixer(m) => m.name(),
            OpKind::Ffn => "ffn",
        }
    }

    pub fn is_mixer(self) -> bool {
        matches!(self, OpKind::Mixer(_))
    }
}

/// The names an operator may be written with, for error messages.
pub const OPERATOR_NAMES: &str = "attention (A), mamba2 (M2), deltanet (D), gated_deltanet (GD), ffn (F)";

/// An operator name that does not fit where it was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    #[error("unknown operator `{0}`; expected one of {OPERATOR_NAMES}")]
    Unknown(String),
    #[error("`{0}` is an FFN, not a token mixer; expected attention, mamba2, deltanet or gated_deltanet")]
    NotAMixer(String),
}

impl FromStr for OpKind {
    type Err = OperatorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let kind = match s.trim().to_ascii_lowercase().as_str() {
            "a" | "attn" | "attention" => OpKind::Mixer(MixerKind::Attention),
            "m2" | "mamba2" => OpKind::Mixer(MixerKind::Mamba2),
            "d" | "deltanet" => OpKind::Mixer(MixerKind::DeltaNet),
            "gd" | "gated_deltanet" | "gateddeltanet" => OpKind::Mixer(MixerKind::GatedDeltaNet),
            "f" | "ffn" => OpKind::Ffn,
            _ => return Err(OperatorError::Unknown(s.to_owned())),
        };
        Ok(kind)
    }
}

impl FromStr for MixerKind {
    type Err = OperatorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<OpKind>()? {
            OpKind::Mixer(m) => Ok(m),
            OpKind::Ffn => Err(OperatorError::NotAMixer(s.to_owned())),
        }
    }
}

impl fmt::Display for MixerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

// Mixers serialise by long name (genomes read as words); operators in a layer list by short
// code (patterns read as `D F M2 F`). Both accept either spelling.
impl Serialize for MixerKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for MixerKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for OpKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for OpKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Grouped-query attention with RoPE, full or sliding-window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttentionSpec {
    pub num_heads: u32,
    pub num_kv_heads: u32,
    pub head_dim: u32,
    /// Recent keys/values kept per sequence, besides the model's meta tokens, which every query
    /// sees; `None` is full attention (the cache grows with context).
    pub sliding_window: Option<u32>,
    pub rope_theta: f64,
}

/// Mamba2 (SSD): input projection to `[z, x, B, C, dt]`, causal depthwise conv on `[x, B, C]`,
/// selective scan with a scalar decay per head, gated RMSNorm, output projection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mamba2Spec {
    /// Inner width `expand · hidden`; equals `num_heads · head_dim`.
    pub d_inner: u32,
    pub num_heads: u32,
    pub head_dim: u32,
    /// State size N of B and C.
    pub state_size: u32,
    /// Groups sharing one B and C (1 in Nemotron-Flash).
    pub groups: u32,
    pub conv_kernel: u32,
}

/// DeltaNet (and, with a decay gate and output gate, Gated DeltaNet): q/k/v projections with
/// short causal convs, a per-head write strength β, an L2-normalised delta-rule state
/// `S ∈ R^{head_dim × head_dim}` per head, a per-head output RMSNorm and an output projection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeltaNetSpec {
    pub num_heads: u32,
    pub head_dim: u32,
    pub conv_kernel: u32,
}

/// SwiGLU FFN: `down(silu(gate(x)) · up(x))`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FfnSpec {
    pub intermediate_size: u32,
}

/// One fully dimensioned pre-norm residual sub-layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LayerSpec {
    Attention(AttentionSpec),
    Mamba2(Mamba2Spec),
    #[serde(rename = "deltanet")]
    DeltaNet(DeltaNetSpec),
    #[serde(rename = "gated_deltanet")]
    GatedDeltaNet(DeltaNetSpec),
    Ffn(FfnSpec),
}

/// What a layer keeps per sequence while decoding, in elements (multiply by dtype bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DecodeState {
    /// Attention key/value cache.
    pub kv_cache: u64,
    /// Recurrent state of Mamba2 / DeltaNet (constant in the context length).
    pub recurrent: u64,
    /// Last `kernel - 1` inputs of the short causal convolutions.
    pub conv: u64,
}

impl DecodeState {
    pub fn total(&self) -> u64 {
        self.kv_cache.saturating_add(self.recurrent).saturating_add(self.conv)
    }
}

impl std::ops::AddAssign for DecodeState {
    fn add_assign(&mut self, o: Self) {
        self.kv_cache = self.kv_cache.saturating_add(o.kv_cache);
        self.recurrent = self.recurrent.saturating_add(o.recurrent);
        self.conv = self.conv.saturating_add(o.conv);
    }
}

impl LayerSpec {
    pub fn kind(&self) -> OpKind {
        match self {
            LayerSpec::Attention(_) => OpKind::Mixer(MixerKind::Attention),
            LayerSpec::Mamba2(_) => OpKind::Mixer(MixerKind::Mamba2),
            LayerSpec::DeltaNet(_) => OpKind::Mixer(MixerKind::DeltaNet),
            LayerSpec::GatedDeltaNet(_) => OpKind::Mixer(MixerKind::GatedDeltaNet),
            LayerSpec::Ffn(_) => OpKind::Ffn,
        }
    }

    /// Parameters of this sub-layer at model width `hidden`, its pre-norm weight included.
    pub fn params(&self, hidden: u32) -> u64 {
        let h = u64::from(hidden);
        let norm = h;
        norm + match self {
            LayerSpec::Attention(a) => {
                let (nh, nkv, d) = (u64::from(a.num_heads), u64::from(a.num_kv_heads), u64::from(a.head_dim));
                // q, k, v, o
                h * nh * d + 2 * h * nkv * d + nh * d * h
            }
            LayerSpec::Mamba2(m) => {
                let (di, nh, n, g, k) = (
                    u64::from(m.d_inner),
                    u64::from(m.num_heads),
                    u64::from(m.state_size),
                    u64::from(m.groups),
                    u64::from(m.conv_kernel),
                );
                let in_proj = h * (2 * di + 2 * g * n + nh);
                let conv_dim = di + 2 * g * n;
                let conv = conv_dim * k + conv_dim; // weight + bias
                let per_head = 3 * nh; // dt_bias, A_log, D
                let gated_norm = di;
                let out_proj = di * h;
                in_proj + conv + per_head + gated_norm + out_proj
            }
            LayerSpec::DeltaNet(d) => deltanet_params(h, d, false),
            LayerSpec::GatedDeltaNet(d) => deltanet_params(h, d, true),
            LayerSpec::Ffn(f) => 3 * h * u64::from(f.intermediate_size),
        }
    }

    /// Per-sequence decoding state, in elements, after the model's `meta_tokens` and `context`
    /// tokens. A sliding window caches the meta tokens too: every query sees them, however far
    /// the window has slid past.
    pub fn decode_state(&self, meta_tokens: u64, context: u64) -> DecodeState {
        match self {
            LayerSpec::Attention(a) => {
                let recent = a.sliding_window.map_or(context, |w| context.min(u64::from(w)));
                let kept = meta_tokens.saturating_add(recent);
                DecodeState {
                    kv_cache: (2 * u64::from(a.num_kv_heads) * u64::from(a.head_dim)).saturating_mul(kept),
                    ..Default::default()
                }
            }
            LayerSpec::Mamba2(m) => DecodeState {
                recurrent: u64::from(m.num_heads) * u64::from(m.head_dim) * u64::from(m.state_size),
                conv: (u64::from(m.d_inner) + 2 * u64::from(m.groups) * u64::from(m.state_size))
                    * u64::from(m.conv_kernel.saturating_sub(1)),
                ..Default::default()
            },
            LayerSpec::DeltaNet(d) | LayerSpec::GatedDeltaNet(d) => {
                let width = u64::from(d.num_heads) * u64::from(d.head_dim);
                DecodeState {
                    recurrent: u64::from(d.num_heads) * u64::from(d.head_dim) * u64::from(d.head_dim),
                    // q, k and v each have their own short conv.
                    conv: 3 * width * u64::from(d.conv_kernel.saturating_sub(1)),
                    ..Default::default()
                }
            }
            LayerSpec::Ffn(_) => DecodeState::default(),
        }
    }
}

fn deltanet_params(h: u64, d: &DeltaNetSpec, gated: bool) -> u64 {
    let (nh, hd, k) = (u64::from(d.num_heads), u64::from(d.head_dim), u64::from(d.conv_kernel));
    let width = nh * hd;
    let qkv = 3 * h * width;
    let beta = h * nh;
    let convs = 3 * width * k;
    let o_norm = hd;
    let o_proj = width * h;
    let gate = if gated {
        // decay projection `a_proj`, per-head A_log and dt_bias, output gate `g_proj`
        h * nh + 2 * nh + h * width
    } else {
        0
    };
    qkv + beta + convs + o_norm + o_proj + gate
}
