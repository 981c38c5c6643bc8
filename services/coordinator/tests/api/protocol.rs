//! The worker protocol over the API: register, lease, heartbeat, complete, and lease fencing.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use coordinator::app::ApiConfig;
use serde_json::{Value, json};

use crate::helpers::TestDb;
use crate::requests::{ADMIN, WORKER, aging, api, api_with, get, post, spec};

pub fn device(fingerprint: &str) -> Value {
    json!({ "fingerprint": fingerprint, "name": "test cpu", "kind": "cpu", "info": { "threads": 2 } })
}

pub async fn register(router: &Router, worker_id: &str) {
    let body = json!({ "worker_id": worker_id, "hostname": "test", "device": device("cpu-test") });
    let (status, r) = post(router, "/api/v1/workers/register", WORKER, &body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert!(r["lease_ttl_ms"].as_u64().unwrap() > 0);
}

/// Leases one trial without waiting; `None` when the queue is empty.
pub async fn lease(router: &Router, worker_id: &str) -> Option<Value> {
    let (status, grant) =
        post(router, "/api/v1/workers/lease", WORKER, &json!({ "worker_id": worker_id })).await;
    match status {
        StatusCode::NO_CONTENT => None,
        StatusCode::OK => Some(grant),
        other => panic!("lease answered {other}: {grant}"),
    }
}

/// What a worker would post for a model that reached `ppl`.
pub fn metrics(ppl: f64) -> Value {
    json!({
        "outcome": "completed", "val_loss": ppl.ln(), "ppl": ppl, "train_loss": ppl.ln(),
        "steps": 10, "tokens": 4096, "tokens_per_s": 1000.0, "train_seconds": 4.0, "params": 12345,
        "loss_curve": [[1, 5.5], [10, 3.0]], "device": "test cpu"
    })
}

pub async fn complete(router: &Router, grant: &Value, ppl: f64) -> (StatusCode, Value) {
    let body = json!({ "lease_token": grant["lease_token"], "metrics": metrics(ppl) });
    post(router, &format!("/api/v1/trials/{}/complete", grant["trial_id"]), WORKER, &body).await
}

pub async fn a_worker_leases_trains_and_reports_through_the_api(db: TestDb) {
    let (router, _) = api(&db.store);
    let (_, created) = post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    register(&router, "w1").await;
    let grant = lease(&router, "w1").await.expect("a queued trial");
    assert_eq!(grant["search_id"], created["id"]);
    assert_eq!(grant["attempt"], 1);
    assert_eq!(grant["job"]["budget_tokens"], 4096);
    assert_eq!(grant["job"]["proxy"]["corpus"], "corpus.txt");
    let arch: search_space::Architecture =
        serde_json::from_value(grant["job"]["architecture"].clone()).unwrap();
    assert_eq!(arch.model.hidden_size, 128, "without a budget the widest hidden size is used");
    let trial = grant["trial_id"].as_i64().unwrap();
    let hb = json!({ "lease_token": grant["lease_token"], "progress": { "step": 3, "steps": 10, "tokens": 1200, "loss": 4.2, "tokens_per_s": 900.0 } });
    let (status, ack) = post(&router, &format!("/api/v1/trials/{trial}/heartbeat"), WORKER, &hb).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert!(
        ack["lease_expires_at_ms"].as_i64().unwrap() > grant["lease_expires_at_ms"].as_i64().unwrap() - 1
    );
    let (status, done) = complete(&router, &grant, 9.5).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    // The same token again: the lease has ended.
    let (status, err) = complete(&router, &grant, 1.0).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(err["error"].as_str().unwrap().contains("stale"), "{err}");
    let (_, detail) = get(&router, &format!("/api/v1/candidates/{}", grant["candidate_id"])).await;
    assert_eq!(detail["candidate"]["ppl"], 9.5);
    assert_eq!(detail["loss_curve"], json!([[1, 5.5], [10, 3.0]]));
    assert_eq!(detail["trials"][0]["state"], "done");
    assert!(detail["layers"].as_array().unwrap().len() >= 3);
    let events = db.store.trial_events(trial).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["queued", "leased", "progress", "done"]);
    assert_eq!(events[2].payload["step"], 3);
}

