//! Benchmarks of the coordinator, as binaries that print tables (`queue_bench`, `ui_bench`,
//! `search_bench`), and what they share: throwaway databases ([`scratch`]) and the
//! search-efficiency harness over tabular benchmarks ([`search_bench`]).

pub mod scratch;
pub mod search_bench;
