//! Where a search's models will run: the target device, deployment setting and latency budget.

use lut::DeploymentSetting;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::{MAX_KEY_CHARS, MAX_NAME_CHARS, TEXT};

/// The deployment target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Device fingerprint whose latency table scores candidates. `None`: the coordinator's local
    /// device in `frontier run`, otherwise the only device with a table for the setting (the
    /// search is then pinned to it when created). When several devices have a table for the
    /// setting, a search that needs latencies must name one here (422 otherwise).
    #[serde(default)]
    #[schemars(length(max = MAX_KEY_CHARS), pattern(TEXT))]
    pub device: Option<String>,
    /// Deployment setting, e.g. `batch=1,prompt=128,gen=1024` (dtype defaults to bf16).
    #[serde(default = "default_setting")]
    #[schemars(length(min = 1, max = MAX_KEY_CHARS))]
    pub setting: String,
    /// Candidates slower than this (estimated end-to-end decode latency) are infeasible.
    #[serde(default)]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub latency_budget_ms: Option<f64>,
    /// A budget relative to a reference model on the target device, so it binds on whatever
    /// device the search runs for: the coordinator estimates the preset with the target's
    /// latency table when the search is created and sets `latency_budget_ms` to `factor` times
    /// that (both are kept in the stored spec). Give this or `latency_budget_ms`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_budget_of: Option<RelativeBudget>,
}

/// `factor` × the estimated latency of `preset` on the target device and setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelativeBudget {
    /// A preset architecture (`frontier space presets`), e.g. `tiny-transformer`.
    #[schemars(length(min = 1, max = MAX_NAME_CHARS))]
    pub preset: String,
    #[schemars(extend("exclusiveMinimum" = 0), range(max = 100.0))]
    pub factor: f64,
}

fn default_setting() -> String {
    "batch=1,prompt=128,gen=1024".to_owned()
}

impl Default for Target {
    fn default() -> Self {
        Self { device: None, setting: default_setting(), latency_budget_ms: None, latency_budget_of: None }
    }
}

impl Target {
    /// The parsed setting; call after [`crate::SearchSpec::validate`].
    pub fn deployment(&self) -> Result<DeploymentSetting, lut::SettingError> {
        self.setting.parse()
    }
}
