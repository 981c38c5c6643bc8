//! Searches and their candidates (an `impl Store` of its own): creating and listing searches,
//! candidates deduplicated by architecture hash, whole generations and sweeps recorded in one
//! transaction, members, progress counts, status and cancellation. The trials these queue or
//! cancel are written by the queue's helpers, so trial state changes stay in `queue.rs`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::queue::{cancel_outstanding_in, enqueue_trial_in};
use super::rows::{candidate_from_row, search_from_row, trial_from_row};
use super::{
    CandidateRow, CandidateStatus, MemberRow, NewCandidate, NewMember, SearchRow, Store, StoreError, TrialRow,
};
use crate::clock::clock_ms;

/// Counts of a search's trials and candidates by state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct SearchProgress {
    pub trials: BTreeMap<String, i64>,
    pub candidates: BTreeMap<String, i64>,
    pub generations: i64,
}

impl Store {
    /// Creates a search in state `pending`.
    pub async fn create_search(&self, name: &str, spec: &Value) -> Result<SearchRow, StoreError> {
        let now_ms = clock_ms();
        let row = sqlx::query(concat!(
            "INSERT INTO searches (name, spec, status, created_at_ms, updated_at_ms)
             VALUES ($1, $2, 'pending', $3, $3)
             RETURNING ",
            search_columns!()
        ))
        .bind(name)
        .bind(spec.to_string())
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        search_from_row(&row)
    }

