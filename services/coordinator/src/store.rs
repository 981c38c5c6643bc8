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
//! step that tests drive with a fake clock; the coordinator's driver passes the wall clock.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Executor, Row};

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

/// State of a trial in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    Queued,
    Leased,
    Done,
    Failed,
    /// Training produced a non-finite loss: the architecture is evaluated, and it is bad.
    Diverged,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Diverged => "diverged",
        }
    }
}

impl FromStr for TrialState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queued" => Ok(Self::Queued),
            "leased" => Ok(Self::Leased),
            "done" => Ok(Self::Done),
            "failed" => Ok(Self::Failed),
            "diverged" => Ok(Self::Diverged),
            other => Err(StoreError::Malformed(format!("unknown trial state `{other}`"))),
        }
    }
}

/// A device as a worker reports it.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub fingerprint: String,
    pub name: String,
    pub kind: String,
    pub info: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct DeviceRow {
    pub fingerprint: String,
    pub name: String,
    pub kind: String,
    pub info: Value,
    pub created_at_ms: i64,
}

/// One operator latency measurement.
#[derive(Debug, Clone)]
pub struct NewLutEntry {
    pub device: String,
    pub setting_key: String,
    pub op_key: String,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub repeats: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct LutEntryRow {
    pub device: String,
    pub setting_key: String,
    pub op_key: String,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub repeats: i64,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchRow {
    pub id: i64,
    pub name: String,
    pub spec: Value,
    pub status: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A candidate architecture as the engine proposes it.
#[derive(Debug, Clone)]
pub struct NewCandidate {
    /// Canonical hash of the genome: equal architectures have equal hashes.
    pub arch_hash: String,
    pub architecture: Value,
    /// The candidate this one was mutated from; `None` for seeds.
    pub parent_id: Option<i64>,
    /// Which factor the mutation changed; `None` for seeds.
    pub mutation: Option<String>,
    pub hidden_size: i64,
    pub params: i64,
    /// `None` when the device has no LUT yet.
    pub est_latency_ms: Option<f64>,
    /// Decode memory at the target setting (KV cache, states, weights).
    pub memory_bytes: i64,
    /// Meets the latency budget. An infeasible candidate is recorded but never trained.
    pub feasible: bool,
}

/// What a candidate's trials have established so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CandidateStatus {
    /// Queued or training; no result yet at any rung.
    Pending,
    /// Has a perplexity (at `rung`).
    Done,
    Diverged,
    /// Its attempts were spent, or the worker reported an error no retry can fix.
    Failed,
    /// No width meets the latency budget: recorded for the engine, never trained.
    Infeasible,
}

impl CandidateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Diverged => "diverged",
            Self::Failed => "failed",
            Self::Infeasible => "infeasible",
        }
    }
}

