//! The publish protocol: how writers change the index while the dispatcher reads it without
//! a lock.
//!
//! ```text
//!  writer (registration, removal batch), under the writer mutex     reader (dispatcher)
//!  ──────────────────────────────────────────────────────────────   ─────────────────────
//!  wait until no reader holds back                                  guard = published.load()
//!  apply the changes to back, in place                              for_each_match(key) …
//!  old_front = published.swap(back); back = old_front               drop(guard)
//!  wait until no reader holds back; apply the same changes to it
//! ```
//!
//! Two snapshots, used in turn (the left-right pattern): the published one (the *front*) is
//! never changed while published; the writers keep the other (the *back*). Every change to
//! the index is a [`Change`], applied identically to both, in the same order, so that the
//! twins keep one layout (the contract sweeps rely on: `index::table`). Readers hold a
//! snapshot for one event, a batch of eight, or one sweep slice, so a writer's waits are
//! short. They cannot deadlock because of a lock order: a reader takes, under its snapshot,
//! only locks that no one holds while waiting for a reader (a compact channel's or a ring's,
//! then the owners' table, in `release_lagged`), and never the writer lock, which is the
//! one lock held while waiting in [`exclusive`].
//!
//! Registrations that arrive together do not publish one by one: each queues its addition
//! and whoever gets the writer lock publishes every queued one (see [`Combining`]); one
//! that arrives alone publishes its own at once.
//!
//! The limit counter and the prev_kv counter are released at one point for a watcher in the
//! index: `Shared::publish_locked` (every publish, removals' included), at the swap that
//! takes it out of the published snapshot, or, before the swap, by the unwind guard of a
//! publish that failed to add it; a watcher from a revision the dispatcher has not added
//! yet, when it leaves the resume queue. Whatever removed it (a dropped handle, an overflow,
//! a closed receiver, a sweep), that is where it stops counting. A group's members hold
//! units of their own, given back in `group` once each, at the first of their receiver's
//! drop, their lag, the sweep finding them lagged, or the group's watcher's release.
//!
//! A panic inside a publish (a bug in an index: no input reaches one) must not leave
//! half a change behind. The published snapshot is whole at every moment (untouched
//! before the swap, complete after it), so the next writer rebuilds the back from it
//! ([`Shared::mend`]); the additions the published snapshot never got give back their units,
//! and the registrations they carried for other threads are refused
//! ([`RegisterError::PublishInterrupted`]), never reported published (see [`Unwinding`]).

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::{Arc, PoisonError, TryLockError};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::group::{GroupKey, MemberRelease, Ring};
use crate::index::{Placement, Snapshot, WatcherEntry};
use crate::meta::TargetKind;
use crate::metrics::Counters;
use crate::options::RegistryOptions;
use crate::owners::OwnerBook;
use crate::sink::Watcher;
use crate::spec::RegisterError;
use crate::sync::{
    exclusive, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, SnapshotArc, SnapshotCell,
};

/// Removals handed to one writer transaction at most, so that registrations interleave with
/// a burst of unregistrations instead of waiting for all of it.
const REMOVAL_BATCH: usize = 1024;

/// Times a registration polls the writer lock (spinning, then yielding) before it queues
/// on it: about what one publish of a few additions takes.
#[cfg(not(watchtrie_loom))]
const COMBINE_POLLS: u32 = 256;
/// Under the model, two polls: enough to reach both ways out of the loop (published by
/// another writer, or queue on the lock) without multiplying the interleavings.
#[cfg(watchtrie_loom)]
const COMBINE_POLLS: u32 = 2;

/// A watcher to take out of the index: its id, and where it is filed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Removal {
    pub(crate) id: u64,
    /// The stored key or prefix.
    pub(crate) pattern: Bytes,
    /// The kind of target, when the remover knows it; a message from the unregistration
    /// channel does not say (its format is the reference's `(id, key)`), and then every
    /// kind is tried: ids are unique, so at most one holds it.
    pub(crate) kind: Option<TargetKind>,
    /// Registered from a revision (only a handle's drop says so; see `Shared::unregister`).
    pub(crate) resumed: bool,
}

/// Prefixes with more separators than this are removed off the thread that took their
/// unregistration (see `InlineDispatcher`'s `remove_deep`): the walk is O(depth), about
/// half a microsecond per segment per snapshot (`watchbench --scenario key-cost`), so a
/// prefix of 4,096 segments costs the dispatcher about 2 ms, and deeper ones more.
pub(crate) const DEEP_REMOVAL: usize = 4096;

impl Removal {
    /// Whether removing this pattern walks more than [`DEEP_REMOVAL`] segments.
    pub(crate) fn is_deep(&self) -> bool {
        self.pattern.len() > DEEP_REMOVAL
            && self.pattern.iter().filter(|&&b| b == b'/').count() > DEEP_REMOVAL
    }

    /// A removal from the unregistration channel's `(id, key)`.
    pub(crate) fn from_message((id, pattern): (u64, Bytes)) -> Self {
        Removal {
            id,
            pattern,
            kind: None,
            resumed: false,
        }
    }
}

/// One change to the index, applied to each of the two snapshots.
pub(crate) enum Change {
    Add {
        kind: TargetKind,
        pattern: Bytes,
        watcher: Watcher,
        /// What the first application learnt for the second (the key's hash).
        placement: Placement,
    },
    Remove(Removal),
}

impl Change {
    /// Adds `watcher` on `pattern`, filed as `kind`.
    pub(crate) fn add(kind: TargetKind, pattern: Bytes, watcher: Watcher) -> Self {
        Change::Add {
            kind,
            pattern,
            watcher,
            placement: Placement::default(),
        }
    }

    /// Applies the change; returns the watcher a removal took out.
    fn apply(&mut self, index: &mut Snapshot<Watcher>) -> Option<Watcher> {
        match self {
            Change::Add {
                kind,
                pattern,
                watcher,
                placement,
            } => {
                index.insert(*kind, pattern, watcher.clone(), placement);
                #[cfg(test)]
                tests::fault(pattern, tests::PANIC_FIRST);
                None
            }
            Change::Remove(removal) => removal.apply(index),
        }
    }

