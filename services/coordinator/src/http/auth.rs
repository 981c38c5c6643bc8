//! The API's bearer-token extractors, on the access rules of [`crate::app::access`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::app::access::{Presented, presented, read_allowed};

/// The admin token: create and cancel searches.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match presented(parts, state).ok_or(ApiError::Unauthorized)? {
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
        match presented(parts, state).ok_or(ApiError::Unauthorized)? {
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
