//! What a worker reports is checked before any of it is stored: results that cannot be true
//! (negative losses, a perplexity that is not exp(loss), absurd counts), progress that cannot be,
//! and sizes a worker could inflate (curves, task maps, device descriptions, ids).

use axum::http::StatusCode;
use coordinator::store::TrialState;
use serde_json::{Value, json};

use crate::helpers::TestDb;
use crate::protocol::{device, lease, metrics, register};
use crate::requests::{ADMIN, WORKER, aging, api, get, post, spec};

/// `metrics(4.0)` with `patch`'s fields over it.
fn patched(patch: &Value) -> Value {
    let mut m = metrics(4.0);
    for (k, v) in patch.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

pub async fn an_implausible_result_is_refused_and_the_trial_stays_leased(db: TestDb) {
    let (router, _) = api(&db.store);
    post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    register(&router, "w1").await;
    let grant = lease(&router, "w1").await.expect("a queued trial");
    let trial = grant["trial_id"].as_i64().unwrap();
    let many_points: Vec<(u64, f64)> = (0..5_000).map(|i| (i, 3.0)).collect();
    let many_tasks: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("task{i}"), json!(0.5))).collect();
    let cases = [
        // The probe's result: ranked first, and exported as the winner, before these checks.
        (json!({ "val_loss": -5.0, "ppl": -1.0 }), "metrics.val_loss"),
        (json!({ "val_loss": 1.0, "ppl": 2.0 }), "metrics.ppl"),
        (json!({ "val_loss": 1e308, "ppl": 1e308 }), "metrics.val_loss"),
        (json!({ "train_loss": -1.0 }), "metrics.train_loss"),
        (json!({ "steps": u64::MAX }), "metrics.steps"),
        (json!({ "tokens": 1_u64 << 62 }), "metrics.tokens"),
        (json!({ "params": u64::MAX }), "metrics.params"),
        (json!({ "train_seconds": -4.0 }), "metrics.train_seconds"),
        (json!({ "tokens_per_s": 1e300 }), "metrics.tokens_per_s"),
        (json!({ "loss_curve": many_points }), "metrics.loss_curve"),
        (json!({ "loss_curve": [[1, 3.0], [2, -1.0]] }), "metrics.loss_curve[1]"),
        (json!({ "accuracy": many_tasks }), "metrics.accuracy"),
        (json!({ "accuracy": { "in_context_recall": 1.5 } }), "metrics.accuracy.in_context_recall"),
        (json!({ "measured_latency_ms": -3.0 }), "metrics.measured_latency_ms"),
        (json!({ "device": "d".repeat(10_000) }), "metrics.device"),
        (json!({ "outcome": "great" }), "metrics.outcome"),
    ];
    for (patch, field) in &cases {
        let body = json!({ "lease_token": grant["lease_token"], "metrics": patched(patch) });
        let (status, err) = post(&router, &format!("/api/v1/trials/{trial}/complete"), WORKER, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {err}");
        let paths: Vec<&str> =
            err["fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert!(paths.contains(field), "{patch}: {field} not in {paths:?}");
        let stored = db.store.get_trial(trial).await.unwrap().unwrap();
        assert_eq!((stored.state, stored.result, stored.ppl), (TrialState::Leased, None, None), "{patch}");
    }
    // Nothing reached the leaderboard.
    let (_, board) = get(&router, &format!("/api/v1/searches/{}/leaderboard", grant["search_id"])).await;
    assert!(board["items"].as_array().unwrap().iter().all(|c| c["ppl"].is_null()), "{board}");
    // Progress that cannot be is refused too, and the lease is not extended by it.
    let before = db.store.get_trial(trial).await.unwrap().unwrap().lease_expires_at_ms;
    for progress in [
        json!({ "step": 11, "steps": 10, "tokens": 0, "loss": 3.0, "tokens_per_s": 1.0 }),
        json!({ "step": 1, "steps": u64::MAX, "tokens": 0, "loss": 3.0, "tokens_per_s": 1.0 }),
        json!({ "step": 1, "steps": 10, "tokens": 0, "loss": -3.0, "tokens_per_s": 1.0 }),
    ] {
        let body = json!({ "lease_token": grant["lease_token"], "progress": progress });
        let (status, err) = post(&router, &format!("/api/v1/trials/{trial}/heartbeat"), WORKER, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{progress}: {err}");
        assert!(err["fields"][0]["path"].as_str().unwrap().starts_with("progress."), "{err}");
    }
    assert_eq!(db.store.get_trial(trial).await.unwrap().unwrap().lease_expires_at_ms, before);
    // The worker can still report the true result, or a failure.
    let body = json!({ "lease_token": grant["lease_token"], "metrics": metrics(4.0) });
    let (status, r) = post(&router, &format!("/api/v1/trials/{trial}/complete"), WORKER, &body).await;
    assert_eq!((status, r["state"].as_str()), (StatusCode::OK, Some("done")), "{r}");
    assert_eq!(db.store.get_trial(trial).await.unwrap().unwrap().ppl, Some(4.0));
}

pub async fn a_perplexity_within_rounding_of_exp_loss_and_a_diverged_run_are_accepted(db: TestDb) {
    let (router, _) = api(&db.store);
    post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    register(&router, "w1").await;
    let first = lease(&router, "w1").await.expect("a first trial");
    let rounded = patched(&json!({ "val_loss": 1.386_294, "ppl": 4.0 }));
    let body = json!({ "lease_token": first["lease_token"], "metrics": rounded });
    let (status, r) =
        post(&router, &format!("/api/v1/trials/{}/complete", first["trial_id"]), WORKER, &body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    // A diverged run's losses are not read (the worker sends zeros).
    let second = lease(&router, "w1").await.expect("a second trial");
    let diverged = patched(&json!({ "outcome": "diverged", "val_loss": 0.0, "ppl": 0.0, "train_loss": 0.0 }));
    let body = json!({ "lease_token": second["lease_token"], "metrics": diverged });
    let (status, r) =
        post(&router, &format!("/api/v1/trials/{}/complete", second["trial_id"]), WORKER, &body).await;
    assert_eq!((status, r["state"].as_str()), (StatusCode::OK, Some("diverged")), "{r}");
}

pub async fn worker_supplied_sizes_and_ids_are_bounded(db: TestDb) {
    let (router, _) = api(&db.store);
    let mut big = device("cpu-test");
    big["info"] = json!({ "padding": "x".repeat(100_000) });
    let mut many_keys = device("cpu-test");
    many_keys["info"] =
        (0..2_000).map(|i| (format!("k{i}"), json!(i))).collect::<serde_json::Map<_, _>>().into();
    for (body, field) in [
        (json!({ "worker_id": "w1", "hostname": "h", "device": big }), "device.info"),
        (json!({ "worker_id": "w1", "hostname": "h", "device": many_keys }), "device.info"),
        (json!({ "worker_id": "w1\nforged", "hostname": "h", "device": device("cpu-test") }), "worker_id"),
        (json!({ "worker_id": "w1", "hostname": "h", "device": device("cpu\u{7}") }), "device.fingerprint"),
        (
            json!({ "worker_id": "w1", "hostname": "h".repeat(1_000), "device": device("cpu-test") }),
            "hostname",
        ),
    ] {
        let (status, err) = post(&router, "/api/v1/workers/register", WORKER, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {err}");
        assert_eq!(err["fields"][0]["path"], field, "{err}");
    }
    let (_, devices) = get(&router, "/api/v1/devices").await;
    assert_eq!(devices["devices"], json!([]), "nothing was registered: {devices}");
    // A lease token far longer than any handed out is stale without a lookup.
    post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    register(&router, "w1").await;
    let grant = lease(&router, "w1").await.expect("a queued trial");
    let body = json!({ "lease_token": "t".repeat(100_000) });
    let (status, _) =
        post(&router, &format!("/api/v1/trials/{}/heartbeat", grant["trial_id"]), WORKER, &body).await;
    assert_eq!(status, StatusCode::CONFLICT);
}
