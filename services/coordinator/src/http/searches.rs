//! Searches: create (admin), list, get, cancel (admin), leaderboard, Pareto front.

use api::SearchSpec;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Router, response::IntoResponse};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{Admin, Reader};
use super::{ApiError, AppState, JsonBody, Metrics, PathParam};
use crate::clock::clock_ms;
use crate::pareto;
use crate::store::{CandidateRow, CursorValue, LeaderboardQuery, SearchRow, SortKey};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/searches", post(create).get(list))
        .route("/api/v1/searches/{id}", get(show))
        .route("/api/v1/searches/{id}/cancel", post(cancel))
        .route("/api/v1/searches/{id}/leaderboard", get(leaderboard))
        .route("/api/v1/searches/{id}/pareto", get(pareto_front))
}

/// A search as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchView {
    pub id: i64,
    pub name: String,
    #[schemars(extend("enum" = ["pending", "running", "completed", "cancelled", "failed"]))]
    pub status: String,
    /// The algorithm's `kind`.
    #[schemars(extend("enum" = ["aging_evolution", "nsga2", "random", "sweep"]))]
    pub algorithm: String,
    /// Why the search failed.
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub progress: crate::store::SearchProgress,
    /// The spec as stored, defaults filled in.
    #[schemars(with = "SearchSpec")]
    pub spec: Value,
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
    let needs_table =
        spec.target.latency_budget_ms.is_some() || matches!(spec.algorithm, api::Algorithm::Nsga2 { .. });
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

/// Leaderboard query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardParams {
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub feasible: Option<bool>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One leaderboard row.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Entry {
    pub id: i64,
    pub arch_hash: String,
    pub name: Option<String>,
    /// Operator codes, e.g. `D F M2 F A F`.
    pub pattern: String,
    pub hidden_size: i64,
    pub params: i64,
    pub est_latency_ms: Option<f64>,
    pub measured_latency_ms: Option<f64>,
    pub memory_bytes: i64,
    pub ppl: Option<f64>,
    pub val_loss: Option<f64>,
    pub rung: i64,
    pub feasible: bool,
    pub status: crate::store::CandidateStatus,
    pub parent_id: Option<i64>,
    pub mutation: Option<String>,
    /// Per-task accuracy on synthetic corpora.
    pub accuracy: Option<Value>,
}

/// One page of a leaderboard.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LeaderboardPage {
    pub items: Vec<Entry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A scored candidate in the perplexity × latency plane.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ParetoPoint {
    pub id: i64,
    pub ppl: f64,
    pub latency_ms: f64,
    pub feasible: bool,
}

/// The Pareto front of a search and every scored point.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ParetoView {
    pub latency_budget_ms: Option<f64>,
    pub front: Vec<Entry>,
    pub points: Vec<ParetoPoint>,
}

pub fn entry(c: &CandidateRow) -> Entry {
    let arch: Option<search_space::Architecture> = serde_json::from_value(c.architecture.clone()).ok();
    let pattern = arch
        .as_ref()
        .map(|a| a.operators().iter().map(|o| o.code()).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    Entry {
        id: c.id,
        arch_hash: c.arch_hash.clone(),
        name: arch.and_then(|a| a.name),
        pattern,
        hidden_size: c.hidden_size,
        params: c.params,
        est_latency_ms: c.est_latency_ms,
        measured_latency_ms: c.measured_latency_ms,
        memory_bytes: c.memory_bytes,
        ppl: c.ppl,
        val_loss: c.val_loss,
        rung: c.rung,
        feasible: c.feasible,
        status: c.status,
        parent_id: c.parent_id,
        mutation: c.mutation.clone(),
        accuracy: c.metrics.as_ref().and_then(|m| m.get("accuracy")).filter(|a| !a.is_null()).cloned(),
    }
}

/// Parses leaderboard parameters, naming the bad one.
pub fn leaderboard_query(p: &LeaderboardParams) -> Result<LeaderboardQuery, ApiError> {
    let sort_name = p.sort.as_deref().unwrap_or("ppl");
    let sort = SortKey::from_name(sort_name).ok_or_else(|| {
        let names: Vec<&str> = SortKey::ALL.iter().map(|(n, _)| *n).collect();
        ApiError::BadRequest(format!("sort: unknown key `{sort_name}`; expected one of {}", names.join(", ")))
    })?;
    let descending = match p.order.as_deref().unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => return Err(ApiError::BadRequest(format!("order: expected asc or desc, got `{other}`"))),
    };
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit: must be in 1..=1000, got {limit}")));
    }
    let after = match &p.cursor {
        None => None,
        Some(c) => {
            let bad = || ApiError::BadRequest(format!("cursor: `{c}` is not a cursor from a previous page"));
            let (value, id) = c.rsplit_once('_').ok_or_else(bad)?;
            Some((CursorValue::parse(sort, value).ok_or_else(bad)?, id.parse::<i64>().map_err(|_| bad())?))
        }
    };
    Ok(LeaderboardQuery { sort, descending, feasible_only: p.feasible.unwrap_or(false), limit, after })
}

/// The cursor that continues a page after its last row.
pub fn next_cursor(rows: &[CandidateRow], query: &LeaderboardQuery) -> Option<String> {
    if rows.len() as i64 == query.limit {
        rows.last().map(|c| format!("{}_{}", query.sort.cursor_value(c), c.id))
    } else {
        None
    }
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
