//! The coordinator's one HTTP error type: every 4xx carries a JSON [`ErrorBody`] naming the
//! problem (and, for validation, each field's path); a 5xx logs its cause and says only that
//! something went wrong inside.

use api::{ErrorBody, FieldProblem};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use search_space::{ParseError, ValidationErrors};

use crate::app::AppError;
use crate::scaling::ScalingError;
use crate::search::DriverError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body parsed but a field has the wrong type, an unknown name or an invalid value.
    #[error("invalid request")]
    Invalid(Vec<FieldProblem>),
    /// A query parameter is wrong.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request took longer than {0:?}")]
    Timeout(std::time::Duration),
    #[error("the server is handling as many requests as it may; retry shortly")]
    Overloaded,
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable(_) | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn field(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldProblem { path: path.into(), message: message.into() }])
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(fields) => Self::Invalid(fields),
            AppError::BadRequest(m) => Self::BadRequest(m),
            AppError::NotFound(m) => Self::NotFound(m),
            AppError::Conflict(m) => Self::Conflict(m),
            AppError::Unavailable(cause) => Self::Unavailable(cause),
            AppError::Internal(cause) => Self::Internal(cause),
        }
    }
}

/// Domain errors a handler meets through `?`, translated by way of [`AppError`].
macro_rules! via_app_error {
    ($($source:ty),*) => {$(
        impl From<$source> for ApiError {
            fn from(e: $source) -> Self {
                AppError::from(e).into()
            }
        }
    )*};
}
via_app_error!(ValidationErrors, ParseError, StoreError, DriverError, ScalingError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = match &self {
            Self::Invalid(fields) => {
                let summary = fields.iter().map(|f| format!("{}: {}", f.path, f.message)).collect::<Vec<_>>();
                ErrorBody {
                    error: format!("invalid request: {}", summary.join("; ")),
                    fields: fields.clone(),
                }
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                ErrorBody { error: "internal error".into(), fields: Vec::new() }
            }
            Self::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                ErrorBody { error: self.to_string(), fields: Vec::new() }
            }
            other => ErrorBody { error: other.to_string(), fields: Vec::new() },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            // RFC 6750: a 401 names the scheme the client should use.
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Timeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
