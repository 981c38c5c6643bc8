//! Operations: liveness, readiness, Prometheus metrics, and the OpenAPI document.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(ApiError::Unavailable)?;
    Ok(Json(json!({ "status": "ready", "backend": state.store.backend() })))
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let m = &state.metrics;
    let (queued, leased) = state.store.queue_depth().await?;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
    };
    counter("frontier_http_requests_total", "HTTP requests served.", m.requests.load(Ordering::Relaxed));
    counter(
        "frontier_leases_granted_total",
        "Trials leased to workers.",
        m.leases_granted.load(Ordering::Relaxed),
    );
    counter(
        "frontier_trials_completed_total",
        "Trial results accepted.",
        m.trials_completed.load(Ordering::Relaxed),
    );
    counter(
        "frontier_trials_failed_total",
        "Trial failures reported by workers.",
        m.trials_failed.load(Ordering::Relaxed),
    );
    counter(
        "frontier_stale_results_refused_total",
        "Heartbeats and results refused for a stale lease token.",
        m.stale_results_refused.load(Ordering::Relaxed),
    );
    counter(
        "frontier_leases_reclaimed_total",
        "Expired leases taken back by the sweeper.",
        m.leases_reclaimed.load(Ordering::Relaxed),
    );
    counter(
        "frontier_searches_created_total",
        "Searches created.",
        m.searches_created.load(Ordering::Relaxed),
    );
    out.push_str(&format!(
        "# HELP frontier_trials_queued Trials waiting for a worker.\n# TYPE frontier_trials_queued gauge\nfrontier_trials_queued {queued}\n"
    ));
    out.push_str(&format!(
        "# HELP frontier_trials_leased Trials being trained.\n# TYPE frontier_trials_leased gauge\nfrontier_trials_leased {leased}\n"
    ));
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
