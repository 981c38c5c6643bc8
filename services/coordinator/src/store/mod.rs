//! The store: every SQL statement of Frontier, over SQLite or Postgres.
//!
//! # Backends
//!
//! The storage URL chooses the backend: `sqlite://PATH` (the embedded default; the file is created
//! when missing and runs in WAL mode with a busy timeout) or `postgres://...` (a shared service).
//! Both go through one [`sqlx::AnyPool`], so almost every statement is one SQL text that both
//! backends accept (`$N` parameters, `RETURNING`, `ON CONFLICT`); the few that differ match on
//! [`Backend`]. Columns are typed so the Any driver reads them the same way on both: integers are
//! 64-bit, timestamps are milliseconds since the Unix epoch (`*_ms`), JSON is text.
//! [`Store::connect`] runs the migrations of `migrations/<backend>/` before returning.
//!
//! ## Nullable reals
//!
//! Statements that bind an `Option<f64>` are not kept prepared (`.persistent(false)`). sqlx 0.8's
//! `Any` driver sends a missing `f64` as a `real` (float4) NULL; a Postgres statement prepared with
//! one keeps that parameter type, and a later `f64` on the same connection is refused ("incorrect
//! binary data format"): one diverged result would make the next completed one fail. Prepared
//! afresh, every parameter is typed by the value it is given.
//!
//! # The trial queue
//!
//! Trials move `queued → leased → done | diverged`, or `leased → failed` once their attempts are
//! spent. The queue follows the lease model of the `underway` crate:
//!
//! - [`Store::lease_trial`] claims the oldest queued trial in one statement, increments its
//!   `attempt`, and hands out a fresh random lease token that expires at `now + ttl`.
//! - [`Store::heartbeat`] extends the lease while the worker still holds it.
//! - [`Store::complete_trial`] records the result.
//! - [`Store::reclaim_expired`] re-queues trials whose lease expired while attempts remain, and
//!   fails the rest.
//!
//! Heartbeats and results are **fenced** by the lease token: once a lease has been reclaimed its
//! token no longer matches, so a worker that was presumed dead gets [`StoreError::StaleLease`] and
//! changes nothing. Time is passed in by the caller (`now_ms`), which makes every queue function a
//! step that tests drive with a fake clock; the coordinator's handlers, driver and background loop
//! pass the wall clock, [`crate::clock::clock_ms`]. That holds for every state change of a trial,
//! of the candidate it scores and of its search (enqueueing, promoting, recording a generation or
//! a sweep, setting a status, cancelling); the store reads the clock itself only to stamp records
//! it creates (devices, latency entries, calibrations, fits, searches, single candidates).
//!
//! # Layout
//!
//! This file opens the store (URL, pool, migrations). Every other concern is an `impl Store` of
//! its own file: `rows.rs` (the row types, column lists and their mapping from SQL rows),
//! `queue.rs` (the only statements that change a trial's state), `searches.rs` (searches,
//! candidates, generations, sweeps, status, cancellation, progress), `leaderboard.rs`, `lut.rs`
//! (devices and latency tables), `workers.rs`, `scaling.rs` (scaling-law fits), `ui.rs` (the
//! plots' narrow reads) and `bench_seed.rs` (synthetic rows for the benchmarks). Every public type
//! is re-exported here, so callers name `store::X` whichever file defines it.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Executor};

// First, so that its column-list macros are in scope in the files declared after it.
#[macro_use]
mod rows;
mod bench_seed;
mod leaderboard;
mod lut;
mod queue;
mod scaling;
mod searches;
mod ui;
mod workers;

pub use leaderboard::{CursorValue, LeaderboardQuery, SortKey};
pub use lut::{LutCalibrationRow, LutTableRow};
pub use rows::{
    CandidateRow, CandidateStatus, DeviceRow, Lease, LutEntryRow, MemberRow, NewCandidate, NewDevice,
    NewLutEntry, NewMember, SearchRow, TrialEventRow, TrialResult, TrialRow, TrialState,
};
pub use scaling::ScalingFitRow;
pub use searches::SearchProgress;
pub use ui::{Evaluation, PlotPoint};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Applied to every SQLite connection. Foreign keys are per connection in SQLite; WAL lets readers
/// run while one writer commits; the busy timeout makes concurrent writers wait for each other
/// instead of failing with `SQLITE_BUSY`.
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL;";

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL has no `scheme://` prefix. The URL itself is never echoed: it may hold a password.
    #[error("storage URL has no scheme: expected `sqlite://PATH` or `postgres://...`")]
    MissingScheme,
    /// The URL's scheme names a backend Frontier does not support.
    #[error("unsupported storage URL scheme `{scheme}`: expected `sqlite://PATH` or `postgres://...`")]
    UnsupportedScheme { scheme: String },
    /// The database could not be opened or reached.
    #[error("cannot connect to the {backend} store")]
    Connect {
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the {backend} store")]
    Migrate {
        backend: Backend,
        #[source]
        source: MigrateError,
    },
    /// The lease token does not match the trial's current lease: it expired and was reclaimed, or
    /// the trial is no longer leased.
    #[error("lease on trial {trial_id} is stale")]
    StaleLease { trial_id: i64 },
    /// A stored value could not be read back (malformed JSON, unknown trial state).
    #[error("stored data is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The database behind a [`Store`], chosen from the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Reads the backend from a storage URL's scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let (scheme, _) = url.split_once("://").ok_or(StoreError::MissingScheme)?;
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(StoreError::UnsupportedScheme { scheme: scheme.to_owned() }),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "Postgres",
        })
    }
}

/// Pool settings; [`StoreOptions::default`] suits the coordinator.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long connecting (and later, waiting for a free connection) may take before it fails.
    /// Connecting retries while the server refuses, so a database that is still starting up is
    /// waited for up to this long.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_connections: 10, acquire_timeout: Duration::from_secs(10) }
    }
}

/// Handle to the database; cheap to clone (it is a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens the store named by `url` with default pool settings and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &StoreOptions::default()).await
    }

    /// Opens the store named by `url` and brings its schema up to date.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url_creating_file(url),
            Backend::Postgres => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect { backend, source })?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.run(&pool).await.map_err(|source| StoreError::Migrate { backend, source })?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; later calls on any clone of this store fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// sqlx opens SQLite files read-write but will not create them unless asked (`mode=rwc`); the
/// embedded default should just work on a fresh machine.
fn sqlite_url_creating_file(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}
