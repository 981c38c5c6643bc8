//! Builds the document from the table of operations: each operation's parameters, request body,
//! responses (success bodies, links, and an `ErrorBody` for every error status) and security, the
//! schemas the generator collected, and integer bounds on every integer schema.

use api::ErrorBody;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{Auth, Body, OPERATIONS, Operation, schema};

/// What an error status means, for the document.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "malformed JSON, or a path or query parameter that does not parse",
        401 => "missing or unknown bearer token",
        403 => "the other kind of token",
        404 => "no such resource",
        409 => {
            "conflict with the resource's state (a stale lease, a search that already ended, a fit of a search that is not a sweep)"
        }
        408 => "the request took longer than the server's request timeout",
        413 => "request body over the size limit",
        422 => "a field is invalid; `fields` names each one by its path",
        503 => "the database is unreachable, or the server is at its concurrency limit (see `Retry-After`)",
        _ => "error",
    }
}

/// The exported document: Frontier's architecture format, or a Nemotron-Flash `config.json`.
fn export_schema(generator: &mut SchemaGenerator) -> Value {
    json!({
        "anyOf": [
            generator.subschema_for::<search_space::Architecture>(),
            {
                "title": "NemotronFlashConfig",
                "description": "A Hugging Face config.json for the Nemotron-Flash model code.",
                "type": "object"
            }
        ]
    })
}

fn responses(op: &Operation, generator: &mut SchemaGenerator, error: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for &(status, description, body) in op.success {
        let response = match body {
            Body::Json(schema) => json!({
                "description": description,
                "content": { "application/json": { "schema": schema(generator) } }
            }),
            Body::Export => json!({
                "description": description,
                "headers": {
                    "Content-Disposition": {
                        "required": true,
                        "description": "`attachment` with a file name",
                        "schema": { "type": "string", "pattern": "^attachment; filename=" }
                    }
                },
                "content": { "application/json": { "schema": export_schema(generator) } }
            }),
            Body::Metrics => json!({
                "description": description,
                "content": { "text/plain": { "schema": { "type": "string" } } }
            }),
            Body::Empty => json!({ "description": description }),
        };
        let mut response = response;
        let links: Map<String, Value> = op
            .links
            .iter()
            .filter(|l| l.status == status)
            .map(|l| {
                let mut link = json!({ "operationId": l.operation_id });
                if !l.parameters.is_empty() {
                    link["parameters"] =
                        l.parameters.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
                }
                if !l.body.is_empty() {
                    link["requestBody"] = l.body.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
                }
                (l.name.to_owned(), link)
            })
            .collect();
        if !links.is_empty() {
            response["links"] = Value::Object(links);
        }
        out.insert(status.to_string(), response);
    }
    for status in op.statuses() {
        out.entry(status.to_string()).or_insert_with(|| {
            json!({
                "description": error_description(status),
                "content": { "application/json": { "schema": error } }
            })
        });
    }
    out
}

/// The document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let error = schema::<ErrorBody>(&mut generator).to_value();
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut entry = json!({
            "operationId": op.operation_id,
            "tags": [op.tag],
            "summary": op.summary,
            "responses": responses(op, &mut generator, &error),
        });
        if !op.params.is_empty() {
            let params: Vec<Value> = op
                .params
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "in": p.location,
                        "required": p.required,
                        "description": p.description,
                        "schema": (p.schema)(),
                    })
                })
                .collect();
            entry["parameters"] = Value::Array(params);
        }
        match op.auth {
            Auth::Admin => entry["security"] = json!([{ "adminToken": [] }]),
            Auth::Worker => entry["security"] = json!([{ "workerToken": [] }]),
            Auth::None | Auth::Read => {}
        }
        if let Some(request) = op.request {
            entry["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": request(&mut generator) } }
            });
        }
        let path = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        path[op.method] = entry;
    }
    let mut schemas = generator.take_definitions(true);
    for schema in schemas.values_mut() {
        bound_integers(schema);
    }
    let mut paths = Value::Object(paths);
    bound_integers(&mut paths);
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Frontier",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Hardware-aware architecture search for hybrid small language models. \
                            Reads are open unless the coordinator protects them (then either token, \
                            as a bearer header or the web UI's sign-in cookie); searches are created \
                            and cancelled with the admin token; the worker protocol needs the worker \
                            token. Every error is a JSON `ErrorBody`."
        },
        "tags": [
            { "name": "searches", "description": "Searches, their leaderboards and Pareto fronts" },
            { "name": "candidates", "description": "Candidate architectures and their exports" },
            { "name": "devices", "description": "Devices and their latency tables" },
            { "name": "scaling", "description": "Depth-width scaling laws fitted to sweeps, and recommendations under a latency budget" },
            { "name": "workers", "description": "The worker protocol: register, lease, heartbeat, complete, fail" },
            { "name": "operations", "description": "Health, readiness, metrics and this document" }
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": { "type": "http", "scheme": "bearer", "description": "The coordinator's admin token" },
                "workerToken": { "type": "http", "scheme": "bearer", "description": "The coordinator's worker token" }
            },
            "schemas": schemas
        }
    })
}

/// Gives every integer schema the bounds of its Rust type, named by its `format`, unless it has
/// tighter ones: a value outside them does not parse, and the document should say so.
fn bound_integers(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let bounds: Option<(Value, Value)> = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some((json!(0), json!(u8::MAX))),
                Some("uint16") => Some((json!(0), json!(u16::MAX))),
                Some("uint32") => Some((json!(0), json!(u32::MAX))),
                Some("uint64" | "uint") => Some((json!(0), json!(u64::MAX))),
                Some("int32") => Some((json!(i32::MIN), json!(i32::MAX))),
                Some("int64" | "int") => Some((json!(i64::MIN), json!(i64::MAX))),
                _ => None,
            };
            if let Some((min, max)) = bounds {
                map.entry("minimum").or_insert(min);
                map.entry("maximum").or_insert(max);
            }
            for v in map.values_mut() {
                bound_integers(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}
