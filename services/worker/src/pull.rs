//! The pull loop: a worker registers with the coordinator, leases trials, trains them, heartbeats
//! while it trains, and posts each result fenced by its lease token.
//!
//! # Runtime model
//! [`Worker::run_once`] is one lease-train-report cycle; [`Worker::run`] repeats it until asked
//! to stop. Training runs on a blocking thread while the async side heartbeats every
//! `heartbeat_interval`. Network errors are retried with exponential backoff (capped), so a
//! coordinator restart only pauses the worker. A result refused with 409 means the lease was
//! lost (it expired and another worker has the trial): the result is dropped, never forced in.
//! On shutdown the current trial is finished and reported before the loop exits.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::proxy::TokenizerChoice;
use api::{
    CompleteTrial, DeviceInfo, FailTrial, Heartbeat, HeartbeatAck, LeaseGrant, LeaseRequest, ProxyBudget,
    RegisterWorker, Registered, TrialJob, TrialMetrics, TrialNote, TrialNoteKind, TrialProgress,
};
use reqwest::StatusCode;

use crate::checkpoint::{CheckpointNote, Checkpointing};
use crate::data::{ContentKey, CorpusSource, DataConfig, TokenizerSpec};
use crate::decode::DecodeSetting;
use crate::run::{DeviceSet, RunError, TrainRun, decode_job, train_job};
use crate::train::{Outcome, Progress, TrainConfig};

/// How to reach the coordinator and what this worker is.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub coordinator: String,
    pub token: String,
    pub worker_id: String,
    /// The devices every trial trains on (several: data parallel); the first is fingerprinted
    /// and measures decode latency.
    pub device: DeviceSet,
    /// Where tokenized corpora and trained tokenizers are cached between trials.
    pub cache_dir: Option<std::path::PathBuf>,
    /// What a relative `proxy.corpus` path in a job is read from (the working directory when
    /// `None`): a container mounts its data here, so specs need not know the mount point.
    pub data_dir: Option<std::path::PathBuf>,
    /// Where trials save checkpoints (local disk, or a shared file system so another worker
    /// can resume a trial); `None` trains without checkpoints.
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// Long-poll wait per lease request.
    pub lease_wait: Duration,
    /// Longest pause between retries when the coordinator is unreachable.
    pub max_backoff: Duration,
}

/// What one cycle did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cycle {
    /// No trial was queued within the long-poll wait.
    Idle,
    /// A trial was trained and its result accepted.
    Completed { trial_id: i64, outcome: String },
    /// Training failed; the failure was reported.
    Failed { trial_id: i64, error: String },
    /// The lease was lost (stale token) or the search cancelled; the result was dropped.
    Dropped { trial_id: i64, reason: String },
}

/// Why the worker could not talk to the coordinator at all.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("coordinator refused the worker token (HTTP {0}); check --token")]
    Auth(u16),
    #[error("coordinator answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("cannot reach the coordinator: {0}")]
    Network(#[from] reqwest::Error),
}

