//! Catch-up: how a watcher registered from a revision gets every matching event from that
//! revision on, exactly once and in order, while live events keep being dispatched.
//!
//! ```text
//!  registration ──► Resumes queue ──► dispatcher, at its next turn (admit, ≤ 256 a slice):
//!                                       start = history.start_of(revision)
//!                                       add every taken watcher to the index (one publish)
//!                                       compacted ─► Compacted sentinel, retired
//!                                       behind    ─► feeding: cursor at `start`
//!                                       at head   ─► waiting (live, events below start skipped)
//!  every event: record it in the history first, then deliver it live to every watcher
//!               but the feeding ones (they will find it in the history)
//!  between events (feed): push each feeding watcher's next matching entries while its
//!               buffer has room; at the head it joins live delivery (waiting or live)
//! ```
//!
//! Why the seam is exact: the dispatcher alone records events, delivers them live and feeds
//! history, so these never overlap; a feeding watcher is skipped by live delivery of every
//! event, each of which is recorded before it is delivered; it leaves feeding only between
//! two events, when it has been fed every entry recorded so far, and it is already in the
//! index then (the dispatcher published it at admission), so the next event reaches it live.
//! A watcher is added to the index by the dispatcher, not by its registration, so that no
//! event can reach it before its cursor is set. With a history, a storm of registrations is
//! taken 256 a slice, between live events, and while events keep coming a slice follows
//! the last one only after a pause as long as it took (half the dispatcher's time at most
//! goes to admitting): one taken later than the events after its registration finds them
//! in the history like any others (or is told it is compacted).
//! Without a history, every one is taken before the next event, since nothing could replay
//! what it missed. A handle dropped meanwhile reaches the dispatcher through the
//! unregistration channel; before an unregistration is applied, every queued registration
//! is taken, so the removal finds its watcher added (after a lag none can be taken until
//! the next event: the removal then takes it out of the queue, `publish`).
//!
//! A feeding watcher's cursor always rests on an entry it must still receive (entries that
//! do not match it are stepped over at once), so the history dropping the entry under the
//! cursor is exactly "an event it has not received yet was dropped": it is then cancelled as
//! compacted. Live dispatch never waits for a feeding watcher.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::delivery::{removal_of, Retirements, Tally};
use super::sweep::SWEEP_SLICE;
use crate::event::{WatchEvent, WatchEventType};
use crate::history::{Hint, History, Retained, Start};
use crate::index::{Location, Placement, Snapshot, WatcherEntry};
use crate::meta::TargetKind;
use crate::metrics::Counters;
use crate::publish::{Change, Resume};
use crate::registry::WatchRegistry;
use crate::sink::{Delivery, EventView, Watcher};
use crate::spec::Target;

/// Watchers visited between two looks at the clock in a timed feed.
const FEED_STEP: usize = 64;

/// How much one call to [`CatchUps::feed`] does.
#[derive(Clone, Copy, Debug)]
pub(super) enum FeedSize {
    /// About [`SWEEP_SLICE`], or until every feeding watcher was visited once.
    Timed,
    /// At most this many watchers visited.
    Watchers(usize),
}

/// What one [`CatchUps::admit`] did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Admitted {
    /// Registrations taken from the queue.
    pub(super) taken: usize,
    /// Of those, the ones behind the head, to be fed before the next event.
    pub(super) to_feed: usize,
}

/// A watcher being fed from the history.
struct Feeding {
    watcher: Watcher,
    kind: TargetKind,
    pattern: Bytes,
    target: Target,
    /// The first revision it wants.
    start: u64,
    /// The sequence number of the next history entry it must consider.
    next: u64,
    /// Where that entry is, from the read of the one before it (`None` before the first).
    hint: Option<Hint>,
    /// The highest revision of the Progress requests made for it while it is fed (or while
    /// its registration was queued: `Resume::progress_due`): a Progress now would come
    /// before events below it, so it is sent once caught up.
    progress_due: Option<u64>,
}

