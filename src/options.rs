//! [`DispatchOptions`] and [`RegistryOptions`]: opt-in behaviours beyond the reference. The
//! defaults are the reference's behaviour, exactly; each option closes one way a watcher can
//! silently miss something, a sweep can stall dispatch, or a resource stays held too long.

use std::time::Duration;

/// How the heartbeat reaches every watcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeartbeatMode {
    /// The reference's: one tick sends Progress to every watcher before the next event is
    /// dispatched, so events wait for the whole sweep (hundreds of milliseconds at a
    /// million watchers). Registrations are not held up: the sweep lets go of the index
    /// every half millisecond or so.
    #[default]
    Blocking,
    /// The sweep runs in slices of about half a millisecond, with events, unregistrations and
    /// other tasks served between slices. Each slice's Progress carries the highest of the
    /// tick's revision and every revision dispatched so far, so no watcher ever receives a
    /// Progress older than an event it already has.
    Incremental,
}

/// What the dispatcher does when its broadcast receiver lagged and events were lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LagPolicy {
    /// The reference's: log a warning and go on. Watchers of the lost events' keys never
    /// learn that they missed them.
    #[default]
    Warn,
    /// Cancel every watcher registered at that moment (the lost events' keys are unknown,
    /// so any of them may have missed one): each receives a Canceled event that
    /// [`WatchEvent::cancel_reason`](crate::WatchEvent::cancel_reason) reports as
    /// [`CancelReason::Lagged`](crate::CancelReason::Lagged), carrying the revision to
    /// resume from, and is removed.
    CancelWatchers,
}

/// Opt-in dispatcher behaviours. `DispatchOptions::default()` is the reference's behaviour.
///
/// ```
/// use std::time::Duration;
/// use watchtrie::{DispatchOptions, HeartbeatMode, LagPolicy};
///
/// let options = DispatchOptions::default()
///     .with_heartbeat_mode(HeartbeatMode::Incremental)
///     .with_lag_policy(LagPolicy::CancelWatchers)
///     .with_monotone_progress(true)
///     .with_closed_receiver_sweep(Duration::from_millis(100), 10_000);
/// assert_eq!(options.heartbeat_mode(), HeartbeatMode::Incremental);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchOptions {
    heartbeat_mode: HeartbeatMode,
    lag_policy: LagPolicy,
    monotone_progress: bool,
    skip_replayed: bool,
    closed_sweep: Option<ClosedReceiverSweep>,
    history: Option<HistoryOptions>,
}

/// How much history the dispatcher keeps for watches that start from a revision
/// ([`WatchSpec::from_revision`](crate::WatchSpec::from_revision)): the most recent events,
/// at most `max_events` of them and at most `max_bytes` of keys, values and previous values
/// (each event is copied once into the history, so what it holds is what it counts).
///
/// ```
/// use watchtrie::{DispatchOptions, HistoryOptions};
///
/// let options = DispatchOptions::default()
///     .with_history(HistoryOptions::new(100_000, 64 << 20).starting_at(1));
/// assert_eq!(options.history().unwrap().max_events(), 100_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryOptions {
    max_events: usize,
    max_bytes: usize,
    first_revision: u64,
}

impl HistoryOptions {
    /// At most `max_events` events and `max_bytes` bytes of their keys and values. Either
    /// may be 0: the history then keeps nothing, and a watch can only start above the
    /// revisions already dispatched.
    pub const fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            max_events,
            max_bytes,
            first_revision: 1,
        }
    }

    /// The first revision the history can hold: a watch from below it is told it is
    /// compacted. Default 1, for a store that starts with its dispatcher; a
    /// [`WatchDispatcher`](crate::WatchDispatcher) raises it to `last_applied + 1` when it
    /// is built, since what was applied before it existed never reached it.
    #[must_use]
    pub fn starting_at(mut self, revision: u64) -> Self {
        self.first_revision = revision;
        self
    }

    /// The most events kept.
    pub fn max_events(&self) -> usize {
        self.max_events
    }

    /// The most bytes of keys, values and previous values kept.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The first revision the history can hold.
    pub fn first_revision(&self) -> u64 {
        self.first_revision
    }
}

/// How often, and how far, the closed-receiver sweep looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClosedReceiverSweep {
    pub(crate) interval: Duration,
    pub(crate) budget: usize,
}

/// The shortest closed-receiver sweep interval accepted (shorter ones are raised to it).
pub const MIN_CLOSED_SWEEP_INTERVAL: Duration = Duration::from_millis(1);

