//! The perplexity × latency Pareto front of a search's scored candidates.

use crate::store::{CandidateRow, CandidateStatus};

/// Scored candidates that no other scored candidate beats on both perplexity and estimated
/// latency (lower is better for both), ordered by latency. Candidates without a latency estimate
/// are ranked by perplexity alone: the front is then the single best one.
pub fn front(candidates: &[CandidateRow]) -> Vec<&CandidateRow> {
    let mut scored: Vec<(&CandidateRow, f64, f64)> = candidates
        .iter()
        .filter(|c| c.status == CandidateStatus::Done)
        .filter_map(|c| Some((c, c.ppl?, c.est_latency_ms.unwrap_or(0.0))))
        .collect();
    // Sweep by latency (ties by perplexity): a point is on the front when its perplexity is
    // strictly below every faster point's.
    scored.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.1.total_cmp(&b.1)).then(a.0.id.cmp(&b.0.id)));
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
