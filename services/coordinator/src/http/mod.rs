//! The HTTP API under `/api/v1`, plus `/healthz`, `/readyz`, `/metrics` and `/api/openapi.json`:
//! a front end over [`crate::app`] that only translates (requests in, JSON and status codes out).
//!
//! # Layout
//! - [`error`]: the one error type and its JSON body.
//! - [`auth`]: bearer-token extractors: an admin token for mutating search endpoints, a worker
//!   token for worker endpoints (401 without a known token, 403 with the other kind's token);
//!   reads are open unless `protect_reads` is set.
//! - [`searches`], [`candidates`], [`workers`], [`devices`], [`ops`]: one `router()` each, merged
//!   by [`router`] and served by [`crate::routes::app`], which tests drive with `oneshot`.
//!
//! Bodies are read as bytes and parsed with field-path reporting, so malformed JSON is a 400 and
//! a wrong field a 422 with its path, never a 5xx.

pub mod auth;
pub mod candidates;
pub mod devices;
pub mod error;
pub mod ops;
pub mod routing;
pub mod scaling;
pub mod searches;
pub mod workers;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

pub use self::error::ApiError;
use self::routing::Routes;
use crate::app::{AppState, Metrics};

/// Every API route, without state: [`crate::routes::app`] adds the web UI, the limits and the
/// state.
pub fn router() -> Router<AppState> {
    routes().into_router()
}

/// Every API route with its method: what [`router`] serves, listed for the check against the
/// OpenAPI document ([`crate::openapi::OPERATIONS`]).
pub fn routes() -> Routes {
    Routes::new()
        .merge(searches::routes())
        .merge(candidates::routes())
        .merge(workers::routes())
        .merge(devices::routes())
        .merge(scaling::routes())
        .merge(ops::routes())
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
