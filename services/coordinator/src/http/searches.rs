//! Searches: create (admin), list, get, cancel (admin), leaderboard, Pareto front.

use api::SearchSpec;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;

use super::auth::{Admin, Reader};
use super::routing::Routes;
use super::{ApiError, AppState, JsonBody, Metrics, PathParam};
use crate::app::leaderboard::{Entry, LeaderboardParams, entry, leaderboard_query, next_cursor};
use crate::app::views::{LeaderboardPage, ParetoPoint, ParetoView, SearchView};
use crate::clock::clock_ms;
use crate::latency::LatencyModel;
use crate::pareto;
use crate::store::SearchRow;

pub fn routes() -> Routes {
    Routes::new()
        .post("/api/v1/searches", create)
        .get("/api/v1/searches", list)
        .get("/api/v1/searches/{id}", show)
        .post("/api/v1/searches/{id}/cancel", cancel)
        .get("/api/v1/searches/{id}/leaderboard", leaderboard)
        .get("/api/v1/searches/{id}/pareto", pareto_front)
}

async fn view(state: &AppState, row: SearchRow) -> Result<SearchView, ApiError> {
    let progress = state.store.search_progress(row.id).await?;
    let error = state.store.search_error(row.id).await?;
    let algorithm = row.spec.pointer("/algorithm/kind").and_then(Value::as_str).unwrap_or("").to_owned();
    Ok(SearchView {
        id: row.id,
        name: row.name,
        status: row.status,
        algorithm,
        error,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
        progress,
        spec: row.spec,
    })
}

