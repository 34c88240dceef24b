//! [`WatchRegistry`]: registration, limits and the public counts; the write side of the
//! publish protocol is `publish`.

use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{trace, warn};

use crate::channel;
use crate::error::WatchError;
use crate::group::GroupMap;
use crate::handle::{CompactWatcherHandle, WatcherHandle};
use crate::index::Snapshot;
use crate::meta::{Flags, Meta, TargetKind};
use crate::metrics::{Counters, MetricsHandle};
use crate::options::RegistryOptions;
use crate::owners::OwnerId;
use crate::publish::{Change, Removal, Resume, Shared};
use crate::sink::{Shape, Sink, Watcher};
use crate::spec::{AnyHandle, ChannelKind, RegisterError, Target, WatchSpec};
use crate::sync::{Ordering, SnapshotGuard};

/// The largest `watcher_buffer_size` a channel can honour: tokio's bounded channel takes at
/// most `Semaphore::MAX_PERMITS` slots, one of which is reserved for the cancel sentinel.
pub const MAX_WATCHER_BUFFER_SIZE: usize = tokio::sync::Semaphore::MAX_PERMITS - 1;

/// Registers watchers and owns the index they live in. Share it with an `Arc`.
///
/// Readers (the dispatcher) load the current snapshot of the index without locking. Writers
/// (registration, unregistration, cleanup) take one mutex among themselves, update the
/// snapshot no reader can see and publish it whole (the publish protocol: the
/// [`architecture`](crate::architecture) notes).
pub struct WatchRegistry {
    shared: Arc<Shared>,
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
    /// [`WatcherHandle`] sends `(id, key)` there, and the dispatcher removes the watcher
    /// before its next event (see [`RegistryOptions::with_release_at_drop`] for removal at
    /// the drop itself).
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
        let shared = Shared::new(
            watcher_buffer_size.min(MAX_WATCHER_BUFFER_SIZE),
            max_watcher_count,
            unregister_tx,
        );
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Registers the watch `spec` describes; returns its handle (a [`WatcherHandle`], a
    /// [`CompactWatcherHandle`] for a `.compact()` spec, a
    /// [`GroupedWatcherHandle`](crate::GroupedWatcherHandle) for a `.grouped()` one). The watcher is visible to every
    /// event broadcast after this returns (a watch [from a revision](WatchSpec::from_revision)
    /// gets every matching event from that revision on instead). Checks come in a fixed
    /// order, each refusal taking no id and allocating nothing (but once: a global refusal of
    /// an owned watch whose owner had no entry may leave the owner table grown by that
    /// entry's room): the target's form, the registry's key limits, a grouped watch from a
    /// revision, the owner's cap, then the global limit (see [`RegisterError`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use watchtrie::{RegisterError, WatchRegistry, WatchSpec};
    ///
    /// # let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    /// let registry = Arc::new(WatchRegistry::new_with_limits(16, 1, tx));
    /// let handle = registry.watch(WatchSpec::exact("/config/timeout").prev_kv(true)).unwrap();
    /// assert_eq!(
    ///     registry.watch(WatchSpec::prefix("/config/").compact()).unwrap_err(),
    ///     RegisterError::LimitExceeded { max: 1 },
    /// );
    /// # drop(handle);
    /// ```
    pub fn watch<K: ChannelKind>(&self, spec: WatchSpec<K>) -> Result<K::Handle, RegisterError> {
        let (handle, entry) = self.prepare(spec, None)?;
        match entry {
            Entry::Live(add) => self.shared.publish_additions([add])?,
            Entry::NewGroup(add, ring) => {
                self.shared.publish_additions([add])?;
                self.shared.add_group(ring);
            }
            Entry::Joined { .. } => {}
            Entry::FromRevision(resume) => self.shared.resumes.push(resume),
        }
        Ok(handle)
    }

    /// Registers every watch of `specs`, as [`Self::watch`] would one by one, in one
    /// publish: one wait for the dispatcher's readers and one snapshot swap for all of
    /// them, where one call each pays its own (with `n` watchers, about what `n` separate
    /// registrations racing from many threads cost). Each result is what `watch` would
    /// have returned for that spec; a refusal (a bad target, the limit, an owner's cap)
    /// refuses that spec alone. Every watcher is visible to every event broadcast after this
    /// returns.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use watchtrie::{RegisterError, WatchRegistry, WatchSpec};
    ///
    /// # let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    /// let registry = Arc::new(WatchRegistry::new_with_limits(16, 2, tx));
    /// let results = registry.watch_many(
    ///     ["/a", "/b", "/c"].map(|key| WatchSpec::exact(key).compact()),
    /// );
    /// assert!(results[0].is_ok() && results[1].is_ok());
    /// assert_eq!(results[2].as_ref().unwrap_err(), &RegisterError::LimitExceeded { max: 2 });
    /// ```
    pub fn watch_many<K: ChannelKind>(
        &self,
        specs: impl IntoIterator<Item = WatchSpec<K>>,
    ) -> Vec<Result<K::Handle, RegisterError>> {
        // The caller's iterator runs to its end before anything is reserved: if it panics,
        // no slot is left taken by a watcher that would never be published.
        let specs: Vec<WatchSpec<K>> = specs.into_iter().collect();
        let mut adds = Vec::with_capacity(specs.len());
        // The groups this batch creates: its later specs of the same key and options join
        // them before they are published (they are, with the batch, before this returns).
        let mut new_groups = GroupMap::default();
        // Each result, and whether it is published by this call's publish.
        let results: Vec<(Result<K::Handle, RegisterError>, bool)> = specs
            .into_iter()
            .map(|spec| {
                let (handle, entry) = match self.prepare(spec, Some(&new_groups)) {
                    Ok(prepared) => prepared,
                    Err(refused) => return (Err(refused), false),
                };
                let published_here = match entry {
                    Entry::Live(add) => {
                        adds.push(add);
                        true
                    }
                    Entry::NewGroup(add, ring) => {
                        adds.push(add);
                        new_groups.insert(ring.key.clone(), ring);
                        true
                    }
                    Entry::Joined { unpublished } => unpublished,
                    Entry::FromRevision(resume) => {
                        self.shared.resumes.push(resume);
                        false
                    }
                };
                (Ok(handle), published_here)
            })
            .collect();
        let published = if adds.is_empty() {
            Ok(())
        } else {
            self.shared.publish_additions(adds)
        };
        if published.is_ok() {
            for ring in new_groups.into_values() {
                self.shared.add_group(ring);
            }
        }
        results
            .into_iter()
            .map(|(result, published_here)| match (result, published) {
                // Its handle goes: nothing of it was published.
                (Ok(_), Err(lost)) if published_here => Err(lost),
                (result, _) => result,
            })
            .collect()
    }

    /// Everything of a registration but making it visible: the checks, the reservations,
    /// the id, the channel and the handle. What remains is to publish the entry (or queue
    /// it for the dispatcher). A grouped spec joins a published group, or one of
    /// `unpublished` (a batch's own), or creates one.
    fn prepare<K: ChannelKind>(
        &self,
        spec: WatchSpec<K>,
        unpublished: Option<&GroupMap>,
    ) -> Result<(K::Handle, Entry), RegisterError> {
        let WatchSpec {
            target,
            flags,
            owner,
            start,
            ..
        } = spec;
        target.check(&self.shared.options())?;
        if K::GROUPED && start.is_some() {
            return Err(RegisterError::GroupedFromRevision);
        }
        let shared = &self.shared;
        // The owner's cap first: a registration its owner refuses never holds a unit of the
        // global limit, not even for a moment, so it cannot refuse anyone else's.
        if let Some(owner) = owner {
            if let Err(refused) = shared.with_owners(|book, default| book.reserve(owner, default)) {
                Counters::add(&shared.counters.owner_refusals, 1);
                return Err(refused);
            }
        }
        if let Err(refused) = shared.reserve_slot() {
            if let Some(owner) = owner {
                shared.with_owners(|book, _| book.unreserve(owner));
            }
            return Err(refused);
        }
        // Ids only order registrations; nothing is published through them.
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if id > Meta::MAX_ID {
            shared.release_slot();
            if let Some(owner) = owner {
                shared.with_owners(|book, _| book.unreserve(owner));
            }
            return Err(RegisterError::IdsExhausted);
        }
        if let Some(owner) = owner {
            shared.with_owners(|book, _| book.bind(id, owner));
        }
        let flags = flags
            .with_if(Flags::OWNED, owner.is_some())
            .with_if(Flags::RESUMED, start.is_some());
        let prev_kv = flags.contains(Flags::PREV_KV);
        if prev_kv {
            shared.prev_kv_watchers.fetch_add(1, Ordering::Relaxed);
        }
        let kind = target.kind();
        let key = target.stored();
        if K::GROUPED {
            return self.join_or_create_group::<K>(id, kind, key, flags, unpublished);
        }
        let meta = Meta::new(id, kind, flags);
        let capacity = shared.watcher_buffer_size + 1;
        let (sink, handle) = if K::COMPACT {
            let (sender, receiver) = channel::channel(capacity, Shape::of(meta));
            let handle = CompactWatcherHandle::new(meta, key.clone(), receiver, shared);
            (Sink::Compact(sender), AnyHandle::Compact(handle))
        } else {
            let (sender, receiver) = mpsc::channel(capacity);
            let handle = WatcherHandle::new(meta, key.clone(), receiver, shared);
            (Sink::Tokio(sender), AnyHandle::DropIn(handle))
        };
        trace!(watcher_id = id, key = ?key, ?kind, prev_kv, compact = K::COMPACT, "Watcher registered");
        let watcher = Watcher::new(meta, sink);
        let entry = match start {
            // The dispatcher adds it, once it knows where the watcher's history starts.
            Some(start) => Entry::FromRevision(Resume {
                kind,
                pattern: key,
                watcher,
                start,
                progress_due: None,
            }),
            None => Entry::Live(Change::add(kind, key, watcher)),
        };
        Ok((K::from_any(handle), entry))
    }

    /// A member `id` (its units reserved) joins the published group of its target and
    /// options, or the batch's unpublished one, or creates one (its watcher published by
    /// the caller, then mapped).
    fn join_or_create_group<K: ChannelKind>(
        &self,
        id: u64,
        kind: TargetKind,
        pattern: Bytes,
        flags: Flags,
        unpublished: Option<&GroupMap>,
    ) -> Result<(K::Handle, Entry), RegisterError> {
        use crate::group::{GroupKey, GroupReceiver, GroupedWatcherHandle, Ring};
        let shared = &self.shared;
        // Its units are held from here; `release_member` gives them back, once.
        shared.members_held.fetch_add(1, Ordering::Relaxed);
        let owned = flags.contains(Flags::OWNED);
        let key = GroupKey {
            kind,
            pattern,
            flags: GroupKey::delivery_flags(flags),
        };
        let handle = |ring, slot| {
            let receiver = GroupReceiver::new(ring, slot);
            K::from_any(AnyHandle::Grouped(GroupedWatcherHandle::new(receiver)))
        };
        let joined = shared
            .join_group(&key, id, owned)
            .map(|(ring, slot)| (ring, slot, true))
            .or_else(|| {
                // Only this batch holds it, so no lock beyond the ring's; it is published
                // with the batch, before the member's handle is returned.
                let ring = unpublished?.get(&key)?;
                let slot = ring.join(id, owned)?;
                Some((crate::sync::ChannelArc::clone(ring), slot, false))
            });
        if let Some((ring, slot, published)) = joined {
            trace!(
                watcher_id = id,
                group = ring.watcher_id,
                "Joined a watch group"
            );
            Counters::add(&shared.counters.group_joins, 1);
            return Ok((
                handle(ring, slot),
                Entry::Joined {
                    unpublished: !published,
                },
            ));
        }
        // The group's own watcher takes an id of its own (it holds no unit of the limits).
        let group_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if group_id > Meta::MAX_ID {
            shared.release_member(
                crate::group::MemberRelease { id, owned },
                flags.contains(Flags::PREV_KV),
            );
            return Err(RegisterError::IdsExhausted);
        }
        let (ring, sender) = Ring::new(
            key.clone(),
            group_id,
            shared.watcher_buffer_size,
            Arc::downgrade(shared),
        );
        let slot = ring.join(id, owned).expect("a new ring is open");
        let meta = Meta::new(group_id, kind, key.flags.with(Flags::GROUP));
        let add = Change::add(
            kind,
            key.pattern.clone(),
            Watcher::new(meta, Sink::Group(sender)),
        );
        trace!(watcher_id = id, group = group_id, key = ?key.pattern, "Created a watch group");
        Ok((
            handle(crate::sync::ChannelArc::clone(&ring), slot),
            Entry::NewGroup(add, ring),
        ))
    }

    /// Watches one exact key. Any bytes are a valid key, the empty key included.
    ///
    /// `prev_kv = true` asks for each event's previous value (see [`WatchEvent::prev_value`](crate::WatchEvent::prev_value)).
    /// The watcher is visible to every event broadcast after this returns. The same as
    /// `watch(WatchSpec::exact(key).prev_kv(prev_kv))`.
    pub fn register(&self, key: Bytes, prev_kv: bool) -> Result<WatcherHandle, WatchError> {
        Ok(self.watch(WatchSpec::exact(key).prev_kv(prev_kv))?)
    }

    /// Watches every key that starts with `prefix`, which must start and end with `/`
    /// (otherwise [`WatchError::InvalidPrefix`], checked before the limit). The same as
    /// `watch(WatchSpec::prefix(prefix).prev_kv(prev_kv))`.
    pub fn register_prefix(
        &self,
        prefix: Bytes,
        prev_kv: bool,
    ) -> Result<WatcherHandle, WatchError> {
        Ok(self.watch(WatchSpec::prefix(prefix).prev_kv(prev_kv))?)
    }

    /// Like [`Self::register`], with a compact channel: an idle watcher costs about 270 bytes
    /// all-in (channel, both index entries, handle: 272 B measured at 10M watchers by
    /// `watchbench --scenario scale`) instead of a drop-in watcher's 4.3 KB, because its
    /// queue is allocated only while events wait. Same events, bound, cancel sentinel, limit
    /// and drop-to-unregister. (A compact channel holds at most 2³⁰ − 1 slots: a larger
    /// buffer size is clamped to that, so only past a billion events does its bound differ
    /// from a drop-in channel's.) The same as
    /// `watch(WatchSpec::exact(key).prev_kv(prev_kv).compact())`.
    pub fn register_compact(
        &self,
        key: Bytes,
        prev_kv: bool,
    ) -> Result<CompactWatcherHandle, WatchError> {
        Ok(self.watch(WatchSpec::exact(key).prev_kv(prev_kv).compact())?)
    }

    /// Like [`Self::register_prefix`], with a compact channel (see
    /// [`Self::register_compact`]).
    pub fn register_prefix_compact(
        &self,
        prefix: Bytes,
        prev_kv: bool,
    ) -> Result<CompactWatcherHandle, WatchError> {
        Ok(self.watch(WatchSpec::prefix(prefix).prev_kv(prev_kv).compact())?)
    }

    /// The current snapshot, for the dispatcher. Never blocks.
    #[inline]
    pub(crate) fn snapshot(&self) -> SnapshotGuard<Snapshot<Watcher>> {
        self.shared.published.load()
    }

    /// The shared state, for the dispatcher's catch-up.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Applies `removal`, waiting for the writer lock (for a blocking-pool thread).
    pub(crate) fn remove_waiting(&self, removal: Removal) {
        self.shared.publish(vec![Change::Remove(removal)]);
    }

    /// See [`Shared::try_remove`].
    pub(crate) fn try_remove(&self, removals: &mut Vec<Removal>) -> bool {
        self.shared.try_remove(removals)
    }

    /// Holds the writer lock, as a registration in progress would.
    #[cfg(test)]
    pub(crate) fn lock_writer_for_test(&self) -> impl Drop + '_ {
        self.shared.lock_writer_for_test()
    }
}

