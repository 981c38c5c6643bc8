//! Sweeps and scaling laws: a depth × width (× tokens) grid trained through the trial queue by
//! simulated workers whose losses follow a known law, fitted back through the API, and a
//! recommendation under a latency budget checked against a brute-force ranking of its grid.

use std::collections::BTreeSet;

use axum::Router;
use axum::http::StatusCode;
use coordinator::app::AppState;
use serde_json::{Value, json};

use crate::helpers::TestDb;
use crate::protocol::{complete, lease, register};
use crate::requests::{ADMIN, WORKER, aging, api, flat_latency_table, get, post, spec};

const DEPTHS: [u32; 4] = [2, 4, 6, 8];
const WIDTHS: [u32; 4] = [64, 96, 128, 192];
const SETTING: &str = "batch=1,prompt=16,gen=32";

/// The law the simulated results follow: `L = 1.5 + 2·D^-0.5 + 40·W^-0.8 + 300·N^-0.6`.
fn true_loss(depth: f64, width: f64, tokens: f64) -> f64 {
    1.5 + 2.0 * depth.powf(-0.5) + 40.0 * width.powf(-0.8) + 300.0 * tokens.powf(-0.6)
}

fn sweep(tokens: &[u64]) -> Value {
    let mut s = spec(json!({ "kind": "sweep", "depths": DEPTHS, "widths": WIDTHS, "tokens": tokens }));
    s["name"] = json!("sweep");
    s
}

/// (depth, width, tokens) of a granted job: depth is the number of `A F` blocks.
fn shape(job: &Value) -> (u32, u32, u64) {
    let arch: search_space::Architecture = serde_json::from_value(job["architecture"].clone()).unwrap();
    let layers = arch.operators().len() as u32;
    (layers / 2, arch.model.hidden_size, job["budget_tokens"].as_u64().unwrap())
}

/// Works every queued trial with the true law's loss; returns the shapes trained.
async fn train_all(router: &Router, state: &AppState, id: i64) -> Vec<(u32, u32, u64)> {
    register(router, "sim").await;
    let mut trained = Vec::new();
    while let Some(grant) = lease(router, "sim").await {
        let (d, w, n) = shape(&grant["job"]);
        let ppl = true_loss(f64::from(d), f64::from(w), n as f64).exp();
        let (code, body) = complete(router, &grant, ppl).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        trained.push((d, w, n));
    }
    coordinator::server::background_step(state).await.unwrap();
    assert_eq!(state.store.get_search(id).await.unwrap().unwrap().status, "completed");
    trained
}

async fn create(router: &Router, spec: &Value) -> i64 {
    let (status, created) = post(router, "/api/v1/searches", ADMIN, spec).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["algorithm"], "sweep");
    created["id"].as_i64().unwrap()
}

