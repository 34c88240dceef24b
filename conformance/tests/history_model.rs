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

/// Cases worth keeping whatever the strategy draws (the seeds in
/// `history_model.proptest-regressions` name cases of the strategy as it was then).
#[test]
fn known_cases() {
    use conformance::history::{run, Case, Op, StartAt};
    use conformance::model::TargetSpec;

    let event = |key| Op::Event {
        key,
        gap: 0,
        delete: false,
        value_len: 0,
        prev_len: 0,
    };
    let register = |(kind, a), from| Op::Register {
        target: TargetSpec::new(kind, a, 0),
        from,
        prev_kv: false,
        compact: false,
    };
    let cases = [
        // The regressions saved before the generator had drops, lags, gaps and buffer 0.
        Case {
            buffer: 1,
            max_events: 0,
            max_bytes: 0,
            ops: vec![register((0, 0), StartAt::Event(0))],
        },
        Case {
            buffer: 1,
            max_events: 0,
            max_bytes: 0,
            ops: vec![register((184, 57), StartAt::Event(0)), event(2), event(2)],
        },
        Case {
            buffer: 1,
            max_events: 1,
            max_bytes: 0,
            ops: vec![event(15), register((4, 0), StartAt::Event(1))],
        },
        // The catching-up gauge after the feed that follows an event (buffer 1: the watcher
        // from revision 1 holds it, and revision 2 waits for room). Read, then an event on
        // another key: that feed gives it revision 2 and it is live, so it leaves the
        // catching-up gauge with that feed (Metrics::catching_up: "not yet live").
        Case {
            buffer: 1,
            max_events: 255,
            max_bytes: u32::MAX,
            ops: vec![
                event(2),
                event(2),
                register((0, 2), StartAt::Event(2)),
                Op::Feed,
                Op::Read { slot: 0, max: 1 },
                event(8),
            ],
        },
        // The same, the watcher dropped while it is fed: that feed finds its receiver gone.
        Case {
            buffer: 1,
            max_events: 255,
            max_bytes: u32::MAX,
            ops: vec![
                event(2),
                event(2),
                register((0, 2), StartAt::Event(2)),
                Op::Feed,
                Op::Drop { slot: 0 },
                event(8),
            ],
        },
    ];
    for case in &cases {
        if let Err(broken) = run(case) {
            panic!("{broken}\n{case:#?}");
        }
    }
}
