//! Scaling fits as stored, and recommendations from them (the API and the web UI's page).

use super::{AppError, AppState};
use crate::scaling::{self, RecommendRequest, Recommendation, ScalingFit};
use crate::store::ScalingFitRow;

pub fn fit_view(row: ScalingFitRow) -> Result<ScalingFit, AppError> {
    let mut fit: ScalingFit = serde_json::from_value(row.report)
        .map_err(|e| AppError::Internal(format!("stored scaling fit {} does not parse: {e}", row.id)))?;
    fit.id = row.id;
    fit.search_id = row.search_id;
    fit.created_at_ms = row.created_at_ms;
    Ok(fit)
}

pub async fn sweep_spec(state: &AppState, search_id: i64) -> Result<api::SearchSpec, AppError> {
    let row = state
        .store
        .get_search(search_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("search {search_id} does not exist")))?;
    serde_json::from_value(row.spec)
        .map_err(|e| AppError::Internal(format!("stored spec of search {search_id} does not parse: {e}")))
}

pub async fn get_fit(state: &AppState, id: i64) -> Result<ScalingFit, AppError> {
    let row = state
        .store
        .get_scaling_fit(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("scaling fit {id} does not exist")))?;
    fit_view(row)
}

/// Runs a recommendation for fit `id` (shared by the API and the UI page).
pub async fn run_recommend(
    state: &AppState,
    fit: &ScalingFit,
    request: &RecommendRequest,
) -> Result<Recommendation, AppError> {
    let spec = sweep_spec(state, fit.search_id).await?;
    for (name, value) in [("device", &request.device), ("setting", &request.setting)] {
        if let Some(problem) =
            value.as_deref().and_then(|v| api::spec::text_problem(v, api::spec::MAX_KEY_CHARS, true))
        {
            return Err(AppError::field(name, problem));
        }
    }
    let setting: lut::DeploymentSetting = match &request.setting {
        Some(s) => s.parse().map_err(|e: lut::SettingError| AppError::field("setting", e.reason))?,
        None => spec.target.deployment().map_err(|e| AppError::field("setting", e.reason))?,
    };
    let (depths, widths) = scaling::recommend_grid(fit, &spec.model, request)?;
    let table = match crate::latency::load_table(&state.store, request.device.as_deref(), &setting).await? {
        Ok(Some(table)) => table,
        Ok(None) => {
            return Err(AppError::field(
                if request.device.is_some() { "device" } else { "setting" },
                format!(
                    "no latency table for setting `{}`{}; profile one with `frontier lut profile --setting {}`",
                    setting.key(),
                    request.device.as_deref().map(|d| format!(" on device `{d}`")).unwrap_or_default(),
                    setting.key()
                ),
            ));
        }
        Err(reason) => return Err(AppError::field("device", reason)),
    };
    let device = table.device().to_owned();
    Ok(scaling::recommend(fit, &spec.model, &table, device, setting.key(), &depths, &widths, request)?)
}