/// A worker bound to one coordinator.
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    device: DeviceInfo,
    http: reqwest::Client,
    registered: Option<Registered>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    pub fn new(config: WorkerConfig, device: DeviceInfo) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Below the coordinator's idle-connection timeout (10 s by default), so a pooled
            // connection is never reused just as the coordinator closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { config, device, http, registered: None, stop: Arc::new(AtomicBool::new(false)) }
    }

    /// Set to make [`Worker::run`] stop after the current trial.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.coordinator.trim_end_matches('/'))
    }

    async fn post<T: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<reqwest::Response, PullError> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.config.token)
            .json(body)
            .timeout(self.config.lease_wait + Duration::from_secs(30))
            .send()
            .await?;
        match response.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(PullError::Auth(response.status().as_u16()))
            }
            _ => Ok(response),
        }
    }

    /// [`Self::post`], with a 5xx answer (the coordinator up but its database not) as an error
    /// that [`Self::with_retry`] retries: a result must outlive a database restart.
    async fn post_or_server_error<T: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<reqwest::Response, PullError> {
        let response = self.post(path, body).await?;
        if response.status().is_server_error() {
            let status = response.status().as_u16();
            return Err(PullError::Http { status, body: response.text().await.unwrap_or_default() });
        }
        Ok(response)
    }

    /// Retries `f` on network errors and 5xx answers with exponential backoff until it succeeds,
    /// fails otherwise, or the worker is stopping (then the last error is returned).
    async fn with_retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, PullError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PullError>>,
    {
        let mut delay = Duration::from_millis(200);
        loop {
            match f().await {
                Err(PullError::Network(e)) => {
                    tracing::warn!(error = %e, "{what}: coordinator unreachable; retrying in {delay:?}");
                    if self.stop.load(Ordering::Relaxed) && what == "lease" {
                        return Err(PullError::Network(e));
                    }
                }
                Err(PullError::Http { status, body }) if status >= 500 => {
                    tracing::warn!(status, %body, "{what}: coordinator error; retrying in {delay:?}");
                }
                other => return other,
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.max_backoff);
        }
    }

    /// Registers (again) with the coordinator.
    pub async fn register(&mut self) -> Result<&Registered, PullError> {
        let body = RegisterWorker {
            worker_id: self.config.worker_id.clone(),
            hostname: hostname(),
            device: self.device.clone(),
        };
        let registered: Registered = self
            .with_retry("register", || async {
                let r = self.post("/api/v1/workers/register", &body).await?;
                json_or_error(r).await
            })
            .await?;
        tracing::info!(worker_id = %registered.worker_id, "registered");
        Ok(self.registered.insert(registered))
    }

    /// One lease → train → report cycle.
    pub async fn run_once(&mut self) -> Result<Cycle, PullError> {
        if self.registered.is_none() {
            self.register().await?;
        }
        let request = LeaseRequest {
            worker_id: self.config.worker_id.clone(),
            wait_ms: self.config.lease_wait.as_millis() as u64,
        };
        let response =
            self.with_retry("lease", || self.post_or_server_error("/api/v1/workers/lease", &request)).await?;
        let grant: LeaseGrant = match response.status() {
            StatusCode::NO_CONTENT => return Ok(Cycle::Idle),
            StatusCode::NOT_FOUND => {
                // The coordinator does not know this worker (a fresh database): register again.
                self.registered = None;
                return Ok(Cycle::Idle);
            }
            _ => json_or_error(response).await?,
        };
        let trial_id = grant.trial_id;
        tracing::info!(trial_id, attempt = grant.attempt, tokens = grant.job.budget_tokens, "leased");
        let interval = Duration::from_millis(
            self.registered.as_ref().map_or(5_000, |r| r.heartbeat_interval_ms.max(100)),
        );

        // Train on a blocking thread; heartbeat from here meanwhile.
        let progress: Arc<Mutex<Option<Progress>>> = Arc::new(Mutex::new(None));
        let job = grant.job.clone();
        let device = self.config.device.clone();
        let paths =
            JobPaths { cache_dir: self.config.cache_dir.clone(), data_dir: self.config.data_dir.clone() };
        let checkpointing = checkpointing_for(&grant, self.config.checkpoint_dir.as_deref());
        let shared = progress.clone();
        let job_checkpoints = checkpointing.clone();
        let mut training =
            tokio::task::spawn_blocking(move || run_job(&job, device, &paths, shared, job_checkpoints));
        let mut lost: Option<String> = None;
        let outcome = loop {
            tokio::select! {
                done = &mut training => break done,
                () = tokio::time::sleep(interval) => {
                    if lost.is_none() {
                        let p = progress.lock().ok().and_then(|p| *p);
                        let notes = checkpointing.as_ref().map(Checkpointing::take_notes).unwrap_or_default();
                        match self.heartbeat(trial_id, &grant.lease_token, p, notes).await {
                            Ok(_) => {}
                            Err(HeartbeatError::Stale) => {
                                lost = Some("lease lost (expired and reclaimed, or the search was cancelled)".into());
                            }
                            Err(HeartbeatError::Other(e)) => tracing::warn!(error = %e, "heartbeat failed"),
                        }
                    }
                }
            }
        };
        if let Some(reason) = lost {
            tracing::warn!(trial_id, %reason, "dropping the result");
            return Ok(Cycle::Dropped { trial_id, reason });
        }
        let outcome = outcome.unwrap_or_else(|e| {
            Err(JobError { message: format!("training panicked: {e}"), retryable: true })
        });
        // Notes the last heartbeat did not carry (a short trial may finish before the first one)
        // reach the history before the result does.
        if let Some(notes) = checkpointing.as_ref().map(Checkpointing::take_notes).filter(|n| !n.is_empty())
            && let Err(e) = self.heartbeat(trial_id, &grant.lease_token, None, notes).await
        {
            tracing::warn!(trial_id, error = ?e, "could not report the trial's checkpoint notes");
        }
        // The trial is over once its result or final failure is accepted: its checkpoints go.
        let finished = |retryable: bool| {
            if let Some(c) = checkpointing.as_ref().filter(|_| !retryable)
                && let Err(e) = c.remove()
            {
                tracing::warn!(trial_id, error = %e, dir = %c.dir.display(), "could not delete the trial's checkpoints");
            }
        };
        match outcome {
            Ok(metrics) => {
                let label = metrics.outcome.clone();
                let body = CompleteTrial { lease_token: grant.lease_token.clone(), metrics };
                let path = format!("/api/v1/trials/{trial_id}/complete");
                let r = self.with_retry("complete", || self.post_or_server_error(&path, &body)).await?;
                if r.status() == StatusCode::CONFLICT {
                    return Ok(Cycle::Dropped { trial_id, reason: "result refused: lease is stale".into() });
                }
                if r.status() == StatusCode::UNPROCESSABLE_ENTITY {
                    // The coordinator found the result impossible and kept the trial leased:
                    // report it as a failure, so it is retried (up to its attempts) at once.
                    let reason = r.text().await.unwrap_or_default();
                    let error = JobError {
                        message: format!("the coordinator refused the result: {reason}"),
                        retryable: true,
                    };
                    return self.report_failure(trial_id, &grant.lease_token, error).await;
                }
                json_or_error::<serde_json::Value>(r).await?;
                finished(false);
                Ok(Cycle::Completed { trial_id, outcome: label })
            }
            Err(e) => {
                let retryable = e.retryable;
                let cycle = self.report_failure(trial_id, &grant.lease_token, e).await?;
                if matches!(cycle, Cycle::Failed { .. }) {
                    finished(retryable);
                }
                Ok(cycle)
            }
        }
    }

    /// Reports that a leased trial could not be trained (or its result was refused).
    async fn report_failure(
        &self,
        trial_id: i64,
        lease_token: &str,
        e: JobError,
    ) -> Result<Cycle, PullError> {
        let body = FailTrial {
            lease_token: lease_token.to_owned(),
            error: e.message.clone(),
            retryable: e.retryable,
        };
        let path = format!("/api/v1/trials/{trial_id}/fail");
        let r = self.with_retry("fail", || self.post_or_server_error(&path, &body)).await?;
        if r.status() == StatusCode::CONFLICT {
            return Ok(Cycle::Dropped { trial_id, reason: "failure refused: lease is stale".into() });
        }
        json_or_error::<serde_json::Value>(r).await?;
        Ok(Cycle::Failed { trial_id, error: e.message })
    }

    async fn heartbeat(
        &self,
        trial_id: i64,
        lease_token: &str,
        progress: Option<Progress>,
        notes: Vec<CheckpointNote>,
    ) -> Result<HeartbeatAck, HeartbeatError> {
        let body = Heartbeat {
            notes: notes.iter().take(api::MAX_TRIAL_NOTES).map(trial_note).collect(),
            lease_token: lease_token.to_owned(),
            progress: progress.map(|p| TrialProgress {
                step: p.step,
                steps: p.steps,
                tokens: p.tokens,
                loss: p.loss,
                tokens_per_s: p.tokens_per_s,
            }),
        };
        let r = self
            .post(&format!("/api/v1/trials/{trial_id}/heartbeat"), &body)
            .await
            .map_err(HeartbeatError::Other)?;
        if r.status() == StatusCode::CONFLICT || r.status() == StatusCode::NOT_FOUND {
            return Err(HeartbeatError::Stale);
        }
        json_or_error(r).await.map_err(HeartbeatError::Other)
    }

    /// Runs cycles until the stop flag is set; returns how many trials were completed.
    pub async fn run(&mut self, max_trials: Option<u64>) -> Result<u64, PullError> {
        let mut completed = 0;
        let mut failures_in_a_row = 0;
        while !self.stop.load(Ordering::Relaxed) && max_trials.is_none_or(|m| completed < m) {
            match self.run_once().await {
                Ok(Cycle::Completed { trial_id, outcome }) => {
                    completed += 1;
                    failures_in_a_row = 0;
                    tracing::info!(trial_id, %outcome, "reported");
                }
                Ok(Cycle::Failed { trial_id, error }) => {
                    // A worker that fails every job (its data or device is broken) must not drain
                    // the queue: each failure in a row doubles its pause before the next lease,
                    // so healthy workers take the retries.
                    failures_in_a_row += 1;
                    let pause = failure_backoff(failures_in_a_row, self.config.max_backoff);
                    tracing::warn!(trial_id, %error, ?pause, "trial failed; pausing before the next lease");
                    tokio::time::sleep(pause).await;
                }
                Ok(Cycle::Dropped { .. } | Cycle::Idle) => {}
                Err(e @ PullError::Auth(_)) => return Err(e),
                Err(PullError::Network(e)) if self.stop.load(Ordering::Relaxed) => {
                    tracing::info!(error = %e, "stopping");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cycle failed; pausing");
                    tokio::time::sleep(self.config.max_backoff.min(Duration::from_secs(2))).await;
                }
            }
        }
        Ok(completed)
    }
}

