//! Whole searches, driven by the background step and simulated workers over the API.

use std::collections::BTreeSet;

use axum::Router;
use axum::http::StatusCode;
use coordinator::app::AppState;
use coordinator::store::Store;
use serde_json::{Value, json};

use crate::helpers::TestDb;
use crate::protocol::{complete, lease, register};
use crate::requests::{ADMIN, WORKER, aging, api, flat_latency_table, get, post, spec};

/// A deterministic stand-in for training: perplexity from the layer pattern and width, so
/// attention and wider models score better and different architectures differ.
fn fake_ppl(job: &Value) -> f64 {
    let arch: search_space::Architecture = serde_json::from_value(job["architecture"].clone()).unwrap();
    let ops = arch.operators();
    let attention = ops.iter().filter(|o| o.code() == "A").count() as f64;
    let ffn = ops.iter().filter(|o| o.code() == "F").count() as f64;
    let tokens = job["budget_tokens"].as_f64().unwrap();
    30.0 - 2.0 * attention - ffn - f64::from(arch.model.hidden_size) / 64.0 - tokens / 4096.0
        + (ops.len() as f64) * 0.37
}

/// Steps the search and works every queued trial until the search ends; returns its status.
async fn drive(router: &Router, state: &AppState, id: i64, max_rounds: usize) -> String {
    register(router, "sim").await;
    for _ in 0..max_rounds {
        coordinator::server::background_step(state).await.unwrap();
        let status = state.store.get_search(id).await.unwrap().unwrap().status;
        if status != "running" && status != "pending" {
            return status;
        }
        while let Some(grant) = lease(router, "sim").await {
            let (code, body) = complete(router, &grant, fake_ppl(&grant["job"])).await;
            assert_eq!(code, StatusCode::OK, "{body}");
        }
    }
    panic!("search {id} did not finish in {max_rounds} rounds");
}

async fn create(router: &Router, spec: &Value) -> i64 {
    let (status, created) = post(router, "/api/v1/searches", ADMIN, spec).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_i64().unwrap()
}

/// (generation, architecture hash) of every member, in order.
async fn members(store: &Store, id: i64) -> Vec<(i64, String)> {
    store
        .search_members(id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.generation, m.candidate.arch_hash))
        .collect()
}

pub async fn aging_evolution_runs_to_completion_with_every_candidate_once(db: TestDb) {
    let (router, state) = api(&db.store);
    let id = create(&router, &spec(aging(4, 2, 3))).await;
    assert_eq!(drive(&router, &state, id, 50).await, "completed");
    let members = members(&db.store, id).await;
    assert_eq!(members.len(), 4 + 2 * 3, "population plus K children per cycle");
    assert_eq!(members.iter().map(|m| m.0).collect::<BTreeSet<_>>().len(), 4, "four generations");
    let distinct: BTreeSet<&String> = members.iter().map(|m| &m.1).collect();
    let (_, page) = get(&router, &format!("/api/v1/searches/{id}/leaderboard?limit=100")).await;
    let ids: Vec<i64> = page["items"].as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), distinct.len(), "every distinct candidate is on the leaderboard");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "and exactly once");
    let trials = db.store.search_trials(id).await.unwrap();
    assert_eq!(trials.len(), distinct.len(), "a repeated architecture is not retrained");
    // Children name their parent and what changed.
    let children: Vec<_> =
        db.store.search_members(id).await.unwrap().into_iter().filter(|m| m.generation > 0).collect();
    assert!(children.iter().all(|m| m.parents.len() == 1 && !m.origin.is_empty()), "{children:?}");
    // The best exports as an architecture document that parses back.
    let (status, doc) = get(&router, &format!("/api/v1/searches/{id}/best/export?format=frontier")).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let best: search_space::Architecture = serde_json::from_value(doc).unwrap();
    let best_ppl = page["items"][0]["ppl"].as_f64().unwrap();
    assert!(page["items"].as_array().unwrap().iter().all(|c| c["ppl"].as_f64().unwrap() >= best_ppl));
    assert_eq!(
        page["items"][0]["pattern"],
        json!(best.operators().iter().map(|o| o.code()).collect::<Vec<_>>().join(" "))
    );
}

pub async fn random_search_with_halving_promotes_the_top_third(db: TestDb) {
    let (router, state) = api(&db.store);
    let mut s = spec(json!({ "kind": "random", "candidates": 6, "batch": 6 }));
    s["halving"] = json!({ "rungs": 2, "eta": 3 });
    let id = create(&router, &s).await;
    register(&router, "sim").await;
    let mut rung0 = Vec::new();
    while let Some(grant) = lease(&router, "sim").await {
        assert_eq!(grant["job"]["budget_tokens"], 4096 / 3, "rung 0 trains on a third of the budget");
        let ppl = fake_ppl(&grant["job"]);
        rung0.push((ppl, grant["candidate_id"].as_i64().unwrap()));
        complete(&router, &grant, ppl).await;
    }
    assert_eq!(rung0.len(), 6);
    coordinator::server::background_step(&state).await.unwrap();
    let mut promoted = Vec::new();
    while let Some(grant) = lease(&router, "sim").await {
        assert_eq!(grant["job"]["budget_tokens"], 4096);
        promoted.push(grant["candidate_id"].as_i64().unwrap());
        complete(&router, &grant, fake_ppl(&grant["job"])).await;
    }
    rung0.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut expected: Vec<i64> = rung0.iter().take(2).map(|r| r.1).collect();
    expected.sort_unstable();
    promoted.sort_unstable();
    assert_eq!(promoted, expected, "exactly the best ⌈6/3⌉ go on");
    assert_eq!(drive(&router, &state, id, 10).await, "completed");
    let (_, page) = get(&router, &format!("/api/v1/searches/{id}/leaderboard?limit=100")).await;
    let rungs: Vec<(i64, i64)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_i64().unwrap(), c["rung"].as_i64().unwrap()))
        .collect();
    for (cid, rung) in rungs {
        assert_eq!(rung, i64::from(expected.contains(&cid)), "candidate {cid} shows its highest rung");
    }
}

