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

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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
         est_latency_ms, created_at_ms"
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
const LEASE_POSTGRES: &str = concat!(
    "UPDATE trials
     SET state = 'leased', attempt = attempt + 1, lease_token = $1, worker_id = $2,
         lease_expires_at_ms = $3, updated_at_ms = $4
     WHERE id = (SELECT id FROM trials WHERE state = 'queued' ORDER BY id LIMIT 1
                 FOR UPDATE SKIP LOCKED)
     RETURNING ",
    lease_columns!()
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
        sqlx::query(
            "INSERT INTO lut_entries
                 (device, setting_key, op_key, median_ms, p10_ms, p90_ms, repeats, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (device, setting_key, op_key) DO UPDATE
             SET median_ms = excluded.median_ms, p10_ms = excluded.p10_ms,
                 p90_ms = excluded.p90_ms, repeats = excluded.repeats,
                 created_at_ms = excluded.created_at_ms",
        )
        .bind(&entry.device)
        .bind(&entry.setting_key)
        .bind(&entry.op_key)
        .bind(entry.median_ms)
        .bind(entry.p10_ms)
        .bind(entry.p90_ms)
        .bind(entry.repeats)
        .bind(clock_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
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
        // `DO NOTHING` returns no row on conflict; the follow-up read then finds the row that
        // won, which exists because the conflict proves it was committed.
        let inserted = sqlx::query(concat!(
            "INSERT INTO candidates (search_id, arch_hash, architecture, parent_id, mutation,
                                     hidden_size, params, est_latency_ms, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
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
        .bind(clock_ms())
        .fetch_optional(&self.pool)
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
        .fetch_one(&self.pool)
        .await?;
        Ok((candidate_from_row(&existing)?, false))
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
        let now_ms = clock_ms();
        let mut tx = self.pool.begin().await?;
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
        .fetch_one(&mut *tx)
        .await?;
        let trial = trial_from_row(&row)?;
        record_event(&mut tx, trial.id, now_ms, "queued", &serde_json::json!({})).await?;
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
        rows.iter()
            .map(|row| {
                Ok(TrialEventRow {
                    id: row.try_get("id")?,
                    trial_id: row.try_get("trial_id")?,
                    at_ms: row.try_get("at_ms")?,
                    kind: row.try_get("kind")?,
                    payload: json_column(row, "payload")?,
                })
            })
            .collect()
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
        // The claim is the transaction's first statement, so on SQLite it takes the write lock
        // (waiting under the busy timeout) before reading anything: no lock upgrade can fail.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(claim)
            .bind(new_lease_token())
            .bind(worker_id)
            .bind(now_ms.saturating_add(ttl_ms))
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let lease = Lease {
            trial_id: row.try_get("id")?,
            search_id: row.try_get("search_id")?,
            candidate_id: row.try_get("candidate_id")?,
            budget_tokens: row.try_get("budget_tokens")?,
            rung: row.try_get("rung")?,
            attempt: row.try_get("attempt")?,
            lease_token: row.try_get("lease_token")?,
            lease_expires_at_ms: row.try_get("lease_expires_at_ms")?,
        };
        let payload = serde_json::json!({ "worker_id": worker_id, "attempt": lease.attempt });
        record_event(&mut tx, lease.trial_id, now_ms, "leased", &payload).await?;
        tx.commit().await?;
        Ok(Some(lease))
    }

    /// Extends a lease to `now_ms + ttl_ms` and returns the new expiry.
    #[tracing::instrument(skip_all, fields(trial_id = trial_id), err)]
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
    #[tracing::instrument(skip_all, fields(trial_id = trial_id), err)]
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
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::StaleLease { trial_id });
        };
        let trial = trial_from_row(&row)?;
        let payload = serde_json::json!({ "worker_id": trial.worker_id, "attempt": trial.attempt });
        record_event(&mut tx, trial_id, now_ms, state.as_str(), &payload).await?;
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
            }
            reclaimed += rows.len() as u64;
        }
        tx.commit().await?;
        Ok(reclaimed)
    }
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
