//! Accuracy goals: floors that make a short candidate infeasible, objectives for NSGA-II, and
//! their validation.

use std::collections::BTreeMap;

use axum::Router;
use axum::http::StatusCode;
use coordinator::app::AppState;
use serde_json::{Value, json};

use crate::helpers::TestDb;
use crate::protocol::{lease, metrics, register};
use crate::requests::{ADMIN, WORKER, aging, api, get, post, spec};

/// A stand-in for training on in-context recall that the floors must overrule: models without
/// attention reach the lowest perplexity but recall poorly; with attention they recall well.
fn fake_result(job: &Value) -> (f64, f64) {
    let arch: search_space::Architecture = serde_json::from_value(job["architecture"].clone()).unwrap();
    let ops = arch.operators();
    let attention = ops.iter().filter(|o| o.code() == "A").count() as f64;
    let ppl = 5.0 + 2.0 * attention + 0.1 * ops.len() as f64;
    let recall = if attention > 0.0 { 0.9 + 0.01 * attention } else { 0.25 };
    (ppl, recall)
}

fn recall_spec(algorithm: Value, accuracy: Value) -> Value {
    let mut s = spec(algorithm);
    s["proxy"]["corpus"] = json!("synthetic:in_context_recall");
    s["accuracy"] = accuracy;
    s
}

async fn complete_with(router: &Router, grant: &Value, ppl: f64, recall: f64) -> (StatusCode, Value) {
    let mut m = metrics(ppl);
    m["accuracy"] = json!({ "in_context_recall": recall });
    let body = json!({ "lease_token": grant["lease_token"], "metrics": m });
    post(router, &format!("/api/v1/trials/{}/complete", grant["trial_id"]), WORKER, &body).await
}

/// Runs the search with [`fake_result`]; returns each candidate's recall.
async fn drive(router: &Router, state: &AppState, id: i64) -> BTreeMap<i64, f64> {
    register(router, "sim").await;
    let mut recall = BTreeMap::new();
    for _ in 0..60 {
        coordinator::server::background_step(state).await.unwrap();
        let status = state.store.get_search(id).await.unwrap().unwrap().status;
        if status != "running" && status != "pending" {
            assert_eq!(status, "completed");
            return recall;
        }
        while let Some(grant) = lease(router, "sim").await {
            let (ppl, r) = fake_result(&grant["job"]);
            recall.insert(grant["candidate_id"].as_i64().unwrap(), r);
            let (code, body) = complete_with(router, &grant, ppl, r).await;
            assert_eq!(code, StatusCode::OK, "{body}");
        }
    }
    panic!("search {id} did not finish");
}

pub async fn a_candidate_below_an_accuracy_floor_is_infeasible_and_never_a_parent(db: TestDb) {
    let (router, state) = api(&db.store);
    let s = recall_spec(aging(6, 3, 3), json!({ "min": { "in_context_recall": 0.9 } }));
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    let recall = drive(&router, &state, id).await;
    let short: Vec<i64> = recall.iter().filter(|(_, r)| **r < 0.9).map(|(c, _)| *c).collect();
    assert!(
        !short.is_empty(),
        "the seed must sample attention-free candidates for this test to mean anything"
    );

    let (_, page) = get(&router, &format!("/api/v1/searches/{id}/leaderboard?limit=100")).await;
    let items = page["items"].as_array().unwrap();
    for c in items {
        let cid = c["id"].as_i64().unwrap();
        assert_eq!(c["feasible"], json!(recall[&cid] >= 0.9), "candidate {c}");
        assert_eq!(c["accuracy"]["in_context_recall"], json!(recall[&cid]));
    }
    // Without the floor an attention-free model would win: the lowest perplexity is short.
    assert!(short.contains(&items[0]["id"].as_i64().unwrap()), "{page}");
    let (_, feasible) =
        get(&router, &format!("/api/v1/searches/{id}/leaderboard?feasible=true&limit=100")).await;
    let best = &feasible["items"][0];
    assert!(recall[&best["id"].as_i64().unwrap()] >= 0.9, "{feasible}");
    let (status, doc) = get(&router, &format!("/api/v1/searches/{id}/best/export?format=frontier")).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let exported: search_space::Architecture = serde_json::from_value(doc).unwrap();
    assert!(exported.operators().iter().any(|o| o.code() == "A"), "the exported best meets the floor");
    // The Pareto front holds feasible candidates only.
    let (_, pareto) = get(&router, &format!("/api/v1/searches/{id}/pareto")).await;
    let front = pareto["front"].as_array().unwrap();
    assert!(!front.is_empty(), "{pareto}");
    for f in front {
        assert!(recall[&f["id"].as_i64().unwrap()] >= 0.9, "{f} is on the front");
    }
    // Aging evolution breeds only from members that meet the floor.
    let children: Vec<_> =
        db.store.search_members(id).await.unwrap().into_iter().filter(|m| m.generation > 0).collect();
    assert!(!children.is_empty());
    for child in &children {
        for parent in &child.parents {
            assert!(recall[parent] >= 0.9, "candidate {parent} (recall {}) bred a child", recall[parent]);
        }
    }
}

