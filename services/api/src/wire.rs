//! Requests and responses between the coordinator, workers and clients. Plain data, no logic.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use search_space::Architecture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{MAX_KEY_CHARS, NOT_BLANK, ProxyBudget, TEXT};

/// A device as a worker describes it: the LUT's device key and what it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    /// Stable key of the (machine, accelerator, software stack): backend, device model, threads.
    #[schemars(length(min = 1, max = MAX_KEY_CHARS), pattern(NOT_BLANK))]
    pub fingerprint: String,
    /// For people, e.g. `cpu (flex, 2 threads)` or `NVIDIA H200`.
    #[schemars(length(max = MAX_KEY_CHARS), pattern(TEXT))]
    pub name: String,
    /// `cpu` or `cuda`.
    #[schemars(length(max = MAX_KEY_CHARS), pattern(TEXT))]
    pub kind: String,
    /// Anything else worth keeping (memory, driver, thread count).
    #[serde(default)]
    pub info: Value,
}

/// `POST /api/v1/workers/register`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWorker {
    /// A stable id chosen by the worker (hostname plus a suffix); re-registering updates it.
    #[schemars(length(min = 1, max = MAX_KEY_CHARS), pattern(NOT_BLANK))]
    pub worker_id: String,
    #[schemars(length(max = MAX_KEY_CHARS), pattern(TEXT))]
    pub hostname: String,
    pub device: DeviceInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Registered {
    pub worker_id: String,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl_ms: u64,
    /// How often the worker should heartbeat.
    pub heartbeat_interval_ms: u64,
}

/// `POST /api/v1/workers/lease`: answered 200 with a [`LeaseGrant`], or 204 when nothing was
/// queued within `wait_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    #[schemars(length(min = 1, max = MAX_KEY_CHARS), pattern(NOT_BLANK))]
    pub worker_id: String,
    /// Long-poll: wait up to this long for a trial (capped by the coordinator).
    #[serde(default)]
    pub wait_ms: u64,
}

/// A trial handed to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LeaseGrant {
    pub trial_id: i64,
    pub search_id: i64,
    pub candidate_id: i64,
    pub attempt: i64,
    /// Must accompany every heartbeat and the result; a newer lease of the same trial makes it stale.
    pub lease_token: String,
    pub lease_expires_at_ms: i64,
    pub job: TrialJob,
}

/// What to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrialJob {
    /// The candidate at its chosen width.
    pub architecture: Architecture,
    pub proxy: ProxyBudget,
    /// Tokens to train for (the rung's budget with successive halving).
    pub budget_tokens: u64,
    /// Seeds the weights and the batch order (the same for every rung of one candidate).
    pub seed: u64,
    /// When set, also measure decode latency at this setting (`batch=..,prompt=..,gen=..`).
    pub measure_latency: Option<String>,
}

/// Progress of a running trial, sent with heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrialProgress {
    pub step: u64,
    pub steps: u64,
    pub tokens: u64,
    pub loss: f64,
    pub tokens_per_s: f64,
}

/// `POST /api/v1/trials/{id}/heartbeat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub lease_token: String,
    #[serde(default)]
    pub progress: Option<TrialProgress>,
    /// What happened to the trial's checkpoints since the last heartbeat (a resumption, a
    /// checkpoint that could not be used); each becomes an event of the trial's history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TRIAL_NOTES))]
    pub notes: Vec<TrialNote>,
}

/// Most notes one heartbeat carries.
pub const MAX_TRIAL_NOTES: usize = 16;
/// Longest note message, in characters.
pub const MAX_NOTE_CHARS: usize = 1_000;

/// One event a worker reports about a trial's checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialNote {
    pub kind: TrialNoteKind,
    /// The step concerned (the step resumed at, or the step whose checkpoint failed).
    #[serde(default)]
    pub step: Option<u64>,
    /// For people: which checkpoint, and why it was not used.
    #[schemars(length(max = MAX_NOTE_CHARS), pattern(TEXT))]
    pub message: String,
}

/// What a [`TrialNote`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrialNoteKind {
    /// Training continued from a checkpoint of an earlier attempt.
    Resumed,
    /// A checkpoint was found but not used (torn, or another job's).
    CheckpointSkipped,
    /// A checkpoint could not be written; training went on.
    CheckpointFailed,
}

impl TrialNoteKind {
    /// The event kind the history records.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialNoteKind::Resumed => "resumed",
            TrialNoteKind::CheckpointSkipped => "checkpoint_skipped",
            TrialNoteKind::CheckpointFailed => "checkpoint_failed",
        }
    }
}

/// The answer to a heartbeat: the lease's new expiry. Cancelling a search revokes its leases, so a
/// worker learns of it as a 409 on its next heartbeat, the same answer as for any lost lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatAck {
    pub lease_expires_at_ms: i64,
}

/// What a finished proxy training measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrialMetrics {
    /// `completed` or `diverged`.
    #[schemars(extend("enum" = ["completed", "diverged"]))]
    pub outcome: String,
    pub val_loss: f64,
    pub ppl: f64,
    pub train_loss: f64,
    pub steps: u64,
    pub tokens: u64,
    pub tokens_per_s: f64,
    pub train_seconds: f64,
    /// Parameters of the model as trained (vocabulary sized to the proxy's tokenizer).
    pub params: u64,
    /// Training loss along the way: (step, loss), thinned to at most a few hundred points.
    #[serde(default)]
    pub loss_curve: Vec<(u64, f64)>,
    /// Measured end-to-end decode latency at the target setting, when the job asked for it.
    #[serde(default)]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub measured_latency_ms: Option<f64>,
    /// Per-task accuracy on synthetic corpora: task → share of scored answers right, in [0, 1].
    #[serde(default)]
    #[schemars(extend("additionalProperties" = { "type": "number", "minimum": 0, "maximum": 1 }))]
    pub accuracy: Option<BTreeMap<String, f64>>,
    /// Which device trained it.
    pub device: String,
}

/// `POST /api/v1/trials/{id}/complete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTrial {
    pub lease_token: String,
    pub metrics: TrialMetrics,
}

/// `POST /api/v1/trials/{id}/fail`: the worker could not train the trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTrial {
    pub lease_token: String,
    pub error: String,
    /// `false` for errors that another attempt cannot fix (an invalid architecture); the
    /// candidate is failed at once.
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

/// Every 4xx/5xx body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: String,
    /// Field path → problem, for validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldProblem>,
}

/// One field's problem in an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldProblem {
    pub path: String,
    pub message: String,
}
