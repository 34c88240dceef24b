//! [`InlineDispatcher`]: the whole dispatch algorithm, synchronous. The async task
//! (`WatchDispatcher`) is a loop around it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{trace, warn};

use super::catch_up::{CatchUps, Context, FeedSize};
use super::delivery::{deliver_list, deliver_one, Retirements, Tally};
use super::request::{GapReporter, ProgressRequest};
use super::sweep::{run_slice, SliceSize, SweepAction};
use crate::event::{ChangeEvent, WatchEventType};
use crate::history::History;
use crate::index::{Location, Snapshot, SweepCursor, WatcherList};
use crate::metrics::Counters;
use crate::options::{DispatchOptions, HeartbeatMode, LagPolicy};
use crate::publish::Removal;
use crate::registry::WatchRegistry;
use crate::sink::{EventView, Watcher};
use crate::sync::{AtomicU64, Ordering};

/// Events handed to [`InlineDispatcher::dispatch_batch`] at once: their exact lookups are
/// made together, so that their cache misses overlap.
pub(super) const BATCH: usize = 8;

/// Unregistrations taken from the channel before their removals are applied: a storm of
/// drops is applied in rounds of this many (while the writer lock is free; otherwise they
/// wait, all of them, for the next try).
const UNREGISTRATIONS_PER_FLUSH: usize = 4096;

/// A heartbeat sweep under way in incremental mode.
struct ProgressSweep {
    cursor: SweepCursor,
    /// `last_applied` at the tick.
    revision: u64,
}

/// Synchronous dispatch, for a state machine that delivers events on its own thread.
///
/// Same semantics as [`WatchDispatcher`](super::WatchDispatcher): each call first applies pending unregistrations,
/// then delivers. Delivery never blocks and never locks: it reads the registry's current
/// snapshot. Watchers found overflowed or closed are removed after the event, by a writer
/// transaction that is skipped (and retried on the next call) if a registration holds the
/// writer lock at that moment; until then an overflowed watcher is sent nothing.
pub struct InlineDispatcher {
    registry: Arc<WatchRegistry>,
    pub(super) unregister_rx: mpsc::UnboundedReceiver<(u64, Bytes)>,
    /// Removals not applied yet, and the watchers that must get nothing more meanwhile.
    pub(super) retirements: Retirements,
    pub(super) options: DispatchOptions,
    /// The highest revision dispatched so far (0 before the first event).
    highest_revision: u64,
    /// The highest revision a swept Progress carried (a heartbeat's `last_applied` may be
    /// above every event dispatched): a requested one never goes below it.
    highest_progress: u64,
    /// An incremental heartbeat sweep not finished yet.
    progress: Option<ProgressSweep>,
    /// A requested sweep to every watcher that waits for the one under way (its revision).
    progress_after: Option<u64>,
    /// Hand deep removals to tokio's blocking pool (the async dispatcher does; called
    /// directly, the inline dispatcher does everything on its caller's thread).
    pub(super) offload_deep: bool,
    /// Where the closed-receiver sweep resumes.
    closed_cursor: SweepCursor,
    /// The events kept for watches from a revision ([`DispatchOptions::with_history`]).
    history: Option<History>,
    /// Watchers from a revision on their way to live delivery.
    catch_ups: CatchUps,
    /// The highest gap reported ([`GapReporter`]): no event up to it will come.
    gap: Arc<AtomicU64>,
    /// The highest gap acted on.
    gap_closed: u64,
    /// After a full slice of admissions, none is taken between events before this instant
    /// (see [`Admission::Paced`]).
    admission_paused_until: Option<Instant>,
}

/// How many registrations from a revision one call may take (when nothing needs them all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Every one queued: an unregistration is about to be applied.
    All,
    /// At most [`ADMIT_PER_TURN`]: the dispatcher has nothing else to do.
    Slice,
    /// A slice, unless the last full slice ended less than its own length ago. Between
    /// events of a storm, admissions then take at most about half the dispatcher's time,
    /// and an event waits behind one slice at most, not behind one per batch.
    Paced,
}

