//! Shared fan-out groups against lone compact watchers (`conformance::groups`): random
//! sequences of registrations (with event filters), events, lockstep reads, drops, Progress,
//! sweeps and lost broadcast events; a member reads what its twin reads until it lags, lags
//! exactly when its twin overflows, and its cancel says where to resume. `GROUPS_CASES` raises the number of cases (default 1,000).
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(conformance::cases_from_env("GROUPS_CASES", 1000)))]
    #[test]
    fn a_member_reads_what_its_lone_twin_reads_until_it_lags(case in conformance::groups::case()) {
        if let Err(divergence) = conformance::groups::run(&case) {
            prop_assert!(false, "{}", divergence);
        }
    }
}
