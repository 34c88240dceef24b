//! A registered watcher as the index stores it, and how one event reaches it.
//!
//! This is the only place that knows what a watcher's channel is: a tokio `mpsc::Sender`
//! (drop-in watchers), a [`CompactSender`] (compact watchers) or a [`GroupSender`] (a shared
//! fan-out group's ring). The index sees an opaque [`WatcherEntry`].

use std::cell::{Cell, OnceCell};

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::channel::{CompactSender, Offer, Queued, Slot};
use crate::event::{WatchEvent, WatchEventType};
use crate::group::{GroupSender, Ring};
use crate::index::WatcherEntry;
use crate::meta::Meta;
use crate::sync::ChannelArc;

/// A watcher's channel.
#[derive(Clone)]
pub(crate) enum Sink {
    /// A drop-in watcher's tokio channel.
    Tokio(mpsc::Sender<WatchEvent>),
    /// A compact watcher's channel.
    Compact(CompactSender),
    /// A shared fan-out group's ring: one push for every member.
    Group(GroupSender),
}

/// One watcher: its [`Meta`] word (id, kind, flags) and its channel. Twenty-four bytes: the
/// channel's kind leaves a niche that a one-watcher list uses for its own tag, so that an
/// index entry with one watcher inline stays 64 bytes (the index holds every watcher twice).
#[derive(Clone)]
pub(crate) struct Watcher {
    meta: Meta,
    pub(crate) sink: Sink,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("meta", &self.meta)
            .field("compact", &matches!(self.sink, Sink::Compact(_)))
            .field("group", &matches!(self.sink, Sink::Group(_)))
            .finish()
    }
}

impl Watcher {
    /// A watcher with the word `meta`.
    pub(crate) fn new(meta: Meta, sink: Sink) -> Self {
        Self { meta, sink }
    }

    /// Whether the watcher asked for previous values.
    #[inline]
    pub(crate) fn prev_kv(&self) -> bool {
        self.meta.prev_kv()
    }

    /// Its word.
    #[inline]
    pub(crate) fn meta(&self) -> Meta {
        self.meta
    }
}

impl WatcherEntry for Watcher {
    #[inline]
    fn id(&self) -> u64 {
        self.meta.id()
    }
}

/// The fields of one event, borrowed once and shared by every delivery.
pub(crate) struct EventView<'a> {
    pub(crate) event_type: WatchEventType,
    pub(crate) key: &'a Bytes,
    pub(crate) value: &'a Bytes,
    pub(crate) prev_value: &'a Bytes,
    pub(crate) revision: u64,
    /// Where a watcher this view overflows may resume (the overflow sentinel carries it);
    /// 0 for the reference's sentinel, which says nothing.
    pub(crate) resume_from: u64,
    /// Whether a compact watcher took its own copy of the event already.
    owned_taken: Cell<bool>,
    /// The copy the second and later compact deliveries share (see
    /// [`EventView::compact_slot`]).
    queued: OnceCell<ChannelArc<Queued>>,
}

impl<'a> EventView<'a> {
    /// A view of one event's fields.
    pub(crate) fn new(
        event_type: WatchEventType,
        key: &'a Bytes,
        value: &'a Bytes,
        prev_value: &'a Bytes,
        revision: u64,
        resume_from: u64,
    ) -> Self {
        Self {
            event_type,
            key,
            value,
            prev_value,
            revision,
            resume_from,
            owned_taken: Cell::new(false),
            queued: OnceCell::new(),
        }
    }

    /// The event for a compact watcher of `shape`. The first takes a copy of its own: into
    /// a backlog that costs no allocation (a lone watcher whose receiver lags allocates
    /// nothing per event), into an empty queue one. The others share one more copy: one
    /// allocation however many take it, then one reference count each, and each receiver
    /// keeps what its watcher asked for ([`Shape`]).
    fn compact_slot(&self, shape: Shape) -> Slot {
        if self.owned_taken.replace(true) {
            Slot::Shared(self.queued())
        } else {
            Slot::Own(shape.event(self))
        }
    }

    fn queued(&self) -> ChannelArc<Queued> {
        ChannelArc::clone(self.queued.get_or_init(|| {
            ChannelArc::new(Queued::Fields(EventFields {
                event_type: self.event_type,
                key: self.key.clone(),
                value: self.value.clone(),
                prev_value: self.prev_value.clone(),
                revision: self.revision,
            }))
        }))
    }
}

