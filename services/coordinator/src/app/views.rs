//! What the API answers with (and the one request body it takes beside the wire types): the
//! views both the API's handlers and its OpenAPI document ([`crate::openapi`]) name, so the
//! document is derived from the same types the handlers serialise.

use api::SearchSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::leaderboard::Entry;
use crate::store::{Backend, DeviceRow, LutEntryRow, TrialEventRow, TrialRow, TrialState};

/// A search as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchView {
    pub id: i64,
    pub name: String,
    #[schemars(extend("enum" = ["pending", "running", "completed", "cancelled", "failed"]))]
    pub status: String,
    /// The algorithm's `kind`.
    #[schemars(extend("enum" = ["aging_evolution", "nsga2", "random", "sweep"]))]
    pub algorithm: String,
    /// Why the search failed.
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub progress: crate::store::SearchProgress,
    /// The spec as stored, defaults filled in.
    #[schemars(with = "SearchSpec")]
    pub spec: Value,
}

/// One page of a leaderboard.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LeaderboardPage {
    pub items: Vec<Entry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A scored candidate in the perplexity × latency plane.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ParetoPoint {
    pub id: i64,
    pub ppl: f64,
    pub latency_ms: f64,
    pub feasible: bool,
}

/// The Pareto front of a search and every scored point.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ParetoView {
    pub latency_budget_ms: Option<f64>,
    pub front: Vec<Entry>,
    pub points: Vec<ParetoPoint>,
}

/// One layer of a candidate's expanded model.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LayerView {
    /// Operator code (`A`, `M2`, `D`, `GD`, `F`).
    pub kind: String,
    pub params: u64,
    pub spec: search_space::LayerSpec,
}

/// An ancestor of a candidate.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LineageStep {
    pub id: i64,
    pub ppl: Option<f64>,
    pub mutation: Option<String>,
}

/// Everything about one candidate.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CandidateDetail {
    pub candidate: Entry,
    pub search_id: i64,
    #[schemars(with = "search_space::Architecture")]
    pub architecture: Value,
    pub layers: Vec<LayerView>,
    /// The latest result's metrics.
    #[schemars(with = "Option<api::TrialMetrics>")]
    pub metrics: Option<Value>,
    /// (step, loss) pairs of the latest result's training.
    #[schemars(with = "Option<Vec<(u64, f64)>>")]
    pub loss_curve: Value,
    pub error: Option<String>,
    /// Parent first, then its parent, and so on.
    pub lineage: Vec<LineageStep>,
    pub trials: Vec<TrialRow>,
    /// What happened to each trial, oldest first (progress reports left out).
    pub history: Vec<TrialEventRow>,
}

/// A registered worker.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WorkerView {
    pub id: String,
    /// Its device's fingerprint.
    pub device: String,
    pub hostname: String,
    pub last_seen_at_ms: i64,
}

/// Devices and the workers on them.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceRow>,
    pub workers: Vec<WorkerView>,
}

/// A device's latency entries at one setting.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LutTable {
    pub device: String,
    /// The setting's canonical key.
    pub setting: String,
    pub entries: Vec<LutEntryRow>,
}

/// How many entries an upload stored.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LutStored {
    pub stored: usize,
}

/// How many entries a deletion removed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LutDeleted {
    pub deleted: u64,
}

/// One uploaded measurement; `p10_ms ≤ median_ms ≤ p90_ms`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadedEntry {
    /// A deployment setting, e.g. `batch=1,prompt=128,gen=1024`.
    #[schemars(length(min = 1, max = api::spec::MAX_KEY_CHARS))]
    pub setting_key: String,
    /// The operator shape the latency was measured for.
    #[schemars(length(min = 1, max = api::spec::MAX_KEY_CHARS), pattern(api::spec::NOT_BLANK))]
    pub op_key: String,
    #[schemars(range(min = 0))]
    pub median_ms: f64,
    #[schemars(range(min = 0))]
    pub p10_ms: f64,
    #[schemars(range(min = 0))]
    pub p90_ms: f64,
    #[schemars(range(min = 1))]
    pub repeats: i64,
}

/// The liveness answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    #[schemars(extend("const" = "ok"))]
    pub status: &'static str,
}

/// The readiness answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Ready {
    #[schemars(extend("const" = "ready"))]
    pub status: &'static str,
    pub backend: Backend,
}

/// A trial's state after a result or a failure was recorded.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TrialAck {
    pub trial_id: i64,
    pub state: TrialState,
}
