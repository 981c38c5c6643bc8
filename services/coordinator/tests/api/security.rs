//! Who may do what: tokens on every mutating operation (walked from the OpenAPI table), tokens of
//! the wrong kind, lease tokens a worker never received, oversized bodies and absurd sizes.

use axum::Router;
use axum::http::{Method, StatusCode};
use coordinator::app::ApiConfig;
use coordinator::openapi::{Auth, OPERATIONS, Operation};
use coordinator::store::TrialState;
use serde_json::{Value, json};

use crate::helpers::TestDb;
use crate::protocol::{complete, device, lease, metrics, register};
use crate::requests::{ADMIN, WORKER, aging, api, api_with, post, send, spec};

/// The operation's path with its parameters filled in.
fn uri(op: &Operation, id: i64) -> String {
    op.path.replace("{id}", &id.to_string()).replace("{fingerprint}", "cpu-test")
}

/// The token an operation needs, and the token of the other kind.
fn tokens(op: &Operation) -> Option<(&'static str, &'static str)> {
    match op.auth {
        Auth::Admin => Some((ADMIN, WORKER)),
        Auth::Worker => Some((WORKER, ADMIN)),
        Auth::None | Auth::Read => None,
    }
}

/// Everything a refused request could have changed, as JSON.
async fn snapshot(router: &Router, db: &TestDb, trial: i64) -> Value {
    let (_, searches) = send(router, Method::GET, "/api/v1/searches", None, None).await;
    let (_, devices) = send(router, Method::GET, "/api/v1/devices", None, None).await;
    let trial = db.store.get_trial(trial).await.unwrap().unwrap();
    let lut = db.store.lut_entries_of_device("cpu-test").await.unwrap();
    json!({
        "searches": searches,
        "devices": devices,
        "trial": serde_json::to_value(&trial).unwrap(),
        "lease_token": trial.lease_token,
        "lut": serde_json::to_value(&lut).unwrap(),
    })
}

pub async fn every_mutating_operation_refuses_a_missing_unknown_or_wrong_token(db: TestDb) {
    let (router, _) = api(&db.store);
    let (status, created) = post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    register(&router, "w1").await;
    let grant = lease(&router, "w1").await.expect("a queued trial");
    let trial = grant["trial_id"].as_i64().unwrap();
    let before = snapshot(&router, &db, trial).await;
    let mut checked = 0;
    for op in OPERATIONS {
        // Reads (a recommendation is a POST that computes and stores nothing) are open.
        if op.method == "get" || matches!(op.auth, Auth::Read) {
            continue;
        }
        let (right, wrong) = tokens(op).unwrap_or_else(|| panic!("{} {} is open", op.method, op.path));
        let id = if op.path.starts_with("/api/v1/trials") { trial } else { created["id"].as_i64().unwrap() };
        let uri = uri(op, id);
        let method: Method = op.method.to_uppercase().parse().unwrap();
        let body = Some("{}");
        let (status, err) = send(&router, method.clone(), &uri, None, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} without a token: {err}");
        assert!(err["error"].as_str().unwrap().contains("token"), "{err}");
        let (status, _) = send(&router, method.clone(), &uri, Some("not-a-token"), body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} with a made-up token");
        let (status, err) = send(&router, method.clone(), &uri, Some(wrong), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri} with the other token: {err}");
        assert_ne!(right, wrong);
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} mutating operations documented");
    assert_eq!(snapshot(&router, &db, trial).await, before, "a refused request changed something");
}

pub async fn a_worker_token_cannot_create_or_cancel_searches(db: TestDb) {
    let (router, _) = api(&db.store);
    let (_, created) = post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    let id = created["id"].as_i64().unwrap();
    let before = db.store.list_searches().await.unwrap();
    let (status, err) = post(&router, "/api/v1/searches", WORKER, &spec(aging(2, 1, 1))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, err) = post(&router, &format!("/api/v1/searches/{id}/cancel"), WORKER, &json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(db.store.list_searches().await.unwrap(), before, "the search list is unchanged");
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].status, "running");
}

