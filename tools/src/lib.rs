//! Benchmarks of the coordinator, as binaries that print tables (`queue_bench`, `ui_bench`), and
//! what they share: throwaway databases ([`scratch`]).

pub mod scratch;
