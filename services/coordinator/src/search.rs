//! The search driver: turns an engine's proposals into candidates and trials, and results back
//! into the engine's history.
//!
//! # Runtime model
//! [`SearchDriver::step`] is one idempotent pass over one search, driven by the coordinator's
//! background loop (and called directly by tests):
//!
//! 1. Read the search's generations and trials from the store.
//! 2. If the newest generation still has trials queued or leased, wait.
//! 3. With successive halving, when a rung of the newest generation is finished, queue the next
//!    rung for the best `1/eta` of it (see [`crate::engine::halving`]).
//! 4. When the generation is finished, ask the engine for the next one: choose each proposal's
//!    width with the latency table, estimate latency and decode memory, and record the whole
//!    generation (candidates deduplicated by canonical hash, members, rung-0 trials) in one
//!    transaction. An engine with nothing left to propose completes the search.
//!
//! Everything the step needs is in the store, so a restarted coordinator simply resumes stepping.
//! Within one coordinator, steps run one at a time (the create handler and the background loop
//! would otherwise race to record a new search's first generation). Two coordinators stepping one
//! search cannot both record generation `g`: the members table's primary key (search, generation,
//! slot) refuses the second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use api::spec::sweep_architecture;
use api::{AccuracyGoals, SearchSpec, WidthMode};
use lut::DeploymentSetting;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use search_space::{Architecture, ModelSpec, OpKind, Topology};
use tokio::sync::Mutex;

use crate::clock::clock_ms;
use crate::engine::{self, EngineContext, History, Member, Objectives, halving};
use crate::latency::{self, LatencyModel};
use crate::store::{
    CandidateRow, CandidateStatus, Lease, MemberRow, NewCandidate, NewMember, Store, StoreError, TrialResult,
    TrialState,
};
use crate::tabular::{Table, TableDir};

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The search has ended (completed, cancelled or failed) before this step.
    Ended,
    /// Trials of the newest generation are still queued or running.
    Waiting,
    /// Queued the next successive-halving rung for these candidates.
    Promoted { rung: i64, candidates: Vec<i64> },
    /// Recorded generation `generation` with this many members (`new` of them new candidates).
    Proposed { generation: i64, members: usize, new: usize },
    /// The engine has nothing left to propose; the search is complete.
    Completed,
    /// The search cannot go on (no latency table for its budget, a stored spec that no longer
    /// parses); it is marked failed with this reason.
    Failed(String),
}

/// Why a step could not run.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("search {0} does not exist")]
    NoSuchSearch(i64),
}

/// Steps searches.
#[derive(Debug, Clone)]
pub struct SearchDriver {
    store: Store,
    /// Held for the whole of a step: the handler that creates a search steps it at once, and
    /// the background loop may be stepping the same search; one at a time, the second sees the
    /// generation the first recorded instead of colliding with it.
    stepping: Arc<Mutex<()>>,
    /// Where `table:NAME` searches are answered from; such searches fail without it.
    tables: Option<Arc<TableDir>>,
}

/// The worker name the coordinator leases a table search's trials under.
pub const TABLE_WORKER: &str = "table";

impl SearchDriver {
    pub fn new(store: Store) -> Self {
        Self { store, stepping: Arc::default(), tables: None }
    }

    /// Answers `table:NAME` searches from the tables in `dir`.
    pub fn with_tables(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.tables = dir.map(|d| Arc::new(TableDir::new(d)));
        self
    }

    /// The table a `table:NAME` spec names, or why it cannot be used.
    pub fn table_for(&self, spec: &SearchSpec) -> Option<Result<Arc<Table>, String>> {
        let name = spec.table_name()?;
        Some(match &self.tables {
            Some(dir) => dir.get(name),
            None => Err(format!(
                "this coordinator has no table folder for `table:{name}` (start it with --table-dir)"
            )),
        })
    }

