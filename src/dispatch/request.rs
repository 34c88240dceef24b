//! What a dispatcher is told from outside: progress on demand ([`ProgressRequest`], and
//! [`ProgressRequester`] to send one to a running [`WatchDispatcher`](super::WatchDispatcher)),
//! and gaps in its event stream ([`GapReporter`]).
//!
//! A requested Progress is ordered with events: its revision is never below an event the
//! dispatcher has already delivered (etcd #15220 was a requested progress that was), nor
//! below a Progress a sweep (a heartbeat) already sent. The async dispatcher first reads
//! `last_applied`, then dispatches every event already queued, and only then sends Progress
//! carrying the highest of those; so with a store that updates `last_applied` after
//! broadcasting the events it covers (d-engine's state-machine handler does), every event
//! up to the revision has been delivered first. An inline driver that passes
//! `broadcast_progress` a revision has the same promise only if every event up to that
//! revision was dispatched before: a later requested Progress repeats it.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::sync::{AtomicU64, Ordering};

use crate::group::Ring;
use crate::spec::Target;

/// Who a requested Progress goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressRequest {
    /// Every watcher (a sweep, in the dispatcher's heartbeat mode).
    All,
    /// One watcher: its id and target (from `WatcherHandle::progress_request`).
    Watcher {
        /// The watcher's id.
        id: u64,
        /// What it watches.
        target: Target,
    },
    /// One member of a shared fan-out group (from `GroupedWatcherHandle::progress_request`):
    /// it reads the Progress after every event its group received before the request.
    Member(MemberProgress),
}

/// Which member of a shared fan-out group a requested Progress is for (from
/// [`GroupedWatcherHandle::progress_request`](crate::GroupedWatcherHandle::progress_request)).
#[derive(Clone)]
pub struct MemberProgress {
    pub(crate) ring: crate::sync::ChannelArc<Ring>,
    pub(crate) slot: u32,
    pub(crate) id: u64,
}

impl MemberProgress {
    /// The member's id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl fmt::Debug for MemberProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberProgress")
            .field("id", &self.id)
            .field("group", &self.ring.watcher_id)
            .finish_non_exhaustive()
    }
}

impl PartialEq for MemberProgress {
    fn eq(&self, other: &Self) -> bool {
        // Watcher ids are never reused, and a member's id names it within its group.
        (self.ring.watcher_id, self.id) == (other.ring.watcher_id, other.id)
    }
}

impl Eq for MemberProgress {}

/// Sends progress requests to a running [`WatchDispatcher`](super::WatchDispatcher). Get
/// one from [`WatchDispatcher::progress_requester`](super::WatchDispatcher::progress_requester)
/// before `run`; clone it freely.
#[derive(Clone, Debug)]
pub struct ProgressRequester {
    pub(super) tx: mpsc::UnboundedSender<ProgressRequest>,
}

impl ProgressRequester {
    /// Asks the dispatcher for a Progress to every watcher, or to one. Returns at once; the
    /// Progress follows every event queued before it.
    pub fn request(&self, request: ProgressRequest) -> Result<(), DispatcherStopped> {
        self.tx.send(request).map_err(|_| DispatcherStopped)
    }
}

/// Tells a dispatcher that its event stream has a gap: the events up to and including a
/// revision will never be sent to it, because its store jumped past them (a Raft follower
/// that installed a snapshot from its leader applies no entry the snapshot covers, and so
/// broadcasts no event for them). Get one from [`WatchDispatcher::gap_reporter`] or
/// [`InlineDispatcher::gap_reporter`]; clone it freely.
///
/// Report the gap before broadcasting the first event after it. The dispatcher acts on it
/// just before it dispatches the first event above the gap, so events sent before the gap
/// are delivered first, in order:
/// - the history (if kept) is emptied and its floor moves past the gap: a watch from a
///   revision at or below it is told `Compacted { oldest: through + 1 }`;
/// - a watcher from a revision still being fed is cancelled with `Lagged { resume_from }`,
///   the first revision it did not get; one waiting for a start inside the gap is
///   cancelled with `Lagged { resume_from: start }`; one waiting for a later start stays;
/// - live watchers are the lag policy's ([`LagPolicy`](crate::LagPolicy)): under
///   `CancelWatchers` each gets `Lagged { resume_from }` (the first revision of the gap);
///   under the default they are not told, as with lost broadcast events.
///
/// A gap at or below what the dispatcher has already dispatched changes nothing.
///
/// [`WatchDispatcher::gap_reporter`]: super::WatchDispatcher::gap_reporter
/// [`InlineDispatcher::gap_reporter`]: super::InlineDispatcher::gap_reporter
#[derive(Clone, Debug)]
pub struct GapReporter {
    pub(super) through: Arc<AtomicU64>,
}

impl GapReporter {
    /// Reports that no event with a revision up to `through` will come from now on.
    pub fn report(&self, through: u64) {
        // Relaxed: the dispatcher reads it before each event it receives, and the event
        // after the gap reaches it through a channel, which orders this store before it.
        self.through.fetch_max(through, Ordering::Relaxed);
    }
}

/// The dispatcher has stopped: nobody is left to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatcherStopped;

impl fmt::Display for DispatcherStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the dispatcher has stopped")
    }
}

impl std::error::Error for DispatcherStopped {}
