//! Differential testing: the same operations applied to the reference (`d-engine-core` 0.2.4's
//! `watch` module, the oracle) and to watchtrie, compared after every step.
//!
//! - [`ops`]: the operation language, shared by the proptest suite and the fuzz target
//!   (`arbitrary::Arbitrary` for one, a proptest strategy for the other);
//! - [`engines`]: the engines behind one trait, through their public APIs only (the
//!   `harness` crate, shared with the benchmarks);
//! - [`driver`]: runs a [`ops::Case`] on both, deterministically, and reports the first
//!   divergence;
//! - [`model`]: for what the reference does not have (every target kind, filters, keys-only,
//!   owners, progress on demand), a naive model of the semantics, run against watchtrie the
//!   same way;
//! - [`history`]: a model of history, catch-up and compaction (watches from a revision);
//! - [`groups`]: shared fan-out groups against lone compact watchers of the same spec.

pub mod driver;
pub mod groups;
pub mod history;
pub mod model;
pub mod ops;

pub use harness as engines;

/// How many proptest cases a suite runs: the environment variable `var` if it holds a
/// number (CI and longer local runs set it), else `default`.
pub fn cases_from_env(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}
