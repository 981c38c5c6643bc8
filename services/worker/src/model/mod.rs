//! The model zoo: one file per operator, each generic over the burn backend.
//!
//! Conventions shared by every operator:
//! - activations are `[batch, seq, width]`; a decode step takes `[batch, width]`;
//! - a recurrent operator has a training `forward` over the whole sequence (chunked, never a
//!   per-token loop) and a `step` that advances a caller-owned state by one token; a test
//!   checks that both give the same outputs and that they match a naive reference written from
//!   the equations;
//! - every `XConfig` is built from the matching `search_space` layer spec, so the burn parameter
//!   count equals the closed form there.

pub mod attention;
pub mod chunk;
pub mod conv;
pub mod delta_rule;
pub mod deltanet;
pub mod embedding;
pub mod ffn;
pub mod gated_deltanet;
pub mod init;
pub mod lm;
pub mod mamba2;
pub mod norm;
pub mod param_groups;
pub mod ssd;
pub mod weight_norm;
