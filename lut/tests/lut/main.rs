//! The estimator against hand-computed latencies: sums over layers and steps, attention
//! integrated over context and capped by its window, interpolation over width, and missing
//! entries reported by name.

mod estimate;
