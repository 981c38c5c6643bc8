//! Operator shapes: what one LUT row measures, and its canonical key string.
//!
//! An [`OpShape`] names an operator kind and every dimension that changes its per-token decode
//! cost. Sub-layer shapes (`attention`, `mamba2`, `deltanet`, `gated_deltanet`, `ffn`) measure
//! one pre-norm residual sub-layer, `x + op(rmsnorm(x))`, for one decode step; `embed_head`
//! measures what a step costs outside the layers (token embedding, final norm, logits and the
//! greedy pick). Attention also carries the context length (keys attended), because its step cost
//! grows with the cache; every other operator's step cost is flat in the context.
//!
//! The key string (`ffn:hidden=128,intermediate=384`) is the store's `op_key` column: it is
//! canonical (fixed field order) and parses back to the same shape.

use std::fmt;
use std::str::FromStr;

use search_space::{LayerSpec, ModelSpec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DeploymentSetting;

/// One operator at fixed dimensions: a LUT row's operator part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpShape {
    /// One decode step of grouped-query attention attending over `context` keys (the new token
    /// included; a sliding window caps it before it gets here).
    Attention {
        hidden: u32,
        heads: u32,
        kv_heads: u32,
        head_dim: u32,
        context: u32,
    },
    Mamba2 {
        hidden: u32,
        d_inner: u32,
        heads: u32,
        head_dim: u32,
        state: u32,
        groups: u32,
        conv: u32,
    },
    DeltaNet {
        hidden: u32,
        heads: u32,
        head_dim: u32,
        conv: u32,
    },
    GatedDeltaNet {
        hidden: u32,
        heads: u32,
        head_dim: u32,
        conv: u32,
    },
    Ffn {
        hidden: u32,
        intermediate: u32,
    },
    /// Embedding lookup, final RMSNorm, output head and the greedy pick, once per step.
    EmbedHead {
        hidden: u32,
        vocab: u32,
        tied: bool,
    },
}

/// A key string that does not parse; `field` names the part that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid operator key `{input}`: {field}: {reason}")]
pub struct ShapeError {
    pub input: String,
    pub field: String,
    pub reason: String,
}