    /// Answers a leased trial of a table search from its table: the run of the table's seed
    /// that the candidate's training seed picks, or a failure (not retried) for a model the
    /// table does not hold. Fenced by the lease like a worker's result.
    pub async fn answer_from_table(&self, lease: &Lease, spec: &SearchSpec) -> Result<(), DriverError> {
        let now = clock_ms();
        let candidate = self.store.get_candidate(lease.candidate_id).await?;
        let answer = match (self.table_for(spec), candidate) {
            (Some(Ok(table)), Some(c)) => table
                .answer(&c.arch_hash, training_seed(spec.seed, &c.arch_hash))
                .map(|run| (table.manifest.name.clone(), *run))
                .map_err(|e| e.to_string()),
            (Some(Err(reason)), _) => Err(reason),
            (None, _) => Err("the search is not answered from a table".to_owned()),
            (_, None) => Err(format!("trial {} names a missing candidate", lease.trial_id)),
        };
        match answer {
            Ok((name, run)) => {
                let result = TrialResult {
                    val_loss: run.val_loss,
                    ppl: run.ppl,
                    result_json: serde_json::json!({
                        "val_loss": run.val_loss,
                        "ppl": run.ppl,
                        "tokens": run.tokens,
                        "train_seconds": run.train_seconds,
                        "device": format!("table `{name}`, seed {}", run.seed),
                    }),
                    measured_latency_ms: None,
                    meets_floors: None,
                };
                self.store.complete_trial(lease.trial_id, &lease.lease_token, &result, now).await?;
            }
            Err(reason) => {
                self.store.fail_trial(lease.trial_id, &lease.lease_token, &reason, false, now).await?;
            }
        }
        Ok(())
    }

    /// Answers every queued trial of a table search.
    async fn answer_queued_from_table(&self, search_id: i64, spec: &SearchSpec) -> Result<(), DriverError> {
        while let Some(lease) = self.store.lease_trial_of(search_id, TABLE_WORKER, clock_ms(), 60_000).await?
        {
            self.answer_from_table(&lease, spec).await?;
        }
        Ok(())
    }