pub async fn checkpoint_notes_from_heartbeats_join_the_trial_history(db: TestDb) {
    let (router, _) = api(&db.store);
    post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    register(&router, "w1").await;
    let grant = lease(&router, "w1").await.expect("a queued trial");
    let trial = grant["trial_id"].as_i64().unwrap();
    let path = format!("/api/v1/trials/{trial}/heartbeat");
    let hb = json!({ "lease_token": grant["lease_token"], "notes": [
        { "kind": "checkpoint_skipped", "message": "checkpoint step-000000000040.ckpt skipped: torn" },
        { "kind": "resumed", "step": 20, "message": "resumed at step 20 from step-000000000020.ckpt" }
    ] });
    let (status, ack) = post(&router, &path, WORKER, &hb).await;
    assert_eq!(status, StatusCode::OK, "{ack}");

    // Too many notes, an unknown kind, a NUL in a message: refused, nothing recorded.
    let many: Vec<Value> = (0..17).map(|_| json!({ "kind": "resumed", "step": 1, "message": "m" })).collect();
    let bad = [
        (json!({ "lease_token": grant["lease_token"], "notes": many }), "notes"),
        (
            json!({ "lease_token": grant["lease_token"], "notes": [{ "kind": "rm -rf", "message": "" }] }),
            "notes[0].kind",
        ),
        (
            json!({ "lease_token": grant["lease_token"], "notes": [{ "kind": "resumed", "message": "a\u{0}b" }] }),
            "notes[0].message",
        ),
    ];
    for (body, field) in bad {
        let (status, err) = post(&router, &path, WORKER, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["fields"][0]["path"], field, "{err}");
    }

    let (status, _) = complete(&router, &grant, 9.5).await;
    assert_eq!(status, StatusCode::OK);
    let (_, detail) = get(&router, &format!("/api/v1/candidates/{}", grant["candidate_id"])).await;
    let history: Vec<(&str, &Value)> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), &e["payload"]))
        .collect();
    let kinds: Vec<&str> = history.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["queued", "leased", "checkpoint_skipped", "resumed", "done"]);
    assert_eq!(history[3].1["step"], 20);
    assert!(history[2].1["message"].as_str().unwrap().ends_with("skipped: torn"));
    let (status, page) = get(&router, &format!("/ui/candidates/{}", grant["candidate_id"])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("resumed at step 20"), "the candidate page shows the resume");
}

pub async fn a_stale_lease_token_is_refused_and_the_fresh_result_kept(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.lease_ttl = Duration::from_millis(1);
    let (router, state) = api_with(&db.store, config);
    let (status, _) = post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    assert_eq!(status, StatusCode::CREATED);
    register(&router, "slow").await;
    register(&router, "fresh").await;
    let old = lease(&router, "slow").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    coordinator::server::background_step(&state).await.unwrap();
    let new = lease(&router, "fresh").await.expect("the expired lease is handed out again");
    assert_eq!(new["trial_id"], old["trial_id"]);
    assert_eq!(new["attempt"], 2);
    assert_ne!(new["lease_token"], old["lease_token"]);
    let (status, fresh) = complete(&router, &new, 7.0).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let (status, _) = complete(&router, &old, 3.0).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let trial = db.store.get_trial(old["trial_id"].as_i64().unwrap()).await.unwrap().unwrap();
    assert_eq!(trial.ppl, Some(7.0), "the stale result changed nothing");
    assert_eq!(trial.worker_id.as_deref(), Some("fresh"));
    let (_, metrics) = get(&router, "/metrics").await;
    assert!(metrics.as_str().unwrap().contains("frontier_stale_results_refused_total 1"));
}