impl OpShape {
    /// The kind's name, the part of the key before `:`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            OpShape::Attention { .. } => "attention",
            OpShape::Mamba2 { .. } => "mamba2",
            OpShape::DeltaNet { .. } => "deltanet",
            OpShape::GatedDeltaNet { .. } => "gated_deltanet",
            OpShape::Ffn { .. } => "ffn",
            OpShape::EmbedHead { .. } => "embed_head",
        }
    }

    pub fn hidden(&self) -> u32 {
        match *self {
            OpShape::Attention { hidden, .. }
            | OpShape::Mamba2 { hidden, .. }
            | OpShape::DeltaNet { hidden, .. }
            | OpShape::GatedDeltaNet { hidden, .. }
            | OpShape::Ffn { hidden, .. }
            | OpShape::EmbedHead { hidden, .. } => hidden,
        }
    }

    /// Context length of an attention shape; `None` for shapes whose cost is flat in it.
    pub fn context(&self) -> Option<u32> {
        match *self {
            OpShape::Attention { context, .. } => Some(context),
            _ => None,
        }
    }

    /// The same shape with the context set to 0: the key of an attention cost curve.
    pub(crate) fn without_context(self) -> Self {
        match self {
            OpShape::Attention { hidden, heads, kv_heads, head_dim, .. } => {
                OpShape::Attention { hidden, heads, kv_heads, head_dim, context: 0 }
            }
            other => other,
        }
    }

    /// The dimensions that do not follow the hidden size: shapes of one family differ only in
    /// width, so their latencies can be interpolated over [`OpShape::size`].
    pub(crate) fn family(&self) -> Family {
        match *self {
            OpShape::Attention { heads, kv_heads, .. } => Family(0, heads, kv_heads, 0, 0),
            OpShape::Mamba2 { hidden, d_inner, head_dim, state, groups, conv, .. } => {
                Family(1, d_inner / hidden.max(1), head_dim, state, groups << 8 | conv)
            }
            OpShape::DeltaNet { heads, conv, .. } => Family(2, heads, conv, 0, 0),
            OpShape::GatedDeltaNet { heads, conv, .. } => Family(3, heads, conv, 0, 0),
            OpShape::Ffn { .. } => Family(4, 0, 0, 0, 0),
            OpShape::EmbedHead { vocab, tied, .. } => Family(5, vocab, u32::from(tied), 0, 0),
        }
    }

    /// The coordinate latencies are interpolated along within a family: the weights one step
    /// reads (parameter count without norms). Decoding at small batch is bound by reading
    /// weights, so latency is close to affine in it.
    pub(crate) fn size(&self) -> f64 {
        let f = f64::from;
        match *self {
            OpShape::Attention { hidden, heads, kv_heads, head_dim, .. } => {
                f(hidden) * f(head_dim) * (2.0 * f(heads) + 2.0 * f(kv_heads))
            }
            OpShape::Mamba2 { hidden, d_inner, heads, state, groups, .. } => {
                f(hidden) * (3.0 * f(d_inner) + 2.0 * f(groups) * f(state) + f(heads))
            }
            OpShape::DeltaNet { hidden, heads, head_dim, .. } => {
                f(hidden) * (4.0 * f(heads) * f(head_dim) + f(heads))
            }
            OpShape::GatedDeltaNet { hidden, heads, head_dim, .. } => {
                f(hidden) * (5.0 * f(heads) * f(head_dim) + 2.0 * f(heads))
            }
            OpShape::Ffn { hidden, intermediate } => 3.0 * f(hidden) * f(intermediate),
            OpShape::EmbedHead { hidden, vocab, .. } => f(hidden) * f(vocab),
        }
    }

    /// The shape of one sub-layer at model width `hidden`; attention at `context` keys.
    pub fn of_layer(layer: &LayerSpec, hidden: u32, context: u32) -> Self {
        match layer {
            LayerSpec::Attention(a) => OpShape::Attention {
                hidden,
                heads: a.num_heads,
                kv_heads: a.num_kv_heads,
                head_dim: a.head_dim,
                context,
            },
            LayerSpec::Mamba2(m) => OpShape::Mamba2 {
                hidden,
                d_inner: m.d_inner,
                heads: m.num_heads,
                head_dim: m.head_dim,
                state: m.state_size,
                groups: m.groups,
                conv: m.conv_kernel,
            },
            LayerSpec::DeltaNet(d) => {
                OpShape::DeltaNet { hidden, heads: d.num_heads, head_dim: d.head_dim, conv: d.conv_kernel }
            }
            LayerSpec::GatedDeltaNet(d) => OpShape::GatedDeltaNet {
                hidden,
                heads: d.num_heads,
                head_dim: d.head_dim,
                conv: d.conv_kernel,
            },
            LayerSpec::Ffn(f) => OpShape::Ffn { hidden, intermediate: f.intermediate_size },
        }
    }

    /// The embedding/head shape of a model.
    pub fn embed_head(model: &ModelSpec) -> Self {
        OpShape::EmbedHead { hidden: model.hidden_size, vocab: model.vocab_size, tied: model.tied_embeddings }
    }

    fn fields(&self) -> Vec<(&'static str, u32)> {
        match *self {
            OpShape::Attention { hidden, heads, kv_heads, head_dim, context } => vec![
                ("hidden", hidden),
                ("heads", heads),
                ("kv_heads", kv_heads),
                ("head_dim", head_dim),
                ("context", context),
            ],
            OpShape::Mamba2 { hidden, d_inner, heads, head_dim, state, groups, conv } => vec![
                ("hidden", hidden),
                ("d_inner", d_inner),
                ("heads", heads),
                ("head_dim", head_dim),
                ("state", state),
                ("groups", groups),
                ("conv", conv),
            ],
            OpShape::DeltaNet { hidden, heads, head_dim, conv }
            | OpShape::GatedDeltaNet { hidden, heads, head_dim, conv } => {
                vec![("hidden", hidden), ("heads", heads), ("head_dim", head_dim), ("conv", conv)]
            }
            OpShape::Ffn { hidden, intermediate } => vec![("hidden", hidden), ("intermediate", intermediate)],
            OpShape::EmbedHead { hidden, vocab, tied } => {
                vec![("hidden", hidden), ("vocab", vocab), ("tied", u32::from(tied))]
            }
        }
    }
}

