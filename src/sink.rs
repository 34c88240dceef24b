//! A registered watcher as the index stores it, and how one event reaches it.
//!
//! This is the only place that knows a watcher's channel is a tokio `mpsc::Sender`; the index
//! sees an opaque [`WatcherEntry`]. A future compact channel is another sender type here.

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::event::{WatchEvent, WatchEventType};
use crate::index::WatcherEntry;

/// One watcher: its id, whether it wants previous values, and its channel. Sixteen bytes:
/// the flag rides in the id word's low bit, so that an index entry with one watcher inline
/// stays small (the index holds every watcher twice).
#[derive(Clone, Debug)]
pub(crate) struct Watcher {
    id_and_prev_kv: u64,
    pub(crate) sender: mpsc::Sender<WatchEvent>,
}

impl Watcher {
    /// A watcher; ids use 63 bits (they count registrations from 1).
    pub(crate) fn new(id: u64, prev_kv: bool, sender: mpsc::Sender<WatchEvent>) -> Self {
        debug_assert!(id < 1 << 63);
        Self {
            id_and_prev_kv: id << 1 | u64::from(prev_kv),
            sender,
        }
    }

    /// Whether the watcher asked for previous values.
    #[inline]
    pub(crate) fn prev_kv(&self) -> bool {
        self.id_and_prev_kv & 1 == 1
    }
}

impl WatcherEntry for Watcher {
    #[inline]
    fn id(&self) -> u64 {
        self.id_and_prev_kv >> 1
    }
}

/// The fields of one event, borrowed once and shared by every delivery.
pub(crate) struct EventView<'a> {
    pub(crate) event_type: WatchEventType,
    pub(crate) key: &'a Bytes,
    pub(crate) value: &'a Bytes,
    pub(crate) prev_value: &'a Bytes,
    pub(crate) revision: u64,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The event is in the watcher's buffer.
    Sent,
    /// Only the reserved slot was left: the cancel sentinel went out instead, and the
    /// watcher must be removed and sent nothing more.
    Overflowed,
    /// The receiver is gone: remove the watcher silently.
    Closed,
}

impl Watcher {
    /// Delivers `event`, keeping one slot of the buffer for the cancel sentinel.
    #[inline]
    pub(crate) fn deliver(&self, event: &EventView<'_>, is_prefix: bool) -> Delivery {
        // Only the dispatcher sends, so free capacity can only grow between this check and
        // the send below (the receiver drains concurrently).
        let free = self.sender.capacity();
        if free <= 1 {
            // free == 0 would mean the sentinel's slot is taken already; nothing can be sent.
            if free == 1 {
                tracing::warn!(
                    watcher_id = self.id(),
                    key = ?event.key,
                    is_prefix,
                    buffer_capacity = self.sender.max_capacity(),
                    "watcher buffer overflow, sending cancel"
                );
                let _ = self
                    .sender
                    .try_send(WatchEvent::cancel_sentinel(event.key.clone()));
            }
            return Delivery::Overflowed;
        }
        let delivered = WatchEvent {
            event_type: event.event_type,
            key: event.key.clone(),
            value: event.value.clone(),
            prev_value: self.prev_kv().then(|| event.prev_value.clone()),
            revision: event.revision,
        };
        match self.sender.try_send(delivered) {
            Ok(()) => Delivery::Sent,
            Err(TrySendError::Closed(_)) => Delivery::Closed,
            // Another sender raced us for the buffer (two dispatchers on one registry): the
            // event cannot be delivered, so end the watch rather than lose it silently.
            Err(TrySendError::Full(_)) => Delivery::Overflowed,
        }
    }
}

impl Watcher {
    /// True once the receiver is gone: the watcher can be removed without a delivery.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Ends the watch for broadcast lag: sends the lag sentinel into the slot reserved for
    /// it. The caller removes the watcher either way.
    pub(crate) fn cancel_lagged(&self, resume_from: u64) {
        tracing::debug!(
            watcher_id = self.id(),
            resume_from,
            "dispatcher lagged, cancelling watcher"
        );
        // Fails only if the receiver is gone, or the slot already holds another sentinel.
        let _ = self.sender.try_send(WatchEvent::lag_sentinel(resume_from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::WatcherList;

    /// The index holds every watcher twice, most of them inline in a one-watcher list.
    #[test]
    fn a_watcher_is_two_words_and_a_one_watcher_list_three() {
        assert_eq!(std::mem::size_of::<Watcher>(), 16);
        assert_eq!(std::mem::size_of::<WatcherList<Watcher>>(), 24);
    }

    #[test]
    fn the_prev_kv_flag_and_the_id_share_a_word_without_mixing() {
        let (sender, _receiver) = mpsc::channel(1);
        for (id, prev_kv) in [(1, true), (1, false), ((1 << 63) - 1, true), (42, false)] {
            let w = Watcher::new(id, prev_kv, sender.clone());
            assert_eq!((w.id(), w.prev_kv()), (id, prev_kv));
        }
    }
}
