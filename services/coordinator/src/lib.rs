//! Frontier's coordinator: it owns the database and the trial queue, and (as it grows) the HTTP
//! API, the search engines and the web UI.
//!
//! # Layout
//!
//! - [`store`]: the only module that speaks SQL. It opens SQLite or Postgres from a URL, runs the
//!   migrations, and implements the leased trial queue that workers pull proxy trainings from;
//!   `store_lut` adds the latency-table statements (bulk entries, tables, calibrations).
//!
//! # Runtime model
//!
//! Everything is async on tokio. Loops are written as step functions (for example
//! [`Store::reclaim_expired`]) that take the current time from the caller, so tests drive them
//! with a fake clock and the service runs them from a timer.

pub mod store;
pub mod store_lut;

pub use store::{Backend, Store, StoreError, StoreOptions};