/// The non-width dimensions of a shape, packed: kind tag and up to four values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Family(u8, u32, u32, u32, u32);

impl fmt::Display for OpShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind_name())?;
        for (i, (name, value)) in self.fields().into_iter().enumerate() {
            write!(f, "{}{name}={value}", if i == 0 { ':' } else { ',' })?;
        }
        Ok(())
    }
}

impl FromStr for OpShape {
    type Err = ShapeError;

    /// Parses the canonical key; fields may come in any order, each exactly once.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err =
            |field: &str, reason: String| ShapeError { input: s.to_owned(), field: field.to_owned(), reason };
        let (kind, rest) = s.trim().split_once(':').ok_or_else(|| {
            err("kind", "expected KIND:NAME=VALUE,... (e.g. ffn:hidden=128,intermediate=384)".into())
        })?;
        let names: &[&str] = match kind {
            "attention" => &["hidden", "heads", "kv_heads", "head_dim", "context"],
            "mamba2" => &["hidden", "d_inner", "heads", "head_dim", "state", "groups", "conv"],
            "deltanet" | "gated_deltanet" => &["hidden", "heads", "head_dim", "conv"],
            "ffn" => &["hidden", "intermediate"],
            "embed_head" => &["hidden", "vocab", "tied"],
            other => {
                return Err(err(
                    "kind",
                    format!(
                        "unknown operator `{other}`; expected attention, mamba2, deltanet, gated_deltanet, \
                         ffn or embed_head"
                    ),
                ));
            }
        };
        let mut values: Vec<Option<u32>> = vec![None; names.len()];
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) =
                part.split_once('=').ok_or_else(|| err(part, "expected NAME=VALUE".to_owned()))?;
            let slot = names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| err(name, format!("not a field of {kind}; expected {}", names.join(", "))))?;
            if values[slot].is_some() {
                return Err(err(name, "given twice".into()));
            }
            let v = value
                .parse::<u32>()
                .map_err(|_| err(name, format!("must be a whole number, got `{value}`")))?;
            values[slot] = Some(v);
        }
        let mut got = [0u32; 7];
        for (i, name) in names.iter().enumerate() {
            got[i] = values[i].ok_or_else(|| err(name, "missing".into()))?;
        }
        let shape = match kind {
            "attention" => OpShape::Attention {
                hidden: got[0],
                heads: got[1],
                kv_heads: got[2],
                head_dim: got[3],
                context: got[4],
            },
            "mamba2" => OpShape::Mamba2 {
                hidden: got[0],
                d_inner: got[1],
                heads: got[2],
                head_dim: got[3],
                state: got[4],
                groups: got[5],
                conv: got[6],
            },
            "deltanet" => OpShape::DeltaNet { hidden: got[0], heads: got[1], head_dim: got[2], conv: got[3] },
            "gated_deltanet" => {
                OpShape::GatedDeltaNet { hidden: got[0], heads: got[1], head_dim: got[2], conv: got[3] }
            }
            "ffn" => OpShape::Ffn { hidden: got[0], intermediate: got[1] },
            _ => {
                if got[2] > 1 {
                    return Err(err("tied", format!("must be 0 or 1, got {}", got[2])));
                }
                OpShape::EmbedHead { hidden: got[0], vocab: got[1], tied: got[2] == 1 }
            }
        };
        if got[0] == 0 {
            return Err(err("hidden", "must be at least 1".into()));
        }
        Ok(shape)
    }
}

