//! Auth, validation and error bodies; plus the shared request helpers.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use coordinator::app::{ApiConfig, AppState};
use coordinator::routes::app;
use coordinator::store::{NewDevice, NewLutEntry, Store};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::TestDb;

pub const ADMIN: &str = "admin-token-123";
pub const WORKER: &str = "worker-token-456";

/// An API over `store` with the test tokens.
pub fn api(store: &Store) -> (Router, AppState) {
    api_with(store, ApiConfig::new(ADMIN, WORKER))
}

pub fn api_with(store: &Store, config: ApiConfig) -> (Router, AppState) {
    let state = AppState::new(store.clone(), config);
    (app(state.clone()), state)
}

/// Sends one request; returns the status and the body as JSON (`Null` when empty, a string
/// when it is not JSON).
pub async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_owned())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

pub async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    send(router, Method::GET, uri, None, None).await
}

pub async fn post(router: &Router, uri: &str, token: &str, body: &Value) -> (StatusCode, Value) {
    send(router, Method::POST, uri, Some(token), Some(&body.to_string())).await
}

/// A small valid spec: tiny byte-level models, a 3-stage space of at most 6 operators.
pub fn spec(algorithm: Value) -> Value {
    let mut spec = api::spec::example_spec();
    spec["name"] = json!("api-test");
    spec["proxy"]["corpus"] = json!("corpus.txt");
    spec["algorithm"] = algorithm;
    spec
}

pub fn aging(population: u32, per_cycle: u32, cycles: u32) -> Value {
    json!({ "kind": "aging_evolution", "population": population, "sample_size": 2, "per_cycle": per_cycle, "cycles": cycles })
}

/// Fills a latency table for the test setting in which every operator costs 0.1 ms per step.
pub async fn flat_latency_table(store: &Store, device: &str, setting: &str) {
    store
        .upsert_device(&NewDevice {
            fingerprint: device.into(),
            name: device.into(),
            kind: "cpu".into(),
            info: json!({}),
        })
        .await
        .unwrap();
    let setting: lut::DeploymentSetting = setting.parse().unwrap();
    let space: api::SearchSpec = serde_json::from_value(spec(aging(2, 1, 1))).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    // Every shape any candidate of the test space needs, at both widths.
    for mixer in &space.space.mixers {
        for &h in &space.space.hidden_sizes {
            let genome = search_space::Genome {
                stages: (0..3)
                    .map(|_| search_space::Stage {
                        block: search_space::BlockType {
                            mixers: vec![*mixer],
                            ratio: search_space::MixerRatio::R0to1,
                            ffns_per_mixer: 1,
                        },
                        blocks: 1,
                    })
                    .collect(),
            };
            let arch = search_space::Architecture::from_genome(space.model.with_hidden_size(h), genome);
            for shape in lut::shapes_for(&arch.expand().unwrap(), &setting) {
                keys.insert(shape.to_string());
            }
        }
    }
    for op_key in keys {
        store
            .put_lut_entry(&NewLutEntry {
                device: device.into(),
                setting_key: setting.key(),
                op_key,
                median_ms: 0.1,
                p10_ms: 0.09,
                p90_ms: 0.11,
                repeats: 5,
            })
            .await
            .unwrap();
    }
}