pub async fn nsga2_takes_accuracy_as_an_objective_and_refuses_goals_it_cannot_measure(db: TestDb) {
    let (router, state) = api(&db.store);
    crate::requests::flat_latency_table(&db.store, "cpu-test", "batch=1,prompt=16,gen=32").await;
    let s = recall_spec(
        json!({ "kind": "nsga2", "population": 4, "generations": 1 }),
        json!({ "maximize": ["in_context_recall"], "min": { "in_context_recall": 0.5 } }),
    );
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let recall = drive(&router, &state, created["id"].as_i64().unwrap()).await;
    assert!(recall.len() >= 4);

    let refused = |s: Value| {
        let router = router.clone();
        async move {
            let (status, body) = post(&router, "/api/v1/searches", ADMIN, &s).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            body["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["path"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // Objectives need NSGA-II; floors need a synthetic corpus that trains the task.
    let paths = refused(recall_spec(aging(4, 2, 1), json!({ "maximize": ["in_context_recall"] }))).await;
    assert_eq!(paths, ["accuracy.maximize"]);
    let mut text = recall_spec(aging(4, 2, 1), json!({ "min": { "in_context_recall": 0.5 } }));
    text["proxy"]["corpus"] = json!("corpus.txt");
    assert_eq!(refused(text).await, ["accuracy"]);
    let paths =
        refused(recall_spec(aging(4, 2, 1), json!({ "min": { "compression": 0.5, "recall": 2.0 } }))).await;
    assert_eq!(paths, ["accuracy.min.compression", "accuracy.min.recall", "accuracy.min.recall"]);
    let mut bad_corpus = spec(aging(4, 2, 1));
    bad_corpus["proxy"]["corpus"] = json!("synthetic:copying");
    assert_eq!(refused(bad_corpus).await, ["proxy.corpus"]);

    // A worker's accuracy outside [0, 1] is refused, naming the task, and nothing is stored.
    let s = recall_spec(aging(2, 1, 1), json!({ "min": { "in_context_recall": 0.5 } }));
    let (_, created) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    let grant = loop {
        let g = lease(&router, "sim").await.expect("a queued trial");
        if g["search_id"] == created["id"] {
            break g;
        }
    };
    let (status, body) = complete_with(&router, &grant, 7.0, 1.5).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["fields"][0]["path"], "metrics.accuracy.in_context_recall", "{body}");
    let trial = state.store.get_trial(grant["trial_id"].as_i64().unwrap()).await.unwrap().unwrap();
    assert_eq!(trial.state, coordinator::store::TrialState::Leased, "the lease still holds");
    let (status, _) = complete_with(&router, &grant, 7.0, 0.25).await;
    assert_eq!(status, StatusCode::OK);
    let cand = state.store.get_candidate(grant["candidate_id"].as_i64().unwrap()).await.unwrap().unwrap();
    assert!(!cand.feasible, "recall 0.25 is below the floor of 0.5");
}
