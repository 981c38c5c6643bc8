//! Scaling laws: fit a sweep search (admin), list and read fits, and recommend a depth and width
//! for a latency budget from a fit and a device's latency table.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::auth::{Admin, Reader};
use super::routing::Routes;
use super::{ApiError, AppState, JsonBody, PathParam};
use crate::app::scaling::{fit_view, get_fit, run_recommend, sweep_spec};
use crate::scaling::{self, FitRequest, RecommendRequest, Recommendation, ScalingFit};

pub fn routes() -> Routes {
    Routes::new()
        .post("/api/v1/searches/{id}/scaling-fits", create)
        .get("/api/v1/searches/{id}/scaling-fits", list)
        .get("/api/v1/scaling-fits/{id}", show)
        .post("/api/v1/scaling-fits/{id}/recommend", recommend)
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

async fn show(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> Result<Json<ScalingFit>, ApiError> {
    Ok(Json(get_fit(&state, id).await?))
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
