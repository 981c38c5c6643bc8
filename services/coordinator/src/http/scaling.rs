//! Scaling laws: fit a sweep search (admin), list and read fits, and recommend a depth and width
//! for a latency budget from a fit and a device's latency table.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::auth::{Admin, Reader};
use super::{ApiError, AppState, JsonBody, PathParam};
use crate::scaling::{self, FitRequest, RecommendRequest, Recommendation, ScalingError, ScalingFit};
use crate::store::ScalingFitRow;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/searches/{id}/scaling-fits", post(create).get(list))
        .route("/api/v1/scaling-fits/{id}", get(show))
        .route("/api/v1/scaling-fits/{id}/recommend", post(recommend))
}

impl From<ScalingError> for ApiError {
    fn from(e: ScalingError) -> Self {
        match e {
            ScalingError::Field { field, message } => ApiError::field(field, message),
            ScalingError::State(message) => ApiError::Conflict(message),
        }
    }
}

/// A stored row as the API shows it.
pub fn fit_view(row: ScalingFitRow) -> Result<ScalingFit, ApiError> {
    let mut fit: ScalingFit = serde_json::from_value(row.report)
        .map_err(|e| ApiError::Internal(format!("stored scaling fit {} does not parse: {e}", row.id)))?;
    fit.id = row.id;
    fit.search_id = row.search_id;
    fit.created_at_ms = row.created_at_ms;
    Ok(fit)
}

async fn sweep_spec(state: &AppState, search_id: i64) -> Result<api::SearchSpec, ApiError> {
    let row = state
        .store
        .get_search(search_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("search {search_id} does not exist")))?;
    serde_json::from_value(row.spec)
        .map_err(|e| ApiError::Internal(format!("stored spec of search {search_id} does not parse: {e}")))
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    JsonBody(request): JsonBody<FitRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = sweep_spec(&state, id).await?;
    let pattern = scaling::sweep_pattern(&spec)?.to_vec();
    let members = state.store.search_members(id).await?;
    let trials = state.store.search_trials(id).await?;
    let points = scaling::sweep_points(&pattern, &members, &trials);
    // Bootstrap refits are CPU work: off the async threads.
    let fit = tokio::task::spawn_blocking(move || scaling::fit_sweep(&pattern, &points, &request))
        .await
        .map_err(|e| ApiError::Internal(format!("fit task: {e}")))??;
    let report = serde_json::to_value(&fit).map_err(|e| ApiError::Internal(e.to_string()))?;
    let row = state.store.insert_scaling_fit(id, fit.form.as_str(), &report).await?;
    Ok((StatusCode::CREATED, Json(fit_view(row)?)))
}

async fn list(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> Result<Json<Vec<ScalingFit>>, ApiError> {
    sweep_spec(&state, id).await?;
    let rows = state.store.list_scaling_fits(id).await?;
    Ok(Json(rows.into_iter().map(fit_view).collect::<Result<_, _>>()?))
}

pub async fn get_fit(state: &AppState, id: i64) -> Result<ScalingFit, ApiError> {
    let row = state
        .store
        .get_scaling_fit(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("scaling fit {id} does not exist")))?;
    fit_view(row)
}

async fn show(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> Result<Json<ScalingFit>, ApiError> {
    Ok(Json(get_fit(&state, id).await?))
}

/// Runs a recommendation for fit `id` (shared by the API and the UI page).
pub async fn run_recommend(
    state: &AppState,
    fit: &ScalingFit,
    request: &RecommendRequest,
) -> Result<Recommendation, ApiError> {
    let spec = sweep_spec(state, fit.search_id).await?;
    for (name, value) in [("device", &request.device), ("setting", &request.setting)] {
        if let Some(problem) =
            value.as_deref().and_then(|v| api::spec::text_problem(v, api::spec::MAX_KEY_CHARS, true))
        {
            return Err(ApiError::field(name, problem));
        }
    }
    let setting: lut::DeploymentSetting = match &request.setting {
        Some(s) => s.parse().map_err(|e: lut::SettingError| ApiError::field("setting", e.reason))?,
        None => spec.target.deployment().map_err(|e| ApiError::field("setting", e.reason))?,
    };
    let (depths, widths) = scaling::recommend_grid(fit, &spec.model, request)?;
    let table = match crate::latency::load_table(&state.store, request.device.as_deref(), &setting).await? {
        Ok(Some(table)) => table,
        Ok(None) => {
            return Err(ApiError::field(
                if request.device.is_some() { "device" } else { "setting" },
                format!(
                    "no latency table for setting `{}`{}; profile one with `frontier lut profile --setting {}`",
                    setting.key(),
                    request.device.as_deref().map(|d| format!(" on device `{d}`")).unwrap_or_default(),
                    setting.key()
                ),
            ));
        }
        Err(reason) => return Err(ApiError::field("device", reason)),
    };
    let device = table.device().to_owned();
    Ok(scaling::recommend(fit, &spec.model, &table, device, setting.key(), &depths, &widths, request)?)
}

async fn recommend(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    JsonBody(request): JsonBody<RecommendRequest>,
) -> Result<Json<Recommendation>, ApiError> {
    let fit = get_fit(&state, id).await?;
    Ok(Json(run_recommend(&state, &fit, &request).await?))
}