/// Resumed watchers that live delivery must skip or filter. Free to ask while empty.
#[derive(Default)]
pub(super) struct Held {
    /// Being fed from the history: live delivery skips them.
    feeding: HashMap<u64, Feeding, ahash::RandomState>,
    /// Caught up, but their start is above every revision dispatched: events (and
    /// Progress) below the start are skipped. One leaves at the first event (not Progress)
    /// at or above its start that it matches, or, matched or not, once the highest revision
    /// dispatched is at least its start minus one (`release_waiting`, after each event or
    /// batch). A Progress at or above its start reaches it but does not release it: a
    /// heartbeat reads `last_applied`, which may run ahead of events still queued.
    waiting: HashMap<u64, u64, ahash::RandomState>,
    /// `waiting` by start, so that each event releases those it made live (their start is
    /// at most one above it) whether or not it matched them. An unregistration or a
    /// retirement takes its watcher out at once. O(log n) per release, nothing while empty.
    waiting_by_start: BTreeSet<(u64, u64)>,
}

impl Held {
    /// True if live delivery of `view` must skip the resumed watcher `id`.
    #[inline]
    pub(super) fn skips(&mut self, id: u64, view: &EventView<'_>) -> bool {
        if self.feeding.contains_key(&id) {
            return true;
        }
        match self.waiting.get(&id) {
            Some(&start) if view.revision < start => true,
            Some(_) if view.event_type == WatchEventType::Progress => false,
            Some(&start) => {
                self.waiting.remove(&id);
                self.waiting_by_start.remove(&(start, id));
                false
            }
            None => false,
        }
    }

    /// Takes `id` out of the waiting watchers if it waits for a start at or below
    /// `through`; that start.
    pub(super) fn stop_waiting(&mut self, id: u64, through: u64) -> Option<u64> {
        let start = *self.waiting.get(&id)?;
        if start > through {
            return None;
        }
        self.waiting.remove(&id);
        self.waiting_by_start.remove(&(start, id));
        Some(start)
    }

    /// Defers a Progress at `revision` asked for watcher `id` if it is being fed: it is
    /// fed after every entry recorded, as the last step of its catch-up
    /// ([`Feeding::progress_at_end`]). False if it is not being fed.
    pub(super) fn defer_progress(&mut self, id: u64, revision: u64) -> bool {
        let Some(feeding) = self.feeding.get_mut(&id) else {
            return false;
        };
        feeding.progress_due = Some(feeding.progress_due.map_or(revision, |r| r.max(revision)));
        true
    }

    /// True if watcher `id` waits for its start. Free while none does.
    pub(super) fn waits(&self, id: u64) -> bool {
        !self.waiting.is_empty() && self.waiting.contains_key(&id)
    }

    /// True while some watcher waits for its start.
    pub(super) fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// True while some watcher is being fed.
    pub(super) fn is_feeding(&self) -> bool {
        !self.feeding.is_empty()
    }

    /// Holds `id` until the first event at or above `start`.
    fn wait(&mut self, id: u64, start: u64) {
        self.waiting.insert(id, start);
        self.waiting_by_start.insert((start, id));
    }

    /// Lets go of every waiting watcher whose start is at most `highest + 1`: nothing
    /// dispatched from now on is below its start, so it is live.
    pub(super) fn release_waiting(&mut self, highest: u64) {
        while let Some(&(start, id)) = self.waiting_by_start.first() {
            if start > highest.saturating_add(1) {
                break;
            }
            self.waiting_by_start.pop_first();
            self.waiting.remove(&id);
        }
    }

    /// Watchers being fed or waiting for their start.
    pub(super) fn len(&self) -> usize {
        self.feeding.len() + self.waiting.len()
    }
}

/// The catch-up state: the feeding order.
#[derive(Default)]
pub(super) struct CatchUps {
    /// Feeding watchers' ids, in the order feeds visit them (round robin).
    order: VecDeque<u64>,
}

/// What the dispatcher lends the catch-up for one call.
pub(super) struct Context<'a> {
    pub(super) registry: &'a WatchRegistry,
    pub(super) history: Option<&'a History>,
    pub(super) retirements: &'a mut Retirements,
    /// The highest revision dispatched so far.
    pub(super) highest: u64,
}