impl DispatchOptions {
    /// How heartbeats sweep the watchers (default [`HeartbeatMode::Blocking`]).
    #[must_use]
    pub fn with_heartbeat_mode(mut self, mode: HeartbeatMode) -> Self {
        self.heartbeat_mode = mode;
        self
    }

    /// What broadcast lag does to watchers (default [`LagPolicy::Warn`]).
    #[must_use]
    pub fn with_lag_policy(mut self, policy: LagPolicy) -> Self {
        self.lag_policy = policy;
        self
    }

    /// With `true`, a Progress event carries the higher of the given revision
    /// (`last_applied`) and the highest revision dispatched so far: a watcher never sees
    /// Progress go below an event it already received, even when `last_applied` lags
    /// behind the broadcast. Default `false` (Progress carries `last_applied` as is).
    #[must_use]
    pub fn with_monotone_progress(mut self, on: bool) -> Self {
        self.monotone_progress = on;
        self
    }

    /// With `true`, a Put or Delete whose revision is not above the highest revision
    /// dispatched so far is a replay and is dropped (counted in
    /// [`Metrics::replayed_events_skipped`](crate::Metrics::replayed_events_skipped)): for a
    /// source that can emit one log entry twice. d-engine 0.2.4 does: its commit handler
    /// hands committed entries to the state-machine worker without waiting, and computes
    /// the next batch from the last *applied* index, so a commit notification that arrives
    /// before the worker caught up sends the same entries again, and each emits its event
    /// again. Only for sources whose revisions grow with every write (one event per log
    /// index); Progress and Canceled events pass through. Default `false`.
    #[must_use]
    pub fn with_skip_replayed_revisions(mut self, on: bool) -> Self {
        self.skip_replayed = on;
        self
    }

    /// Every `interval`, looks at about `budget` watchers (resuming where the last look
    /// stopped, wrapping around) and removes those whose receiver is gone, for instance
    /// dropped after [`WatcherHandle::into_receiver`](crate::WatcherHandle::into_receiver),
    /// so that they stop counting against the limit. The reference removes such a watcher
    /// only when an event for its key arrives. Off by default. An `interval` below
    /// [`MIN_CLOSED_SWEEP_INTERVAL`] is raised to it; a `budget` of 0 is raised to 1.
    #[must_use]
    pub fn with_closed_receiver_sweep(mut self, interval: Duration, budget: usize) -> Self {
        self.closed_sweep = Some(ClosedReceiverSweep {
            interval: interval.max(MIN_CLOSED_SWEEP_INTERVAL),
            budget: budget.max(1),
        });
        self
    }

    /// Keeps a bounded history of dispatched events, so that a watch can start from a past
    /// revision ([`WatchSpec::from_revision`](crate::WatchSpec::from_revision)); with it,
    /// every cancel sentinel says where to resume (see
    /// [`CancelReason`](crate::CancelReason)). Off by default: the reference keeps none, and
    /// its overflow sentinel carries revision 0.
    #[must_use]
    pub fn with_history(mut self, history: HistoryOptions) -> Self {
        self.history = Some(history);
        self
    }

    /// The history kept, if any.
    pub fn history(&self) -> Option<HistoryOptions> {
        self.history
    }

    /// The heartbeat mode set.
    pub fn heartbeat_mode(&self) -> HeartbeatMode {
        self.heartbeat_mode
    }

    /// The lag policy set.
    pub fn lag_policy(&self) -> LagPolicy {
        self.lag_policy
    }

    /// Whether Progress revisions are kept monotone.
    pub fn monotone_progress(&self) -> bool {
        self.monotone_progress
    }

    /// Whether replayed revisions are dropped.
    pub fn skip_replayed_revisions(&self) -> bool {
        self.skip_replayed
    }

    /// The closed-receiver sweep's interval and budget, if enabled.
    pub fn closed_receiver_sweep(&self) -> Option<(Duration, usize)> {
        self.closed_sweep.map(|s| (s.interval, s.budget))
    }

    pub(crate) fn closed_sweep(&self) -> Option<ClosedReceiverSweep> {
        self.closed_sweep
    }
}

/// Opt-in registry behaviours, set at any time with
/// [`WatchRegistry::set_options`](crate::WatchRegistry::set_options).
/// `RegistryOptions::default()` is the reference's behaviour.
///
/// ```
/// use watchtrie::RegistryOptions;
///
/// let options = RegistryOptions::default().with_release_at_drop(true);
/// assert!(options.release_at_drop());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryOptions {
    release_at_drop: bool,
    max_key_bytes: usize,
    max_segments: usize,
    max_wildcards: usize,
    owner_limit: usize,
}

