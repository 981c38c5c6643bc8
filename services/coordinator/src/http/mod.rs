//! The HTTP API under `/api/v1`, plus `/healthz`, `/readyz`, `/metrics` and `/api/openapi.json`;
//! [`app`] also serves the web UI ([`crate::ui`]) under `/ui`.
//!
//! # Layout
//! - [`error`]: the one error type and its JSON body.
//! - [`auth`]: bearer-token extractors: an admin token for mutating search endpoints, a worker
//!   token for worker endpoints (401 without a known token, 403 with the other kind's token);
//!   reads are open unless `protect_reads` is set.
//! - [`searches`], [`candidates`], [`workers`], [`devices`], [`ops`]: one `router()` each, merged
//!   by [`app`], which tests drive with `oneshot`.
//!
//! Bodies are read as bytes and parsed with field-path reporting, so malformed JSON is a 400 and
//! a wrong field a 422 with its path, never a 5xx.

pub mod auth;
pub mod candidates;
pub mod devices;
pub mod error;
pub mod ops;
pub mod scaling;
pub mod searches;
pub mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, Semaphore};

pub use self::error::ApiError;
use crate::search::SearchDriver;
use crate::store::Store;

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub admin_token: Secret,
    pub worker_token: Secret,
    /// Require a token (either kind) for read endpoints too.
    pub protect_reads: bool,
    /// A lease lasts this long without a heartbeat.
    pub lease_ttl: Duration,
    /// Longest a lease request may wait for work.
    pub max_long_poll: Duration,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// How often the web UI refreshes the page of a running search.
    pub ui_refresh: Duration,
    /// Longest a request may take, body included, before it is answered 408. Lease long-polls
    /// are capped below it ([`ApiConfig::long_poll_cap`]).
    pub request_timeout: Duration,
    /// Longest a connection may take to send a request's headers, and longest it may sit idle
    /// between requests, before it is closed.
    pub header_read_timeout: Duration,
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Most requests handled at once; more are answered 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Mark the sign-in cookie `Secure` even when the request did not say it came over TLS
    /// (`X-Forwarded-Proto: https` does that).
    pub secure_cookies: bool,
    /// How long a web UI sign-in lasts.
    pub session_ttl: Duration,
    /// Wrong sign-ins from one client within [`ApiConfig::sign_in_window`] before further
    /// attempts are answered 429 until the window has passed.
    pub max_failed_sign_ins: u32,
    pub sign_in_window: Duration,
}

impl ApiConfig {
    pub fn new(admin_token: impl Into<String>, worker_token: impl Into<String>) -> Self {
        Self {
            admin_token: Secret::new(admin_token),
            worker_token: Secret::new(worker_token),
            protect_reads: false,
            lease_ttl: Duration::from_secs(60),
            max_long_poll: Duration::from_secs(20),
            body_limit_bytes: 2 * 1024 * 1024,
            ui_refresh: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_concurrent_requests: 512,
            secure_cookies: false,
            session_ttl: Duration::from_secs(12 * 3600),
            max_failed_sign_ins: 5,
            sign_in_window: Duration::from_secs(300),
        }
    }

    /// Longest a lease request waits for work: `max_long_poll`, but never more than half the
    /// request timeout, so a long-poll always answers (204) before it would time out.
    pub fn long_poll_cap(&self) -> Duration {
        self.max_long_poll.min(self.request_timeout / 2)
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub leases_granted: AtomicU64,
    pub trials_completed: AtomicU64,
    pub trials_failed: AtomicU64,
    pub stale_results_refused: AtomicU64,
    pub leases_reclaimed: AtomicU64,
    pub searches_created: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub driver: SearchDriver,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
    /// Woken when trials are queued (lease long-polls wait on it).
    pub work_queued: Arc<Notify>,
    /// Woken when a search needs a driver step (created, trial finished).
    pub search_changed: Arc<Notify>,
    /// One permit per request being handled ([`ApiConfig::max_concurrent_requests`]).
    pub in_flight: Arc<Semaphore>,
    /// Signs and checks the web UI's sign-in sessions, and throttles wrong sign-ins.
    pub sessions: Arc<auth::Sessions>,
}

impl AppState {
    pub fn new(store: Store, config: ApiConfig) -> Self {
        Self {
            driver: SearchDriver::new(store.clone()),
            store,
            metrics: Arc::new(Metrics::default()),
            work_queued: Arc::new(Notify::new()),
            search_changed: Arc::new(Notify::new()),
            in_flight: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            sessions: Arc::new(auth::Sessions::new(&config)),
            config: Arc::new(config),
        }
    }
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let limit = state.config.body_limit_bytes;
    Router::new()
        .merge(searches::router())
        .merge(candidates::router())
        .merge(workers::router())
        .merge(devices::router())
        .merge(scaling::router())
        .merge(ops::router())
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

/// A path parameter (`{id}`, `{fingerprint}`) that answers a JSON 400 naming the parameter when
/// it does not parse, e.g. an id that is not a 64-bit integer.
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for PathParam<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParam(value)),
            Err(e) => Err(ApiError::BadRequest(format!("path: {}", e.body_text()))),
        }
    }
}

/// A JSON body parsed with field-path errors: 400 when it is not JSON, 422 when a field is wrong,
/// 413 over the body limit.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.config.body_limit_bytes)
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body, telling syntax errors (400) from field errors (422).
///
/// JSON has one number type: `5.0` is the integer 5 to a JSON Schema (and to most clients), so a
/// number with no fractional part is read as an integer wherever the field is one.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    integral_floats_to_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." || path == "?" { "(body)".to_owned() } else { path };
        ApiError::field(path, e.into_inner().to_string())
    })
}

/// Rewrites every float with no fractional part that fits a 64-bit integer as that integer.
/// Float fields read integers unchanged, so only integer fields see a difference.
fn integral_floats_to_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    // An explicit stack: nesting depth is bounded by the parser (128), but recursion is not needed.
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) {
                    // 2^64 and -2^63 are exact as f64; the casts below are exact inside them.
                    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                        *n = serde_json::Number::from(f as u64);
                    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                        *n = serde_json::Number::from(f as i64);
                    }
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            Value::Null | Value::Bool(_) | Value::String(_) => {}
        }
    }
}
