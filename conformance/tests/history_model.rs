//! Watches from a revision against the model in `conformance::history`: random interleavings
//! of events, watches from revisions, drains, feeds and history bounds; each watcher's
//! sequence checked (no gap, no duplicate, order, compacted exactly when due, complete).
//! `HISTORY_CASES=100000 cargo test --release -p conformance --test history_model` is the
//! long run (docs/BENCHMARKS.md).
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(conformance::cases_from_env("HISTORY_CASES", 2000)))]
    #[test]
    fn random_interleavings_keep_every_resume_exact(case in conformance::history::case()) {
        if let Err(broken) = conformance::history::run(&case) {
            prop_assert!(false, "{}", broken);
        }
    }
}