/// The pause after the `n`-th failed trial in a row: 1 s, 2 s, 4 s, ... up to `max`.
pub fn failure_backoff(n: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(16)).min(max)
}

#[derive(Debug)]
enum HeartbeatError {
    Stale,
    Other(PullError),
}

async fn json_or_error<T: serde::de::DeserializeOwned>(r: reqwest::Response) -> Result<T, PullError> {
    let status = r.status();
    if status.is_success() {
        return Ok(r.json().await?);
    }
    let body = r.text().await.unwrap_or_default();
    Err(PullError::Http { status: status.as_u16(), body })
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A job that could not produce metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    pub message: String,
    /// Another attempt (perhaps on another worker) could succeed.
    pub retryable: bool,
}

/// Where a worker keeps and finds files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobPaths {
    /// Cache for tokenized corpora and trained tokenizers.
    pub cache_dir: Option<std::path::PathBuf>,
    /// The folder relative corpus paths are read from.
    pub data_dir: Option<std::path::PathBuf>,
}

/// The data pipeline a proxy budget describes, on a worker with these paths. Relative corpus,
/// shard set and tokenizer file names are read from the data folder.
pub fn data_config(proxy: &ProxyBudget, paths: &JobPaths) -> Result<DataConfig, JobError> {
    let bad = |message: String| JobError { message, retryable: false };
    // Every name the job reads from the data folder stays inside it (see `confine`).
    let in_data_dir = |field: &str, path: &std::path::Path| confine(field, path, paths.data_dir.as_deref());
    let source: CorpusSource =
        proxy.corpus.parse().map_err(|e| bad(format!("proxy.corpus `{}`: {e}", proxy.corpus)))?;
    let source = match source {
        CorpusSource::Path(path) => CorpusSource::Path(in_data_dir("proxy.corpus", &path)?),
        CorpusSource::Shards(dir) => CorpusSource::Shards(in_data_dir("proxy.corpus", &dir)?),
        synthetic @ CorpusSource::Synthetic(_) => synthetic,
    };
    let mut data = DataConfig::from_source(source);
    let choice: TokenizerChoice =
        proxy.tokenizer.parse().map_err(|problem| bad(format!("proxy.tokenizer: {problem}")))?;
    data.tokenizer = match TokenizerSpec::from_choice(choice, None) {
        TokenizerSpec::File(name) => TokenizerSpec::File(in_data_dir("proxy.tokenizer", &name)?),
        other => other,
    };
    data.cache_dir = paths.cache_dir.clone();
    Ok(data)
}

