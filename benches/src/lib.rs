//! Side-by-side benchmarks of watchtrie against the reference it replaces,
//! `d-engine-core` 0.2.4's `watch` module, driven through the very same events.
//!
//! - [`workload`]: deterministic, seeded key sets and event streams;
//! - [`engines`]: one [`engines::Engine`] trait over every engine (the `harness` crate,
//!   shared with the differential tests);
//! - [`measure`]: the scenarios, each run on one engine at a time, torn down completely;
//! - [`alloc`]: a switchable counting allocator for bytes-per-watcher figures;
//! - [`svg`]: the plot `watchbench --svg` writes;
//! - [`extended`]: watchtrie alone, for what the reference cannot do (target kinds, the
//!   wildcard frontier, owners, very deep keys);
//! - [`storm`]: watchtrie alone, the resume storm (watchers of a failed node resuming
//!   from a revision all at once while live events flow).
//!
//! The `watchbench` binary uses these.

pub mod alloc;
pub mod extended;
pub mod measure;
pub mod storm;
pub mod svg;
pub mod workload;

pub use harness as engines;