    /// Applies the change a second and last time, moving its watcher into the index rather
    /// than cloning it (a clone of a sender costs two atomic increments, its drop two more).
    fn apply_last(self, index: &mut Snapshot<Watcher>) {
        match self {
            Change::Add {
                kind,
                pattern,
                watcher,
                mut placement,
            } => {
                index.insert(kind, &pattern, watcher, &mut placement);
                #[cfg(test)]
                tests::fault(&pattern, tests::PANIC_SECOND);
            }
            Change::Remove(removal) => {
                removal.apply(index);
            }
        }
    }
}

/// Looks up the exact entries that the removals among `changes` will take, before any is
/// applied: the lookups are independent, so their cache misses overlap instead of each
/// removal waiting for its own in turn (the dispatcher's batches of exact lookups do the
/// same).
fn warm_removals(index: &Snapshot<Watcher>, changes: &[Change]) {
    let mut found = 0usize;
    for change in changes {
        if let Change::Remove(removal) = change {
            if matches!(removal.kind, None | Some(TargetKind::Exact)) {
                found += usize::from(index.exact_watchers(&removal.pattern).is_some());
            }
        }
    }
    std::hint::black_box(found);
}

impl Removal {
    fn apply(&self, index: &mut Snapshot<Watcher>) -> Option<Watcher> {
        match self.kind {
            Some(kind) => index.remove(kind, &self.pattern, self.id),
            None => TargetKind::ALL
                .into_iter()
                .find_map(|kind| index.remove(kind, &self.pattern, self.id)),
        }
    }
}

/// A watcher registered from a revision, on its way to the dispatcher, which adds it to the
/// index itself once it knows where its history starts (`dispatch::catch_up`).
pub(crate) struct Resume {
    pub(crate) kind: TargetKind,
    pub(crate) pattern: Bytes,
    pub(crate) watcher: Watcher,
    /// The first revision it wants.
    pub(crate) start: u64,
    /// The highest revision of the Progress requests made for it while it waits here: sent
    /// when the dispatcher takes it (after its replay, if it has one).
    pub(crate) progress_due: Option<u64>,
}

/// Registrations from a revision not yet taken by the dispatcher.
pub(crate) struct Resumes {
    queue: Mutex<VecDeque<Resume>>,
    /// Set with each push, so that the dispatcher's look before every event is one load.
    waiting: AtomicBool,
    /// Wakes an idle dispatcher.
    pub(crate) notify: tokio::sync::Notify,
}

impl Resumes {
    fn new() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            waiting: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn push(&self, resume: Resume) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.push_back(resume);
        // Under the lock, as `take`'s store is, so that the flag follows the queue. Release:
        // pairs with `is_waiting`'s Acquire (the lock orders the data itself).
        self.waiting.store(true, Ordering::Release);
        drop(queue);
        self.notify.notify_one();
    }

    /// Registrations waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// At most `limit` registrations waiting, oldest first; free when there is none. What
    /// is left stays waiting (see [`Self::is_waiting`]).
    pub(crate) fn take(&self, limit: usize) -> Vec<Resume> {
        if !self.is_waiting() {
            return Vec::new();
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let n = limit.min(queue.len());
        // Relaxed: under the lock, like `push`'s store.
        self.waiting.store(n < queue.len(), Ordering::Relaxed);
        queue.drain(..n).collect()
    }

    /// Takes the registration of watcher `id` out of the queue, if it is there (a scan:
    /// only for a removal that found its watcher in no index, free when none waits).
    pub(crate) fn remove(&self, id: u64) -> Option<Resume> {
        if !self.is_waiting() {
            return None;
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let at = queue.iter().position(|r| r.watcher.id() == id)?;
        let taken = queue.remove(at);
        // Relaxed: under the lock, like `push`'s store.
        self.waiting.store(!queue.is_empty(), Ordering::Relaxed);
        taken
    }

    /// Notes a Progress at `revision` asked for the queued registration of watcher `id`
    /// (the highest asked is kept), for the dispatcher to send when it takes it; false if it
    /// is not queued (a scan, free when none waits). Taking it out of turn instead would
    /// break the admission's pacing, and after a lag nothing can be taken.
    pub(crate) fn defer_progress(&self, id: u64, revision: u64) -> bool {
        if !self.is_waiting() {
            return false;
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(resume) = queue.iter_mut().find(|r| r.watcher.id() == id) else {
            return false;
        };
        resume.progress_due = Some(resume.progress_due.map_or(revision, |r| r.max(revision)));
        true
    }

    /// True if some registration may be waiting (one load).
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }
}

/// Gauges read off the registry (see `Metrics`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gauges {
    pub(crate) watchers: usize,
    pub(crate) exact_keys: usize,
    pub(crate) prefixes: usize,
    pub(crate) byte_prefixes: usize,
    pub(crate) ranges: usize,
    pub(crate) patterns: usize,
}

/// The writers' side: the back snapshot, behind the writer mutex.
pub(crate) struct Writer {
    back: SnapshotArc<Snapshot<Watcher>>,
    /// The emptied buffer of the last combined batch, handed back to the queue next time so
    /// that combining allocates nothing once warm.
    spare: Vec<Change>,
    /// The watchers a publish took out of the back, released after its swap (until then
    /// the published snapshot holds them); empty between publishes, except after one that
    /// panicked before its swap, until the next writer's mend clears it.
    released: Vec<Watcher>,
}

/// The tickets of the registrations one combined publish carries: `(after, through]`.
#[derive(Clone, Copy)]
struct Tickets {
    after: u64,
    through: u64,
}

/// A publish in progress, holding its batch. Dropped without [`Self::finish`] (the index
/// panicked), it leaves the writers' state for [`Shared::mend`]: before the swap, no
/// addition of the batch is published, so each gives back its units and the registrations
/// it carried for other threads are marked lost; after it, the published snapshot has the
/// whole batch, and only the back is torn.
struct Unwinding<'a> {
    shared: &'a Shared,
    changes: Vec<Change>,
    /// The change being applied to the back, before the swap (`None` before the first).
    applying: Option<usize>,
    swapped: bool,
    tickets: Option<Tickets>,
    finished: bool,
}