impl CatchUps {
    /// Takes up to `limit` registrations from a revision waiting in the registry, adds them
    /// to the index (one publish for all) and sets each one's cursor. Waits for the writer
    /// lock, for one writer transaction at most: a watcher taken must be in the index
    /// before the next event. Those to be fed are first in the feeding order, and must be
    /// fed before the next event (a fresh cursor may rest on an entry that does not match).
    pub(super) fn admit(&mut self, cx: Context<'_>, limit: usize) -> Admitted {
        // After a lag the floor is unknown until the next event: they wait in the queue.
        if cx.history.is_some_and(|h| h.floor().is_none()) {
            return Admitted::default();
        }
        let resumes = cx.registry.shared().resumes.take(limit);
        if resumes.is_empty() {
            return Admitted::default();
        }
        let admitted = resumes.len();
        let mut fed = 0;
        let held = &mut cx.retirements.held;
        let mut changes = Vec::with_capacity(resumes.len());
        let mut compacted = Vec::new();
        // Progress asked for while queued, for those not fed: sent once they are published.
        let mut progress = Vec::new();
        for Resume {
            kind,
            pattern,
            watcher,
            start,
            progress_due,
        } in resumes
        {
            let start = start.max(1);
            let id = watcher.id();
            let at = match cx.history {
                Some(history) => history.start_of(start),
                None if start > cx.highest => Start::At(0),
                None => Start::Compacted {
                    oldest: cx.highest.saturating_add(1),
                },
            };
            match at {
                Start::At(next) if cx.history.is_some_and(|h| next < h.next_seq()) => {
                    let target = Target::from_stored(kind, &pattern);
                    held.feeding.insert(
                        id,
                        Feeding {
                            watcher: watcher.clone(),
                            kind,
                            pattern: pattern.clone(),
                            target,
                            start,
                            next,
                            hint: None,
                            progress_due,
                        },
                    );
                    self.order.push_front(id);
                    fed += 1;
                }
                Start::At(_) => {
                    if start > cx.highest.saturating_add(1) {
                        held.wait(id, start);
                    }
                    if let Some(due) = progress_due {
                        progress.push((watcher.clone(), kind, pattern.clone(), start, due));
                    }
                }
                Start::Compacted { oldest } => {
                    compacted.push((watcher.clone(), kind, pattern.clone(), oldest))
                }
                Start::Unknown => {
                    unreachable!("an unknown floor returned early, leaving the queue as it was")
                }
            }
            changes.push(Change::add(kind, pattern, watcher));
        }
        cx.registry.shared().publish(changes);
        let counters = cx.registry.counters();
        Counters::add(&counters.resumes, admitted as u64);
        if !compacted.is_empty() {
            let mark = cx.retirements.mark();
            for (watcher, kind, pattern, oldest) in compacted {
                let at = Location {
                    kind,
                    pattern: &pattern,
                };
                watcher.cancel(WatchEvent::compacted_sentinel(oldest));
                cx.retirements.record(removal_of(watcher.id(), at, None));
            }
            Counters::add(
                &counters.compacted_cancels,
                (cx.retirements.mark() - mark) as u64,
            );
            cx.retirements.retire_since(mark, cx.registry);
        }
        if !progress.is_empty() {
            let mark = cx.retirements.mark();
            let mut tally = Tally::default();
            let empty = Bytes::new();
            for (watcher, kind, pattern, start, due) in progress {
                let revision = due.max(cx.highest);
                // As live Progress is: none below the start a watcher waits for.
                if start > cx.highest.saturating_add(1) && revision < start {
                    continue;
                }
                let view = progress_view(&empty, revision, cx.highest);
                if tally.ends(watcher.deliver(&view, kind != TargetKind::Exact)) {
                    let at = Location {
                        kind,
                        pattern: &pattern,
                    };
                    cx.retirements.record(removal_of(watcher.id(), at, None));
                }
            }
            tally.record_progress(counters);
            if cx.retirements.mark() > mark {
                cx.retirements.retire_since(mark, cx.registry);
            }
        }
        Admitted {
            taken: admitted,
            to_feed: fed,
        }
    }

