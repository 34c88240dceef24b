//! Delivery to a list of watchers, and [`Retirements`]: watchers on their way out, with the
//! rule that a retired watcher is never delivered to again (and the rule of `catch_up`: a
//! watcher being fed from the history gets no live event).
//!
//! A delivery that finds a watcher overflowed (it got the cancel sentinel) or closed, and a
//! sweep that cancels or finds one, only records it here: removing it takes the writer lock,
//! which the dispatcher never waits for. Until the removal is applied the watcher is still in
//! both snapshots, so every later delivery asks [`Retirements::is_retired`] first: after a
//! sentinel nothing may follow.

use std::collections::HashSet;

use bytes::Bytes;

use super::catch_up::Held;
use crate::index::{Location, WatcherEntry, WatcherList};
use crate::metrics::Counters;
use crate::publish::Removal;
use crate::registry::WatchRegistry;
use crate::sink::{Delivery, EventView, Watcher};

/// How deliveries to a set of watchers went.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) sent: u64,
    pub(super) overflowed: u64,
    pub(super) closed: u64,
}

impl Tally {
    /// Counts one live delivery; true if it ended the watcher (overflowed: it got the
    /// cancel sentinel; or closed), which must then be removed.
    #[inline]
    pub(super) fn ends(&mut self, delivery: Delivery) -> bool {
        match delivery {
            Delivery::Sent => self.sent += 1,
            Delivery::Filtered => {}
            Delivery::Overflowed => self.overflowed += 1,
            Delivery::Closed => self.closed += 1,
            Delivery::Full => unreachable!("only a replay reports Full"),
        }
        matches!(delivery, Delivery::Overflowed | Delivery::Closed)
    }

    /// Adds the tally to the registry's counters: once per event or slice, not per watcher.
    pub(super) fn record(&self, counters: &Counters) {
        Counters::add(&counters.deliveries, self.sent);
        Counters::add(&counters.overflow_cancels, self.overflowed);
        Counters::add(&counters.closed_receiver_removals, self.closed);
    }

    /// [`Self::record`] for a tally of Progress deliveries, counted as Progress sent too.
    pub(super) fn record_progress(&self, counters: &Counters) {
        Counters::add(&counters.progress_sent, self.sent);
        self.record(counters);
    }
}

/// The removal of a watcher filed at `at`. `key` is the event's key when the list was
/// matched against one: a pattern that is a slice of it is shared, not copied.
pub(super) fn removal_of(id: u64, at: Location<'_>, key: Option<&Bytes>) -> Removal {
    let pattern = match key {
        Some(key) if is_within(key, at.pattern) => key.slice_ref(at.pattern),
        _ => Bytes::copy_from_slice(at.pattern),
    };
    Removal {
        id,
        pattern,
        kind: Some(at.kind),
        resumed: false,
    }
}

fn is_within(key: &Bytes, part: &[u8]) -> bool {
    let range = key.as_ptr_range();
    let part = part.as_ptr_range();
    !part.start.is_null() && range.start <= part.start && part.end <= range.end
}

/// Delivers `view` to each watcher of `list` that is not retired; records the ones to
/// remove (overflowed: they got the cancel sentinel; closed).
#[inline]
pub(super) fn deliver_list(
    list: &WatcherList<Watcher>,
    at: Location<'_>,
    view: &EventView<'_>,
    retirements: &mut Retirements,
    tally: &mut Tally,
) {
    list.for_each(&mut |watcher| deliver_one(watcher, at, view, retirements, tally));
}

/// Delivers `view` to `watcher`, filed at `at`, unless it is retired; records it for
/// removal if it overflowed or its receiver is gone.
#[inline]
pub(super) fn deliver_one(
    watcher: &Watcher,
    at: Location<'_>,
    view: &EventView<'_>,
    retirements: &mut Retirements,
    tally: &mut Tally,
) {
    if retirements.is_retired(watcher.id())
        || (watcher.meta().resumed() && retirements.held.skips(watcher.id(), view))
    {
        return;
    }
    let is_prefix = at.kind != crate::meta::TargetKind::Exact;
    if tally.ends(watcher.deliver(view, is_prefix)) {
        retirements.record(removal_of(watcher.id(), at, Some(view.key)));
    }
}

/// Removals not applied yet, and the ids that must get nothing more meanwhile.
#[derive(Default)]
pub(super) struct Retirements {
    /// Removals waiting for the writer lock: retirements, and unregistrations that handles
    /// sent through the channel (their receivers are gone, so they need no retired mark).
    pending: Vec<Removal>,
    /// Retired watchers whose removal may still be pending.
    retired: HashSet<u64, ahash::RandomState>,
    /// Watchers from a revision that live delivery skips while they catch up, or filters
    /// until their start (`catch_up`).
    pub(super) held: Held,
}

impl Retirements {
    /// True if watcher `id` was retired: deliver nothing to it. Free while nobody is.
    #[inline]
    pub(super) fn is_retired(&self, id: u64) -> bool {
        !self.retired.is_empty() && self.retired.contains(&id)
    }

    /// True while some removal waits for the writer lock.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Queues an unregistration a handle sent (no retired mark: its receiver is gone). A
    /// watcher waiting for its start stops waiting, so that nothing of it stays behind.
    pub(super) fn unregistered(&mut self, removal: Removal) {
        self.held.stop_waiting(removal.id, u64::MAX);
        self.pending.push(removal);
    }

    /// Where the next retirement will be recorded: pass it to [`Self::retire_since`].
    pub(super) fn mark(&self) -> usize {
        self.pending.len()
    }

    /// Records a watcher to retire (its id must be marked by [`Self::retire_since`]).
    #[inline]
    pub(super) fn record(&mut self, removal: Removal) {
        self.pending.push(removal);
    }

    /// Marks every watcher recorded since `mark` as retired (one waiting for its start
    /// stops waiting: nothing will reach it), then tries to remove them now.
    pub(super) fn retire_since(&mut self, mark: usize, registry: &WatchRegistry) {
        for removal in &self.pending[mark..] {
            self.retired.insert(removal.id);
            self.held.stop_waiting(removal.id, u64::MAX);
        }
        self.flush(registry);
    }

    /// Applies what is pending if the writer lock is free. Once everything is applied no
    /// retired watcher is in the index any more, and the marks are dropped.
    pub(super) fn flush(&mut self, registry: &WatchRegistry) {
        // Called before every event: with nothing pending it must cost nothing (clearing a
        // set that once grew would rewrite its whole table each time).
        if self.pending.is_empty() {
            return;
        }
        if registry.try_remove(&mut self.pending) && !self.retired.is_empty() {
            self.retired.clear();
        }
    }
}
