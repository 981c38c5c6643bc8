//! Search bookkeeping: generations, candidate outcomes, cancellation, leaderboards.

use coordinator::store::{
    CandidateStatus, CursorValue, LeaderboardQuery, NewMember, SortKey, Store, TrialResult, TrialState,
};
use serde_json::json;

use crate::helpers::{TestDb, candidate};

const NOW: i64 = 1_700_000_000_000;
const TTL: i64 = 30_000;

fn member(n: i64) -> NewMember {
    NewMember { candidate: candidate(n), parents: vec![], origin: "random".into() }
}

fn result(ppl: f64) -> TrialResult {
    TrialResult {
        val_loss: ppl.ln(),
        ppl,
        result_json: json!({ "loss_curve": [[1, 5.0]] }),
        measured_latency_ms: Some(3.5),
        meets_floors: None,
    }
}

async fn search(store: &Store) -> i64 {
    store.create_search("s", &json!({})).await.unwrap().id
}

/// Leases and completes every queued trial with perplexity `ppl(candidate_id)`.
async fn finish_all(store: &Store, ppl: impl Fn(i64) -> f64) {
    while let Some(lease) = store.lease_trial("w", NOW, TTL).await.unwrap() {
        store
            .complete_trial(lease.trial_id, &lease.lease_token, &result(ppl(lease.candidate_id)), NOW)
            .await
            .unwrap();
    }
}

pub async fn generation_records_members_and_queues_only_new_feasible_candidates(db: TestDb) {
    let s = search(&db.store).await;
    let mut infeasible = member(3);
    infeasible.candidate.feasible = false;
    let added =
        db.store.add_generation(s, 0, &[member(1), member(2), infeasible], 1000, 2, NOW).await.unwrap();
    assert_eq!(added.iter().map(|(_, new)| *new).collect::<Vec<_>>(), [true, true, true]);
    assert_eq!(added[2].0.status, CandidateStatus::Infeasible);
    // Generation 1 repeats candidate 2: it is a member again but is not retrained.
    let again = db.store.add_generation(s, 1, &[member(2), member(4)], 1000, 2, NOW).await.unwrap();
    assert!(!again[0].1, "a known architecture is not a new candidate");
    assert_eq!(again[0].0.id, added[1].0.id);
    let members = db.store.search_members(s).await.unwrap();
    let layout: Vec<(i64, i64, i64)> =
        members.iter().map(|m| (m.generation, m.slot, m.candidate.id)).collect();
    let id = |i: usize| added[i].0.id;
    assert_eq!(layout, [(0, 0, id(0)), (0, 1, id(1)), (0, 2, id(2)), (1, 0, id(1)), (1, 1, again[1].0.id)]);
    let trials = db.store.search_trials(s).await.unwrap();
    let trained: Vec<i64> = trials.iter().map(|t| t.candidate_id).collect();
    assert_eq!(trained, [id(0), id(1), again[1].0.id], "one trial per new feasible candidate");
    assert_eq!(db.store.get_search(s).await.unwrap().unwrap().status, "running");
}

pub async fn recording_a_generation_twice_is_refused(db: TestDb) {
    let s = search(&db.store).await;
    db.store.add_generation(s, 0, &[member(1)], 1000, 2, NOW).await.unwrap();
    assert!(db.store.add_generation(s, 0, &[member(2)], 1000, 2, NOW).await.is_err());
    // The refused generation left nothing behind.
    assert_eq!(db.store.search_points(s).await.unwrap().len(), 1);
    assert_eq!(db.store.search_trials(s).await.unwrap().len(), 1);
}

pub async fn completed_trial_scores_its_candidate(db: TestDb) {
    let s = search(&db.store).await;
    let added = db.store.add_generation(s, 0, &[member(1)], 1000, 2, NOW).await.unwrap();
    finish_all(&db.store, |_| 12.0).await;
    let c = db.store.get_candidate(added[0].0.id).await.unwrap().unwrap();
    assert_eq!(c.status, CandidateStatus::Done);
    assert_eq!(c.ppl, Some(12.0));
    assert_eq!(c.rung, 0);
    assert_eq!(c.measured_latency_ms, Some(3.5));
    assert_eq!(c.metrics.unwrap()["loss_curve"], json!([[1, 5.0]]));
}

pub async fn a_late_lower_rung_result_never_overwrites_a_higher_one(db: TestDb) {
    let s = search(&db.store).await;
    let added = db.store.add_generation(s, 0, &[member(1)], 1000, 2, NOW).await.unwrap();
    let cid = added[0].0.id;
    let rung0 = db.store.lease_trial("slow", NOW, TTL).await.unwrap().unwrap();
    assert!(db.store.promote(s, cid, 1, 3000, 2, NOW).await.unwrap());
    assert!(!db.store.promote(s, cid, 1, 3000, 2, NOW).await.unwrap(), "a rung is queued once");
    let rung1 = db.store.lease_trial("fast", NOW, TTL).await.unwrap().unwrap();
    assert_eq!(rung1.rung, 1);
    db.store.complete_trial(rung1.trial_id, &rung1.lease_token, &result(8.0), NOW).await.unwrap();
    db.store.complete_trial(rung0.trial_id, &rung0.lease_token, &result(20.0), NOW).await.unwrap();
    let c = db.store.get_candidate(cid).await.unwrap().unwrap();
    assert_eq!((c.rung, c.ppl), (1, Some(8.0)));
}

