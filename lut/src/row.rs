//! A LUT row as text and numbers (how the store keeps it and how a client uploads it), checked
//! and parsed into the typed entry the profiler produces.
//!
//! Every row that reaches a table goes through [`parse_row`]: an upload is refused when a row
//! fails it, and a stored row that fails it (written before these checks existed) is left out of
//! the table instead of breaking it.

use crate::calibration::Calibration;
use crate::shape::OpShape;
use crate::table::{Lut, LutEntry};
use crate::{DeploymentSetting, SettingError};

/// Longest setting or operator key, in characters.
pub const MAX_KEY_CHARS: usize = 200;

/// Largest latency a row may hold, in milliseconds per decode step (about three hours): far above
/// any operator, far below where sums over thousands of steps stop being finite.
pub const MAX_LATENCY_MS: f64 = 1e7;

/// A row that is not a valid measurement: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RowError {
    /// `setting_key`, `op_key`, `median_ms`, `p10_ms`, `p90_ms` or `repeats`.
    pub field: &'static str,
    pub reason: String,
}

/// One row before it is checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawRow<'a> {
    pub setting_key: &'a str,
    pub op_key: &'a str,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub repeats: i64,
}

/// What is wrong with a key's text, if anything: empty, too long, or holding a control character
/// (a newline in a key would forge a log line, a NUL cannot be stored).
pub fn key_problem(key: &str) -> Option<String> {
    if key.trim().is_empty() {
        Some("must not be empty".to_owned())
    } else if key.chars().nth(MAX_KEY_CHARS).is_some() {
        Some(format!("must be at most {MAX_KEY_CHARS} characters"))
    } else if key.chars().any(char::is_control) {
        Some("must not contain control characters (newlines, tabs, NUL)".to_owned())
    } else {
        None
    }
}

/// Parses and checks a row: both keys parse with the same parsers the profiler's keys round-trip
/// through, latencies are finite, non-negative, at most [`MAX_LATENCY_MS`] and ordered
/// `p10 ≤ median ≤ p90`, and `repeats` is at least 1. Returns the setting and the entry; their
/// canonical keys (`setting.key()`, `entry.op.to_string()`) are what should be stored.
pub fn parse_row(row: &RawRow<'_>) -> Result<(DeploymentSetting, LutEntry), RowError> {
    let bad = |field: &'static str, reason: String| RowError { field, reason };
    if let Some(problem) = key_problem(row.setting_key) {
        return Err(bad("setting_key", problem));
    }
    if let Some(problem) = key_problem(row.op_key) {
        return Err(bad("op_key", problem));
    }
    let setting: DeploymentSetting =
        row.setting_key.parse().map_err(|e: SettingError| bad("setting_key", e.reason))?;
    let op: OpShape = row.op_key.parse().map_err(|e: crate::ShapeError| {
        bad("op_key", format!("not an operator shape ({}: {})", e.field, e.reason))
    })?;
    for (field, value) in [("median_ms", row.median_ms), ("p10_ms", row.p10_ms), ("p90_ms", row.p90_ms)] {
        if !value.is_finite() || value < 0.0 {
            return Err(bad(
                field,
                format!("must be a finite, non-negative number of milliseconds, got {value}"),
            ));
        }
        if value > MAX_LATENCY_MS {
            return Err(bad(field, format!("must be at most {MAX_LATENCY_MS} ms per step, got {value}")));
        }
    }
    if row.p10_ms > row.median_ms {
        return Err(bad("p10_ms", format!("must not exceed median_ms ({} > {})", row.p10_ms, row.median_ms)));
    }
    if row.median_ms > row.p90_ms {
        return Err(bad(
            "p90_ms",
            format!("must not be below median_ms ({} < {})", row.p90_ms, row.median_ms),
        ));
    }
    let repeats = u32::try_from(row.repeats)
        .ok()
        .filter(|r| *r >= 1)
        .ok_or_else(|| bad("repeats", format!("must be between 1 and {}, got {}", u32::MAX, row.repeats)))?;
    Ok((setting, LutEntry { op, median_ms: row.median_ms, p10_ms: row.p10_ms, p90_ms: row.p90_ms, repeats }))
}

