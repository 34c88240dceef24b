//! watchtrie's extended semantics (every target kind, event filters, keys-only, owners with
//! caps, progress on demand) against the naive model in `conformance::model`: random
//! operation sequences, each step compared (registration results, every event read, counts).
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(conformance::cases_from_env("MODEL_CASES", 1000)))]
    #[test]
    fn random_sequences_match_the_model(case in conformance::model::case()) {
        if let Err(divergence) = conformance::model::run(&case) {
            prop_assert!(false, "{}", divergence);
        }
    }
}

#[test]
fn the_naive_pattern_definition_reads_as_documented() {
    use conformance::model::pattern_matches as m;
    let table: [(&[u8], &[u8], bool); 9] = [
        (b"/svc/*/health", b"/svc/a/health", true),
        (b"/svc/*/health", b"/svc/a/b/health", false),
        (b"/svc/*/", b"/svc/a/x/y", true),
        (b"/svc/*/", b"/svc/a", false),
        (b"/svc/*/", b"/svc/a/", true),
        (b"*", b"anything", true),
        (b"*", b"a/b", false),
        (b"/*", b"/", true),
        (b"", b"", true),
    ];
    for (pattern, key, want) in table {
        assert_eq!(m(pattern, key), want, "{pattern:?} on {key:?}");
    }
}