impl FromStr for CandidateStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "done" => Ok(Self::Done),
            "diverged" => Ok(Self::Diverged),
            "failed" => Ok(Self::Failed),
            "infeasible" => Ok(Self::Infeasible),
            other => Err(StoreError::Malformed(format!("unknown candidate status `{other}`"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateRow {
    pub id: i64,
    pub search_id: i64,
    pub arch_hash: String,
    pub architecture: Value,
    pub parent_id: Option<i64>,
    pub mutation: Option<String>,
    pub hidden_size: i64,
    pub params: i64,
    pub est_latency_ms: Option<f64>,
    pub created_at_ms: i64,
    pub status: CandidateStatus,
    /// Highest successive-halving rung with a result; -1 before the first.
    pub rung: i64,
    pub val_loss: Option<f64>,
    pub ppl: Option<f64>,
    pub memory_bytes: i64,
    pub feasible: bool,
    /// Decode latency measured on a worker, when the search asked for it.
    pub measured_latency_ms: Option<f64>,
    /// The latest result's other figures (tokens/s, loss curve, accuracy).
    pub metrics: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    pub updated_at_ms: i64,
}

impl CandidateRow {
    /// Per-task accuracy of the latest result (synthetic corpora only).
    pub fn accuracy(&self) -> Option<BTreeMap<String, f64>> {
        let accuracy = self.metrics.as_ref()?.get("accuracy")?;
        serde_json::from_value(accuracy.clone()).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TrialRow {
    pub id: i64,
    pub search_id: i64,
    pub candidate_id: i64,
    pub state: TrialState,
    pub budget_tokens: i64,
    /// Successive-halving rung; 0 is the first, cheapest budget.
    pub rung: i64,
    /// Leases handed out so far; the current lease's number while leased.
    pub attempt: i64,
    pub max_attempts: i64,
    /// Never serialised: only the lease holder may know it.
    #[serde(skip)]
    pub lease_token: Option<String>,
    /// The worker holding the lease, or the last one that held it.
    pub worker_id: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub val_loss: Option<f64>,
    pub ppl: Option<f64>,
    /// The worker's report: its metrics, or its error for a failed trial.
    pub result: Option<Value>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A trial handed to a worker. The token must accompany every heartbeat and the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lease {
    pub trial_id: i64,
    pub search_id: i64,
    pub candidate_id: i64,
    pub budget_tokens: i64,
    pub rung: i64,
    pub attempt: i64,
    pub lease_token: String,
    pub lease_expires_at_ms: i64,
}

/// What a worker reports at the end of a proxy training.
#[derive(Debug, Clone)]
pub struct TrialResult {
    pub val_loss: f64,
    pub ppl: f64,
    /// Everything else the worker measured (tokens/s, decode latency, curves).
    pub result_json: Value,
    /// Measured end-to-end decode latency, when the trial measured it.
    pub measured_latency_ms: Option<f64>,
    /// Whether the result meets the search's accuracy floors; `None` leaves the candidate's
    /// `feasible` as it is (no floors, or a diverged result).
    pub meets_floors: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TrialEventRow {
    pub id: i64,
    pub trial_id: i64,
    pub at_ms: i64,
    pub kind: String,
    pub payload: Value,
}

/// Handle to the database; cheap to clone (it is a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

// Column lists shared by SELECT and RETURNING, so every statement yields the same row shape.
macro_rules! device_columns {
    () => {
        "fingerprint, name, kind, info, created_at_ms"
    };
}
macro_rules! lut_entry_columns {
    () => {
        "device, setting_key, op_key, median_ms, p10_ms, p90_ms, repeats, created_at_ms"
    };
}
macro_rules! search_columns {
    () => {
        "id, name, spec, status, created_at_ms, updated_at_ms"
    };
}
macro_rules! candidate_columns {
    () => {
        "id, search_id, arch_hash, architecture, parent_id, mutation, hidden_size, params, \
         est_latency_ms, created_at_ms, status, rung, val_loss, ppl, memory_bytes, feasible, \
         measured_latency_ms, metrics, error, updated_at_ms"
    };
}
macro_rules! candidate_columns_c {
    () => {
        "c.id, c.search_id, c.arch_hash, c.architecture, c.parent_id, c.mutation, c.hidden_size, \
         c.params, c.est_latency_ms, c.created_at_ms, c.status, c.rung, c.val_loss, c.ppl, \
         c.memory_bytes, c.feasible, c.measured_latency_ms, c.metrics, c.error, c.updated_at_ms"
    };
}
macro_rules! trial_columns {
    () => {
        "id, search_id, candidate_id, state, budget_tokens, rung, attempt, max_attempts, \
         lease_token, worker_id, lease_expires_at_ms, val_loss, ppl, result, created_at_ms, \
         updated_at_ms"
    };
}
macro_rules! lease_columns {
    () => {
        "id, search_id, candidate_id, budget_tokens, rung, attempt, lease_token, lease_expires_at_ms"
    };
}

/// Postgres lets concurrent claimers skip rows another transaction has locked, so they do not
/// queue behind each other; SQLite has no row locks (one writer at a time), so the same claim
/// without `FOR UPDATE SKIP LOCKED` is already exclusive.
/// On Postgres the claim and its `leased` event are one statement (a data-modifying CTE): one
/// round trip, atomic without an explicit transaction.
const LEASE_POSTGRES: &str = concat!(
    "WITH claimed AS (
         UPDATE trials
         SET state = 'leased', attempt = attempt + 1, lease_token = $1, worker_id = $2,
             lease_expires_at_ms = $3, updated_at_ms = $4
         WHERE id = (SELECT id FROM trials WHERE state = 'queued' ORDER BY id LIMIT 1
                     FOR UPDATE SKIP LOCKED)
         RETURNING ",
    lease_columns!(),
    "
     ), event AS (
         INSERT INTO trial_events (trial_id, at_ms, kind, payload)
         SELECT id, $4, 'leased', json_build_object('worker_id', $2::text, 'attempt', attempt)::text
         FROM claimed
     )
     SELECT ",
    lease_columns!(),
    " FROM claimed"
);
const LEASE_SQLITE: &str = concat!(
    "UPDATE trials
     SET state = 'leased', attempt = attempt + 1, lease_token = $1, worker_id = $2,
         lease_expires_at_ms = $3, updated_at_ms = $4
     WHERE id = (SELECT id FROM trials WHERE state = 'queued' ORDER BY id LIMIT 1)
     RETURNING ",
    lease_columns!()
);

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

    /// Registers a device, or updates its name, kind and info; its creation time is kept.
    pub async fn upsert_device(&self, device: &NewDevice) -> Result<DeviceRow, StoreError> {
        let row = sqlx::query(concat!(
            "INSERT INTO devices (fingerprint, name, kind, info, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (fingerprint) DO UPDATE
             SET name = excluded.name, kind = excluded.kind, info = excluded.info
             RETURNING ",
            device_columns!()
        ))
        .bind(&device.fingerprint)
        .bind(&device.name)
        .bind(&device.kind)
        .bind(device.info.to_string())
        .bind(clock_ms())
        .fetch_one(&self.pool)
        .await?;
        device_from_row(&row)
    }

    pub async fn get_device(&self, fingerprint: &str) -> Result<Option<DeviceRow>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", device_columns!(), " FROM devices WHERE fingerprint = $1"))
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    /// Stores a measurement, replacing any earlier one for the same (device, setting, operator).
    pub async fn put_lut_entry(&self, entry: &NewLutEntry) -> Result<(), StoreError> {
        self.put_lut_entries(std::slice::from_ref(entry)).await.map(|_| ())
    }

    /// The LUT of one device under one deployment setting, ordered by operator key.
    pub async fn lut_entries(&self, device: &str, setting_key: &str) -> Result<Vec<LutEntryRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lut_entry_columns!(),
            " FROM lut_entries WHERE device = $1 AND setting_key = $2 ORDER BY op_key"
        ))
        .bind(device)
        .bind(setting_key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lut_entry_from_row).collect()
    }

    /// Creates a search in state `pending`.
    pub async fn create_search(&self, name: &str, spec: &Value) -> Result<SearchRow, StoreError> {
        let now_ms = clock_ms();
        let row = sqlx::query(concat!(
            "INSERT INTO searches (name, spec, status, created_at_ms, updated_at_ms)
             VALUES ($1, $2, 'pending', $3, $3)
             RETURNING ",
            search_columns!()
        ))
        .bind(name)
        .bind(spec.to_string())
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        search_from_row(&row)
    }

    pub async fn get_search(&self, id: i64) -> Result<Option<SearchRow>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", search_columns!(), " FROM searches WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(search_from_row).transpose()
    }

    /// Every search, newest first.
    pub async fn list_searches(&self) -> Result<Vec<SearchRow>, StoreError> {
        let rows = sqlx::query(concat!("SELECT ", search_columns!(), " FROM searches ORDER BY id DESC"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(search_from_row).collect()
    }

    /// Adds a candidate to a search unless the search already has that architecture.
    ///
    /// Returns the stored row and whether it was inserted now; a duplicate returns the existing
    /// row (with its own lineage and id) and `false`.
    pub async fn insert_candidate(
        &self,
        search_id: i64,
        candidate: &NewCandidate,
    ) -> Result<(CandidateRow, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        let out = insert_candidate_in(&mut tx, search_id, candidate).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn get_candidate(&self, id: i64) -> Result<Option<CandidateRow>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", candidate_columns!(), " FROM candidates WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(candidate_from_row).transpose()
    }

    /// Queues a proxy training of `candidate_id` with `budget_tokens` at successive-halving `rung`.
    #[tracing::instrument(skip_all, fields(search_id = search_id, candidate_id = candidate_id), err)]
    pub async fn enqueue_trial(
        &self,
        search_id: i64,
        candidate_id: i64,
        budget_tokens: i64,
        rung: i64,
        max_attempts: i64,
    ) -> Result<TrialRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let trial =
            enqueue_trial_in(&mut tx, search_id, candidate_id, budget_tokens, rung, max_attempts).await?;
        tx.commit().await?;
        Ok(trial)
    }

    pub async fn get_trial(&self, id: i64) -> Result<Option<TrialRow>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", trial_columns!(), " FROM trials WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(trial_from_row).transpose()
    }

    /// The history of one trial, oldest first.
    pub async fn trial_events(&self, trial_id: i64) -> Result<Vec<TrialEventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, trial_id, at_ms, kind, payload FROM trial_events
             WHERE trial_id = $1 ORDER BY id",
        )
        .bind(trial_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// What happened to every trial of a candidate, oldest first: queued, leased, requeued (with
    /// the error or expiry that sent it back), failed, done. Progress reports are left out; the
    /// history is capped at its first `limit` events.
    pub async fn candidate_history(
        &self,
        candidate_id: i64,
        limit: i64,
    ) -> Result<Vec<TrialEventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.trial_id, e.at_ms, e.kind, e.payload
             FROM trial_events e JOIN trials t ON t.id = e.trial_id
             WHERE t.candidate_id = $1 AND e.kind <> 'progress'
             ORDER BY e.id LIMIT $2",
        )
        .bind(candidate_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Claims the oldest queued trial for `worker_id` until `now_ms + ttl_ms`; `None` when the
    /// queue is empty.
    #[tracing::instrument(skip_all, fields(worker_id = %worker_id), err)]
    pub async fn lease_trial(
        &self,
        worker_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let claim = match self.backend {
            Backend::Sqlite => LEASE_SQLITE,
            Backend::Postgres => LEASE_POSTGRES,
        };
        let claim = sqlx::query(claim)
            .bind(new_lease_token())
            .bind(worker_id)
            .bind(now_ms.saturating_add(ttl_ms))
            .bind(now_ms);
        if self.backend == Backend::Postgres {
            let row = claim.fetch_optional(&self.pool).await?;
            return row.as_ref().map(lease_from_row).transpose();
        }
        // The claim is the transaction's first statement, so on SQLite it takes the write lock
        // (waiting under the busy timeout) before reading anything: no lock upgrade can fail.
        let mut tx = self.pool.begin().await?;
        let row = claim.fetch_optional(&mut *tx).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let lease = lease_from_row(&row)?;
        let payload = serde_json::json!({ "worker_id": worker_id, "attempt": lease.attempt });
        record_event(&mut tx, lease.trial_id, now_ms, "leased", &payload).await?;
        tx.commit().await?;
        Ok(Some(lease))
    }

    /// Extends a lease to `now_ms + ttl_ms` and returns the new expiry.
    // A stale lease is an expected answer (a worker that lost its lease), not a fault:
    // logged as a warning. Real failures are logged as errors where they are answered.
    #[tracing::instrument(skip_all, fields(trial_id = trial_id), err(level = "warn"))]
    pub async fn heartbeat(
        &self,
        trial_id: i64,
        lease_token: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<i64, StoreError> {
        let expires_at_ms: Option<i64> = sqlx::query_scalar(
            "UPDATE trials SET lease_expires_at_ms = $1, updated_at_ms = $2
             WHERE id = $3 AND lease_token = $4 AND state = 'leased'
             RETURNING lease_expires_at_ms",
        )
        .bind(now_ms.saturating_add(ttl_ms))
        .bind(now_ms)
        .bind(trial_id)
        .bind(lease_token)
        .fetch_optional(&self.pool)
        .await?;
        expires_at_ms.ok_or(StoreError::StaleLease { trial_id })
    }

    /// Records a trial's result and ends its lease.
    ///
    /// A non-finite loss or perplexity marks the trial `diverged` with no metrics: the
    /// architecture has been evaluated, and NaN cannot be stored portably (SQLite reads it back as
    /// NULL).
    // A stale lease is an expected answer (a worker that lost its lease), not a fault:
    // logged as a warning. Real failures are logged as errors where they are answered.
    #[tracing::instrument(skip_all, fields(trial_id = trial_id), err(level = "warn"))]
    pub async fn complete_trial(
        &self,
        trial_id: i64,
        lease_token: &str,
        result: &TrialResult,
        now_ms: i64,
    ) -> Result<TrialRow, StoreError> {
        let finite = result.val_loss.is_finite() && result.ppl.is_finite();
        let (state, val_loss, ppl) = if finite {
            (TrialState::Done, Some(result.val_loss), Some(result.ppl))
        } else {
            (TrialState::Diverged, None, None)
        };
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE trials
             SET state = $1, val_loss = $2, ppl = $3, result = $4,
                 lease_token = NULL, lease_expires_at_ms = NULL, updated_at_ms = $5
             WHERE id = $6 AND lease_token = $7 AND state = 'leased'
             RETURNING ",
            trial_columns!()
        ))
        .bind(state.as_str())
        .bind(val_loss)
        .bind(ppl)
        .bind(result.result_json.to_string())
        .bind(now_ms)
        .bind(trial_id)
        .bind(lease_token)
        .persistent(false) // binds a nullable real (module doc, "Nullable reals")
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::StaleLease { trial_id });
        };
        let trial = trial_from_row(&row)?;
        let payload =
            serde_json::json!({ "worker_id": trial.worker_id, "attempt": trial.attempt, "ppl": trial.ppl });
        record_event(&mut tx, trial_id, now_ms, state.as_str(), &payload).await?;
        // The candidate shows its highest rung's outcome; a late result of a lower rung (from a
        // reclaimed lease that finished after all) never overwrites a higher one.
        let status = if finite { CandidateStatus::Done } else { CandidateStatus::Diverged };
        sqlx::query(
            "UPDATE candidates
             SET status = $1, rung = $2, val_loss = $3, ppl = $4, metrics = $5,
                 measured_latency_ms = COALESCE($6, measured_latency_ms), error = NULL,
                 updated_at_ms = $7, feasible = COALESCE($9, feasible)
             WHERE id = $8 AND rung <= $2",
        )
        .bind(status.as_str())
        .bind(trial.rung)
        .bind(val_loss)
        .bind(ppl)
        .bind(result.result_json.to_string())
        .bind(result.measured_latency_ms)
        .bind(now_ms)
        .bind(trial.candidate_id)
        .bind(result.meets_floors.map(i64::from))
        .persistent(false) // binds nullable reals (module doc, "Nullable reals")
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(trial)
    }

    /// Takes back every lease that expired by `now_ms`: the trial is queued again while attempts
    /// remain, and failed otherwise. Clearing the token fences the old holder. Returns how many
    /// leases were taken back.
    #[tracing::instrument(skip_all, err)]
    pub async fn reclaim_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        // `worker_id` is left in place so the row and its event name the holder that lost it.
        let steps = [
            (
                "requeued",
                "UPDATE trials
                 SET state = 'queued', lease_token = NULL, lease_expires_at_ms = NULL,
                     updated_at_ms = $1
                 WHERE state = 'leased' AND lease_expires_at_ms <= $1 AND attempt < max_attempts
                 RETURNING id, worker_id, attempt",
            ),
            (
                "failed",
                "UPDATE trials
                 SET state = 'failed', lease_token = NULL, lease_expires_at_ms = NULL,
                     updated_at_ms = $1
                 WHERE state = 'leased' AND lease_expires_at_ms <= $1 AND attempt >= max_attempts
                 RETURNING id, worker_id, attempt",
            ),
        ];
        let mut tx = self.pool.begin().await?;
        let mut reclaimed = 0;
        for (kind, sql) in steps {
            let rows = sqlx::query(sql).bind(now_ms).fetch_all(&mut *tx).await?;
            for row in &rows {
                let trial_id: i64 = row.try_get("id")?;
                let worker_id: Option<String> = row.try_get("worker_id")?;
                let attempt: i64 = row.try_get("attempt")?;
                let payload = serde_json::json!({ "worker_id": worker_id, "attempt": attempt });
                record_event(&mut tx, trial_id, now_ms, kind, &payload).await?;
                if kind == "failed" {
                    let error = format!("the lease expired on the last attempt ({attempt})");
                    fail_candidate_of(&mut tx, trial_id, &error, now_ms).await?;
                }
            }
            reclaimed += rows.len() as u64;
        }
        tx.commit().await?;
        Ok(reclaimed)
    }
}

