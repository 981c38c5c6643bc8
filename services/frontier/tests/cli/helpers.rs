//! Running the real `frontier` binary.

use std::process::{Command, Output};

use serde_json::Value;

pub fn frontier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frontier")).args(args).output().expect("frontier runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success, returning stdout.
pub fn ok(args: &[&str]) -> String {
    let o = frontier(args);
    assert!(o.status.success(), "frontier {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

/// Runs and expects one clear error line: exit 1, `error: ...`, no panic.
pub fn fails(args: &[&str]) -> String {
    let o = frontier(args);
    assert_eq!(o.status.code(), Some(1), "frontier {args:?}: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON output")
}