    /// One pass over search `search_id`; see the module doc.
    #[tracing::instrument(skip_all, fields(search_id = search_id), err)]
    pub async fn step(&self, search_id: i64) -> Result<StepOutcome, DriverError> {
        let _one_at_a_time = self.stepping.lock().await;
        let search = self.store.get_search(search_id).await?.ok_or(DriverError::NoSuchSearch(search_id))?;
        if !matches!(search.status.as_str(), "pending" | "running") {
            return Ok(StepOutcome::Ended);
        }
        let spec: SearchSpec = match serde_json::from_value(search.spec.clone()) {
            Ok(spec) => spec,
            Err(e) => return self.fail(search_id, format!("stored spec does not parse: {e}")).await,
        };
        if spec.table_name().is_some() {
            self.answer_queued_from_table(search_id, &spec).await?;
        }
        // The common case on every tick: trials are still out. One count answers it without
        // reading the search's members and trials.
        if self.store.outstanding_trials(search_id).await? > 0 {
            return Ok(StepOutcome::Waiting);
        }
        if let api::Algorithm::Sweep { pattern, depths, widths, .. } = &spec.algorithm {
            return self.step_sweep(search_id, &spec, pattern, depths, widths).await;
        }
        let members = self.store.search_members(search_id).await?;
        let trials = self.store.search_trials(search_id).await?;
        let generations = members.last().map_or(0, |m| m.generation + 1);

        if let Some(last) = generations.checked_sub(1) {
            // Candidates first trained in the newest generation (a reused candidate is not retrained).
            let first_seen = first_generation(&members);
            let newest: BTreeSet<i64> = members
                .iter()
                .filter(|m| m.generation == last && first_seen.get(&m.candidate.id) == Some(&last))
                .map(|m| m.candidate.id)
                .collect();
            let mut by_rung: BTreeMap<i64, Vec<&crate::store::TrialRow>> = BTreeMap::new();
            for t in trials.iter().filter(|t| newest.contains(&t.candidate_id)) {
                by_rung.entry(t.rung).or_default().push(t);
            }
            if by_rung.values().flatten().any(|t| matches!(t.state, TrialState::Queued | TrialState::Leased))
            {
                return Ok(StepOutcome::Waiting);
            }
            if let (Some(h), Some((&rung, rung_trials))) = (spec.halving, by_rung.last_key_value())
                && rung + 1 < i64::from(h.rungs)
            {
                let results: Vec<halving::RungResult> = rung_trials
                    .iter()
                    .map(|t| halving::RungResult {
                        candidate_id: t.candidate_id,
                        ppl: if t.state == TrialState::Done { t.ppl } else { None },
                    })
                    .collect();
                let promoted = halving::promote(&results, h.eta);
                if !promoted.is_empty() {
                    let next = rung + 1;
                    let budget = h.budget(spec.proxy.tokens, next as u32) as i64;
                    for &id in &promoted {
                        self.store
                            .promote(search_id, id, next, budget, i64::from(spec.max_attempts), clock_ms())
                            .await?;
                    }
                    return Ok(StepOutcome::Promoted { rung: next, candidates: promoted });
                }
            }
        }

        // The newest generation is finished: propose the next.
        let setting: DeploymentSetting = match spec.target.deployment() {
            Ok(s) => s,
            Err(e) => return self.fail(search_id, e.to_string()).await,
        };
        let table = match self.table_for(&spec) {
            Some(Ok(table)) => Some(table),
            Some(Err(reason)) => return self.fail(search_id, reason).await,
            None => None,
        };
        let loaded = match table {
            // A table search's latencies are the table's own.
            Some(table) => Ok(Some(Box::new(table) as Box<dyn LatencyModel>)),
            None => latency::load(&self.store, spec.target.device.as_deref(), &setting).await?,
        };
        let latency = match loaded {
            Ok(model) => model,
            // Latency is only reported when the search does not need it: an ambiguous target
            // (several devices' tables, no target.device) leaves it unreported, never failed.
            Err(_) if !needs_latency(&spec) => None,
            Err(reason) => return self.fail(search_id, reason).await,
        };
        if latency.is_none() && needs_latency(&spec) {
            let hint = format!(
                "no latency table for setting `{}`{}: profile one with `frontier lut profile --setting {}`",
                setting.key(),
                spec.target.device.as_deref().map(|d| format!(" on device `{d}`")).unwrap_or_default(),
                setting.key()
            );
            return self.fail(search_id, hint).await;
        }
        let ctx = engine_context(&spec);
        let history = history(&members, &spec.accuracy);
        let Some(engine) = engine::engine_for(&spec.algorithm) else {
            return self.fail(search_id, format!("`{}` has no engine", spec.algorithm.name())).await;
        };
        let mut rng = generation_rng(spec.seed, generations);
        let proposals = match engine.propose(&ctx, &history, &mut rng) {
            Ok(p) => p,
            Err(e) => return self.fail(search_id, e.to_string()).await,
        };
        if proposals.is_empty() {
            self.store.set_search_status(search_id, "completed", None, clock_ms()).await?;
            return Ok(StepOutcome::Completed);
        }
        let mut new_members = Vec::with_capacity(proposals.len());
        for p in &proposals {
            match candidate_for(&spec, &setting, latency.as_deref(), p) {
                Ok(candidate) => new_members.push(NewMember {
                    candidate,
                    parents: p.parents.clone(),
                    origin: p.origin.clone(),
                }),
                Err(reason) => return self.fail(search_id, reason).await,
            }
        }
        let first_budget = spec.halving.map_or(spec.proxy.tokens, |h| h.budget(spec.proxy.tokens, 0)) as i64;
        let added = self
            .store
            .add_generation(
                search_id,
                generations,
                &new_members,
                first_budget,
                i64::from(spec.max_attempts),
                clock_ms(),
            )
            .await?;
        let new = added.iter().filter(|(_, inserted)| *inserted).count();
        Ok(StepOutcome::Proposed { generation: generations, members: added.len(), new })
    }

