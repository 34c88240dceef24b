//! A model of history, catch-up and compaction (the oracle has none): random interleavings of
//! events, watches from revisions, drains, feeds, drops, broadcast lag and history bounds, run
//! against watchtrie's `InlineDispatcher` with `DispatchOptions::with_history`.
//!
//! The model keeps what every watcher must see: all dispatched events its target matches,
//! from its start revision on. It does not copy watchtrie's feeding schedule; it checks the
//! rules that make a resume exact whatever the schedule:
//! - **no gap, no duplicate, in order**: what a watcher received (before a cancel) is exactly
//!   the first `n` events it must see, each with the type, key, value and (with prev_kv)
//!   previous value that was sent;
//! - **compacted at once exactly when due**: a start below the model's floor when the
//!   dispatcher takes the watch from its queue gets a Compacted cancel naming that floor, and
//!   nothing else; a start at or above it does not (once an event at `u64::MAX` is gone,
//!   every start is compacted, naming `u64::MAX`);
//! - **compacted later only when due**: a watcher cancelled as compacted after receiving some
//!   events was missing an event the history no longer held (its revision is below the
//!   floor named, which is at most the model's floor);
//! - **overflow says where to resume**: an overflow names the first event not received, and
//!   a replay never overflows (but with buffer size 0, where every first event does);
//! - **lag**: a lag cancels a watcher waiting for its start with `Lagged { resume_from:
//!   start }`, and one catching up with where to resume (or as compacted); a live one stays;
//! - **a dropped watcher leaves**: whether queued, catching up, waiting or live, it no
//!   longer counts once the dropped handles are processed, and nothing of it stays waiting;
//! - **the bounds**: after each event the history holds what the model's does, counted in
//!   events and in payload bytes (key + value + previous value);
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

/// Where a watch starts, relative to the events dispatched so far.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At the revision of the `n`-th last event (0: the next revision, one above the last;
    /// further back than the first event: revision 0, which a watch reads as 1).
    Event(u8),
    /// One above the revision of the `n + 1`-th last event: inside the gap after it, if its
    /// successor jumped (revision 1 if there is no such event).
    AfterEvent(u8),
    /// `n` above the next revision (saturating): it waits for its start.
    Ahead(u64),
}

/// One step.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Dispatch an event on `KEYS[key]` at `gap` revisions past the next one (saturating: a
    /// gap of `u64::MAX` makes it the last event there can be), a Delete (no value) or a Put
    /// with a value of `value_len` bytes, with a previous value of `prev_len` bytes.
    Event {
        key: u8,
        gap: u64,
        delete: bool,
        value_len: u16,
        prev_len: u16,
    },
    /// Watch `target` from `from`.
    Register {
        target: TargetSpec,
        from: StartAt,
        prev_kv: bool,
        compact: bool,
    },
    /// Read up to `max` events from a watcher still held.
    Read { slot: u8, max: u8 },
    /// Drop a watcher's handle (queued, catching up, waiting or live: whatever it is now).
    Drop { slot: u8 },
    /// `continue_catch_up`.
    Feed,
    /// `report_lag(lost)`: the broadcast receiver lost `lost` events (the next event's
    /// revision is that much further on).
    Lag { lost: u8 },
}

/// A case: the buffer size (modulo 9: 0 to 8), the history's bounds, and the steps.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub buffer: u8,
    pub max_events: u8,
    pub max_bytes: u32,
    pub ops: Vec<Op>,
}