/// Marks the candidate of a trial that failed for good, unless a result of another rung already
/// scored it (a failure of a promotion does not erase the lower rung's perplexity).
async fn fail_candidate_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    trial_id: i64,
    error: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE candidates SET status = 'failed', error = $1, updated_at_ms = $2
         WHERE id = (SELECT candidate_id FROM trials WHERE id = $3) AND status = 'pending'",
    )
    .bind(error)
    .bind(now_ms)
    .bind(trial_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn enqueue_trial_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    search_id: i64,
    candidate_id: i64,
    budget_tokens: i64,
    rung: i64,
    max_attempts: i64,
) -> Result<TrialRow, StoreError> {
    let now_ms = clock_ms();
    let row = sqlx::query(concat!(
        "INSERT INTO trials (search_id, candidate_id, state, budget_tokens, rung, attempt,
                             max_attempts, created_at_ms, updated_at_ms)
         VALUES ($1, $2, 'queued', $3, $4, 0, $5, $6, $6)
         RETURNING ",
        trial_columns!()
    ))
    .bind(search_id)
    .bind(candidate_id)
    .bind(budget_tokens)
    .bind(rung)
    .bind(max_attempts)
    .bind(now_ms)
    .fetch_one(&mut **tx)
    .await?;
    let trial = trial_from_row(&row)?;
    record_event(tx, trial.id, now_ms, "queued", &serde_json::json!({})).await?;
    Ok(trial)
}

