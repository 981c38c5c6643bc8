//! Requests and responses between the coordinator, workers and clients. Plain data, and the
//! checks a worker's message must pass before the coordinator stores any of it
//! ([`TrialMetrics::validate`], [`TrialProgress::validate`], [`DeviceInfo::validate`]): finite
//! values, losses that agree with their perplexity, counts and lengths within sane bounds.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use search_space::{Architecture, ValidationErrors};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{MAX_KEY_CHARS, ProxyBudget, TEXT, text_problem};

/// An id or key (a worker id, a device fingerprint): at least one character that is not
/// whitespace, and no control characters (what [`key_problem`] checks, as a JSON Schema pattern).
pub const KEY: &str = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$";

/// Largest step, token or parameter count a worker may report (10^15: far beyond any proxy run).
pub const MAX_COUNT: u64 = 1_000_000_000_000_000;
/// Largest loss (nats per token) a result may hold: `exp` of it is still a finite perplexity.
pub const MAX_LOSS: f64 = 700.0;
/// Largest duration, in seconds, a worker may report (about 30 years).
pub const MAX_SECONDS: f64 = 1e9;
/// Largest throughput, in tokens per second.
pub const MAX_TOKENS_PER_S: f64 = 1e12;
/// Largest measured decode latency, in milliseconds.
pub const MAX_LATENCY_MS: f64 = 1e9;
/// How far `ppl` may be from `exp(val_loss)`, relative to it.
pub const PPL_TOLERANCE: f64 = 1e-3;
/// Most points of a loss curve (the worker thins its curve to a few hundred).
pub const MAX_LOSS_CURVE_POINTS: usize = 1_024;
/// Most tasks in a result's accuracy map.
pub const MAX_TASKS: usize = 32;
/// Longest task name in an accuracy map, in characters.
pub const MAX_TASK_CHARS: usize = 64;
/// Largest device `info` document, as compact JSON, in bytes.
pub const MAX_DEVICE_INFO_BYTES: usize = 4_096;
/// Longest failure message kept, in characters (longer ones are cut).
pub const MAX_ERROR_CHARS: usize = 4_000;
/// Longest lease token a worker may send back (the coordinator's are far shorter).
pub const MAX_LEASE_TOKEN_CHARS: usize = MAX_KEY_CHARS;

/// A device as a worker describes it: the LUT's device key and what it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    /// Stable key of the (machine, accelerator, software stack): backend, device model, threads.
    #[schemars(length(min = 1, max = MAX_KEY_CHARS), pattern(KEY))]
    pub fingerprint: String,
    /// For people, e.g. `cpu (flex, 2 threads)` or `NVIDIA H200`.
    #[schemars(length(max = MAX_KEY_CHARS), pattern(TEXT))]
    pub name: String,
    /// `cpu` or `cuda`.
    #[schemars(length(max = MAX_KEY_CHARS), pattern(TEXT))]
    pub kind: String,
    /// Anything else worth keeping (memory, driver, thread count): at most
    /// [`MAX_DEVICE_INFO_BYTES`] bytes of JSON.
    #[serde(default)]
    pub info: Value,
}

