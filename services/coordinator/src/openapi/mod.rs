//! The OpenAPI 3.1 description of the HTTP API, served at `/api/openapi.json`.
//!
//! Operations are listed here by hand ([`OPERATIONS`]): method, path, parameters, who may call
//! it, and every status its handler can answer. Request and response bodies are not written out:
//! their JSON Schemas (2020-12, the dialect of OpenAPI 3.1) are derived from the wire types
//! themselves with `schemars` and collected under `components/schemas`, so the document cannot
//! drift from what the handlers parse and serialise. A test walks every documented operation
//! against the real router, and `scripts/schemathesis.sh` fuzzes the running server against it.
//!
//! The types of the tables are here; `params.rs` holds the parameters and links several
//! operations share, `operations.rs` the table of operations itself, and `document.rs` turns the
//! table into the document.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

mod document;
mod operations;
mod params;

pub use document::document;
pub use operations::OPERATIONS;

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
    /// each with an [`ErrorBody`](api::ErrorBody).
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    /// Served ⇔ documented, both ways: a route added without its operation, or an operation
    /// left behind by a removed route, fails here.
    #[test]
    fn every_served_route_is_documented_and_every_documented_operation_is_served() {
        use std::collections::BTreeSet;
        let routes = crate::http::routes();
        let served: BTreeSet<(&str, &str)> = routes.served().iter().copied().collect();
        assert_eq!(served.len(), routes.served().len(), "a route is added twice");
        let documented: BTreeSet<(&str, &str)> = OPERATIONS.iter().map(|o| (o.method, o.path)).collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(undocumented.is_empty(), "served but not in the OpenAPI document: {undocumented:?}");
        assert!(unserved.is_empty(), "documented but not served: {unserved:?}");
        assert!(served.len() >= 26, "only {} routes", served.len());
    }
}