pub async fn an_unregistered_worker_is_told_to_register(db: TestDb) {
    let (router, _) = api(&db.store);
    let (status, err) =
        post(&router, "/api/v1/workers/lease", WORKER, &json!({ "worker_id": "ghost" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].as_str().unwrap().contains("register"), "{err}");
    let bad = json!({ "worker_id": "", "hostname": "h", "device": device("x") });
    let (status, err) = post(&router, "/api/v1/workers/register", WORKER, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["fields"][0]["path"], "worker_id");
}

pub async fn reads_can_be_protected(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.protect_reads = true;
    let (router, _) = api_with(&db.store, config);
    assert_eq!(get(&router, "/api/v1/searches").await.0, StatusCode::UNAUTHORIZED);
    let (status, _) =
        crate::requests::send(&router, axum::http::Method::GET, "/api/v1/searches", Some(WORKER), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK, "probes stay open");
}

pub async fn a_worker_uploads_a_latency_table_all_or_nothing(db: TestDb) {
    let (router, _) = api(&db.store);
    register(&router, "w1").await;
    let entry = |op: &str, median: f64, p10: f64| json!({ "setting_key": "gen=256,batch=1,prompt=64", "op_key": op, "median_ms": median, "p10_ms": p10, "p90_ms": 2.0, "repeats": 5 });
    let good = json!([
        entry("ffn:hidden=64,intermediate=192", 1.0, 0.9),
        entry("embed_head:hidden=64,vocab=256,tied=1", 0.5, 0.4)
    ]);
    let bad = json!([
        entry("ffn:hidden=128,intermediate=384", 1.0, 0.9),
        entry("ffn:hidden=96,intermediate=288", 1.0, 1.5)
    ]);
    let (status, err) = post(&router, "/api/v1/devices/cpu-test/lut", WORKER, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["fields"][0]["path"], "[1].p10_ms", "{err}");
    let (status, _) = post(&router, "/api/v1/devices/cpu-test/lut", ADMIN, &good).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, r) = post(&router, "/api/v1/devices/cpu-test/lut", WORKER, &good).await;
    assert_eq!((status, r["stored"].as_i64()), (StatusCode::OK, Some(2)));
    let (status, table) =
        get(&router, "/api/v1/devices/cpu-test/lut?setting=batch=1,prompt=64,gen=256").await;
    assert_eq!(status, StatusCode::OK);
    let ops: Vec<&str> =
        table["entries"].as_array().unwrap().iter().map(|e| e["op_key"].as_str().unwrap()).collect();
    assert_eq!(ops.len(), 2, "the refused upload stored nothing: {ops:?}");
    assert_eq!(
        table["setting"], "batch=1,prompt=64,gen=256,dtype=bf16",
        "settings are stored under their canonical key"
    );
    let (status, _) = post(&router, "/api/v1/devices/unknown/lut", WORKER, &good).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

pub async fn a_diverged_result_does_not_break_the_next_result_on_the_same_connection(db: TestDb) {
    // One connection, so both results go through the same prepared statements.
    let options = coordinator::store::StoreOptions { max_connections: 1, ..Default::default() };
    let store = coordinator::store::Store::connect_with(&db.url, &options).await.unwrap();
    let (router, _) = api(&store);
    post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    register(&router, "w1").await;
    let first = lease(&router, "w1").await.expect("a first trial");
    let second = lease(&router, "w1").await.expect("a second trial");
    let mut diverged = metrics(1.0);
    diverged["outcome"] = json!("diverged");
    let body = json!({ "lease_token": first["lease_token"], "metrics": diverged });
    let (status, r) =
        post(&router, &format!("/api/v1/trials/{}/complete", first["trial_id"]), WORKER, &body).await;
    assert_eq!((status, r["state"].as_str()), (StatusCode::OK, Some("diverged")), "{r}");
    let (status, r) = complete(&router, &second, 6.0).await;
    assert_eq!((status, r["state"].as_str()), (StatusCode::OK, Some("done")), "{r}");
    let trial = store.get_trial(second["trial_id"].as_i64().unwrap()).await.unwrap().unwrap();
    assert_eq!(trial.ppl, Some(6.0));
    store.close().await;
}
