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
use tokio::sync::Notify;

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
        }
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
}

impl AppState {
    pub fn new(store: Store, config: ApiConfig) -> Self {
        Self {
            driver: SearchDriver::new(store.clone()),
            store,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            work_queued: Arc::new(Notify::new()),
            search_changed: Arc::new(Notify::new()),
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
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn count_requests(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    Metrics::add(&state.metrics.requests, 1);
    next.run(request).await
}

/// Any path no route serves: a 404 with the usual JSON error body.
async fn no_such_route(uri: axum::http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::NotFound(format!("no such route: {path}"))
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

/// Wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
