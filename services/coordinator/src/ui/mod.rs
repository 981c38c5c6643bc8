//! The web UI under `/ui`: server-rendered pages over the same store the API reads.
//!
//! # Layout
//! - [`searches`]: the searches list and one search's page (Pareto plot, progress plots, the
//!   sortable, paginated leaderboard table and its CSV).
//! - [`candidate`]: one candidate: its layer strip, dimensions, per-layer latency breakdown,
//!   loss curve, lineage, trials and export links.
//! - [`devices`]: devices, their latency tables and the latest fidelity figures with a
//!   measured-vs-estimated scatter plot.
//! - [`scaling`]: one scaling-law fit of a sweep: coefficients, the extrapolation check, loss
//!   against depth per width with the fitted curves, and a depth-width recommendation for a
//!   latency budget over the evaluated grid.
//! - [`chart`]: plot geometry; [`format`]: how numbers, sizes and times read.
//!
//! Pages are askama templates (`templates/`, HTML-escaped by default) with charts drawn as SVG by
//! the templates from coordinates computed here; one small stylesheet and one small script
//! (live refresh of running searches) are served from `/ui/static`. Reads follow the API's rule:
//! open unless `protect_reads` is set, and then a token is needed — as a bearer header — or the
//! signed session cookie `/ui/login` sets in exchange for one (never the token itself; `Secure`
//! when the request came over TLS; wrong sign-ins are throttled per client, see
//! [`crate::app::access::Sessions`]). Every error, a bad path parameter or a wrong method
//! included, is an HTML page.

pub mod candidate;
pub mod chart;
pub mod devices;
pub mod format;
pub mod scaling;
pub mod searches;

use askama::Template;
use axum::Router;
use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::app::access::{SESSION_COOKIE, read_allowed, token_known};
use crate::app::{AppError, AppState};
use crate::store::StoreError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/searches") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/searches") }))
        .route("/ui/searches", get(searches::list))
        .route("/ui/searches/{id}", get(searches::show))
        .route("/ui/searches/{id}/leaderboard.csv", get(searches::csv))
        .route("/ui/candidates/{id}", get(candidate::show))
        .route("/ui/devices", get(devices::list))
        .route("/ui/scaling-fits/{id}", get(scaling::show))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/static/style.css", get(style))
        .route("/ui/static/app.js", get(script))
}

/// A page could not be shown: rendered as an HTML page with the status and the reason.
#[derive(Debug)]
pub enum UiError {
    NotFound(String),
    BadRequest(String),
    MethodNotAllowed(String),
    Unauthorized { next: String },
    Internal(String),
    Unavailable,
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "ui: store error");
        AppError::from(e).into()
    }
}

/// A failure of the shared application code, as a page error.
impl From<AppError> for UiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotFound(m) => Self::NotFound(m),
            AppError::BadRequest(m) | AppError::Conflict(m) => Self::BadRequest(m),
            AppError::Invalid(fields) => Self::BadRequest(
                fields.iter().map(|f| format!("{}: {}", f.path, f.message)).collect::<Vec<_>>().join("; "),
            ),
            AppError::Unavailable(_) => Self::Unavailable,
            AppError::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(format!("template: {e}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    status: u16,
    message: &'a str,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    title: &'a str,
    next: &'a str,
    failed: bool,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Self::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            Self::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, m.clone()),
            Self::Unauthorized { next } => {
                let page = LoginPage { title: "Sign in", next, failed: false };
                return (StatusCode::UNAUTHORIZED, render_html(&page)).into_response();
            }
            Self::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable; try again shortly".into())
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "ui: internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "something went wrong inside the coordinator".into())
            }
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let page = ErrorPage { title, status: status.as_u16(), message: &message };
        (status, render_html(&page)).into_response()
    }
}

/// Renders a template; a template error (a bug) becomes a plain 500.
pub fn render_html(t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "ui: template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

/// Query parameters of a page, parsed with the bad one named.
pub fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, UiError> {
    q.map(|Query(q)| q).map_err(|e| UiError::BadRequest(e.body_text()))
}

/// A path parameter (`{id}`) that answers the HTML 400 page naming the parameter when it does
/// not parse.
#[derive(Debug)]
pub struct UiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for UiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(UiPath(value)),
            Err(e) => Err(UiError::BadRequest(format!("path: {}", e.body_text()))),
        }
    }
}

/// The address a request came from, when the server recorded it (not in in-process tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(ClientAddr(addr.map(|a| a.0.ip())))
    }
}

/// Allowed to read: reads are open, or the request carries a known token (header or cookie).
#[derive(Debug, Clone, Copy)]
pub struct UiReader;

impl FromRequestParts<AppState> for UiReader {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if read_allowed(parts, state) {
            Ok(UiReader)
        } else {
            let next = parts.uri.path_and_query().map_or("/ui/searches", |p| p.as_str()).to_owned();
            Err(UiError::Unauthorized { next })
        }
    }
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// Only pages of the UI itself are followed after signing in (no open redirect).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/ui/searches",
    }
}

async fn login_form(q: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    let next = q.ok().and_then(|Query(q)| q.next);
    render_html(&LoginPage { title: "Sign in", next: safe_next(next.as_deref()), failed: false })
}

/// Exchanges a token for a signed session cookie. Wrong tokens are counted per client address;
/// past the limit the client is answered 429 with `Retry-After` until its window has passed,
/// whatever it sends.
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: header::HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let client = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let now = std::time::Instant::now();
    if let Some(wait) = state.sessions.throttled(&client, now) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(client = %client, "sign-in throttled after repeated wrong tokens");
        let page = ErrorPage {
            title: "Too many attempts",
            status: 429,
            message: &format!("Too many wrong sign-ins from this address; try again in {secs} s."),
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, render_html(&page)).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        return response;
    }
    let Form(form) = match form {
        Ok(f) => f,
        Err(e) => return UiError::BadRequest(e.body_text()).into_response(),
    };
    let next = safe_next(form.next.as_deref()).to_owned();
    if !token_known(form.token.trim(), &state) {
        state.sessions.failed(&client, now);
        let page = LoginPage { title: "Sign in", next: &next, failed: true };
        return (StatusCode::UNAUTHORIZED, render_html(&page)).into_response();
    }
    state.sessions.succeeded(&client);
    let session = state.sessions.issue(crate::clock::clock_ms());
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let secure = if state.config.secure_cookies || tls { "; Secure" } else { "" };
    let max_age = state.config.session_ttl.as_secs();
    let cookie =
        format!("{SESSION_COOKIE}={session}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, next)]).into_response()
}

/// A method a UI page does not answer (or a path under `/ui` that does not exist): an HTML page.
pub fn fallback_page(status: StatusCode, message: String) -> Response {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => UiError::MethodNotAllowed(message).into_response(),
        _ => UiError::NotFound(message).into_response(),
    }
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")],
        include_str!("../../static/style.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")],
        include_str!("../../static/app.js"),
    )
}
