//! Candidates: detail (layers, metrics, loss curve, lineage, trials) and export.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Reader;
use super::routing::Routes;
use super::{ApiError, AppState, PathParam};
use crate::app::candidates::{HISTORY_LIMIT, export_document};
use crate::app::leaderboard::entry;
use crate::app::views::{CandidateDetail, LayerView, LineageStep};
use crate::store::CandidateRow;

pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/candidates/{id}", show)
        .get("/api/v1/candidates/{id}/export", export)
        .get("/api/v1/searches/{id}/best/export", export_best)
}

async fn get_row(state: &AppState, id: i64) -> Result<CandidateRow, ApiError> {
    state
        .store
        .get_candidate(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("candidate {id} does not exist")))
}

async fn show(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> Result<Json<CandidateDetail>, ApiError> {
    let c = get_row(&state, id).await?;
    let arch: search_space::Architecture = serde_json::from_value(c.architecture.clone())
        .map_err(|e| ApiError::Internal(format!("stored architecture does not parse: {e}")))?;
    let layers: Vec<LayerView> = match arch.expand() {
        Ok(model) => model
            .layers
            .iter()
            .map(|l| LayerView {
                kind: l.kind().code().to_owned(),
                params: l.params(model.hidden_size),
                spec: l.clone(),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    // Lineage: parent, grandparent, ... (bounded: a chain in one search cannot be longer than it).
    let mut lineage = Vec::new();
    let mut parent = c.parent_id;
    while let Some(pid) = parent {
        if lineage.len() >= 1000 {
            break;
        }
        let Some(p) = state.store.get_candidate(pid).await? else {
            break;
        };
        parent = p.parent_id;
        lineage.push(LineageStep { id: p.id, ppl: p.ppl, mutation: p.mutation });
    }
    let trials = state.store.candidate_trials(id).await?;
    let history = state.store.candidate_history(id, HISTORY_LIMIT).await?;
    let loss_curve = c.metrics.as_ref().and_then(|m| m.get("loss_curve")).cloned().unwrap_or(Value::Null);
    Ok(Json(CandidateDetail {
        candidate: entry(&c),
        search_id: c.search_id,
        architecture: c.architecture,
        layers,
        metrics: c.metrics,
        loss_curve,
        error: c.error,
        lineage,
        trials,
        history,
    }))
}

/// `?format=frontier|nemotron-flash`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    #[serde(default)]
    pub format: Option<String>,
}

/// The requested export format; `frontier` when none is given.
fn format_of(params: Result<Query<ExportParams>, QueryRejection>) -> Result<String, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(params.format.unwrap_or_else(|| "frontier".to_owned()))
}

fn download(c: &CandidateRow, format: &str) -> Result<Response, ApiError> {
    let doc = export_document(c, format)?;
    let name = if format == "frontier" { "architecture.json" } else { "config.json" };
    let body = serde_json::to_string_pretty(&doc).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"candidate-{}-{name}\"", c.id)),
        ],
        body,
    )
        .into_response())
}

async fn export(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let c = get_row(&state, id).await?;
    download(&c, &format_of(params)?)
}

/// The best feasible candidate of a search: the lowest perplexity at the highest rung.
pub async fn best_candidate(state: &AppState, search_id: i64) -> Result<CandidateRow, ApiError> {
    state
        .store
        .get_search(search_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("search {search_id} does not exist")))?;
    state
        .store
        .best_candidate(search_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("search {search_id} has no scored feasible candidate yet")))
}

async fn export_best(
    _: Reader,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let c = best_candidate(&state, id).await?;
    download(&c, &format_of(params)?)
}
