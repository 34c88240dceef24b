//! Shared fan-out groups against lone compact watchers (the reference has no groups): each
//! step registers a pair (a compact watcher and a grouped member of the same spec: target,
//! prev_kv, keys-only, event filter), sends an event, reads pairs in lockstep, drops a pair,
//! asks for Progress (for everyone, or for one pair), sweeps, or reports lost broadcast
//! events (under either lag policy). The rule checked, read by read: a member receives
//! exactly what its lone twin receives until it lags; it lags exactly when its twin
//! overflows (the same threshold), and its cancel says where to resume: one past the last
//! event it read, and at most the first Put or Delete it missed, so a resume from there
//! misses no change and repeats none. A lag cancel (`LagPolicy::CancelWatchers`) reaches
//! both at the same point of their streams, with the same resume point.
//!
//! A Progress asked for one pair takes a slot of the twin's queue and none of the ring's,
//! so from then on the twin may overflow where the member goes on (with a buffer's worth
//! of requests waiting, the member queues no more): once it
//! does, the pair is compared no more, and the member's stream is only checked to stay in
//! order.

use std::sync::Arc;

use arbitrary::Arbitrary;
use proptest::prelude::*;
use tokio::sync::mpsc;
use watchtrie::{
    CancelReason, CompactWatcherHandle, DispatchOptions, GroupedWatcherHandle, InlineDispatcher,
    LagPolicy, TryRecvError, WatchEvent, WatchEventType, WatchRegistry, WatchResponse, WatchSpec,
};

use crate::model::{filter_of, TargetSpec, KEYS};

/// One step of a case.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A compact watcher and a grouped member of one spec.
    Register {
        target: TargetSpec,
        prev_kv: bool,
        keys_only: bool,
        /// The event filter's bits: 1 no Put, 2 no Delete, 4 no Progress.
        filter: u8,
    },
    /// Dispatch one event on `KEYS[key]`.
    Event { key: u8, delete: bool },
    /// Read up to `max` times from both sides of a pair.
    Read { pair: u8, max: u8 },
    /// Drop both sides of a pair.
    Drop { pair: u8 },
    /// A Progress to every watcher.
    Progress,
    /// A Progress to both sides of one pair.
    ProgressFor { pair: u8 },
    /// The closed-receiver sweep (it releases lagged members).
    Sweep,
    /// The broadcast lost `lost` events (at least one).
    Lag { lost: u8 },
}

/// A case: the buffer size (1 to 4), whether a lag cancels every watcher
/// (`LagPolicy::CancelWatchers`) or is only logged, and the steps.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub buffer: u8,
    pub cancel_on_lag: bool,
    pub ops: Vec<Op>,
}

/// A proptest strategy for [`Case`].
pub fn case() -> impl Strategy<Value = Case> {
    let target = (0u8..6, any::<u8>(), any::<u8>()).prop_map(|(k, a, b)| TargetSpec::new(k, a, b));
    let op = prop_oneof![
        3 => (target, any::<bool>(), any::<bool>(), prop_oneof![3 => Just(0u8), 1 => 1u8..8])
            .prop_map(|(target, prev_kv, keys_only, filter)| Op::Register {
                target,
                prev_kv,
                keys_only,
                filter,
            }),
        6 => (any::<u8>(), any::<bool>()).prop_map(|(key, delete)| Op::Event { key, delete }),
        4 => (any::<u8>(), 0u8..6).prop_map(|(pair, max)| Op::Read { pair, max }),
        1 => any::<u8>().prop_map(|pair| Op::Drop { pair }),
        1 => Just(Op::Progress),
        1 => any::<u8>().prop_map(|pair| Op::ProgressFor { pair }),
        1 => Just(Op::Sweep),
        1 => (1u8..4).prop_map(|lost| Op::Lag { lost }),
    ];
    (1u8..=4, any::<bool>(), proptest::collection::vec(op, 0..80)).prop_map(
        |(buffer, cancel_on_lag, ops)| Case {
            buffer,
            cancel_on_lag,
            ops,
        },
    )
}

/// A pair and what its member has read.
struct Pair {
    lone: CompactWatcherHandle,
    member: GroupedWatcherHandle,
    /// The revision of the last Put, Delete or Progress the member read.
    member_last: Option<u64>,
    /// The member got its cancel: the lone twin must overflow too.
    member_ended: bool,
    /// Events the lone twin read after the member's cancel: the first one's revision bounds
    /// the member's resume.
    first_missed: Option<u64>,
    resume_from: Option<u64>,
    /// The lone twin got its overflow sentinel.
    lone_overflowed: bool,
    /// A Progress was asked for this pair (see the module docs).
    asked_progress: bool,
    /// The twin overflowed where the member did not, after `asked_progress`: the member's
    /// reads are only checked to be in order from then on.
    diverged: bool,
    /// A lag cancelled every watcher (`LagPolicy::CancelWatchers`): both are out of the
    /// index, their cancels still to be read, resuming one past the last event dispatched
    /// before that lag (the first lag after the pair registered).
    lag_cancel_sent: Option<u64>,
    /// Both read the same lag cancel: nothing more comes to either.
    lag_cancelled: bool,
}

