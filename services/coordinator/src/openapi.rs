//! The OpenAPI 3.1 description of the HTTP API, served at `/api/openapi.json`.
//!
//! Operations are listed here by hand ([`OPERATIONS`]): method, path, parameters, who may call
//! it, and every status its handler can answer. Request and response bodies are not written out:
//! their JSON Schemas (2020-12, the dialect of OpenAPI 3.1) are derived from the wire types
//! themselves with `schemars` and collected under `components/schemas`, so the document cannot
//! drift from what the handlers parse and serialise. A test walks every documented operation
//! against the real router, and `scripts/schemathesis.sh` fuzzes the running server against it.

use api::spec::{MAX_KEY_CHARS, NOT_BLANK, SearchSpec};
use api::{
    CompleteTrial, ErrorBody, FailTrial, Heartbeat, HeartbeatAck, LeaseGrant, LeaseRequest, RegisterWorker,
    Registered,
};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::http::candidates::CandidateDetail;
use crate::http::devices::{DeviceList, LutDeleted, LutStored, LutTable, UploadedEntry};
use crate::http::ops::{Health, Ready};
use crate::http::searches::{LeaderboardPage, ParetoView, SearchView};
use crate::http::workers::TrialAck;
use crate::scaling::{FitRequest, RecommendRequest, Recommendation, ScalingFit};
use crate::store::SortKey;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    None,
    /// Anyone, unless the coordinator protects reads: then either token (401 without one).
    Read,
    /// The admin token (401 without a known token, 403 with the worker token).
    Admin,
    /// The worker token (401 without a known token, 403 with the admin token).
    Worker,
}

/// Writes a schema into a generator, returning it or a `$ref` to it.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// `T`'s schema, as a reference into `components/schemas`.
fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// A success response's body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// `application/json` of this schema.
    Json(SchemaFn),
    /// A JSON file download (`Content-Disposition: attachment`): a candidate export.
    Export,
    /// Prometheus text exposition.
    Metrics,
    /// No body.
    Empty,
}

/// A path or query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    /// `path` or `query`.
    pub location: &'static str,
    pub required: bool,
    pub description: &'static str,
    pub schema: fn() -> Value,
}

/// An OpenAPI link: how a success response feeds another operation (clients and stateful
/// testers follow them).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The success status whose body the link reads.
    pub status: u16,
    pub name: &'static str,
    pub operation_id: &'static str,
    /// `location.name` → runtime expression, e.g. `("path.id", "$response.body#/id")`.
    pub parameters: &'static [(&'static str, &'static str)],
    /// Body fields → runtime expressions.
    pub body: &'static [(&'static str, &'static str)],
}

const fn link(
    status: u16,
    name: &'static str,
    operation_id: &'static str,
    parameters: &'static [(&'static str, &'static str)],
    body: &'static [(&'static str, &'static str)],
) -> Link {
    Link { status, name, operation_id, parameters, body }
}

const SEARCH_ID: &[(&str, &str)] = &[("path.id", "$response.body#/id")];
const SEARCH_LINKS: &[Link] = &[
    link(201, "GetSearch", "getSearch", SEARCH_ID, &[]),
    link(201, "GetLeaderboard", "getLeaderboard", SEARCH_ID, &[]),
    link(201, "GetPareto", "getPareto", SEARCH_ID, &[]),
    link(201, "ExportBest", "exportBest", SEARCH_ID, &[]),
    link(201, "CancelSearch", "cancelSearch", SEARCH_ID, &[]),
];
const FIT_ID: &[(&str, &str)] = &[("path.id", "$response.body#/id")];
const FIT_LINKS: &[Link] = &[
    link(201, "GetScalingFit", "getScalingFit", FIT_ID, &[]),
    link(201, "Recommend", "recommendDepthWidth", FIT_ID, &[]),
];
const TRIAL_ID: &[(&str, &str)] = &[("path.id", "$response.body#/trial_id")];
const LEASE_TOKEN: &[(&str, &str)] = &[("lease_token", "$response.body#/lease_token")];
const LEASE_LINKS: &[Link] = &[
    link(200, "Heartbeat", "heartbeatTrial", TRIAL_ID, LEASE_TOKEN),
    link(200, "Complete", "completeTrial", TRIAL_ID, LEASE_TOKEN),
    link(200, "Fail", "failTrial", TRIAL_ID, LEASE_TOKEN),
    link(200, "GetCandidate", "getCandidate", &[("path.id", "$response.body#/candidate_id")], &[]),
    link(200, "ExportCandidate", "exportCandidate", &[("path.id", "$response.body#/candidate_id")], &[]),
    link(200, "GetSearch", "getSearch", &[("path.id", "$response.body#/search_id")], &[]),
];
const REGISTER_LINKS: &[Link] =
    &[link(200, "Lease", "leaseTrial", &[], &[("worker_id", "$response.body#/worker_id")])];

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub params: &'static [Param],
    /// The JSON request body's schema, when the operation reads one.
    pub request: Option<SchemaFn>,
    /// Success statuses and their bodies.
    pub success: &'static [(u16, &'static str, Body)],
    /// Error statuses the handler itself answers (beyond those implied by `auth` and `request`),
    /// each with an [`ErrorBody`].
    pub errors: &'static [u16],
    /// Operations its success responses lead to.
    pub links: &'static [Link],
}

