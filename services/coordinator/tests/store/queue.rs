//! The leased trial queue. Time is a plain number the tests choose; nothing here sleeps.

use std::collections::HashSet;

use coordinator::StoreError;
use coordinator::store::{TrialResult, TrialState};
use serde_json::json;

use crate::helpers::{TestDb, queued_trials};

const T0_MS: i64 = 1_700_000_000_000;
const TTL_MS: i64 = 30_000;

fn result(val_loss: f64) -> TrialResult {
    TrialResult {
        val_loss,
        ppl: val_loss.exp(),
        result_json: json!({ "tokens_per_s": 51_000.0, "steps": 120 }),
        measured_latency_ms: None,
        meets_floors: None,
    }
}

fn event_kinds(events: &[coordinator::store::TrialEventRow]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

pub async fn empty_queue_leases_nothing(db: TestDb) {
    assert_eq!(db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap(), None);
}

pub async fn oldest_queued_trial_is_leased_first(db: TestDb) {
    let ids = queued_trials(&db.store, 3, 3).await;

    let first = db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().expect("a trial");
    let second = db.store.lease_trial("w2", T0_MS, TTL_MS).await.unwrap().expect("a trial");

    assert_eq!([first.trial_id, second.trial_id], [ids[0], ids[1]]);
    let third = db.store.get_trial(ids[2]).await.unwrap().unwrap();
    assert_eq!(third.state, TrialState::Queued);
}

pub async fn lease_hands_out_a_fresh_token_and_expiry(db: TestDb) {
    let ids = queued_trials(&db.store, 2, 3).await;

    let a = db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().unwrap();
    let b = db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().unwrap();

    assert_eq!(a.lease_expires_at_ms, T0_MS + TTL_MS);
    assert_eq!(a.attempt, 1);
    assert_eq!(a.budget_tokens, 1_000_000);
    assert_eq!(a.lease_token.len(), 32, "128 bits as hex");
    assert_ne!(a.lease_token, b.lease_token);
    let trial = db.store.get_trial(ids[0]).await.unwrap().unwrap();
    assert_eq!(trial.state, TrialState::Leased);
    assert_eq!(trial.worker_id.as_deref(), Some("w1"));
    assert_eq!(trial.lease_token.as_deref(), Some(a.lease_token.as_str()));
    assert_eq!(trial.lease_expires_at_ms, Some(T0_MS + TTL_MS));
}

pub async fn heartbeat_with_the_lease_token_extends_the_lease(db: TestDb) {
    let ids = queued_trials(&db.store, 1, 3).await;
    let lease = db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().unwrap();

    let later_ms = T0_MS + 20_000;
    let expires = db.store.heartbeat(lease.trial_id, &lease.lease_token, later_ms, TTL_MS).await;

    assert_eq!(expires.unwrap(), later_ms + TTL_MS);
    // Past the original expiry but within the extended one: nothing is reclaimed.
    assert_eq!(db.store.reclaim_expired(T0_MS + TTL_MS + 1).await.unwrap(), 0);
    let trial = db.store.get_trial(ids[0]).await.unwrap().unwrap();
    assert_eq!(trial.state, TrialState::Leased);
    assert_eq!(trial.lease_expires_at_ms, Some(later_ms + TTL_MS));
}

pub async fn heartbeat_with_a_stale_token_is_refused(db: TestDb) {
    let ids = queued_trials(&db.store, 1, 3).await;
    let lease = db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().unwrap();

    let err = db.store.heartbeat(lease.trial_id, "not-the-token", T0_MS + 1, TTL_MS).await;

    assert!(matches!(err, Err(StoreError::StaleLease { trial_id }) if trial_id == ids[0]));
    let trial = db.store.get_trial(ids[0]).await.unwrap().unwrap();
    assert_eq!(trial.lease_expires_at_ms, Some(T0_MS + TTL_MS), "the lease is not extended");
}

pub async fn completed_trial_records_its_result(db: TestDb) {
    let ids = queued_trials(&db.store, 1, 3).await;
    let lease = db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().unwrap();

    let done = db
        .store
        .complete_trial(lease.trial_id, &lease.lease_token, &result(2.5), T0_MS + 1_000)
        .await
        .expect("complete");

    assert_eq!(done.state, TrialState::Done);
    assert_eq!(done.val_loss, Some(2.5));
    assert_eq!(done.ppl, Some(2.5_f64.exp()));
    assert_eq!(done.result, Some(json!({ "tokens_per_s": 51_000.0, "steps": 120 })));
    assert_eq!(done.lease_token, None);
    assert_eq!(done.updated_at_ms, T0_MS + 1_000);
    assert_eq!(db.store.get_trial(ids[0]).await.unwrap(), Some(done));
    // A done trial is not leased again.
    assert_eq!(db.store.lease_trial("w2", T0_MS + 2_000, TTL_MS).await.unwrap(), None);
}

pub async fn stale_token_cannot_complete_a_trial(db: TestDb) {
    let ids = queued_trials(&db.store, 1, 3).await;
    let lease = db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().unwrap();

    let err = db.store.complete_trial(lease.trial_id, "forged", &result(2.5), T0_MS + 1).await;

    assert!(matches!(err, Err(StoreError::StaleLease { .. })), "{err:?}");
    let trial = db.store.get_trial(ids[0]).await.unwrap().unwrap();
    assert_eq!(trial.state, TrialState::Leased, "nothing changes");
    assert_eq!(trial.val_loss, None);
    assert_eq!(trial.result, None);
}

pub async fn non_finite_loss_marks_the_trial_diverged(db: TestDb) {
    queued_trials(&db.store, 1, 3).await;
    let lease = db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().unwrap();

    let trial = db
        .store
        .complete_trial(lease.trial_id, &lease.lease_token, &result(f64::NAN), T0_MS + 1)
        .await
        .expect("complete");

    assert_eq!(trial.state, TrialState::Diverged);
    assert_eq!((trial.val_loss, trial.ppl), (None, None));
    let events = db.store.trial_events(trial.id).await.unwrap();
    assert_eq!(event_kinds(&events), ["queued", "leased", "diverged"]);
}

pub async fn unexpired_lease_is_not_reclaimed(db: TestDb) {
    let ids = queued_trials(&db.store, 1, 3).await;
    db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().unwrap();

    let reclaimed = db.store.reclaim_expired(T0_MS + TTL_MS - 1).await.unwrap();

    assert_eq!(reclaimed, 0);
    let trial = db.store.get_trial(ids[0]).await.unwrap().unwrap();
    assert_eq!(trial.state, TrialState::Leased);
}

pub async fn expired_lease_is_reclaimed_by_another_worker(db: TestDb) {
    let ids = queued_trials(&db.store, 1, 3).await;
    let lost = db.store.lease_trial("w1", T0_MS, TTL_MS).await.unwrap().unwrap();

    let reclaim_ms = T0_MS + TTL_MS;
    assert_eq!(db.store.reclaim_expired(reclaim_ms).await.unwrap(), 1);
    let taken = db.store.lease_trial("w2", reclaim_ms + 1, TTL_MS).await.unwrap().expect("requeued");

    assert_eq!(taken.trial_id, ids[0]);
    assert_eq!(taken.attempt, 2);
    assert_ne!(taken.lease_token, lost.lease_token);
    // The first worker comes back late: it is fenced out of both heartbeat and result.
    let late_ms = reclaim_ms + 2;
    let heartbeat = db.store.heartbeat(ids[0], &lost.lease_token, late_ms, TTL_MS).await;
    assert!(matches!(heartbeat, Err(StoreError::StaleLease { .. })));
    let late = db.store.complete_trial(ids[0], &lost.lease_token, &result(9.0), late_ms).await;
    assert!(matches!(late, Err(StoreError::StaleLease { .. })));
    let done = db
        .store
        .complete_trial(ids[0], &taken.lease_token, &result(3.0), late_ms + 1)
        .await
        .expect("the current holder completes");
    assert_eq!(done.val_loss, Some(3.0));
    assert_eq!(done.worker_id.as_deref(), Some("w2"));
    let events = db.store.trial_events(ids[0]).await.unwrap();
    assert_eq!(event_kinds(&events), ["queued", "leased", "requeued", "leased", "done"]);
    assert_eq!(events[2].payload["worker_id"], "w1");
}

pub async fn trial_out_of_attempts_is_marked_failed(db: TestDb) {
    let ids = queued_trials(&db.store, 1, 2).await;
    let mut now_ms = T0_MS;
    for attempt in 1..=2 {
        let lease = db.store.lease_trial("w", now_ms, TTL_MS).await.unwrap().expect("leased");
        assert_eq!(lease.attempt, attempt);
        now_ms += TTL_MS;
        assert_eq!(db.store.reclaim_expired(now_ms).await.unwrap(), 1);
    }

    let trial = db.store.get_trial(ids[0]).await.unwrap().unwrap();
    assert_eq!(trial.state, TrialState::Failed);
    assert_eq!(trial.lease_token, None);
    assert_eq!(db.store.lease_trial("w", now_ms, TTL_MS).await.unwrap(), None);
    let events = db.store.trial_events(ids[0]).await.unwrap();
    assert_eq!(event_kinds(&events), ["queued", "leased", "requeued", "leased", "failed"]);
}

pub async fn trial_for_an_unknown_candidate_is_rejected(db: TestDb) {
    let search = db.store.create_search("s", &json!({})).await.unwrap();

    let err = db.store.enqueue_trial(search.id, 999_999, 1_000, 0, 3, T0_MS).await;

    assert!(matches!(err, Err(StoreError::Database(_))), "{err:?}");
    assert_eq!(db.store.lease_trial("w", T0_MS, TTL_MS).await.unwrap(), None);
}

pub async fn concurrent_workers_never_lease_the_same_trial(db: TestDb) {
    const WORKERS: usize = 16;
    const TRIALS: i64 = 10;
    let ids = queued_trials(&db.store, TRIALS, 3).await;

    // Each worker keeps leasing until the queue looks empty to it, so every trial is claimed by
    // someone and any double claim shows up as a repeated id.
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let store = db.store.clone();
        tasks.spawn(async move {
            let worker_id = format!("w{worker}");
            let mut leased = Vec::new();
            while let Some(lease) = store.lease_trial(&worker_id, T0_MS, TTL_MS).await.unwrap() {
                leased.push(lease.trial_id);
            }
            leased
        });
    }
    let leased: Vec<i64> = tasks.join_all().await.into_iter().flatten().collect();

    let unique: HashSet<i64> = leased.iter().copied().collect();
    assert_eq!(unique.len(), leased.len(), "a trial was leased twice: {leased:?}");
    assert_eq!(unique, ids.iter().copied().collect::<HashSet<_>>(), "every trial is leased");
    for id in ids {
        let trial = db.store.get_trial(id).await.unwrap().unwrap();
        assert_eq!((trial.state, trial.attempt), (TrialState::Leased, 1));
    }
}