fn is_cancel(event: &WatchEvent) -> bool {
    event.event_type == WatchEventType::Canceled
}

/// A Put or a Delete: what a resume replays.
fn is_change(event: &WatchEvent) -> bool {
    matches!(
        event.event_type,
        WatchEventType::Put | WatchEventType::Delete
    )
}

/// Runs `case`; the first divergence from the rule, described.
pub fn run(case: &Case) -> Result<(), String> {
    let buffer = usize::from(case.buffer.clamp(1, 4));
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(buffer, tx));
    let policy = if case.cancel_on_lag {
        LagPolicy::CancelWatchers
    } else {
        LagPolicy::Warn
    };
    let mut dispatcher = InlineDispatcher::new(registry.clone(), rx)
        .with_options(DispatchOptions::default().with_lag_policy(policy));
    let mut pairs: Vec<Pair> = Vec::new();
    let mut revision = 0u64;
    // The revision of the last event dispatched (`revision` counts lost ones too).
    let mut dispatched = 0u64;
    for (step, op) in case.ops.iter().enumerate() {
        let at = |what: String| format!("step {step} ({op:?}): {what}");
        match op {
            Op::Register {
                target,
                prev_kv,
                keys_only,
                filter,
            } => {
                let spec = WatchSpec::new(target.target())
                    .prev_kv(*prev_kv)
                    .keys_only(*keys_only)
                    .filter(filter_of(*filter));
                match (
                    registry.watch(spec.clone().compact()),
                    registry.watch(spec.grouped()),
                ) {
                    (Ok(lone), Ok(member)) => pairs.push(Pair {
                        lone,
                        member,
                        member_last: None,
                        member_ended: false,
                        first_missed: None,
                        resume_from: None,
                        lone_overflowed: false,
                        asked_progress: false,
                        diverged: false,
                        lag_cancel_sent: None,
                        lag_cancelled: false,
                    }),
                    (Err(a), Err(b)) if a == b => {}
                    (a, b) => {
                        return Err(at(format!(
                            "registrations disagree: lone {:?}, member {:?}",
                            a.err(),
                            b.err()
                        )))
                    }
                }
            }
            Op::Event { key, delete } => {
                revision += 1;
                dispatched = revision;
                let key = KEYS[usize::from(*key) % KEYS.len()];
                dispatcher.dispatch(&WatchResponse {
                    key: bytes::Bytes::from_static(key),
                    value: if *delete {
                        bytes::Bytes::new()
                    } else {
                        bytes::Bytes::from(revision.to_string())
                    },
                    prev_value: bytes::Bytes::from_static(b"prev"),
                    revision,
                    event_type: i32::from(*delete),
                    ..Default::default()
                });
            }
            Op::Read { pair, max } => {
                if pairs.is_empty() {
                    continue;
                }
                let i = usize::from(*pair) % pairs.len();
                for _ in 0..*max {
                    read_both(&mut pairs[i]).map_err(at)?;
                }
            }
            Op::Drop { pair } => {
                if !pairs.is_empty() {
                    let i = usize::from(*pair) % pairs.len();
                    let dropped = pairs.swap_remove(i);
                    check_end(&dropped).map_err(at)?;
                }
            }
            Op::Progress => {
                dispatcher.broadcast_progress(revision);
            }
            Op::ProgressFor { pair } => {
                if !pairs.is_empty() {
                    let i = usize::from(*pair) % pairs.len();
                    let pair = &mut pairs[i];
                    pair.asked_progress = true;
                    dispatcher.request_progress(pair.lone.progress_request());
                    let found = dispatcher.request_progress(pair.member.progress_request());
                    let gone = pair.member_ended || pair.lag_cancel_sent.is_some();
                    if found == gone {
                        return Err(at(format!(
                            "a member that {} was {}found for its Progress",
                            if gone { "ended" } else { "reads on" },
                            if found { "" } else { "not " }
                        )));
                    }
                }
            }
            Op::Sweep => {
                dispatcher.sweep_closed_receivers(usize::MAX);
            }
            Op::Lag { lost } => {
                // The lost events had revisions too: the next one sent is past them.
                let lost = u64::from((*lost).max(1));
                dispatcher.report_lag(lost);
                revision += lost;
                if case.cancel_on_lag {
                    for pair in &mut pairs {
                        pair.lag_cancel_sent.get_or_insert(dispatched + 1);
                    }
                }
            }
        }
        dispatcher.process_unregistrations();
        registry.check_invariants();
    }
    // Read everything that is left: the rule holds to the end of every stream.
    for pair in &mut pairs {
        for _ in 0..2 * buffer + 4 {
            read_both(pair)?;
        }
        check_end(pair)?;
        // Both queues are drained now: a member that lagged has a twin that overflowed.
        if pair.member_ended && !pair.lone_overflowed && !pair.diverged {
            return Err("the member lagged, its twin never overflowed".into());
        }
        // And a lag that cancelled the pair reached it.
        if pair.lag_cancel_sent.is_some() && !(pair.lag_cancelled || pair.member_ended) {
            return Err("a lag cancelled the pair, and neither read its cancel".into());
        }
    }
    Ok(())
}

