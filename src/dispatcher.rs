//! Delivery: [`InlineDispatcher`] routes one event synchronously; [`WatchDispatcher`] is the
//! drop-in async task around it, fed by a broadcast channel.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, trace, warn};

use crate::event::{ChangeEvent, WatchEventType, WatchResponse};
use crate::index::{MatchKind, Snapshot, SweepCursor, WatcherEntry, WatcherList};
use crate::metrics::Counters;
use crate::options::{DispatchOptions, HeartbeatMode, LagPolicy};
use crate::registry::WatchRegistry;
use crate::sink::{Delivery, EventView, Watcher};
use crate::sync::Ordering;

/// Events the async loop takes from the broadcast channel without going through `select!`
/// before it polls every source again (keeps unregistrations and heartbeats served).
const FAST_PATH_EVENTS: usize = 64;

/// Events the async loop hands to [`InlineDispatcher::dispatch_batch`] at once: their exact
/// lookups are made together, so that their cache misses overlap.
const BATCH: usize = 8;

/// Unregistrations applied before one event at most; the rest wait for the next event or for
/// an idle moment. Their receivers are gone, so the order is not observable.
const UNREGISTRATIONS_PER_EVENT: usize = 4096;

/// How soon removals that found the writer lock busy are tried again when no event comes.
const REMOVAL_RETRY: Duration = Duration::from_micros(100);

/// How long a sweep holds one snapshot (and, in incremental mode, holds up events). Writers
/// wait at most this long for a sweep.
const SWEEP_SLICE: Duration = Duration::from_micros(500);

/// Sweep work between two looks at the clock (units of `Snapshot::sweep`: buckets looked
/// at plus watchers visited, a few microseconds' worth).
const SWEEP_STEP: usize = 128;

/// How deliveries to a set of watchers went.
#[derive(Default)]
struct Tally {
    sent: u64,
    overflowed: u64,
    closed: u64,
}

impl Tally {
    /// Adds the tally to the registry's counters: once per event or slice, not per watcher.
    fn record(&self, counters: &Counters) {
        Counters::add(&counters.deliveries, self.sent);
        Counters::add(&counters.overflow_cancels, self.overflowed);
        Counters::add(&counters.closed_receiver_removals, self.closed);
    }
}

/// A heartbeat sweep under way in incremental mode.
struct ProgressSweep {
    cursor: SweepCursor,
    /// `last_applied` at the tick.
    revision: u64,
}

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
    options: DispatchOptions,
    /// The highest revision dispatched so far (0 before the first event).
    highest_revision: u64,
    /// An incremental heartbeat sweep not finished yet.
    progress: Option<ProgressSweep>,
    /// Where the closed-receiver sweep resumes.
    closed_cursor: SweepCursor,
}

