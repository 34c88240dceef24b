//! Delivery: [`InlineDispatcher`] routes one event synchronously (`inline`);
//! [`WatchDispatcher`] is the drop-in async task around it, fed by a broadcast channel
//! (this module). `delivery` delivers to a list and owns the retired rule; `sweep` is the one
//! walk over every watcher that heartbeats, lag cancellation and the closed-receiver scan
//! share.

mod catch_up;
mod delivery;
mod inline;
mod request;
mod sweep;

use inline::Admission;
pub use inline::InlineDispatcher;
pub use request::{
    DispatcherStopped, GapReporter, MemberProgress, ProgressRequest, ProgressRequester,
};

use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tracing::debug;

use crate::event::{ChangeEvent, WatchResponse};
use crate::options::{DispatchOptions, HeartbeatMode};
use crate::registry::WatchRegistry;
use crate::sync::Ordering;
use inline::BATCH;

/// Events the async loop takes from the broadcast channel without going through `select!`
/// before it polls every source again (keeps unregistrations and heartbeats served).
const FAST_PATH_EVENTS: usize = 64;

/// How soon watchers catching up are fed again when no event comes (their receivers drain
/// without telling the dispatcher).
const CATCH_UP_RETRY: Duration = Duration::from_micros(200);

/// How soon removals that found the writer lock busy are tried again when no event comes.
const REMOVAL_RETRY: Duration = Duration::from_micros(100);

