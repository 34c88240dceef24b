//! Progress on demand: [`ProgressRequest`], and [`ProgressRequester`] to send one to a
//! running [`WatchDispatcher`](super::WatchDispatcher).
//!
//! A requested Progress is ordered with events: its revision is never below an event the
//! dispatcher has already delivered (etcd #15220 was a requested progress that was). The
//! async dispatcher first reads `last_applied`, then dispatches every event already queued,
//! and only then sends Progress carrying the higher of the two; so with a store that updates
//! `last_applied` after broadcasting the events it covers (d-engine's state-machine handler
//! does), every event up to the revision has been delivered first.

use std::fmt;

use tokio::sync::mpsc;

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
}

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

/// The dispatcher has stopped: nobody is left to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatcherStopped;

impl fmt::Display for DispatcherStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the dispatcher has stopped")
    }
}

impl std::error::Error for DispatcherStopped {}
