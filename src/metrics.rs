//! [`MetricsHandle`]: counters and gauges, always on, without a metrics dependency.
//!
//! Counters are relaxed atomics written by the dispatcher (one writer) and the registry's
//! writers. The dispatcher adds to them once per event or sweep slice, never once per
//! watcher: per-watcher tallies are kept in locals and added at the end. A reader sees each
//! counter's value at some recent moment; counters are not read as one atomic set.

use std::sync::{Arc, Weak};

use crate::owners::{OwnerId, OwnerMetrics};
use crate::publish::Shared;
use crate::sync::{AtomicU64, Ordering};

/// The counters behind a [`MetricsHandle`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events_dispatched: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) overflow_cancels: AtomicU64,
    pub(crate) lag_cancels: AtomicU64,
    pub(crate) closed_receiver_removals: AtomicU64,
    pub(crate) lagged_events: AtomicU64,
    pub(crate) replayed_events_skipped: AtomicU64,
    pub(crate) owner_refusals: AtomicU64,
    pub(crate) group_joins: AtomicU64,
    pub(crate) lagged_members_released: AtomicU64,
    pub(crate) progress_requests: AtomicU64,
    pub(crate) progress_sent: AtomicU64,
    pub(crate) heartbeat_sweeps: AtomicU64,
    pub(crate) snapshots_published: AtomicU64,
    pub(crate) registrations_combined: AtomicU64,
    pub(crate) publishes_interrupted: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) compacted_cancels: AtomicU64,
    /// Gauges the dispatcher stores (it alone owns the history and the catch-up).
    pub(crate) history_events: AtomicU64,
    pub(crate) history_bytes: AtomicU64,
    pub(crate) history_heap_bytes: AtomicU64,
    pub(crate) catching_up: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`. Relaxed: a counter publishes no other data, and its readers
    /// only need some recent value.
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// A cloneable handle to a registry's metrics; [`read`](Self::read) them at any time, from
/// any thread. Get one from [`WatchRegistry::metrics`](crate::WatchRegistry::metrics).
///
/// It does not keep the registry alive: once the registry is dropped, the counters keep
/// their last values and the gauges read 0 (no watcher is left).
#[derive(Clone)]
pub struct MetricsHandle {
    counters: Arc<Counters>,
    /// Weak, for the same reason as a watcher handle's: the registry owns every watcher's
    /// sender, and a metrics reader must not keep channels open.
    shared: Weak<Shared>,
}

impl std::fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MetricsHandle").field(&self.read()).finish()
    }
}

impl MetricsHandle {
    /// `owner`'s gauges: for an owner with no entry (no watcher and no cap of its own),
    /// zero watchers and refusals under the default cap.
    /// Takes the owner book's lock briefly.
    pub fn owner(&self, owner: OwnerId) -> OwnerMetrics {
        self.shared
            .upgrade()
            .map(|shared| shared.with_owners(|book, default| book.metrics(owner, default)))
            .unwrap_or_default()
    }

    /// Every owner with watchers or a cap of its own, by id, with its gauges.
    pub fn owners(&self) -> Vec<(OwnerId, OwnerMetrics)> {
        self.shared
            .upgrade()
            .map(|shared| shared.with_owners(|book, default| book.all(default)))
            .unwrap_or_default()
    }

    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self {
            counters: Arc::clone(&shared.counters),
            shared: Arc::downgrade(shared),
        }
    }

    /// The current values. Costs a few atomic loads, one weak upgrade and one snapshot load;
    /// never blocks.
    pub fn read(&self) -> Metrics {
        let c = &self.counters;
        let gauges = self
            .shared
            .upgrade()
            .map(|shared| shared.gauges())
            .unwrap_or_default();
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Metrics {
            events_dispatched: get(&c.events_dispatched),
            deliveries: get(&c.deliveries),
            overflow_cancels: get(&c.overflow_cancels),
            lag_cancels: get(&c.lag_cancels),
            closed_receiver_removals: get(&c.closed_receiver_removals),
            lagged_events: get(&c.lagged_events),
            replayed_events_skipped: get(&c.replayed_events_skipped),
            owner_refusals: get(&c.owner_refusals),
            group_joins: get(&c.group_joins),
            lagged_members_released: get(&c.lagged_members_released),
            progress_requests: get(&c.progress_requests),
            progress_sent: get(&c.progress_sent),
            heartbeat_sweeps: get(&c.heartbeat_sweeps),
            snapshots_published: get(&c.snapshots_published),
            registrations_combined: get(&c.registrations_combined),
            publishes_interrupted: get(&c.publishes_interrupted),
            gaps: get(&c.gaps),
            resumes: get(&c.resumes),
            compacted_cancels: get(&c.compacted_cancels),
            history_events: get(&c.history_events) as usize,
            history_bytes: get(&c.history_bytes) as usize,
            history_heap_bytes: get(&c.history_heap_bytes) as usize,
            catching_up: get(&c.catching_up) as usize,
            watchers: gauges.watchers,
            exact_keys: gauges.exact_keys,
            prefixes: gauges.prefixes,
            byte_prefixes: gauges.byte_prefixes,
            ranges: gauges.ranges,
            patterns: gauges.patterns,
        }
    }
}

/// One reading of a registry's metrics. Counters count since the registry was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Events taken by a dispatcher (from the broadcast channel or an inline call).
    pub events_dispatched: u64,
    /// Events placed in a watcher's buffer, Progress included; cancel sentinels excluded.
    pub deliveries: u64,
    /// Watchers cancelled because their buffer was full (each got the overflow sentinel).
    pub overflow_cancels: u64,
    /// Watchers cancelled with the lag sentinel because the dispatcher lost events (to
    /// broadcast lag, or a reported gap): under
    /// [`LagPolicy::CancelWatchers`](crate::LagPolicy::CancelWatchers) every watcher but one
    /// waiting for a start past a gap; under either policy, watchers from a revision still
    /// being fed, or waiting for a start the loss may cover.
    pub lag_cancels: u64,
    /// Watchers removed because their receiver was dropped: found on a delivery, or by the
    /// closed-receiver sweep.
    pub closed_receiver_removals: u64,
    /// Events the dispatcher's broadcast receiver lost to lag.
    pub lagged_events: u64,
    /// Events dropped as replays of a revision already dispatched (only under
    /// [`DispatchOptions::with_skip_replayed_revisions`](crate::DispatchOptions::with_skip_replayed_revisions)).
    pub replayed_events_skipped: u64,
    /// Registrations refused because their owner was at its cap.
    pub owner_refusals: u64,
    /// Grouped registrations that joined a group already published (no publish of their
    /// own; see [`WatchSpec::grouped`](crate::WatchSpec::grouped)).
    pub group_joins: u64,
    /// Group members the closed-receiver sweep found more than their buffer behind and
    /// released.
    pub lagged_members_released: u64,
    /// Progress events delivered (heartbeats and requested ones).
    pub progress_sent: u64,
    /// Progress requests taken (`request_progress`, `ProgressRequester`), those for a
    /// watcher no longer registered included.
    pub progress_requests: u64,
    /// Heartbeat sweeps completed.
    pub heartbeat_sweeps: u64,
    /// Index snapshots published by writers (registrations, unregistrations, cleanups;
    /// a transaction of several changes publishes once).
    pub snapshots_published: u64,
    /// Registration calls whose watchers another writer published along with its own, in
    /// one snapshot (combining: registrations arriving together share a publish).
    pub registrations_combined: u64,
    /// Publishes a panic interrupted (a bug in an index, reported by the thread that hit
    /// it): the next writer rebuilt the back snapshot, the additions never published gave
    /// back their units, and the registrations they carried for other threads were refused
    /// with [`RegisterError::PublishInterrupted`](crate::RegisterError::PublishInterrupted).
    /// Zero unless watchtrie has a bug.
    pub publishes_interrupted: u64,
    /// Gaps in the event stream acted on ([`GapReporter`](crate::GapReporter)): reported,
    /// and above what had been dispatched.
    pub gaps: u64,
    /// Watches from a revision taken by the dispatcher ([`WatchSpec::from_revision`](crate::WatchSpec::from_revision)).
    pub resumes: u64,
    /// Watchers cancelled as compacted: their start, or an event they had not received
    /// yet, was no longer in the history.
    pub compacted_cancels: u64,
    /// Gauge: events in the dispatcher's history.
    pub history_events: usize,
    /// Gauge: bytes of keys, values and previous values in the history.
    pub history_bytes: usize,
    /// Gauge: heap bytes the history holds (payloads and entry headers).
    pub history_heap_bytes: usize,
    /// Gauge: watchers from a revision not yet live (being fed, or waiting for their start).
    pub catching_up: usize,
    /// Gauge: active watchers (those counted against the limit).
    pub watchers: usize,
    /// Gauge: distinct keys with exact watchers.
    pub exact_keys: usize,
    /// Gauge: distinct prefixes with watchers.
    pub prefixes: usize,
    /// Gauge: distinct byte prefixes with watchers.
    pub byte_prefixes: usize,
    /// Gauge: distinct key ranges with watchers.
    pub ranges: usize,
    /// Gauge: distinct wildcard patterns with watchers.
    pub patterns: usize,
}
