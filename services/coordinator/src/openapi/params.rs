//! The path and query parameters several operations share, with their schemas, and the links
//! from one operation's response to the next.

use api::spec::{MAX_KEY_CHARS, NOT_BLANK};
use serde_json::{Value, json};

use super::{Link, Param};
use crate::store::SortKey;

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
pub(super) const SEARCH_LINKS: &[Link] = &[
    link(201, "GetSearch", "getSearch", SEARCH_ID, &[]),
    link(201, "GetLeaderboard", "getLeaderboard", SEARCH_ID, &[]),
    link(201, "GetPareto", "getPareto", SEARCH_ID, &[]),
    link(201, "ExportBest", "exportBest", SEARCH_ID, &[]),
    link(201, "CancelSearch", "cancelSearch", SEARCH_ID, &[]),
];
const FIT_ID: &[(&str, &str)] = &[("path.id", "$response.body#/id")];
pub(super) const FIT_LINKS: &[Link] = &[
    link(201, "GetScalingFit", "getScalingFit", FIT_ID, &[]),
    link(201, "Recommend", "recommendDepthWidth", FIT_ID, &[]),
];
const TRIAL_ID: &[(&str, &str)] = &[("path.id", "$response.body#/trial_id")];
const LEASE_TOKEN: &[(&str, &str)] = &[("lease_token", "$response.body#/lease_token")];
pub(super) const LEASE_LINKS: &[Link] = &[
    link(200, "Heartbeat", "heartbeatTrial", TRIAL_ID, LEASE_TOKEN),
    link(200, "Complete", "completeTrial", TRIAL_ID, LEASE_TOKEN),
    link(200, "Fail", "failTrial", TRIAL_ID, LEASE_TOKEN),
    link(200, "GetCandidate", "getCandidate", &[("path.id", "$response.body#/candidate_id")], &[]),
    link(200, "ExportCandidate", "exportCandidate", &[("path.id", "$response.body#/candidate_id")], &[]),
    link(200, "GetSearch", "getSearch", &[("path.id", "$response.body#/search_id")], &[]),
];
pub(super) const REGISTER_LINKS: &[Link] =
    &[link(200, "Lease", "leaseTrial", &[], &[("worker_id", "$response.body#/worker_id")])];

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

pub(super) fn op_key() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 4 * MAX_KEY_CHARS, "pattern": NOT_BLANK })
}

pub(super) fn setting() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "examples": ["batch=1,prompt=128,gen=1024"] })
}

pub(super) const ID: Param = Param {
    name: "id",
    location: "path",
    required: true,
    description: "Numeric id; an id that is not a 64-bit integer is a 400.",
    schema: int64,
};

pub(super) const FINGERPRINT: Param = Param {
    name: "fingerprint",
    location: "path",
    required: true,
    description: "A device fingerprint, as its worker registered it.",
    schema: fingerprint,
};

pub(super) const FORMAT: Param = Param {
    name: "format",
    location: "query",
    required: false,
    description: "`frontier` (Frontier's architecture document) or `nemotron-flash` (a Hugging Face \
                  config.json; 422 when the candidate cannot be written in that format).",
    schema: export_format,
};

pub(super) const LEADERBOARD: &[Param] = &[
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

pub(super) const NO_PARAMS: &[Param] = &[];
pub(super) const JSON_OK: &str = "success";
