//! The coordinator's one HTTP error type: every 4xx carries a JSON [`ErrorBody`] naming the
//! problem (and, for validation, each field's path); a 5xx logs its cause and says only that
//! something went wrong inside.

use api::{ErrorBody, FieldProblem};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use search_space::{ParseError, ValidationErrors};

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

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        Self::Invalid(e.0.into_iter().map(|f| FieldProblem { path: f.path, message: f.message }).collect())
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::Syntax { path, message } => Self::Invalid(vec![FieldProblem { path, message }]),
            ParseError::Invalid(v) => v.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::StaleLease { trial_id } => Self::Conflict(format!(
                "lease on trial {trial_id} is stale: it expired and was handed to another worker, or the trial ended"
            )),
            StoreError::Connect { .. } => Self::Unavailable(e),
            StoreError::Database(ref db) if connection_lost(db) => Self::Unavailable(e),
            other => Self::Internal(format!("{other}: {:?}", std::error::Error::source(&other))),
        }
    }
}

/// Whether `e` means the database went away (restart, outage, a terminated backend) rather than
/// that the statement was wrong: a 503 the client may retry, not a 500.
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        // SQLSTATE class 08 (connection exception); 57P01..57P03 (admin or crash shutdown,
        // cannot connect now), as Postgres reports a restart or a terminated backend; 53300 (too
        // many connections); 55000, which is what a connection to a database that is closed to
        // new connections (`ALLOW_CONNECTIONS false`) gets.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300" | "55000")
        }),
        _ => false,
    }
}

impl From<DriverError> for ApiError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Store(s) => s.into(),
            DriverError::NoSuchSearch(id) => Self::NotFound(format!("search {id} does not exist")),
        }
    }
}

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