async fn insert_candidate_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    search_id: i64,
    candidate: &NewCandidate,
) -> Result<(CandidateRow, bool), StoreError> {
    // `DO NOTHING` returns no row on conflict; the follow-up read then finds the row that won,
    // which exists because the conflict proves it was committed.
    let now_ms = clock_ms();
    let status = if candidate.feasible { CandidateStatus::Pending } else { CandidateStatus::Infeasible };
    let inserted = sqlx::query(concat!(
        "INSERT INTO candidates (search_id, arch_hash, architecture, parent_id, mutation,
                                 hidden_size, params, est_latency_ms, created_at_ms, status,
                                 memory_bytes, feasible, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $9)
         ON CONFLICT (search_id, arch_hash) DO NOTHING
         RETURNING ",
        candidate_columns!()
    ))
    .bind(search_id)
    .bind(&candidate.arch_hash)
    .bind(candidate.architecture.to_string())
    .bind(candidate.parent_id)
    .bind(&candidate.mutation)
    .bind(candidate.hidden_size)
    .bind(candidate.params)
    .bind(candidate.est_latency_ms)
    .bind(now_ms)
    .bind(status.as_str())
    .bind(candidate.memory_bytes)
    .bind(i64::from(candidate.feasible))
    .persistent(false) // binds a nullable real (module doc, "Nullable reals")
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = inserted {
        return Ok((candidate_from_row(&row)?, true));
    }
    let existing = sqlx::query(concat!(
        "SELECT ",
        candidate_columns!(),
        " FROM candidates WHERE search_id = $1 AND arch_hash = $2"
    ))
    .bind(search_id)
    .bind(&candidate.arch_hash)
    .fetch_one(&mut **tx)
    .await?;
    Ok((candidate_from_row(&existing)?, false))
}

/// One member of a search generation to record (see [`Store::add_generation`]).
#[derive(Debug, Clone)]
pub struct NewMember {
    pub candidate: NewCandidate,
    pub parents: Vec<i64>,
    pub origin: String,
}

/// A generation member as stored, with its candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberRow {
    pub generation: i64,
    pub slot: i64,
    pub parents: Vec<i64>,
    pub origin: String,
    pub candidate: CandidateRow,
}

/// How a leaderboard is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    Ppl,
    Latency,
    Params,
    Memory,
    /// Hidden size.
    Hidden,
    /// Decode latency measured on a worker (only measured candidates are listed).
    Measured,
    /// Highest successive-halving rung with a result.
    Rung,
    /// Candidate status, alphabetically.
    Status,
    /// Candidate id: the order candidates were proposed in.
    Id,
}

impl SortKey {
    /// Every key, by its query-string name.
    pub const ALL: [(&'static str, SortKey); 9] = [
        ("ppl", Self::Ppl),
        ("latency", Self::Latency),
        ("params", Self::Params),
        ("memory", Self::Memory),
        ("hidden", Self::Hidden),
        ("measured", Self::Measured),
        ("rung", Self::Rung),
        ("status", Self::Status),
        ("id", Self::Id),
    ];

    /// The key named `name` in a query string.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    /// This key's query-string name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("ppl", |(n, _)| n)
    }