impl Operation {
    /// Every status this operation can answer, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let mut out: Vec<u16> = self.success.iter().map(|(s, _, _)| *s).collect();
        out.extend_from_slice(self.errors);
        match self.auth {
            Auth::None => {}
            Auth::Read => out.push(401),
            Auth::Admin | Auth::Worker => out.extend([401, 403]),
        }
        if self.request.is_some() {
            out.extend([400, 413, 422]);
        }
        // Any request: one that takes longer than the request timeout, or one that arrives while
        // the server is at its concurrency limit.
        out.extend([408, 503]);
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn int64() -> Value {
    json!({ "type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX })
}

fn fingerprint() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": NOT_BLANK })
}

fn sort_keys() -> Value {
    let names: Vec<&str> = SortKey::ALL.iter().map(|(n, _)| *n).collect();
    json!({ "type": "string", "enum": names, "default": "ppl" })
}

fn order() -> Value {
    json!({ "type": "string", "enum": ["asc", "desc"], "default": "asc" })
}

fn boolean() -> Value {
    json!({ "type": "boolean", "default": false })
}

fn limit() -> Value {
    json!({ "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 })
}

fn cursor() -> Value {
    json!({ "type": "string", "pattern": "_[+-]?[0-9]{1,18}$" })
}

fn export_format() -> Value {
    json!({ "type": "string", "enum": ["frontier", "nemotron-flash"], "default": "frontier" })
}

fn op_key() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 4 * MAX_KEY_CHARS, "pattern": NOT_BLANK })
}

fn setting() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "examples": ["batch=1,prompt=128,gen=1024"] })
}

const ID: Param = Param {
    name: "id",
    location: "path",
    required: true,
    description: "Numeric id; an id that is not a 64-bit integer is a 400.",
    schema: int64,
};

const FINGERPRINT: Param = Param {
    name: "fingerprint",
    location: "path",
    required: true,
    description: "A device fingerprint, as its worker registered it.",
    schema: fingerprint,
};

const FORMAT: Param = Param {
    name: "format",
    location: "query",
    required: false,
    description: "`frontier` (Frontier's architecture document) or `nemotron-flash` (a Hugging Face \
                  config.json; 422 when the candidate cannot be written in that format).",
    schema: export_format,
};

const LEADERBOARD: &[Param] = &[
    ID,
    Param { name: "sort", location: "query", required: false, description: "Sort key.", schema: sort_keys },
    Param { name: "order", location: "query", required: false, description: "Sort order.", schema: order },
    Param {
        name: "feasible",
        location: "query",
        required: false,
        description: "Only candidates within the latency budget.",
        schema: boolean,
    },
    Param { name: "limit", location: "query", required: false, description: "Page size.", schema: limit },
    Param {
        name: "cursor",
        location: "query",
        required: false,
        description: "`next_cursor` of the previous page with the same sort (its sort value, `_`, \
                      the last id); a cursor that does not fit the sort key is a 400.",
        schema: cursor,
    },
];

const NO_PARAMS: &[Param] = &[];
const JSON_OK: &str = "success";