    /// Feeds watchers behind the head from the history, round robin, each as far as its
    /// buffer allows (one slot stays free for a sentinel). Returns true while some remain.
    pub(super) fn feed(&mut self, cx: Context<'_>, size: FeedSize) -> bool {
        let Some(history) = cx.history else {
            return false;
        };
        let began = Instant::now();
        let mark = cx.retirements.mark();
        let mut compacted = 0;
        let mut overflowed = 0;
        let mut progress_sent = 0;
        let rounds = match size {
            FeedSize::Timed => self.order.len(),
            FeedSize::Watchers(n) => n.min(self.order.len()),
        };
        for visited in 0..rounds {
            if matches!(size, FeedSize::Timed)
                && visited % FEED_STEP == FEED_STEP - 1
                && began.elapsed() >= SWEEP_SLICE
            {
                break;
            }
            let Some(id) = self.order.pop_front() else {
                break;
            };
            let held = &mut cx.retirements.held;
            let Some(feeding) = held.feeding.get_mut(&id) else {
                continue;
            };
            match feed_one(feeding, history, cx.highest, &mut progress_sent) {
                Fed::Blocked => {
                    self.order.push_back(id);
                    continue;
                }
                Fed::CaughtUp => {
                    let feeding = held.feeding.remove(&id).expect("looked up above");
                    if feeding.start > cx.highest.saturating_add(1) {
                        held.wait(id, feeding.start);
                    }
                }
                Fed::Compacted => {
                    let feeding = held.feeding.remove(&id).expect("looked up above");
                    let oldest = history.floor().unwrap_or(cx.highest.saturating_add(1));
                    feeding
                        .watcher
                        .cancel(WatchEvent::compacted_sentinel(oldest));
                    compacted += 1;
                    cx.retirements.record(feeding.removal());
                }
                Fed::Overflowed => {
                    let feeding = held.feeding.remove(&id).expect("looked up above");
                    overflowed += 1;
                    cx.retirements.record(feeding.removal());
                }
                Fed::Closed => {
                    let feeding = held.feeding.remove(&id).expect("looked up above");
                    cx.retirements.record(feeding.removal());
                }
            }
        }
        let counters = cx.registry.counters();
        Counters::add(&counters.compacted_cancels, compacted);
        Counters::add(&counters.overflow_cancels, overflowed);
        Counters::add(&counters.progress_sent, progress_sent);
        Counters::add(&counters.deliveries, progress_sent);
        if cx.retirements.mark() > mark {
            cx.retirements.retire_since(mark, cx.registry);
        }
        !self.order.is_empty()
    }