    fn column(self) -> &'static str {
        match self {
            Self::Ppl => "ppl",
            Self::Latency => "est_latency_ms",
            Self::Params => "params",
            Self::Memory => "memory_bytes",
            Self::Hidden => "hidden_size",
            Self::Measured => "measured_latency_ms",
            Self::Rung => "rung",
            Self::Status => "status",
            Self::Id => "id",
        }
    }

    /// The sort value of a row, as a page cursor writes it.
    pub fn cursor_value(self, c: &CandidateRow) -> String {
        let real = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
        match self {
            Self::Ppl => real(c.ppl),
            Self::Latency => real(c.est_latency_ms),
            Self::Measured => real(c.measured_latency_ms),
            Self::Params => c.params.to_string(),
            Self::Memory => c.memory_bytes.to_string(),
            Self::Hidden => c.hidden_size.to_string(),
            Self::Rung => c.rung.to_string(),
            Self::Status => c.status.as_str().to_owned(),
            Self::Id => c.id.to_string(),
        }
    }
}

/// The sort value a page starts after, typed as its column is.
#[derive(Debug, Clone, PartialEq)]
pub enum CursorValue {
    Real(f64),
    Integer(i64),
    Text(String),
}

impl CursorValue {
    /// Parses a cursor's value for `key`; `None` when it is not a value of that column.
    pub fn parse(key: SortKey, text: &str) -> Option<Self> {
        match key {
            SortKey::Ppl | SortKey::Latency | SortKey::Measured => {
                text.parse::<f64>().ok().filter(|v| v.is_finite()).map(Self::Real)
            }
            SortKey::Params | SortKey::Memory | SortKey::Hidden | SortKey::Rung | SortKey::Id => {
                text.parse().ok().map(Self::Integer)
            }
            SortKey::Status => {
                text.parse::<CandidateStatus>().ok().map(|s| Self::Text(s.as_str().to_owned()))
            }
        }
    }
}

/// One page of a leaderboard query.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderboardQuery {
    pub sort: SortKey,
    pub descending: bool,
    /// Only candidates within the latency budget.
    pub feasible_only: bool,
    pub limit: i64,
    /// Continue after this (sort value, id), as returned by the previous page.
    pub after: Option<(CursorValue, i64)>,
}

/// Counts of a search's trials and candidates by state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct SearchProgress {
    pub trials: BTreeMap<String, i64>,
    pub candidates: BTreeMap<String, i64>,
    pub generations: i64,
}

impl Store {
    /// Records a whole generation atomically: each member's candidate (deduplicated by hash),
    /// its membership row, and for each candidate new to the search and feasible, a queued trial
    /// at rung 0. Returns every member's candidate and whether it is new.
    #[tracing::instrument(skip_all, fields(search_id = search_id, generation = generation), err)]
    pub async fn add_generation(
        &self,
        search_id: i64,
        generation: i64,
        members: &[NewMember],
        budget_tokens: i64,
        max_attempts: i64,
    ) -> Result<Vec<(CandidateRow, bool)>, StoreError> {
        self.record_generation(search_id, generation, members, &[budget_tokens], false, max_attempts).await
    }

    /// Records a sweep's grid as generation 0, atomically: every new candidate gets a queued
    /// trial per budget (rung `i` trains `budgets[i]` tokens), whatever its latency, since a
    /// scaling law needs every point of the grid.
    #[tracing::instrument(skip_all, fields(search_id = search_id), err)]
    pub async fn add_sweep(
        &self,
        search_id: i64,
        members: &[NewMember],
        budgets: &[i64],
        max_attempts: i64,
    ) -> Result<Vec<(CandidateRow, bool)>, StoreError> {
        self.record_generation(search_id, 0, members, budgets, true, max_attempts).await
    }

