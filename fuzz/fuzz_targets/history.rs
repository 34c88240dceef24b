//! The history target: watches from a revision against the model in `conformance::history`
//! (no gap, no duplicate, compacted exactly when due), the same runner as
//! `conformance/tests/history_model.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: conformance::history::Case| {
    if let Err(broken) = conformance::history::run(&case) {
        panic!("{broken}");
    }
});