/// The checkpoint folder of a leased trial, when this worker keeps checkpoints and the spec asks
/// for them: one folder per trial, shared by its attempts (on a shared file system, by every
/// worker), named by the search and trial.
pub fn checkpointing_for(grant: &LeaseGrant, root: Option<&std::path::Path>) -> Option<Checkpointing> {
    let every = grant.job.proxy.checkpoint_every?;
    let dir = root?.join(format!("search-{}-trial-{}", grant.search_id, grant.trial_id));
    Some(Checkpointing::new(dir, every, job_key(&grant.job)))
}

/// Names a job's training: the architecture, budget, seed and proxy settings. A checkpoint made
/// under another key is never restored (see [`crate::checkpoint`]).
pub fn job_key(job: &TrialJob) -> String {
    let json =
        serde_json::to_vec(&(&job.architecture, &job.proxy, job.budget_tokens, job.seed)).unwrap_or_default();
    ContentKey::builder("trial-job/v1").bytes(&json).finish().to_hex()
}

fn trial_note(note: &CheckpointNote) -> TrialNote {
    let (kind, step) = match note {
        CheckpointNote::Resumed { step, .. } => (TrialNoteKind::Resumed, Some(*step)),
        CheckpointNote::Skipped { .. } => (TrialNoteKind::CheckpointSkipped, None),
        CheckpointNote::SaveFailed { step, .. } => (TrialNoteKind::CheckpointFailed, Some(*step)),
    };
    let message: String = note.to_string().chars().take(api::MAX_NOTE_CHARS).collect();
    TrialNote { kind, step, message }
}