impl WatchRegistry {
    /// Sets `owner`'s own cap (`Some(max)` active watchers), or clears it (`None`: the
    /// default of [`RegistryOptions::with_owner_limit`] applies). Watchers already
    /// registered stay; the cap refuses new ones.
    pub fn set_owner_limit(&self, owner: OwnerId, limit: Option<usize>) {
        self.shared
            .with_owners(|book, _| book.set_limit(owner, limit));
    }

    /// Puts `options` in force from now on (the default is the reference's behaviour).
    pub fn set_options(&self, options: RegistryOptions) {
        self.shared.set_options(options);
    }

    /// The registry options in force.
    pub fn options(&self) -> RegistryOptions {
        self.shared.options()
    }

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
        self.snapshot().watchers_of(TargetKind::Exact, key)
    }

    /// Distinct keys with exact watchers.
    pub fn watched_key_count(&self) -> usize {
        self.snapshot().exact_key_count()
    }

    /// Prefix watchers registered on exactly `prefix`.
    pub fn prefix_watcher_count(&self, prefix: &Bytes) -> usize {
        self.snapshot().watchers_of(TargetKind::Prefix, prefix)
    }

    /// Watchers registered on exactly `target` (for an exact key or a slash prefix, what
    /// [`Self::watcher_count`] and [`Self::prefix_watcher_count`] say).
    pub fn watchers_of(&self, target: &Target) -> usize {
        self.snapshot().watchers_of(target.kind(), &target.stored())
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
        self.shared.check_invariants();
    }
}

/// A prepared registration's way into the index.
enum Entry {
    /// Published by the registering call (combined with others arriving together).
    Live(Change),
    /// A new group's watcher: published like `Live`, then the group enters the map.
    NewGroup(Change, crate::sync::ChannelArc<crate::group::Ring>),
    /// A member that joined a group: nothing to publish, unless the group is the batch's
    /// own (`unpublished`), whose watcher the batch publishes.
    Joined { unpublished: bool },
    /// Added by the dispatcher, once it knows where the watcher's history starts.
    FromRevision(Resume),
}