    async fn record_generation(
        &self,
        search_id: i64,
        generation: i64,
        members: &[NewMember],
        budgets: &[i64],
        train_infeasible: bool,
        max_attempts: i64,
    ) -> Result<Vec<(CandidateRow, bool)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(members.len());
        for (slot, member) in members.iter().enumerate() {
            let (candidate, inserted) = insert_candidate_in(&mut tx, search_id, &member.candidate).await?;
            sqlx::query(
                "INSERT INTO search_members (search_id, generation, slot, candidate_id, parents, origin)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(search_id)
            .bind(generation)
            .bind(slot as i64)
            .bind(candidate.id)
            .bind(serde_json::to_string(&member.parents).unwrap_or_else(|_| "[]".into()))
            .bind(&member.origin)
            .execute(&mut *tx)
            .await?;
            if inserted && (candidate.feasible || train_infeasible) {
                for (rung, &budget) in budgets.iter().enumerate() {
                    enqueue_trial_in(&mut tx, search_id, candidate.id, budget, rung as i64, max_attempts)
                        .await?;
                }
            }
            out.push((candidate, inserted));
        }
        sqlx::query(
            "UPDATE searches SET status = 'running', updated_at_ms = $1 WHERE id = $2 AND status = 'pending'",
        )
        .bind(clock_ms())
        .bind(search_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Every generation member of a search, in generation then slot order.
    pub async fn search_members(&self, search_id: i64) -> Result<Vec<MemberRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT m.generation, m.slot, m.parents, m.origin, ",
            candidate_columns_c!(),
            " FROM search_members m JOIN candidates c ON c.id = m.candidate_id
             WHERE m.search_id = $1 ORDER BY m.generation, m.slot"
        ))
        .bind(search_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let parents: String = row.try_get("parents")?;
                Ok(MemberRow {
                    generation: row.try_get("generation")?,
                    slot: row.try_get("slot")?,
                    parents: serde_json::from_str(&parents)
                        .map_err(|e| StoreError::Malformed(format!("member parents: {e}")))?,
                    origin: row.try_get("origin")?,
                    candidate: candidate_from_row(row)?,
                })
            })
            .collect()
    }

    /// Every trial of a search, oldest first.
    pub async fn search_trials(&self, search_id: i64) -> Result<Vec<TrialRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            trial_columns!(),
            " FROM trials WHERE search_id = $1 ORDER BY id"
        ))
        .bind(search_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trial_from_row).collect()
    }

    /// Every trial of a candidate (one per rung and re-evaluation), oldest first.
    pub async fn candidate_trials(&self, candidate_id: i64) -> Result<Vec<TrialRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            trial_columns!(),
            " FROM trials WHERE candidate_id = $1 ORDER BY id"
        ))
        .bind(candidate_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trial_from_row).collect()
    }

    /// Trials of a search still queued or leased: while any are out, its newest generation is
    /// unfinished (every earlier generation finished before the next was proposed).
    pub async fn outstanding_trials(&self, search_id: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM trials WHERE search_id = $1 AND state IN ('queued', 'leased')",
        )
        .bind(search_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The best feasible scored candidate of a search: the highest rung first, then the lowest
    /// perplexity (ties to the older candidate).
    pub async fn best_candidate(&self, search_id: i64) -> Result<Option<CandidateRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            candidate_columns!(),
            " FROM candidates
             WHERE search_id = $1 AND status = 'done' AND feasible = 1 AND ppl IS NOT NULL
             ORDER BY rung DESC, ppl ASC, id ASC LIMIT 1"
        ))
        .bind(search_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(candidate_from_row).transpose()
    }

    /// One page of a search's scored candidates, ordered by `query.sort` then id.
    ///
    /// Keyset pagination: the next page starts after the last row's (sort value, id), so a page
    /// costs one index range scan however deep it is.
    pub async fn leaderboard(
        &self,
        search_id: i64,
        query: &LeaderboardQuery,
    ) -> Result<Vec<CandidateRow>, StoreError> {
        let column = query.sort.column();
        let (cmp, order) = if query.descending { ("<", "DESC") } else { (">", "ASC") };
        let mut sql = format!(
            "SELECT {} FROM candidates WHERE search_id = $1 AND {column} IS NOT NULL",
            candidate_columns!()
        );
        if query.sort == SortKey::Ppl {
            sql.push_str(" AND status = 'done'");
        }
        if query.feasible_only {
            sql.push_str(" AND feasible = 1");
        }
        if query.after.is_some() {
            // A row-value comparison is one index range condition on (search_id, column, id);
            // the equivalent OR of two comparisons would be a filter that scans every earlier row.
            if query.sort == SortKey::Id {
                sql.push_str(&format!(" AND id {cmp} $2"));
            } else {
                sql.push_str(&format!(" AND ({column}, id) {cmp} ($2, $3)"));
            }
        }
        if query.sort == SortKey::Id {
            sql.push_str(&format!(" ORDER BY id {order} LIMIT {}", query.limit.clamp(1, 1000)));
        } else {
            sql.push_str(&format!(
                " ORDER BY {column} {order}, id {order} LIMIT {}",
                query.limit.clamp(1, 1000)
            ));
        }
        let mut q = sqlx::query(&sql).bind(search_id);
        if let Some((value, id)) = &query.after {
            if query.sort != SortKey::Id {
                q = match value {
                    CursorValue::Real(v) => q.bind(*v),
                    CursorValue::Integer(v) => q.bind(*v),
                    CursorValue::Text(v) => q.bind(v.clone()),
                };
            }
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(candidate_from_row).collect()
    }

    /// Trials and candidates of a search counted by state, and its number of generations.
    pub async fn search_progress(&self, search_id: i64) -> Result<SearchProgress, StoreError> {
        let mut progress = SearchProgress::default();
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM trials WHERE search_id = $1 GROUP BY state")
            .bind(search_id)
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            progress.trials.insert(row.try_get("state")?, row.try_get("n")?);
        }
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM candidates WHERE search_id = $1 GROUP BY status")
                .bind(search_id)
                .fetch_all(&self.pool)
                .await?;
        for row in &rows {
            progress.candidates.insert(row.try_get("status")?, row.try_get("n")?);
        }
        let generations: Option<i64> =
            sqlx::query_scalar("SELECT MAX(generation) FROM search_members WHERE search_id = $1")
                .bind(search_id)
                .fetch_one(&self.pool)
                .await?;
        progress.generations = generations.map_or(0, |g| g + 1);
        Ok(progress)
    }

    /// Sets a search's status (and error), returning whether the row changed. Terminal statuses
    /// (`completed`, `cancelled`, `failed`) are never left.
    pub async fn set_search_status(
        &self,
        search_id: i64,
        status: &str,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE searches SET status = $1, error = $2, updated_at_ms = $3
             WHERE id = $4 AND status NOT IN ('completed', 'cancelled', 'failed')",
        )
        .bind(status)
        .bind(error)
        .bind(clock_ms())
        .bind(search_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The error a failed search stopped with.
    pub async fn search_error(&self, search_id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT error FROM searches WHERE id = $1")
            .bind(search_id)
            .fetch_optional(&self.pool)
            .await?
            .flatten())
    }

    /// Cancels a search: it stops proposing, its queued trials are failed and its pending
    /// candidates marked failed. Leased trials are told to stop at their next heartbeat. Returns
    /// `false` when the search had already ended.
    #[tracing::instrument(skip_all, fields(search_id = search_id), err)]
    pub async fn cancel_search(&self, search_id: i64) -> Result<bool, StoreError> {
        let now_ms = clock_ms();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE searches SET status = 'cancelled', updated_at_ms = $1
             WHERE id = $2 AND status NOT IN ('completed', 'cancelled', 'failed')",
        )
        .bind(now_ms)
        .bind(search_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if changed {
            sqlx::query(
                "UPDATE trials SET state = 'failed', result = $1, lease_token = NULL,
                        lease_expires_at_ms = NULL, updated_at_ms = $2
                 WHERE search_id = $3 AND state IN ('queued', 'leased')",
            )
            .bind(serde_json::json!({ "error": "search cancelled" }).to_string())
            .bind(now_ms)
            .bind(search_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE candidates SET status = 'failed', error = 'search cancelled', updated_at_ms = $1
                 WHERE search_id = $2 AND status = 'pending'",
            )
            .bind(now_ms)
            .bind(search_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Records that a worker could not train a trial. While attempts remain and the error is
    /// retryable the trial is queued again; otherwise it fails, and so does its candidate unless
    /// another rung scored it. Fenced by the lease token like [`Store::complete_trial`].
    // A stale lease is an expected answer (a worker that lost its lease), not a fault:
    // logged as a warning. Real failures are logged as errors where they are answered.
    #[tracing::instrument(skip_all, fields(trial_id = trial_id), err(level = "warn"))]
    pub async fn fail_trial(
        &self,
        trial_id: i64,
        lease_token: &str,
        error: &str,
        retryable: bool,
        now_ms: i64,
    ) -> Result<TrialRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE trials
             SET state = CASE WHEN $1 = 1 AND attempt < max_attempts THEN 'queued' ELSE 'failed' END,
                 result = $2, lease_token = NULL, lease_expires_at_ms = NULL, updated_at_ms = $3
             WHERE id = $4 AND lease_token = $5 AND state = 'leased'
             RETURNING ",
            trial_columns!()
        ))
        .bind(i64::from(retryable))
        .bind(serde_json::json!({ "error": error }).to_string())
        .bind(now_ms)
        .bind(trial_id)
        .bind(lease_token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::StaleLease { trial_id });
        };
        let trial = trial_from_row(&row)?;
        let kind = if trial.state == TrialState::Queued { "requeued" } else { "failed" };
        let payload =
            serde_json::json!({ "worker_id": trial.worker_id, "attempt": trial.attempt, "error": error });
        record_event(&mut tx, trial_id, now_ms, kind, &payload).await?;
        if trial.state == TrialState::Failed {
            fail_candidate_of(&mut tx, trial_id, error, now_ms).await?;
        }
        tx.commit().await?;
        Ok(trial)
    }

    /// Queues a successive-halving promotion of `candidate_id` to `rung`, unless that rung is
    /// already queued or done for it. Returns whether a trial was queued.
    pub async fn promote(
        &self,
        search_id: i64,
        candidate_id: i64,
        rung: i64,
        budget_tokens: i64,
        max_attempts: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let existing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM trials WHERE candidate_id = $1 AND rung = $2")
                .bind(candidate_id)
                .bind(rung)
                .fetch_one(&mut *tx)
                .await?;
        if existing > 0 {
            return Ok(false);
        }
        enqueue_trial_in(&mut tx, search_id, candidate_id, budget_tokens, rung, max_attempts).await?;
        // The candidate is training again: it keeps its lower rung's perplexity meanwhile.
        tx.commit().await?;
        Ok(true)
    }

    /// Appends an event a worker reported (a resumption from a checkpoint, say) to a trial's
    /// history.
    pub async fn record_trial_event(
        &self,
        trial_id: i64,
        now_ms: i64,
        kind: &str,
        payload: &Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        record_event(&mut tx, trial_id, now_ms, kind, payload).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends a progress event (a heartbeat's step, loss and throughput) to a trial's history.
    pub async fn record_progress(
        &self,
        trial_id: i64,
        now_ms: i64,
        progress: &Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        record_event(&mut tx, trial_id, now_ms, "progress", progress).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Registers (or refreshes) a worker and its device.
    pub async fn register_worker(
        &self,
        worker_id: &str,
        hostname: &str,
        device: &NewDevice,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.upsert_device(device).await?;
        sqlx::query(
            "INSERT INTO workers (id, device, hostname, last_seen_at_ms, created_at_ms)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (id) DO UPDATE
             SET device = excluded.device, hostname = excluded.hostname,
                 last_seen_at_ms = excluded.last_seen_at_ms",
        )
        .bind(worker_id)
        .bind(&device.fingerprint)
        .bind(hostname)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The device fingerprint of a registered worker; `None` for an unknown worker.
    pub async fn worker_device(&self, worker_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT device FROM workers WHERE id = $1")
            .bind(worker_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Notes that a worker was heard from.
    pub async fn touch_worker(&self, worker_id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE workers SET last_seen_at_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every registered worker: (id, device, hostname, last seen).
    pub async fn list_workers(&self) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT id, device, hostname, last_seen_at_ms FROM workers ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("device")?,
                    r.try_get("hostname")?,
                    r.try_get("last_seen_at_ms")?,
                ))
            })
            .collect()
    }

    /// Every registered device.
    pub async fn list_devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(concat!("SELECT ", device_columns!(), " FROM devices ORDER BY fingerprint"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// Searches that still propose or wait for results.
    pub async fn active_searches(&self) -> Result<Vec<SearchRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            search_columns!(),
            " FROM searches WHERE status IN ('pending', 'running') ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(search_from_row).collect()
    }

    /// Queued and leased trials across all searches (for metrics and long-polls).
    pub async fn queue_depth(&self) -> Result<(i64, i64), StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM trials WHERE state IN ('queued', 'leased') GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        let (mut queued, mut leased) = (0, 0);
        for row in &rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            if state == "queued" {
                queued = n;
            } else {
                leased = n;
            }
        }
        Ok((queued, leased))
    }

    /// Devices with at least one latency entry for a setting.
    pub async fn devices_with_lut(&self, setting_key: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT device FROM lut_entries WHERE setting_key = $1 ORDER BY device",
        )
        .bind(setting_key)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Fills a search with `candidates` synthetic scored candidates and one done trial each, in a
    /// few set-based statements, for benchmarks of the read paths at scale. Architectures cycle
    /// through the tiny presets; perplexities, latencies, parameter counts and memory vary with
    /// the row number so every sort order is exercised, and one in ten is infeasible.
    pub async fn seed_benchmark_candidates(&self, search_id: i64, candidates: i64) -> Result<(), StoreError> {
        self.seed_scored_candidates(search_id, candidates).await?;
        sqlx::query(
            "INSERT INTO trials (search_id, candidate_id, state, budget_tokens, rung, attempt, max_attempts,
                                 ppl, val_loss, created_at_ms, updated_at_ms)
             SELECT search_id, id, 'done', 1000, 0, 1, 1, ppl, val_loss, created_at_ms, updated_at_ms
             FROM candidates WHERE search_id = $1",
        )
        .bind(search_id)
        .execute(&self.pool)
        .await?;
        sqlx::query("ANALYZE trials").execute(&self.pool).await?;
        Ok(())
    }

    async fn seed_scored_candidates(&self, search_id: i64, candidates: i64) -> Result<(), StoreError> {
        let series = match self.backend {
            Backend::Postgres => "SELECT generate_series(1, $2) AS n",
            Backend::Sqlite => {
                "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $2) SELECT n FROM s"
            }
        };
        let presets = ["tiny-hybrid", "tiny-transformer", "tiny-mamba2", "tiny-deltanet"];
        let mut docs = Vec::with_capacity(presets.len());
        for name in presets {
            let arch = search_space::presets::preset(name)
                .ok_or_else(|| StoreError::Malformed(format!("preset `{name}` is missing")))?;
            docs.push(arch.to_json());
        }
        let sql = format!(
            "INSERT INTO candidates (search_id, arch_hash, architecture, hidden_size, params, est_latency_ms,
                                     created_at_ms, status, rung, val_loss, ppl, memory_bytes, feasible, updated_at_ms)
             SELECT $1, 'bench-' || n,
                    CASE n % 4 WHEN 0 THEN $3 WHEN 1 THEN $4 WHEN 2 THEN $5 ELSE $6 END,
                    128, 100000000 + (n * 7919) % 1000003,
                    1.0 + ((n * 104729) % 1000) / 10.0, n * 1000, 'done', 0, 2.0 + ((n * 15485863) % 100000) / 100000.0,
                    7.0 + ((n * 15485863) % 100000) / 1000.0, (n * 31) % 1000000, CASE WHEN n % 10 = 0 THEN 0 ELSE 1 END,
                    n * 1000
             FROM ({series}) AS series"
        );
        let mut query = sqlx::query(&sql).bind(search_id).bind(candidates);
        for doc in docs {
            query = query.bind(doc);
        }
        query.execute(&self.pool).await?;
        // Fresh statistics, as autovacuum would gather after organic growth, so the planner
        // sees the rows it is about to query.
        sqlx::query("ANALYZE candidates").execute(&self.pool).await?;
        Ok(())
    }

    /// Queues one trial for each of `n` new synthetic candidates of a search, for queue benchmarks.
    pub async fn seed_benchmark_trials(
        &self,
        search_id: i64,
        n: i64,
        max_attempts: i64,
    ) -> Result<(), StoreError> {
        self.seed_scored_candidates(search_id, n).await?;
        sqlx::query(
            "INSERT INTO trials (search_id, candidate_id, state, budget_tokens, rung, attempt, max_attempts,
                                 created_at_ms, updated_at_ms)
             SELECT search_id, id, 'queued', 1000, 0, 0, $2, 0, 0 FROM candidates WHERE search_id = $1",
        )
        .bind(search_id)
        .bind(max_attempts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn lease_from_row(row: &AnyRow) -> Result<Lease, StoreError> {
    Ok(Lease {
        trial_id: row.try_get("id")?,
        search_id: row.try_get("search_id")?,
        candidate_id: row.try_get("candidate_id")?,
        budget_tokens: row.try_get("budget_tokens")?,
        rung: row.try_get("rung")?,
        attempt: row.try_get("attempt")?,
        lease_token: row.try_get("lease_token")?,
        lease_expires_at_ms: row.try_get("lease_expires_at_ms")?,
    })
}

fn event_from_row(row: &AnyRow) -> Result<TrialEventRow, StoreError> {
    Ok(TrialEventRow {
        id: row.try_get("id")?,
        trial_id: row.try_get("trial_id")?,
        at_ms: row.try_get("at_ms")?,
        kind: row.try_get("kind")?,
        payload: json_column(row, "payload")?,
    })
}

async fn record_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    trial_id: i64,
    at_ms: i64,
    kind: &str,
    payload: &Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO trial_events (trial_id, at_ms, kind, payload) VALUES ($1, $2, $3, $4)")
        .bind(trial_id)
        .bind(at_ms)
        .bind(kind)
        .bind(payload.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
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

/// 128 random bits as hex: unguessable, so only the lease holder can heartbeat or complete.
fn new_lease_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Wall clock for bookkeeping timestamps; the queue's notion of time comes from its callers.
pub(crate) fn clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn json_column(row: &AnyRow, column: &str) -> Result<Value, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|err| StoreError::Malformed(format!("column `{column}` is not JSON: {err}")))
}