impl Unwinding<'_> {
    /// The publish is complete: the emptied batch, for reuse.
    fn finish(mut self) -> Vec<Change> {
        self.finished = true;
        std::mem::take(&mut self.changes)
    }
}

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let shared = self.shared;
        // Relaxed: set and read under the writer lock, which orders them.
        shared.torn.store(true, Ordering::Relaxed);
        Counters::add(&shared.counters.publishes_interrupted, 1);
        if !self.swapped {
            for (at, change) in self.changes.iter().enumerate() {
                if let Change::Add { watcher, .. } = change {
                    // Counted just before its application began (see `publish_locked`).
                    if watcher.group().is_some() && self.applying.is_some_and(|a| at <= a) {
                        shared.groups_in_index.fetch_sub(1, Ordering::Relaxed);
                    }
                    shared.release_units(watcher);
                }
            }
            if let Some(tickets) = self.tickets {
                shared
                    .lost_tickets
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(tickets);
                shared.tickets_lost.store(true, Ordering::Relaxed);
            }
        }
        if let Some(tickets) = self.tickets {
            // Release: the waiters that read it covered (Acquire) see the lost list too.
            shared
                .published_ticket
                .store(tickets.through, Ordering::Release);
        }
    }
}

/// Registrations waiting for a writer to publish them: the combining queue.
///
/// A registration that finds the writer lock free and the queue empty publishes alone,
/// without it. Otherwise it queues its addition and takes a ticket, then polls: either the published
/// ticket covers its own (another writer published it), or it gets the writer lock and
/// publishes everything queued by then in one transaction (one wait for readers per
/// snapshot, one swap), then stores the last ticket queued by then. A registration that finds its
/// ticket covered returns at once, and its watcher is in the published snapshot: the ticket
/// is stored (Release) only after the swap, and read with Acquire. Registrations that
/// arrive together, from many threads or from one [`WatchRegistry::watch_many`] call,
/// share one publish (flat combining). Lock order: the writer lock, then this queue's.
///
/// [`WatchRegistry::watch_many`]: crate::WatchRegistry::watch_many
struct Combining {
    adds: Vec<Change>,
    /// The ticket of the last addition queued; tickets count from 1.
    last_ticket: u64,
}

/// The registry's state. Owned by the `WatchRegistry` alone; handles and metrics hold it
/// weakly (a dropped handle upgrades to unregister its watcher itself), so that dropping the
/// registry drops the snapshots and with them every watcher's sender: streams then end.
pub(crate) struct Shared {
    /// What readers see.
    pub(crate) published: SnapshotCell<Snapshot<Watcher>>,
    /// Serialises writers and holds the snapshot they reuse.
    pub(crate) writer: Mutex<Writer>,
    pub(crate) next_id: AtomicU64,
    /// Active watchers, for the limit.
    pub(crate) active: AtomicUsize,
    pub(crate) prev_kv_watchers: Arc<StdAtomicUsize>,
    pub(crate) watcher_buffer_size: usize,
    pub(crate) max_watcher_count: usize,
    unregister_tx: mpsc::UnboundedSender<(u64, Bytes)>,
    pub(crate) counters: Arc<Counters>,
    /// [`RegistryOptions::release_at_drop`]; read at every drop.
    release_at_drop: AtomicBool,
    /// The key limits of [`RegistryOptions`], read at every registration.
    max_key_bytes: AtomicUsize,
    max_segments: AtomicUsize,
    max_wildcards: AtomicUsize,
    /// [`RegistryOptions::owner_limit`]: the cap of owners without their own.
    owner_limit: AtomicUsize,
    /// Per-owner counts and caps (`owners`); taken only for owned watchers.
    owners: Mutex<OwnerBook>,
    /// Registrations from a revision, for the dispatcher.
    pub(crate) resumes: Resumes,
    /// Registrations waiting to be published (taken after `writer`, never before it).
    combining: Mutex<Combining>,
    /// Every registration with a ticket up to this one is published (see [`Combining`]);
    /// written under the writer lock.
    published_ticket: AtomicU64,
    /// The combining queue's `last_ticket`, stored under its lock, for the look of a
    /// registration that may publish alone (equal to `published_ticket`: nothing queued).
    queued_ticket: AtomicU64,
    /// Tickets whose publish panicked before its swap (see [`Unwinding`]), and whether there
    /// are any, so that a covered ticket looks them up only after such a panic.
    lost_tickets: Mutex<Vec<Tickets>>,
    tickets_lost: AtomicBool,
    /// A publish unwound: the back snapshot may hold half a change (see [`Self::mend`]).
    /// Written and read under the writer lock.
    torn: AtomicBool,
    /// Shared fan-out groups with members, by what they watch (`group`): a group enters
    /// once its watcher is published and leaves with its last member or its watcher.
    /// Taken after `writer`, before a ring's lock.
    pub(crate) groups: Mutex<crate::group::GroupMap>,
    /// Group watchers in the index (they hold no unit of the limit), and group members
    /// holding their units: for `check_invariants`' count of the limit.
    groups_in_index: AtomicUsize,
    pub(crate) members_held: AtomicUsize,
}