    /// Feeds the first `fresh` watchers of the feeding order (those [`Self::admit`] just
    /// took) in one pass over the history from the lowest of their cursors, each entry
    /// matched against an index of the group as live dispatch matches an event: O(entries
    /// read + deliveries) for the group, where feeding each from its own cursor would step
    /// over every entry once per watcher (a storm admitted late then cost more per slice
    /// the later it was, and fell further behind). One whose buffer fills leaves the group
    /// with its cursor on the entry it could not take and is fed on its own from then on
    /// ([`Self::feed`]); the others, at the end of the history, are caught up.
    pub(super) fn feed_fresh(&mut self, cx: Context<'_>, fresh: usize) {
        let Some(history) = cx.history else {
            return;
        };
        let fresh = fresh.min(self.order.len());
        let mark = cx.retirements.mark();
        let held = &mut cx.retirements.held;
        let mut group: Snapshot<Watcher> = Snapshot::new();
        let mut in_group: HashSet<u64, ahash::RandomState> = HashSet::default();
        let mut from = u64::MAX;
        for id in self.order.iter().take(fresh) {
            if let Some(feeding) = held.feeding.get(id) {
                if in_group.insert(*id) {
                    group.insert(
                        feeding.kind,
                        &feeding.pattern,
                        feeding.watcher.clone(),
                        &mut Placement::default(),
                    );
                    from = from.min(feeding.next);
                }
            }
        }
        let (mut seq, mut hint) = (from, None);
        // (id, ended): an ended one is removed (overflowed, or its receiver is gone).
        let mut leaving: Vec<(u64, bool)> = Vec::new();
        let mut progress_sent = 0;
        let mut removed = Vec::new();
        let mut overflowed = 0;
        while !in_group.is_empty() {
            if seq < history.first_seq() {
                // Not while the dispatcher holds the history (cursors start at or above
                // the first entry); were it so, those left in the group go back to the
                // order, where `feed` finds them compacted.
                break;
            }
            let Some((entry, after)) = history.read(seq, hint) else {
                break;
            };
            let key = entry.key_bytes();
            group.for_each_match_given(key, group.exact_watchers(key), &mut |_, list| {
                list.for_each(&mut |watcher| {
                    let id = watcher.id();
                    let Some(feeding) = held.feeding.get_mut(&id) else {
                        return;
                    };
                    if seq < feeding.next || entry.revision < feeding.start {
                        return;
                    }
                    match replay(feeding, &entry) {
                        Delivery::Sent | Delivery::Filtered => {}
                        Delivery::Full => {
                            feeding.next = seq;
                            feeding.hint = hint;
                            leaving.push((id, false));
                        }
                        Delivery::Overflowed => {
                            overflowed += 1;
                            leaving.push((id, true));
                        }
                        Delivery::Closed => leaving.push((id, true)),
                    }
                });
            });
            for (id, ended) in leaving.drain(..) {
                in_group.remove(&id);
                let feeding = &held.feeding[&id];
                group.remove(feeding.kind, &feeding.pattern, id);
                if ended {
                    removed.push(held.feeding.remove(&id).expect("looked up above"));
                }
            }
            seq += 1;
            hint = Some(after);
        }
        // Those still in the group got every entry they match below `seq`.
        let at_end = seq >= history.next_seq();
        for _ in 0..fresh {
            let Some(id) = self.order.pop_front() else {
                break;
            };
            let Some(feeding) = held.feeding.get_mut(&id) else {
                continue;
            };
            if in_group.contains(&id) && seq > feeding.next {
                feeding.next = seq;
                feeding.hint = hint;
            }
            let fed = if at_end && in_group.contains(&id) {
                feeding.progress_at_end(cx.highest, &mut progress_sent)
            } else {
                // Left the group before the end: fed on its own from now on.
                Fed::Blocked
            };
            match fed {
                Fed::Blocked => self.order.push_back(id),
                Fed::CaughtUp => {
                    let feeding = held.feeding.remove(&id).expect("looked up above");
                    if feeding.start > cx.highest.saturating_add(1) {
                        held.wait(id, feeding.start);
                    }
                }
                Fed::Overflowed | Fed::Closed | Fed::Compacted => {
                    overflowed += u64::from(matches!(fed, Fed::Overflowed));
                    removed.push(held.feeding.remove(&id).expect("looked up above"));
                }
            }
        }
        for feeding in removed {
            cx.retirements.record(feeding.removal());
        }
        let counters = cx.registry.counters();
        Counters::add(&counters.overflow_cancels, overflowed);
        Counters::add(&counters.progress_sent, progress_sent);
        Counters::add(&counters.deliveries, progress_sent);
        if cx.retirements.mark() > mark {
            cx.retirements.retire_since(mark, cx.registry);
        }
    }

    /// Every feeding watcher is in the order, once; a watcher is never both feeding and
    /// waiting.
    pub(super) fn check_invariants(&self, held: &Held) {
        let mut seen = std::collections::HashSet::new();
        for id in &self.order {
            assert!(seen.insert(*id), "watcher {id} twice in the feeding order");
        }
        for id in held.feeding.keys() {
            assert!(seen.contains(id), "feeding watcher {id} outside the order");
            assert!(
                !held.waiting.contains_key(id),
                "watcher {id} feeding and waiting"
            );
        }
        assert_eq!(held.waiting.len(), held.waiting_by_start.len());
        for &(start, id) in &held.waiting_by_start {
            assert_eq!(
                held.waiting.get(&id),
                Some(&start),
                "waiting {id} out of order"
            );
        }
    }

    /// Events were lost before reaching the dispatcher: every feeding watcher would meet
    /// the hole, so each is cancelled for lag with the revision of the first event it did
    /// not get, before the history is emptied. (Waiting watchers are not fed: the
    /// dispatcher cancels those with a sweep, `SweepAction::CancelWaiting`.)
    pub(super) fn lagged(&mut self, cx: Context<'_>) -> u64 {
        let mark = cx.retirements.mark();
        let mut cancelled = Vec::new();
        for (_, feeding) in cx.retirements.held.feeding.drain() {
            let sentinel = match cx.history {
                // Its next event was evicted before it got it: no resume from there is
                // exact any more, so it is compacted, with the oldest it could resume from.
                Some(h) if feeding.next < h.first_seq() => WatchEvent::compacted_sentinel(
                    h.floor().unwrap_or(cx.highest.saturating_add(1)),
                ),
                Some(h) => WatchEvent::lag_sentinel(
                    h.get(feeding.next)
                        .map_or(cx.highest.saturating_add(1), |entry| entry.revision),
                ),
                None => WatchEvent::lag_sentinel(cx.highest.saturating_add(1)),
            };
            feeding.watcher.cancel(sentinel);
            cancelled.push(feeding.removal());
        }
        self.order.clear();
        let n = cancelled.len() as u64;
        for removal in cancelled {
            cx.retirements.record(removal);
        }
        if cx.retirements.mark() > mark {
            cx.retirements.retire_since(mark, cx.registry);
        }
        n
    }
}

