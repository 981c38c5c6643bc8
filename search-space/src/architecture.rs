//! An architecture as users write it: model settings plus either a genome or a free layer
//! pattern, and its expansion into a [`ModelSpec`].
//!
//! The JSON document (Frontier's own versioned format) is
//! `{"format": "frontier/architecture", "version": 1, "name": ..., "model": {...}, "genome": {...}}`
//! or the same with `"layers": ["D", "F", "M2", "F"]` instead of `"genome"`. It round-trips exactly.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ParseError, ValidationErrors, from_json_str};
use crate::genome::{Genome, MAX_GENOME_OPERATORS};
use crate::model::{ModelSettings, ModelSpec};
use crate::ops::{LayerSpec, OpKind};

pub const ARCHITECTURE_FORMAT: &str = "frontier/architecture";
pub const ARCHITECTURE_VERSION: u32 = 1;

/// How the layers are given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// The paper's stages of repeated block types; what evolution mutates.
    Genome(Genome),
    /// A free operator pattern, e.g. a published design written layer by layer.
    Layers(Vec<OpKind>),
}

/// Model settings plus a topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "ArchitectureDoc", into = "ArchitectureDoc")]
pub struct Architecture {
    pub name: Option<String>,
    pub model: ModelSettings,
    pub topology: Topology,
}

/// The wire form of [`Architecture`]: the two topologies are sibling optional fields so a
/// document reads flat, and exactly one must be present.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Architecture",
    description = "Model settings plus exactly one topology: `genome` (stages of block types) or `layers` (operator codes).",
    extend("oneOf" = [{ "required": ["genome"] }, { "required": ["layers"] }])
)]
struct ArchitectureDoc {
    #[serde(default = "default_format")]
    #[schemars(extend("const" = ARCHITECTURE_FORMAT))]
    format: String,
    #[serde(default = "default_version")]
    #[schemars(extend("const" = ARCHITECTURE_VERSION))]
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    model: ModelSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    genome: Option<Genome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layers: Option<Vec<OpKind>>,
}

fn default_format() -> String {
    ARCHITECTURE_FORMAT.to_owned()
}

fn default_version() -> u32 {
    ARCHITECTURE_VERSION
}

impl TryFrom<ArchitectureDoc> for Architecture {
    type Error = String;

    fn try_from(doc: ArchitectureDoc) -> Result<Self, Self::Error> {
        if doc.format != ARCHITECTURE_FORMAT {
            return Err(format!("format must be `{ARCHITECTURE_FORMAT}`, got `{}`", doc.format));
        }
        if doc.version != ARCHITECTURE_VERSION {
            return Err(format!(
                "version {} is not supported; this build reads version {ARCHITECTURE_VERSION}",
                doc.version
            ));
        }
        let topology = match (doc.genome, doc.layers) {
            (Some(g), None) => Topology::Genome(g),
            (None, Some(l)) => Topology::Layers(l),
            (Some(_), Some(_)) => return Err("give either `genome` or `layers`, not both".into()),
            (None, None) => return Err("missing the topology: give `genome` or `layers`".into()),
        };
        Ok(Architecture { name: doc.name, model: doc.model, topology })
    }
}

impl From<Architecture> for ArchitectureDoc {
    fn from(a: Architecture) -> Self {
        let (genome, layers) = match a.topology {
            Topology::Genome(g) => (Some(g), None),
            Topology::Layers(l) => (None, Some(l)),
        };
        ArchitectureDoc {
            format: ARCHITECTURE_FORMAT.to_owned(),
            version: ARCHITECTURE_VERSION,
            name: a.name,
            model: a.model,
            genome,
            layers,
        }
    }
}

impl Architecture {
    pub fn from_genome(model: ModelSettings, genome: Genome) -> Self {
        Self { name: None, model, topology: Topology::Genome(genome) }
    }

    pub fn from_layers(model: ModelSettings, layers: Vec<OpKind>) -> Self {
        Self { name: None, model, topology: Topology::Layers(layers) }
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Reads a document, naming the field path of any problem, and validates it fully.
    pub fn from_json(text: &str) -> Result<Self, ParseError> {
        let arch: Architecture = from_json_str(text)?;
        arch.expand()?;
        Ok(arch)
    }

    /// The document, pretty-printed.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The flat operator list.
    pub fn operators(&self) -> Vec<OpKind> {
        match &self.topology {
            Topology::Genome(g) => g.operators(),
            Topology::Layers(l) => l.clone(),
        }
    }

    /// Validates everything and dimensions every layer. Errors carry document paths
    /// (`model.attention.num_kv_heads`, `genome.stages[1].block.mixers[0]`, `layers[4]`).
    pub fn expand(&self) -> Result<ModelSpec, ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if let Err(e) = self.model.validate() {
            errs.extend_under("model", e);
            return Err(errs);
        }
        // Where each operator kind is first asked for, so a dimension clash is reported once,
        // at the field that introduced the operator.
        let mut first_use: BTreeMap<OpKind, String> = BTreeMap::new();
        match &self.topology {
            Topology::Genome(g) => {
                if let Err(e) = g.validate() {
                    errs.extend_under("genome", e);
                    return Err(errs);
                }
                for (i, stage) in g.stages.iter().enumerate() {
                    for (j, m) in stage.block.mixers.iter().enumerate() {
                        first_use
                            .entry(OpKind::Mixer(*m))
                            .or_insert_with(|| format!("genome.stages[{i}].block.mixers[{j}]"));
                    }
                    if stage.block.ffns_per_mixer > 0 {
                        first_use
                            .entry(OpKind::Ffn)
                            .or_insert_with(|| format!("genome.stages[{i}].block.ffns_per_mixer"));
                    }
                }
            }
            Topology::Layers(layers) => {
                if layers.is_empty() {
                    errs.push("layers", "a model needs at least one layer");
                }
                if layers.len() > MAX_GENOME_OPERATORS as usize {
                    errs.push(
                        "layers",
                        format!("{} layers is more than the limit of {MAX_GENOME_OPERATORS}", layers.len()),
                    );
                }
                for (i, op) in layers.iter().enumerate() {
                    first_use.entry(*op).or_insert_with(|| format!("layers[{i}]"));
                }
            }
        }
        let mut dimensioned: BTreeMap<OpKind, LayerSpec> = BTreeMap::new();
        for (op, path) in &first_use {
            match self.model.layer(*op) {
                Ok(spec) => {
                    dimensioned.insert(*op, spec);
                }
                Err(msg) => errs.push(path.clone(), msg),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let layers = self.operators().iter().filter_map(|op| dimensioned.get(op).cloned()).collect();
        Ok(ModelSpec {
            hidden_size: self.model.hidden_size,
            vocab_size: self.model.vocab_size,
            tied_embeddings: self.model.tied_embeddings,
            meta_tokens: self.model.meta_tokens,
            layers,
        })
    }
}

/// A stable identity of an expanded architecture: identical models get the same hash on any
/// machine and in any run, whatever topology they were written with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ArchHash(pub String);

impl std::fmt::Display for ArchHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ModelSpec {
    /// SHA-256 over a domain tag and the model's canonical JSON (fixed field order, shortest
    /// round-trip float printing), truncated to 128 bits as 32 hex digits.
    pub fn canonical_hash(&self) -> ArchHash {
        let mut hasher = Sha256::new();
        hasher.update(b"frontier/model-spec/v1\0");
        // Plain data: serialisation cannot fail.
        hasher.update(serde_json::to_vec(self).unwrap_or_default());
        let digest = hasher.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        ArchHash(hex)
    }
}
