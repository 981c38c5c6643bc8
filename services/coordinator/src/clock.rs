//! The wall clock, read in one place.
//!
//! Every store function that changes the state of the queue (a trial, the candidate it scores,
//! the search it belongs to) takes the current time as an argument, `now_ms`, so tests drive it
//! with a fake clock. The callers that run those functions for real (the HTTP handlers, the search
//! driver, the background loop that reclaims expired leases) pass [`clock_ms`]. The store reads it
//! itself only to stamp when a record was created or written (devices, latency entries,
//! calibrations, scaling fits, new searches, candidates added one at a time).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}