/// What a spec field names, for messages: `corpus path`, `tokenizer file`.
fn noun(field: &str) -> &'static str {
    if field == "proxy.tokenizer" { "tokenizer file" } else { "corpus path" }
}

/// Where a name a job reads (`field`: its corpus, shard set or tokenizer file) leads on this
/// worker: a file or folder inside the data folder (the
/// working directory when none is set), and nowhere else. The path must be relative without
/// `..`; resolved, with every symbolic link followed, it must still be inside the folder and be
/// a regular file or a folder (never a device such as `/dev/zero`). Breaking that is a
/// non-retryable failure (the spec is at fault); a corpus that does not exist here may exist on
/// another worker, so that one is retryable.
fn confine(
    field: &str,
    path: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> Result<std::path::PathBuf, JobError> {
    use std::path::Component;
    let refuse = |reason: &str| JobError {
        message: format!(
            "{field} `{}` {reason}; the names a job reads are confined to the data folder",
            path.display()
        ),
        retryable: false,
    };
    if path.as_os_str().is_empty()
        || path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refuse("must be a relative path without `..`"));
    }
    let base = match data_dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir()
            .map_err(|e| JobError { message: format!("no working directory: {e}"), retryable: true })?,
    };
    // Named as configured in messages, so they match what the operator set.
    let joined = base.join(path);
    let base = base.canonicalize().map_err(|e| JobError {
        message: format!("data folder {} is not usable: {e}", base.display()),
        retryable: true,
    })?;
    let resolved = match base.join(path).canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(JobError {
                message: format!("{} {} does not exist", noun(field), joined.display()),
                retryable: true,
            });
        }
        Err(e) => {
            return Err(JobError {
                message: format!("{} {}: {e}", noun(field), joined.display()),
                retryable: true,
            });
        }
    };
    if !resolved.starts_with(&base) {
        return Err(refuse("leads outside the data folder (through a symbolic link)"));
    }
    let kind = std::fs::metadata(&resolved)
        .map_err(|e| JobError {
            message: format!("{} {}: {e}", noun(field), resolved.display()),
            retryable: true,
        })?
        .file_type();
    if !(kind.is_file() || kind.is_dir()) {
        return Err(refuse("is neither a regular file nor a folder"));
    }
    Ok(resolved)
}

/// The trainer settings a job describes.
pub fn train_config(job: &TrialJob) -> TrainConfig {
    let p = &job.proxy;
    TrainConfig {
        tokens: job.budget_tokens,
        seq_len: p.seq_len as usize,
        batch_size: p.batch_size as usize,
        micro_batch: p.micro_batch.map(|m| m as usize),
        lr: p.lr,
        warmup_fraction: p.warmup_fraction,
        weight_norm: p.weight_norm,
        // The paper trains without weight decay when weights are normalised.
        weight_decay: if p.weight_norm { 0.0 } else { TrainConfig::default().weight_decay },
        seed: job.seed,
        eval_tokens: p.eval_tokens.map(|t| t as usize),
        ..TrainConfig::default()
    }
}

