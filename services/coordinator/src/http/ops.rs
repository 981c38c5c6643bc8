//! Operations: liveness, readiness, Prometheus metrics, and the OpenAPI document.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::Value;

use super::auth::Reader;
use super::routing::Routes;
use super::{ApiError, AppState};
use crate::app::views::{Health, Ready};

pub fn routes() -> Routes {
    Routes::new()
        .get("/healthz", healthz)
        .get("/readyz", readyz)
        .get("/metrics", metrics)
        .get("/api/openapi.json", openapi)
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    state.store.ping().await.map_err(ApiError::Unavailable)?;
    Ok(Json(Ready { status: "ready", backend: state.store.backend() }))
}

/// Open like every read; behind a token when reads are protected (queue depths and request
/// counts say how busy the service is).
async fn metrics(_: Reader, State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let m = &state.metrics;
    let (queued, leased) = state.store.queue_depth().await?;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let series: [(&str, &str, &str, u64); 9] = [
        ("frontier_http_requests_total", "counter", "HTTP requests served.", load(&m.requests)),
        ("frontier_leases_granted_total", "counter", "Trials leased to workers.", load(&m.leases_granted)),
        ("frontier_trials_completed_total", "counter", "Trial results accepted.", load(&m.trials_completed)),
        (
            "frontier_trials_failed_total",
            "counter",
            "Trial failures reported by workers.",
            load(&m.trials_failed),
        ),
        (
            "frontier_stale_results_refused_total",
            "counter",
            "Heartbeats and results refused for a stale lease token.",
            load(&m.stale_results_refused),
        ),
        (
            "frontier_leases_reclaimed_total",
            "counter",
            "Expired leases taken back by the sweeper.",
            load(&m.leases_reclaimed),
        ),
        ("frontier_searches_created_total", "counter", "Searches created.", load(&m.searches_created)),
        ("frontier_trials_queued", "gauge", "Trials waiting for a worker.", queued.max(0) as u64),
        ("frontier_trials_leased", "gauge", "Trials being trained.", leased.max(0) as u64),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in series {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