impl std::fmt::Debug for InlineDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineDispatcher")
            .field("pending_removals", &self.pending.len())
            .field("options", &self.options)
            .field("progress_in_flight", &self.progress.is_some())
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
            options: DispatchOptions::default(),
            highest_revision: 0,
            progress: None,
            closed_cursor: SweepCursor::new(),
        }
    }

    /// Turns on the opt-in behaviours in `options` (the default is the reference's).
    #[must_use]
    pub fn with_options(mut self, options: DispatchOptions) -> Self {
        self.options = options;
        self
    }

    /// The options in force.
    pub fn options(&self) -> &DispatchOptions {
        &self.options
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
        let snapshot = self.registry.snapshot();
        let exact = snapshot.exact_watchers(event.key());
        let failed = self.deliver(&snapshot, event, exact);
        drop(snapshot);
        if let Some(from) = failed {
            self.retire(from);
        }
    }

    /// Dispatches `events` (at most [`BATCH`]) in order, as [`Self::dispatch`] would one by
    /// one, but through one snapshot loaded after all of them were received (so every
    /// registration finished before one of them was sent is seen), with their exact lookups
    /// made first: the lookups are independent, so their cache misses overlap instead of
    /// waiting for each other. A delivery failure (overflow, closed receiver) must release
    /// the snapshot before the watcher is removed: the events after it go one by one.
    fn dispatch_batch<E: ChangeEvent>(&mut self, events: &[E]) {
        debug_assert!(events.len() <= BATCH);
        self.process_unregistrations();
        let snapshot = self.registry.snapshot();
        let mut exact = [None; BATCH];
        for (found, event) in exact.iter_mut().zip(events) {
            *found = snapshot.exact_watchers(event.key());
        }
        for (i, event) in events.iter().enumerate() {
            if let Some(from) = self.deliver(&snapshot, event, exact[i]) {
                drop(snapshot);
                self.retire(from);
                for event in &events[i + 1..] {
                    self.dispatch(event);
                }
                return;
            }
        }
    }

    /// Delivers `event` to its watchers in `snapshot`, `exact` being its key's exact
    /// watchers there. Returns where the watchers to remove start in `pending`, if any
    /// delivery failed.
    fn deliver<E: ChangeEvent + ?Sized>(
        &mut self,
        snapshot: &Snapshot<Watcher>,
        event: &E,
        exact: Option<&WatcherList<Watcher>>,
    ) -> Option<usize> {
        let key = event.key();
        let view = EventView {
            event_type: WatchEventType::from_code(event.event_type()),
            key,
            value: event.value(),
            prev_value: event.prev_value(),
            revision: event.revision(),
        };
        if self.is_replay(&view) {
            let counters = self.registry.counters();
            Counters::add(&counters.events_dispatched, 1);
            Counters::add(&counters.replayed_events_skipped, 1);
            trace!(event_key = ?key, revision = view.revision, "Replayed event skipped");
            return None;
        }
        self.highest_revision = self.highest_revision.max(view.revision);
        let (cancelled, pending) = (&self.cancelled, &mut self.pending);
        let before = pending.len();
        let mut tally = Tally::default();
        snapshot.for_each_match_given(key, exact, &mut |kind, list| {
            let is_prefix = kind != MatchKind::Exact;
            deliver_all(list, &view, is_prefix, cancelled, &mut tally, &mut |id| {
                let at = match kind {
                    MatchKind::Exact => key.clone(),
                    MatchKind::Prefix { len } => key.slice(..len),
                };
                pending.push((id, at));
            });
        });
        let counters = self.registry.counters();
        Counters::add(&counters.events_dispatched, 1);
        tally.record(counters);
        trace!(event_key = ?key, event_type = ?view.event_type, revision = view.revision, "Event dispatched");
        (self.pending.len() > before).then_some(before)
    }

    /// True for a write event at or below the highest revision dispatched, when replays are
    /// to be skipped.
    #[inline]
    fn is_replay(&self, view: &EventView<'_>) -> bool {
        self.options.skip_replayed_revisions()
            && view.revision <= self.highest_revision
            && matches!(
                view.event_type,
                WatchEventType::Put | WatchEventType::Delete
            )
    }

    /// The revision a Progress event carries for a tick at `revision`.
    fn progress_revision(&self, revision: u64, monotone: bool) -> u64 {
        if monotone {
            revision.max(self.highest_revision)
        } else {
            revision
        }
    }

    /// Sends a Progress event carrying `revision` to every watcher, with the same overflow and
    /// closed-receiver handling as any event, before returning: no event is dispatched
    /// meanwhile (the reference's heartbeat). The sweep lets go of the index every
    /// millisecond or so, so registrations are not held up by it. With
    /// [`DispatchOptions::with_monotone_progress`], the revision is raised to the highest one
    /// dispatched so far.
    pub fn broadcast_progress(&mut self, revision: u64) {
        self.process_unregistrations();
        let revision = self.progress_revision(revision, self.options.monotone_progress());
        let mut cursor = SweepCursor::new();
        while !cursor.is_done() {
            self.progress_slice(&mut cursor, revision);
        }
        Counters::add(&self.registry.counters().heartbeat_sweeps, 1);
        trace!(revision, "Progress sent");
    }

    /// Starts an incremental heartbeat: Progress for every watcher, delivered a slice at a
    /// time by [`Self::continue_progress`], between which events can be dispatched. Returns
    /// false, changing nothing, while the previous sweep is unfinished.
    ///
    /// Each slice's Progress carries the higher of `revision` and the highest revision
    /// dispatched so far: no watcher receives a Progress older than an event it already has.
    pub fn start_progress(&mut self, revision: u64) -> bool {
        if self.progress.is_some() {
            return false;
        }
        self.progress = Some(ProgressSweep {
            cursor: SweepCursor::new(),
            revision,
        });
        true
    }

    /// Runs one slice (about half a millisecond) of the heartbeat begun by
    /// [`Self::start_progress`]. Returns true while some of it remains.
    pub fn continue_progress(&mut self) -> bool {
        let Some(mut sweep) = self.progress.take() else {
            return false;
        };
        self.process_unregistrations();
        let revision = self.progress_revision(sweep.revision, true);
        self.progress_slice(&mut sweep.cursor, revision);
        if sweep.cursor.is_done() {
            Counters::add(&self.registry.counters().heartbeat_sweeps, 1);
            trace!(
                revision,
                restarts = sweep.cursor.restarts(),
                "Progress sent"
            );
            return false;
        }
        self.progress = Some(sweep);
        true
    }

    /// True while an incremental heartbeat is unfinished.
    pub fn progress_in_flight(&self) -> bool {
        self.progress.is_some()
    }

    /// Delivers Progress(`revision`) for one slice of a sweep.
    fn progress_slice(&mut self, cursor: &mut SweepCursor, revision: u64) {
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
        let mut tally = Tally::default();
        sweep_slice(&snapshot, cursor, &mut |watched, is_prefix, list| {
            deliver_all(list, &view, is_prefix, cancelled, &mut tally, &mut |id| {
                pending.push((id, Bytes::copy_from_slice(watched)));
            });
        });
        drop(snapshot);
        let counters = self.registry.counters();
        Counters::add(&counters.progress_sent, tally.sent);
        tally.record(counters);
        if self.pending.len() > before {
            self.retire(before);
        }
    }

    /// Reports that the events' source lost `lost` events before they reached this
    /// dispatcher (a lagging broadcast receiver). Under the default [`LagPolicy::Warn`] this
    /// logs and counts them; under [`LagPolicy::CancelWatchers`] it also cancels every
    /// watcher with the lag sentinel (see [`crate::CancelReason::Lagged`]) and removes it.
    pub fn report_lag(&mut self, lost: u64) {
        warn!(lost, "WatchDispatcher lagged {lost} events (slow watchers)");
        let counters = self.registry.counters();
        Counters::add(&counters.lagged_events, lost);
        if self.options.lag_policy() == LagPolicy::CancelWatchers {
            self.cancel_all_for_lag();
        }
    }

    fn cancel_all_for_lag(&mut self) {
        let resume_from = self.highest_revision.saturating_add(1);
        let mut cursor = SweepCursor::new();
        let mut total = 0;
        while !cursor.is_done() {
            let snapshot = self.registry.snapshot();
            let (cancelled, pending) = (&self.cancelled, &mut self.pending);
            let before = pending.len();
            sweep_slice(&snapshot, &mut cursor, &mut |watched, _, list| {
                list.for_each(&mut |watcher| {
                    if cancelled.is_empty() || !cancelled.contains(&watcher.id()) {
                        watcher.cancel_lagged(resume_from);
                        pending.push((watcher.id(), Bytes::copy_from_slice(watched)));
                    }
                });
            });
            drop(snapshot);
            let cancelled_now = self.pending.len() - before;
            total += cancelled_now;
            Counters::add(&self.registry.counters().lag_cancels, cancelled_now as u64);
            if cancelled_now > 0 {
                self.retire(before);
            }
        }
        warn!(
            cancelled = total,
            resume_from, "events lost to lag: watchers cancelled"
        );
    }

    /// Looks at about `budget` watchers, resuming where the previous call stopped and
    /// wrapping around, and removes those whose receiver is gone. Returns how many it
    /// found. (The reference removes such a watcher only when an event reaches it.)
    pub fn sweep_closed_receivers(&mut self, budget: usize) -> usize {
        self.process_unregistrations();
        if self.closed_cursor.is_done() {
            self.closed_cursor = SweepCursor::new();
        }
        let snapshot = self.registry.snapshot();
        let (cancelled, pending) = (&self.cancelled, &mut self.pending);
        let before = pending.len();
        snapshot.sweep(&mut self.closed_cursor, budget, &mut |watched, _, list| {
            list.for_each(&mut |watcher| {
                if watcher.is_closed()
                    && (cancelled.is_empty() || !cancelled.contains(&watcher.id()))
                {
                    pending.push((watcher.id(), Bytes::copy_from_slice(watched)));
                }
            });
        });
        drop(snapshot);
        let found = self.pending.len() - before;
        Counters::add(
            &self.registry.counters().closed_receiver_removals,
            found as u64,
        );
        if found > 0 {
            trace!(found, "closed receivers swept");
            self.retire(before);
        }
        found
    }

    /// Marks the watchers queued from `pending[from..]` as never to be served again, then
    /// tries to remove them now.
    fn retire(&mut self, from: usize) {
        self.cancelled
            .extend(self.pending[from..].iter().map(|(id, _)| *id));
        self.flush_removals();
    }
}

