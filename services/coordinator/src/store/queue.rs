//! The trial queue (an `impl Store` of its own): enqueueing and promoting, leasing, heartbeats,
//! results, failures, reclaiming expired leases, and the events each transition appends to
//! `trial_events`. This file holds every statement that changes a trial's state; the rest of the
//! store (recording a generation, cancelling a search) calls the `*_in` helpers below inside its
//! own transaction. See the [module doc](super) for the lease model.

use serde_json::Value;
use sqlx::Row;

use super::rows::{event_from_row, lease_from_row, trial_from_row};
use super::{
    Backend, CandidateStatus, Lease, Store, StoreError, TrialEventRow, TrialResult, TrialRow, TrialState,
};

/// Postgres lets concurrent claimers skip rows another transaction has locked, so they do not
/// queue behind each other; SQLite has no row locks (one writer at a time), so the same claim
/// without `FOR UPDATE SKIP LOCKED` is already exclusive.
/// On Postgres the claim and its `leased` event are one statement (a data-modifying CTE): one
/// round trip, atomic without an explicit transaction.
const LEASE_POSTGRES: &str = concat!(
    "WITH claimed AS (
         UPDATE trials
         SET state = 'leased', attempt = attempt + 1, lease_token = $1, worker_id = $2,
             lease_expires_at_ms = $3, updated_at_ms = $4
         WHERE id = (SELECT id FROM trials WHERE state = 'queued' ORDER BY id LIMIT 1
                     FOR UPDATE SKIP LOCKED)
         RETURNING ",
    lease_columns!(),
    "
     ), event AS (
         INSERT INTO trial_events (trial_id, at_ms, kind, payload)
         SELECT id, $4, 'leased', json_build_object('worker_id', $2::text, 'attempt', attempt)::text
         FROM claimed
     )
     SELECT ",
    lease_columns!(),
    " FROM claimed"
);
const LEASE_SQLITE: &str = concat!(
    "UPDATE trials
     SET state = 'leased', attempt = attempt + 1, lease_token = $1, worker_id = $2,
         lease_expires_at_ms = $3, updated_at_ms = $4
     WHERE id = (SELECT id FROM trials WHERE state = 'queued' ORDER BY id LIMIT 1)
     RETURNING ",
    lease_columns!()
);