/// Wildcards a pattern may hold by default: a frontier of at most 2^4 branches per level.
pub const DEFAULT_MAX_WILDCARDS: usize = 4;

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            release_at_drop: false,
            max_key_bytes: usize::MAX,
            max_segments: usize::MAX,
            max_wildcards: DEFAULT_MAX_WILDCARDS,
            owner_limit: usize::MAX,
        }
    }
}

impl RegistryOptions {
    /// Limits what one registration's key can cost: at most `max_bytes` bytes in a key,
    /// prefix, pattern or range bound, and at most `max_segments` separators in a prefix,
    /// byte prefix or pattern (the trie and frontier walks pay per segment; the dispatch of
    /// one event under a watched prefix walks at most the deepest registered one). A refusal
    /// is [`RegisterError::KeyTooLong`](crate::RegisterError::KeyTooLong) or
    /// [`RegisterError::TooManySegments`](crate::RegisterError::TooManySegments), allocating
    /// nothing (the drop-in methods report it as `WatchError::LimitExceeded(limit)`). None by
    /// default, as in the reference.
    #[must_use]
    pub fn with_key_limits(mut self, max_bytes: usize, max_segments: usize) -> Self {
        self.max_key_bytes = max_bytes;
        self.max_segments = max_segments;
        self
    }

    /// At most `max` wildcards in a pattern (default [`DEFAULT_MAX_WILDCARDS`]): the
    /// frontier a pattern set makes an event walk grows with it (see [`crate::Target::Pattern`]).
    #[must_use]
    pub fn with_max_wildcards(mut self, max: usize) -> Self {
        self.max_wildcards = max;
        self
    }

    /// The cap of every owner without one of its own
    /// ([`WatchRegistry::set_owner_limit`](crate::WatchRegistry::set_owner_limit)): at most
    /// `max` active watchers per [`OwnerId`](crate::OwnerId). None by default.
    #[must_use]
    pub fn with_owner_limit(mut self, max: usize) -> Self {
        self.owner_limit = max;
        self
    }

    /// The default per-owner cap.
    pub fn owner_limit(&self) -> usize {
        self.owner_limit
    }

    /// The longest key, prefix, pattern or range bound accepted, in bytes.
    pub fn max_key_bytes(&self) -> usize {
        self.max_key_bytes
    }

    /// The most separators a prefix, byte prefix or pattern may hold.
    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    /// The most wildcards a pattern may hold.
    pub fn max_wildcards(&self) -> usize {
        self.max_wildcards
    }

    /// With `true`, a dropped handle removes its watcher itself, at once, when no other
    /// writer holds the writer lock (otherwise through the dispatcher, as by default): the
    /// watcher stops counting against the limit, and the prev_kv counter goes down, at the
    /// drop. By default, as in the reference, a dropped handle only sends its unregistration
    /// to the dispatcher, and the watcher counts until the dispatcher has processed it
    /// (before its next event): the reference's own test
    /// `test_concurrent_registrations_never_exceed_cap` depends on that. (A grouped
    /// watcher, which the reference has not, is released at its drop either way: leaving a
    /// group touches no index.)
    #[must_use]
    pub fn with_release_at_drop(mut self, on: bool) -> Self {
        self.release_at_drop = on;
        self
    }

    /// Whether a dropped handle releases its watcher at once.
    pub fn release_at_drop(&self) -> bool {
        self.release_at_drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_reference_behaviour() {
        let options = DispatchOptions::default();
        assert_eq!(options.heartbeat_mode(), HeartbeatMode::Blocking);
        assert_eq!(options.lag_policy(), LagPolicy::Warn);
        assert!(!options.monotone_progress());
        assert!(!options.skip_replayed_revisions());
        assert_eq!(options.closed_receiver_sweep(), None);
    }

    #[test]
    fn absurd_sweep_settings_are_raised_to_workable_ones() {
        let options = DispatchOptions::default().with_closed_receiver_sweep(Duration::ZERO, 0);
        assert_eq!(
            options.closed_receiver_sweep(),
            Some((MIN_CLOSED_SWEEP_INTERVAL, 1))
        );
        let huge = DispatchOptions::default().with_closed_receiver_sweep(Duration::MAX, usize::MAX);
        assert_eq!(
            huge.closed_receiver_sweep(),
            Some((Duration::MAX, usize::MAX))
        );
    }
}