/// A proptest strategy for [`Case`].
pub fn case() -> impl Strategy<Value = Case> {
    let target = (any::<u8>(), any::<u8>(), any::<u8>())
        .prop_map(|(kind, a, b)| TargetSpec::new(kind, a, b));
    // Mostly consecutive revisions; some small jumps, some large ones, and now and then the
    // last revision there is (every case that reaches it ends its stream there).
    let gap = prop_oneof![
        78 => Just(0u64),
        12 => 1u64..4,
        6 => 4u64..1000,
        3 => (1u64 << 20)..(1u64 << 40),
        1 => Just(u64::MAX),
    ];
    // Mostly small payloads (many events per bound); some of ~2 KiB, so that chunks fill
    // and seal, an entry takes a chunk of its own, and the byte bound evicts.
    let value_len = prop_oneof![8 => 0u16..8, 1 => 8u16..300, 1 => 1000u16..2100];
    let prev_len = prop_oneof![6 => Just(0u16), 3 => 1u16..8, 1 => 1000u16..2100];
    let event = (
        any::<u8>(),
        gap,
        proptest::bool::weighted(0.25),
        value_len,
        prev_len,
    )
        .prop_map(|(key, gap, delete, value_len, prev_len)| Op::Event {
            key,
            gap,
            delete,
            value_len,
            prev_len,
        });
    let ahead = prop_oneof![3 => 1u64..4, 1 => 4u64..(1u64 << 40), 1 => Just(u64::MAX)];
    let from = prop_oneof![
        5 => (0u8..24).prop_map(StartAt::Event),
        2 => (0u8..12).prop_map(StartAt::AfterEvent),
        3 => ahead.prop_map(StartAt::Ahead),
    ];
    let register = (target, from, proptest::bool::weighted(0.4), any::<bool>()).prop_map(
        |(target, from, prev_kv, compact)| Op::Register {
            target,
            from,
            prev_kv,
            compact,
        },
    );
    // A lag empties the history and cancels every watcher catching up or waiting: rare, so
    // that most cases still see long catch-ups (about one case in four has one).
    let op = prop_oneof![
        72 => event,
        36 => register,
        36 => (any::<u8>(), 0u8..4).prop_map(|(slot, max)| Op::Read { slot, max }),
        12 => any::<u8>().prop_map(|slot| Op::Drop { slot }),
        12 => Just(Op::Feed),
        1 => (1u8..50).prop_map(|lost| Op::Lag { lost }),
    ];
    (
        // Small buffers most: a replay longer than the buffer is fed as the reader drains.
        prop_oneof![1 => Just(0u8), 4 => 1u8..=3, 2 => 4u8..=8],
        prop_oneof![1 => Just(0u8), 3 => 1u8..12, 3 => 12u8..100, 1 => Just(255)],
        prop_oneof![
            1 => Just(0u32),
            1 => 4u32..80,
            // About one large event: each too large, or one or two held at a time.
            2 => 80u32..6000,
            3 => 6000u32..40_000,
            2 => Just(u32::MAX),
        ],
        proptest::collection::vec(op, 0..120),
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

/// What the dispatcher found when it took a watch from its queue.
#[derive(Clone, Copy)]
struct Admitted {
    /// Its start was gone: the Compacted cancel's `oldest`.
    compacted: Option<u64>,
    /// The highest revision dispatched then: an event up to it can reach the watcher only
    /// through the history.
    highest: u64,
}

struct Watched {
    /// `None` once dropped: nothing more is expected of it.
    handle: Option<Handle>,
    target: Target,
    prev_kv: bool,
    /// The start, as the watch reads it (0 is 1).
    start: u64,
    /// `None` while it waits in the dispatcher's queue.
    admitted: Option<Admitted>,
    /// The first lag after its admission (but for one compacted at admission): the highest
    /// revision dispatched then, and whether it waited for its start then.
    lag: Option<(u64, bool)>,
    received: Vec<WatchEvent>,
    cancel: Option<CancelReason>,
}

/// The model's history: what a bounded history holds, and its floor.
struct ModelHistory {
    held: VecDeque<(u64, usize)>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// The lowest revision a watch may start from; unknown after a lag until the next event
    /// (`docs/ARCHITECTURE.md`, "History and catch-up").
    floor: Option<u64>,
    /// The highest floor known so far (floors never go down; after a lag, the next event's
    /// revision is above every earlier floor).
    floor_seen: u64,
    /// An event at `u64::MAX` is gone: no floor can be above it, and every start is
    /// compacted, naming `u64::MAX` (`History::start_of`'s documentation).
    exhausted: bool,
}

impl ModelHistory {
    fn record(&mut self, revision: u64, payload: usize) {
        // The first event after a lag sets the floor: anything before it may be lost.
        if self.floor.is_none() {
            self.floor = Some(revision);
            self.floor_seen = self.floor_seen.max(revision);
        }
        // Either bound 0 keeps nothing (`HistoryOptions::new`), even an event of no bytes;
        // an event larger than the byte bound empties the history and moves the floor past
        // itself.
        if payload > self.max_bytes || self.max_events == 0 || self.max_bytes == 0 {
            self.held.clear();
            self.bytes = 0;
            self.gone(revision);
            return;
        }
        self.held.push_back((revision, payload));
        self.bytes += payload;
        while self.held.len() > self.max_events || self.bytes > self.max_bytes {
            let (revision, payload) = self.held.pop_front().expect("over bounds, not empty");
            self.bytes -= payload;
            self.gone(revision);
        }
    }

    /// Every event up to `revision` is gone.
    fn gone(&mut self, revision: u64) {
        let floor = revision.saturating_add(1);
        self.floor = Some(self.floor.map_or(floor, |known| known.max(floor)));
        self.floor_seen = self.floor_seen.max(floor);
        self.exhausted |= revision == u64::MAX;
    }

    /// Events were lost before the dispatcher: nothing held can be resumed across them, and
    /// the floor is unknown until the next event.
    fn lost(&mut self) {
        self.held.clear();
        self.bytes = 0;
        self.floor = None;
    }

    /// The Compacted cancel's `oldest` for a watch taken from the queue now with `start`,
    /// if it is due one.
    fn compacted(&self, start: u64) -> Option<u64> {
        if self.exhausted {
            return Some(u64::MAX);
        }
        self.floor.filter(|&floor| start < floor)
    }
}

/// The revision of the `n`-th last event (0: the next one; 0 past the first event).
fn nth_last(events: &[WatchResponse], n: u8) -> u64 {
    let n = usize::from(n);
    match n {
        0 => events.last().map_or(1, |e| e.revision.saturating_add(1)),
        n if n <= events.len() => events[events.len() - n].revision,
        _ => 0,
    }
}

/// Bytes of `len` that differ from event to event (a hash of the revision starts them), so
/// that a slice of the wrong entry, or of the wrong part of one, shows.
fn payload(revision: u64, salt: u8, len: u16) -> Bytes {
    let seed = (revision.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8 ^ salt;
    (0..len)
        .map(|i| seed.wrapping_add(i as u8).wrapping_add((i >> 8) as u8))
        .collect::<Vec<u8>>()
        .into()
}

/// Runs `case`; the first broken rule, described.
pub fn run(case: &Case) -> Result<(), String> {
    let buffer = usize::from(case.buffer % 9);
    let max_events = usize::from(case.max_events);
    let max_bytes = usize::try_from(case.max_bytes).unwrap_or(usize::MAX);
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(buffer, tx));
    let metrics = registry.metrics();
    let options =
        DispatchOptions::default().with_history(HistoryOptions::new(max_events, max_bytes));
    let mut inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
    let mut model = ModelHistory {
        held: VecDeque::new(),
        bytes: 0,
        max_events,
        max_bytes,
        floor: Some(1),
        floor_seen: 1,
        exhausted: false,
    };
    let mut events: Vec<WatchResponse> = Vec::new();
    let mut watched: Vec<Watched> = Vec::new();
    // The highest revision dispatched (0 before the first event).
    let mut highest = 0u64;
    // Revisions lost to lag since the last event: the next event comes after them.
    let mut lost_since = 0u64;

    for (step, op) in case.ops.iter().enumerate() {
        let at = |what: String| format!("step {step} ({op:?}): {what}");
        match op {
            Op::Event {
                key,
                gap,
                delete,
                value_len,
                prev_len,
            } => {
                // No revision is above `u64::MAX`: the stream has ended.
                if highest == u64::MAX {
                    continue;
                }
                let revision = highest
                    .saturating_add(1)
                    .saturating_add(lost_since)
                    .saturating_add(*gap);
                lost_since = 0;
                let key = Bytes::from_static(KEYS[usize::from(*key) % KEYS.len()]);
                // A Delete carries no new value (`WatchEvent::value`: empty on Delete).
                let value = if *delete {
                    Bytes::new()
                } else {
                    payload(revision, 0, *value_len)
                };
                let prev_value = payload(revision, 101, *prev_len);
                // The dispatcher takes queued watches before it records the event.
                admit(&mut watched, &model, highest);
                model.record(revision, key.len() + value.len() + prev_value.len());
                let event = WatchResponse {
                    key,
                    value,
                    prev_value,
                    event_type: i32::from(*delete),
                    revision,
                    ..Default::default()
                };
                inline.dispatch(&event);
                events.push(event);
                highest = revision;
                let now = metrics.read();
                if (now.history_events, now.history_bytes) != (model.held.len(), model.bytes) {
                    return Err(at(format!(
                        "the history holds {} events of {} bytes, the model {:?} ({} bytes)",
                        now.history_events, now.history_bytes, model.held, model.bytes
                    )));
                }
            }
            Op::Register {
                target,
                from,
                prev_kv,
                compact,
            } => {
                let target = target.target();
                let start = match *from {
                    StartAt::Event(n) => nth_last(&events, n),
                    StartAt::AfterEvent(n) => match nth_last(&events, n.saturating_add(1)) {
                        0 => 1,
                        revision => revision.saturating_add(1),
                    },
                    StartAt::Ahead(n) => highest.saturating_add(1).saturating_add(n),
                };
                let spec = WatchSpec::new(target.clone())
                    .prev_kv(*prev_kv)
                    .from_revision(start);
                let handle = if *compact {
                    registry.watch(spec.compact()).map(Handle::Compact)
                } else {
                    registry.watch(spec).map(Handle::DropIn)
                };
                // Malformed targets are refused as without a start: not this model's concern.
                if let Ok(handle) = handle {
                    watched.push(Watched {
                        handle: Some(handle),
                        target,
                        prev_kv: *prev_kv,
                        // `WatchSpec::from_revision`: revision 0 is read as 1.
                        start: start.max(1),
                        admitted: None,
                        lag: None,
                        received: Vec::new(),
                        cancel: None,
                    });
                }
            }
            Op::Read { slot, max } => {
                if let Some(i) = held_slot(&watched, *slot) {
                    let w = &mut watched[i];
                    for _ in 0..*max {
                        read_one(w).map_err(&at)?;
                    }
                    check_prefix(i, w, &events).map_err(&at)?;
                }
            }
            Op::Drop { slot } => {
                if let Some(i) = held_slot(&watched, *slot) {
                    watched[i].handle = None;
                }
            }
            Op::Feed => {
                admit(&mut watched, &model, highest);
                inline.continue_catch_up();
            }
            Op::Lag { lost } => {
                // Nothing can follow an event at `u64::MAX`, so nothing can be lost after it.
                if highest == u64::MAX {
                    continue;
                }
                inline.report_lag(u64::from(*lost));
                for w in &mut watched {
                    let taken = w.admitted.is_some_and(|a| a.compacted.is_none());
                    if w.handle.is_some() && taken && w.lag.is_none() {
                        w.lag = Some((highest, w.start > highest.saturating_add(1)));
                    }
                }
                model.lost();
                lost_since += u64::from(*lost);
            }
        }
        inline.check_invariants();
    }

    // Drain and feed until nobody is behind (each round moves every watcher forward).
    admit(&mut watched, &model, highest);
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
        if w.handle.is_some() {
            check_prefix(i, w, &events)?;
            check_end(i, w, &events, &model, buffer)?;
        }
    }

    // Dropped watchers and cancelled ones no longer count, wherever they were; the others
    // do, queued ones included (a registration takes its unit of the limit).
    let counted = watched
        .iter()
        .filter(|w| w.handle.is_some() && w.cancel.is_none())
        .count();
    // Of those, the ones taken from the queue whose start is still ahead wait.
    let waiting = watched
        .iter()
        .filter(|w| w.handle.is_some() && w.cancel.is_none())
        .filter(|w| w.admitted.is_some() && w.start > highest.saturating_add(1))
        .count();
    let now = metrics.read();
    if registry.active_watcher_count() != counted || now.catching_up != waiting {
        return Err(format!(
            "at the end: {} active watchers and {} catching up, the model {counted} and \
             {waiting} (dropped: {:?})",
            registry.active_watcher_count(),
            now.catching_up,
            watched
                .iter()
                .enumerate()
                .filter(|(_, w)| w.handle.is_none())
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// The dispatcher's turn: it takes every queued watch (fewer than a slice here), unless the
/// floor is unknown since a lag.
fn admit(watched: &mut [Watched], model: &ModelHistory, highest: u64) {
    if model.floor.is_none() {
        return;
    }
    for w in watched.iter_mut().filter(|w| w.admitted.is_none()) {
        w.admitted = Some(Admitted {
            compacted: model.compacted(w.start),
            highest,
        });
    }
}

/// The index of the `slot`-th watcher whose handle is still held, if any is.
fn held_slot(watched: &[Watched], slot: u8) -> Option<usize> {
    let held: Vec<usize> = (0..watched.len())
        .filter(|&i| watched[i].handle.is_some())
        .collect();
    (!held.is_empty()).then(|| held[usize::from(slot) % held.len()])
}

/// Reads one event into `w`; false when none was waiting (or its handle is gone).
fn read_one(w: &mut Watched) -> Result<bool, String> {
    let Some(event) = w.handle.as_mut().and_then(Handle::try_recv) else {
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

/// What `w` received is exactly the first events it must see, each as it was sent.
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
        let sent = events
            .binary_search_by_key(&event.revision, |e| e.revision)
            .map(|at| &events[at])
            .expect("a revision it must see was sent");
        let event_type = match sent.event_type {
            1 => WatchEventType::Delete,
            _ => WatchEventType::Put,
        };
        // `WatchEvent::prev_value`: `Some` exactly for prev_kv watchers, replayed or live.
        let prev_value = w.prev_kv.then(|| sent.prev_value.clone());
        if event.event_type != event_type
            || event.key != sent.key
            || event.value != sent.value
            || event.prev_value != prev_value
        {
            return Err(format!(
                "watcher {i} (prev_kv {}): {event:?} is not what was sent: {sent:?}",
                w.prev_kv
            ));
        }
    }
    Ok(())
}

/// Once drained and fed: how `w` ended is what the rules allow.
fn check_end(
    i: usize,
    w: &Watched,
    events: &[WatchResponse],
    model: &ModelHistory,
    buffer: usize,
) -> Result<(), String> {
    let due = must_see(w, events);
    let next_due = due.get(w.received.len()).copied();
    let what = || {
        format!(
            "watcher {i} ({:?} from {}, buffer {buffer}, lag {:?}): got {:?}, cancel {:?}, \
             must see {due:?}",
            w.target,
            w.start,
            w.lag,
            revisions(&w.received),
            w.cancel
        )
    };
    // A buffer of 0 holds no event: the first one overflows it, replayed or live.
    if buffer == 0 && !w.received.is_empty() {
        return Err(format!("{}: a buffer of 0 held an event", what()));
    }
    let Some(admitted) = w.admitted else {
        // Still queued (a lag, and no event since): the dispatcher has not taken it.
        return match (w.received.is_empty(), w.cancel) {
            (true, None) => Ok(()),
            _ => Err(format!("{}: never taken from the queue", what())),
        };
    };
    if let Some(oldest) = admitted.compacted {
        // Its start was gone when the dispatcher took it: told so at once, whatever it
        // matched, and nothing else.
        return match w.cancel {
            Some(CancelReason::Compacted { oldest: named })
                if named == oldest && w.received.is_empty() =>
            {
                Ok(())
            }
            _ => Err(format!("{}: due Compacted {{ oldest: {oldest} }}", what())),
        };
    }
    if let Some((_, true)) = w.lag {
        // Waiting for a start above the head when events were lost: they may have been at
        // or above it, so it resumes from its own start.
        return match w.cancel {
            Some(CancelReason::Lagged { resume_from })
                if resume_from == w.start && w.received.is_empty() =>
            {
                Ok(())
            }
            _ => Err(format!(
                "{}: due Lagged {{ resume_from: {} }}",
                what(),
                w.start
            )),
        };
    }
    match w.cancel {
        None if next_due.is_some() => Err(format!("{}: incomplete", what())),
        None => Ok(()),
        // It was missing an event the history had dropped (while catching up, which a lag
        // ends: then the event was dispatched before the lag).
        Some(CancelReason::Compacted { oldest })
            if next_due.is_some_and(|m| {
                m < oldest && oldest <= model.floor_seen && w.lag.is_none_or(|(h, _)| m <= h)
            }) =>
        {
            Ok(())
        }
        // A live delivery that did not fit names the first event not received. A replay
        // never overflows (it waits for the receiver), but into a buffer of 0; and an event
        // dispatched before the watcher was taken reaches it only as a replay.
        Some(CancelReason::BufferOverflowAt { resume_from })
            if next_due == Some(resume_from) && (buffer == 0 || resume_from > admitted.highest) =>
        {
            Ok(())
        }
        // Lag while it was catching up: from the event under its cursor, or past the head
        // if it had every event recorded.
        Some(CancelReason::Lagged { resume_from }) => match w.lag {
            Some((h, false))
                if resume_from == next_due.filter(|&m| m <= h).unwrap_or(h.saturating_add(1)) =>
            {
                Ok(())
            }
            _ => Err(format!("{}: a Lagged cancel not due", what())),
        },
        Some(_) => Err(format!("{}: a cancel not due", what())),
    }
}
