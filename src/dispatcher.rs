//! Delivery: [`InlineDispatcher`] routes one event synchronously; [`WatchDispatcher`] is the
//! drop-in async task around it, fed by a broadcast channel.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, trace, warn};

use crate::event::{ChangeEvent, WatchEventType, WatchResponse};
use crate::index::{MatchKind, WatcherEntry};
use crate::registry::WatchRegistry;
use crate::sink::{Delivery, EventView};
use crate::sync::Ordering;

/// Events the async loop takes from the broadcast channel without going through `select!`
/// before it polls every source again (keeps unregistrations and heartbeats served).
const FAST_PATH_EVENTS: usize = 64;

/// Unregistrations applied before one event at most; the rest wait for the next event or for
/// an idle moment. Their receivers are gone, so the order is not observable.
const UNREGISTRATIONS_PER_EVENT: usize = 4096;

/// How soon removals that found the writer lock busy are tried again when no event comes.
const REMOVAL_RETRY: Duration = Duration::from_micros(100);

/// Synchronous dispatch, for a state machine that delivers events on its own thread.
///
/// Same semantics as [`WatchDispatcher`]: each call first applies pending unregistrations,
/// then delivers. Delivery never blocks and never locks: it reads the registry's current
/// snapshot. Watchers found overflowed or closed are removed after the event, by a writer
/// transaction that is skipped (and retried on the next call) if a registration holds the
/// writer lock at that moment; until then an overflowed watcher is sent nothing.
pub struct InlineDispatcher {
    registry: Arc<WatchRegistry>,
    pub(crate) unregister_rx: mpsc::UnboundedReceiver<(u64, Bytes)>,
    /// `(id, key)` removals not applied yet.
    pending: Vec<(u64, Bytes)>,
    /// Overflowed watchers awaiting removal: they already have their cancel sentinel.
    cancelled: HashSet<u64, ahash::RandomState>,
}