impl Shared {
    /// Empty twins and zeroed counters.
    pub(crate) fn new(
        watcher_buffer_size: usize,
        max_watcher_count: usize,
        unregister_tx: mpsc::UnboundedSender<(u64, Bytes)>,
    ) -> Self {
        let front = Snapshot::new();
        // Same hash seeds, same changes: the twins keep one layout (see `Snapshot::sweep`).
        let back = front.empty_twin();
        Shared {
            published: SnapshotCell::new(SnapshotArc::new(front)),
            writer: Mutex::new(Writer {
                back: SnapshotArc::new(back),
                spare: Vec::new(),
                released: Vec::new(),
            }),
            next_id: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            prev_kv_watchers: Arc::new(StdAtomicUsize::new(0)),
            watcher_buffer_size,
            max_watcher_count,
            unregister_tx,
            counters: Arc::default(),
            release_at_drop: AtomicBool::new(false),
            max_key_bytes: AtomicUsize::new(RegistryOptions::default().max_key_bytes()),
            max_segments: AtomicUsize::new(RegistryOptions::default().max_segments()),
            max_wildcards: AtomicUsize::new(RegistryOptions::default().max_wildcards()),
            owner_limit: AtomicUsize::new(RegistryOptions::default().owner_limit()),
            owners: Mutex::new(OwnerBook::new()),
            resumes: Resumes::new(),
            combining: Mutex::new(Combining {
                adds: Vec::new(),
                last_ticket: 0,
            }),
            published_ticket: AtomicU64::new(0),
            queued_ticket: AtomicU64::new(0),
            lost_tickets: Mutex::new(Vec::new()),
            tickets_lost: AtomicBool::new(false),
            torn: AtomicBool::new(false),
            groups: Mutex::new(hashbrown::HashMap::default()),
            groups_in_index: AtomicUsize::new(0),
            members_held: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the owner book (whatever a panicking holder left: each change to it is
    /// one assignment, so its counts stay consistent), with the default owner cap.
    pub(crate) fn with_owners<T>(&self, f: impl FnOnce(&mut OwnerBook, usize) -> T) -> T {
        let default = self.owner_limit.load(Ordering::Relaxed);
        let mut book = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut book, default)
    }

    /// Puts `options` in force (for registrations and drops that come after).
    pub(crate) fn set_options(&self, options: RegistryOptions) {
        // Relaxed: an option read by a call racing this one may be the old or the new value.
        self.release_at_drop
            .store(options.release_at_drop(), Ordering::Relaxed);
        self.max_key_bytes
            .store(options.max_key_bytes(), Ordering::Relaxed);
        self.max_segments
            .store(options.max_segments(), Ordering::Relaxed);
        self.max_wildcards
            .store(options.max_wildcards(), Ordering::Relaxed);
        self.owner_limit
            .store(options.owner_limit(), Ordering::Relaxed);
    }

    /// The options in force.
    pub(crate) fn options(&self) -> RegistryOptions {
        RegistryOptions::default()
            .with_release_at_drop(self.release_at_drop.load(Ordering::Relaxed))
            .with_key_limits(
                self.max_key_bytes.load(Ordering::Relaxed),
                self.max_segments.load(Ordering::Relaxed),
            )
            .with_max_wildcards(self.max_wildcards.load(Ordering::Relaxed))
            .with_owner_limit(self.owner_limit.load(Ordering::Relaxed))
    }

    /// The gauges `Metrics` reports.
    pub(crate) fn gauges(&self) -> Gauges {
        let snapshot = self.published.load();
        Gauges {
            watchers: self.active.load(Ordering::Relaxed),
            exact_keys: snapshot.exact_key_count(),
            prefixes: snapshot.prefix_count(),
            byte_prefixes: snapshot.byte_prefix_count(),
            ranges: snapshot.range_count(),
            patterns: snapshot.pattern_count(),
        }
    }

    /// Takes one unit of the limit, or fails without taking any: concurrent registrations
    /// never overshoot, and a refused one never disturbs an accepted one.
    pub(crate) fn reserve_slot(&self) -> Result<(), RegisterError> {
        let max = self.max_watcher_count;
        // Relaxed: the counter guards a quantity, not the visibility of other data.
        self.active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| RegisterError::LimitExceeded { max })
    }

    /// Gives back a unit taken by [`Self::reserve_slot`] for a registration that was then
    /// refused after all.
    pub(crate) fn release_slot(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Gives back what a watcher leaving held: its unit of the limit, its prev_kv count,
    /// its owner's count. Called by [`Self::publish_locked`] alone. A group's watcher holds
    /// none itself: it takes the group out of the map and releases every member still
    /// holding its units (see `group`).
    fn release(&self, removed: &Watcher) {
        if let Some(ring) = removed.group() {
            self.groups_in_index.fetch_sub(1, Ordering::Relaxed);
            self.forget_group(ring);
        }
        self.release_units(removed);
    }

    /// The units part of [`Self::release`], also for an addition that was never published.
    fn release_units(&self, watcher: &Watcher) {
        if let Some(ring) = watcher.group() {
            let prev_kv = watcher.prev_kv();
            for member in ring.release_all() {
                self.release_member(member, prev_kv);
            }
            return;
        }
        self.active.fetch_sub(1, Ordering::Relaxed);
        if watcher.prev_kv() {
            self.prev_kv_watchers.fetch_sub(1, Ordering::Relaxed);
        }
        if watcher.meta().owned() {
            self.with_owners(|book, _| book.released(watcher.id()));
        }
    }

    /// Gives back a group member's units (its release point is in `group`: exactly once,
    /// whoever comes first).
    pub(crate) fn release_member(&self, member: MemberRelease, prev_kv: bool) {
        self.members_held.fetch_sub(1, Ordering::Relaxed);
        self.active.fetch_sub(1, Ordering::Relaxed);
        if prev_kv {
            self.prev_kv_watchers.fetch_sub(1, Ordering::Relaxed);
        }
        if member.owned {
            self.with_owners(|book, _| book.released(member.id));
        }
    }

    fn lock_groups(&self) -> crate::sync::MutexGuard<'_, crate::group::GroupMap> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `ring` out of the group map if it is the one there for its key.
    fn forget_group(&self, ring: &crate::sync::ChannelArc<Ring>) {
        let mut groups = self.lock_groups();
        if groups
            .get(&ring.key)
            .is_some_and(|mapped| crate::sync::ChannelArc::ptr_eq(mapped, ring))
        {
            groups.remove(&ring.key);
        }
    }

    /// The group a new member of `key` joins, with it joined (slot and ring); `None` if no
    /// published group has that key.
    pub(crate) fn join_group(
        &self,
        key: &GroupKey,
        id: u64,
        owned: bool,
    ) -> Option<(crate::sync::ChannelArc<Ring>, u32)> {
        let mut groups = self.lock_groups();
        let ring = groups.get(key)?;
        match ring.join(id, owned) {
            Some(slot) => Some((crate::sync::ChannelArc::clone(ring), slot)),
            None => {
                // Closed or released: its watcher left (or is leaving) the index before the
                // group entered the map (see `add_group`). It takes no member again, so it
                // must not hold the key.
                groups.remove(key);
                None
            }
        }
    }

    /// Enters a group whose watcher was just published, unless another open one for the
    /// same key got there first (its members then stay in their own group). The watcher
    /// may have left the index already (a lag cancel, between its publish and this): a
    /// ring that takes no member (closed, or released while a dispatcher still holds a
    /// sender) never enters, and one that stops taking members after is evicted by
    /// `join_group`.
    pub(crate) fn add_group(&self, ring: crate::sync::ChannelArc<Ring>) {
        if !ring.takes_members() {
            return;
        }
        let mut groups = self.lock_groups();
        match groups.get_mut(&ring.key) {
            Some(mapped) if !mapped.takes_members() => *mapped = ring,
            Some(_) => {}
            None => {
                groups.insert(ring.key.clone(), ring);
            }
        }
    }

    /// A member leaves (`leave` takes it out of its ring, under the map's lock so that no
    /// one joins a group its last member is leaving); releases it and returns the removal
    /// of the group's watcher if it was the last, for the caller to unregister (without the
    /// map's lock: the removal may take the writer lock).
    pub(crate) fn leave_group(
        &self,
        ring: &crate::sync::ChannelArc<Ring>,
        leave: impl FnOnce() -> (Option<MemberRelease>, bool),
    ) -> Option<Removal> {
        let (release, last) = {
            let mut groups = self.lock_groups();
            let (release, last) = leave();
            if last
                && groups
                    .get(&ring.key)
                    .is_some_and(|mapped| crate::sync::ChannelArc::ptr_eq(mapped, ring))
            {
                groups.remove(&ring.key);
            }
            (release, last)
        };
        if let Some(release) = release {
            self.release_member(
                release,
                ring.key.flags.contains(crate::meta::Flags::PREV_KV),
            );
        }
        last.then(|| Removal {
            id: ring.watcher_id,
            pattern: ring.key.pattern.clone(),
            kind: Some(ring.key.kind),
            resumed: false,
        })
    }

    /// Releases the members of `ring` more than their buffer behind (the closed-receiver
    /// sweep); how many.
    pub(crate) fn release_lagged(&self, ring: &Ring) -> u64 {
        let prev_kv = ring.key.flags.contains(crate::meta::Flags::PREV_KV);
        let released = ring.release_lagged();
        for member in &released {
            self.release_member(*member, prev_kv);
        }
        released.len() as u64
    }

    /// Applies `changes` to both snapshots and publishes them; the counters' one release
    /// point (see the module docs). For the dispatcher and removals: registrations go
    /// through [`Self::publish_additions`] instead.
    pub(crate) fn publish(&self, changes: Vec<Change>) {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.publish_locked(&mut writer, changes, None);
    }

    /// Publishes the additions of `adds` (every one a [`Change::Add`]), together with
    /// whatever other registrations queued meanwhile (see [`Combining`]); returns once each
    /// of them is in the published snapshot, or refuses them all if the publish that
    /// carried them for this thread panicked (the panic itself is the publisher's).
    pub(crate) fn publish_additions(
        &self,
        adds: impl IntoIterator<Item = Change>,
    ) -> Result<(), RegisterError> {
        // Alone (the writer lock free, nothing queued): publish these at once, without the
        // queue's lock and tickets. A registration that queues meanwhile polls the lock and
        // publishes itself after us; a stale read of the queue's ticket costs no more than
        // that, so Relaxed.
        let alone = match self.writer.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
        .filter(|_| {
            self.queued_ticket.load(Ordering::Relaxed)
                == self.published_ticket.load(Ordering::Relaxed)
        });
        if let Some(mut writer) = alone {
            let mut batch = std::mem::take(&mut writer.spare);
            batch.extend(adds);
            writer.spare = self.publish_locked(&mut writer, batch, None);
            return Ok(());
        }
        let ticket = {
            let mut queue = self
                .combining
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            queue.adds.extend(adds);
            queue.last_ticket += 1;
            self.queued_ticket
                .store(queue.last_ticket, Ordering::Relaxed);
            queue.last_ticket
        };
        // Wait for a writer to publish our additions, or take the lock and publish them (with
        // whatever queued since). Polling the lock rather than queueing on it lets the
        // additions of threads that arrive meanwhile pile up for one publish, instead of
        // each waiter taking the lock in turn only to find its work done.
        let mut attempts = 0u32;
        let mut writer = loop {
            if self.published_ticket.load(Ordering::Acquire) >= ticket {
                // A writer before us published our additions with its own.
                return self.combined(ticket);
            }
            match self.writer.try_lock() {
                Ok(guard) => break guard,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if attempts >= COMBINE_POLLS => {
                    break self.writer.lock().unwrap_or_else(PoisonError::into_inner)
                }
                Err(TryLockError::WouldBlock) => {
                    crate::sync::backoff(attempts);
                    attempts += 1;
                }
            }
        };
        // Relaxed: the lock orders it.
        let after = self.published_ticket.load(Ordering::Relaxed);
        if after >= ticket {
            // Published while we took the lock.
            return self.combined(ticket);
        }
        let spare = std::mem::take(&mut writer.spare);
        let (batch, through) = {
            let mut queue = self
                .combining
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (std::mem::replace(&mut queue.adds, spare), queue.last_ticket)
        };
        let tickets = Tickets { after, through };
        writer.spare = self.publish_locked(&mut writer, batch, Some(tickets));
        // Release, after the swap: a registration that reads its ticket covered (Acquire)
        // returns with the snapshot holding its watcher published.
        self.published_ticket.store(through, Ordering::Release);
        Ok(())
    }

    /// The outcome of a registration whose `ticket` another writer's publish covered.
    fn combined(&self, ticket: u64) -> Result<(), RegisterError> {
        // Relaxed: set before the covering ticket's Release store, read after its Acquire.
        if self.tickets_lost.load(Ordering::Relaxed)
            && self
                .lost_tickets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|lost| lost.after < ticket && ticket <= lost.through)
        {
            return Err(RegisterError::PublishInterrupted);
        }
        // Counted only once known published: a refused one was not.
        Counters::add(&self.counters.registrations_combined, 1);
        Ok(())
    }

    /// Publishes `changes` (carrying the registrations of `tickets`, if another thread's);
    /// returns their emptied buffer, for reuse.
    fn publish_locked(
        &self,
        writer: &mut Writer,
        changes: Vec<Change>,
        tickets: Option<Tickets>,
    ) -> Vec<Change> {
        // Armed before the mend: the batch is out of the combining queue already, so a
        // panic from here on must give its units back and mark its tickets lost.
        let mut publish = Unwinding {
            shared: self,
            changes,
            applying: None,
            swapped: false,
            tickets,
            finished: false,
        };
        if self.torn.load(Ordering::Relaxed) {
            self.mend(writer);
        }
        let back = exclusive(&mut writer.back);
        warm_removals(back, &publish.changes);
        for at in 0..publish.changes.len() {
            publish.applying = Some(at);
            let change = &mut publish.changes[at];
            if let Change::Add { watcher, .. } = change {
                if watcher.group().is_some() {
                    self.groups_in_index.fetch_add(1, Ordering::Relaxed);
                }
            }
            match change.apply(back) {
                // Released after the swap: until then the published snapshot holds it, and
                // a panic before the swap leaves it there.
                Some(removed) => writer.released.push(removed),
                // A watcher from a revision that the dispatcher could not add yet (after a
                // lag its history's floor is unknown until the next event) is still in the
                // queue: it leaves from there, released at once (no snapshot holds it).
                None => {
                    if let Change::Remove(removal) = change {
                        if let Some(queued) = self.resumes.remove(removal.id) {
                            self.release(&queued.watcher);
                        }
                    }
                }
            }
        }
        writer.back = self.published.swap(SnapshotArc::clone(&writer.back));
        publish.swapped = true;
        Counters::add(&self.counters.snapshots_published, 1);
        for removed in writer.released.drain(..) {
            self.release(&removed);
        }
        // Bring the old front up to date now rather than at the next write: it must not keep
        // removed watchers' channels open.
        let back = exclusive(&mut writer.back);
        warm_removals(back, &publish.changes);
        for change in publish.changes.drain(..) {
            change.apply_last(back);
        }
        publish.finish()
    }

    /// Rebuilds the back snapshot from the published one, after a publish that unwound:
    /// the published snapshot is whole (the one the panic left untouched before the swap,
    /// or the one the swap published complete) and a clone keeps its layout; the back may
    /// hold half a change. The watchers a removal took out of the back only stay counted,
    /// since the published snapshot still holds them.
    fn mend(&self, writer: &mut Writer) {
        let front = self.published.load();
        writer.back = SnapshotArc::new(Snapshot::clone(&front));
        drop(front);
        writer.released.clear();
        self.torn.store(false, Ordering::Relaxed);
        tracing::warn!(
            "watchtrie: rebuilt the index's back snapshot after a publish that panicked"
        );
    }

    /// Applies `removals` in transactions of at most [`REMOVAL_BATCH`], never waiting for
    /// the writer lock: returns false, with what is left in `removals`, when another writer
    /// holds it.
    pub(crate) fn try_remove(&self, removals: &mut Vec<Removal>) -> bool {
        while !removals.is_empty() {
            let mut writer = match self.writer.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return false,
            };
            let start = removals.len().saturating_sub(REMOVAL_BATCH);
            let batch: Vec<Change> = removals.drain(start..).map(Change::Remove).collect();
            self.publish_locked(&mut writer, batch, None);
        }
        true
    }

