//! [`WatcherHandle`]: the caller's end of one watcher.

use std::fmt;
use std::mem;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::trace;

use crate::event::WatchEvent;

/// One registered watcher: its id, what it watches and its event receiver.
///
/// Dropping the handle unregisters the watcher (the dispatcher applies it before its next
/// event). [`WatcherHandle::into_receiver`] keeps the watcher registered instead, until its
/// receiver is dropped and a delivery finds it closed, or it overflows.
pub struct WatcherHandle {
    receiver: mpsc::Receiver<WatchEvent>,
    registration: Registration,
}

/// The part of a handle that unregisters on drop; disarmed by `into_receiver`.
struct Registration {
    id: u64,
    key: Bytes,
    is_prefix: bool,
    unregister_tx: Option<mpsc::UnboundedSender<(u64, Bytes)>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(tx) = self.unregister_tx.take() {
            // The key is not needed any more: move it instead of cloning it.
            let key = mem::take(&mut self.key);
            trace!(watcher_id = self.id, key = ?key, is_prefix = self.is_prefix, "Watcher unregistered");
            // A closed channel means the dispatcher is gone, and the index with it.
            let _ = tx.send((self.id, key));
        }
    }
}

impl WatcherHandle {
    pub(crate) fn new(
        id: u64,
        key: Bytes,
        is_prefix: bool,
        receiver: mpsc::Receiver<WatchEvent>,
        unregister_tx: mpsc::UnboundedSender<(u64, Bytes)>,
    ) -> Self {
        Self {
            receiver,
            registration: Registration {
                id,
                key,
                is_prefix,
                unregister_tx: Some(unregister_tx),
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
        registration.unregister_tx = None;
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
