//! The rows the store reads and writes: what callers hand in (`New*`, [`TrialResult`]), what they
//! get back (`*Row`, [`Lease`]), the column lists every statement of a table selects, and the
//! hand-written mapping from an [`AnyRow`] to each (`*_from_row`), with the JSON-as-text column
//! helpers. Columns are read by name, so a statement may select them in any order.

use std::collections::BTreeMap;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;

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

impl NewLutEntry {
    /// The rows of profiled entries of `device` at `setting`.
    pub fn rows(device: &str, setting: &lut::DeploymentSetting, entries: &[lut::LutEntry]) -> Vec<Self> {
        entries
            .iter()
            .map(|e| Self {
                device: device.to_owned(),
                setting_key: setting.key(),
                op_key: e.op.to_string(),
                median_ms: e.median_ms,
                p10_ms: e.p10_ms,
                p90_ms: e.p90_ms,
                repeats: i64::from(e.repeats),
            })
            .collect()
    }
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

impl LutEntryRow {
    /// The row as [`lut::parse_row`] reads it.
    pub fn raw(&self) -> lut::RawRow<'_> {
        lut::RawRow {
            setting_key: &self.setting_key,
            op_key: &self.op_key,
            median_ms: self.median_ms,
            p10_ms: self.p10_ms,
            p90_ms: self.p90_ms,
            repeats: self.repeats,
        }
    }
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

/// One member of a search generation to record (see [`Store::add_generation`](super::Store::add_generation)).
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

pub(super) fn lease_from_row(row: &AnyRow) -> Result<Lease, StoreError> {
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

pub(super) fn event_from_row(row: &AnyRow) -> Result<TrialEventRow, StoreError> {
    Ok(TrialEventRow {
        id: row.try_get("id")?,
        trial_id: row.try_get("trial_id")?,
        at_ms: row.try_get("at_ms")?,
        kind: row.try_get("kind")?,
        payload: json_column(row, "payload")?,
    })
}

pub(super) fn json_column(row: &AnyRow, column: &str) -> Result<Value, StoreError> {
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

pub(super) fn device_from_row(row: &AnyRow) -> Result<DeviceRow, StoreError> {
    Ok(DeviceRow {
        fingerprint: row.try_get("fingerprint")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        info: json_column(row, "info")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

pub(super) fn lut_entry_from_row(row: &AnyRow) -> Result<LutEntryRow, StoreError> {
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

pub(super) fn search_from_row(row: &AnyRow) -> Result<SearchRow, StoreError> {
    Ok(SearchRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        spec: json_column(row, "spec")?,
        status: row.try_get("status")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

pub(super) fn candidate_from_row(row: &AnyRow) -> Result<CandidateRow, StoreError> {
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

pub(super) fn trial_from_row(row: &AnyRow) -> Result<TrialRow, StoreError> {
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