fn coefficient(fit: &Value, name: &str) -> (f64, Option<f64>, Option<f64>) {
    let c = fit["coefficients"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
    (c["value"].as_f64().unwrap(), c["lower"].as_f64(), c["upper"].as_f64())
}

pub async fn a_sweep_trains_every_depth_and_width_at_every_budget(db: TestDb) {
    let (router, state) = api(&db.store);
    let id = create(&router, &sweep(&[16_384, 4096, 8192])).await;
    let (_, search) = get(&router, &format!("/api/v1/searches/{id}")).await;
    assert_eq!(search["progress"]["trials"]["queued"], 48, "{search}");
    let trained = train_all(&router, &state, id).await;
    let expected: BTreeSet<(u32, u32, u64)> = DEPTHS
        .iter()
        .flat_map(|&d| WIDTHS.iter().flat_map(move |&w| [4096, 8192, 16_384].map(|n| (d, w, n))))
        .collect();
    assert_eq!(trained.len(), 48, "every model once per budget");
    assert_eq!(trained.iter().copied().collect::<BTreeSet<_>>(), expected);
    // Each candidate's leaderboard row holds its largest budget's result (the highest rung).
    let (_, board) = get(&router, &format!("/api/v1/searches/{id}/leaderboard?limit=100")).await;
    let rows = board["items"].as_array().unwrap();
    assert_eq!(rows.len(), 16);
    assert!(rows.iter().all(|r| r["rung"] == 2), "{board}");
}

pub async fn a_fit_recovers_the_law_the_results_came_from(db: TestDb) {
    let (router, state) = api(&db.store);
    // One budget: the data-free law, every coefficient recovered from noise-free results.
    let id = create(&router, &sweep(&[])).await;
    train_all(&router, &state, id).await;
    let body = json!({ "resamples": 50, "seed": 1 });
    let (status, fit) = post(&router, &format!("/api/v1/searches/{id}/scaling-fits"), ADMIN, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{fit}");
    assert_eq!(fit["form"], "depth_width");
    assert_eq!(fit["tokens"], 4096);
    assert_eq!(fit["n"], 16);
    assert_eq!(fit["observations"].as_array().unwrap().len(), 16);
    // The token term is folded into L0 at the fitted budget.
    let l0 = 1.5 + 300.0 * 4096f64.powf(-0.6);
    for (name, truth) in [("l0", l0), ("a", 2.0), ("alpha", 0.5), ("b", 40.0), ("beta", 0.8)] {
        let (value, lower, upper) = coefficient(&fit, name);
        assert!((value - truth).abs() <= 1e-4 * truth, "{name}: {value} vs {truth}");
        let (lower, upper) = (lower.unwrap(), upper.unwrap());
        assert!(lower <= value + 1e-9 && value <= upper + 1e-9, "{name}: [{lower}, {upper}] ∌ {value}");
    }
    assert!(fit["rmse"].as_f64().unwrap() < 1e-6, "{fit}");
    let x = &fit["extrapolation"];
    assert_eq!((x["fitted"].as_u64(), x["held_out"].as_u64()), (Some(8), Some(8)), "{x}");
    assert!(x["ppl_max_rel_error"].as_f64().unwrap() < 1e-4, "{x}");
    // Stored and listed as answered.
    let fit_id = fit["id"].as_i64().unwrap();
    let (status, stored) = get(&router, &format!("/api/v1/scaling-fits/{fit_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored, fit);
    let (_, list) = get(&router, &format!("/api/v1/searches/{id}/scaling-fits")).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], fit_id);

    // Three budgets: the token law by default, its exponent recovered too.
    let id = create(&router, &sweep(&[4096, 8192, 16_384])).await;
    train_all(&router, &state, id).await;
    let (status, fit) =
        post(&router, &format!("/api/v1/searches/{id}/scaling-fits"), ADMIN, &json!({ "resamples": 0 }))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{fit}");
    assert_eq!(fit["form"], "depth_width_tokens");
    assert_eq!(fit["n"], 48);
    assert!(fit.get("bootstrap").is_none() && coefficient(&fit, "alpha").1.is_none());
    for (name, truth) in [("l0", 1.5), ("alpha", 0.5), ("beta", 0.8), ("c", 300.0), ("gamma", 0.6)] {
        let (value, _, _) = coefficient(&fit, name);
        assert!((value - truth).abs() <= 1e-3 * truth, "{name}: {value} vs {truth}");
    }
}

pub async fn a_recommendation_is_the_best_predicted_model_within_the_budget(db: TestDb) {
    let (router, state) = api(&db.store);
    flat_latency_table(&db.store, "cpu-test", SETTING).await;
    let id = create(&router, &sweep(&[])).await;
    train_all(&router, &state, id).await;
    let (_, fit) = post(&router, &format!("/api/v1/searches/{id}/scaling-fits"), ADMIN, &json!({})).await;
    let fit_id = fit["id"].as_i64().unwrap();
    let uri = format!("/api/v1/scaling-fits/{fit_id}/recommend");

    // Every model of the default grid fits an unbounded budget; two budgets inside its latency
    // range cut it.
    let (status, all) = post(&router, &uri, WORKER, &json!({ "budget_ms": 1e9 })).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["within_budget"], all["considered"]);
    let mut latencies: Vec<f64> =
        all["grid"].as_array().unwrap().iter().map(|g| g["latency_ms"].as_f64().unwrap()).collect();
    latencies.sort_by(f64::total_cmp);
    let budgets = [latencies[latencies.len() / 4], latencies[latencies.len() * 3 / 4]];
    let mut best_depths = Vec::new();
    for budget in budgets {
        let body = json!({ "budget_ms": budget, "device": "cpu-test", "top": 3 });
        let (status, rec) = post(&router, &uri, WORKER, &body).await;
        assert_eq!(status, StatusCode::OK, "{rec}");
        assert_eq!(rec["device"], "cpu-test");
        assert_eq!(rec["setting"], "batch=1,prompt=16,gen=32,dtype=bf16");
        let grid = rec["grid"].as_array().unwrap();
        // Default grid: depths 1..=16 by widths 32..=384 that dimension the tiny settings.
        assert_eq!(grid.len(), rec["considered"].as_u64().unwrap() as usize);
        let within: Vec<&Value> =
            grid.iter().filter(|g| g["latency_ms"].as_f64().unwrap() <= budget).collect();
        assert_eq!(rec["within_budget"].as_u64().unwrap() as usize, within.len());
        assert!(!within.is_empty() && within.len() < grid.len(), "the budget {budget} must cut the grid");
        assert!(within.iter().all(|g| g["within_budget"] == true));
        // Brute force: no model within the budget is predicted better than the best.
        let best = &rec["best"];
        let best_loss = best["predicted_loss"].as_f64().unwrap();
        assert!(best["latency_ms"].as_f64().unwrap() <= budget);
        assert!(within.iter().all(|g| g["predicted_loss"].as_f64().unwrap() >= best_loss - 1e-12));
        let runners = rec["runners_up"].as_array().unwrap();
        assert_eq!(runners.len(), 2);
        assert!(runners[0]["predicted_loss"].as_f64().unwrap() >= best_loss);
        assert!(runners[1]["predicted_loss"].as_f64() >= runners[0]["predicted_loss"].as_f64());
        let (depth, width) = (best["depth"].as_u64().unwrap(), best["width"].as_u64().unwrap());
        assert_eq!(rec["constraint"]["hidden_sizes"], json!([width]));
        assert_eq!(rec["constraint"]["max_operators"], json!(2 * depth));
        assert_eq!(best["layers"], json!(2 * depth));
        best_depths.push(depth);
    }
    assert!(best_depths[0] < best_depths[1], "a tighter budget allows a shallower model: {best_depths:?}");

    // Explicit lists are used as given.
    let body = json!({ "budget_ms": 1e9, "depths": [2, 3], "widths": [64, 128] });
    let (status, rec) = post(&router, &uri, WORKER, &body).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["considered"], 4);
    assert_eq!((rec["best"]["depth"].as_u64(), rec["best"]["width"].as_u64()), (Some(3), Some(128)));
}

