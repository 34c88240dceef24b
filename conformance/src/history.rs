//! A model of history, catch-up and compaction (the oracle has none): random interleavings of
//! events, watches from revisions, drains, feeds and history bounds, run against watchtrie's
//! `InlineDispatcher` with `DispatchOptions::with_history`.
//!
//! The model keeps what every watcher must see: all dispatched events its target matches,
//! from its start revision on. It does not copy watchtrie's feeding schedule; it checks the
//! rules that make a resume exact whatever the schedule:
//! - **no gap, no duplicate, in order**: what a watcher received (before a cancel) is exactly
//!   the first `n` events it must see;
//! - **compacted at once exactly when due**: a start below the model's floor gets a
//!   Compacted cancel naming that floor, and nothing else; a start at or above it does not;
//! - **compacted later only when due**: a watcher cancelled as compacted after receiving some
//!   events was missing an event the history no longer held (its revision is below the
//!   floor named, which is at most the model's floor);
//! - **overflow says where to resume**: a live overflow names the first event not received;
//! - **complete**: at the end, once every receiver is drained and fed, every watcher not
//!   cancelled has received everything it must see.

use std::collections::VecDeque;
use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use proptest::prelude::*;
use tokio::sync::mpsc;
use watchtrie::{
    CancelReason, CompactWatcherHandle, DispatchOptions, HistoryOptions, InlineDispatcher, Target,
    WatchEvent, WatchEventType, WatchRegistry, WatchResponse, WatchSpec, WatcherHandle,
};

use crate::model::{matches, TargetSpec, KEYS};

/// One step.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Dispatch a Put on `KEYS[key]` with a value of `value_len` bytes (revisions count up).
    Event { key: u8, value_len: u8 },
    /// Watch `target` from `back` revisions below the next one (0: only what comes next).
    Register {
        target: TargetSpec,
        back: u8,
        compact: bool,
    },
    /// Read up to `max` events from a watcher.
    Read { slot: u8, max: u8 },
    /// `continue_catch_up`.
    Feed,
}

/// A case: the buffer size, the history's bounds, and the steps.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub buffer: u8,
    pub max_events: u8,
    pub max_bytes: u16,
    pub ops: Vec<Op>,
}

/// A proptest strategy for [`Case`].
pub fn case() -> impl Strategy<Value = Case> {
    let target = (any::<u8>(), any::<u8>(), any::<u8>())
        .prop_map(|(kind, a, b)| TargetSpec::new(kind, a, b));
    let op = prop_oneof![
        6 => (any::<u8>(), 0u8..8).prop_map(|(key, value_len)| Op::Event { key, value_len }),
        3 => (target, 0u8..12, any::<bool>()).prop_map(|(target, back, compact)| Op::Register { target, back, compact }),
        4 => (any::<u8>(), 0u8..4).prop_map(|(slot, max)| Op::Read { slot, max }),
        1 => Just(Op::Feed),
    ];
    (
        1u8..6,
        prop_oneof![Just(0u8), 1u8..12, Just(255)],
        prop_oneof![Just(0u16), 4u16..80, Just(u16::MAX)],
        proptest::collection::vec(op, 0..80),
    )
        .prop_map(|(buffer, max_events, max_bytes, ops)| Case {
            buffer,
            max_events,
            max_bytes,
            ops,
        })
}

enum Handle {
    DropIn(WatcherHandle),
    Compact(CompactWatcherHandle),
}

impl Handle {
    fn try_recv(&mut self) -> Option<WatchEvent> {
        match self {
            Handle::DropIn(h) => h.receiver_mut().try_recv().ok(),
            Handle::Compact(h) => h.receiver_mut().try_recv().ok(),
        }
    }
}

struct Watched {
    handle: Handle,
    target: Target,
    start: u64,
    /// The model's floor when it registered: below it, compacted at once.
    floor_then: u64,
    received: Vec<WatchEvent>,
    cancel: Option<CancelReason>,
}

/// The model's history: what a bounded history holds, and its floor.
struct ModelHistory {
    held: VecDeque<(u64, usize)>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    floor: u64,
}

impl ModelHistory {
    fn record(&mut self, revision: u64, payload: usize) {
        // Either bound 0 keeps nothing (`HistoryOptions::new`), even an event of no bytes.
        if payload > self.max_bytes || self.max_events == 0 || self.max_bytes == 0 {
            self.held.clear();
            self.bytes = 0;
            self.floor = revision + 1;
            return;
        }
        self.held.push_back((revision, payload));
        self.bytes += payload;
        while self.held.len() > self.max_events || self.bytes > self.max_bytes {
            let (revision, payload) = self.held.pop_front().expect("over bounds, not empty");
            self.bytes -= payload;
            self.floor = revision + 1;
        }
    }
}

