//! [`WatcherHandle`] and [`CompactWatcherHandle`]: the caller's end of one watcher.

use std::fmt;
use std::mem;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::trace;

use crate::channel::CompactReceiver;
use crate::dispatch::ProgressRequest;
use crate::event::WatchEvent;
use crate::meta::{Meta, TargetKind};
use crate::publish::{Removal, Shared};
use crate::spec::Target;
use std::sync::{Arc, Weak};

/// One registered watcher: its id, what it watches and its event receiver.
///
/// Dropping the handle unregisters the watcher: the dispatcher removes it before its next
/// event, as in the reference (or the drop itself does, with
/// [`RegistryOptions::with_release_at_drop`](crate::RegistryOptions::with_release_at_drop),
/// when no other writer holds the lock; it then waits for the dispatcher to let go of each
/// snapshot, at most a batch of eight events or a ~0.5 ms sweep slice each, and never for
/// the lock).
/// [`WatcherHandle::into_receiver`] keeps the watcher registered instead, until its receiver
/// is dropped and a delivery finds it closed, or it overflows.
///
/// A handle does not keep its registry alive: once the registry is dropped (every `Arc` to
/// it, the dispatcher's included, which it gives up when `run` returns), the receiver gets
/// the events still queued, then `None`, as with the reference.
pub struct WatcherHandle {
    receiver: mpsc::Receiver<WatchEvent>,
    registration: Registration,
}

/// The part of a handle that unregisters on drop; disarmed by `into_receiver`. 48 bytes
/// (callers keep millions of handles): the id and kind share one [`Meta`] word.
///
/// It holds the registry weakly: the registry's snapshots own every watcher's sender, so a
/// strong reference here would keep this very watcher's channel open after the registry and
/// its dispatcher are gone, and a receiver waiting in `recv()` would wait forever instead of
/// seeing the stream end (as it does with the reference).
struct Registration {
    meta: Meta,
    key: Bytes,
    /// The registry to unregister from; `None` once `into_receiver` disarmed the drop.
    registry: Option<Weak<Shared>>,
}

impl Registration {
    fn new(meta: Meta, key: Bytes, registry: &Arc<Shared>) -> Self {
        Self {
            meta,
            key,
            registry: Some(Arc::downgrade(registry)),
        }
    }

    fn id(&self) -> u64 {
        self.meta.id()
    }

    fn is_prefix(&self) -> bool {
        self.meta.kind() == TargetKind::Prefix
    }

    fn target(&self) -> Target {
        Target::from_stored(self.meta.kind(), &self.key)
    }

    fn progress_request(&self) -> ProgressRequest {
        ProgressRequest::Watcher {
            id: self.id(),
            target: self.target(),
        }
    }

    /// Keeps the watcher registered: returns `(id, key)` without unregistering.
    fn disarm(mut self) -> (u64, Bytes) {
        self.registry = None;
        (self.id(), mem::take(&mut self.key))
    }

    fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("id", &self.id())
            .field("key", &self.key)
            .field("is_prefix", &self.is_prefix())
            .finish_non_exhaustive()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A registry already gone took every watcher with it: nothing to unregister.
        if let Some(registry) = self.registry.take().and_then(|weak| weak.upgrade()) {
            // The key is not needed any more: move it instead of cloning it.
            let key = mem::take(&mut self.key);
            trace!(watcher_id = self.id(), key = ?key, is_prefix = self.is_prefix(), "Watcher unregistered");
            registry.unregister(Removal {
                id: self.id(),
                pattern: key,
                kind: Some(self.meta.kind()),
                resumed: self.meta.resumed(),
            });
        }
    }
}

impl WatcherHandle {
    pub(crate) fn new(
        meta: Meta,
        key: Bytes,
        receiver: mpsc::Receiver<WatchEvent>,
        registry: &Arc<Shared>,
    ) -> Self {
        Self {
            receiver,
            registration: Registration::new(meta, key, registry),
        }
    }