fn optional_json_column(row: &AnyRow, column: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|err| StoreError::Malformed(format!("column `{column}` is not JSON: {err}")))
    })
    .transpose()
}

pub(crate) fn device_from_row(row: &AnyRow) -> Result<DeviceRow, StoreError> {
    Ok(DeviceRow {
        fingerprint: row.try_get("fingerprint")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        info: json_column(row, "info")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

pub(crate) fn lut_entry_from_row(row: &AnyRow) -> Result<LutEntryRow, StoreError> {
    Ok(LutEntryRow {
        device: row.try_get("device")?,
        setting_key: row.try_get("setting_key")?,
        op_key: row.try_get("op_key")?,
        median_ms: row.try_get("median_ms")?,
        p10_ms: row.try_get("p10_ms")?,
        p90_ms: row.try_get("p90_ms")?,
        repeats: row.try_get("repeats")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn search_from_row(row: &AnyRow) -> Result<SearchRow, StoreError> {
    Ok(SearchRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        spec: json_column(row, "spec")?,
        status: row.try_get("status")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn candidate_from_row(row: &AnyRow) -> Result<CandidateRow, StoreError> {
    Ok(CandidateRow {
        id: row.try_get("id")?,
        search_id: row.try_get("search_id")?,
        arch_hash: row.try_get("arch_hash")?,
        architecture: json_column(row, "architecture")?,
        parent_id: row.try_get("parent_id")?,
        mutation: row.try_get("mutation")?,
        hidden_size: row.try_get("hidden_size")?,
        params: row.try_get("params")?,
        est_latency_ms: row.try_get("est_latency_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        status: row.try_get::<String, _>("status")?.parse()?,
        rung: row.try_get("rung")?,
        val_loss: row.try_get("val_loss")?,
        ppl: row.try_get("ppl")?,
        memory_bytes: row.try_get("memory_bytes")?,
        feasible: row.try_get::<i64, _>("feasible")? != 0,
        measured_latency_ms: row.try_get("measured_latency_ms")?,
        metrics: optional_json_column(row, "metrics")?,
        error: row.try_get("error")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn trial_from_row(row: &AnyRow) -> Result<TrialRow, StoreError> {
    let state: String = row.try_get("state")?;
    Ok(TrialRow {
        id: row.try_get("id")?,
        search_id: row.try_get("search_id")?,
        candidate_id: row.try_get("candidate_id")?,
        state: state.parse()?,
        budget_tokens: row.try_get("budget_tokens")?,
        rung: row.try_get("rung")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        lease_token: row.try_get("lease_token")?,
        worker_id: row.try_get("worker_id")?,
        lease_expires_at_ms: row.try_get("lease_expires_at_ms")?,
        val_loss: row.try_get("val_loss")?,
        ppl: row.try_get("ppl")?,
        result: optional_json_column(row, "result")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}
