//! The worker protocol: register, lease (long-poll), heartbeat, complete, fail. Every call needs
//! the worker token; heartbeats and results are fenced by the lease token (409 when stale).

use std::time::{Duration, Instant};

use api::spec::{MAX_KEY_CHARS, text_problem};
use api::{
    CompleteTrial, FailTrial, Heartbeat, HeartbeatAck, LeaseGrant, LeaseRequest, RegisterWorker, Registered,
    SearchSpec, TrialJob, TrialMetrics,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::auth::WorkerAuth;
use super::routing::Routes;
use super::{ApiError, AppState, JsonBody, Metrics, PathParam};
use crate::app::views::TrialAck;
use crate::clock::clock_ms;
use crate::store::{Lease, NewDevice, TrialResult};

pub fn routes() -> Routes {
    Routes::new()
        .post("/api/v1/workers/register", register)
        .post("/api/v1/workers/lease", lease)
        .post("/api/v1/trials/{id}/heartbeat", heartbeat)
        .post("/api/v1/trials/{id}/complete", complete)
        .post("/api/v1/trials/{id}/fail", fail)
}

/// An id or key: not blank, at most [`MAX_KEY_CHARS`] characters, no control characters.
fn check_id(path: &str, value: &str) -> Result<(), ApiError> {
    api::key_problem(value).map_or(Ok(()), |problem| Err(ApiError::field(path, problem)))
}

/// A free-text field: at most [`MAX_KEY_CHARS`] characters, no NUL.
fn check_text(path: &str, value: &str) -> Result<(), ApiError> {
    text_problem(value, MAX_KEY_CHARS, false).map_or(Ok(()), |problem| Err(ApiError::field(path, problem)))
}

/// A lease token no lease can have (one with a NUL, which the store cannot even compare, or one
/// far longer than any the coordinator hands out), so the call is stale without asking the store.
fn impossible_token(token: &str) -> bool {
    token.contains('\0') || token.len() > api::MAX_LEASE_TOKEN_CHARS
}

async fn register(
    _: WorkerAuth,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RegisterWorker>,
) -> Result<Json<Registered>, ApiError> {
    check_id("worker_id", &req.worker_id)?;
    check_text("hostname", &req.hostname)?;
    req.device.validate()?;
    let device = NewDevice {
        fingerprint: req.device.fingerprint.clone(),
        name: req.device.name.clone(),
        kind: req.device.kind.clone(),
        info: req.device.info.clone(),
    };
    state.store.register_worker(&req.worker_id, &req.hostname, &device, clock_ms()).await?;
    let ttl = state.config.lease_ttl;
    Ok(Json(Registered {
        worker_id: req.worker_id,
        lease_ttl_ms: ttl.as_millis() as u64,
        heartbeat_interval_ms: (ttl / 4).as_millis() as u64,
    }))
}

async fn lease(
    _: WorkerAuth,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<LeaseRequest>,
) -> Result<Response, ApiError> {
    check_id("worker_id", &req.worker_id)?;
    if state.store.worker_device(&req.worker_id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "worker `{}` is not registered; POST /api/v1/workers/register first",
            req.worker_id
        )));
    }
    let wait = Duration::from_millis(req.wait_ms).min(state.config.long_poll_cap());
    let deadline = Instant::now() + wait;
    let ttl_ms = state.config.lease_ttl.as_millis() as i64;
    loop {
        // Register interest before looking, so a trial queued between the look and the wait
        // still wakes this request.
        let notified = state.work_queued.notified();
        if let Some(lease) = state.store.lease_trial(&req.worker_id, clock_ms(), ttl_ms).await? {
            // A table search's trial is answered here, not trained: look for the next one.
            let spec = search_spec(&state, &lease).await?;
            if spec.table_name().is_some() {
                state.driver.answer_from_table(&lease, &spec).await.map_err(crate::app::AppError::from)?;
                state.search_changed.notify_one();
                continue;
            }
            Metrics::add(&state.metrics.leases_granted, 1);
            state.store.touch_worker(&req.worker_id, clock_ms()).await?;
            let grant = grant(&state, lease, spec).await?;
            return Ok(Json(grant).into_response());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // Wake on new work, or poll again shortly: work queued by another coordinator process
        // does not notify this one.
        let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(500)), notified).await;
    }
}

/// The spec of the search a leased trial belongs to.
async fn search_spec(state: &AppState, lease: &Lease) -> Result<SearchSpec, ApiError> {
    let search = state
        .store
        .get_search(lease.search_id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("trial {} names a missing search", lease.trial_id)))?;
    serde_json::from_value(search.spec)
        .map_err(|e| ApiError::Internal(format!("stored spec does not parse: {e}")))
}

/// Assembles what the worker needs to train a leased trial of the search `spec` describes.
async fn grant(state: &AppState, lease: Lease, spec: SearchSpec) -> Result<LeaseGrant, ApiError> {
    let candidate =
        state.store.get_candidate(lease.candidate_id).await?.ok_or_else(|| {
            ApiError::Internal(format!("trial {} names a missing candidate", lease.trial_id))
        })?;
    let mut architecture: search_space::Architecture = serde_json::from_value(candidate.architecture)
        .map_err(|e| ApiError::Internal(format!("stored architecture does not parse: {e}")))?;
    if let Some(m) = spec.proxy.meta_tokens {
        architecture.model.meta_tokens = m;
    }
    Ok(LeaseGrant {
        trial_id: lease.trial_id,
        search_id: lease.search_id,
        candidate_id: lease.candidate_id,
        attempt: lease.attempt,
        lease_token: lease.lease_token,
        lease_expires_at_ms: lease.lease_expires_at_ms,
        job: TrialJob {
            architecture,
            budget_tokens: lease.budget_tokens as u64,
            seed: crate::search::training_seed(spec.seed, &candidate.arch_hash),
            measure_latency: spec.proxy.measure_latency.then(|| spec.target.setting.clone()),
            proxy: spec.proxy,
        },
    })
}