/// One read from each side of `pair`, compared.
fn read_both(pair: &mut Pair) -> Result<(), String> {
    if pair.diverged {
        return read_member_in_order(pair);
    }
    if pair.lag_cancelled {
        return match (
            pair.lone.receiver_mut().try_recv(),
            pair.member.receiver_mut().try_recv(),
        ) {
            (Err(TryRecvError::Disconnected), Err(TryRecvError::Disconnected)) => Ok(()),
            (a, b) => Err(format!("after the lag cancel: lone {a:?}, member {b:?}")),
        };
    }
    let lone = pair.lone.receiver_mut().try_recv();
    if pair.member_ended {
        // Only the lone twin goes on: it has its queue to read, then its sentinel.
        if let Ok(event) = &lone {
            if is_cancel(event) {
                // Only an overflow: a lag cancel here would be a twin that never overflowed.
                pair.lone_overflowed |= matches!(
                    event.cancel_reason(),
                    Some(CancelReason::BufferOverflow | CancelReason::BufferOverflowAt { .. })
                );
            } else if pair.first_missed.is_none() && is_change(event) {
                pair.first_missed = Some(event.revision);
                let resume = pair.resume_from.unwrap_or(0);
                if resume > event.revision {
                    return Err(format!(
                        "the member resumes from {resume}, past {} which it never got",
                        event.revision
                    ));
                }
            }
        }
        return match pair.member.receiver_mut().try_recv() {
            Err(TryRecvError::Disconnected) => Ok(()),
            other => Err(format!("a member read {other:?} after its cancel")),
        };
    }
    let member = pair.member.receiver_mut().try_recv();
    match (&lone, &member) {
        (Ok(a), Ok(b)) if !is_cancel(b) => {
            if is_cancel(a) && pair.asked_progress {
                pair.diverged = true;
                pair.lone_overflowed = true;
                return check_order(pair, b);
            }
            if a != b {
                return Err(format!("lone read {a:?}, member read {b:?}"));
            }
            if is_cancel(a) {
                return Err(format!("lone overflowed, member read on: {b:?}"));
            }
            if !is_cancel(b) {
                pair.member_last = Some(b.revision);
            }
            Ok(())
        }
        (Ok(a), Ok(cancel))
            if matches!(cancel.cancel_reason(), Some(CancelReason::Lagged { .. })) =>
        {
            // The twin's requested Progress overflowed it first: the member reads on to its
            // lag cancel.
            if is_cancel(a) && a != cancel && pair.asked_progress {
                check_lag_cancel(pair, cancel)?;
                pair.diverged = true;
                pair.lone_overflowed = true;
                pair.member_ended = true;
                return Ok(());
            }
            // Lost broadcast events cancel both at the same point, saying the same.
            if a != cancel {
                return Err(format!(
                    "lone read {a:?}, member read the lag cancel {cancel:?}"
                ));
            }
            check_lag_cancel(pair, cancel)?;
            pair.lag_cancelled = true;
            Ok(())
        }
        (Ok(a), Ok(cancel)) => {
            // The member lagged: its twin must have overflowed at the same event, and is
            // still reading what its queue kept.
            let Some(CancelReason::BufferOverflowAt { resume_from }) = cancel.cancel_reason()
            else {
                return Err(format!(
                    "a member's cancel without a resume point: {cancel:?}"
                ));
            };
            if pair.member_last.is_some_and(|last| resume_from != last + 1) {
                return Err(format!(
                    "resume from {resume_from}, not one past the last read {:?}",
                    pair.member_last
                ));
            }
            pair.member_ended = true;
            pair.resume_from = Some(resume_from);
            if is_cancel(a) && pair.asked_progress {
                // The twin's Progress took the slot that made it overflow first.
                pair.lone_overflowed = true;
                return Ok(());
            }
            if is_cancel(a) {
                return Err(format!(
                    "the twin read its sentinel {a:?} where the member still had events to miss"
                ));
            }
            // A Progress carries no change to replay: the bound is the first Put or Delete.
            if is_change(a) {
                pair.first_missed = Some(a.revision);
                if resume_from > a.revision {
                    return Err(format!(
                        "the member resumes from {resume_from}, past {} which it never got",
                        a.revision
                    ));
                }
            }
            Ok(())
        }
        (Err(TryRecvError::Empty), Err(TryRecvError::Empty)) => Ok(()),
        // Asked for Progress more often than it read: the twin's requests overflowed it,
        // while the member kept at most a buffer's worth, and has nothing more to read yet.
        (Ok(a), Err(TryRecvError::Empty)) if is_cancel(a) && pair.asked_progress => {
            pair.diverged = true;
            pair.lone_overflowed = true;
            Ok(())
        }
        (a, b) => Err(format!("lone {a:?}, member {b:?}")),
    }
}

