//! Candidates: the exported documents (Frontier's architecture JSON, a Nemotron-Flash config)
//! and how much of a candidate's history is listed.

use serde_json::Value;

use super::AppError;
use crate::store::CandidateRow;

/// The most trial events a candidate's detail lists (attempts are bounded by `max_attempts`, so
/// only a pathological history is cut).
pub const HISTORY_LIMIT: i64 = 500;

/// The exported document of a candidate in a format.
pub fn export_document(c: &CandidateRow, format: &str) -> Result<Value, AppError> {
    let arch: search_space::Architecture = serde_json::from_value(c.architecture.clone())
        .map_err(|e| AppError::Internal(format!("stored architecture does not parse: {e}")))?;
    match format {
        "frontier" => serde_json::from_str(&arch.to_json()).map_err(|e| AppError::Internal(e.to_string())),
        "nemotron-flash" => {
            let model = arch.expand().map_err(|e| AppError::Internal(e.to_string()))?;
            search_space::nemotron_flash::export(&model).map_err(|e| {
                AppError::field(
                    "format",
                    format!("candidate {} cannot be written as a Nemotron-Flash config: {e}", c.id),
                )
            })
        }
        other => Err(AppError::BadRequest(format!(
            "format: unknown `{other}`; expected frontier or nemotron-flash"
        ))),
    }
}
