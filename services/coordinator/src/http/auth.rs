//! Bearer-token extractors. Tokens are compared in constant time so response timing does not leak
//! how much of a guess was right.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;

use super::{ApiError, AppState};

/// Which token a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Admin,
    Worker,
}

fn presented(parts: &Parts, state: &AppState) -> Result<Presented, ApiError> {
    let token = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    if constant_time_eq(token.as_bytes(), state.config.admin_token.expose().as_bytes()) {
        Ok(Presented::Admin)
    } else if constant_time_eq(token.as_bytes(), state.config.worker_token.expose().as_bytes()) {
        Ok(Presented::Worker)
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The cookie the web UI's sign-in sets; it carries a token for reads only.
pub const TOKEN_COOKIE: &str = "frontier_token";

/// Whether `token` is the admin or the worker token.
pub fn token_known(token: &str, state: &AppState) -> bool {
    constant_time_eq(token.as_bytes(), state.config.admin_token.expose().as_bytes())
        || constant_time_eq(token.as_bytes(), state.config.worker_token.expose().as_bytes())
}

/// The token in the request's [`TOKEN_COOKIE`], if any.
fn cookie_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value)
}

/// Whether a read is allowed: reads are open, or a known token comes as a bearer header or in
/// the sign-in cookie. (Mutations never accept the cookie, so a page cannot be tricked into one.)
pub fn read_allowed(parts: &Parts, state: &AppState) -> bool {
    !state.config.protect_reads
        || presented(parts, state).is_ok()
        || cookie_token(parts).is_some_and(|t| token_known(t, state))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admin token: create and cancel searches.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match presented(parts, state)? {
            Presented::Admin => Ok(Admin),
            Presented::Worker => {
                Err(ApiError::Forbidden("this endpoint needs the admin token, not a worker token"))
            }
        }
    }
}

/// The worker token: register, lease, heartbeat, complete, fail.
#[derive(Debug, Clone, Copy)]
pub struct WorkerAuth;

impl FromRequestParts<AppState> for WorkerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match presented(parts, state)? {
            Presented::Worker => Ok(WorkerAuth),
            Presented::Admin => {
                Err(ApiError::Forbidden("this endpoint needs the worker token, not the admin token"))
            }
        }
    }
}

/// Any token (bearer header or the UI's sign-in cookie) when reads are protected; nothing
/// otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if read_allowed(parts, state) { Ok(Reader) } else { Err(ApiError::Unauthorized) }
    }
}