pub async fn mutating_search_endpoints_need_the_admin_token(db: TestDb) {
    let (router, _) = api(&db.store);
    let body = spec(aging(4, 2, 1)).to_string();
    let (status, err) = send(&router, Method::POST, "/api/v1/searches", None, Some(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(err["error"].as_str().unwrap().contains("token"), "{err}");
    let (status, _) = send(&router, Method::POST, "/api/v1/searches", Some("guess"), Some(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, err) = send(&router, Method::POST, "/api/v1/searches", Some(WORKER), Some(&body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(err["error"].as_str().unwrap().contains("admin"), "{err}");
    let (status, created) = send(&router, Method::POST, "/api/v1/searches", Some(ADMIN), Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    let (status, _) = post(&router, &format!("/api/v1/searches/{id}/cancel"), WORKER, &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(db.store.get_search(id).await.unwrap().unwrap().status, "running", "nothing changed");
}

pub async fn worker_endpoints_need_the_worker_token(db: TestDb) {
    let (router, _) = api(&db.store);
    let body = json!({ "worker_id": "w1", "wait_ms": 0 });
    let (status, _) =
        send(&router, Method::POST, "/api/v1/workers/lease", None, Some(&body.to_string())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, err) = post(&router, "/api/v1/workers/lease", ADMIN, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(err["error"].as_str().unwrap().contains("worker token"), "{err}");
}

pub async fn malformed_json_is_a_400_and_a_wrong_field_a_422_with_its_path(db: TestDb) {
    let (router, _) = api(&db.store);
    let (status, err) =
        send(&router, Method::POST, "/api/v1/searches", Some(ADMIN), Some("{\"name\": ")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().starts_with("malformed JSON"), "{err}");
    let mut wrong = spec(aging(4, 2, 1));
    wrong["proxy"]["seq_len"] = json!("long");
    let (status, err) = post(&router, "/api/v1/searches", ADMIN, &wrong).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["fields"][0]["path"], "proxy.seq_len", "{err}");
    let mut unknown = spec(aging(4, 2, 1));
    unknown["proxy"]["tokenz"] = json!(5);
    let (status, err) = post(&router, "/api/v1/searches", ADMIN, &unknown).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err["fields"][0]["message"].as_str().unwrap().contains("tokenz"), "{err}");
    // Worker messages too.
    let (status, _) =
        send(&router, Method::POST, "/api/v1/workers/register", Some(WORKER), Some("{\"worker_id\": tru"))
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, err) =
        post(&router, "/api/v1/trials/1/complete", WORKER, &json!({ "lease_token": 7 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["fields"][0]["path"], "lease_token", "{err}");
    assert!(db.store.list_searches().await.unwrap().is_empty(), "nothing was stored");
}

pub async fn an_invalid_spec_is_refused_with_every_problem_and_its_path(db: TestDb) {
    let (router, _) = api(&db.store);
    let mut bad = spec(
        json!({ "kind": "aging_evolution", "population": 0, "sample_size": 5, "per_cycle": 1, "cycles": 1 }),
    );
    bad["proxy"]["corpus"] = json!("");
    bad["seeds"] = json!(["nemotron-flash-1b", "no-such-preset"]);
    let (status, err) = post(&router, "/api/v1/searches", ADMIN, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let paths: Vec<&str> =
        err["fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for expected in ["algorithm.population", "algorithm.sample_size", "proxy.corpus", "seeds[0]", "seeds[1]"]
    {
        assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
    }
    assert!(err["fields"].to_string().contains("fixed layer list"), "{err}");
}

pub async fn a_latency_budget_without_a_latency_table_is_refused(db: TestDb) {
    let (router, _) = api(&db.store);
    let mut s = spec(aging(4, 2, 1));
    s["target"]["latency_budget_ms"] = json!(10.0);
    let (status, err) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["fields"][0]["path"], "target");
    assert!(err["fields"][0]["message"].as_str().unwrap().contains("frontier lut profile"), "{err}");
    // With a table it is accepted.
    flat_latency_table(&db.store, "cpu-test", "batch=1,prompt=16,gen=32").await;
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

pub async fn a_relative_budget_is_resolved_against_the_reference_model_on_the_target(db: TestDb) {
    let (router, _) = api(&db.store);
    flat_latency_table(&db.store, "cpu-test", "batch=1,prompt=16,gen=32").await;
    let mut s = spec(aging(4, 2, 1));
    s["target"]["latency_budget_of"] = json!({ "preset": "tiny-transformer", "factor": 0.75 });
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let setting: lut::DeploymentSetting = "batch=1,prompt=16,gen=32".parse().unwrap();
    let latency =
        coordinator::latency::load(&db.store, Some("cpu-test"), &setting).await.unwrap().unwrap().unwrap();
    let reference = latency
        .estimate_ms(&search_space::presets::preset("tiny-transformer").unwrap().expand().unwrap())
        .unwrap();
    let budget = created["spec"]["target"]["latency_budget_ms"].as_f64().unwrap();
    assert!((budget - 0.75 * reference).abs() < 1e-9, "{budget} vs 0.75 × {reference}");
    assert_eq!(created["spec"]["target"]["latency_budget_of"]["preset"], "tiny-transformer");
    // Bad references name the field.
    for (rel, path) in [
        (json!({ "preset": "no-such", "factor": 1.0 }), "target.latency_budget_of.preset"),
        (json!({ "preset": "tiny-transformer", "factor": 0.0 }), "target.latency_budget_of.factor"),
    ] {
        let mut s = spec(aging(4, 2, 1));
        s["target"]["latency_budget_of"] = rel;
        let (status, err) = post(&router, "/api/v1/searches", ADMIN, &s).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert_eq!(err["fields"][0]["path"], path, "{err}");
    }
    s["target"]["latency_budget_ms"] = json!(5.0);
    let (status, err) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err.to_string().contains("not both"), "{err}");
}

pub async fn unknown_ids_are_404_and_cancelling_twice_is_409(db: TestDb) {
    let (router, _) = api(&db.store);
    for uri in ["/api/v1/searches/999", "/api/v1/candidates/999", "/api/v1/searches/999/leaderboard"] {
        let (status, err) = get(&router, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(err["error"].as_str().unwrap().contains("999"), "{err}");
    }
    let (_, created) = post(&router, "/api/v1/searches", ADMIN, &spec(aging(4, 2, 1))).await;
    let id = created["id"].as_i64().unwrap();
    let (status, s) = post(&router, &format!("/api/v1/searches/{id}/cancel"), ADMIN, &json!({})).await;
    assert_eq!((status, s["status"].as_str()), (StatusCode::OK, Some("cancelled")));
    let (status, err) = post(&router, &format!("/api/v1/searches/{id}/cancel"), ADMIN, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(err["error"].as_str().unwrap().contains("already ended"), "{err}");
}

pub async fn oversized_bodies_are_413(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.body_limit_bytes = 1024;
    let (router, _) = api_with(&db.store, config);
    let mut s = spec(aging(4, 2, 1));
    s["name"] = json!("x".repeat(4096));
    let (status, err) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(err["error"].as_str().unwrap().contains("1024"), "{err}");
}

pub async fn bad_leaderboard_parameters_name_the_parameter(db: TestDb) {
    let (router, _) = api(&db.store);
    let (_, created) = post(&router, "/api/v1/searches", ADMIN, &spec(aging(4, 2, 1))).await;
    let id = &created["id"];
    for (query, name) in
        [("sort=speed", "sort"), ("limit=0", "limit"), ("cursor=zzz", "cursor"), ("order=up", "order")]
    {
        let (status, err) = get(&router, &format!("/api/v1/searches/{id}/leaderboard?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(err["error"].as_str().unwrap().starts_with(name), "{query}: {err}");
    }
    let (status, err) = get(&router, &format!("/api/v1/searches/{id}/leaderboard?limit=ten")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
}

pub async fn every_documented_operation_is_served(db: TestDb) {
    let (router, _) = api(&db.store);
    let (status, doc) = get(&router, "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths.values().map(|p| p.as_object().unwrap().len()).sum::<usize>(),
        coordinator::openapi::OPERATIONS.len()
    );
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let uri = path.replace("{id}", "1").replace("{fingerprint}", "dev");
            let method: Method = method.to_uppercase().parse().unwrap();
            let token = if path.contains("workers")
                || path.contains("trials")
                || method == Method::POST && path.contains("lut")
            {
                WORKER
            } else {
                ADMIN
            };
            let (status, body) = send(&router, method.clone(), &uri, Some(token), Some("{}")).await;
            // An unrouted path is a bare 404 without our JSON body; a wrong method is a 405.
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(
                status != StatusCode::NOT_FOUND || body.get("error").is_some(),
                "{method} {uri} is not routed"
            );
            assert!(!status.is_server_error(), "{method} {uri}: {status} {body}");
        }
    }
}

pub async fn health_readiness_and_metrics_answer(db: TestDb) {
    let (router, _) = api(&db.store);
    assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK);
    let (status, ready) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["backend"], json!(db.store.backend()));
    post(&router, "/api/v1/searches", ADMIN, &spec(aging(4, 2, 1))).await;
    let (status, metrics) = get(&router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap();
    assert!(text.contains("frontier_searches_created_total 1"), "{text}");
    assert!(text.contains("frontier_trials_queued 4"), "{text}");
}

pub async fn a_number_without_a_fraction_is_read_as_an_integer(db: TestDb) {
    let (router, _) = api(&db.store);
    let mut s = spec(aging(4, 2, 1));
    s["proxy"]["tokens"] = json!(4096.0);
    s["seed"] = json!(1_929_077_301_673_893.0);
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["proxy"]["tokens"], 4096);
    assert_eq!(created["spec"]["seed"], 1_929_077_301_673_893u64);
    s["proxy"]["tokens"] = json!(4096.5);
    let (status, err) = post(&router, "/api/v1/searches", ADMIN, &s).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["fields"][0]["path"], "proxy.tokens", "{err}");
}