/// A diverged pair's member: its reads stay in order (never below a revision it read), and
/// it may still lag once, saying where to resume.
fn read_member_in_order(pair: &mut Pair) -> Result<(), String> {
    match pair.member.receiver_mut().try_recv() {
        Ok(event) => check_order(pair, &event),
        Err(TryRecvError::Empty) => Ok(()),
        Err(TryRecvError::Disconnected) => {
            pair.member_ended = true;
            Ok(())
        }
    }
}

/// One read of a diverged pair's member, checked against the last it read.
fn check_order(pair: &mut Pair, event: &WatchEvent) -> Result<(), String> {
    if pair.member_ended {
        return Err(format!("a member read {event:?} after its cancel"));
    }
    if let Some(CancelReason::BufferOverflowAt { resume_from }) = event.cancel_reason() {
        if pair.member_last.is_some_and(|last| resume_from != last + 1) {
            return Err(format!(
                "resume from {resume_from}, not one past the last read {:?}",
                pair.member_last
            ));
        }
        pair.member_ended = true;
        return Ok(());
    }
    if let Some(CancelReason::Lagged { .. }) = event.cancel_reason() {
        // Lost broadcast events: its twin, already gone, had nothing to compare with.
        check_lag_cancel(pair, event)?;
        pair.member_ended = true;
        return Ok(());
    }
    if pair.member_last.is_some_and(|last| event.revision < last) {
        return Err(format!(
            "{event:?} after revision {:?}: out of order",
            pair.member_last
        ));
    }
    pair.member_last = Some(event.revision);
    Ok(())
}

/// A lag cancel read by `pair`: one came, and it resumes where the lag left off.
fn check_lag_cancel(pair: &Pair, cancel: &WatchEvent) -> Result<(), String> {
    match pair.lag_cancel_sent {
        Some(resume_from)
            if cancel.cancel_reason() == Some(CancelReason::Lagged { resume_from }) =>
        {
            Ok(())
        }
        expected => Err(format!(
            "read {cancel:?}, a lag cancel resuming from {expected:?} due"
        )),
    }
}

/// At a pair's end, drained or not: a twin that overflowed has a member that lagged. (The
/// other direction, "member lagged implies twin overflowed", needs the twin's queue read to
/// its end: the final drain checks it.)
fn check_end(pair: &Pair) -> Result<(), String> {
    if pair.lone_overflowed && !pair.member_ended && !pair.diverged {
        return Err("the twin overflowed, the member never lagged".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_falls_behind_lags_with_its_twin() {
        let target = TargetSpec::new(0, 4, 0); // exact /a/b
        let mut ops = vec![Op::Register {
            target,
            prev_kv: false,
            keys_only: false,
            filter: 0,
        }];
        ops.extend((0..4).map(|_| Op::Event {
            key: 4,
            delete: false,
        }));
        ops.push(Op::Read { pair: 0, max: 6 });
        run(&Case {
            buffer: 2,
            cancel_on_lag: false,
            ops,
        })
        .unwrap();
    }

    #[test]
    fn a_lag_cancel_reaches_a_member_and_its_twin_at_the_same_point() {
        let ops = vec![
            Op::Register {
                target: TargetSpec::new(0, 4, 0),
                prev_kv: true,
                keys_only: false,
                filter: 0,
            },
            Op::Event {
                key: 4,
                delete: false,
            },
            Op::Lag { lost: 2 },
            Op::Event {
                key: 4,
                delete: true,
            },
            Op::Read { pair: 0, max: 4 },
        ];
        run(&Case {
            buffer: 4,
            cancel_on_lag: true,
            ops,
        })
        .unwrap();
    }
}
