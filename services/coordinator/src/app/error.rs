//! The application's error: what went wrong in domain terms, without a status code or a page.
//! The API turns it into a JSON error ([`crate::http::ApiError`]), the web UI into an HTML page.

use api::FieldProblem;
use search_space::{ParseError, ValidationErrors};

use crate::scaling::ScalingError;
use crate::search::DriverError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A field of the request has an invalid value.
    #[error("invalid request")]
    Invalid(Vec<FieldProblem>),
    /// A parameter (query, format) is wrong.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state of what it names.
    #[error("{0}")]
    Conflict(String),
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    /// A bug or corrupt stored data: the cause is logged, never shown.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    pub fn field(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldProblem { path: path.into(), message: message.into() }])
    }
}

impl From<ValidationErrors> for AppError {
    fn from(e: ValidationErrors) -> Self {
        Self::Invalid(e.0.into_iter().map(|f| FieldProblem { path: f.path, message: f.message }).collect())
    }
}

impl From<ParseError> for AppError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::Syntax { path, message } => Self::Invalid(vec![FieldProblem { path, message }]),
            ParseError::Invalid(v) => v.into(),
        }
    }
}

impl From<StoreError> for AppError {
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

impl From<DriverError> for AppError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Store(s) => s.into(),
            DriverError::NoSuchSearch(id) => Self::NotFound(format!("search {id} does not exist")),
        }
    }
}

impl From<ScalingError> for AppError {
    fn from(e: ScalingError) -> Self {
        match e {
            ScalingError::Field { field, message } => Self::field(field, message),
            ScalingError::State(message) => Self::Conflict(message),
        }
    }
}