impl Store {
    /// Queues a proxy training of `candidate_id` with `budget_tokens` at successive-halving `rung`,
    /// at `now_ms`.
    #[tracing::instrument(skip_all, fields(search_id = search_id, candidate_id = candidate_id), err)]
    pub async fn enqueue_trial(
        &self,
        search_id: i64,
        candidate_id: i64,
        budget_tokens: i64,
        rung: i64,
        max_attempts: i64,
        now_ms: i64,
    ) -> Result<TrialRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let trial =
            enqueue_trial_in(&mut tx, search_id, candidate_id, budget_tokens, rung, max_attempts, now_ms)
                .await?;
        tx.commit().await?;
        Ok(trial)
    }

    pub async fn get_trial(&self, id: i64) -> Result<Option<TrialRow>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", trial_columns!(), " FROM trials WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(trial_from_row).transpose()
    }

    /// The history of one trial, oldest first.
    pub async fn trial_events(&self, trial_id: i64) -> Result<Vec<TrialEventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, trial_id, at_ms, kind, payload FROM trial_events
             WHERE trial_id = $1 ORDER BY id",
        )
        .bind(trial_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// What happened to every trial of a candidate, oldest first: queued, leased, requeued (with
    /// the error or expiry that sent it back), failed, done. Progress reports are left out; the
    /// history is capped at its first `limit` events.
    pub async fn candidate_history(
        &self,
        candidate_id: i64,
        limit: i64,
    ) -> Result<Vec<TrialEventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.trial_id, e.at_ms, e.kind, e.payload
             FROM trial_events e JOIN trials t ON t.id = e.trial_id
             WHERE t.candidate_id = $1 AND e.kind <> 'progress'
             ORDER BY e.id LIMIT $2",
        )
        .bind(candidate_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Claims the oldest queued trial for `worker_id` until `now_ms + ttl_ms`; `None` when the
    /// queue is empty.
    #[tracing::instrument(skip_all, fields(worker_id = %worker_id), err)]
    pub async fn lease_trial(
        &self,
        worker_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let claim = match self.backend {
            Backend::Sqlite => LEASE_SQLITE,
            Backend::Postgres => LEASE_POSTGRES,
        };
        let claim = sqlx::query(claim)
            .bind(new_lease_token())
            .bind(worker_id)
            .bind(now_ms.saturating_add(ttl_ms))
            .bind(now_ms);
        if self.backend == Backend::Postgres {
            let row = claim.fetch_optional(&self.pool).await?;
            return row.as_ref().map(lease_from_row).transpose();
        }
        // The claim is the transaction's first statement, so on SQLite it takes the write lock
        // (waiting under the busy timeout) before reading anything: no lock upgrade can fail.
        let mut tx = self.pool.begin().await?;
        let row = claim.fetch_optional(&mut *tx).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let lease = lease_from_row(&row)?;
        let payload = serde_json::json!({ "worker_id": worker_id, "attempt": lease.attempt });
        record_event(&mut tx, lease.trial_id, now_ms, "leased", &payload).await?;
        tx.commit().await?;
        Ok(Some(lease))
    }

    /// Claims the oldest queued trial of search `search_id` for `worker_id` (the coordinator
    /// itself answering a search from a tabular benchmark); `None` when it has none queued.
    /// The outer `state = 'queued'` re-check makes a concurrent claim of the same row a miss.
    #[tracing::instrument(skip_all, fields(search_id = search_id), err)]
    pub async fn lease_trial_of(
        &self,
        search_id: i64,
        worker_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE trials
             SET state = 'leased', attempt = attempt + 1, lease_token = $1, worker_id = $2,
                 lease_expires_at_ms = $3, updated_at_ms = $4
             WHERE state = 'queued'
               AND id = (SELECT id FROM trials WHERE state = 'queued' AND search_id = $5
                         ORDER BY id LIMIT 1)
             RETURNING ",
            lease_columns!()
        ))
        .bind(new_lease_token())
        .bind(worker_id)
        .bind(now_ms.saturating_add(ttl_ms))
        .bind(now_ms)
        .bind(search_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let lease = lease_from_row(&row)?;
        let payload = serde_json::json!({ "worker_id": worker_id, "attempt": lease.attempt });
        record_event(&mut tx, lease.trial_id, now_ms, "leased", &payload).await?;
        tx.commit().await?;
        Ok(Some(lease))
    }

    /// Extends a lease to `now_ms + ttl_ms` and returns the new expiry.
    // A stale lease is an expected answer (a worker that lost its lease), not a fault:
    // logged as a warning. Real failures are logged as errors where they are answered.
    #[tracing::instrument(skip_all, fields(trial_id = trial_id), err(level = "warn"))]
    pub async fn heartbeat(
        &self,
        trial_id: i64,
        lease_token: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<i64, StoreError> {
        let expires_at_ms: Option<i64> = sqlx::query_scalar(
            "UPDATE trials SET lease_expires_at_ms = $1, updated_at_ms = $2
             WHERE id = $3 AND lease_token = $4 AND state = 'leased'
             RETURNING lease_expires_at_ms",
        )
        .bind(now_ms.saturating_add(ttl_ms))
        .bind(now_ms)
        .bind(trial_id)
        .bind(lease_token)
        .fetch_optional(&self.pool)
        .await?;
        expires_at_ms.ok_or(StoreError::StaleLease { trial_id })
    }

    /// Records a trial's result and ends its lease.
    ///
    /// A non-finite loss or perplexity marks the trial `diverged` with no metrics: the
    /// architecture has been evaluated, and NaN cannot be stored portably (SQLite reads it back as
    /// NULL).
    // A stale lease is an expected answer (a worker that lost its lease), not a fault:
    // logged as a warning. Real failures are logged as errors where they are answered.
    #[tracing::instrument(skip_all, fields(trial_id = trial_id), err(level = "warn"))]
    pub async fn complete_trial(
        &self,
        trial_id: i64,
        lease_token: &str,
        result: &TrialResult,
        now_ms: i64,
    ) -> Result<TrialRow, StoreError> {
        let finite = result.val_loss.is_finite() && result.ppl.is_finite();
        let (state, val_loss, ppl) = if finite {
            (TrialState::Done, Some(result.val_loss), Some(result.ppl))
        } else {
            (TrialState::Diverged, None, None)
        };
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE trials
             SET state = $1, val_loss = $2, ppl = $3, result = $4,
                 lease_token = NULL, lease_expires_at_ms = NULL, updated_at_ms = $5
             WHERE id = $6 AND lease_token = $7 AND state = 'leased'
             RETURNING ",
            trial_columns!()
        ))
        .bind(state.as_str())
        .bind(val_loss)
        .bind(ppl)
        .bind(result.result_json.to_string())
        .bind(now_ms)
        .bind(trial_id)
        .bind(lease_token)
        .persistent(false) // binds a nullable real (the store's module doc, "Nullable reals")
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::StaleLease { trial_id });
        };
        let trial = trial_from_row(&row)?;
        let payload =
            serde_json::json!({ "worker_id": trial.worker_id, "attempt": trial.attempt, "ppl": trial.ppl });
        record_event(&mut tx, trial_id, now_ms, state.as_str(), &payload).await?;
        // The candidate shows its highest rung's outcome; a late result of a lower rung (from a
        // reclaimed lease that finished after all) never overwrites a higher one.
        let status = if finite { CandidateStatus::Done } else { CandidateStatus::Diverged };
        sqlx::query(
            "UPDATE candidates
             SET status = $1, rung = $2, val_loss = $3, ppl = $4, metrics = $5,
                 measured_latency_ms = COALESCE($6, measured_latency_ms), error = NULL,
                 updated_at_ms = $7, feasible = COALESCE($9, feasible)
             WHERE id = $8 AND rung <= $2",
        )
        .bind(status.as_str())
        .bind(trial.rung)
        .bind(val_loss)
        .bind(ppl)
        .bind(result.result_json.to_string())
        .bind(result.measured_latency_ms)
        .bind(now_ms)
        .bind(trial.candidate_id)
        .bind(result.meets_floors.map(i64::from))
        .persistent(false) // binds nullable reals (the store's module doc, "Nullable reals")
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(trial)
    }

    /// Takes back every lease that expired by `now_ms`: the trial is queued again while attempts
    /// remain, and failed otherwise. Clearing the token fences the old holder. Returns how many
    /// leases were taken back.
    #[tracing::instrument(skip_all, err)]
    pub async fn reclaim_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        // `worker_id` is left in place so the row and its event name the holder that lost it.
        let steps = [
            (
                "requeued",
                "UPDATE trials
                 SET state = 'queued', lease_token = NULL, lease_expires_at_ms = NULL,
                     updated_at_ms = $1
                 WHERE state = 'leased' AND lease_expires_at_ms <= $1 AND attempt < max_attempts
                 RETURNING id, worker_id, attempt",
            ),
            (
                "failed",
                "UPDATE trials
                 SET state = 'failed', lease_token = NULL, lease_expires_at_ms = NULL,
                     updated_at_ms = $1
                 WHERE state = 'leased' AND lease_expires_at_ms <= $1 AND attempt >= max_attempts
                 RETURNING id, worker_id, attempt",
            ),
        ];
        let mut tx = self.pool.begin().await?;
        let mut reclaimed = 0;
        for (kind, sql) in steps {
            let rows = sqlx::query(sql).bind(now_ms).fetch_all(&mut *tx).await?;
            for row in &rows {
                let trial_id: i64 = row.try_get("id")?;
                let worker_id: Option<String> = row.try_get("worker_id")?;
                let attempt: i64 = row.try_get("attempt")?;
                let payload = serde_json::json!({ "worker_id": worker_id, "attempt": attempt });
                record_event(&mut tx, trial_id, now_ms, kind, &payload).await?;
                if kind == "failed" {
                    let error = format!("the lease expired on the last attempt ({attempt})");
                    fail_candidate_of(&mut tx, trial_id, &error, now_ms).await?;
                }
            }
            reclaimed += rows.len() as u64;
        }
        tx.commit().await?;
        Ok(reclaimed)
    }

    /// Records that a worker could not train a trial. While attempts remain and the error is
    /// retryable the trial is queued again; otherwise it fails, and so does its candidate unless
    /// another rung scored it. Fenced by the lease token like [`Store::complete_trial`].
    // A stale lease is an expected answer (a worker that lost its lease), not a fault:
    // logged as a warning. Real failures are logged as errors where they are answered.
    #[tracing::instrument(skip_all, fields(trial_id = trial_id), err(level = "warn"))]
    pub async fn fail_trial(
        &self,
        trial_id: i64,
        lease_token: &str,
        error: &str,
        retryable: bool,
        now_ms: i64,
    ) -> Result<TrialRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE trials
             SET state = CASE WHEN $1 = 1 AND attempt < max_attempts THEN 'queued' ELSE 'failed' END,
                 result = $2, lease_token = NULL, lease_expires_at_ms = NULL, updated_at_ms = $3
             WHERE id = $4 AND lease_token = $5 AND state = 'leased'
             RETURNING ",
            trial_columns!()
        ))
        .bind(i64::from(retryable))
        .bind(serde_json::json!({ "error": error }).to_string())
        .bind(now_ms)
        .bind(trial_id)
        .bind(lease_token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::StaleLease { trial_id });
        };
        let trial = trial_from_row(&row)?;
        let kind = if trial.state == TrialState::Queued { "requeued" } else { "failed" };
        let payload =
            serde_json::json!({ "worker_id": trial.worker_id, "attempt": trial.attempt, "error": error });
        record_event(&mut tx, trial_id, now_ms, kind, &payload).await?;
        if trial.state == TrialState::Failed {
            fail_candidate_of(&mut tx, trial_id, error, now_ms).await?;
        }
        tx.commit().await?;
        Ok(trial)
    }

    /// Queues a successive-halving promotion of `candidate_id` to `rung` at `now_ms`, unless that
    /// rung is already queued or done for it. Returns whether a trial was queued.
    pub async fn promote(
        &self,
        search_id: i64,
        candidate_id: i64,
        rung: i64,
        budget_tokens: i64,
        max_attempts: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let existing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM trials WHERE candidate_id = $1 AND rung = $2")
                .bind(candidate_id)
                .bind(rung)
                .fetch_one(&mut *tx)
                .await?;
        if existing > 0 {
            return Ok(false);
        }
        enqueue_trial_in(&mut tx, search_id, candidate_id, budget_tokens, rung, max_attempts, now_ms).await?;
        // The candidate is training again: it keeps its lower rung's perplexity meanwhile.
        tx.commit().await?;
        Ok(true)
    }

    /// Appends an event a worker reported (a resumption from a checkpoint, say) to a trial's
    /// history.
    pub async fn record_trial_event(
        &self,
        trial_id: i64,
        now_ms: i64,
        kind: &str,
        payload: &Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        record_event(&mut tx, trial_id, now_ms, kind, payload).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends a progress event (a heartbeat's step, loss and throughput) to a trial's history.
    pub async fn record_progress(
        &self,
        trial_id: i64,
        now_ms: i64,
        progress: &Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        record_event(&mut tx, trial_id, now_ms, "progress", progress).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queued and leased trials across all searches (for metrics and long-polls).
    pub async fn queue_depth(&self) -> Result<(i64, i64), StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM trials WHERE state IN ('queued', 'leased') GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        let (mut queued, mut leased) = (0, 0);
        for row in &rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            if state == "queued" {
                queued = n;
            } else {
                leased = n;
            }
        }
        Ok((queued, leased))
    }
}