    /// A sweep records its whole grid as generation 0 and completes once every trial is out of
    /// the queue (the caller has checked that none is queued or leased).
    async fn step_sweep(
        &self,
        search_id: i64,
        spec: &SearchSpec,
        pattern: &[OpKind],
        depths: &[u32],
        widths: &[u32],
    ) -> Result<StepOutcome, DriverError> {
        if !self.store.search_members(search_id).await?.is_empty() {
            self.store.set_search_status(search_id, "completed", None, clock_ms()).await?;
            return Ok(StepOutcome::Completed);
        }
        let setting: DeploymentSetting = match spec.target.deployment() {
            Ok(s) => s,
            Err(e) => return self.fail(search_id, e.to_string()).await,
        };
        // Latency is reported when the target device has a table; a sweep does not need one.
        let latency =
            latency::load(&self.store, spec.target.device.as_deref(), &setting).await?.ok().flatten();
        let mut members = Vec::with_capacity(depths.len() * widths.len());
        for &depth in depths {
            for &width in widths {
                let arch = sweep_architecture(&spec.model, pattern, depth, width);
                let model = match arch.expand() {
                    Ok(m) => m,
                    Err(e) => {
                        return self
                            .fail(search_id, format!("depth {depth} × width {width} does not expand: {e}"))
                            .await;
                    }
                };
                let est = latency.as_deref().and_then(|l| l.estimate_ms(&model).ok());
                let feasible = match (spec.target.latency_budget_ms, est) {
                    (Some(b), Some(e)) => e <= b,
                    _ => true,
                };
                let mut candidate = new_candidate(&arch, &model, &setting, est, feasible);
                let origin = format!("sweep depth={depth} width={width}");
                candidate.mutation = Some(origin.clone());
                members.push(NewMember { candidate, parents: Vec::new(), origin });
            }
        }
        let budgets: Vec<i64> =
            spec.algorithm.sweep_budgets(spec.proxy.tokens).into_iter().map(|t| t as i64).collect();
        let added = self
            .store
            .add_sweep(search_id, &members, &budgets, i64::from(spec.max_attempts), clock_ms())
            .await?;
        let new = added.iter().filter(|(_, inserted)| *inserted).count();
        Ok(StepOutcome::Proposed { generation: 0, members: added.len(), new })
    }

    async fn fail(&self, search_id: i64, reason: String) -> Result<StepOutcome, DriverError> {
        tracing::warn!(search_id, %reason, "search failed");
        self.store.set_search_status(search_id, "failed", Some(&reason), clock_ms()).await?;
        Ok(StepOutcome::Failed(reason))
    }
}

/// A budget, or an objective that is latency, needs the table.
fn needs_latency(spec: &SearchSpec) -> bool {
    spec.target.latency_budget_ms.is_some() || matches!(spec.algorithm, api::Algorithm::Nsga2 { .. })
}

/// The depth (blocks of `pattern`) of a sweep's model, from its architecture.
pub fn sweep_depth(arch: &Architecture, pattern: &[OpKind]) -> Option<u32> {
    match &arch.topology {
        Topology::Layers(layers) if !pattern.is_empty() && layers.len() % pattern.len() == 0 => {
            u32::try_from(layers.len() / pattern.len()).ok()
        }
        _ => None,
    }
}

/// The RNG of generation `generation`: a pure function of the search seed, so a resumed search
/// proposes what the uninterrupted one would have.
pub fn generation_rng(seed: u64, generation: i64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(generation as u64);
    rng
}

fn engine_context(spec: &SearchSpec) -> EngineContext {
    // Seeds were checked when the search was created; one that no longer resolves is skipped
    // rather than failing a running search.
    let seeds = spec.seeds.iter().filter_map(|s| spec.seed_genome(s).ok()).collect();
    EngineContext { space: spec.space.clone(), seeds, evolve_width: spec.width == WidthMode::Evolved }
}

fn first_generation(members: &[MemberRow]) -> BTreeMap<i64, i64> {
    let mut first = BTreeMap::new();
    for m in members {
        first.entry(m.candidate.id).or_insert(m.generation);
    }
    first
}

/// The engine's view of the stored generations, with the accuracy goals of the search applied to
/// each result.
pub fn history(members: &[MemberRow], goals: &AccuracyGoals) -> History {
    let mut history = History::default();
    for m in members {
        let Some(member) = member_of(&m.candidate, goals) else {
            continue;
        };
        let g = m.generation as usize;
        while history.generations.len() <= g {
            history.generations.push(Vec::new());
        }
        history.generations[g].push(member);
    }
    history
}