pub async fn the_admin_token_cannot_act_as_a_worker(db: TestDb) {
    let (router, _) = api(&db.store);
    post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    let registration = json!({ "worker_id": "intruder", "hostname": "h", "device": device("cpu-admin") });
    let (status, _) = post(&router, "/api/v1/workers/register", ADMIN, &registration).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    register(&router, "w1").await;
    let (status, _) =
        post(&router, "/api/v1/workers/lease", ADMIN, &json!({ "worker_id": "w1", "wait_ms": 0 })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let grant = lease(&router, "w1").await.expect("a queued trial");
    let trial = grant["trial_id"].as_i64().unwrap();
    let before = snapshot(&router, &db, trial).await;
    let token = &grant["lease_token"];
    for (action, body) in [
        ("heartbeat", json!({ "lease_token": token })),
        ("complete", json!({ "lease_token": token, "metrics": metrics(2.0) })),
        ("fail", json!({ "lease_token": token, "error": "no", "retryable": false })),
    ] {
        let (status, err) = post(&router, &format!("/api/v1/trials/{trial}/{action}"), ADMIN, &body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{action}: {err}");
    }
    assert_eq!(snapshot(&router, &db, trial).await, before, "nothing changed");
    assert!(
        !before["devices"]["workers"].as_array().unwrap().iter().any(|w| w["id"] == "intruder"),
        "the admin token registered no worker"
    );
}

pub async fn a_lease_token_the_worker_did_not_receive_cannot_finish_a_trial(db: TestDb) {
    let (router, _) = api(&db.store);
    post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    register(&router, "w1").await;
    register(&router, "w2").await;
    let mine = lease(&router, "w1").await.expect("a first trial");
    let theirs = lease(&router, "w2").await.expect("a second trial");
    assert_ne!(mine["trial_id"], theirs["trial_id"]);
    let trial = mine["trial_id"].as_i64().unwrap();
    let before = snapshot(&router, &db, trial).await;
    for token in [theirs["lease_token"].clone(), json!("made-up-token"), json!("")] {
        let forged = json!({ "trial_id": trial, "lease_token": token });
        let (status, err) = complete(&router, &forged, 1.5).await;
        assert_eq!(status, StatusCode::CONFLICT, "complete with {token}: {err}");
        let body = json!({ "lease_token": token, "error": "forged", "retryable": false });
        let (status, err) = post(&router, &format!("/api/v1/trials/{trial}/fail"), WORKER, &body).await;
        assert_eq!(status, StatusCode::CONFLICT, "fail with {token}: {err}");
        let (status, _) = post(
            &router,
            &format!("/api/v1/trials/{trial}/heartbeat"),
            WORKER,
            &json!({ "lease_token": token }),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "heartbeat with {token}");
    }
    assert_eq!(snapshot(&router, &db, trial).await, before, "the trial and its result are unchanged");
    let stored = db.store.get_trial(trial).await.unwrap().unwrap();
    assert_eq!((stored.state, stored.result), (TrialState::Leased, None));
    // The token that was handed out still works.
    let (status, done) = complete(&router, &mine, 4.0).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(db.store.get_trial(trial).await.unwrap().unwrap().ppl, Some(4.0));
}

pub async fn every_body_over_the_limit_is_413(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.body_limit_bytes = 1024;
    let (router, _) = api_with(&db.store, config);
    let big = json!({ "padding": "x".repeat(4096) }).to_string();
    let mut checked = 0;
    for op in OPERATIONS.iter().filter(|op| op.request.is_some()) {
        // Open reads with a body are sent without a token.
        let token = tokens(op).map(|(right, _)| right);
        let method: Method = op.method.to_uppercase().parse().unwrap();
        let (status, err) = send(&router, method, &uri(op, 1), token, Some(&big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{} {}: {err}", op.method, op.path);
        assert!(err["error"].as_str().unwrap().contains("1024"), "{err}");
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} operations with a body");
    assert!(db.store.list_searches().await.unwrap().is_empty());
}

/// Posts a spec and returns the field paths of its 422.
async fn refused_paths(router: &Router, spec: &Value) -> Vec<String> {
    let (status, err) = post(router, "/api/v1/searches", ADMIN, spec).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    err["fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect()
}

pub async fn absurd_sizes_are_refused_naming_the_field_before_anything_is_allocated(db: TestDb) {
    let (router, _) = api(&db.store);
    let cases: Vec<(&str, Value)> = vec![
        ("algorithm.population", aging(1_000_000_000, 1, 1)),
        ("algorithm.per_cycle", aging(4, 1_000_000_000, 1)),
        ("algorithm.cycles", aging(4, 2, 4_000_000_000)),
        ("algorithm.candidates", json!({ "kind": "random", "candidates": 1_000_000_000u32 })),
        ("algorithm.batch", json!({ "kind": "random", "candidates": 10, "batch": 1_000_000_000u32 })),
        (
            "algorithm.generations",
            json!({ "kind": "nsga2", "population": 4, "generations": 4_000_000_000u32 }),
        ),
    ];
    for (path, algorithm) in cases {
        let paths = refused_paths(&router, &spec(algorithm)).await;
        assert!(paths.iter().any(|p| p == path), "{path} missing from {paths:?}");
    }
    let mut fields: Vec<(&str, Value)> = vec![
        ("proxy.tokens", json!({ "proxy": { "tokens": 1_000_000_000_000_000_000u64 } })),
        ("proxy.eval_tokens", json!({ "proxy": { "eval_tokens": 1_000_000_000_000u64 } })),
        ("proxy.seq_len", json!({ "proxy": { "seq_len": 1_000_000_000u32 } })),
        ("proxy.batch_size", json!({ "proxy": { "batch_size": 1_000_000_000u32 } })),
        ("proxy.batch_size", json!({ "proxy": { "seq_len": 65_536, "batch_size": 4_096 } })),
        ("proxy.meta_tokens", json!({ "proxy": { "meta_tokens": 1_000_000_000u32 } })),
        ("proxy.tokenizer", json!({ "proxy": { "tokenizer": "bpe:4000000000" } })),
        ("name", json!({ "name": "n".repeat(100_000) })),
        ("space.hidden_sizes", json!({ "space": { "hidden_sizes": (1..=200_000).collect::<Vec<u32>>() } })),
        ("space.max_blocks_per_stage", json!({ "space": { "max_blocks_per_stage": 4_000_000_000u32 } })),
        ("seeds", json!({ "seeds": vec!["transformer-1b"; 50_000] })),
        ("target.setting", json!({ "target": { "setting": "batch=1,".repeat(10_000) } })),
    ];
    fields.push((
        "model.mamba2.state_size",
        json!({ "model": { "hidden_size": 64, "vocab_size": 256, "mamba2": { "state_size": 4_000_000_000u32 } } }),
    ));
    for (path, patch) in fields {
        let mut s = spec(aging(4, 2, 1));
        merge(&mut s, &patch);
        let paths = refused_paths(&router, &s).await;
        assert!(paths.iter().any(|p| p == path), "{path} missing from {paths:?}");
    }
    assert!(db.store.list_searches().await.unwrap().is_empty(), "nothing was stored");
}

/// Overwrites `target`'s fields with `patch`'s, recursively.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

pub async fn text_with_a_nul_character_is_refused_never_an_internal_error(db: TestDb) {
    let (router, _) = api(&db.store);
    let nul = "a\u{0}b";
    let mut s = spec(aging(2, 1, 1));
    s["name"] = json!(nul);
    assert_eq!(refused_paths(&router, &s).await, ["name"]);
    for (field, body) in [
        ("worker_id", json!({ "worker_id": nul, "hostname": "h", "device": device("cpu-test") })),
        ("hostname", json!({ "worker_id": "w1", "hostname": nul, "device": device("cpu-test") })),
        ("device.fingerprint", json!({ "worker_id": "w1", "hostname": "h", "device": device(nul) })),
    ] {
        let (status, err) = post(&router, "/api/v1/workers/register", WORKER, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {err}");
        assert_eq!(err["fields"][0]["path"], field, "{err}");
    }
    post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
    register(&router, "w1").await;
    let grant = lease(&router, "w1").await.expect("a queued trial");
    let trial = grant["trial_id"].as_i64().unwrap();
    for action in ["heartbeat", "fail"] {
        let body = json!({ "lease_token": nul, "error": "x" });
        let body = if action == "heartbeat" { json!({ "lease_token": nul }) } else { body };
        let (status, err) = post(&router, &format!("/api/v1/trials/{trial}/{action}"), WORKER, &body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {err}");
    }
    let (status, _) =
        send(&router, Method::GET, "/api/v1/devices/a%00b/lut?setting=batch=1,prompt=1,gen=1", None, None)
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A worker's error message is kept, its NUL shown as U+FFFD.
    let body = json!({ "lease_token": grant["lease_token"], "error": "bad\u{0}byte", "retryable": false });
    let (status, r) = post(&router, &format!("/api/v1/trials/{trial}/fail"), WORKER, &body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let candidate = db.store.get_candidate(grant["candidate_id"].as_i64().unwrap()).await.unwrap().unwrap();
    assert!(candidate.error.unwrap().contains("bad\u{FFFD}byte"));
}

/// Sends a GET with a raw `Authorization` header; returns the status and the headers.
async fn with_authorization(
    router: &Router,
    uri: &str,
    authorization: &str,
) -> (StatusCode, axum::http::HeaderMap) {
    use tower::ServiceExt;
    let request = axum::http::Request::get(uri)
        .header("authorization", authorization)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    (response.status(), response.headers().clone())
}

pub async fn the_bearer_scheme_is_read_in_any_case_and_a_401_names_it(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.protect_reads = true;
    let (router, _) = api_with(&db.store, config);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (status, _) = with_authorization(&router, "/api/v1/searches", &format!("{scheme} {ADMIN}")).await;
        assert_eq!(status, StatusCode::OK, "{scheme}");
    }
    for header in
        [format!("Basic {ADMIN}"), format!("Bearer{ADMIN}"), "Bearer".to_owned(), "Bearer wrong".to_owned()]
    {
        let (status, headers) = with_authorization(&router, "/api/v1/searches", &header).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(headers["www-authenticate"], "Bearer", "{header}");
    }
    let (status, err) = post(&router, "/api/v1/searches", "nope", &spec(aging(2, 1, 1))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
}

pub async fn metrics_need_a_token_when_reads_are_protected(db: TestDb) {
    let mut config = ApiConfig::new(ADMIN, WORKER);
    config.protect_reads = true;
    let (router, _) = api_with(&db.store, config);
    let (status, _) = send(&router, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, text) = send(&router, Method::GET, "/metrics", Some(WORKER), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.as_str().unwrap().contains("frontier_trials_queued"), "{text}");
    // Probes stay open.
    assert_eq!(send(&router, Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(send(&router, Method::GET, "/readyz", None, None).await.0, StatusCode::OK);
}

pub async fn wrong_methods_and_bad_path_parameters_answer_json(db: TestDb) {
    let (router, _) = api(&db.store);
    for (method, uri, want) in [
        (Method::PUT, "/api/v1/searches", StatusCode::METHOD_NOT_ALLOWED),
        (Method::DELETE, "/api/v1/searches/1", StatusCode::METHOD_NOT_ALLOWED),
        (Method::PATCH, "/healthz", StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, "/api/v1/searches/not-a-number", StatusCode::BAD_REQUEST),
        (Method::GET, "/api/v1/candidates/99999999999999999999999", StatusCode::BAD_REQUEST),
        (Method::GET, "/api/v1/nothing-here", StatusCode::NOT_FOUND),
    ] {
        let (status, body) = send(&router, method.clone(), uri, Some(ADMIN), None).await;
        assert_eq!(status, want, "{method} {uri}: {body}");
        assert!(body["error"].is_string(), "{method} {uri} answers the JSON error body: {body}");
    }
}

/// Every event's level and message, from a subscriber installed for one future.
#[derive(Clone, Default)]
struct Events(std::sync::Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.lock().unwrap().push((*event.metadata().level(), text.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

pub async fn a_stale_lease_is_refused_without_an_error_in_the_log(db: TestDb) {
    use tracing::instrument::WithSubscriber;
    let events = Events::default();
    let (router, _) = api(&db.store);
    let refused = async {
        post(&router, "/api/v1/searches", ADMIN, &spec(aging(2, 1, 1))).await;
        register(&router, "w1").await;
        let grant = lease(&router, "w1").await.expect("a queued trial");
        let trial = grant["trial_id"].as_i64().unwrap();
        let stale = json!({ "trial_id": trial, "lease_token": "an-old-token" });
        let mut statuses = vec![complete(&router, &stale, 2.0).await.0];
        for (action, body) in [
            ("heartbeat", json!({ "lease_token": "an-old-token" })),
            ("fail", json!({ "lease_token": "an-old-token", "error": "x", "retryable": true })),
        ] {
            statuses.push(post(&router, &format!("/api/v1/trials/{trial}/{action}"), WORKER, &body).await.0);
        }
        statuses
    }
    .with_subscriber(events.clone())
    .await;
    assert_eq!(refused, [StatusCode::CONFLICT; 3]);
    let logged = events.0.lock().unwrap().clone();
    assert!(logged.iter().any(|(_, text)| text.contains("stale")), "the refusals are logged: {logged:?}");
    let errors: Vec<_> = logged.iter().filter(|(level, _)| *level == tracing::Level::ERROR).collect();
    assert!(errors.is_empty(), "a stale lease is not an error: {errors:?}");
}