/// Feeding watchers visited after each event (the async dispatcher feeds more between
/// turns, [`InlineDispatcher::continue_catch_up`]).
const FEED_PER_EVENT: usize = 16;

/// Registrations from a revision admitted per slice when nothing needs them all. Each costs
/// its share of one publish and of its slice's one pass over the history, so a storm is
/// admitted between live events in slices a quarter the size of the 1,024 that took 2–6 ms,
/// instead of one stall of the whole storm's length; [`Admission::Paced`] spaces them out.
/// 256 met the storm's 10 ms p99 in 16 runs of 16, 1,024 in 10 of 12 (docs/BENCHMARKS.md).
const ADMIT_PER_TURN: usize = 256;

impl std::fmt::Debug for InlineDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineDispatcher")
            .field("pending_removals", &self.retirements.has_pending())
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
            retirements: Retirements::default(),
            options: DispatchOptions::default(),
            highest_revision: 0,
            highest_progress: 0,
            progress: None,
            progress_after: None,
            offload_deep: false,
            closed_cursor: SweepCursor::new(),
            history: None,
            catch_ups: CatchUps::default(),
            gap: Arc::new(AtomicU64::new(0)),
            gap_closed: 0,
            admission_paused_until: None,
        }
    }

    /// A handle to report a gap in the events this dispatcher is given (see
    /// [`GapReporter`]).
    pub fn gap_reporter(&self) -> GapReporter {
        GapReporter {
            through: Arc::clone(&self.gap),
        }
    }

    /// Reports a gap: no event up to and including `through` will be dispatched (the same
    /// as `gap_reporter().report(through)`).
    pub fn report_gap(&self, through: u64) {
        self.gap_reporter().report(through);
    }

    /// A gap reported and not acted on yet, if any.
    #[inline]
    fn open_gap(&self) -> Option<u64> {
        // Relaxed: see `GapReporter::report`.
        let through = self.gap.load(Ordering::Relaxed);
        (through > self.gap_closed).then_some(through)
    }

    /// Acts on a reported gap before the first event above it (what [`GapReporter`]
    /// promises): nothing in `(highest, through]` will be dispatched.
    fn close_gap(&mut self, through: u64) {
        self.gap_closed = through;
        if through <= self.highest_revision {
            return;
        }
        let first_missed = self.highest_revision.saturating_add(1);
        warn!(
            first_missed,
            through, "gap in the event stream: its events will never be dispatched"
        );
        Counters::add(&self.registry.counters().gaps, 1);
        if self.history.is_some() {
            let (catch_ups, cx) = self.catch_up_context();
            let cancelled = catch_ups.lagged(cx);
            Counters::add(&self.registry.counters().lag_cancels, cancelled);
        }
        // With or without history: a watcher waiting for a start inside the gap would miss
        // what it asked for. One waiting for a later start stays, whatever the policy.
        self.cancel_waiting(through);
        if let Some(history) = &mut self.history {
            history.skip_through(through);
        }
        if self.options.lag_policy() == LagPolicy::CancelWatchers {
            self.cancel_all_for_lag();
        }
        self.highest_revision = through;
        self.store_history_gauges();
    }

    /// Cancels every watcher waiting for a start at or below `through` with the lag
    /// sentinel, resuming from that start (a sweep over the index, only while one waits).
    fn cancel_waiting(&mut self, through: u64) {
        if self.retirements.held.is_waiting() {
            let mut cursor = SweepCursor::new();
            while !cursor.is_done() {
                let action = SweepAction::CancelWaiting { through };
                self.sweep_slice(&mut cursor, action, SliceSize::Timed);
            }
        }
    }

    /// Turns on the opt-in behaviours in `options` (the default is the reference's).
    #[must_use]
    pub fn with_options(mut self, options: DispatchOptions) -> Self {
        self.options = options;
        self.history = options.history().map(History::new);
        self
    }

    /// Raises the history's floor to `revision` (for what was applied before the
    /// dispatcher existed).
    pub(super) fn raise_history_floor(&mut self, revision: u64) {
        if let Some(history) = &mut self.history {
            history.raise_floor(revision);
        }
    }

    /// What the catch-up borrows of the dispatcher for one call.
    fn catch_up_context(&mut self) -> (&mut CatchUps, Context<'_>) {
        if self.retirements.held.is_feeding() {
            // What feeds read is then shared from the history, not copied (but for a short
            // unsealed tail: one segment per event would cost more than the copies).
            if let Some(history) = &mut self.history {
                history.seal_for_readers();
            }
        }
        let cx = Context {
            registry: &self.registry,
            history: self.history.as_ref(),
            retirements: &mut self.retirements,
            highest: self.highest_revision,
        };
        (&mut self.catch_ups, cx)
    }

    /// Takes registrations from a revision and feeds the new ones: as many as `how` allows,
    /// but every one queued if no history is kept (a start above the head now may be below
    /// it at the next turn, and nothing could replay it) or an unregistration is pending (it
    /// may be for a watcher still queued: it must find it added). A watcher taken later
    /// than the events after its registration finds them in the history, so a slice only
    /// moves the seam, never loses an event.
    pub(super) fn admit_resumes(&mut self, how: Admission) {
        // The per-event path, history kept or not: one load while nothing is queued or held.
        if !self.registry.shared().resumes.is_waiting() && self.retirements.held.len() == 0 {
            return;
        }
        let must_take_all =
            how == Admission::All || self.history.is_none() || self.retirements.has_pending();
        let limit = if must_take_all {
            usize::MAX
        } else {
            // Nothing queued: no clock read per event.
            if !self.registry.shared().resumes.is_waiting() {
                return;
            }
            if how == Admission::Paced
                && self
                    .admission_paused_until
                    .is_some_and(|until| Instant::now() < until)
            {
                return;
            }
            ADMIT_PER_TURN
        };
        // The clock only for a slice: taking all is the per-event path without a history.
        let began = (limit == ADMIT_PER_TURN).then(Instant::now);
        let (catch_ups, cx) = self.catch_up_context();
        let admitted = catch_ups.admit(cx, limit);
        if admitted.to_feed > 0 {
            // One pass of many readers over the newest entries: shared, not copied each.
            if let Some(history) = &mut self.history {
                history.seal();
            }
            let (catch_ups, cx) = self.catch_up_context();
            catch_ups.feed_fresh(cx, admitted.to_feed);
        }
        // Only a full slice pauses: fewer means the queue was emptied (a full slice that
        // happened to empty it makes the next registration wait one pause at most). A
        // call that took nothing leaves the pause as it was.
        if admitted.taken > 0 {
            self.admission_paused_until =
                began
                    .filter(|_| admitted.taken == ADMIT_PER_TURN)
                    .map(|began| {
                        let ended = Instant::now();
                        ended + (ended - began)
                    });
        }
        if admitted.taken > 0 || self.retirements.held.len() > 0 {
            self.store_history_gauges();
        }
    }

    /// Feeds watchers catching up from the history for about half a millisecond, each as
    /// far as its receiver has drained, after taking a slice of the registrations from a
    /// revision still queued. Returns true while some are still behind. Call it when idle:
    /// [`Self::dispatch`] feeds only a few per event.
    pub fn continue_catch_up(&mut self) -> bool {
        self.catch_up_turn(Admission::Slice)
    }

    /// True if registrations from a revision are queued and an admission could take some
    /// now. After a lag the floor is unknown until the next event and none can be taken, so
    /// the async loop must wait for that event, not come straight back to admit.
    pub(super) fn can_admit(&self) -> bool {
        self.registry.shared().resumes.is_waiting()
            && self.history.as_ref().is_none_or(|h| h.floor().is_some())
    }

    /// [`Self::continue_catch_up`], its admission as `how` says.
    pub(super) fn catch_up_turn(&mut self, how: Admission) -> bool {
        self.admit_resumes(how);
        self.process_unregistrations();
        if !self.retirements.held.is_feeding() {
            return false;
        }
        let (catch_ups, cx) = self.catch_up_context();
        let behind = catch_ups.feed(cx, FeedSize::Timed);
        self.store_history_gauges();
        behind
    }

    /// Checks the registry's invariants, the history's, and that every watcher being fed is
    /// in the feeding order. For tests and fuzzing; panics with a description on failure.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        self.registry.check_invariants();
        if let Some(history) = &self.history {
            history.check_invariants();
        }
        self.catch_ups.check_invariants(&self.retirements.held);
    }

    /// True while some watcher from a revision is still being fed from the history.
    pub fn catching_up(&self) -> bool {
        self.retirements.held.is_feeding()
    }

    /// Stores the gauges only the dispatcher can read (relaxed stores): the history's, and
    /// the watchers catching up or waiting for their start (which there are without a
    /// history too: a watch from a revision not reached yet waits).
    fn store_history_gauges(&self) {
        let counters = self.registry.counters();
        let store = |gauge: &crate::sync::AtomicU64, value: usize| {
            gauge.store(value as u64, crate::sync::Ordering::Relaxed)
        };
        store(&counters.catching_up, self.retirements.held.len());
        if let Some(history) = &self.history {
            store(&counters.history_events, history.len());
            store(&counters.history_bytes, history.bytes());
            store(&counters.history_heap_bytes, history.heap_bytes());
        }
    }

    /// After an event or a batch: lets go of the waiting watchers it made live, stores the
    /// history's gauges, and feeds a few catching-up ones.
    fn feed_after_event(&mut self) {
        self.retirements.held.release_waiting(self.highest_revision);
        if self.retirements.held.is_feeding() {
            let (catch_ups, cx) = self.catch_up_context();
            catch_ups.feed(cx, FeedSize::Watchers(FEED_PER_EVENT));
        }
        // After the feed, which may bring watchers live; once per call of `dispatch` or
        // `dispatch_batch`, not per event.
        self.store_history_gauges();
    }

    /// The options in force.
    pub fn options(&self) -> &DispatchOptions {
        &self.options
    }

    /// The registry this dispatcher serves.
    pub fn registry(&self) -> &Arc<WatchRegistry> {
        &self.registry
    }

    /// Applies every unregistration queued when it is called, and any removal left pending,
    /// after taking a slice of the registrations from a revision queued (paced: after a
    /// full slice, none for as long as it took). Returns how many unregistration messages
    /// were taken.
    ///
    /// All of them, not a bounded number: the reference processes pending unregistrations
    /// before the next event, and a dropped watcher counts against the limit until then
    /// (rule 3 of the contract: never later). Those queued after the call began wait for
    /// the next, so a stream of drops cannot hold an event back for ever. Two removals may
    /// still land later: a very deep prefix's, taken off this thread (`remove_deep`), and
    /// any that find another writer holding the lock (the dispatcher never waits for it:
    /// they are retried soon and before every event).
    pub fn process_unregistrations(&mut self) -> usize {
        self.admit_resumes(Admission::Paced);
        let queued = self.unregister_rx.len();
        let mut taken = 0;
        while taken < queued {
            match self.unregister_rx.try_recv() {
                Ok(message) => {
                    self.take_unregistration(message);
                    taken += 1;
                }
                Err(_) => break,
            }
            if taken % UNREGISTRATIONS_PER_FLUSH == 0 {
                self.retirements.flush(&self.registry);
            }
        }
        self.retirements.flush(&self.registry);
        if taken > 0 {
            // A waiting watcher may have gone: the catching-up gauge says so now.
            self.store_history_gauges();
        }
        taken
    }

    /// Takes one unregistration message: the one way in, whether this dispatcher polled
    /// for it or the async loop received it.
    pub(super) fn take_unregistration(&mut self, message: (u64, Bytes)) {
        // Its watcher may still wait in the queue: every queued one goes in first (one load
        // when none is queued), or it would be admitted after its removal and wait for ever.
        self.admit_resumes(Admission::All);
        let removal = Removal::from_message(message);
        // Not off the thread while registrations from a revision wait (after a lag): its
        // watcher may be among them, and a removal on another thread could run between this
        // thread taking it from the queue and adding it to the index, finding it in neither.
        if self.offload_deep && removal.is_deep() && !self.registry.shared().resumes.is_waiting() {
            self.remove_deep(removal);
        } else {
            self.retirements.unregistered(removal);
        }
    }

    /// Removes the watcher of a very deep prefix (see `Removal::is_deep`) on tokio's blocking
    /// pool, so that the async dispatcher does not stall for the O(depth) walk; the watcher
    /// stops counting when that removal is applied. Without a runtime it is removed here,
    /// like any other.
    fn remove_deep(&mut self, removal: Removal) {
        self.retirements.held.stop_waiting(removal.id, u64::MAX);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let registry = Arc::clone(&self.registry);
                runtime.spawn_blocking(move || registry.remove_waiting(removal));
            }
            Err(_) => self.retirements.unregistered(removal),
        }
    }

    /// True while some removal could not be applied yet (the writer lock was busy).
    pub fn has_pending_removals(&self) -> bool {
        self.retirements.has_pending()
    }

    /// Delivers `event` to every matching watcher: the exact watchers of its key, then the
    /// prefix watchers of each of its slash-terminated leading parts, shortest first.
    pub fn dispatch<E: ChangeEvent + ?Sized>(&mut self, event: &E) {
        if let Some(through) = self.open_gap() {
            if event.revision() > through {
                self.close_gap(through);
            }
        }
        self.process_unregistrations();
        let snapshot = self.registry.snapshot();
        let exact = snapshot.exact_watchers(event.key());
        let failed = self.deliver(&snapshot, event, exact);
        drop(snapshot);
        if let Some(mark) = failed {
            self.retirements.retire_since(mark, &self.registry);
        }
        self.feed_after_event();
    }

    /// Dispatches `events` (at most [`BATCH`]) in order, as [`Self::dispatch`] would one by
    /// one, but through one snapshot loaded after all of them were received (so every
    /// registration finished before one of them was sent is seen), with their exact lookups
    /// made first: the lookups are independent, so their cache misses overlap instead of
    /// waiting for each other. A delivery failure (overflow, closed receiver) must release
    /// the snapshot before the watcher is removed: the events after it go one by one.
    pub(super) fn dispatch_batch<E: ChangeEvent>(&mut self, events: &[E]) {
        debug_assert!(events.len() <= BATCH);
        if self.open_gap().is_some() {
            // The gap may fall inside the batch: one by one, each checks it.
            for event in events {
                self.dispatch(event);
            }
            return;
        }
        self.process_unregistrations();
        let snapshot = self.registry.snapshot();
        let mut exact = [None; BATCH];
        for (found, event) in exact.iter_mut().zip(events) {
            *found = snapshot.exact_watchers(event.key());
        }
        for (i, event) in events.iter().enumerate() {
            if let Some(mark) = self.deliver(&snapshot, event, exact[i]) {
                drop(snapshot);
                self.retirements.retire_since(mark, &self.registry);
                for event in &events[i + 1..] {
                    self.dispatch(event);
                }
                if i + 1 == events.len() {
                    // The batch's last event failed: none went one by one to do this.
                    self.feed_after_event();
                }
                return;
            }
        }
        drop(snapshot);
        self.feed_after_event();
    }

    /// Delivers `event` to its watchers in `snapshot`, `exact` being its key's exact
    /// watchers there. Returns the retirements' mark if any delivery failed (the watchers to
    /// retire were recorded after it).
    fn deliver<E: ChangeEvent + ?Sized>(
        &mut self,
        snapshot: &Snapshot<Watcher>,
        event: &E,
        exact: Option<&WatcherList<Watcher>>,
    ) -> Option<usize> {
        let key = event.key();
        let revision = event.revision();
        let view = EventView::new(
            WatchEventType::from_code(event.event_type()),
            key,
            event.value(),
            event.prev_value(),
            revision,
            if self.history.is_some() { revision } else { 0 },
        );
        if self.is_replay(&view) {
            let counters = self.registry.counters();
            Counters::add(&counters.events_dispatched, 1);
            Counters::add(&counters.replayed_events_skipped, 1);
            trace!(event_key = ?key, revision = view.revision, "Replayed event skipped");
            return None;
        }
        self.highest_revision = self.highest_revision.max(view.revision);
        if let Some(history) = &mut self.history {
            // Recorded before it is delivered: a watcher being fed skips it live and finds
            // it here (the seam, `catch_up`).
            if matches!(
                view.event_type,
                WatchEventType::Put | WatchEventType::Delete
            ) {
                history.record(
                    view.event_type,
                    key,
                    view.value,
                    view.prev_value,
                    view.revision,
                );
            }
        }
        let retirements = &mut self.retirements;
        let mark = retirements.mark();
        let mut tally = Tally::default();
        snapshot.for_each_match_given(key, exact, &mut |at, list| {
            deliver_list(list, at, &view, retirements, &mut tally);
        });
        let counters = self.registry.counters();
        Counters::add(&counters.events_dispatched, 1);
        tally.record(counters);
        trace!(event_key = ?key, event_type = ?view.event_type, revision = view.revision, "Event dispatched");
        (self.retirements.mark() > mark).then_some(mark)
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

    /// Where a watcher that a Progress overflows may resume: past every event dispatched,
    /// all of which it got (with history; 0, the reference's sentinel, without).
    fn progress_resume_point(&self) -> u64 {
        match self.history {
            Some(_) => self.highest_revision.saturating_add(1),
            None => 0,
        }
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
    /// meanwhile (the reference's heartbeat). The sweep lets go of the index every half
    /// millisecond or so, so registrations are not held up by it. With
    /// [`DispatchOptions::with_monotone_progress`], the revision is raised to the highest one
    /// dispatched so far.
    pub fn broadcast_progress(&mut self, revision: u64) {
        self.process_unregistrations();
        let revision = self.progress_revision(revision, self.options.monotone_progress());
        let mut cursor = SweepCursor::new();
        while !cursor.is_done() {
            self.sweep_slice(
                &mut cursor,
                SweepAction::Progress {
                    revision,
                    resume_from: self.progress_resume_point(),
                },
                SliceSize::Timed,
            );
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

    /// Sends Progress to every watcher or to one, as asked; carries the highest revision
    /// dispatched or swept in a Progress so far, so it is never below an event already
    /// delivered (a heartbeat's Progress included). To every
    /// watcher it is a sweep, in the dispatcher's heartbeat mode: whole at once by default,
    /// in slices between events with [`HeartbeatMode::Incremental`](crate::HeartbeatMode)
    /// (after the sweep under way, if one is). To one watcher still catching up from the
    /// history, once it has caught up (a Progress now would come before events below its
    /// revision). Returns false if the one watcher asked for is not registered (any more).
    pub fn request_progress(&mut self, request: ProgressRequest) -> bool {
        self.request_progress_at(request, self.highest_revision)
    }

    /// [`Self::request_progress`] with the revision to carry, raised to the highest
    /// dispatched or swept.
    pub(super) fn request_progress_at(&mut self, request: ProgressRequest, revision: u64) -> bool {
        let revision = revision
            .max(self.highest_revision)
            .max(self.highest_progress);
        Counters::add(&self.registry.counters().progress_requests, 1);
        match request {
            ProgressRequest::All => {
                match self.options.heartbeat_mode() {
                    HeartbeatMode::Incremental => {
                        if !self.start_progress(revision) {
                            let after = self.progress_after.get_or_insert(revision);
                            *after = (*after).max(revision);
                        }
                    }
                    _ => self.broadcast_progress(revision),
                }
                true
            }
            ProgressRequest::Member(member) => {
                let Some(sent) = member
                    .ring
                    .request_progress(member.slot, member.id, revision)
                else {
                    return false;
                };
                Counters::add(&self.registry.counters().progress_sent, u64::from(sent));
                true
            }
            ProgressRequest::Watcher { id, target } => {
                self.process_unregistrations();
                // Being fed from the history (a Progress now would precede events below its
                // revision), or still queued behind a storm of resumes: sent after its replay.
                if self.retirements.held.defer_progress(id, revision)
                    || self.registry.shared().resumes.defer_progress(id, revision)
                {
                    return true;
                }
                let pattern = target.stored();
                let at = Location {
                    kind: target.kind(),
                    pattern: &pattern,
                };
                let empty = Bytes::new();
                let view = EventView::new(
                    WatchEventType::Progress,
                    &empty,
                    &empty,
                    &empty,
                    revision,
                    self.progress_resume_point(),
                );
                let snapshot = self.registry.snapshot();
                let Some(watcher) = snapshot.list(at.kind, at.pattern).and_then(|l| l.get(id))
                else {
                    return false;
                };
                let mark = self.retirements.mark();
                let mut tally = Tally::default();
                deliver_one(watcher, at, &view, &mut self.retirements, &mut tally);
                drop(snapshot);
                tally.record_progress(self.registry.counters());
                if self.retirements.mark() > mark {
                    self.retirements.retire_since(mark, &self.registry);
                }
                true
            }
        }
    }

    /// Runs one slice (about half a millisecond) of the heartbeat begun by
    /// [`Self::start_progress`] (or of a requested one). Returns true while some of it
    /// remains.
    pub fn continue_progress(&mut self) -> bool {
        if self.progress.is_none() {
            if let Some(revision) = self.progress_after.take() {
                self.start_progress(revision);
            }
        }
        let Some(mut sweep) = self.progress.take() else {
            return false;
        };
        self.process_unregistrations();
        let revision = self.progress_revision(sweep.revision, true);
        let action = SweepAction::Progress {
            revision,
            resume_from: self.progress_resume_point(),
        };
        self.sweep_slice(&mut sweep.cursor, action, SliceSize::Timed);
        if sweep.cursor.is_done() {
            Counters::add(&self.registry.counters().heartbeat_sweeps, 1);
            trace!(
                revision,
                restarts = sweep.cursor.restarts(),
                "Progress sent"
            );
            return self.progress_after.is_some();
        }
        self.progress = Some(sweep);
        true
    }

    /// True while an incremental heartbeat (or a requested sweep) is unfinished or waiting.
    pub fn progress_in_flight(&self) -> bool {
        self.progress.is_some() || self.progress_after.is_some()
    }

    /// One slice of a sweep (see `super::sweep`); returns how many watchers it affected.
    fn sweep_slice(
        &mut self,
        cursor: &mut SweepCursor,
        action: SweepAction,
        size: SliceSize,
    ) -> u64 {
        if let SweepAction::Progress { revision, .. } = action {
            self.highest_progress = self.highest_progress.max(revision);
        }
        run_slice(&self.registry, &mut self.retirements, cursor, action, size)
    }

    /// Reports that the events' source lost `lost` events before they reached this
    /// dispatcher (a lagging broadcast receiver). Under the default [`LagPolicy::Warn`] this
    /// logs and counts them; under [`LagPolicy::CancelWatchers`] it also cancels every
    /// watcher with the lag sentinel (see [`crate::CancelReason::Lagged`]) and removes it.
    pub fn report_lag(&mut self, lost: u64) {
        warn!(lost, "WatchDispatcher lagged {lost} events (slow watchers)");
        let counters = self.registry.counters();
        Counters::add(&counters.lagged_events, lost);
        if self.history.is_some() {
            // The lost events will never be in the history: nobody can catch up across them.
            let (catch_ups, cx) = self.catch_up_context();
            let cancelled = catch_ups.lagged(cx);
            Counters::add(&self.registry.counters().lag_cancels, cancelled);
        }
        // A watcher waiting for a start above the head may have lost events at or above it
        // (with or without history): it resumes from its own start (the lost revisions are
        // not known).
        self.cancel_waiting(u64::MAX);
        if let Some(history) = &mut self.history {
            history.lost();
        }
        if self.options.lag_policy() == LagPolicy::CancelWatchers {
            self.cancel_all_for_lag();
        }
        // The watchers it cancelled leave the catching-up gauge now, not at the next event.
        self.store_history_gauges();
    }

    fn cancel_all_for_lag(&mut self) {
        let resume_from = self.highest_revision.saturating_add(1);
        let action = SweepAction::CancelLagged { resume_from };
        let mut cursor = SweepCursor::new();
        let mut total = 0;
        while !cursor.is_done() {
            total += self.sweep_slice(&mut cursor, action, SliceSize::Timed);
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
        let mut cursor = std::mem::take(&mut self.closed_cursor);
        let found = self.sweep_slice(
            &mut cursor,
            SweepAction::DropClosed,
            SliceSize::Work(budget),
        );
        self.closed_cursor = cursor;
        if found > 0 {
            trace!(found, "closed receivers swept");
        }
        found as usize
    }
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
    fn a_batch_whose_last_event_overflows_a_watcher_still_releases_the_watchers_it_made_live() {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(1, tx));
        let options = DispatchOptions::default()
            .with_history(crate::options::HistoryOptions::new(100, 1 << 20));
        let mut inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
        let _full = registry.register(Bytes::from_static(b"/x"), false).unwrap();
        inline.dispatch(&put("/x", 1));
        let mut waiting = registry
            .watch(crate::spec::WatchSpec::exact("/w").from_revision(10))
            .unwrap();
        inline.process_unregistrations();
        assert_eq!(inline.retirements.held.len(), 1);
        // 2..=8 elsewhere, then 9 overflows `/x`'s watcher: the batch's last event.
        let mut batch: Vec<_> = (2..=8).map(|revision| put("/a", revision)).collect();
        batch.push(put("/x", 9));
        inline.dispatch_batch(&batch);
        // Nothing below 10 can come now: it is live, and a Progress at 9 reaches it.
        assert_eq!(inline.retirements.held.len(), 0);
        assert!(inline.request_progress(waiting.progress_request()));
        let got = waiting.receiver_mut().try_recv().unwrap();
        assert_eq!(
            (got.event_type, got.revision),
            (WatchEventType::Progress, 9)
        );
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
    fn with_release_at_drop_a_drop_that_finds_a_writer_busy_falls_back_to_the_dispatcher() {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(4, tx));
        registry.set_options(crate::RegistryOptions::default().with_release_at_drop(true));
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

    #[test]
    fn after_a_lag_queued_resumes_wait_for_the_next_event_instead_of_asking_to_be_admitted() {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(8, tx));
        let options = crate::DispatchOptions::default()
            .with_history(crate::HistoryOptions::new(100, 1 << 20));
        let mut inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
        inline.dispatch(&put("/k", 1));
        inline.report_lag(3);
        let mut watch = registry
            .watch(crate::WatchSpec::exact("/k").from_revision(6))
            .unwrap();
        assert!(!inline.catch_up_turn(Admission::Slice));
        // Still queued, but nothing can take it: the loop must not spin on it.
        assert!(registry.shared().resumes.is_waiting());
        assert!(!inline.can_admit());
        inline.dispatch(&put("/k", 5));
        inline.catch_up_turn(Admission::Slice);
        assert!(!registry.shared().resumes.is_waiting());
        inline.dispatch(&put("/k", 6));
        let got: Vec<u64> = std::iter::from_fn(|| watch.receiver_mut().try_recv().ok())
            .map(|e| e.revision)
            .collect();
        assert_eq!(got, [6]);
        inline.check_invariants();
    }

    #[test]
    fn a_deep_removal_is_not_taken_off_the_thread_while_its_watcher_may_wait_in_the_queue() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _inside = runtime.enter();
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(8, tx));
        let options = crate::DispatchOptions::default()
            .with_history(crate::HistoryOptions::new(100, 1 << 20));
        let mut inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
        inline.offload_deep = true;
        inline.dispatch(&put("/k", 1));
        inline.report_lag(3); // the floor is unknown: resumes wait in the queue
        let deep = "/d".repeat(crate::publish::DEEP_REMOVAL + 1) + "/";
        let watch = registry
            .watch(crate::WatchSpec::prefix(deep).from_revision(5))
            .unwrap();
        drop(watch);
        inline.process_unregistrations();
        // Applied here, from the queue, not left to a blocking task: the unit is back by
        // the time the call returns.
        assert_eq!(registry.active_watcher_count(), 0);
        assert!(!registry.shared().resumes.is_waiting());
        inline.dispatch(&put("/k", 5));
        assert_eq!(registry.active_watcher_count(), 0);
        inline.check_invariants();
    }
}