/// Trains (and, when asked, times decoding of) one job on this machine.
pub fn run_job(
    job: &TrialJob,
    device: DeviceSet,
    paths: &JobPaths,
    progress: Arc<Mutex<Option<Progress>>>,
    checkpointing: Option<Checkpointing>,
) -> Result<TrialMetrics, JobError> {
    let model = job
        .architecture
        .expand()
        .map_err(|e| JobError { message: format!("architecture does not expand: {e}"), retryable: false })?;
    let mut data = data_config(&job.proxy, paths)?;
    // In service mode the architecture's vocabulary must cover the tokenizer's.
    data.max_vocab = Some(model.vocab_size as usize);
    let config = TrainConfig { checkpoint: checkpointing, ..train_config(job) };
    let mut curve: Vec<(u64, f64)> = Vec::new();
    let devices = device.usable_for(config.batch_size, config.micro_batch);
    if devices.count() < device.count() {
        tracing::warn!(
            batch = config.batch_size,
            micro_batch = ?config.micro_batch,
            "the trial's batch does not split over {device}; training on {devices}"
        );
    }
    let run: TrainRun = train_job(&model, &data, &config, devices, false, |p| {
        curve.push((p.step, p.loss));
        if let Ok(mut slot) = progress.lock() {
            *slot = Some(p);
        }
    })
    .map_err(|e| JobError { retryable: retryable(&e), message: e.to_string() })?;
    let measured_latency_ms = match &job.measure_latency {
        Some(setting) => {
            let s: lut::DeploymentSetting = setting
                .parse()
                .map_err(|e: lut::SettingError| JobError { message: e.to_string(), retryable: false })?;
            let decode = DecodeSetting {
                batch: s.batch_size as usize,
                prompt_len: s.prompt_tokens.max(1) as usize,
                gen_len: s.generated_tokens as usize,
                warmup: 1,
                repeats: 3,
            };
            let (report, _) = decode_job(&model, decode, job.seed, device.primary())
                .map_err(|e| JobError { retryable: retryable(&e), message: e.to_string() })?;
            Some(report.total_ms)
        }
        None => None,
    };
    // A completed run's own curve spans every attempt; the callback saw only this one's steps.
    if let Outcome::Completed(report) = &run.outcome
        && !report.loss_curve.is_empty()
    {
        curve.clone_from(&report.loss_curve);
    }
    Ok(metrics_of(run, thin(&curve, 256), measured_latency_ms))
}

fn retryable(e: &RunError) -> bool {
    use crate::data::DataError;
    use crate::train::TrainError;
    // A bad architecture or setting fails everywhere, and so does data that contradicts the
    // spec; a missing file or a device problem may be local to this worker.
    !matches!(
        e,
        RunError::Architecture(_)
            | RunError::Decode(_)
            | RunError::Data(
                DataError::VocabularyTooSmall { .. }
                    | DataError::TokenizerMismatch { .. }
                    | DataError::TokenizerWithSynthetic(_)
            )
            | RunError::Train(TrainError::TokenOutOfRange { .. } | TrainError::Config(_))
    )
}

fn metrics_of(run: TrainRun, loss_curve: Vec<(u64, f64)>, measured_latency_ms: Option<f64>) -> TrialMetrics {
    let accuracy = run.accuracy().cloned();
    match run.outcome {
        Outcome::Completed(r) => TrialMetrics {
            outcome: "completed".into(),
            val_loss: r.val_loss,
            ppl: r.val_ppl,
            train_loss: r.train_loss,
            steps: r.steps,
            tokens: r.tokens,
            tokens_per_s: r.tokens_per_s,
            train_seconds: r.train_seconds,
            params: run.params,
            loss_curve,
            measured_latency_ms,
            accuracy,
            device: run.device,
        },
        Outcome::Diverged { step, loss: _ } => TrialMetrics {
            outcome: "diverged".into(),
            val_loss: 0.0,
            ppl: 0.0,
            train_loss: 0.0,
            steps: step,
            tokens: 0,
            tokens_per_s: 0.0,
            train_seconds: 0.0,
            params: run.params,
            loss_curve,
            measured_latency_ms: None,
            accuracy: None,
            device: run.device,
        },
    }
}