/// Builds the in-memory table of `device` under `setting` from stored rows, each checked by
/// [`parse_row`] exactly as an upload is, with `calibration` applied when given. A row that fails
/// (stored before uploads were checked) is left out of the table and returned with its error,
/// for the caller to report, so one bad row can never fail a search; it stays in the store until
/// an admin deletes it.
pub fn table_from_rows<'a>(
    device: &str,
    setting: &DeploymentSetting,
    rows: impl IntoIterator<Item = RawRow<'a>>,
    calibration: Option<Calibration>,
) -> (Lut, Vec<(RawRow<'a>, RowError)>) {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for row in rows {
        match parse_row(&row) {
            Ok((_, entry)) => entries.push(entry),
            Err(e) => skipped.push((row, e)),
        }
    }
    let table = Lut::from_entries(device, *setting, entries);
    let table = match calibration {
        Some(c) => table.with_calibration(c),
        None => table,
    };
    (table, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(op_key: &str) -> RawRow<'_> {
        RawRow {
            setting_key: "batch=1,prompt=8,gen=8",
            op_key,
            median_ms: 0.1,
            p10_ms: 0.09,
            p90_ms: 0.11,
            repeats: 5,
        }
    }

    #[test]
    fn a_profiled_row_round_trips_through_its_canonical_keys() {
        let (setting, entry) = parse_row(&row(" ffn:intermediate=384, hidden=128")).unwrap();
        assert_eq!(setting.key(), "batch=1,prompt=8,gen=8,dtype=bf16");
        assert_eq!(entry.op.to_string(), "ffn:hidden=128,intermediate=384");
        let key = entry.op.to_string();
        let again = RawRow { op_key: &key, ..row("") };
        assert_eq!(parse_row(&again).unwrap().1, entry);
    }

    #[test]
    fn bad_rows_name_their_field() {
        let field = |r: RawRow<'_>| parse_row(&r).unwrap_err().field;
        assert_eq!(field(row("not-an-op")), "op_key");
        assert_eq!(field(row("ffn:hidden=128,intermediate=384\nforged log line")), "op_key");
        assert_eq!(field(row("ffn:hidden=1\u{0},intermediate=2")), "op_key");
        assert_eq!(field(row(&"f".repeat(MAX_KEY_CHARS + 1))), "op_key");
        let ok = row("ffn:hidden=128,intermediate=384");
        assert_eq!(field(RawRow { setting_key: "batch=one", ..ok }), "setting_key");
        assert_eq!(field(RawRow { setting_key: "batch=1,prompt=8,gen=8\r\n", ..ok }), "setting_key");
        assert_eq!(field(RawRow { median_ms: f64::NAN, ..ok }), "median_ms");
        assert_eq!(field(RawRow { p10_ms: -1.0, ..ok }), "p10_ms");
        assert_eq!(field(RawRow { p90_ms: f64::INFINITY, ..ok }), "p90_ms");
        assert_eq!(field(RawRow { median_ms: 1e308, p90_ms: 1e308, ..ok }), "median_ms");
        assert_eq!(field(RawRow { p10_ms: 0.2, ..ok }), "p10_ms");
        assert_eq!(field(RawRow { p90_ms: 0.05, ..ok }), "p90_ms");
        assert_eq!(field(RawRow { repeats: 0, ..ok }), "repeats");
        assert_eq!(field(RawRow { repeats: i64::MAX, ..ok }), "repeats");
    }

    #[test]
    fn a_table_from_rows_leaves_out_and_returns_the_rows_that_fail() {
        let ok = row("ffn:hidden=128,intermediate=384");
        let bad = RawRow { median_ms: f64::NAN, ..row("ffn:hidden=256,intermediate=768") };
        let setting: DeploymentSetting = ok.setting_key.parse().unwrap();
        let (table, skipped) = table_from_rows("cpu", &setting, [ok, bad], None);
        assert_eq!(table.device(), "cpu");
        assert_eq!(table.entries(), [parse_row(&ok).unwrap().1]);
        assert!(table.calibration().is_none());
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].0.op_key, bad.op_key);
        assert_eq!(skipped[0].1.field, "median_ms");
    }
}