/// An event's fields, owned: what a compact watcher's queue shares between watchers of any
/// [`Shape`].
pub(crate) struct EventFields {
    pub(crate) event_type: WatchEventType,
    pub(crate) key: Bytes,
    pub(crate) value: Bytes,
    /// Empty when the write had none.
    pub(crate) prev_value: Bytes,
    pub(crate) revision: u64,
}

/// What of an event a watcher receives: values or keys only, previous values or not. The
/// one place an event is cut to a watcher's options, for every kind of channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) keys_only: bool,
    pub(crate) prev_kv: bool,
}

impl Shape {
    /// The shape of a watcher with the word `meta`.
    pub(crate) fn of(meta: Meta) -> Self {
        Self {
            keys_only: meta.keys_only(),
            prev_kv: meta.prev_kv(),
        }
    }

    /// The event a watcher of this shape receives, from borrowed fields.
    #[inline]
    fn event(self, view: &EventView<'_>) -> WatchEvent {
        let value_of = |value: &Bytes| {
            if self.keys_only {
                Bytes::new()
            } else {
                value.clone()
            }
        };
        WatchEvent {
            event_type: view.event_type,
            key: view.key.clone(),
            value: value_of(view.value),
            prev_value: self.prev_kv.then(|| value_of(view.prev_value)),
            revision: view.revision,
        }
    }

    /// The same, from owned fields (a compact receiver holding the last reference to them:
    /// nothing is cloned).
    pub(crate) fn event_from(self, fields: EventFields) -> WatchEvent {
        let keep = |value: Bytes| if self.keys_only { Bytes::new() } else { value };
        WatchEvent {
            event_type: fields.event_type,
            key: fields.key,
            value: keep(fields.value),
            prev_value: self.prev_kv.then(|| keep(fields.prev_value)),
            revision: fields.revision,
        }
    }

    /// The same, from shared fields.
    pub(crate) fn event_from_shared(self, fields: &EventFields) -> WatchEvent {
        self.event(&EventView::new(
            fields.event_type,
            &fields.key,
            &fields.value,
            &fields.prev_value,
            fields.revision,
            0,
        ))
    }
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The event is in the watcher's buffer.
    Sent,
    /// Only the reserved slot was left: the cancel sentinel went out instead, and the
    /// watcher must be removed and sent nothing more.
    Overflowed,
    /// The watcher's filter drops this event type: nothing was touched.
    Filtered,
    /// The receiver is gone: remove the watcher silently.
    Closed,
    /// No room but the reserved slot, and nothing was sent ([`Watcher::replay`] only).
    Full,
}

impl Watcher {
    /// Delivers `event`, keeping one slot of the buffer for the cancel sentinel.
    #[inline]
    pub(crate) fn deliver(&self, event: &EventView<'_>, is_prefix: bool) -> Delivery {
        if !self.meta.wants(event.event_type) {
            return Delivery::Filtered;
        }
        match &self.sink {
            Sink::Tokio(sender) => self.deliver_tokio(sender, event, is_prefix),
            Sink::Compact(sender) => {
                let outcome = sender.offer(
                    1,
                    || event.compact_slot(Shape::of(self.meta)),
                    || {
                        self.warn_overflow(event, is_prefix, sender.capacity());
                        Some(Self::overflow_sentinel(event))
                    },
                );
                match outcome {
                    Offer::Sent => Delivery::Sent,
                    Offer::Full => Delivery::Overflowed,
                    Offer::Closed => Delivery::Closed,
                }
            }
            Sink::Group(sender) => {
                // A ring never refuses: its members see their own lag.
                sender.push(self.event_for(event));
                Delivery::Sent
            }
        }
    }

    /// True if the buffer has no room for an event beside the slot reserved for the cancel
    /// sentinel (a registry's buffer size 0): every event overflows it.
    fn holds_no_event(&self) -> bool {
        match &self.sink {
            Sink::Tokio(sender) => sender.max_capacity() <= 1,
            Sink::Compact(sender) => sender.capacity() <= 1,
            Sink::Group(_) => false,
        }
    }

    /// The group's ring, for a shared fan-out group's watcher.
    pub(crate) fn group(&self) -> Option<&crate::sync::ChannelArc<Ring>> {
        match &self.sink {
            Sink::Group(sender) => Some(sender.ring()),
            _ => None,
        }
    }

    /// The event this watcher receives.
    #[inline]
    fn event_for(&self, event: &EventView<'_>) -> WatchEvent {
        Shape::of(self.meta).event(event)
    }

    /// The sentinel a watcher gets when `event` does not fit.
    fn overflow_sentinel(event: &EventView<'_>) -> WatchEvent {
        match event.resume_from {
            0 => WatchEvent::cancel_sentinel(event.key.clone()),
            resume_from => WatchEvent::overflow_sentinel_at(event.key.clone(), resume_from),
        }
    }