impl Serialize for OpShape {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OpShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Positions attended while decoding `model` under `setting`: the decode steps that follow the
/// prompt (meta tokens first) attend over `first..=last` keys, the new token included.
pub fn decode_contexts(model: &ModelSpec, setting: &DeploymentSetting) -> (u32, u32) {
    let start = model.meta_tokens.saturating_add(setting.prompt_tokens);
    (start.saturating_add(1), start.saturating_add(setting.generated_tokens))
}

/// How many context lengths attention is profiled at across the decode range.
pub const CONTEXT_POINTS: u32 = 5;

/// The context lengths attention is profiled at for a decode range `first..=last` under a
/// window: evenly spaced over the keys actually attended (the window caps them).
pub fn context_grid(first: u32, last: u32, window: Option<u32>) -> Vec<u32> {
    let cap = |c: u32| window.map_or(c, |w| c.min(w));
    let (lo, hi) = (cap(first), cap(last));
    let mut grid: Vec<u32> = (0..CONTEXT_POINTS)
        .map(|i| {
            let t = f64::from(i) / f64::from(CONTEXT_POINTS - 1);
            (f64::from(lo) + t * f64::from(hi - lo)).round() as u32
        })
        .collect();
    grid.dedup();
    grid
}

/// Every operator shape decoding `model` under `setting` needs: each distinct sub-layer shape
/// (attention at the context grid of its window), then the embedding/head. A profiler that
/// measures exactly these can score the model without interpolation.
pub fn shapes_for(model: &ModelSpec, setting: &DeploymentSetting) -> Vec<OpShape> {
    let (first, last) = decode_contexts(model, setting);
    let mut out: Vec<OpShape> = Vec::new();
    for layer in &model.layers {
        let contexts = match layer {
            LayerSpec::Attention(a) => context_grid(first, last, a.sliding_window),
            _ => vec![0],
        };
        for context in contexts {
            let shape = OpShape::of_layer(layer, model.hidden_size, context);
            if !out.contains(&shape) {
                out.push(shape);
            }
        }
    }
    out.push(OpShape::embed_head(model));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_key_round_trips_through_its_string() {
        let shapes = [
            OpShape::Attention { hidden: 128, heads: 4, kv_heads: 2, head_dim: 32, context: 321 },
            OpShape::Mamba2 {
                hidden: 128,
                d_inner: 256,
                heads: 8,
                head_dim: 32,
                state: 16,
                groups: 1,
                conv: 4,
            },
            OpShape::DeltaNet { hidden: 128, heads: 4, head_dim: 32, conv: 4 },
            OpShape::GatedDeltaNet { hidden: 192, heads: 4, head_dim: 48, conv: 4 },
            OpShape::Ffn { hidden: 128, intermediate: 384 },
            OpShape::EmbedHead { hidden: 128, vocab: 256, tied: true },
        ];
        for shape in shapes {
            let key = shape.to_string();
            assert_eq!(key.parse::<OpShape>().unwrap(), shape, "{key}");
        }
        assert_eq!(shapes[4].to_string(), "ffn:hidden=128,intermediate=384");
        assert_eq!(
            "ffn:intermediate=384, hidden=128".parse::<OpShape>().unwrap(),
            shapes[4],
            "fields in any order"
        );
    }

    #[test]
    fn bad_keys_name_the_field() {
        let field = |s: &str| s.parse::<OpShape>().unwrap_err().field;
        assert_eq!(field("ffn"), "kind");
        assert_eq!(field("conv:hidden=1"), "kind");
        assert_eq!(field("ffn:hidden=128"), "intermediate");
        assert_eq!(field("ffn:hidden=12x,intermediate=3"), "hidden");
        assert_eq!(field("ffn:hidden=128,intermediate=384,heads=2"), "heads");
        assert_eq!(field("ffn:hidden=1,hidden=2,intermediate=3"), "hidden");
        assert_eq!(field("embed_head:hidden=1,vocab=2,tied=2"), "tied");
        assert_eq!(field("ffn:hidden=0,intermediate=3"), "hidden");
    }

    #[test]
    fn the_context_grid_spans_the_decode_range_and_stops_at_the_window() {
        assert_eq!(context_grid(69, 324, None), [69, 133, 197, 260, 324]);
        assert_eq!(context_grid(69, 324, Some(100)), [69, 77, 85, 92, 100]);
        assert_eq!(context_grid(69, 324, Some(16)), [16]);
    }
}
