//! The search space of hybrid small language models: one exact, validated, pure representation
//! of an architecture that every other part of Frontier consumes.
//!
//! # Layout
//! - [`ops`]: operator kinds and the fully dimensioned [`LayerSpec`] with per-layer parameter and
//!   decoding-state counts.
//! - [`model`]: [`ModelSettings`] (how each operator is dimensioned at a hidden size) and the
//!   expanded [`ModelSpec`] with its parameter count and decode memory.
//! - [`genome`]: the paper's genome — stages of repeated block types with mixer and FFN ratios.
//! - [`architecture`]: settings plus a genome or a free layer pattern, Frontier's versioned JSON
//!   document, expansion with field-path validation, and the canonical hash.
//! - [`space`]: search-space bounds, seeded sampling and the four mutations.
//! - [`presets`]: Nemotron-Flash-1B/3B, pure baselines, tiny models.
//! - [`schema`]: JSON Schemas of the word-valued types (mixer kinds, operators, ratios).
//! - [`nemotron_flash`]: the Nemotron-Flash Hugging Face `config.json`, export and import.
//!
//! # Runtime model
//! Pure functions over plain data: no IO, no async, no database, no burn. Randomness comes in
//! through the caller's RNG. Everything here is cheap enough to call per candidate.

pub mod architecture;
pub mod error;
pub mod genome;
pub mod model;
pub mod nemotron_flash;
pub mod ops;
pub mod presets;
pub mod schema;
pub mod space;

pub use architecture::{ArchHash, Architecture, Topology};
pub use error::{FieldError, ParseError, ValidationErrors};
pub use genome::{BlockType, Genome, MixerRatio, Stage};
pub use model::{DecodeMemory, Dtype, ModelSettings, ModelSpec, ParamCount};
pub use ops::{LayerSpec, MixerKind, OpKind};
pub use space::{Mutation, MutationError, MutationKind, SearchSpace};