/// Every operation the API serves.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "post",
        path: "/api/v1/searches",
        operation_id: "createSearch",
        tag: "searches",
        summary: "Create a search from a spec (its first generation is queued at once)",
        auth: Auth::Admin,
        params: NO_PARAMS,
        request: Some(schema::<SearchSpec>),
        success: &[(201, "the new search", Body::Json(schema::<SearchView>))],
        errors: &[],
        links: SEARCH_LINKS,
    },
    Operation {
        method: "get",
        path: "/api/v1/searches",
        operation_id: "listSearches",
        tag: "searches",
        summary: "List searches with progress",
        auth: Auth::Read,
        params: NO_PARAMS,
        request: None,
        success: &[(200, JSON_OK, Body::Json(schema::<Vec<SearchView>>))],
        errors: &[],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/v1/searches/{id}",
        operation_id: "getSearch",
        tag: "searches",
        summary: "A search, its status and progress",
        auth: Auth::Read,
        params: &[ID],
        request: None,
        success: &[(200, JSON_OK, Body::Json(schema::<SearchView>))],
        errors: &[400, 404],
        links: &[],
    },
    Operation {
        method: "post",
        path: "/api/v1/searches/{id}/cancel",
        operation_id: "cancelSearch",
        tag: "searches",
        summary: "Cancel a search and revoke its leases (409 when it has already ended)",
        auth: Auth::Admin,
        params: &[ID],
        request: None,
        success: &[(200, "the cancelled search", Body::Json(schema::<SearchView>))],
        errors: &[400, 404, 409],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/v1/searches/{id}/leaderboard",
        operation_id: "getLeaderboard",
        tag: "searches",
        summary: "Scored candidates, one page at a time",
        auth: Auth::Read,
        params: LEADERBOARD,
        request: None,
        success: &[(200, JSON_OK, Body::Json(schema::<LeaderboardPage>))],
        errors: &[400, 404],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/v1/searches/{id}/pareto",
        operation_id: "getPareto",
        tag: "searches",
        summary: "Perplexity × latency Pareto front and all points",
        auth: Auth::Read,
        params: &[ID],
        request: None,
        success: &[(200, JSON_OK, Body::Json(schema::<ParetoView>))],
        errors: &[400, 404],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/v1/searches/{id}/best/export",
        operation_id: "exportBest",
        tag: "searches",
        summary: "Export the best feasible candidate (404 before one is scored)",
        auth: Auth::Read,
        params: &[ID, FORMAT],
        request: None,
        success: &[(200, "the exported document, as a download", Body::Export)],
        errors: &[400, 404, 422],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/v1/candidates/{id}",
        operation_id: "getCandidate",
        tag: "candidates",
        summary: "Candidate detail: layers, metrics, loss curve, lineage, trials",
        auth: Auth::Read,
        params: &[ID],
        request: None,
        success: &[(200, JSON_OK, Body::Json(schema::<CandidateDetail>))],
        errors: &[400, 404],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/v1/candidates/{id}/export",
        operation_id: "exportCandidate",
        tag: "candidates",
        summary: "Export a candidate",
        auth: Auth::Read,
        params: &[ID, FORMAT],
        request: None,
        success: &[(200, "the exported document, as a download", Body::Export)],
        errors: &[400, 404, 422],
        links: &[],
    },
    Operation {
        method: "post",
        path: "/api/v1/searches/{id}/scaling-fits",
        operation_id: "createScalingFit",
        tag: "scaling",
        summary: "Fit the depth-width scaling law to a sweep's finished trials, with bootstrap \
                  intervals and the held-out extrapolation error (409 for a search that is not a \
                  sweep or has too few results)",
        auth: Auth::Admin,
        params: &[ID],
        request: Some(schema::<FitRequest>),
        success: &[(201, "the stored fit", Body::Json(schema::<ScalingFit>))],
        errors: &[404, 409],
        links: FIT_LINKS,
    },
    Operation {
        method: "get",
        path: "/api/v1/searches/{id}/scaling-fits",
        operation_id: "listScalingFits",
        tag: "scaling",
        summary: "A sweep's fits, newest first",
        auth: Auth::Read,
        params: &[ID],
        request: None,
        success: &[(200, JSON_OK, Body::Json(schema::<Vec<ScalingFit>>))],
        errors: &[400, 404],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/v1/scaling-fits/{id}",
        operation_id: "getScalingFit",
        tag: "scaling",
        summary: "A stored fit",
        auth: Auth::Read,
        params: &[ID],
        request: None,
        success: &[(200, JSON_OK, Body::Json(schema::<ScalingFit>))],
        errors: &[400, 404],
        links: &[],
    },
    Operation {
        method: "post",
        path: "/api/v1/scaling-fits/{id}/recommend",
        operation_id: "recommendDepthWidth",
        tag: "scaling",
        summary: "The depth and width with the lowest predicted loss whose LUT latency fits a budget, \
                  with the runners-up and the search-space constraint they imply",
        auth: Auth::Read,
        params: &[ID],
        request: Some(schema::<RecommendRequest>),
        success: &[(200, JSON_OK, Body::Json(schema::<Recommendation>))],
        errors: &[404, 409],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/v1/devices",
        operation_id: "listDevices",
        tag: "devices",
        summary: "Devices and workers",
        auth: Auth::Read,
        params: NO_PARAMS,
        request: None,
        success: &[(200, JSON_OK, Body::Json(schema::<DeviceList>))],
        errors: &[],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/v1/devices/{fingerprint}/lut",
        operation_id: "getLut",
        tag: "devices",
        summary: "A device's latency entries at one setting",
        auth: Auth::Read,
        params: &[
            FINGERPRINT,
            Param {
                name: "setting",
                location: "query",
                required: true,
                description: "Deployment setting `batch=B,prompt=P,gen=G[,dtype=D]`, in any order; one \
                              that does not parse is a 400.",
                schema: setting,
            },
        ],
        request: None,
        success: &[(200, JSON_OK, Body::Json(schema::<LutTable>))],
        errors: &[400, 404],
        links: &[],
    },
    Operation {
        method: "post",
        path: "/api/v1/devices/{fingerprint}/lut",
        operation_id: "uploadLut",
        tag: "devices",
        summary: "Upload profiled latency entries, all or none (404 for a device no worker registered)",
        auth: Auth::Worker,
        params: &[FINGERPRINT],
        request: Some(schema::<Vec<UploadedEntry>>),
        success: &[(200, "how many entries were stored", Body::Json(schema::<LutStored>))],
        errors: &[404],
        links: &[],
    },
    Operation {
        method: "delete",
        path: "/api/v1/devices/{fingerprint}/lut",
        operation_id: "deleteLut",
        tag: "devices",
        summary: "Delete a device's latency tables: all of them, one setting's, or one row (404 for an \
                  unknown device)",
        auth: Auth::Admin,
        params: &[
            FINGERPRINT,
            Param {
                name: "setting",
                location: "query",
                required: false,
                description: "Only this deployment setting's table (and its calibrations); every \
                              setting's when absent. One that does not parse is a 400.",
                schema: setting,
            },
            Param {
                name: "op",
                location: "query",
                required: false,
                description: "Only the row with this operator key, matched as stored text (so a row \
                              that does not parse can be removed); calibrations are kept.",
                schema: op_key,
            },
        ],
        request: None,
        success: &[(200, "how many entries were deleted", Body::Json(schema::<LutDeleted>))],
        errors: &[400, 404],
        links: &[],
    },
    Operation {
        method: "post",
        path: "/api/v1/workers/register",
        operation_id: "registerWorker",
        tag: "workers",
        summary: "Register a worker and its device (again: updates it)",
        auth: Auth::Worker,
        params: NO_PARAMS,
        request: Some(schema::<RegisterWorker>),
        success: &[(200, JSON_OK, Body::Json(schema::<Registered>))],
        errors: &[],
        links: REGISTER_LINKS,
    },
    Operation {
        method: "post",
        path: "/api/v1/workers/lease",
        operation_id: "leaseTrial",
        tag: "workers",
        summary: "Lease a trial (long-poll; 404 for an unregistered worker)",
        auth: Auth::Worker,
        params: NO_PARAMS,
        request: Some(schema::<LeaseRequest>),
        success: &[
            (200, "a leased trial", Body::Json(schema::<LeaseGrant>)),
            (204, "nothing was queued within `wait_ms`", Body::Empty),
        ],
        errors: &[404],
        links: LEASE_LINKS,
    },
    Operation {
        method: "post",
        path: "/api/v1/trials/{id}/heartbeat",
        operation_id: "heartbeatTrial",
        tag: "workers",
        summary: "Extend a lease, report progress (409 when the lease is stale)",
        auth: Auth::Worker,
        params: &[ID],
        request: Some(schema::<Heartbeat>),
        success: &[(200, JSON_OK, Body::Json(schema::<HeartbeatAck>))],
        errors: &[400, 404, 409],
        links: &[],
    },
    Operation {
        method: "post",
        path: "/api/v1/trials/{id}/complete",
        operation_id: "completeTrial",
        tag: "workers",
        summary: "Post a trial's result (409 when the lease is stale)",
        auth: Auth::Worker,
        params: &[ID],
        request: Some(schema::<CompleteTrial>),
        success: &[(200, JSON_OK, Body::Json(schema::<TrialAck>))],
        errors: &[400, 404, 409],
        links: &[],
    },
    Operation {
        method: "post",
        path: "/api/v1/trials/{id}/fail",
        operation_id: "failTrial",
        tag: "workers",
        summary: "Report a trial's failure (409 when the lease is stale)",
        auth: Auth::Worker,
        params: &[ID],
        request: Some(schema::<FailTrial>),
        success: &[(200, JSON_OK, Body::Json(schema::<TrialAck>))],
        errors: &[400, 404, 409],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/healthz",
        operation_id: "healthz",
        tag: "operations",
        summary: "Liveness",
        auth: Auth::None,
        params: NO_PARAMS,
        request: None,
        success: &[(200, "alive", Body::Json(schema::<Health>))],
        errors: &[],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/readyz",
        operation_id: "readyz",
        tag: "operations",
        summary: "Readiness (503 while the database is unreachable)",
        auth: Auth::None,
        params: NO_PARAMS,
        request: None,
        success: &[(200, "ready", Body::Json(schema::<Ready>))],
        errors: &[503],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/metrics",
        operation_id: "metrics",
        tag: "operations",
        summary: "Prometheus metrics (behind a token when reads are protected)",
        auth: Auth::Read,
        params: NO_PARAMS,
        request: None,
        success: &[(200, "Prometheus text exposition format 0.0.4", Body::Metrics)],
        errors: &[],
        links: &[],
    },
    Operation {
        method: "get",
        path: "/api/openapi.json",
        operation_id: "openapi",
        tag: "operations",
        summary: "This document",
        auth: Auth::None,
        params: NO_PARAMS,
        request: None,
        success: &[(200, "the OpenAPI 3.1 document", Body::Json(openapi_document))],
        errors: &[],
        links: &[],
    },
];

