//! Frontier's coordinator: the service users and workers talk to.
//!
//! # Layout
//!
//! - [`store`]: the only module that speaks SQL. It opens SQLite or Postgres from a URL, runs the
//!   migrations, and implements the leased trial queue that workers pull proxy trainings from;
//!   one file per concern under `store/` (queue, searches, leaderboard, LUTs, workers, ...).
//! - [`engine`]: the search algorithms (aging evolution, NSGA-II, random; successive halving) as
//!   pure functions of a search's history.
//! - [`search`]: the driver that turns proposals into candidates and trials (widths and latency
//!   from [`latency`]) and results back into history.
//! - [`app`]: the application layer: state, configuration, access (tokens, sign-in sessions) and
//!   the operations both front ends serve, returning the domain error [`app::AppError`].
//! - [`http`]: the axum API; [`openapi`] describes it; [`pareto`] computes the front it serves.
//! - [`ui`]: the web UI under `/ui`. `http` and `ui` are siblings over [`app`] that only
//!   translate (JSON and status codes, or HTML pages); neither imports the other, and
//!   [`routes`] serves them together with the request limits.
//! - [`server`]: the bound server and its background loop (lease sweeper, search stepping).
//!
//! # Runtime model
//!
//! Everything is async on tokio. Loops are written as step functions (for example
//! [`Store::reclaim_expired`], [`search::SearchDriver::step`]) that tests drive directly and the
//! service runs from a timer. The store's queue functions take the current time from their caller
//! (`now_ms`); the service passes the one wall clock, [`clock::clock_ms`].
//! The coordinator never links burn: workers train, over HTTP.

pub mod app;
pub mod clock;
pub mod engine;
pub mod http;
pub mod latency;
pub mod openapi;
pub mod pareto;
pub mod routes;
pub mod scaling;
pub mod search;
pub mod server;
pub mod store;
pub mod tabular;
pub mod ui;

pub use store::{Backend, Store, StoreError, StoreOptions};