/// At most `n` points of a curve, evenly spaced, always keeping the last.
fn thin(curve: &[(u64, f64)], n: usize) -> Vec<(u64, f64)> {
    if curve.len() <= n {
        return curve.iter().copied().filter(|(_, l)| l.is_finite()).collect();
    }
    let stride = curve.len().div_ceil(n);
    let mut out: Vec<(u64, f64)> = curve.iter().step_by(stride).copied().collect();
    if let Some(&last) = curve.last()
        && out.last() != Some(&last)
    {
        out.push(last);
    }
    out.retain(|(_, l)| l.is_finite());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_ends_and_bounds_the_length() {
        let curve: Vec<(u64, f64)> = (0..1000).map(|i| (i, 1.0 / (i + 1) as f64)).collect();
        let t = thin(&curve, 100);
        assert!(t.len() <= 101, "{}", t.len());
        assert_eq!(t.first(), Some(&(0, 1.0)));
        assert_eq!(t.last(), curve.last());
        assert_eq!(thin(&curve[..10], 100).len(), 10);
    }

    #[test]
    fn unknown_tokenizers_are_refused_for_good() {
        let proxy = ProxyBudget {
            tokenizer: "sentencepiece".into(),
            corpus: "synthetic:in_context_recall".into(),
            ..ProxyBudget::default()
        };
        let e = data_config(&proxy, &JobPaths::default()).unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("sentencepiece"));
    }

    #[test]
    fn failures_in_a_row_back_off_exponentially_up_to_the_cap() {
        let max = Duration::from_secs(10);
        let pauses: Vec<u64> = (1..=6).map(|n| failure_backoff(n, max).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 10, 10]);
        assert_eq!(failure_backoff(u32::MAX, max), max);
    }

    /// The corpus a job with `corpus` would read on a worker whose data folder is `data_dir`.
    fn corpus_at(corpus: &str, data_dir: &std::path::Path) -> Result<CorpusSource, JobError> {
        let proxy = ProxyBudget { corpus: corpus.into(), ..ProxyBudget::default() };
        let paths = JobPaths { cache_dir: None, data_dir: Some(data_dir.into()) };
        data_config(&proxy, &paths).map(|d| d.corpus)
    }

    #[test]
    fn relative_corpus_paths_are_read_from_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().canonicalize().unwrap();
        std::fs::create_dir(data.join("books")).unwrap();
        std::fs::write(data.join("books/a.txt"), "text").unwrap();
        let path = |p: std::path::PathBuf| CorpusSource::Path(p);
        assert_eq!(corpus_at("books/a.txt", &data).unwrap(), path(data.join("books/a.txt")));
        assert_eq!(corpus_at("./books", &data).unwrap(), path(data.join("books")));
        assert!(matches!(corpus_at("synthetic:in_context_recall", &data), Ok(CorpusSource::Synthetic(_))));
        // Missing here may be present on another worker: retried.
        let missing = corpus_at("books/b.txt", &data).unwrap_err();
        assert!(missing.retryable && missing.message.contains("does not exist"), "{missing:?}");
    }

    #[test]
    #[cfg(unix)]
    fn corpus_paths_cannot_leave_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(dir.path().join("secret.txt"), "not for training").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), data.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", data.join("zeros")).unwrap();
        std::os::unix::fs::symlink("/etc", data.join("etc")).unwrap();
        for corpus in [
            "/etc/passwd",
            "/dev/zero",
            "/proc/self/environ",
            "../secret.txt",
            "../../../../etc/passwd",
            "books/../../secret.txt",
            "escape.txt",
            "zeros",
            "etc/passwd",
        ] {
            let e = corpus_at(corpus, &data).unwrap_err();
            assert!(!e.retryable, "{corpus}: {e:?}");
            assert!(e.message.contains("confined to the data folder"), "{corpus}: {}", e.message);
        }
    }
}
