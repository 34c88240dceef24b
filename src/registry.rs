//! [`WatchRegistry`]: registration, limits and the write side of the publish protocol.

use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::{Arc, PoisonError, TryLockError};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{trace, warn};

use crate::channel::{self, CompactReceiver};
use crate::error::WatchError;
use crate::event::WatchEvent;
use crate::handle::{CompactWatcherHandle, WatcherHandle};
use crate::index::Snapshot;
use crate::metrics::{Counters, MetricsHandle};
use crate::sink::{Sink, Watcher};
use crate::sync::{
    exclusive, AtomicU64, AtomicUsize, Mutex, Ordering, SnapshotArc, SnapshotCell, SnapshotGuard,
};

/// The largest `watcher_buffer_size` a channel can honour: tokio's bounded channel takes at
/// most `Semaphore::MAX_PERMITS` slots, one of which is reserved for the cancel sentinel.
pub const MAX_WATCHER_BUFFER_SIZE: usize = tokio::sync::Semaphore::MAX_PERMITS - 1;

/// One change to the index, applied to each of the two snapshots the writers keep.
enum Change {
    Add {
        key: Bytes,
        is_prefix: bool,
        watcher: Watcher,
    },
    Remove {
        id: u64,
        key: Bytes,
    },
}

impl Change {
    /// Applies the change; returns the watcher a removal took out.
    fn apply(&self, index: &mut Snapshot<Watcher>) -> Option<Watcher> {
        match self {
            Change::Add {
                key,
                is_prefix: true,
                watcher,
            } => {
                index.insert_prefix(key.clone(), watcher.clone());
                None
            }
            Change::Add { key, watcher, .. } => {
                index.insert_exact(key.clone(), watcher.clone());
                None
            }
            // Like the reference, an unregistration does not say which kind it is.
            Change::Remove { id, key } => index
                .remove_exact(key, *id)
                .or_else(|| index.remove_prefix(key, *id)),
        }
    }
}

/// The writers' side of the publish protocol: two snapshots, used in turn.
///
/// The published snapshot (the *front*) is never changed while it is published. The writers
/// keep the previous front (the *back*), equal in content. A write waits until no reader
/// holds the back any more, applies its changes to it **in place**, publishes it, and then
/// does the same to the old front it got back: waits for its last readers to leave and
/// replays the changes. Readers hold a snapshot for one event (a batch of eight queued
/// events, or one heartbeat sweep slice) at most and never wait for anything while holding
/// it, so the waits are short and cannot deadlock; nothing a reader holds is ever changed;
/// nothing is ever copied. Each change
/// costs two in-place updates of flat structures.
pub(crate) struct Writer {
    back: SnapshotArc<Snapshot<Watcher>>,
}

/// Removals handed to one writer transaction at most, so that registrations interleave with
/// a burst of unregistrations instead of waiting for all of it.
const REMOVAL_BATCH: usize = 1024;

/// Registers watchers and owns the index they live in. Share it with an `Arc`.
///
/// Readers (the dispatcher) load the current snapshot of the index without locking. Writers
/// (registration, unregistration, cleanup) take one mutex among themselves, update the
/// snapshot no reader can see and publish it whole (the publish protocol: the
/// [`architecture`](crate::architecture) notes).
pub struct WatchRegistry {
    shared: Arc<Shared>,
}

/// The registry's state. Owned by the [`WatchRegistry`] alone; handles and metrics hold it
/// weakly (a dropped handle upgrades to unregister its watcher itself), so that dropping the
/// registry drops the snapshots and with them every watcher's sender: streams then end.
pub(crate) struct Shared {
    /// What readers see.
    published: SnapshotCell<Snapshot<Watcher>>,
    /// Serialises writers and holds the snapshot they reuse.
    writer: Mutex<Writer>,
    next_id: AtomicU64,
    /// Active watchers, for the limit.
    active: AtomicUsize,
    prev_kv_watchers: Arc<StdAtomicUsize>,
    watcher_buffer_size: usize,
    max_watcher_count: usize,
    unregister_tx: mpsc::UnboundedSender<(u64, Bytes)>,
    pub(crate) counters: Arc<Counters>,
}

