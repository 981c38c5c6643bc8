//! Devices and their latency tables: list (read), upload of profiled entries (worker token), so
//! a worker on the target device can fill the coordinator's table over HTTP, and deletion of a
//! table or of one row (admin token). Uploaded rows are checked by [`lut::parse_row`], the same
//! check every stored row passes when a table is loaded.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::auth::{Admin, Reader, WorkerAuth};
use super::routing::Routes;
use super::{ApiError, AppState, JsonBody, PathParam};
use crate::app::views::{DeviceList, LutDeleted, LutStored, LutTable, UploadedEntry, WorkerView};
use crate::store::NewLutEntry;

pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/devices", list)
        .get("/api/v1/devices/{fingerprint}/lut", entries)
        .post("/api/v1/devices/{fingerprint}/lut", upload)
        .delete("/api/v1/devices/{fingerprint}/lut", delete)
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
    // Each row is parsed like a profiled one and stored under its canonical keys.
    let mut rows = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let raw = lut::RawRow {
            setting_key: &e.setting_key,
            op_key: &e.op_key,
            median_ms: e.median_ms,
            p10_ms: e.p10_ms,
            p90_ms: e.p90_ms,
            repeats: e.repeats,
        };
        let (setting, entry) = lut::parse_row(&raw)
            .map_err(|err| ApiError::field(format!("[{i}].{}", err.field), err.reason))?;
        rows.push(NewLutEntry {
            device: fingerprint.clone(),
            setting_key: setting.key(),
            op_key: entry.op.to_string(),
            median_ms: entry.median_ms,
            p10_ms: entry.p10_ms,
            p90_ms: entry.p90_ms,
            repeats: i64::from(entry.repeats),
        });
    }
    // All or none: a table is never left half-uploaded.
    state.store.put_lut_entries(&rows).await?;
    Ok(Json(LutStored { stored: entries.len() }))
}

/// Which rows a deletion removes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Only this setting's table (every setting's when absent).
    #[serde(default)]
    pub setting: Option<String>,
    /// Only the row with this operator key, as stored (it need not parse).
    #[serde(default)]
    pub op: Option<String>,
}

/// Deletes a device's latency tables, one of them, or one row: how an admin removes a table
/// that is wrong (or a stored row that does not parse) so it can be profiled again.
async fn delete(
    _: Admin,
    State(state): State<AppState>,
    PathParam(fingerprint): PathParam<String>,
    params: Result<Query<DeleteParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LutDeleted>, ApiError> {
    check_fingerprint(&fingerprint)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let setting = match &params.setting {
        Some(s) => {
            if let Some(problem) = api::spec::text_problem(s, api::spec::MAX_KEY_CHARS, true) {
                return Err(ApiError::BadRequest(format!("setting: {problem}")));
            }
            let setting: lut::DeploymentSetting = s
                .parse()
                .map_err(|e: lut::SettingError| ApiError::BadRequest(format!("setting: {}", e.reason)))?;
            Some(setting.key())
        }
        None => None,
    };
    if let Some(problem) =
        params.op.as_deref().and_then(|op| api::spec::text_problem(op, 4 * api::spec::MAX_KEY_CHARS, true))
    {
        return Err(ApiError::BadRequest(format!("op: {problem}")));
    }
    if state.store.get_device(&fingerprint).await?.is_none() {
        return Err(ApiError::NotFound(format!("device `{fingerprint}` is not known")));
    }
    let deleted =
        state.store.delete_lut_entries(&fingerprint, setting.as_deref(), params.op.as_deref()).await?;
    tracing::info!(device = ?fingerprint, setting = ?setting, op = ?params.op, deleted, "latency entries deleted");
    Ok(Json(LutDeleted { deleted }))
}