/// Marks the candidate of a trial that failed for good, unless a result of another rung already
/// scored it (a failure of a promotion does not erase the lower rung's perplexity).
async fn fail_candidate_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    trial_id: i64,
    error: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE candidates SET status = 'failed', error = $1, updated_at_ms = $2
         WHERE id = (SELECT candidate_id FROM trials WHERE id = $3) AND status = 'pending'",
    )
    .bind(error)
    .bind(now_ms)
    .bind(trial_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn enqueue_trial_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    search_id: i64,
    candidate_id: i64,
    budget_tokens: i64,
    rung: i64,
    max_attempts: i64,
    now_ms: i64,
) -> Result<TrialRow, StoreError> {
    let row = sqlx::query(concat!(
        "INSERT INTO trials (search_id, candidate_id, state, budget_tokens, rung, attempt,
                             max_attempts, created_at_ms, updated_at_ms)
         VALUES ($1, $2, 'queued', $3, $4, 0, $5, $6, $6)
         RETURNING ",
        trial_columns!()
    ))
    .bind(search_id)
    .bind(candidate_id)
    .bind(budget_tokens)
    .bind(rung)
    .bind(max_attempts)
    .bind(now_ms)
    .fetch_one(&mut **tx)
    .await?;
    let trial = trial_from_row(&row)?;
    record_event(tx, trial.id, now_ms, "queued", &serde_json::json!({})).await?;
    Ok(trial)
}

/// Fails every queued or leased trial of a cancelled search (clearing the token revokes a running
/// lease: its next heartbeat or result is stale) and marks its pending candidates failed.
pub(super) async fn cancel_outstanding_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    search_id: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE trials SET state = 'failed', result = $1, lease_token = NULL,
                lease_expires_at_ms = NULL, updated_at_ms = $2
         WHERE search_id = $3 AND state IN ('queued', 'leased')",
    )
    .bind(serde_json::json!({ "error": "search cancelled" }).to_string())
    .bind(now_ms)
    .bind(search_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE candidates SET status = 'failed', error = 'search cancelled', updated_at_ms = $1
         WHERE search_id = $2 AND status = 'pending'",
    )
    .bind(now_ms)
    .bind(search_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn record_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    trial_id: i64,
    at_ms: i64,
    kind: &str,
    payload: &Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO trial_events (trial_id, at_ms, kind, payload) VALUES ($1, $2, $3, $4)")
        .bind(trial_id)
        .bind(at_ms)
        .bind(kind)
        .bind(payload.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// 128 random bits as hex: unguessable, so only the lease holder can heartbeat or complete.
fn new_lease_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}
