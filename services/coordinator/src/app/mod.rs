//! The application layer, below the API ([`crate::http`]) and the web UI ([`crate::ui`]): the
//! shared state and configuration, who may do what ([`access`]), and the operations both
//! front ends serve (leaderboard pages, candidate exports, scaling fits), returning the domain
//! error [`AppError`] that each front end translates (a JSON body, or an HTML page). `http` and
//! `ui` never import each other; [`crate::routes`] puts them together.

pub mod access;
pub mod candidates;
pub mod error;
pub mod leaderboard;
pub mod rungs;
pub mod scaling;
pub mod views;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

pub use self::error::AppError;
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
    /// The folder of tabular benchmarks `table:NAME` searches are answered from.
    pub table_dir: Option<std::path::PathBuf>,
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
            table_dir: None,
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
    pub sessions: Arc<access::Sessions>,
}

impl AppState {
    pub fn new(store: Store, config: ApiConfig) -> Self {
        Self {
            driver: SearchDriver::new(store.clone()).with_tables(config.table_dir.clone()),
            store,
            metrics: Arc::new(Metrics::default()),
            work_queued: Arc::new(Notify::new()),
            search_changed: Arc::new(Notify::new()),
            in_flight: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            sessions: Arc::new(access::Sessions::new(&config)),
            config: Arc::new(config),
        }
    }
}