/// The drop-in dispatcher task: takes events from a broadcast channel and delivers them.
///
/// `R` is the broadcast event type: [`WatchResponse`] by default, or any [`ChangeEvent`]
/// (with the `d-engine` feature, `d_engine_proto::client::WatchResponse`).
pub struct WatchDispatcher<R = WatchResponse> {
    inline: InlineDispatcher,
    broadcast_rx: broadcast::Receiver<R>,
    last_applied: Arc<StdAtomicU64>,
    heartbeat_interval_ms: u64,
    requests_tx: mpsc::UnboundedSender<ProgressRequest>,
    requests_rx: mpsc::UnboundedReceiver<ProgressRequest>,
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
        // What was applied before this dispatcher existed never reached its history.
        let applied = self.last_applied.load(Ordering::Acquire);
        self.inline.raise_history_floor(applied.saturating_add(1));
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
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        let mut inline = InlineDispatcher::new(registry, unregister_rx);
        inline.offload_deep = true;
        Self {
            inline,
            broadcast_rx,
            last_applied,
            heartbeat_interval_ms,
            requests_tx,
            requests_rx,
        }
    }

    /// A handle to ask this dispatcher, once running, for Progress on demand (see
    /// [`ProgressRequest`]). Take it before `run`.
    pub fn progress_requester(&self) -> ProgressRequester {
        ProgressRequester {
            tx: self.requests_tx.clone(),
        }
    }

    /// A handle to report a gap in this dispatcher's event stream (see [`GapReporter`]).
    pub fn gap_reporter(&self) -> GapReporter {
        self.inline.gap_reporter()
    }

    /// Runs until the broadcast sender is gone. Each turn serves, in this order: pending
    /// unregistrations, up to 64 queued events, then the first ready of an unregistration,
    /// a heartbeat, a progress request (either after the events queued when it came up),
    /// the opt-in closed-receiver sweep, the next event, a registration from a revision and
    /// the retries: none of them waits for the stream to pause. A
    /// lagging broadcast receiver logs the number of lost events and goes on (see
    /// [`LagPolicy`](crate::LagPolicy) for the alternative).
    pub async fn run(mut self) {
        debug!("WatchDispatcher started");
        let mut heartbeat = self.heartbeat();
        let mut closed_sweep = self.inline.options.closed_sweep().map(|sweep| {
            let mut interval = tokio::time::interval(sweep.interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            (interval, sweep.budget)
        });
        let mut batch = Vec::with_capacity(BATCH);
        // Its own handle, so that waiting on registrations from a revision borrows nothing
        // the other branches change.
        let registry = Arc::clone(self.inline.registry());
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
            // A slice of catch-up (watchers from a revision fed from the history), after a
            // paced slice of admissions: events may be queued behind this turn.
            let feeding = self.inline.catch_up_turn(Admission::Paced);
            // Registrations from a revision left for the next turn (a storm is admitted
            // in slices): back to the runtime first, as after a heartbeat slice (without
            // it the resume storm's live p99 was worse: docs/BENCHMARKS.md).
            let admitting = self.inline.can_admit();
            if admitting && !sweeping {
                tokio::task::yield_now().await;
            }
            let retry_removals = self.inline.has_pending_removals();
            // Timers and requests before events: under writes that never pause the
            // broadcast branch is always ready, and behind it a heartbeat, a requested
            // Progress or the closed-receiver sweep would wait for the stream to end. A
            // Progress reads `last_applied`, then dispatches the events queued, so it
            // follows every event it covers.
            tokio::select! {
                biased;
                Some(message) = self.inline.unregister_rx.recv() => {
                    self.inline.take_unregistration(message);
                    self.inline.process_unregistrations();
                }
                () = next_tick(&mut heartbeat) => {
                    if self.on_heartbeat(&mut batch) {
                        return Self::stopped();
                    }
                }
                Some(request) = self.requests_rx.recv() => {
                    if self.on_progress_request(request, &mut batch) {
                        return Self::stopped();
                    }
                }
                budget = next_closed_sweep(&mut closed_sweep) => {
                    self.inline.sweep_closed_receivers(budget);
                }
                received = self.broadcast_rx.recv() => match received {
                    Ok(event) => self.inline.dispatch(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => self.inline.report_lag(n),
                    Err(broadcast::error::RecvError::Closed) => return Self::stopped(),
                },
                // A registration from a revision: add it and start its replay now (no
                // event is ready, so not paced).
                () = registry.shared().resumes.notify.notified() => {
                    self.inline.admit_resumes(Admission::Slice);
                }
                // Watchers catching up wait for their receivers to drain: look again soon.
                () = tokio::time::sleep(CATCH_UP_RETRY), if feeding => {}
                // A removal found the writer lock busy: come back soon, not at the next event.
                () = tokio::time::sleep(REMOVAL_RETRY), if retry_removals => {}
                // A sweep or an admission is under way: nothing else is ready, so go on
                // with it (without this, a quiet system would leave it unfinished until the
                // next event; admissions not paced, as no event waits).
                () = std::future::ready(()), if sweeping || admitting => {
                    if admitting {
                        self.inline.admit_resumes(Admission::Slice);
                    }
                }
            }
        }
    }

    /// A heartbeat tick: reads `last_applied`, dispatches the events queued at that moment,
    /// then sends Progress carrying the value read. Read before the drain, not after: an
    /// event the store sends meanwhile may be at or below a later value, and would reach
    /// the watcher after a Progress that claims it. Returns true if the broadcast channel
    /// closed.
    fn on_heartbeat(&mut self, batch: &mut Vec<R>) -> bool {
        // Acquire: pairs with a store that updates it after broadcasting what it covers.
        let revision = self.last_applied.load(Ordering::Acquire);
        if self.dispatch_queued(batch) {
            return true;
        }
        match self.inline.options.heartbeat_mode() {
            HeartbeatMode::Incremental => {
                if !self.inline.start_progress(revision) {
                    debug!("heartbeat tick skipped: the previous sweep is still running");
                }
            }
            _ => self.inline.broadcast_progress(revision),
        }
        false
    }

    /// Answers a progress request: reads `last_applied`, dispatches the events queued at
    /// that moment, then sends Progress carrying the highest of `last_applied`, the highest
    /// revision dispatched and the last a swept Progress carried (see `request`). Returns
    /// true if the broadcast channel closed.
    fn on_progress_request(&mut self, request: ProgressRequest, batch: &mut Vec<R>) -> bool {
        // Acquire: pairs with a store that updates it after broadcasting what it covers.
        let applied = self.last_applied.load(Ordering::Acquire);
        if self.dispatch_queued(batch) {
            return true;
        }
        self.inline.request_progress_at(request, applied);
        false
    }

    /// Dispatches the events queued in the broadcast channel when it is called, and no more:
    /// draining until the queue is empty would never end while the store writes faster
    /// than this task dispatches. Returns true if the broadcast channel closed.
    fn dispatch_queued(&mut self, batch: &mut Vec<R>) -> bool {
        let mut queued = self.broadcast_rx.len();
        while queued > 0 {
            match self.broadcast_rx.try_recv() {
                Ok(event) => {
                    queued -= 1;
                    batch.push(event);
                    if batch.len() == BATCH {
                        self.inline.dispatch_batch(batch);
                        batch.clear();
                    }
                }
                Err(stop) => {
                    if !batch.is_empty() {
                        self.inline.dispatch_batch(batch);
                        batch.clear();
                    }
                    match stop {
                        broadcast::error::TryRecvError::Lagged(n) => {
                            // The lost ones were among those counted.
                            queued =
                                queued.saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
                            self.inline.report_lag(n);
                        }
                        broadcast::error::TryRecvError::Closed => return true,
                        broadcast::error::TryRecvError::Empty => break,
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.inline.dispatch_batch(batch);
            batch.clear();
        }
        false
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