pub async fn nsga2_search_reports_a_pareto_front(db: TestDb) {
    flat_latency_table(&db.store, "cpu-test", "batch=1,prompt=16,gen=32").await;
    let (router, state) = api(&db.store);
    let mut s = spec(json!({ "kind": "nsga2", "population": 6, "generations": 2 }));
    s["width"] = json!("evolved");
    let id = create(&router, &s).await;
    assert_eq!(drive(&router, &state, id, 50).await, "completed");
    let (status, pareto) = get(&router, &format!("/api/v1/searches/{id}/pareto")).await;
    assert_eq!(status, StatusCode::OK);
    let front = pareto["front"].as_array().unwrap();
    let points = pareto["points"].as_array().unwrap();
    assert!(!front.is_empty());
    assert!(points.len() >= front.len());
    for f in front {
        let (fp, fl) = (f["ppl"].as_f64().unwrap(), f["est_latency_ms"].as_f64().unwrap());
        let dominated = points.iter().any(|p| {
            let (pp, pl) = (p["ppl"].as_f64().unwrap(), p["latency_ms"].as_f64().unwrap());
            pp <= fp && pl <= fl && (pp < fp || pl < fl)
        });
        assert!(!dominated, "front member {f} is dominated");
    }
    // Every non-front point is dominated by (or equal to) some front member.
    for p in points {
        let (pp, pl) = (p["ppl"].as_f64().unwrap(), p["latency_ms"].as_f64().unwrap());
        assert!(
            front
                .iter()
                .any(|f| f["ppl"].as_f64().unwrap() <= pp && f["est_latency_ms"].as_f64().unwrap() <= pl)
        );
    }
}

pub async fn a_search_resumes_after_the_coordinator_restarts(db: TestDb) {
    // One search runs without interruption, a twin with the same spec and seed is stopped after
    // its second generation and continued by a new coordinator on the same database.
    let (router, state) = api(&db.store);
    let whole = create(&router, &spec(aging(4, 2, 3))).await;
    assert_eq!(drive(&router, &state, whole, 50).await, "completed");

    let twin = create(&router, &spec(aging(4, 2, 3))).await;
    register(&router, "sim").await;
    loop {
        coordinator::server::background_step(&state).await.unwrap();
        if db.store.search_progress(twin).await.unwrap().generations >= 2 {
            break;
        }
        while let Some(grant) = lease(&router, "sim").await {
            complete(&router, &grant, fake_ppl(&grant["job"])).await;
        }
    }
    // Half the second generation is trained when the coordinator goes away.
    let grant = lease(&router, "sim").await.unwrap();
    complete(&router, &grant, fake_ppl(&grant["job"])).await;
    drop((router, state));

    let reopened = Store::connect(&db.url).await.unwrap();
    let (router, state) = api(&reopened);
    assert_eq!(drive(&router, &state, twin, 50).await, "completed");
    let a: Vec<(i64, String)> = members(&reopened, whole).await;
    let b: Vec<(i64, String)> = members(&reopened, twin).await;
    assert_eq!(b.len(), 10);
    assert_eq!(a, b, "the resumed search proposed exactly what the uninterrupted one did");
    reopened.close().await;
}

pub async fn cancelling_a_search_revokes_its_running_leases(db: TestDb) {
    let (router, _) = api(&db.store);
    let id = create(&router, &spec(aging(2, 1, 1))).await;
    register(&router, "w").await;
    let grant = lease(&router, "w").await.unwrap();
    let (status, _) = post(&router, &format!("/api/v1/searches/{id}/cancel"), ADMIN, &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let hb = json!({ "lease_token": grant["lease_token"] });
    let (status, _) =
        post(&router, &format!("/api/v1/trials/{}/heartbeat", grant["trial_id"]), WORKER, &hb).await;
    assert_eq!(status, StatusCode::CONFLICT, "the worker learns to stop at its next heartbeat");
    assert_eq!(complete(&router, &grant, 5.0).await.0, StatusCode::CONFLICT);
    assert!(lease(&router, "w").await.is_none());
    let (_, s) = get(&router, &format!("/api/v1/searches/{id}")).await;
    assert_eq!(s["status"], "cancelled");
}

pub async fn concurrent_steps_of_a_new_search_record_its_first_generation_once(db: TestDb) {
    let (_, state) = api(&db.store);
    let s: api::SearchSpec = serde_json::from_value(spec(aging(4, 2, 1))).unwrap();
    for _ in 0..5 {
        let row = db.store.create_search(&s.name, &serde_json::to_value(&s).unwrap()).await.unwrap();
        // The create handler steps a new search while the background loop may step it too.
        let (a, b) = tokio::join!(state.driver.step(row.id), state.driver.step(row.id));
        let outcomes = [a.unwrap(), b.unwrap()];
        let proposed = outcomes
            .iter()
            .filter(|o| matches!(o, coordinator::search::StepOutcome::Proposed { .. }))
            .count();
        assert_eq!(proposed, 1, "{outcomes:?}");
        let members = members(&db.store, row.id).await;
        assert_eq!(members.len(), 4);
        assert!(members.iter().all(|m| m.0 == 0));
    }
}
