//! Frontier's coordinator: it owns the database and the trial queue, and (as it grows) the HTTP
//! API, the search engines and the web UI.
//!
//! # Layout
//!
//! - [`engine`]: the search algorithms (aging evolution, NSGA-II, random) and successive
//!   halving, as pure functions of what the search has evaluated so far.
//! - [`store`]: the only module that speaks SQL. It opens SQLite or Postgres from a URL, runs the
//!   migrations, and implements the leased trial queue that workers pull proxy trainings from.
//!
//! # Runtime model
//!
//! Everything is async on tokio. Loops are written as step functions (for example
//! [`Store::reclaim_expired`]) that take the current time from the caller, so tests drive them
//! with a fake clock and the service runs them from a timer.

pub mod engine;
pub mod store;

pub use store::{Backend, Store, StoreError, StoreOptions};