    /// The watcher's id: 1 for the registry's first, then increasing (consecutive unless
    /// a shared fan-out group was created, which takes one more for the group's own
    /// watcher).
    pub fn id(&self) -> u64 {
        self.registration.id()
    }

    /// The watched key, or the prefix for a prefix watcher (the bytes of any other target;
    /// for a range, its bounds encoded as one pattern: see [`Self::target`]).
    pub fn key(&self) -> &Bytes {
        &self.registration.key
    }

    /// True for a watcher of a slash prefix (`register_prefix`, [`Target::Prefix`]).
    pub fn is_prefix(&self) -> bool {
        self.registration.is_prefix()
    }

    /// What the watcher watches.
    pub fn target(&self) -> Target {
        self.registration.target()
    }

    /// A request for a Progress to this watcher alone (for
    /// [`InlineDispatcher::request_progress`](crate::InlineDispatcher::request_progress) or a
    /// [`ProgressRequester`](crate::ProgressRequester)).
    pub fn progress_request(&self) -> ProgressRequest {
        self.registration.progress_request()
    }

    /// The receiver of this watcher's events.
    pub fn receiver_mut(&mut self) -> &mut mpsc::Receiver<WatchEvent> {
        &mut self.receiver
    }

    /// Gives up the handle for `(id, key, receiver)`, without unregistering: the watcher
    /// stays until a delivery finds the receiver dropped, or it overflows. For long-lived
    /// streams that outlive the handle's scope.
    pub fn into_receiver(self) -> (u64, Bytes, mpsc::Receiver<WatchEvent>) {
        let (id, key) = self.registration.disarm();
        (id, key, self.receiver)
    }
}

impl fmt::Debug for WatcherHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.registration.debug("WatcherHandle", f)
    }
}

/// One registered compact watcher (see
/// [`WatchRegistry::register_compact`](crate::WatchRegistry::register_compact)): the same as
/// a [`WatcherHandle`], with a [`CompactReceiver`].
pub struct CompactWatcherHandle {
    receiver: CompactReceiver,
    registration: Registration,
}

impl CompactWatcherHandle {
    pub(crate) fn new(
        meta: Meta,
        key: Bytes,
        receiver: CompactReceiver,
        registry: &Arc<Shared>,
    ) -> Self {
        Self {
            receiver,
            registration: Registration::new(meta, key, registry),
        }
    }

    /// The watcher's id (one sequence with drop-in watchers).
    pub fn id(&self) -> u64 {
        self.registration.id()
    }

    /// The watched key, or the prefix for a prefix watcher (see [`WatcherHandle::key`]).
    pub fn key(&self) -> &Bytes {
        &self.registration.key
    }

    /// True for a watcher of a slash prefix.
    pub fn is_prefix(&self) -> bool {
        self.registration.is_prefix()
    }

    /// What the watcher watches.
    pub fn target(&self) -> Target {
        self.registration.target()
    }

    /// A request for a Progress to this watcher alone (for
    /// [`InlineDispatcher::request_progress`](crate::InlineDispatcher::request_progress) or a
    /// [`ProgressRequester`](crate::ProgressRequester)).
    pub fn progress_request(&self) -> ProgressRequest {
        self.registration.progress_request()
    }

    /// The receiver of this watcher's events.
    pub fn receiver_mut(&mut self) -> &mut CompactReceiver {
        &mut self.receiver
    }

    /// Gives up the handle for `(id, key, receiver)`, without unregistering (see
    /// [`WatcherHandle::into_receiver`]).
    pub fn into_receiver(self) -> (u64, Bytes, CompactReceiver) {
        let (id, key) = self.registration.disarm();
        (id, key, self.receiver)
    }
}

impl fmt::Debug for CompactWatcherHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.registration.debug("CompactWatcherHandle", f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers keep millions of handles: their size is part of each watcher's cost.
    #[test]
    fn a_handle_is_seven_words() {
        assert_eq!(mem::size_of::<WatcherHandle>(), 56);
        assert_eq!(mem::size_of::<CompactWatcherHandle>(), 56);
    }
}