/// Delivers `view` to each watcher of `list` not already cancelled; `failed(id)` is called
/// for each one that must be removed.
#[inline]
fn deliver_all(
    list: &WatcherList<Watcher>,
    view: &EventView<'_>,
    is_prefix: bool,
    cancelled: &HashSet<u64, ahash::RandomState>,
    tally: &mut Tally,
    failed: &mut impl FnMut(u64),
) {
    list.for_each(&mut |watcher| {
        if !cancelled.is_empty() && cancelled.contains(&watcher.id()) {
            return;
        }
        match watcher.deliver(view, is_prefix) {
            Delivery::Sent => tally.sent += 1,
            Delivery::Overflowed => {
                tally.overflowed += 1;
                failed(watcher.id());
            }
            Delivery::Closed => {
                tally.closed += 1;
                failed(watcher.id());
            }
        }
    });
}

/// Advances `cursor` over `snapshot` for about [`SWEEP_SLICE`], or to the end.
fn sweep_slice<F: FnMut(&[u8], bool, &WatcherList<Watcher>)>(
    snapshot: &Snapshot<Watcher>,
    cursor: &mut SweepCursor,
    f: &mut F,
) {
    let start = Instant::now();
    loop {
        snapshot.sweep(cursor, SWEEP_STEP, f);
        if cursor.is_done() || start.elapsed() >= SWEEP_SLICE {
            return;
        }
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
    /// Turns on the opt-in behaviours in `options` (the default is the reference's).
    ///
    /// ```
    /// # use std::sync::{atomic::AtomicU64, Arc};
    /// # use tokio::sync::{broadcast, mpsc};
    /// use watchtrie::{DispatchOptions, HeartbeatMode, WatchDispatcher, WatchRegistry, WatchResponse};
    /// # let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    /// # let registry = Arc::new(WatchRegistry::new(16, unregister_tx));
    /// # let (_events_tx, events_rx) = broadcast::channel::<WatchResponse>(1024);
    /// let dispatcher = WatchDispatcher::new(
    ///     registry, events_rx, unregister_rx, Arc::new(AtomicU64::new(0)), 1_000)
    ///     .with_options(DispatchOptions::default().with_heartbeat_mode(HeartbeatMode::Incremental));
    /// ```
    #[must_use]
    pub fn with_options(mut self, options: DispatchOptions) -> Self {
        self.inline = self.inline.with_options(options);
        self
    }

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
    /// unregistrations, events, heartbeats (and the opt-in closed-receiver sweep). A lagging
    /// broadcast receiver logs the number of lost events and goes on (see [`LagPolicy`] for
    /// the alternative).
    pub async fn run(mut self) {
        debug!("WatchDispatcher started");
        let mut heartbeat = self.heartbeat();
        let mut closed_sweep = self.inline.options.closed_sweep().map(|sweep| {
            let mut interval = tokio::time::interval(sweep.interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            (interval, sweep.budget)
        });
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // Fast path: drain what is queued without the cost of select!, in batches.
            self.inline.process_unregistrations();
            for _ in 0..FAST_PATH_EVENTS / BATCH {
                let mut interrupted = None;
                while batch.len() < BATCH {
                    match self.broadcast_rx.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(stop) => {
                            interrupted = Some(stop);
                            break;
                        }
                    }
                }
                if !batch.is_empty() {
                    self.inline.dispatch_batch(&batch);
                    batch.clear();
                }
                match interrupted {
                    None => {}
                    Some(broadcast::error::TryRecvError::Empty) => break,
                    Some(broadcast::error::TryRecvError::Lagged(n)) => self.inline.report_lag(n),
                    Some(broadcast::error::TryRecvError::Closed) => return Self::stopped(),
                }
            }
            // One slice of an incremental heartbeat between two bursts of events.
            let sweeping = self.inline.continue_progress();
            if sweeping {
                // Return to the runtime after every slice. Not through a select! branch:
                // with events always queued after a slice, select! would pick them and the
                // task would not return until tokio's cooperative budget ran out (~128
                // turns), while tasks it woke (the watchers' readers) wait in its worker's
                // unstealable LIFO slot.
                tokio::task::yield_now().await;
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
                    Err(broadcast::error::RecvError::Lagged(n)) => self.inline.report_lag(n),
                    Err(broadcast::error::RecvError::Closed) => return Self::stopped(),
                },
                () = next_tick(&mut heartbeat) => self.on_heartbeat(),
                budget = next_closed_sweep(&mut closed_sweep) => {
                    self.inline.sweep_closed_receivers(budget);
                }
                // A removal found the writer lock busy: come back soon, not at the next event.
                () = tokio::time::sleep(REMOVAL_RETRY), if retry_removals => {}
                // A sweep is under way: nothing else is ready, so go on with it (without
                // this, a quiet system would leave it unfinished until the next event).
                () = std::future::ready(()), if sweeping => {}
            }
        }
    }

    fn on_heartbeat(&mut self) {
        let revision = self.last_applied.load(Ordering::Relaxed);
        match self.inline.options.heartbeat_mode() {
            HeartbeatMode::Incremental => {
                if !self.inline.start_progress(revision) {
                    debug!("heartbeat tick skipped: the previous sweep is still running");
                }
            }
            _ => self.inline.broadcast_progress(revision),
        }
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

async fn next_closed_sweep(sweep: &mut Option<(tokio::time::Interval, usize)>) -> usize {
    match sweep {
        Some((interval, budget)) => {
            interval.tick().await;
            *budget
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

    /// One side of `a_batch_delivers_what_one_event_at_a_time_would`: watchers on one key
    /// and its prefixes, some overflowing, one closed; returns what every receiver got.
    fn deliveries(batched: bool) -> Vec<Vec<(u64, WatchEventType)>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(3, tx));
        let mut inline = InlineDispatcher::new(registry.clone(), rx);
        // (key or prefix, is a prefix)
        let watched: [(&'static [u8], bool); 4] = [
            (b"/a/k", false),
            (b"/b/k", false),
            (b"/a/", true),
            (b"/", true),
        ];
        let mut handles = watched.map(|(key, prefix)| {
            let key = Bytes::from_static(key);
            match prefix {
                false => registry.register(key, false),
                true => registry.register_prefix(key, false),
            }
            .unwrap()
        });
        let (_, _, closed) = registry
            .register(Bytes::from_static(b"/a/k"), false)
            .unwrap()
            .into_receiver();
        drop(closed);
        let events: Vec<_> = (1..=19)
            .map(|i| put(["/a/k", "/b/k", "/c"][i as usize % 3], i))
            .collect();
        for (round, chunk) in events.chunks(BATCH).enumerate() {
            if batched {
                inline.dispatch_batch(chunk);
            } else {
                chunk.iter().for_each(|e| inline.dispatch(e));
            }
            if round == 0 {
                // Room again for the watchers that are still there.
                for h in handles.iter_mut().skip(2) {
                    while h.receiver_mut().try_recv().is_ok() {}
                }
            }
        }
        registry.check_invariants();
        handles
            .iter_mut()
            .map(|h| {
                std::iter::from_fn(|| h.receiver_mut().try_recv().ok())
                    .map(|e| (e.revision, e.event_type))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_batch_delivers_what_one_event_at_a_time_would() {
        let one_by_one = deliveries(false);
        assert!(
            one_by_one
                .iter()
                .any(|got| got.contains(&(0, WatchEventType::Canceled))),
            "the case must include overflows"
        );
        assert_eq!(deliveries(true), one_by_one);
    }
}
