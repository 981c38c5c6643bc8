//! Bearer-token extractors. Tokens are compared in constant time so response timing does not leak
//! how much of a guess was right.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
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

/// Any token when reads are protected; nothing otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if state.config.protect_reads {
            presented(parts, state)?;
        }
        Ok(Reader)
    }
}