impl Feeding {
    /// Fed every entry recorded: sends the Progress asked for meanwhile, if any, as a last
    /// replayed step (so it waits for room and never overflows the watcher, but for a
    /// buffer of 0). It carries at least `highest`: the watcher has every event up to
    /// there. One below the start the watcher will wait for is dropped, as a live one is
    /// skipped. Counts a Progress sent in `sent`.
    fn progress_at_end(&mut self, highest: u64, sent: &mut u64) -> Fed {
        let Some(due) = self.progress_due else {
            return Fed::CaughtUp;
        };
        let revision = due.max(highest);
        if self.start > highest.saturating_add(1) && revision < self.start {
            self.progress_due = None;
            return Fed::CaughtUp;
        }
        let empty = Bytes::new();
        let view = progress_view(&empty, revision, highest);
        match self.watcher.replay(&view, self.kind != TargetKind::Exact) {
            Delivery::Sent => {
                *sent += 1;
                self.progress_due = None;
                Fed::CaughtUp
            }
            Delivery::Filtered => {
                self.progress_due = None;
                Fed::CaughtUp
            }
            Delivery::Full => Fed::Blocked,
            Delivery::Overflowed => Fed::Overflowed,
            Delivery::Closed => Fed::Closed,
        }
    }

    fn removal(&self) -> crate::publish::Removal {
        let at = Location {
            kind: self.kind,
            pattern: &self.pattern,
        };
        removal_of(self.watcher.id(), at, None)
    }
}

/// How far one feed took a watcher.
enum Fed {
    /// Its buffer is full before an entry it must receive.
    Blocked,
    /// It has every entry recorded so far.
    CaughtUp,
    /// The entry under its cursor was dropped.
    Compacted,
    /// Its buffer holds no event at all (buffer size 0): it got the overflow sentinel.
    Overflowed,
    /// Its receiver is gone.
    Closed,
}

fn feed_one(feeding: &mut Feeding, history: &History, highest: u64, progress: &mut u64) -> Fed {
    loop {
        if feeding.next < history.first_seq() {
            return Fed::Compacted;
        }
        let Some((entry, after)) = history.read(feeding.next, feeding.hint) else {
            return feeding.progress_at_end(highest, progress);
        };
        if entry.revision < feeding.start || !feeding.target.matches(entry.key_bytes()) {
            feeding.next += 1;
            feeding.hint = Some(after);
            continue;
        }
        match replay(feeding, &entry) {
            Delivery::Sent | Delivery::Filtered => {
                feeding.next += 1;
                feeding.hint = Some(after);
            }
            Delivery::Full => return Fed::Blocked,
            Delivery::Overflowed => return Fed::Overflowed,
            Delivery::Closed => return Fed::Closed,
        }
    }
}

/// A Progress at `revision` (`empty`: its key and values); a watcher it overflows resumes
/// after `highest`.
fn progress_view(empty: &Bytes, revision: u64, highest: u64) -> EventView<'_> {
    EventView::new(
        WatchEventType::Progress,
        empty,
        empty,
        empty,
        revision,
        highest.saturating_add(1),
    )
}

/// Hands the history's `entry` to the watcher `feeding` feeds.
fn replay(feeding: &Feeding, entry: &Retained<'_>) -> Delivery {
    let [key, value, prev_value] = entry.to_bytes();
    let view = EventView::new(
        entry.event_type,
        &key,
        &value,
        &prev_value,
        entry.revision,
        // An overflow (buffer size 0 only) resumes from the entry it could not take.
        entry.revision,
    );
    let is_prefix = feeding.kind != TargetKind::Exact;
    feeding.watcher.replay(&view, is_prefix)
}
