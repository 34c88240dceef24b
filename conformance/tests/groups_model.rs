//! Shared fan-out groups against lone compact watchers (`conformance::groups`): random
//! sequences of registrations, events, lockstep reads, drops, Progress and sweeps; a member
//! reads what its twin reads until it lags, lags exactly when its twin overflows, and its
//! cancel says where to resume. `GROUPS_CASES` raises the number of cases (default 1,000).
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("GROUPS_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn a_member_reads_what_its_lone_twin_reads_until_it_lags(case in conformance::groups::case()) {
        if let Err(divergence) = conformance::groups::run(&case) {
            prop_assert!(false, "{}", divergence);
        }
    }
}
