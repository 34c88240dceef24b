//! [`WatcherHandle`]: the caller's end of one watcher.

use std::fmt;
use std::mem;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::trace;

use crate::event::WatchEvent;
use crate::registry::Shared;
use std::sync::Arc;

/// One registered watcher: its id, what it watches and its event receiver.
///
/// Dropping the handle unregisters the watcher: at once when no other writer is busy,
/// otherwise through the dispatcher before its next event; it never waits.
/// [`WatcherHandle::into_receiver`] keeps the watcher registered instead, until its receiver
/// is dropped and a delivery finds it closed, or it overflows.
pub struct WatcherHandle {
    receiver: mpsc::Receiver<WatchEvent>,
    registration: Registration,
}

/// The part of a handle that unregisters on drop; disarmed by `into_receiver`.
struct Registration {
    id: u64,
    key: Bytes,
    is_prefix: bool,
    /// The registry to unregister from; `None` once `into_receiver` disarmed the drop.
    registry: Option<Arc<Shared>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.take() {
            // The key is not needed any more: move it instead of cloning it.
            let key = mem::take(&mut self.key);
            trace!(watcher_id = self.id, key = ?key, is_prefix = self.is_prefix, "Watcher unregistered");
            registry.unregister(self.id, key);
        }
    }
}

impl WatcherHandle {
    pub(crate) fn new(
        id: u64,
        key: Bytes,
        is_prefix: bool,
        receiver: mpsc::Receiver<WatchEvent>,
        registry: Arc<Shared>,
    ) -> Self {
        Self {
            receiver,
            registration: Registration {
                id,
                key,
                is_prefix,
                registry: Some(registry),
            },
        }
    }

    /// The watcher's id: 1 for the registry's first, then consecutive.
    pub fn id(&self) -> u64 {
        self.registration.id
    }

    /// The watched key, or the prefix for a prefix watcher.
    pub fn key(&self) -> &Bytes {
        &self.registration.key
    }

    /// True for a watcher made by `register_prefix`.
    pub fn is_prefix(&self) -> bool {
        self.registration.is_prefix
    }

    /// The receiver of this watcher's events.
    pub fn receiver_mut(&mut self) -> &mut mpsc::Receiver<WatchEvent> {
        &mut self.receiver
    }

    /// Gives up the handle for `(id, key, receiver)`, without unregistering: the watcher
    /// stays until a delivery finds the receiver dropped, or it overflows. For long-lived
    /// streams that outlive the handle's scope.
    pub fn into_receiver(self) -> (u64, Bytes, mpsc::Receiver<WatchEvent>) {
        let WatcherHandle {
            receiver,
            mut registration,
        } = self;
        registration.registry = None;
        let key = mem::take(&mut registration.key);
        (registration.id, key, receiver)
    }
}

impl fmt::Debug for WatcherHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatcherHandle")
            .field("id", &self.registration.id)
            .field("key", &self.registration.key)
            .field("is_prefix", &self.registration.is_prefix)
            .finish_non_exhaustive()
    }
}
