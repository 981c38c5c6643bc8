//! Wire types shared by the coordinator, the worker and the `frontier` client commands.
//!
//! # Layout
//! - [`accuracy`]: per-task accuracy floors and objectives for searches on synthetic tasks.
//! - [`proxy`]: the proxy training budget, and the tokenizer, corpus and checkpoint strings it holds.
//! - [`spec`]: the search spec (JSON over HTTP, TOML or JSON files) and its field-path validation.
//! - [`wire`]: worker protocol messages (register, lease, heartbeat, complete, fail) and the error body.
//!
//! # Runtime model
//! Plain data with serde: no IO, no logic beyond validation. Both services depend on this crate, so a
//! message is defined once.

pub mod accuracy;
pub mod proxy;
pub mod spec;
pub mod target;
pub mod wire;

pub use accuracy::AccuracyGoals;
pub use spec::{Algorithm, Halving, ProxyBudget, RelativeBudget, SearchSpec, SeedDesign, Target, WidthMode};
pub use wire::*;