    pub async fn get_search(&self, id: i64) -> Result<Option<SearchRow>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", search_columns!(), " FROM searches WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(search_from_row).transpose()
    }

    /// Every search, newest first.
    pub async fn list_searches(&self) -> Result<Vec<SearchRow>, StoreError> {
        let rows = sqlx::query(concat!("SELECT ", search_columns!(), " FROM searches ORDER BY id DESC"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(search_from_row).collect()
    }

    /// Adds a candidate to a search unless the search already has that architecture.
    ///
    /// Returns the stored row and whether it was inserted now; a duplicate returns the existing
    /// row (with its own lineage and id) and `false`.
    pub async fn insert_candidate(
        &self,
        search_id: i64,
        candidate: &NewCandidate,
    ) -> Result<(CandidateRow, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        let out = insert_candidate_in(&mut tx, search_id, candidate, clock_ms()).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn get_candidate(&self, id: i64) -> Result<Option<CandidateRow>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", candidate_columns!(), " FROM candidates WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(candidate_from_row).transpose()
    }

    /// Searches that still propose or wait for results.
    pub async fn active_searches(&self) -> Result<Vec<SearchRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            search_columns!(),
            " FROM searches WHERE status IN ('pending', 'running') ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(search_from_row).collect()
    }

    /// Records a whole generation atomically: each member's candidate (deduplicated by hash),
    /// its membership row, and for each candidate new to the search and feasible, a queued trial
    /// at rung 0, all stamped `now_ms`. Returns every member's candidate and whether it is new.
    #[tracing::instrument(skip_all, fields(search_id = search_id, generation = generation), err)]
    pub async fn add_generation(
        &self,
        search_id: i64,
        generation: i64,
        members: &[NewMember],
        budget_tokens: i64,
        max_attempts: i64,
        now_ms: i64,
    ) -> Result<Vec<(CandidateRow, bool)>, StoreError> {
        let budgets = [budget_tokens];
        self.record_generation(search_id, generation, members, &budgets, false, max_attempts, now_ms).await
    }

    /// Records a sweep's grid as generation 0, atomically: every new candidate gets a queued
    /// trial per budget (rung `i` trains `budgets[i]` tokens), whatever its latency, since a
    /// scaling law needs every point of the grid. Everything is stamped `now_ms`.
    #[tracing::instrument(skip_all, fields(search_id = search_id), err)]
    pub async fn add_sweep(
        &self,
        search_id: i64,
        members: &[NewMember],
        budgets: &[i64],
        max_attempts: i64,
        now_ms: i64,
    ) -> Result<Vec<(CandidateRow, bool)>, StoreError> {
        self.record_generation(search_id, 0, members, budgets, true, max_attempts, now_ms).await
    }

    #[allow(clippy::too_many_arguments, reason = "one private helper behind add_generation and add_sweep")]
    async fn record_generation(
        &self,
        search_id: i64,
        generation: i64,
        members: &[NewMember],
        budgets: &[i64],
        train_infeasible: bool,
        max_attempts: i64,
        now_ms: i64,
    ) -> Result<Vec<(CandidateRow, bool)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(members.len());
        for (slot, member) in members.iter().enumerate() {
            let (candidate, inserted) =
                insert_candidate_in(&mut tx, search_id, &member.candidate, now_ms).await?;
            sqlx::query(
                "INSERT INTO search_members (search_id, generation, slot, candidate_id, parents, origin)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(search_id)
            .bind(generation)
            .bind(slot as i64)
            .bind(candidate.id)
            .bind(serde_json::to_string(&member.parents).unwrap_or_else(|_| "[]".into()))
            .bind(&member.origin)
            .execute(&mut *tx)
            .await?;
            if inserted && (candidate.feasible || train_infeasible) {
                for (rung, &budget) in budgets.iter().enumerate() {
                    enqueue_trial_in(
                        &mut tx,
                        search_id,
                        candidate.id,
                        budget,
                        rung as i64,
                        max_attempts,
                        now_ms,
                    )
                    .await?;
                }
            }
            out.push((candidate, inserted));
        }
        sqlx::query(
            "UPDATE searches SET status = 'running', updated_at_ms = $1 WHERE id = $2 AND status = 'pending'",
        )
        .bind(now_ms)
        .bind(search_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Every generation member of a search, in generation then slot order.
    pub async fn search_members(&self, search_id: i64) -> Result<Vec<MemberRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT m.generation, m.slot, m.parents, m.origin, ",
            candidate_columns_c!(),
            " FROM search_members m JOIN candidates c ON c.id = m.candidate_id
             WHERE m.search_id = $1 ORDER BY m.generation, m.slot"
        ))
        .bind(search_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let parents: String = row.try_get("parents")?;
                Ok(MemberRow {
                    generation: row.try_get("generation")?,
                    slot: row.try_get("slot")?,
                    parents: serde_json::from_str(&parents)
                        .map_err(|e| StoreError::Malformed(format!("member parents: {e}")))?,
                    origin: row.try_get("origin")?,
                    candidate: candidate_from_row(row)?,
                })
            })
            .collect()
    }

    /// Every trial of a search, oldest first.
    pub async fn search_trials(&self, search_id: i64) -> Result<Vec<TrialRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            trial_columns!(),
            " FROM trials WHERE search_id = $1 ORDER BY id"
        ))
        .bind(search_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trial_from_row).collect()
    }

    /// Every trial of a candidate (one per rung and re-evaluation), oldest first.
    pub async fn candidate_trials(&self, candidate_id: i64) -> Result<Vec<TrialRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            trial_columns!(),
            " FROM trials WHERE candidate_id = $1 ORDER BY id"
        ))
        .bind(candidate_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trial_from_row).collect()
    }

    /// Trials of a search still queued or leased: while any are out, its newest generation is
    /// unfinished (every earlier generation finished before the next was proposed).
    pub async fn outstanding_trials(&self, search_id: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM trials WHERE search_id = $1 AND state IN ('queued', 'leased')",
        )
        .bind(search_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Trials and candidates of a search counted by state, and its number of generations.
    pub async fn search_progress(&self, search_id: i64) -> Result<SearchProgress, StoreError> {
        let mut progress = SearchProgress::default();
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM trials WHERE search_id = $1 GROUP BY state")
            .bind(search_id)
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            progress.trials.insert(row.try_get("state")?, row.try_get("n")?);
        }
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM candidates WHERE search_id = $1 GROUP BY status")
                .bind(search_id)
                .fetch_all(&self.pool)
                .await?;
        for row in &rows {
            progress.candidates.insert(row.try_get("status")?, row.try_get("n")?);
        }
        let generations: Option<i64> =
            sqlx::query_scalar("SELECT MAX(generation) FROM search_members WHERE search_id = $1")
                .bind(search_id)
                .fetch_one(&self.pool)
                .await?;
        progress.generations = generations.map_or(0, |g| g + 1);
        Ok(progress)
    }

    /// Sets a search's status (and error) at `now_ms`, returning whether the row changed. Terminal
    /// statuses (`completed`, `cancelled`, `failed`) are never left.
    pub async fn set_search_status(
        &self,
        search_id: i64,
        status: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE searches SET status = $1, error = $2, updated_at_ms = $3
             WHERE id = $4 AND status NOT IN ('completed', 'cancelled', 'failed')",
        )
        .bind(status)
        .bind(error)
        .bind(now_ms)
        .bind(search_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The error a failed search stopped with.
    pub async fn search_error(&self, search_id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT error FROM searches WHERE id = $1")
            .bind(search_id)
            .fetch_optional(&self.pool)
            .await?
            .flatten())
    }

    /// Cancels a search: it stops proposing, its queued trials are failed and its pending
    /// candidates marked failed. Leased trials are told to stop at their next heartbeat. Returns
    /// `false` when the search had already ended. Everything it changes is stamped `now_ms`.
    #[tracing::instrument(skip_all, fields(search_id = search_id), err)]
    pub async fn cancel_search(&self, search_id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE searches SET status = 'cancelled', updated_at_ms = $1
             WHERE id = $2 AND status NOT IN ('completed', 'cancelled', 'failed')",
        )
        .bind(now_ms)
        .bind(search_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if changed {
            cancel_outstanding_in(&mut tx, search_id, now_ms).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}

async fn insert_candidate_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    search_id: i64,
    candidate: &NewCandidate,
    now_ms: i64,
) -> Result<(CandidateRow, bool), StoreError> {
    // `DO NOTHING` returns no row on conflict; the follow-up read then finds the row that won,
    // which exists because the conflict proves it was committed.
    let status = if candidate.feasible { CandidateStatus::Pending } else { CandidateStatus::Infeasible };
    let inserted = sqlx::query(concat!(
        "INSERT INTO candidates (search_id, arch_hash, architecture, parent_id, mutation,
                                 hidden_size, params, est_latency_ms, created_at_ms, status,
                                 memory_bytes, feasible, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $9)
         ON CONFLICT (search_id, arch_hash) DO NOTHING
         RETURNING ",
        candidate_columns!()
    ))
    .bind(search_id)
    .bind(&candidate.arch_hash)
    .bind(candidate.architecture.to_string())
    .bind(candidate.parent_id)
    .bind(&candidate.mutation)
    .bind(candidate.hidden_size)
    .bind(candidate.params)
    .bind(candidate.est_latency_ms)
    .bind(now_ms)
    .bind(status.as_str())
    .bind(candidate.memory_bytes)
    .bind(i64::from(candidate.feasible))
    .persistent(false) // binds a nullable real (the store's module doc, "Nullable reals")
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = inserted {
        return Ok((candidate_from_row(&row)?, true));
    }
    let existing = sqlx::query(concat!(
        "SELECT ",
        candidate_columns!(),
        " FROM candidates WHERE search_id = $1 AND arch_hash = $2"
    ))
    .bind(search_id)
    .bind(&candidate.arch_hash)
    .fetch_one(&mut **tx)
    .await?;
    Ok((candidate_from_row(&existing)?, false))
}
