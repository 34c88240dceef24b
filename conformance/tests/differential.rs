//! The drop-in proof: random operation sequences give the same observations on the reference
//! (d-engine-core 0.2.4) and on watchtrie, step by step. `CONFORMANCE_CASES` raises the
//! number of cases (default 2,000).

use conformance::driver::run_case;
use conformance::ops::{case, Case, Config, Op};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

#[test]
fn random_operation_sequences_match_the_reference() {
    let cases = std::env::var("CONFORMANCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&case(), |c| {
        run_case(&c).map_err(|d| TestCaseError::fail(d.to_string()))?;
        Ok(())
    });
    if let Err(e) = result {
        panic!("divergence from the reference: {e}");
    }
}

fn config(buffer: u8, limit: Option<u8>, heartbeat: bool) -> Config {
    Config {
        buffer,
        limit,
        heartbeat,
    }
}

/// Table of hand-written sequences, one per contract rule, so that each is checked on every
/// run whatever the random cases draw.
#[test]
fn each_contract_rule_matches_the_reference() {
    use Op::*;
    let cases: Vec<(&str, Case)> = vec![
        (
            "ids and limit",
            Case {
                config: config(2, Some(2), false),
                ops: vec![
                    Register {
                        key: 5,
                        prev_kv: false,
                    },
                    RegisterPrefix {
                        prefix: 7,
                        prev_kv: true,
                    },
                    Register {
                        key: 5,
                        prev_kv: false,
                    },
                    Drop { slot: 0 },
                    Register {
                        key: 1,
                        prev_kv: true,
                    },
                ],
            },
        ),
        (
            "prefix form before limit",
            Case {
                config: config(1, Some(0), false),
                ops: vec![
                    RegisterPrefix {
                        prefix: 6,
                        prev_kv: false,
                    },
                    RegisterPrefix {
                        prefix: 0,
                        prev_kv: false,
                    },
                ],
            },
        ),
        (
            "matching and conversion",
            Case {
                config: config(3, None, false),
                ops: vec![
                    Register {
                        key: 5,
                        prev_kv: true,
                    },
                    RegisterPrefix {
                        prefix: 1,
                        prev_kv: false,
                    },
                    RegisterPrefix {
                        prefix: 0,
                        prev_kv: true,
                    },
                    Broadcast {
                        key: 5,
                        event_type: 0,
                        value: 3,
                        prev_value: true,
                        revision: 1,
                    },
                    Broadcast {
                        key: 8,
                        event_type: 5,
                        value: 4,
                        prev_value: false,
                        revision: 2,
                    },
                    Broadcast {
                        key: 2,
                        event_type: 3,
                        value: 1,
                        prev_value: true,
                        revision: 3,
                    },
                    Read { slot: 0, max: 5 },
                    Read { slot: 1, max: 5 },
                    Read { slot: 2, max: 5 },
                ],
            },
        ),
        (
            "overflow and buffer 0",
            Case {
                config: config(0, None, false),
                ops: vec![
                    Register {
                        key: 4,
                        prev_kv: true,
                    },
                    Broadcast {
                        key: 4,
                        event_type: 0,
                        value: 1,
                        prev_value: false,
                        revision: 1,
                    },
                    Broadcast {
                        key: 4,
                        event_type: 0,
                        value: 1,
                        prev_value: false,
                        revision: 2,
                    },
                    Read { slot: 0, max: 5 },
                ],
            },
        ),
        (
            "closed receiver and into_receiver",
            Case {
                config: config(1, None, false),
                ops: vec![
                    Register {
                        key: 4,
                        prev_kv: true,
                    },
                    IntoReceiver { slot: 0 },
                    Broadcast {
                        key: 4,
                        event_type: 1,
                        value: 0,
                        prev_value: false,
                        revision: 1,
                    },
                    Read { slot: 0, max: 1 },
                    Drop { slot: 0 },
                    Broadcast {
                        key: 4,
                        event_type: 1,
                        value: 0,
                        prev_value: false,
                        revision: 2,
                    },
                ],
            },
        ),
        (
            "heartbeat",
            Case {
                config: config(1, None, true),
                ops: vec![
                    Register {
                        key: 4,
                        prev_kv: true,
                    },
                    RegisterPrefix {
                        prefix: 0,
                        prev_kv: false,
                    },
                    Heartbeat { last_applied: 7 },
                    Read { slot: 0, max: 3 },
                    Heartbeat { last_applied: 8 },
                    Heartbeat { last_applied: 9 },
                    Read { slot: 1, max: 5 },
                ],
            },
        ),
        (
            "lag",
            Case {
                config: config(3, None, false),
                ops: vec![
                    RegisterPrefix {
                        prefix: 0,
                        prev_kv: false,
                    },
                    Lag { key: 6, extra: 3 },
                    Read { slot: 0, max: 40 },
                ],
            },
        ),
    ];
    for (name, case) in cases {
        if let Err(d) = run_case(&case) {
            panic!("{name}: {d}");
        }
    }
}