/// Runs `case`; the first broken rule, described.
pub fn run(case: &Case) -> Result<(), String> {
    let buffer = usize::from(case.buffer.clamp(1, 8));
    let (max_events, max_bytes) = (usize::from(case.max_events), usize::from(case.max_bytes));
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(buffer, tx));
    let options =
        DispatchOptions::default().with_history(HistoryOptions::new(max_events, max_bytes));
    let mut inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
    let mut model = ModelHistory {
        held: VecDeque::new(),
        bytes: 0,
        max_events,
        max_bytes,
        floor: 1,
    };
    let mut events: Vec<WatchResponse> = Vec::new();
    let mut watched: Vec<Watched> = Vec::new();

    for op in &case.ops {
        match op {
            Op::Event { key, value_len } => {
                let revision = events.len() as u64 + 1;
                let key = Bytes::from_static(KEYS[usize::from(*key) % KEYS.len()]);
                let value = Bytes::from(vec![b'v'; usize::from(*value_len)]);
                model.record(revision, key.len() + value.len());
                let event = WatchResponse {
                    key,
                    value,
                    revision,
                    ..Default::default()
                };
                inline.dispatch(&event);
                events.push(event);
            }
            Op::Register {
                target,
                back,
                compact,
            } => {
                let target = target.target();
                let start = (events.len() as u64 + 1)
                    .saturating_sub(u64::from(*back))
                    .max(1);
                let spec = WatchSpec::new(target.clone()).from_revision(start);
                let handle = if *compact {
                    registry.watch(spec.compact()).map(Handle::Compact)
                } else {
                    registry.watch(spec).map(Handle::DropIn)
                };
                // Malformed targets are refused as without a start: not this model's concern.
                if let Ok(handle) = handle {
                    watched.push(Watched {
                        handle,
                        target,
                        start,
                        floor_then: model.floor,
                        received: Vec::new(),
                        cancel: None,
                    });
                }
            }
            Op::Read { slot, max } => {
                if !watched.is_empty() {
                    let n = watched.len();
                    let w = &mut watched[usize::from(*slot) % n];
                    for _ in 0..*max {
                        read_one(w)?;
                    }
                }
            }
            Op::Feed => {
                inline.continue_catch_up();
            }
        }
        inline.check_invariants();
        for (i, w) in watched.iter().enumerate() {
            check_prefix(i, w, &events)?;
        }
    }

    // Drain and feed until nobody is behind (each round moves every watcher forward).
    inline.process_unregistrations();
    for _ in 0..=events.len() + 2 {
        for w in &mut watched {
            while read_one(w)? {}
        }
        if !inline.continue_catch_up() {
            break;
        }
    }
    for w in &mut watched {
        while read_one(w)? {}
    }
    inline.check_invariants();
    for (i, w) in watched.iter().enumerate() {
        check_prefix(i, w, &events)?;
        let due = must_see(w, &events);
        match w.cancel {
            None if w.received.len() != due.len() => {
                return Err(format!(
                    "watcher {i} ({:?} from {}) got {:?}, must see {:?}",
                    w.target,
                    w.start,
                    revisions(&w.received),
                    due
                ))
            }
            // Its start was gone when it registered: it must have been told so, whatever
            // it matched.
            None if w.start < w.floor_then => {
                return Err(format!(
                    "watcher {i} from {} below floor {} was never cancelled as compacted",
                    w.start, w.floor_then
                ))
            }
            None => {}
            Some(CancelReason::Compacted { oldest }) => {
                if w.start < w.floor_then {
                    if !w.received.is_empty() || oldest != w.floor_then {
                        return Err(format!(
                            "watcher {i} from {} below floor {}: got {:?}, oldest {oldest}",
                            w.start,
                            w.floor_then,
                            revisions(&w.received)
                        ));
                    }
                } else {
                    // It was missing an event the history had dropped.
                    let missing = due.get(w.received.len()).copied();
                    if !missing.is_some_and(|m| m < oldest && oldest <= model.floor) {
                        return Err(format!(
                            "watcher {i} from {} (floor then {}) compacted at oldest {oldest} \
                             with {:?} received, next due {missing:?}, floor now {}",
                            w.start,
                            w.floor_then,
                            revisions(&w.received),
                            model.floor
                        ));
                    }
                }
            }
            // Live delivery can overflow a reader that does not keep up: the sentinel must
            // name the first event it did not get.
            Some(CancelReason::BufferOverflowAt { resume_from })
                if due.get(w.received.len()) == Some(&resume_from) => {}
            Some(other) => {
                return Err(format!(
                    "watcher {i}: cancel {other:?} after {:?}, must see {due:?}",
                    revisions(&w.received)
                ));
            }
        }
    }
    Ok(())
}

/// Reads one event into `w`; false when none was waiting.
fn read_one(w: &mut Watched) -> Result<bool, String> {
    let Some(event) = w.handle.try_recv() else {
        return Ok(false);
    };
    if w.cancel.is_some() {
        return Err(format!("an event after the cancel: {event:?}"));
    }
    match event.event_type {
        WatchEventType::Canceled => w.cancel = event.cancel_reason(),
        _ => w.received.push(event),
    }
    Ok(true)
}

/// The revisions `w` must see, in order.
fn must_see(w: &Watched, events: &[WatchResponse]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.revision >= w.start && matches(&w.target, &e.key))
        .map(|e| e.revision)
        .collect()
}

fn revisions(events: &[WatchEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

/// What `w` received is exactly the first events it must see, values included.
fn check_prefix(i: usize, w: &Watched, events: &[WatchResponse]) -> Result<(), String> {
    let due = must_see(w, events);
    let got = revisions(&w.received);
    if got.len() > due.len() || got[..] != due[..got.len()] {
        return Err(format!(
            "watcher {i} ({:?} from {}): got {got:?}, must see {due:?} (gap, duplicate or order)",
            w.target, w.start
        ));
    }
    for event in &w.received {
        let sent = &events[event.revision as usize - 1];
        if event.key != sent.key || event.value != sent.value {
            return Err(format!("watcher {i}: {event:?} is not what was sent"));
        }
    }
    Ok(())
}
