//! The whole service's routes: the API ([`crate::http`]) and the web UI ([`crate::ui`]) over one
//! state, with the request limits and the answers for paths and methods nobody serves (JSON,
//! or an HTML page under `/ui`).

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};

use crate::app::{AppState, Metrics};
use crate::http::ApiError;

/// The whole service.
pub fn app(state: AppState) -> Router {
    let limit = state.config.body_limit_bytes;
    Router::new()
        .merge(crate::http::router())
        .merge(crate::ui::router())
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limit_requests))
        .with_state(state)
}

/// Counts every request, answers 503 (with `Retry-After`) when [`ApiConfig::max_concurrent_requests`]
/// are already being handled, and 408 when one takes longer than [`ApiConfig::request_timeout`]
/// (reading its body included, so a client trickling a body cannot hold a slot for long).
/// Liveness (`/healthz`) is answered whatever the load, so an orchestrator does not restart a
/// coordinator for being busy.
async fn limit_requests(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    Metrics::add(&state.metrics.requests, 1);
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    let timeout = state.config.request_timeout;
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(timeout).into_response(),
    }
}

/// Any path no route serves: a 404 with the usual JSON error body (an HTML page under `/ui`).
async fn no_such_route(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path: String = uri.path().chars().take(200).collect();
    if is_ui(&path) {
        return crate::ui::fallback_page(axum::http::StatusCode::NOT_FOUND, format!("no such page: {path}"));
    }
    ApiError::NotFound(format!("no such route: {path}")).into_response()
}

fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// A method a served path does not answer: a 405 with the usual JSON error body (an HTML page
/// under `/ui`).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path: String = uri.path().chars().take(200).collect();
    let message = format!("{method} is not allowed on {path}");
    if is_ui(&path) {
        return crate::ui::fallback_page(axum::http::StatusCode::METHOD_NOT_ALLOWED, message);
    }
    ApiError::MethodNotAllowed(message).into_response()
}