impl std::fmt::Debug for WatchRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchRegistry")
            .field("active", &self.shared.active.load(Ordering::Relaxed))
            .field("watcher_buffer_size", &self.shared.watcher_buffer_size)
            .field("max_watcher_count", &self.shared.max_watcher_count)
            .finish_non_exhaustive()
    }
}

impl WatchRegistry {
    /// A registry without a watcher limit.
    ///
    /// Each watcher's channel holds `watcher_buffer_size` events plus one slot reserved for
    /// the cancel sentinel. Give `unregister_tx`'s receiver to the dispatcher: a dropped
    /// [`WatcherHandle`] removes its watcher at once when no other writer is busy, and
    /// otherwise sends `(id, key)` there for the dispatcher to apply before its next event.
    pub fn new(
        watcher_buffer_size: usize,
        unregister_tx: mpsc::UnboundedSender<(u64, Bytes)>,
    ) -> Self {
        Self::new_with_limits(watcher_buffer_size, usize::MAX, unregister_tx)
    }

    /// A registry that refuses registrations with [`WatchError::LimitExceeded`] while
    /// `max_watcher_count` watchers are active (0 refuses every registration).
    ///
    /// A `watcher_buffer_size` above [`MAX_WATCHER_BUFFER_SIZE`] is clamped to it, with a
    /// warning: the reference would overflow computing `size + 1`, then panic.
    pub fn new_with_limits(
        watcher_buffer_size: usize,
        max_watcher_count: usize,
        unregister_tx: mpsc::UnboundedSender<(u64, Bytes)>,
    ) -> Self {
        if watcher_buffer_size > MAX_WATCHER_BUFFER_SIZE {
            warn!(
                watcher_buffer_size,
                clamped_to = MAX_WATCHER_BUFFER_SIZE,
                "watcher_buffer_size exceeds what a channel can hold; clamping"
            );
        }
        let front = Snapshot::new();
        // Same hash seeds, same changes: the twins keep one layout (see `Snapshot::sweep`).
        let back = front.empty_twin();
        let shared = Shared {
            published: SnapshotCell::new(SnapshotArc::new(front)),
            writer: Mutex::new(Writer {
                back: SnapshotArc::new(back),
            }),
            next_id: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            prev_kv_watchers: Arc::new(StdAtomicUsize::new(0)),
            watcher_buffer_size: watcher_buffer_size.min(MAX_WATCHER_BUFFER_SIZE),
            max_watcher_count,
            unregister_tx,
            counters: Arc::default(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Watches one exact key. Any bytes are a valid key, the empty key included.
    ///
    /// `prev_kv = true` asks for each event's previous value (see [`WatchEvent::prev_value`]).
    /// The watcher is visible to every event broadcast after this returns.
    pub fn register(&self, key: Bytes, prev_kv: bool) -> Result<WatcherHandle, WatchError> {
        self.add_watcher(key, false, prev_kv, Self::tokio_channel)
            .map(|(id, key, receiver)| WatcherHandle::new(id, key, false, receiver, &self.shared))
    }

    /// Watches every key that starts with `prefix`, which must start and end with `/`
    /// (otherwise [`WatchError::InvalidPrefix`], checked before the limit).
    pub fn register_prefix(
        &self,
        prefix: Bytes,
        prev_kv: bool,
    ) -> Result<WatcherHandle, WatchError> {
        check_prefix(&prefix)?;
        self.add_watcher(prefix, true, prev_kv, Self::tokio_channel)
            .map(|(id, key, receiver)| WatcherHandle::new(id, key, true, receiver, &self.shared))
    }

    /// Like [`Self::register`], with a compact channel: an idle watcher costs about 100
    /// bytes instead of a tokio channel's 4.3 KB (its queue is allocated only while events
    /// wait). Same events, bound, cancel sentinel, limit and drop-to-unregister. (A compact
    /// channel holds at most `u32::MAX` slots: a larger buffer size is clamped to that.)
    pub fn register_compact(
        &self,
        key: Bytes,
        prev_kv: bool,
    ) -> Result<CompactWatcherHandle, WatchError> {
        self.add_watcher(key, false, prev_kv, Self::compact_channel)
            .map(|(id, key, receiver)| {
                CompactWatcherHandle::new(id, key, false, receiver, &self.shared)
            })
    }

    /// Like [`Self::register_prefix`], with a compact channel (see
    /// [`Self::register_compact`]).
    pub fn register_prefix_compact(
        &self,
        prefix: Bytes,
        prev_kv: bool,
    ) -> Result<CompactWatcherHandle, WatchError> {
        check_prefix(&prefix)?;
        self.add_watcher(prefix, true, prev_kv, Self::compact_channel)
            .map(|(id, key, receiver)| {
                CompactWatcherHandle::new(id, key, true, receiver, &self.shared)
            })
    }

    fn tokio_channel(capacity: usize) -> (Sink, mpsc::Receiver<WatchEvent>) {
        let (sender, receiver) = mpsc::channel(capacity);
        (Sink::Tokio(sender), receiver)
    }

    fn compact_channel(capacity: usize) -> (Sink, CompactReceiver) {
        let (sender, receiver) = channel::channel(capacity);
        (Sink::Compact(sender), receiver)
    }

    /// Takes a unit of the limit, then makes the channel (`open(slots)`) and publishes the
    /// watcher. A refused registration allocates nothing.
    fn add_watcher<R>(
        &self,
        key: Bytes,
        is_prefix: bool,
        prev_kv: bool,
        open: impl FnOnce(usize) -> (Sink, R),
    ) -> Result<(u64, Bytes, R), WatchError> {
        let shared = &self.shared;
        shared.reserve_slot()?;
        if prev_kv {
            shared.prev_kv_watchers.fetch_add(1, Ordering::Relaxed);
        }
        // Ids only order registrations; nothing is published through them.
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (sink, receiver) = open(shared.watcher_buffer_size + 1);
        let change = Change::Add {
            key: key.clone(),
            is_prefix,
            watcher: Watcher::new(id, prev_kv, sink),
        };
        let mut writer = shared.writer.lock().unwrap_or_else(PoisonError::into_inner);
        shared.publish(&mut writer, &[change]);
        drop(writer);
        trace!(watcher_id = id, key = ?key, is_prefix, prev_kv, "Watcher registered");
        Ok((id, key, receiver))
    }

    /// The current snapshot, for the dispatcher. Never blocks.
    #[inline]
    pub(crate) fn snapshot(&self) -> SnapshotGuard<Snapshot<Watcher>> {
        self.shared.published.load()
    }

    /// See [`Shared::try_remove`].
    pub(crate) fn try_remove(&self, removals: &mut Vec<(u64, Bytes)>) -> bool {
        self.shared.try_remove(removals)
    }

    /// Holds the writer lock, as a registration in progress would.
    #[cfg(test)]
    pub(crate) fn lock_writer_for_test(&self) -> impl Drop + '_ {
        self.shared.writer.lock().unwrap()
    }
}

/// A prefix must start and end with `/`.
fn check_prefix(prefix: &[u8]) -> Result<(), WatchError> {
    if prefix.starts_with(b"/") && prefix.ends_with(b"/") {
        Ok(())
    } else {
        Err(WatchError::InvalidPrefix)
    }
}

impl Shared {
    /// Active watchers, watched keys, watched prefixes.
    pub(crate) fn gauges(&self) -> (usize, usize, usize) {
        let snapshot = self.published.load();
        (
            self.active.load(Ordering::Relaxed),
            snapshot.exact_key_count(),
            snapshot.prefix_count(),
        )
    }

    /// Takes one unit of the limit, or fails without taking any: concurrent registrations
    /// never overshoot, and a refused one never disturbs an accepted one.
    fn reserve_slot(&self) -> Result<(), WatchError> {
        let max = self.max_watcher_count;
        // Relaxed: the counter guards a quantity, not the visibility of other data.
        self.active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| WatchError::LimitExceeded(max))
    }

    /// Applies `changes` and publishes the result (see [`Writer`]). Counts removed watchers
    /// out of the limit and prev_kv counters, once each.
    fn publish(&self, writer: &mut Writer, changes: &[Change]) {
        let back = exclusive(&mut writer.back);
        for change in changes {
            if let Some(removed) = change.apply(back) {
                self.active.fetch_sub(1, Ordering::Relaxed);
                if removed.prev_kv() {
                    self.prev_kv_watchers.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        writer.back = self.published.swap(SnapshotArc::clone(&writer.back));
        Counters::add(&self.counters.snapshots_published, 1);
        // Bring the old front up to date now rather than at the next write: it must not keep
        // removed watchers' channels open.
        let back = exclusive(&mut writer.back);
        for change in changes {
            change.apply(back);
        }
    }

    /// Removes `(id, key)` pairs in transactions of at most [`REMOVAL_BATCH`], never waiting
    /// for the writer lock: returns false, with what is left in `removals`, when another
    /// writer holds it.
    pub(crate) fn try_remove(&self, removals: &mut Vec<(u64, Bytes)>) -> bool {
        while !removals.is_empty() {
            let mut writer = match self.writer.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return false,
            };
            let start = removals.len().saturating_sub(REMOVAL_BATCH);
            let batch: Vec<Change> = removals
                .drain(start..)
                .map(|(id, key)| Change::Remove { id, key })
                .collect();
            self.publish(&mut writer, &batch);
        }
        true
    }

    /// Unregisters a dropped handle's watcher: at once if no other writer holds the lock,
    /// otherwise through the dispatcher, which applies it before its next event. Either way
    /// the drop never waits.
    pub(crate) fn unregister(&self, id: u64, key: Bytes) {
        let mut removal = vec![(id, key)];
        if !self.try_remove(&mut removal) {
            let (id, key) = removal.pop().expect("not applied");
            // A closed channel means the dispatcher is gone, and with it any reader.
            let _ = self.unregister_tx.send((id, key));
        }
    }
}

impl WatchRegistry {
    /// A handle to this registry's counters and gauges (see [`MetricsHandle`]). Always on:
    /// the counters cost the dispatcher a few relaxed atomic adds per event.
    pub fn metrics(&self) -> MetricsHandle {
        MetricsHandle::new(&self.shared)
    }

    /// The counters, for the dispatcher.
    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Active watchers that asked for previous values.
    pub fn prev_kv_watcher_count(&self) -> usize {
        self.shared.prev_kv_watchers.load(Ordering::Relaxed)
    }

    /// The shared counter behind [`Self::prev_kv_watcher_count`], for a state machine that
    /// reads previous values only while someone wants them.
    pub fn prev_kv_watcher_count_arc(&self) -> Arc<StdAtomicUsize> {
        Arc::clone(&self.shared.prev_kv_watchers)
    }

    /// Exact watchers registered on `key`.
    pub fn watcher_count(&self, key: &Bytes) -> usize {
        self.snapshot().exact_watchers_of(key)
    }

    /// Distinct keys with exact watchers.
    pub fn watched_key_count(&self) -> usize {
        self.snapshot().exact_key_count()
    }

    /// Prefix watchers registered on exactly `prefix`.
    pub fn prefix_watcher_count(&self, prefix: &Bytes) -> usize {
        self.snapshot().prefix_watchers_of(prefix)
    }

    /// Distinct prefixes with watchers.
    pub fn watched_prefix_count(&self) -> usize {
        self.snapshot().prefix_count()
    }

    /// Active watchers, exact and prefix: those counted against the limit.
    pub fn active_watcher_count(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// The buffer size each new watcher gets (after clamping).
    pub fn watcher_buffer_size(&self) -> usize {
        self.shared.watcher_buffer_size
    }

    /// Checks the structural invariants of the published index (and of the writers' spare
    /// copy, which must hold the same watchers) and that the limit counter matches it. For
    /// tests and fuzzing; panics with a description on failure.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let published = self.snapshot();
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
        assert_eq!(
            published.watcher_count(),
            self.shared.active.load(Ordering::Relaxed),
            "limit counter out of step with the index"
        );
    }
}
