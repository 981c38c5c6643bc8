//! Devices and their latency tables: list (read), and upload of profiled entries (worker token),
//! so a worker on the target device can fill the coordinator's table over HTTP.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Reader, WorkerAuth};
use super::{ApiError, AppState, JsonBody};
use crate::store::NewLutEntry;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices", get(list))
        .route("/api/v1/devices/{fingerprint}/lut", get(entries).post(upload))
}

async fn list(_: Reader, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let devices = state.store.list_devices().await?;
    let workers = state.store.list_workers().await?;
    let workers: Vec<Value> = workers
        .into_iter()
        .map(|(id, device, hostname, last_seen_at_ms)| {
            json!({ "id": id, "device": device, "hostname": hostname, "last_seen_at_ms": last_seen_at_ms })
        })
        .collect();
    Ok(Json(json!({ "devices": devices, "workers": workers })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingParam {
    pub setting: String,
}

async fn entries(
    _: Reader,
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
    params: Result<Query<SettingParam>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let setting: lut::DeploymentSetting = params
        .setting
        .parse()
        .map_err(|e: lut::SettingError| ApiError::BadRequest(format!("setting: {}", e.reason)))?;
    if state.store.get_device(&fingerprint).await?.is_none() {
        return Err(ApiError::NotFound(format!("device `{fingerprint}` is not known")));
    }
    let rows = state.store.lut_entries(&fingerprint, &setting.key()).await?;
    Ok(Json(json!({ "device": fingerprint, "setting": setting.key(), "entries": rows })))
}

/// One uploaded measurement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadedEntry {
    pub setting_key: String,
    pub op_key: String,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub repeats: i64,
}

async fn upload(
    _: WorkerAuth,
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
    JsonBody(entries): JsonBody<Vec<UploadedEntry>>,
) -> Result<Json<Value>, ApiError> {
    if state.store.get_device(&fingerprint).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "device `{fingerprint}` is not registered; register a worker on it first"
        )));
    }
    for (i, e) in entries.iter().enumerate() {
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
    Ok(Json(json!({ "stored": entries.len() })))
}