impl DeviceInfo {
    /// The fingerprint names a device (not blank, no control characters), the name and kind are
    /// short text, and `info` is at most [`MAX_DEVICE_INFO_BYTES`] of JSON (it is shown to every
    /// reader of `/api/v1/devices`). Paths start at `device`.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if let Some(p) = key_problem(&self.fingerprint) {
            errs.push("device.fingerprint", p);
        }
        for (path, value) in [("device.name", &self.name), ("device.kind", &self.kind)] {
            if let Some(p) = text_problem(value, MAX_KEY_CHARS, false) {
                errs.push(path, p);
            }
        }
        let info_bytes = self.info.to_string().len();
        if info_bytes > MAX_DEVICE_INFO_BYTES {
            errs.push(
                "device.info",
                format!("must be at most {MAX_DEVICE_INFO_BYTES} bytes of JSON, got {info_bytes}"),
            );
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// What is wrong with an id or key (a worker id, a device fingerprint), if anything: blank, longer
/// than [`MAX_KEY_CHARS`], or holding a control character (a newline in an id would forge a log
/// line; a NUL cannot be stored).
pub fn key_problem(key: &str) -> Option<String> {
    text_problem(key, MAX_KEY_CHARS, true).or_else(|| {
        key.chars().any(char::is_control).then(|| "must not contain control characters".to_owned())
    })
}

/// Pushes a problem when `value` is not a finite number in `min..=max`.
fn check_range(errs: &mut ValidationErrors, path: &str, value: f64, min: f64, max: f64) {
    if !value.is_finite() || value < min || value > max {
        errs.push(path, format!("must be a finite number in [{min}, {max}], got {value}"));
    }
}

/// Pushes a problem when a count is above [`MAX_COUNT`].
fn check_count(errs: &mut ValidationErrors, path: &str, value: u64) {
    if value > MAX_COUNT {
        errs.push(path, format!("must be at most {MAX_COUNT}, got {value}"));
    }
}

/// `POST /api/v1/workers/register`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWorker {
    /// A stable id chosen by the worker (hostname plus a suffix); re-registering updates it.
    #[schemars(length(min = 1, max = MAX_KEY_CHARS), pattern(KEY))]
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
    #[schemars(length(min = 1, max = MAX_KEY_CHARS), pattern(KEY))]
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

impl TrialProgress {
    /// Counts at most [`MAX_COUNT`], `step ≤ steps`, a finite non-negative loss and throughput.
    /// Paths start at `progress`.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        check_count(&mut errs, "progress.step", self.step);
        check_count(&mut errs, "progress.steps", self.steps);
        check_count(&mut errs, "progress.tokens", self.tokens);
        if self.step > self.steps {
            errs.push("progress.step", format!("must not exceed steps ({} > {})", self.step, self.steps));
        }
        check_range(&mut errs, "progress.loss", self.loss, 0.0, MAX_LOSS);
        check_range(&mut errs, "progress.tokens_per_s", self.tokens_per_s, 0.0, MAX_TOKENS_PER_S);
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
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
    /// Training loss along the way: (step, loss), thinned to at most a few hundred points (at
    /// most [`MAX_LOSS_CURVE_POINTS`]).
    #[serde(default)]
    #[schemars(length(max = MAX_LOSS_CURVE_POINTS))]
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

impl TrialMetrics {
    /// Whether the result can be believed, before anything of it is stored: the outcome is known;
    /// every count is at most [`MAX_COUNT`] and every duration and rate finite and non-negative;
    /// for a completed run the losses are finite, in `[0, MAX_LOSS]`, and `ppl` is `exp(val_loss)`
    /// within [`PPL_TOLERANCE`]; the loss curve, the accuracy map and the device name are
    /// bounded in length. Paths start at `metrics`. A diverged run's losses are not read.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        let completed = match self.outcome.as_str() {
            "completed" => true,
            "diverged" => false,
            other => {
                let shown: String = other.chars().take(40).collect();
                errs.push("metrics.outcome", format!("must be completed or diverged, got `{shown}`"));
                false
            }
        };
        if completed {
            check_range(&mut errs, "metrics.val_loss", self.val_loss, 0.0, MAX_LOSS);
            check_range(&mut errs, "metrics.train_loss", self.train_loss, 0.0, MAX_LOSS);
            if !(self.ppl.is_finite() && self.ppl >= 1.0) {
                errs.push(
                    "metrics.ppl",
                    format!("must be a finite perplexity of at least 1, got {}", self.ppl),
                );
            } else if self.val_loss.is_finite() && (0.0..=MAX_LOSS).contains(&self.val_loss) {
                let expected = self.val_loss.exp();
                if ((self.ppl - expected) / expected).abs() > PPL_TOLERANCE {
                    errs.push(
                        "metrics.ppl",
                        format!(
                            "must be exp(val_loss) = {expected} (within a relative {PPL_TOLERANCE}), got {}",
                            self.ppl
                        ),
                    );
                }
            }
        }
        check_count(&mut errs, "metrics.steps", self.steps);
        check_count(&mut errs, "metrics.tokens", self.tokens);
        check_count(&mut errs, "metrics.params", self.params);
        check_range(&mut errs, "metrics.tokens_per_s", self.tokens_per_s, 0.0, MAX_TOKENS_PER_S);
        check_range(&mut errs, "metrics.train_seconds", self.train_seconds, 0.0, MAX_SECONDS);
        if self.loss_curve.len() > MAX_LOSS_CURVE_POINTS {
            errs.push(
                "metrics.loss_curve",
                format!("must have at most {MAX_LOSS_CURVE_POINTS} points, got {}", self.loss_curve.len()),
            );
        } else if let Some(i) = self.loss_curve.iter().position(|&(step, loss)| {
            step > MAX_COUNT || !loss.is_finite() || !(0.0..=MAX_LOSS).contains(&loss)
        }) {
            errs.push(
                format!("metrics.loss_curve[{i}]"),
                format!("must be (step ≤ {MAX_COUNT}, a finite loss in [0, {MAX_LOSS}])"),
            );
        }
        if let Some(l) = self.measured_latency_ms
            && !(l.is_finite() && l > 0.0 && l <= MAX_LATENCY_MS)
        {
            errs.push(
                "metrics.measured_latency_ms",
                format!("must be a positive number of milliseconds, at most {MAX_LATENCY_MS}"),
            );
        }
        if let Some(accuracy) = &self.accuracy {
            if accuracy.len() > MAX_TASKS {
                errs.push(
                    "metrics.accuracy",
                    format!("must name at most {MAX_TASKS} tasks, got {}", accuracy.len()),
                );
            } else {
                for (task, a) in accuracy {
                    let shown: String =
                        task.chars().take(MAX_TASK_CHARS).filter(|c| !c.is_control()).collect();
                    if task.chars().nth(MAX_TASK_CHARS).is_some()
                        || task.chars().any(char::is_control)
                        || task.is_empty()
                    {
                        errs.push(
                            format!("metrics.accuracy.{shown}"),
                            format!(
                                "a task name must be 1 to {MAX_TASK_CHARS} characters, no control characters"
                            ),
                        );
                    } else if !(a.is_finite() && (0.0..=1.0).contains(a)) {
                        errs.push(
                            format!("metrics.accuracy.{shown}"),
                            format!("must be an accuracy in [0, 1], got {a}"),
                        );
                    }
                }
            }
        }
        if let Some(p) = text_problem(&self.device, MAX_KEY_CHARS, false) {
            errs.push("metrics.device", p);
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result(val_loss: f64) -> TrialMetrics {
        TrialMetrics {
            outcome: "completed".into(),
            val_loss,
            ppl: val_loss.exp(),
            train_loss: val_loss,
            steps: 10,
            tokens: 4096,
            tokens_per_s: 1000.0,
            train_seconds: 4.0,
            params: 12_345,
            loss_curve: vec![(1, 5.5), (10, 3.0)],
            measured_latency_ms: None,
            accuracy: None,
            device: "cpu".into(),
        }
    }

    fn paths(m: &TrialMetrics) -> Vec<String> {
        m.validate().err().map(|e| e.0.into_iter().map(|f| f.path).collect()).unwrap_or_default()
    }

    #[test]
    fn a_result_must_be_possible() {
        assert!(paths(&result(1.5)).is_empty());
        assert_eq!(
            paths(&TrialMetrics { val_loss: -5.0, ppl: -1.0, ..result(1.5) }),
            ["metrics.val_loss", "metrics.ppl"]
        );
        assert_eq!(paths(&TrialMetrics { ppl: 5.0, ..result(1.5) }), ["metrics.ppl"]);
        assert!(paths(&TrialMetrics { ppl: 1.5f64.exp() * (1.0 + 1e-4), ..result(1.5) }).is_empty());
        assert_eq!(paths(&TrialMetrics { steps: u64::MAX, ..result(1.5) }), ["metrics.steps"]);
        assert_eq!(paths(&TrialMetrics { train_seconds: -1.0, ..result(1.5) }), ["metrics.train_seconds"]);
        assert_eq!(paths(&TrialMetrics { tokens_per_s: f64::NAN, ..result(1.5) }), ["metrics.tokens_per_s"]);
        let curve = vec![(0, 1.0); MAX_LOSS_CURVE_POINTS + 1];
        assert_eq!(paths(&TrialMetrics { loss_curve: curve, ..result(1.5) }), ["metrics.loss_curve"]);
        // A diverged run's losses are not read; its counts are.
        let diverged = TrialMetrics { outcome: "diverged".into(), val_loss: 0.0, ppl: 0.0, ..result(1.5) };
        assert!(paths(&diverged).is_empty());
        assert_eq!(paths(&TrialMetrics { params: u64::MAX, ..diverged }), ["metrics.params"]);
    }

    #[test]
    fn progress_and_devices_are_bounded() {
        let p = TrialProgress { step: 3, steps: 10, tokens: 100, loss: 2.0, tokens_per_s: 5.0 };
        assert!(p.validate().is_ok());
        assert!(TrialProgress { step: 11, ..p }.validate().is_err());
        assert!(TrialProgress { loss: f64::INFINITY, ..p }.validate().is_err());
        let device =
            DeviceInfo { fingerprint: "cpu".into(), name: "n".into(), kind: "cpu".into(), info: Value::Null };
        assert!(device.validate().is_ok());
        let big = DeviceInfo { info: Value::String("x".repeat(MAX_DEVICE_INFO_BYTES)), ..device.clone() };
        assert_eq!(big.validate().unwrap_err().0[0].path, "device.info");
        let forged = DeviceInfo { fingerprint: "cpu\nINFO forged".into(), ..device };
        assert_eq!(forged.validate().unwrap_err().0[0].path, "device.fingerprint");
    }
}