fn member_of(c: &CandidateRow, goals: &AccuracyGoals) -> Option<Member> {
    let arch: Architecture = serde_json::from_value(c.architecture.clone()).ok()?;
    let Topology::Genome(genome) = arch.topology else {
        return None;
    };
    let objectives = match (c.status, c.ppl) {
        (CandidateStatus::Done, Some(ppl)) => Some(Objectives {
            ppl,
            latency_ms: c.est_latency_ms.unwrap_or(0.0),
            memory_bytes: c.memory_bytes as f64,
        }),
        _ => None,
    };
    // The goals are applied to the stored accuracy here too, so the engines see them whatever
    // the `feasible` column says (it is updated when each result arrives).
    let (shortfall, task_errors) = match objectives {
        Some(_) => {
            let accuracy = c.accuracy().unwrap_or_default();
            (goals.shortfall(&accuracy), goals.errors(&accuracy))
        }
        None => (0.0, Vec::new()),
    };
    Some(Member {
        candidate_id: c.id,
        genome,
        hidden_size: c.hidden_size as u32,
        objectives,
        rung: c.rung.max(0) as u32,
        feasible: c.feasible && shortfall <= 0.0,
        shortfall,
        task_errors,
    })
}

/// Dimensions, scores and records one proposal.
fn candidate_for(
    spec: &SearchSpec,
    setting: &DeploymentSetting,
    latency: Option<&dyn LatencyModel>,
    proposal: &engine::Proposal,
) -> Result<NewCandidate, String> {
    let budget = spec.target.latency_budget_ms;
    let widths: Vec<u32> = match proposal.hidden_size {
        Some(h) => vec![h],
        None => {
            let mut w = spec.space.hidden_sizes.clone();
            w.sort_unstable_by(|a, b| b.cmp(a));
            w
        }
    };
    // The paper's rule: the widest model that meets the budget. Without a fitting width the
    // candidate is recorded at the narrowest width as infeasible.
    let mut chosen = None;
    for &h in &widths {
        let arch = Architecture::from_genome(spec.model.with_hidden_size(h), proposal.genome.clone());
        let model = arch.expand().map_err(|e| format!("proposal does not expand: {e}"))?;
        let est = match latency {
            Some(l) => Some(l.estimate_ms(&model)?),
            None => None,
        };
        let fits = match (budget, est) {
            (Some(b), Some(e)) => e <= b,
            _ => true,
        };
        let last = h == *widths.last().unwrap_or(&h);
        if fits || last {
            chosen = Some((arch, model, est, fits));
            break;
        }
    }
    let (arch, model, est, feasible) =
        chosen.ok_or_else(|| "the search space has no hidden sizes".to_owned())?;
    let mut candidate = new_candidate(&arch, &model, setting, est, feasible);
    candidate.parent_id = proposal.parents.first().copied();
    candidate.mutation = Some(proposal.origin.clone());
    Ok(candidate)
}

fn new_candidate(
    arch: &Architecture,
    model: &ModelSpec,
    setting: &DeploymentSetting,
    est_latency_ms: Option<f64>,
    feasible: bool,
) -> NewCandidate {
    let memory = model.decode_memory(u64::from(setting.batch_size), setting.context_tokens(), setting.dtype);
    let params = model.params().total;
    let weights = params.saturating_mul(setting.dtype.bytes());
    NewCandidate {
        arch_hash: model.canonical_hash().0,
        architecture: serde_json::to_value(arch).unwrap_or_default(),
        parent_id: None,
        mutation: None,
        hidden_size: i64::from(model.hidden_size),
        params: i64::try_from(params).unwrap_or(i64::MAX),
        est_latency_ms,
        memory_bytes: i64::try_from(memory.total_bytes.saturating_add(weights)).unwrap_or(i64::MAX),
        feasible,
    }
}

/// The seed a candidate's proxy training uses: the same for every rung and every attempt, so a
/// retried or promoted trial trains the same model on the same batches.
pub fn training_seed(search_seed: u64, arch_hash: &str) -> u64 {
    let prefix = arch_hash.get(..16).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
    prefix ^ search_seed
}