fn openapi_document(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": "object", "required": ["openapi", "info", "paths"] })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_and_every_operation_is_unique() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut refs = Vec::new();
        fn collect(v: &Value, refs: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                        refs.push(r.to_owned());
                    }
                    m.values().for_each(|v| collect(v, refs));
                }
                Value::Array(a) => a.iter().for_each(|v| collect(v, refs)),
                _ => {}
            }
        }
        collect(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        let mut ids: Vec<&str> = OPERATIONS.iter().map(|o| o.operation_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), OPERATIONS.len());
        for op in OPERATIONS {
            for link in op.links {
                assert!(
                    ids.contains(&link.operation_id),
                    "{} links to {}",
                    op.operation_id,
                    link.operation_id
                );
                assert!(op.success.iter().any(|(s, _, _)| *s == link.status), "{}", link.name);
            }
        }
    }

    #[test]
    fn the_spec_schema_carries_the_size_caps() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        assert_eq!(s["ProxyBudget"]["properties"]["tokens"]["maximum"], json!(api::spec::MAX_PROXY_TOKENS));
        assert_eq!(s["SearchSpec"]["properties"]["name"]["maxLength"], json!(api::spec::MAX_NAME_CHARS));
        let text = s["Algorithm"].to_string();
        assert!(text.contains(&format!("\"maximum\":{}", api::spec::MAX_POPULATION)), "{text}");
        // u32 fields without a cap of their own get the type's.
        assert_eq!(s["SearchSpec"]["properties"]["seed"]["maximum"], json!(u64::MAX));
    }
}