/// Validates a spec fully, including that the latency table it needs exists.
pub async fn check_spec(state: &AppState, spec: &SearchSpec) -> Result<(), ApiError> {
    spec.validate()?;
    let setting = spec.target.deployment().map_err(|e| ApiError::field("target.setting", e.reason))?;
    if let Some(table) = state.driver.table_for(spec) {
        // Answered from a tabular benchmark: its latencies and runs stand in for the LUT and
        // the workers, so only its model settings must match.
        let table = table.map_err(|reason| ApiError::field("proxy.corpus", reason))?;
        if table.manifest.spec.model != spec.model {
            return Err(ApiError::field(
                "model",
                format!(
                    "table `{}` was trained with other model settings; use the table's",
                    table.manifest.name
                ),
            ));
        }
        return Ok(());
    }
    let needs_table = spec.target.latency_budget_ms.is_some()
        || spec.target.latency_budget_of.is_some()
        || matches!(spec.algorithm, api::Algorithm::Nsga2 { .. });
    if needs_table {
        match crate::latency::load(&state.store, spec.target.device.as_deref(), &setting).await? {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ApiError::field(
                    "target",
                    format!(
                        "no latency table for setting `{}`{}; profile one first (`frontier lut profile --setting {}`)",
                        setting.key(),
                        spec.target
                            .device
                            .as_deref()
                            .map(|d| format!(" on device `{d}`"))
                            .unwrap_or_default(),
                        setting.key()
                    ),
                ));
            }
            Err(reason) => return Err(ApiError::field("target.device", reason)),
        }
    }
    Ok(())
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(mut spec): JsonBody<SearchSpec>,
) -> Result<impl IntoResponse, ApiError> {
    check_spec(&state, &spec).await?;
    // A search without target.device is pinned to the one device with a table at its setting,
    // so a table another device uploads later cannot make the running search ambiguous.
    if spec.target.device.is_none()
        && let Ok(setting) = spec.target.deployment()
        && let Ok(Some(device)) = crate::latency::resolve_device(&state.store, None, &setting).await?
    {
        spec.target.device = Some(device);
    }
    if let Some(rel) = spec.target.latency_budget_of.clone() {
        spec.target.latency_budget_ms =
            Some(rel.factor * reference_latency(&state, &spec, &rel.preset).await?);
    }
    let value = serde_json::to_value(&spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    let row = state.store.create_search(&spec.name, &value).await?;
    Metrics::add(&state.metrics.searches_created, 1);
    // Record the first generation now, so the caller sees queued trials in the response.
    state.driver.step(row.id).await?;
    state.work_queued.notify_waiters();
    state.search_changed.notify_one();
    let row =
        state.store.get_search(row.id).await?.ok_or_else(|| ApiError::Internal("search vanished".into()))?;
    Ok((StatusCode::CREATED, Json(view(&state, row).await?)))
}

/// The estimated latency of preset `preset` at the spec's target, from the table the search
/// will use (its tabular benchmark, or the target device's latency table).
async fn reference_latency(state: &AppState, spec: &SearchSpec, preset: &str) -> Result<f64, ApiError> {
    let field = "target.latency_budget_of.preset";
    let model = search_space::presets::preset(preset)
        .ok_or_else(|| ApiError::field(field, format!("`{preset}` is not a preset")))?
        .expand()
        .map_err(|e| ApiError::field(field, e.to_string()))?;
    let estimate = match state.driver.table_for(spec) {
        Some(table) => table.map_err(|r| ApiError::field("proxy.corpus", r))?.estimate_ms(&model),
        None => {
            let setting =
                spec.target.deployment().map_err(|e| ApiError::field("target.setting", e.reason))?;
            match crate::latency::load(&state.store, spec.target.device.as_deref(), &setting).await? {
                Ok(Some(latency)) => latency.estimate_ms(&model),
                Ok(None) => Err("no latency table at the target".to_owned()),
                Err(reason) => Err(reason),
            }
        }
    };
    estimate.map_err(|reason| {
        ApiError::field(field, format!("cannot estimate `{preset}` at the target: {reason}"))
    })
}

async fn list(_: Reader, State(state): State<AppState>) -> Result<Json<Vec<SearchView>>, ApiError> {
    let mut out = Vec::new();
    for row in state.store.list_searches().await? {
        out.push(view(&state, row).await?);
    }
    Ok(Json(out))
}

async fn get_row(state: &AppState, id: i64) -> Result<SearchRow, ApiError> {
    state.store.get_search(id).await?.ok_or_else(|| ApiError::NotFound(format!("search {id} does not exist")))
}

async fn show(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> Result<Json<SearchView>, ApiError> {
    let row = get_row(&state, id).await?;
    Ok(Json(view(&state, row).await?))
}

async fn cancel(
    _: Admin,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> Result<Json<SearchView>, ApiError> {
    let row = get_row(&state, id).await?;
    if !state.store.cancel_search(id, clock_ms()).await? {
        return Err(ApiError::Conflict(format!("search {id} has already ended ({})", row.status)));
    }
    let row = get_row(&state, id).await?;
    Ok(Json(view(&state, row).await?))
}

async fn leaderboard(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    params: Result<Query<LeaderboardParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LeaderboardPage>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let query = leaderboard_query(&params)?;
    get_row(&state, id).await?;
    let rows = state.store.leaderboard(id, &query).await?;
    let next_cursor = next_cursor(&rows, &query);
    let items: Vec<Entry> = rows.iter().map(entry).collect();
    Ok(Json(LeaderboardPage { items, next_cursor }))
}

async fn pareto_front(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> Result<Json<ParetoView>, ApiError> {
    let row = get_row(&state, id).await?;
    let budget = row.spec.pointer("/target/latency_budget_ms").and_then(Value::as_f64);
    // Points from the narrow plot read; full rows only for the (few) front members.
    let all = state.store.search_points(id).await?;
    let mut front = Vec::new();
    for p in pareto::front(&all) {
        if let Some(c) = state.store.get_candidate(p.id).await? {
            front.push(entry(&c));
        }
    }
    let points = all
        .iter()
        .filter_map(|c| {
            let (ppl, latency_ms) = (c.ppl?, c.est_latency_ms?);
            Some(ParetoPoint { id: c.id, ppl, latency_ms, feasible: c.feasible })
        })
        .collect();
    Ok(Json(ParetoView { latency_budget_ms: budget, front, points }))
}
