//! Tests of the search space: counts against the published models, genome expansion, validation
//! messages, sampling and mutation properties, and both export formats.

mod counts;
mod formats;
mod helpers;
mod properties;
mod space;
mod validation;
