//! A search with many scored candidates, made the way the service makes them: a random search
//! submitted over the API, its trials leased and completed by a simulated worker.

use axum::Router;
use axum::http::StatusCode;
use coordinator::app::AppState;
use coordinator::store::{NewDevice, NewLutEntry, Store};
use serde_json::{Value, json};

use crate::protocol::{complete, lease, register};
use crate::requests::{ADMIN, flat_latency_table, get, post, spec};

pub const DEVICE: &str = "cpu-test";
pub const SETTING: &str = "batch=1,prompt=16,gen=32";
/// With every operator at 0.1 ms a step, 32 steps cost 3.2 ms per layer (the head counts as one):
/// nine-operator candidates (32 ms) are over this budget, eight-operator ones (28.8 ms) within.
pub const BUDGET_MS: f64 = 30.0;

/// A stand-in for training: perplexity from the layer pattern, width and trial, so candidates
/// spread over a plot and differ from one another.
pub fn fake_ppl(job: &Value, trial_id: i64) -> f64 {
    let arch: search_space::Architecture = serde_json::from_value(job["architecture"].clone()).unwrap();
    let ops = arch.operators();
    let count = |code: &str| ops.iter().filter(|o| o.code() == code).count() as f64;
    let jitter = ((trial_id * 7919) % 97) as f64 / 97.0;
    30.0 - 2.0 * count("A") - 0.8 * count("D") - 0.5 * count("F") + 0.9 * ops.len() as f64 + jitter
}

/// Creates a random search of `candidates` proposals named `name`, over a flat latency table with
/// a budget, and completes all its trials but `leave_running`, whose grants are returned.
pub async fn search(
    router: &Router,
    state: &AppState,
    name: &str,
    candidates: u32,
    leave_running: usize,
) -> (i64, Vec<Value>) {
    flat_latency_table(&state.store, DEVICE, SETTING).await;
    let mut s = spec(json!({ "kind": "random", "candidates": candidates, "batch": candidates }));
    s["name"] = json!(name);
    // Roomier than the API tests' space, so a random search rarely repeats itself.
    s["space"]["max_operators"] = json!(9);
    s["target"] = json!({ "device": DEVICE, "setting": SETTING, "latency_budget_ms": BUDGET_MS });
    let (status, created) = post(router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    register(router, "sim").await;
    let mut grants = Vec::new();
    while let Some(grant) = lease(router, "sim").await {
        grants.push(grant);
    }
    let keep = grants.split_off(grants.len().saturating_sub(leave_running));
    for grant in &grants {
        let (code, body) =
            complete(router, grant, fake_ppl(&grant["job"], grant["trial_id"].as_i64().unwrap())).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    (id, keep)
}

/// Completes the given grants.
pub async fn finish(router: &Router, grants: &[Value]) {
    for grant in grants {
        let (code, body) =
            complete(router, grant, fake_ppl(&grant["job"], grant["trial_id"].as_i64().unwrap())).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
}

/// The API's Pareto document of a search.
pub async fn pareto(router: &Router, id: i64) -> Value {
    let (status, doc) = get(router, &format!("/api/v1/searches/{id}/pareto")).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc
}

/// Candidates with a latency estimate but no perplexity: the plot's strip of unscored marks.
pub async fn unscored_with_latency(store: &Store, id: i64) -> usize {
    store
        .search_points(id)
        .await
        .unwrap()
        .iter()
        .filter(|p| p.ppl.is_none() && p.est_latency_ms.is_some())
        .count()
}

/// Ids in a JSON array of objects with an `id`.
pub fn ids(items: &Value) -> Vec<i64> {
    items.as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect()
}

/// The law a sweep's simulated training follows: `L = 1.5 + 2·D^-0.5 + 40·W^-0.8`.
pub fn law_loss(depth: u32, width: u32) -> f64 {
    1.5 + 2.0 * f64::from(depth).powf(-0.5) + 40.0 * f64::from(width).powf(-0.8)
}

pub const SWEEP_DEPTHS: [u32; 4] = [2, 4, 6, 8];
pub const SWEEP_WIDTHS: [u32; 4] = [64, 96, 128, 192];

/// The sweep's spec: attention + FFN blocks over a 4 × 4 grid of depths and widths.
fn sweep_spec(name: &str) -> Value {
    let mut s = spec(json!({ "kind": "sweep", "depths": SWEEP_DEPTHS, "widths": SWEEP_WIDTHS }));
    s["name"] = json!(name);
    s
}

/// Creates a sweep and trains every model of its grid to the loss [`law_loss`] gives it.
pub async fn sweep(router: &Router, name: &str) -> i64 {
    let (status, created) = post(router, "/api/v1/searches", ADMIN, &sweep_spec(name)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    let pattern =
        [search_space::OpKind::Mixer(search_space::MixerKind::Attention), search_space::OpKind::Ffn];
    register(router, "sweeper").await;
    let mut trained = 0;
    while let Some(grant) = lease(router, "sweeper").await {
        let arch: search_space::Architecture =
            serde_json::from_value(grant["job"]["architecture"].clone()).unwrap();
        let depth = coordinator::search::sweep_depth(&arch, &pattern).unwrap();
        let width = arch.expand().unwrap().hidden_size;
        let (code, body) = complete(router, &grant, law_loss(depth, width).exp()).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        trained += 1;
    }
    assert_eq!(trained, SWEEP_DEPTHS.len() * SWEEP_WIDTHS.len(), "one trial per model of the grid");
    id
}

/// Fits the sweep's law over the API; the fit's id.
pub async fn scaling_fit(router: &Router, search: i64) -> i64 {
    let (status, fit) =
        post(router, &format!("/api/v1/searches/{search}/scaling-fits"), ADMIN, &json!({ "resamples": 50 }))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{fit}");
    fit["id"].as_i64().unwrap()
}

/// A latency table for the test setting covering every width a recommendation considers for the
/// sweep's block, each operator costing `width / 2000` ms a step, so wider models are slower.
pub async fn sweep_latency_table(store: &Store) {
    store
        .upsert_device(&NewDevice {
            fingerprint: DEVICE.into(),
            name: DEVICE.into(),
            kind: "cpu".into(),
            info: json!({}),
        })
        .await
        .unwrap();
    let setting: lut::DeploymentSetting = SETTING.parse().unwrap();
    let spec: api::SearchSpec = serde_json::from_value(sweep_spec("lut")).unwrap();
    let pattern =
        [search_space::OpKind::Mixer(search_space::MixerKind::Attention), search_space::OpKind::Ffn];
    let mut entries = std::collections::BTreeMap::new();
    for width in (16..=512).step_by(16) {
        let Ok(model) = coordinator::search::sweep_architecture(&spec.model, &pattern, 1, width).expand()
        else {
            continue;
        };
        for shape in lut::shapes_for(&model, &setting) {
            entries.entry(shape.to_string()).or_insert(f64::from(width) / 2000.0);
        }
    }
    for (op_key, median_ms) in entries {
        store
            .put_lut_entry(&NewLutEntry {
                device: DEVICE.into(),
                setting_key: setting.key(),
                op_key,
                median_ms,
                p10_ms: median_ms * 0.9,
                p90_ms: median_ms * 1.1,
                repeats: 5,
            })
            .await
            .unwrap();
    }
}