    /// Unregisters a dropped handle's watcher. By default, as in the reference, through the
    /// dispatcher, which applies it before its next event: the watcher counts until then.
    /// With [`RegistryOptions::with_release_at_drop`], at once if no other writer holds the
    /// lock (the drop then waits, in `sync::exclusive`, for the readers of each twin: an
    /// event, a batch of eight or a sweep slice of at most ~0.5 ms, each; never for the
    /// lock), otherwise through the dispatcher all the same.
    pub(crate) fn unregister(&self, removal: Removal) {
        // A deep prefix's removal would block the dropping thread: the dispatcher hands it on.
        // A watcher from a revision may not be in the index yet (the dispatcher adds it): its
        // removal goes through the dispatcher too, which takes additions first.
        let direct = self.release_at_drop.load(Ordering::Relaxed) && !removal.is_deep();
        let removal = if direct && !removal.resumed {
            let mut removals = vec![removal];
            if self.try_remove(&mut removals) {
                return;
            }
            removals.pop().expect("not applied")
        } else {
            removal
        };
        // A closed channel means the dispatcher is gone: as in the reference, the watcher
        // then stays until the registry is dropped.
        let _ = self.unregister_tx.send((removal.id, removal.pattern));
    }

    /// Checks both snapshots' invariants, that they hold the same watchers in one layout,
    /// and that the limit counter matches them. Panics with a description otherwise.
    pub(crate) fn check_invariants(&self) {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let published = self.published.load();
        published.check_invariants();
        let back = &writer.back;
        back.check_invariants();
        assert_eq!(
            back.watcher_count(),
            published.watcher_count(),
            "the writers' copy lags the published snapshot"
        );
        assert_eq!(back.exact_key_count(), published.exact_key_count());
        assert_eq!(back.prefix_count(), published.prefix_count());
        assert!(
            back.same_layout(&published),
            "the two snapshots place entries differently: a sweep cannot resume across them"
        );
        let (queued, queued_groups) = {
            let combining = self
                .combining
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let groups = combining
                .adds
                .iter()
                .filter(
                    |add| matches!(add, Change::Add { watcher, .. } if watcher.group().is_some()),
                )
                .count();
            (combining.adds.len(), groups)
        };
        let groups_in_index = self.groups_in_index.load(Ordering::Relaxed);
        for ring in self.lock_groups().values() {
            ring.check_invariants();
        }
        // Group watchers hold no unit of the limit; their members do, one each.
        assert_eq!(
            published.watcher_count() - groups_in_index + self.resumes.len() + queued
                - queued_groups
                + self.members_held.load(Ordering::Relaxed),
            self.active.load(Ordering::Relaxed),
            "limit counter out of step with the index (and the watchers queued: from a revision, or for combining)"
        );
        // The owners' bindings are exactly the owned watchers that hold units: in the index,
        // queued (from a revision, or for combining), or group members still holding theirs.
        // (A release that forgot the owner would leave both the count and the binding
        // behind, which the book's own check cannot see.)
        let mut owned = Vec::new();
        let mut rings: Vec<crate::sync::ChannelArc<Ring>> =
            self.lock_groups().values().cloned().collect();
        let mut note = |watcher: &Watcher| match watcher.group() {
            Some(ring) => rings.push(ring.clone()),
            None if watcher.meta().owned() => owned.push(watcher.id()),
            None => {}
        };
        let mut cursor = crate::index::SweepCursor::new();
        published.sweep(&mut cursor, usize::MAX, &mut |_, list| {
            list.for_each(&mut note)
        });
        assert!(cursor.is_done(), "an unbounded sweep ends");
        for resume in self
            .resumes
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            note(&resume.watcher);
        }
        for add in &self
            .combining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .adds
        {
            if let Change::Add { watcher, .. } = add {
                note(watcher);
            }
        }
        // A ring is in the map and in the index, once each: by pointer (a check, so the
        // quadratic scan over the groups is affordable).
        let mut unique: Vec<crate::sync::ChannelArc<Ring>> = Vec::new();
        for ring in rings {
            if !unique
                .iter()
                .any(|u| crate::sync::ChannelArc::ptr_eq(u, &ring))
            {
                unique.push(ring);
            }
        }
        for ring in &unique {
            owned.extend(ring.held_owned_members());
        }
        owned.sort_unstable();
        self.with_owners(|book, _| {
            book.check_invariants();
            assert_eq!(
                book.bound_ids(),
                owned,
                "the owners' bindings are the owned watchers holding units"
            );
        });
    }

    /// Holds the writer lock, as a registration in progress would.
    #[cfg(test)]
    pub(crate) fn lock_writer_for_test(&self) -> impl Drop + '_ {
        self.writer.lock().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::sync::mpsc;

    use crate::dispatch::InlineDispatcher;
    use crate::event::WatchResponse;
    use crate::{RegisterError, WatchRegistry, WatchSpec};

    /// A key whose addition panics inside its first application (to the back snapshot),
    /// after its insert: the back then holds half a batch.
    pub(super) const PANIC_FIRST: &[u8] = b"/test/panic-in-first-apply";
    /// A key whose addition panics inside its second application, after the swap.
    pub(super) const PANIC_SECOND: &[u8] = b"/test/panic-in-second-apply";

    /// The fault these tests inject: a bug in an index, which no input can reach.
    pub(super) fn fault(pattern: &[u8], trigger: &[u8]) {
        if pattern == trigger {
            panic!("injected index fault");
        }
    }

    fn put(key: &[u8], revision: u64) -> WatchResponse {
        WatchResponse {
            key: Bytes::copy_from_slice(key),
            revision,
            ..Default::default()
        }
    }

    fn setup() -> (Arc<WatchRegistry>, InlineDispatcher) {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(8, tx));
        let inline = InlineDispatcher::new(registry.clone(), rx);
        (registry, inline)
    }

    #[test]
    fn a_panic_before_the_swap_publishes_nothing_of_its_batch_and_the_next_writer_mends_the_index()
    {
        let (registry, mut inline) = setup();
        let mut before = registry.register(Bytes::from_static(b"/a"), true).unwrap();
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            registry.register(Bytes::from_static(PANIC_FIRST), true)
        }));
        assert!(panicked.is_err(), "the publishing thread reports the panic");
        assert_eq!(registry.active_watcher_count(), 1, "its unit came back");
        assert_eq!(registry.prev_kv_watcher_count(), 1);
        assert_eq!(registry.metrics().read().publishes_interrupted, 1);

        let mut after = registry.register(Bytes::from_static(b"/b"), false).unwrap();
        registry.check_invariants();
        for (revision, key) in [b"/a".as_slice(), PANIC_FIRST, b"/b"]
            .into_iter()
            .enumerate()
        {
            inline.dispatch(&put(key, revision as u64 + 1));
        }
        assert_eq!(before.receiver_mut().try_recv().unwrap().revision, 1);
        assert_eq!(after.receiver_mut().try_recv().unwrap().revision, 3);
        assert!(before.receiver_mut().try_recv().is_err());
        registry.check_invariants();
    }

    /// A `tracing` subscriber that panics on the publish's warnings: the mend's then panics.
    struct PanicOnEvent;

    impl tracing::Subscriber for PanicOnEvent {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let meta = event.metadata();
            // Only the publish's own warnings (the mend's): a panic elsewhere, in a drop
            // during the unwinding, would abort.
            if *meta.level() == tracing::Level::WARN
                && meta.file().is_some_and(|f| f.ends_with("publish.rs"))
            {
                panic!("a subscriber that panics on {:?}", meta.name());
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_panic_while_mending_gives_the_registration_its_units_back() {
        let (registry, mut inline) = setup();
        let torn = catch_unwind(AssertUnwindSafe(|| {
            registry.register(Bytes::from_static(PANIC_FIRST), true)
        }));
        assert!(torn.is_err(), "the back is torn");
        assert_eq!(registry.active_watcher_count(), 0);
        // The next publish mends first, and the mend's warning panics in the subscriber.
        let panicked = tracing::subscriber::with_default(PanicOnEvent, || {
            catch_unwind(AssertUnwindSafe(|| {
                registry.register(Bytes::from_static(b"/x"), true)
            }))
        });
        assert!(panicked.is_err(), "the registration reports the panic");
        assert_eq!(registry.active_watcher_count(), 0, "its unit came back");
        assert_eq!(registry.prev_kv_watcher_count(), 0);
        let mut after = registry.register(Bytes::from_static(b"/x"), false).unwrap();
        registry.check_invariants();
        inline.dispatch(&put(b"/x", 1));
        assert_eq!(after.receiver_mut().try_recv().unwrap().revision, 1);
        assert_eq!(
            registry.watcher_count(&Bytes::from_static(b"/x")),
            1,
            "only the later one"
        );
        registry.check_invariants();
    }

    #[test]
    fn a_panic_after_the_swap_keeps_the_published_batch_and_the_next_writer_mends_the_back() {
        let (registry, mut inline) = setup();
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            registry.register(Bytes::from_static(PANIC_SECOND), false)
        }));
        assert!(panicked.is_err());
        // Published whole, then its handle went with the unwinding: it counts until the
        // dispatcher applies that unregistration, as any dropped handle's watcher does.
        assert_eq!(registry.active_watcher_count(), 1);
        let mut next = registry.register(Bytes::from_static(b"/n"), false).unwrap();
        registry.check_invariants();
        inline.dispatch(&put(b"/n", 1));
        assert_eq!(next.receiver_mut().try_recv().unwrap().revision, 1);
        assert_eq!(
            registry.active_watcher_count(),
            1,
            "the dropped one is gone"
        );
        registry.check_invariants();
    }

    /// A group of one member on `/g`, its ring, and a dispatcher whose lag cancels every
    /// watcher (the way to take a group's watcher out of the index in a test).
    fn group_under_lag_cancel() -> (
        Arc<WatchRegistry>,
        InlineDispatcher,
        crate::group::GroupedWatcherHandle,
        crate::sync::ChannelArc<crate::group::Ring>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(8, tx));
        let inline = InlineDispatcher::new(registry.clone(), rx).with_options(
            crate::DispatchOptions::default().with_lag_policy(crate::LagPolicy::CancelWatchers),
        );
        let mut first = registry.watch(WatchSpec::exact("/g").grouped()).unwrap();
        let ring = crate::sync::ChannelArc::clone(first.receiver_mut().ring_for_test());
        (registry, inline, first, ring)
    }

    #[test]
    fn a_group_whose_watcher_left_before_it_entered_the_map_never_holds_its_key() {
        let (registry, mut inline, first, ring) = group_under_lag_cancel();
        // The lag cancel takes the group's watcher out of the index; the registering
        // thread's `add_group` comes only after that.
        inline.report_lag(1);
        registry.shared().add_group(ring);
        let mut members: Vec<_> = (0..2)
            .map(|_| registry.watch(WatchSpec::exact("/g").grouped()).unwrap())
            .collect();
        assert_eq!(
            members[0].receiver_mut().group_size(),
            2,
            "one group, not a ring each"
        );
        inline.dispatch(&put(b"/g", 2));
        for member in &mut members {
            assert_eq!(member.receiver_mut().try_recv().unwrap().revision, 2);
        }
        drop(first);
        registry.check_invariants();
    }

    #[test]
    fn a_group_released_while_a_dispatcher_still_holds_its_sender_takes_no_new_member() {
        let (registry, mut inline, first, ring) = group_under_lag_cancel();
        // A sender held as a dispatcher holds one for the event in flight: the ring stays
        // open after its watcher leaves the index and its members are released.
        let mut in_flight = Vec::new();
        registry
            .snapshot()
            .exact_watchers(b"/g")
            .expect("the group's watcher")
            .for_each(&mut |w| in_flight.push(w.clone()));
        inline.report_lag(1);
        assert!(!ring.is_closed() && !ring.takes_members());
        registry.shared().add_group(ring);
        let mut late = registry.watch(WatchSpec::exact("/g").grouped()).unwrap();
        drop(in_flight);
        inline.dispatch(&put(b"/g", 2));
        assert_eq!(
            late.receiver_mut().try_recv().map(|e| e.revision),
            Ok(2),
            "joined a released ring that then closed"
        );
        drop((first, late));
        inline.process_unregistrations();
        assert_eq!(registry.active_watcher_count(), 0);
        registry.check_invariants();
    }

    #[test]
    fn a_member_joining_while_its_groups_cancel_waits_for_the_writer_lock_gets_a_live_group() {
        let (registry, mut inline, mut first, ring) = group_under_lag_cancel();
        inline.dispatch(&put(b"/g", 1));
        // The cancel is sent at once; the removal waits for the writer lock.
        let writer = registry.lock_writer_for_test();
        inline.report_lag(1);
        assert!(inline.has_pending_removals());
        assert!(!ring.takes_members(), "a cancelled ring takes no member");
        drop(writer);
        let mut late = registry.watch(WatchSpec::exact("/g").grouped()).unwrap();
        inline.dispatch(&put(b"/g", 2));
        assert_eq!(late.receiver_mut().try_recv().map(|e| e.revision), Ok(2));
        let first = first.receiver_mut();
        assert_eq!(first.try_recv().map(|e| e.revision), Ok(1));
        assert_eq!(
            first.try_recv().map(|e| e.cancel_reason()),
            Ok(Some(crate::CancelReason::Lagged { resume_from: 2 }))
        );
        assert!(first.try_recv().is_err());
        drop(late);
        inline.process_unregistrations();
        registry.check_invariants();
    }

    #[test]
    fn a_member_of_a_cancelled_group_gets_no_progress_above_what_it_received() {
        let (registry, mut inline, mut first, _ring) = group_under_lag_cancel();
        inline.dispatch(&put(b"/g", 1));
        // The cancel is sent at once; the removal (which releases the member) waits.
        let writer = registry.lock_writer_for_test();
        inline.report_lag(1);
        inline.dispatch(&put(b"/g", 2));
        assert!(!inline.request_progress(first.progress_request()));
        drop(writer);
        let got: Vec<_> = std::iter::from_fn(|| first.receiver_mut().try_recv().ok())
            .map(|e| (e.event_type, e.revision))
            .collect();
        use crate::WatchEventType::{Canceled, Put};
        assert_eq!(got, [(Put, 1), (Canceled, 2)]);
        registry.check_invariants();
    }

    #[test]
    fn registrations_combined_into_a_publish_that_panicked_are_refused_not_reported_published() {
        let (registry, mut inline) = setup();
        let writer = registry.lock_writer_for_test();
        let fails = {
            let registry = registry.clone();
            std::thread::spawn(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    registry
                        .register(Bytes::from_static(PANIC_FIRST), false)
                        .map(drop)
                }))
            })
        };
        let shared = registry.shared();
        while shared.queued_ticket.load(crate::sync::Ordering::Relaxed) < 1 {
            std::thread::yield_now();
        }
        let carried = {
            let registry = registry.clone();
            std::thread::spawn(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    // A watcher, a new group and a member joining it: all ride the batch.
                    registry
                        .watch_many([
                            WatchSpec::exact("/c").grouped(),
                            WatchSpec::exact("/c").grouped(),
                        ])
                        .into_iter()
                        .map(|result| result.map(drop))
                        .collect::<Vec<_>>()
                }))
            })
        };
        while shared.queued_ticket.load(crate::sync::Ordering::Relaxed) < 2 {
            std::thread::yield_now();
        }
        drop(writer);
        let (fails, carried) = (fails.join().unwrap(), carried.join().unwrap());
        // Whichever thread published the batch reports the panic; the other is refused.
        match (fails, carried) {
            (Err(_), Ok(results)) => assert_eq!(
                results,
                vec![Err(RegisterError::PublishInterrupted); 2],
                "the grouped batch rode the publish that panicked"
            ),
            (Ok(refused), Err(_)) => {
                assert_eq!(refused, Err(crate::WatchError::LimitExceeded(0)))
            }
            (fails, carried) => panic!("one panic and one refusal, got {fails:?} and {carried:?}"),
        }
        assert_eq!(registry.metrics().read().publishes_interrupted, 1);
        assert_eq!(
            registry.metrics().read().registrations_combined,
            0,
            "a refused registration was not published by another writer"
        );
        inline.dispatch(&put(b"/c", 1)); // applies the handles' unregistrations
        assert_eq!(registry.active_watcher_count(), 0, "every unit came back");
        let mut handle = registry.watch(WatchSpec::exact("/c").grouped()).unwrap();
        registry.check_invariants();
        inline.dispatch(&put(b"/c", 2));
        assert_eq!(handle.receiver_mut().try_recv().unwrap().revision, 2);
        registry.check_invariants();
    }
}
