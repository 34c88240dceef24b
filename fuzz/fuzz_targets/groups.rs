//! The groups target: shared fan-out group members against lone compact watchers of the
//! same spec (`conformance::groups`: the same reads until a member lags, lag exactly when
//! the twin overflows, an exact resume point), the same runner as
//! `conformance/tests/groups_model.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: conformance::groups::Case| {
    if let Err(broken) = conformance::groups::run(&case) {
        panic!("{broken}");
    }
});
