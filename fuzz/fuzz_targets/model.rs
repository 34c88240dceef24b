//! The model target: watchtrie's extended semantics (every target kind, event filters,
//! keys-only, owners with caps, progress on demand) against the naive model in
//! `conformance::model`, the same runner as `conformance/tests/model.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: conformance::model::Case| {
    if let Err(divergence) = conformance::model::run(&case) {
        panic!("{divergence}");
    }
});