pub async fn bad_fits_and_recommendations_name_the_field_or_the_state(db: TestDb) {
    let (router, state) = api(&db.store);
    // Sweep specs are validated with a path per problem.
    let mut bad = sweep(&[4096, 4096, 1]);
    bad["algorithm"]["depths"] = json!([2, 2, 0]);
    bad["algorithm"]["widths"] = json!([64, 30]);
    bad["halving"] = json!({ "rungs": 2 });
    let (status, body) = post(&router, "/api/v1/searches", ADMIN, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let paths: BTreeSet<&str> =
        body["fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for path in [
        "algorithm.depths[1]",
        "algorithm.depths[2]",
        "algorithm.tokens[1]",
        "algorithm.tokens[2]",
        "halving",
    ] {
        assert!(paths.contains(path), "{path} missing from {body}");
    }
    let mut bad = sweep(&[]);
    bad["algorithm"]["widths"] = json!([64, 30]);
    let (status, body) = post(&router, "/api/v1/searches", ADMIN, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["fields"][0]["path"], "algorithm.widths[1]", "{body}");

    // Fitting: not a sweep, no results yet, unknown search.
    let (_, other) = post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    let fit = |id: i64, body: Value| {
        let router = router.clone();
        async move { post(&router, &format!("/api/v1/searches/{id}/scaling-fits"), ADMIN, &body).await }
    };
    let (status, body) = fit(other["id"].as_i64().unwrap(), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("sweep"), "{body}");
    let id = create(&router, &sweep(&[])).await;
    let (status, body) = fit(id, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no finished trials"), "{body}");
    assert_eq!(fit(999_999, json!({})).await.0, StatusCode::NOT_FOUND);
    let (status, _) = post(&router, &format!("/api/v1/searches/{id}/scaling-fits"), WORKER, &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "creating a fit needs the admin token");

    train_all(&router, &state, id).await;
    for (body, path) in [
        (json!({ "resamples": 1 }), "resamples"),
        (json!({ "resamples": 5000 }), "resamples"),
        (json!({ "level": 1.0 }), "level"),
        (json!({ "tokens": 123 }), "tokens"),
        (json!({ "form": "depth_width_tokens" }), "form"),
        (json!({ "form": "cubic" }), "form"),
    ] {
        let (status, answer) = fit(id, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["fields"][0]["path"], path, "{body}: {answer}");
    }
    let (_, list) = get(&router, &format!("/api/v1/searches/{id}/scaling-fits")).await;
    assert_eq!(list, json!([]), "a refused fit stores nothing");

    // Recommending: bad budget, nothing fits, no table, unknown fit.
    let (_, made) = fit(id, json!({ "resamples": 0 })).await;
    let uri = format!("/api/v1/scaling-fits/{}/recommend", made["id"]);
    let (status, body) = post(&router, &uri, WORKER, &json!({ "budget_ms": 1.0 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["fields"][0]["path"], "setting", "no table yet: {body}");
    flat_latency_table(&db.store, "cpu-test", SETTING).await;
    for (body, path, needle) in [
        (json!({ "budget_ms": 0.0 }), "budget_ms", "positive"),
        (json!({ "budget_ms": 0.001 }), "budget_ms", "fastest"),
        (json!({ "budget_ms": 5.0, "device": "nope" }), "device", "nope"),
        (json!({ "budget_ms": 5.0, "setting": "batch=x" }), "setting", ""),
        (json!({ "budget_ms": 5.0, "widths": [30] }), "widths", "30"),
        (json!({ "budget_ms": 5.0, "depths": [0] }), "depths", "0"),
        (json!({ "budget_ms": 5.0, "top": 0 }), "top", ""),
        (json!({ "budget_ms": 5.0, "tokens": 4096 }), "tokens", "one budget"),
    ] {
        let (status, answer) = post(&router, &uri, WORKER, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["fields"][0]["path"], path, "{body}: {answer}");
        assert!(answer["fields"][0]["message"].as_str().unwrap().contains(needle), "{body}: {answer}");
    }
    let (status, _) =
        post(&router, "/api/v1/scaling-fits/424242/recommend", WORKER, &json!({ "budget_ms": 5.0 })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(get(&router, "/api/v1/scaling-fits/424242").await.0, StatusCode::NOT_FOUND);
}
