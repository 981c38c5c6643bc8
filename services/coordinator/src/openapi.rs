//! The OpenAPI 3.1 description of the HTTP API, served at `/api/openapi.json`.
//!
//! Written out here rather than derived: the wire types live in the `api` crate, which stays free
//! of HTTP concerns. A test walks every documented operation against the real router, so a route
//! that is documented but not served fails the build.

use serde_json::{Map, Value, json};

/// One documented operation: (method, path, summary, auth, request schema, success status).
pub type Operation = (&'static str, &'static str, &'static str, &'static str, Option<&'static str>, u16);

/// Every operation the API serves.
pub const OPERATIONS: &[Operation] = &[
    ("post", "/api/v1/searches", "Create a search from a spec", "admin", Some("SearchSpec"), 201),
    ("get", "/api/v1/searches", "List searches with progress", "read", None, 200),
    ("get", "/api/v1/searches/{id}", "A search, its status and progress", "read", None, 200),
    ("post", "/api/v1/searches/{id}/cancel", "Cancel a search", "admin", None, 200),
    (
        "get",
        "/api/v1/searches/{id}/leaderboard",
        "Scored candidates; ?sort=ppl|latency|params|memory|hidden|measured|rung|status|id&order=asc|desc&feasible=true&limit=N&cursor=C",
        "read",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/searches/{id}/pareto",
        "Perplexity × latency Pareto front and all points",
        "read",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/searches/{id}/best/export",
        "Export the best feasible candidate; ?format=",
        "read",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/candidates/{id}",
        "Candidate detail: layers, metrics, loss curve, lineage, trials",
        "read",
        None,
        200,
    ),
    ("get", "/api/v1/candidates/{id}/export", "Export; ?format=frontier|nemotron-flash", "read", None, 200),
    ("get", "/api/v1/devices", "Devices and workers", "read", None, 200),
    ("get", "/api/v1/devices/{fingerprint}/lut", "A device's latency entries; ?setting=", "read", None, 200),
    (
        "post",
        "/api/v1/devices/{fingerprint}/lut",
        "Upload profiled latency entries",
        "worker",
        Some("LutUpload"),
        200,
    ),
    (
        "post",
        "/api/v1/workers/register",
        "Register a worker and its device",
        "worker",
        Some("RegisterWorker"),
        200,
    ),
    (
        "post",
        "/api/v1/workers/lease",
        "Lease a trial (long-poll; 204 when none)",
        "worker",
        Some("LeaseRequest"),
        200,
    ),
    (
        "post",
        "/api/v1/trials/{id}/heartbeat",
        "Extend a lease, report progress",
        "worker",
        Some("Heartbeat"),
        200,
    ),
    (
        "post",
        "/api/v1/trials/{id}/complete",
        "Post a trial's result (409 if the lease is stale)",
        "worker",
        Some("CompleteTrial"),
        200,
    ),
    ("post", "/api/v1/trials/{id}/fail", "Report a trial's failure", "worker", Some("FailTrial"), 200),
    ("get", "/healthz", "Liveness", "none", None, 200),
    ("get", "/readyz", "Readiness (database reachable)", "none", None, 200),
    ("get", "/metrics", "Prometheus metrics", "none", None, 200),
    ("get", "/api/openapi.json", "This document", "none", None, 200),
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for &(method, path, summary, auth, request, status) in OPERATIONS {
        let mut op = json!({
            "summary": summary,
            "responses": {
                status.to_string(): { "description": "success" },
                "4XX": { "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } }
            }
        });
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        match auth {
            "admin" => op["security"] = json!([{ "adminToken": [] }]),
            "worker" => op["security"] = json!([{ "workerToken": [] }]),
            _ => {}
        }
        if let Some(schema) = request {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
            });
        }
        let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        entry[method] = op;
    }
    let object = |description: &str| json!({ "type": "object", "description": description });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Frontier",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Hardware-aware architecture search for hybrid small language models."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": { "type": "http", "scheme": "bearer", "description": "The coordinator's admin token" },
                "workerToken": { "type": "http", "scheme": "bearer", "description": "The coordinator's worker token" }
            },
            "schemas": {
                "SearchSpec": object("Search space, target device and setting, latency budget, width mode, proxy budget, algorithm, halving, seeds, max_attempts, seed (see examples/quickstart.toml)"),
                "RegisterWorker": object("worker_id, hostname, device {fingerprint, name, kind, info}"),
                "LeaseRequest": object("worker_id, wait_ms"),
                "Heartbeat": object("lease_token, progress {step, steps, tokens, loss, tokens_per_s}"),
                "CompleteTrial": object("lease_token, metrics {outcome, val_loss, ppl, train_loss, steps, tokens, tokens_per_s, train_seconds, params, loss_curve, measured_latency_ms, accuracy, device}"),
                "FailTrial": object("lease_token, error, retryable"),
                "LutUpload": { "type": "array", "items": object("setting_key, op_key, median_ms, p10_ms, p90_ms, repeats") },
                "ErrorBody": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": { "type": "string" },
                        "fields": { "type": "array", "items": { "type": "object", "properties": { "path": { "type": "string" }, "message": { "type": "string" } } } }
                    }
                }
            }
        }
    })
}