pub async fn retryable_failure_requeues_until_attempts_run_out(db: TestDb) {
    let s = search(&db.store).await;
    let added = db.store.add_generation(s, 0, &[member(1)], 1000, 2, NOW).await.unwrap();
    let first = db.store.lease_trial("w1", NOW, TTL).await.unwrap().unwrap();
    let t =
        db.store.fail_trial(first.trial_id, &first.lease_token, "out of memory", true, NOW).await.unwrap();
    assert_eq!(t.state, TrialState::Queued);
    assert_eq!(
        db.store.get_candidate(added[0].0.id).await.unwrap().unwrap().status,
        CandidateStatus::Pending
    );
    // The old token is dead; the second attempt is the last.
    assert!(db.store.fail_trial(first.trial_id, &first.lease_token, "again", true, NOW).await.is_err());
    let second = db.store.lease_trial("w2", NOW, TTL).await.unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    let t =
        db.store.fail_trial(second.trial_id, &second.lease_token, "out of memory", true, NOW).await.unwrap();
    assert_eq!(t.state, TrialState::Failed);
    let c = db.store.get_candidate(added[0].0.id).await.unwrap().unwrap();
    assert_eq!(c.status, CandidateStatus::Failed);
    assert_eq!(c.error.as_deref(), Some("out of memory"));
}

pub async fn permanent_failure_fails_at_once(db: TestDb) {
    let s = search(&db.store).await;
    db.store.add_generation(s, 0, &[member(1)], 1000, 5, NOW).await.unwrap();
    let lease = db.store.lease_trial("w1", NOW, TTL).await.unwrap().unwrap();
    let t = db
        .store
        .fail_trial(lease.trial_id, &lease.lease_token, "bad architecture", false, NOW)
        .await
        .unwrap();
    assert_eq!(t.state, TrialState::Failed);
}

pub async fn cancelling_a_search_fails_its_queued_work_once(db: TestDb) {
    let s = search(&db.store).await;
    let added = db.store.add_generation(s, 0, &[member(1), member(2)], 1000, 2, NOW).await.unwrap();
    let leased = db.store.lease_trial("w", NOW, TTL).await.unwrap().unwrap();
    assert!(db.store.cancel_search(s, NOW).await.unwrap());
    assert!(!db.store.cancel_search(s, NOW).await.unwrap(), "an ended search is not cancelled again");
    assert_eq!(db.store.get_search(s).await.unwrap().unwrap().status, "cancelled");
    assert!(db.store.lease_trial("w", NOW, TTL).await.unwrap().is_none(), "nothing left to lease");
    // The running trial's lease is gone: its result is refused.
    assert!(db.store.complete_trial(leased.trial_id, &leased.lease_token, &result(5.0), NOW).await.is_err());
    for (c, _) in &added {
        assert_eq!(db.store.get_candidate(c.id).await.unwrap().unwrap().status, CandidateStatus::Failed);
    }
    assert!(!db.store.set_search_status(s, "running", None, NOW).await.unwrap(), "cancelled is terminal");
}

pub async fn leaderboard_pages_by_keyset_in_every_order(db: TestDb) {
    let s = search(&db.store).await;
    let members: Vec<NewMember> = (0..25)
        .map(|n| {
            let mut m = member(n);
            m.candidate.feasible = n % 5 != 0;
            m.candidate.est_latency_ms = Some((n % 7) as f64);
            m
        })
        .collect();
    db.store.add_generation(s, 0, &members, 1000, 2, NOW).await.unwrap();
    // Infeasible candidates are not trained; the others get perplexities with ties.
    finish_all(&db.store, |id| (id % 4) as f64 + 10.0).await;
    let mut seen = Vec::new();
    let mut query = LeaderboardQuery {
        sort: SortKey::Ppl,
        descending: false,
        feasible_only: true,
        limit: 6,
        after: None,
    };
    loop {
        let page = db.store.leaderboard(s, &query).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        query.after = Some((CursorValue::Real(last.ppl.unwrap()), last.id));
        seen.extend(page.iter().map(|c| (c.ppl.unwrap(), c.id)));
    }
    assert_eq!(seen.len(), 20, "every feasible scored candidate exactly once");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    assert_eq!(seen, sorted);
    // Descending latency over all candidates (infeasible ones included).
    let query = LeaderboardQuery {
        sort: SortKey::Latency,
        descending: true,
        feasible_only: false,
        limit: 100,
        after: None,
    };
    let rows = db.store.leaderboard(s, &query).await.unwrap();
    assert_eq!(rows.len(), 25);
    assert!(rows.windows(2).all(|w| w[0].est_latency_ms >= w[1].est_latency_ms));
    let progress = db.store.search_progress(s).await.unwrap();
    assert_eq!(progress.candidates.get("done"), Some(&20));
    assert_eq!(progress.candidates.get("infeasible"), Some(&5));
    assert_eq!(progress.trials.get("done"), Some(&20));
    assert_eq!(progress.generations, 1);
}
