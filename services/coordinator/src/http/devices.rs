//! Devices and their latency tables: list (read), and upload of profiled entries (worker token),
//! so a worker on the target device can fill the coordinator's table over HTTP.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::{Reader, WorkerAuth};
use super::{ApiError, AppState, JsonBody, PathParam};
use crate::store::{DeviceRow, LutEntryRow, NewLutEntry};

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

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices", get(list))
        .route("/api/v1/devices/{fingerprint}/lut", get(entries).post(upload))
}

async fn list(_: Reader, State(state): State<AppState>) -> Result<Json<DeviceList>, ApiError> {
    let devices = state.store.list_devices().await?;
    let workers = state.store.list_workers().await?;
    let workers = workers
        .into_iter()
        .map(|(id, device, hostname, last_seen_at_ms)| WorkerView { id, device, hostname, last_seen_at_ms })
        .collect();
    Ok(Json(DeviceList { devices, workers }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingParam {
    pub setting: String,
}

/// A fingerprint from the path: one with a NUL cannot name a device (and cannot be looked up).
fn check_fingerprint(fingerprint: &str) -> Result<(), ApiError> {
    match api::spec::text_problem(fingerprint, api::spec::MAX_KEY_CHARS, true) {
        Some(problem) => Err(ApiError::BadRequest(format!("fingerprint: {problem}"))),
        None => Ok(()),
    }
}

async fn entries(
    _: Reader,
    State(state): State<AppState>,
    PathParam(fingerprint): PathParam<String>,
    params: Result<Query<SettingParam>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LutTable>, ApiError> {
    check_fingerprint(&fingerprint)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(problem) = api::spec::text_problem(&params.setting, api::spec::MAX_KEY_CHARS, true) {
        return Err(ApiError::BadRequest(format!("setting: {problem}")));
    }
    let setting: lut::DeploymentSetting = params
        .setting
        .parse()
        .map_err(|e: lut::SettingError| ApiError::BadRequest(format!("setting: {}", e.reason)))?;
    if state.store.get_device(&fingerprint).await?.is_none() {
        return Err(ApiError::NotFound(format!("device `{fingerprint}` is not known")));
    }
    let rows = state.store.lut_entries(&fingerprint, &setting.key()).await?;
    Ok(Json(LutTable { device: fingerprint, setting: setting.key(), entries: rows }))
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

async fn upload(
    _: WorkerAuth,
    State(state): State<AppState>,
    PathParam(fingerprint): PathParam<String>,
    JsonBody(entries): JsonBody<Vec<UploadedEntry>>,
) -> Result<Json<LutStored>, ApiError> {
    check_fingerprint(&fingerprint)?;
    if state.store.get_device(&fingerprint).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "device `{fingerprint}` is not registered; register a worker on it first"
        )));
    }
    for (i, e) in entries.iter().enumerate() {
        if let Some(problem) = api::spec::text_problem(&e.op_key, api::spec::MAX_KEY_CHARS, true) {
            return Err(ApiError::field(format!("[{i}].op_key"), problem));
        }
        if e.setting_key.chars().nth(api::spec::MAX_KEY_CHARS).is_some() {
            return Err(ApiError::field(
                format!("[{i}].setting_key"),
                format!("must be at most {} characters", api::spec::MAX_KEY_CHARS),
            ));
        }
        if let Err(err) = e.setting_key.parse::<lut::DeploymentSetting>() {
            return Err(ApiError::field(format!("[{i}].setting_key"), err.reason));
        }
        let finite = [e.median_ms, e.p10_ms, e.p90_ms].iter().all(|v| v.is_finite() && *v >= 0.0);
        if !finite || e.p10_ms > e.median_ms || e.median_ms > e.p90_ms {
            return Err(ApiError::field(
                format!("[{i}]"),
                "latencies must be finite, non-negative and p10 ≤ median ≤ p90",
            ));
        }
        if e.repeats < 1 {
            return Err(ApiError::field(format!("[{i}].repeats"), "must be at least 1"));
        }
    }
    let rows: Vec<NewLutEntry> = entries
        .iter()
        .map(|e| NewLutEntry {
            device: fingerprint.clone(),
            setting_key: e.setting_key.parse::<lut::DeploymentSetting>().map(|s| s.key()).unwrap_or_default(),
            op_key: e.op_key.clone(),
            median_ms: e.median_ms,
            p10_ms: e.p10_ms,
            p90_ms: e.p90_ms,
            repeats: e.repeats,
        })
        .collect();
    // All or none: a table is never left half-uploaded.
    state.store.put_lut_entries(&rows).await?;
    Ok(Json(LutStored { stored: entries.len() }))
}