    /// Delivers a history entry to a watcher catching up, only if more than the reserved
    /// slot is free: a replay never overflows, it waits for the receiver to drain. The one
    /// exception is a buffer that holds no event beside that slot (buffer size 0): waiting
    /// would never end, so it overflows as a live event would.
    pub(crate) fn replay(&self, event: &EventView<'_>, is_prefix: bool) -> Delivery {
        if !self.meta.wants(event.event_type) {
            return Delivery::Filtered;
        }
        if self.holds_no_event() {
            return self.deliver(event, is_prefix);
        }
        match &self.sink {
            Sink::Tokio(sender) => {
                if sender.is_closed() {
                    return Delivery::Closed;
                }
                if sender.capacity() <= 1 {
                    return Delivery::Full;
                }
                match sender.try_send(self.event_for(event)) {
                    Ok(()) => Delivery::Sent,
                    Err(TrySendError::Closed(_)) => Delivery::Closed,
                    Err(TrySendError::Full(_)) => Delivery::Full,
                }
            }
            Sink::Compact(sender) => {
                match sender.offer(1, || event.compact_slot(Shape::of(self.meta)), || None) {
                    Offer::Sent => Delivery::Sent,
                    Offer::Full => Delivery::Full,
                    Offer::Closed => Delivery::Closed,
                }
            }
            // Groups are never registered from a revision; pushed like a live event.
            Sink::Group(sender) => {
                sender.push(self.event_for(event));
                Delivery::Sent
            }
        }
    }

    fn warn_overflow(&self, event: &EventView<'_>, is_prefix: bool, capacity: usize) {
        tracing::warn!(
            watcher_id = self.id(),
            key = ?event.key,
            is_prefix,
            buffer_capacity = capacity,
            "watcher buffer overflow, sending cancel"
        );
    }

    #[inline]
    fn deliver_tokio(
        &self,
        sender: &mpsc::Sender<WatchEvent>,
        event: &EventView<'_>,
        is_prefix: bool,
    ) -> Delivery {
        // Only the dispatcher sends, so free capacity can only grow between this check and
        // the send below (the receiver drains concurrently).
        let free = sender.capacity();
        if free <= 1 {
            // free == 0 would mean the sentinel's slot is taken already; nothing can be sent.
            if free == 1 {
                self.warn_overflow(event, is_prefix, sender.max_capacity());
                let _ = sender.try_send(Self::overflow_sentinel(event));
            }
            return Delivery::Overflowed;
        }
        match sender.try_send(self.event_for(event)) {
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
        match &self.sink {
            Sink::Tokio(sender) => sender.is_closed(),
            Sink::Compact(sender) => sender.is_closed(),
            Sink::Group(sender) => sender.is_closed(),
        }
    }

    /// Ends the watch with `sentinel` (lag, compaction), sent into the slot reserved for it.
    /// The caller removes the watcher either way.
    pub(crate) fn cancel(&self, sentinel: WatchEvent) {
        tracing::debug!(
            watcher_id = self.id(),
            reason = ?sentinel.cancel_reason(),
            "cancelling watcher"
        );
        // Fails only if the receiver is gone, or the slot already holds another sentinel.
        match &self.sink {
            Sink::Tokio(sender) => {
                let _ = sender.try_send(sentinel);
            }
            Sink::Compact(sender) => {
                sender.offer(0, || Slot::Own(sentinel), || None);
            }
            Sink::Group(sender) => sender.cancel(sentinel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::WatcherList;

    /// The index holds every watcher twice, most of them inline in a one-watcher list.
    #[test]
    fn a_watcher_is_three_words_and_so_is_a_one_watcher_list() {
        assert_eq!(std::mem::size_of::<Watcher>(), 24);
        assert_eq!(std::mem::size_of::<WatcherList<Watcher>>(), 24);
    }

    #[test]
    fn a_watcher_reports_its_word() {
        use crate::meta::{Flags, TargetKind};
        let (sender, _receiver) = mpsc::channel(1);
        for (id, prev_kv) in [(1, true), (1, false), (Meta::MAX_ID, true), (42, false)] {
            let flags = Flags::default().with_if(Flags::PREV_KV, prev_kv);
            let meta = Meta::new(id, TargetKind::Exact, flags);
            let w = Watcher::new(meta, Sink::Tokio(sender.clone()));
            assert_eq!((w.id(), w.prev_kv()), (id, prev_kv));
        }
    }
}
