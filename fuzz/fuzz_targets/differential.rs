//! The differential target: a random case run on the reference (d-engine-core 0.2.4) and on
//! watchtrie; any difference in what a caller can observe is a crash.
#![no_main]

use conformance::driver::run_case;
use conformance::ops::Case;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: Case| {
    // Long cases add run time, not coverage: the state space is small by design.
    if case.ops.len() > 256 {
        return;
    }
    if let Err(divergence) = run_case(&case) {
        panic!("divergence from the reference: {divergence}\n{case:#?}");
    }
});