impl std::fmt::Debug for InlineDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineDispatcher")
            .field("pending_removals", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl InlineDispatcher {
    /// A dispatcher for `registry`, applying the unregistrations that its handles send to
    /// `unregister_rx`.
    pub fn new(
        registry: Arc<WatchRegistry>,
        unregister_rx: mpsc::UnboundedReceiver<(u64, Bytes)>,
    ) -> Self {
        Self {
            registry,
            unregister_rx,
            pending: Vec::new(),
            cancelled: HashSet::default(),
        }
    }

    /// The registry this dispatcher serves.
    pub fn registry(&self) -> &Arc<WatchRegistry> {
        &self.registry
    }

    /// Applies the unregistrations received so far (up to a few thousand per call) and any
    /// removal left pending. Returns how many unregistration messages were taken.
    pub fn process_unregistrations(&mut self) -> usize {
        let mut taken = 0;
        while taken < UNREGISTRATIONS_PER_EVENT {
            match self.unregister_rx.try_recv() {
                Ok(removal) => {
                    self.pending.push(removal);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        self.flush_removals();
        taken
    }

    /// True while some removal could not be applied yet (the writer lock was busy).
    pub fn has_pending_removals(&self) -> bool {
        !self.pending.is_empty()
    }

    fn flush_removals(&mut self) {
        // Called before every event: with nothing pending it must cost nothing (clearing a
        // set that once grew would rewrite its whole table each time).
        if self.pending.is_empty() {
            return;
        }
        if self.registry.try_remove(&mut self.pending) && !self.cancelled.is_empty() {
            self.cancelled.clear();
        }
    }

    /// Delivers `event` to every matching watcher: the exact watchers of its key, then the
    /// prefix watchers of each of its slash-terminated leading parts, shortest first.
    pub fn dispatch<E: ChangeEvent + ?Sized>(&mut self, event: &E) {
        self.process_unregistrations();
        let key = event.key();
        let view = EventView {
            event_type: WatchEventType::from_code(event.event_type()),
            key,
            value: event.value(),
            prev_value: event.prev_value(),
            revision: event.revision(),
        };
        let snapshot = self.registry.snapshot();
        let (cancelled, pending) = (&self.cancelled, &mut self.pending);
        let before = pending.len();
        snapshot.for_each_match(key, &mut |kind, list| {
            let is_prefix = kind != MatchKind::Exact;
            list.for_each(&mut |watcher| {
                if !cancelled.is_empty() && cancelled.contains(&watcher.id()) {
                    return;
                }
                let outcome = watcher.deliver(&view, is_prefix);
                if outcome != Delivery::Sent {
                    let at = match kind {
                        MatchKind::Exact => key.clone(),
                        MatchKind::Prefix { len } => key.slice(..len),
                    };
                    pending.push((watcher.id(), at));
                }
            });
        });
        drop(snapshot);
        trace!(event_key = ?key, event_type = ?view.event_type, revision = view.revision, "Event dispatched");
        if self.pending.len() > before {
            self.retire(before);
        }
    }

    /// Sends a Progress event carrying `revision` to every watcher, with the same overflow and
    /// closed-receiver handling as any event.
    pub fn broadcast_progress(&mut self, revision: u64) {
        self.process_unregistrations();
        let empty = Bytes::new();
        let view = EventView {
            event_type: WatchEventType::Progress,
            key: &empty,
            value: &empty,
            prev_value: &empty,
            revision,
        };
        let snapshot = self.registry.snapshot();
        let (cancelled, pending) = (&self.cancelled, &mut self.pending);
        let before = pending.len();
        snapshot.for_each_list(&mut |watched, is_prefix, list| {
            list.for_each(&mut |watcher| {
                if !cancelled.is_empty() && cancelled.contains(&watcher.id()) {
                    return;
                }
                if watcher.deliver(&view, is_prefix) != Delivery::Sent {
                    pending.push((watcher.id(), Bytes::copy_from_slice(watched)));
                }
            });
        });
        drop(snapshot);
        trace!(revision, "Progress sent");
        if self.pending.len() > before {
            self.retire(before);
        }
    }

    /// Marks the watchers queued from `pending[from..]` as never to be served again, then
    /// tries to remove them now.
    fn retire(&mut self, from: usize) {
        self.cancelled
            .extend(self.pending[from..].iter().map(|(id, _)| *id));
        self.flush_removals();
    }
}

/// The drop-in dispatcher task: takes events from a broadcast channel and delivers them.
///
/// `R` is the broadcast event type: [`WatchResponse`] by default, or any [`ChangeEvent`]
/// (with the `d-engine` feature, `d_engine_proto::client::WatchResponse`).
pub struct WatchDispatcher<R = WatchResponse> {
    inline: InlineDispatcher,
    broadcast_rx: broadcast::Receiver<R>,
    last_applied: Arc<StdAtomicU64>,
    heartbeat_interval_ms: u64,
}

impl<R> std::fmt::Debug for WatchDispatcher<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchDispatcher")
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .finish_non_exhaustive()
    }
}

impl<R: ChangeEvent + Clone> WatchDispatcher<R> {
    /// A dispatcher reading events from `broadcast_rx` and unregistrations from
    /// `unregister_rx`. With `heartbeat_interval_ms > 0`, every watcher receives a Progress
    /// event carrying `last_applied` at that interval (the first tick jittered by up to
    /// ±10%); with 0, never.
    pub fn new(
        registry: Arc<WatchRegistry>,
        broadcast_rx: broadcast::Receiver<R>,
        unregister_rx: mpsc::UnboundedReceiver<(u64, Bytes)>,
        last_applied: Arc<StdAtomicU64>,
        heartbeat_interval_ms: u64,
    ) -> Self {
        Self {
            inline: InlineDispatcher::new(registry, unregister_rx),
            broadcast_rx,
            last_applied,
            heartbeat_interval_ms,
        }
    }

    /// Runs until the broadcast sender is gone. Each turn serves, in this order: pending
    /// unregistrations, events, heartbeats. A lagging broadcast receiver logs the number of
    /// lost events and goes on.
    pub async fn run(mut self) {
        debug!("WatchDispatcher started");
        let mut heartbeat = self.heartbeat();
        loop {
            // Fast path: drain what is queued without the cost of select!.
            self.inline.process_unregistrations();
            for _ in 0..FAST_PATH_EVENTS {
                match self.broadcast_rx.try_recv() {
                    Ok(event) => self.inline.dispatch(&event),
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Lagged(n)) => Self::lagged(n),
                    Err(broadcast::error::TryRecvError::Closed) => return Self::stopped(),
                }
            }
            let retry_removals = self.inline.has_pending_removals();
            tokio::select! {
                biased;
                Some(removal) = self.inline.unregister_rx.recv() => {
                    self.inline.pending.push(removal);
                    self.inline.process_unregistrations();
                }
                received = self.broadcast_rx.recv() => match received {
                    Ok(event) => self.inline.dispatch(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => Self::lagged(n),
                    Err(broadcast::error::RecvError::Closed) => return Self::stopped(),
                },
                () = next_tick(&mut heartbeat) => {
                    let revision = self.last_applied.load(Ordering::Relaxed);
                    self.inline.broadcast_progress(revision);
                }
                // A removal found the writer lock busy: come back soon, not at the next event.
                () = tokio::time::sleep(REMOVAL_RETRY), if retry_removals => {}
            }
        }
    }

    fn lagged(lost: u64) {
        warn!(lost, "WatchDispatcher lagged {lost} events (slow watchers)");
    }

    fn stopped() {
        debug!("Broadcast channel closed, WatchDispatcher stopping");
    }

    /// The heartbeat timer, or `None` when disabled.
    fn heartbeat(&self) -> Option<tokio::time::Interval> {
        let period_ms = self.heartbeat_interval_ms;
        if period_ms == 0 {
            return None;
        }
        // Spread first ticks over ±10% so that nodes started together do not beat together.
        let spread = (period_ms / 10).max(1);
        let first_ms = period_ms
            .saturating_sub(spread)
            .saturating_add(random_u64() % (2 * spread));
        let start = tokio::time::Instant::now() + Duration::from_millis(first_ms);
        let mut interval = tokio::time::interval_at(start, Duration::from_millis(period_ms));
        // A late tick is skipped, not bunched: a burst of heartbeats after a stall would
        // claim a liveness that was not there.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Some(interval)
    }
}

async fn next_tick(heartbeat: &mut Option<tokio::time::Interval>) {
    match heartbeat {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A per-call random number (std's randomly keyed hasher over the time and thread).
fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new()
        .hash_one((std::time::SystemTime::now(), std::thread::current().id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::WatchResponse;

    fn put(key: &str, revision: u64) -> WatchResponse {
        WatchResponse {
            key: Bytes::copy_from_slice(key.as_bytes()),
            revision,
            ..Default::default()
        }
    }

    #[test]
    fn a_cancelled_watcher_gets_nothing_while_its_removal_waits_for_the_writer_lock() {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(1, tx));
        let mut inline = InlineDispatcher::new(registry.clone(), rx);
        let mut handle = registry.register(Bytes::from_static(b"/k"), false).unwrap();

        let writer = registry.lock_writer_for_test();
        inline.dispatch(&put("/k", 1));
        inline.dispatch(&put("/k", 2)); // overflow: sentinel, removal deferred
        assert!(inline.has_pending_removals());
        let rx = handle.receiver_mut();
        assert_eq!(rx.try_recv().unwrap().revision, 1);
        assert_eq!(rx.try_recv().unwrap().revision, 0);
        inline.dispatch(&put("/k", 3)); // room again, but the watch is over
        assert!(rx.try_recv().is_err());
        drop(writer);

        inline.dispatch(&put("/k", 4));
        assert!(!inline.has_pending_removals());
        assert!(handle.receiver_mut().try_recv().is_err());
        assert_eq!(registry.active_watcher_count(), 0);
        registry.check_invariants();
    }

    #[test]
    fn a_handle_dropped_while_a_writer_is_busy_is_unregistered_by_the_dispatcher() {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(4, tx));
        let mut inline = InlineDispatcher::new(registry.clone(), rx);
        let handle = registry.register(Bytes::from_static(b"/k"), true).unwrap();
        let writer = registry.lock_writer_for_test();
        drop(handle); // cannot take the lock: queued for the dispatcher instead
        drop(writer);
        assert_eq!(registry.active_watcher_count(), 1);
        inline.dispatch(&put("/other", 1));
        assert_eq!(registry.active_watcher_count(), 0);
        assert_eq!(registry.prev_kv_watcher_count(), 0);
        registry.check_invariants();
    }
}
