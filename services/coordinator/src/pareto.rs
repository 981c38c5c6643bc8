//! The perplexity × latency Pareto front of a search's scored feasible candidates.

use crate::store::PlotPoint;
use crate::store::{CandidateRow, CandidateStatus};

/// Something with an id that may have been scored.
pub trait Scored {
    fn id(&self) -> i64;
    /// (perplexity, estimated latency) when it has a result and meets the search's constraints
    /// (latency budget, accuracy floors); a missing latency counts as 0.
    fn score(&self) -> Option<(f64, f64)>;
}

impl Scored for CandidateRow {
    fn id(&self) -> i64 {
        self.id
    }

    fn score(&self) -> Option<(f64, f64)> {
        (self.status == CandidateStatus::Done && self.feasible).then_some(())?;
        Some((self.ppl?, self.est_latency_ms.unwrap_or(0.0)))
    }
}

impl Scored for PlotPoint {
    fn id(&self) -> i64 {
        self.id
    }

    fn score(&self) -> Option<(f64, f64)> {
        (self.status == CandidateStatus::Done && self.feasible).then_some(())?;
        Some((self.ppl?, self.est_latency_ms.unwrap_or(0.0)))
    }
}

/// Scored candidates that no other scored candidate beats on both perplexity and estimated
/// latency (lower is better for both), ordered by latency. Candidates without a latency estimate
/// are ranked by perplexity alone: the front is then the single best one.
pub fn front<T: Scored>(candidates: &[T]) -> Vec<&T> {
    let mut scored: Vec<(&T, f64, f64)> =
        candidates.iter().filter_map(|c| c.score().map(|(ppl, latency)| (c, ppl, latency))).collect();
    // Sweep by latency (ties by perplexity): a point is on the front when its perplexity is
    // strictly below every faster point's.
    scored.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.1.total_cmp(&b.1)).then(a.0.id().cmp(&b.0.id())));
    let mut best_ppl = f64::INFINITY;
    let mut out = Vec::new();
    for (c, ppl, _) in scored {
        if ppl < best_ppl {
            best_ppl = ppl;
            out.push(c);
        }
    }
    out
}
