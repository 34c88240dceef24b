//! d-engine-core 0.2.4's own unit tests of its watch module, run against watchtrie with only
//! their `use` lines changed: the drop-in claim, checked by the reference's authors' tests.
//! The source is read from cargo's copy of the crate at build time (`build.rs`), never kept
//! here; a new deviation from the reference's defaults fails one of them.
#![allow(clippy::all, unused_imports, dead_code)]

include!(concat!(env!("OUT_DIR"), "/reference_manager_test.rs"));