async fn heartbeat(
    _: WorkerAuth,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    JsonBody(req): JsonBody<Heartbeat>,
) -> Result<Json<HeartbeatAck>, ApiError> {
    // A refused heartbeat changes nothing: the lease is not extended, no progress is kept.
    if let Some(p) = &req.progress {
        p.validate()?;
    }
    if req.notes.len() > api::MAX_TRIAL_NOTES {
        return Err(ApiError::field(
            "notes",
            format!("at most {} notes per heartbeat, got {}", api::MAX_TRIAL_NOTES, req.notes.len()),
        ));
    }
    for (i, note) in req.notes.iter().enumerate() {
        if let Some(problem) = text_problem(&note.message, api::MAX_NOTE_CHARS, false) {
            return Err(ApiError::field(format!("notes[{i}].message"), problem));
        }
    }
    let now = clock_ms();
    let ttl_ms = state.config.lease_ttl.as_millis() as i64;
    let held = if impossible_token(&req.lease_token) {
        Err(crate::store::StoreError::StaleLease { trial_id: id })
    } else {
        state.store.heartbeat(id, &req.lease_token, now, ttl_ms).await
    };
    let expires = match held {
        Ok(e) => e,
        Err(e) => return Err(stale_or(&state, id, e).await),
    };
    if let Some(p) = req.progress {
        let payload = serde_json::to_value(p).unwrap_or_default();
        state.store.record_progress(id, now, &payload).await?;
    }
    for note in &req.notes {
        let payload = serde_json::json!({ "step": note.step, "message": note.message });
        state.store.record_trial_event(id, now, note.kind.as_str(), &payload).await?;
    }
    Ok(Json(HeartbeatAck { lease_expires_at_ms: expires }))
}

/// A store error for a fenced call: 404 for a trial that does not exist, else as usual (409 for
/// a stale lease).
async fn stale_or(state: &AppState, id: i64, e: crate::store::StoreError) -> ApiError {
    if matches!(e, crate::store::StoreError::StaleLease { .. }) {
        Metrics::add(&state.metrics.stale_results_refused, 1);
        if let Ok(None) = state.store.get_trial(id).await {
            return ApiError::NotFound(format!("trial {id} does not exist"));
        }
    }
    e.into()
}

async fn complete(
    _: WorkerAuth,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    JsonBody(req): JsonBody<CompleteTrial>,
) -> Result<Json<TrialAck>, ApiError> {
    let m = &req.metrics;
    // Checked before anything is read or stored: a refused result leaves the trial leased, so
    // the worker can send a corrected one or report a failure.
    m.validate()?;
    let diverged = m.outcome == "diverged";
    let (val_loss, ppl) = if diverged { (f64::NAN, f64::NAN) } else { (m.val_loss, m.ppl) };
    let meets_floors = if diverged { None } else { meets_floors(&state, id, m).await? };
    let result = TrialResult {
        val_loss,
        ppl,
        result_json: serde_json::to_value(m).unwrap_or_default(),
        measured_latency_ms: m.measured_latency_ms,
        meets_floors,
    };
    let done = if impossible_token(&req.lease_token) {
        Err(crate::store::StoreError::StaleLease { trial_id: id })
    } else {
        state.store.complete_trial(id, &req.lease_token, &result, clock_ms()).await
    };
    let trial = match done {
        Ok(t) => t,
        Err(e) => return Err(stale_or(&state, id, e).await),
    };
    Metrics::add(&state.metrics.trials_completed, 1);
    state.search_changed.notify_one();
    Ok(Json(TrialAck { trial_id: trial.id, state: trial.state }))
}

/// Whether a result meets its search's accuracy floors; `None` when the search has none (or the
/// trial does not exist: completing it then answers 404).
async fn meets_floors(state: &AppState, trial_id: i64, m: &TrialMetrics) -> Result<Option<bool>, ApiError> {
    let Some(trial) = state.store.get_trial(trial_id).await? else {
        return Ok(None);
    };
    let Some(search) = state.store.get_search(trial.search_id).await? else {
        return Ok(None);
    };
    let goals = api::AccuracyGoals::of_spec(&search.spec);
    if goals.min.is_empty() {
        return Ok(None);
    }
    Ok(Some(goals.met(&m.accuracy.clone().unwrap_or_default())))
}

async fn fail(
    _: WorkerAuth,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    JsonBody(req): JsonBody<FailTrial>,
) -> Result<Json<TrialAck>, ApiError> {
    // Kept for people to read: at most 4000 characters, NUL (which Postgres text cannot hold) shown
    // as U+FFFD.
    let error: String = req
        .error
        .chars()
        .take(api::MAX_ERROR_CHARS)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    let failed = if impossible_token(&req.lease_token) {
        Err(crate::store::StoreError::StaleLease { trial_id: id })
    } else {
        state.store.fail_trial(id, &req.lease_token, &error, req.retryable, clock_ms()).await
    };
    let trial = match failed {
        Ok(t) => t,
        Err(e) => return Err(stale_or(&state, id, e).await),
    };
    Metrics::add(&state.metrics.trials_failed, 1);
    state.work_queued.notify_waiters();
    state.search_changed.notify_one();
    Ok(Json(TrialAck { trial_id: trial.id, state: trial.state }))
}
