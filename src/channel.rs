//! A compact watcher channel: bounded, single receiver, with a buffer allocated only while
//! events wait in it.
//!
//! A tokio `mpsc` channel allocates a block of 32 slots up front (about 4.3 KB for
//! [`WatchEvent`]s): a million idle watchers hold 4.3 GB of empty slots. Here an idle watcher
//! costs its [`ChannelState`] alone (one 56-byte allocation): the queue allocates on the first event
//! and is given back whenever the receiver drains it. Semantics are the drop-in channel's:
//! the same bound (the registry reserves the last slot for the cancel sentinel), the receiver
//! sees the end of the stream once every sender is gone (the watcher left both snapshots),
//! and senders see a dropped receiver as closed.
//!
//! One mutex guards the queue. Only the dispatcher sends, and the receiver locks it once
//! per event taken, so it is uncontended in the common case; both sides hold it for a few
//! instructions and never across an `.await`.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::PoisonError;
use std::task::{Context, Poll, Waker};

use crate::event::WatchEvent;
// From the shim, so that the loom models explore the wake-up and close protocol too.
use crate::sync::{AtomicU32, ChannelArc as Arc, Mutex, MutexGuard, Ordering};

/// Why [`CompactReceiver::try_recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// No event is waiting; more may come.
    Empty,
    /// No event is waiting and none will come: the watcher was removed (unregistered,
    /// cancelled, or its registry dropped).
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("receiving on an empty channel"),
            TryRecvError::Disconnected => f.write_str("receiving on a closed channel"),
        }
    }
}

impl std::error::Error for TryRecvError {}

/// What both ends share: 40 bytes, so that with the reference counts an idle channel is
/// one 56-byte request (a 64-byte block for malloc).
pub(crate) struct ChannelState {
    queue: Mutex<Queue>,
    /// Slots, the sentinel's included.
    capacity: u32,
    /// Live senders (the index holds one per snapshot) in the low bits, and
    /// [`RECEIVER_GONE`] once the receiver is dropped: one word, so that the state fits in
    /// 40 bytes. The count changes outside the lock; the receiver reads it under the lock,
    /// and the last sender takes the lock to wake it. The bit is set before the receiver's
    /// last lock, and a sender rechecks it under the lock before it pushes.
    ends: AtomicU32,
}

/// The bit of [`ChannelState::ends`] that says the receiver is gone.
const RECEIVER_GONE: u32 = 1 << 31;

struct Queue {
    /// Allocated with the first waiting event, freed when the receiver takes the last.
    /// Boxed on purpose: an idle watcher then holds 8 bytes here instead of a `VecDeque`'s
    /// 32, and idle watchers are what there are millions of.
    events: Option<Box<Waiting>>,
    /// The receiver's waker while it waits.
    waker: Option<Waker>,
}

/// The events waiting for the receiver. A receiver that keeps up has one at a time, so the
/// first is stored alone (one allocation, the box) and a `VecDeque` (a second allocation,
/// its buffer) comes only with a second event waiting beside it.
enum Waiting {
    One(WatchEvent),
    Many(VecDeque<WatchEvent>),
}

/// Slots a queue starts with once two events wait: a burst usually brings a few.
const FIRST_QUEUE_CAPACITY: usize = 4;

impl Queue {
    fn len(&self) -> usize {
        match self.events.as_deref() {
            None => 0,
            Some(Waiting::One(_)) => 1,
            Some(Waiting::Many(events)) => events.len(),
        }
    }

    fn push(&mut self, event: WatchEvent) {
        match self.events.as_deref_mut() {
            None => self.events = Some(Box::new(Waiting::One(event))),
            Some(Waiting::Many(events)) => events.push_back(event),
            Some(waiting @ Waiting::One(_)) => {
                let mut events = VecDeque::with_capacity(FIRST_QUEUE_CAPACITY);
                if let Waiting::One(first) =
                    std::mem::replace(waiting, Waiting::Many(VecDeque::new()))
                {
                    events.push_back(first);
                }
                events.push_back(event);
                *waiting = Waiting::Many(events);
            }
        }
    }

    /// Takes the oldest event, giving the memory back with the last one.
    fn pop(&mut self) -> Option<WatchEvent> {
        if let Waiting::Many(events) = self.events.as_deref_mut()? {
            if events.len() > 1 {
                return events.pop_front();
            }
        }
        match *self.events.take()? {
            Waiting::One(event) => Some(event),
            Waiting::Many(mut events) => events.pop_front(),
        }
    }
}

impl ChannelState {
    /// Live senders. Acquire: pairs with the last sender's AcqRel decrement.
    fn senders(&self) -> u32 {
        self.ends.load(Ordering::Acquire) & !RECEIVER_GONE
    }

    /// True once the receiver is dropped. Acquire: pairs with the receiver's Release, so
    /// that a gone receiver is never sent to.
    fn receiver_gone(&self) -> bool {
        self.ends.load(Ordering::Acquire) & RECEIVER_GONE != 0
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (every operation on it
        // is a single push, pop or replace): carry on.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The most slots a compact channel holds (a larger buffer size is clamped to it: it is
/// 4 G events, far beyond any memory).
pub(crate) const MAX_CAPACITY: usize = u32::MAX as usize;

/// A channel of `capacity` slots (at least 1, at most [`MAX_CAPACITY`]).
pub(crate) fn channel(capacity: usize) -> (CompactSender, CompactReceiver) {
    let state = Arc::new(ChannelState {
        queue: Mutex::new(Queue {
            events: None,
            waker: None,
        }),
        capacity: capacity.clamp(1, MAX_CAPACITY) as u32,
        ends: AtomicU32::new(1),
    });
    (
        CompactSender {
            state: Arc::clone(&state),
        },
        CompactReceiver { state },
    )
}

/// The dispatcher's end.
pub(crate) struct CompactSender {
    state: Arc<ChannelState>,
}

/// What [`CompactSender::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// The event is queued.
    Sent,
    /// Only `reserve` slots were free: the event was not queued; `last_words` (if given)
    /// took the first free slot.
    Full,
    /// The receiver is gone.
    Closed,
}

impl CompactSender {
    /// Queues `event()` if more than `reserve` slots are free; otherwise queues
    /// `last_words()` if any slot is free. One lock for the whole decision, so nothing can
    /// come between the check and the push.
    pub(crate) fn offer(
        &self,
        reserve: usize,
        event: impl FnOnce() -> WatchEvent,
        last_words: impl FnOnce() -> Option<WatchEvent>,
    ) -> Offer {
        // The cheap answer for a receiver long gone; not the final word (see below).
        if self.is_closed() {
            return Offer::Closed;
        }
        self.offer_locked(reserve, event, last_words)
    }

    /// [`Self::offer`] past its unlocked check, which the receiver may have gone since.
    fn offer_locked(
        &self,
        reserve: usize,
        event: impl FnOnce() -> WatchEvent,
        last_words: impl FnOnce() -> Option<WatchEvent>,
    ) -> Offer {
        let mut queue = self.state.lock();
        // The receiver's drop sets its bit before it takes this lock to clear the queue, so
        // a push after that clear would sit here until the last sender goes: recheck under it.
        if self.state.receiver_gone() {
            return Offer::Closed;
        }
        let free = self.capacity() - queue.len();
        let outcome = if free > reserve {
            queue.push(event());
            Offer::Sent
        } else {
            if free > 0 {
                if let Some(last) = last_words() {
                    queue.push(last);
                }
            }
            Offer::Full
        };
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
        outcome
    }

    /// Free slots right now.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.capacity() - self.state.lock().len()
    }

    /// Slots in all.
    pub(crate) fn capacity(&self) -> usize {
        self.state.capacity as usize
    }

    /// True once the receiver is dropped.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.receiver_gone()
    }
}

impl Clone for CompactSender {
    fn clone(&self) -> Self {
        // Relaxed: a new sender is made from a live one, so the count cannot reach zero
        // meanwhile (the same argument as `Arc::clone`).
        self.state.ends.fetch_add(1, Ordering::Relaxed);
        Self {
            state: Arc::clone(&self.state),
        }
    }
}

impl Drop for CompactSender {
    fn drop(&mut self) {
        // AcqRel: the last sender's decrement must follow every other sender's pushes, and
        // the receiver, reading the count under the lock, then sees the end of the stream.
        if self.state.ends.fetch_sub(1, Ordering::AcqRel) & !RECEIVER_GONE == 1 {
            let waker = self.state.lock().waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// The receiving end of a compact watcher channel (see
/// [`WatchRegistry::register_compact`](crate::WatchRegistry::register_compact)). Receives
/// the same events as a drop-in watcher's `tokio::sync::mpsc::Receiver`: the stream ends
/// (`None`) once the watcher is removed, after the cancel sentinel if it fell behind.
///
/// Memory: one 56-byte allocation while no event waits; the queue is allocated on the first event
/// and given back whenever the receiver takes the last one.
pub struct CompactReceiver {
    state: Arc<ChannelState>,
}

impl CompactReceiver {
    /// The next event, waiting for one if none is queued; `None` once the watcher is
    /// removed and every queued event has been taken. Cancel-safe: a cancelled call loses
    /// nothing.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Result<WatchEvent, TryRecvError> {
        let mut queue = self.state.lock();
        match queue.pop() {
            Some(event) => Ok(event),
            None if self.state.senders() == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Polls for the next event (the building block of [`Self::recv`] and the `Stream`
    /// implementation).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        let mut queue = self.state.lock();
        if let Some(event) = queue.pop() {
            return Poll::Ready(Some(event));
        }
        // Read under the lock, and the last sender takes this lock after its decrement, so
        // a waker stored here is always woken.
        if self.state.senders() == 0 {
            return Poll::Ready(None);
        }
        match &mut queue.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.state.lock().len()
    }

    /// True when no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots in all: the watcher buffer size plus the one reserved for the cancel sentinel.
    pub fn max_capacity(&self) -> usize {
        self.state.capacity as usize
    }

    /// True once no more events can come (the watcher was removed); queued ones may remain.
    pub fn is_closed(&self) -> bool {
        self.state.senders() == 0
    }
}

impl Drop for CompactReceiver {
    fn drop(&mut self) {
        // Set before the lock below: a sender that takes the lock after it sees the bit (it
        // rechecks under the lock), so nothing is queued after this clear.
        self.state.ends.fetch_or(RECEIVER_GONE, Ordering::Release);
        let events = self.state.lock().events.take();
        drop(events);
    }
}

impl futures_core::Stream for CompactReceiver {
    type Item = WatchEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.get_mut().poll_recv(cx)
    }
}

impl fmt::Debug for CompactReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactReceiver")
            .field("queued", &self.len())
            .field("max_capacity", &self.max_capacity())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::WatchEventType;
    use bytes::Bytes;

    fn put(revision: u64) -> WatchEvent {
        WatchEvent {
            event_type: WatchEventType::Put,
            key: Bytes::from_static(b"/k"),
            value: Bytes::new(),
            prev_value: None,
            revision,
        }
    }

    #[test]
    fn an_idle_channel_holds_no_queue_memory() {
        let (tx, mut rx) = channel(16);
        assert!(rx.state.lock().events.is_none());
        assert_eq!(tx.offer(1, || put(1), || None), Offer::Sent);
        assert!(rx.state.lock().events.is_some());
        assert_eq!(rx.try_recv().unwrap().revision, 1);
        assert!(rx.state.lock().events.is_none(), "given back when drained");
    }

    #[test]
    fn events_come_out_in_order_whether_one_or_many_wait() {
        // Every push / pop interleaving up to a depth of 5, against a VecDeque.
        let mut queue = Queue {
            events: None,
            waker: None,
        };
        let mut model = VecDeque::new();
        let mut next = 0;
        for pattern in 0u32..1 << 12 {
            for bit in 0..12 {
                if pattern >> bit & 1 == 1 && model.len() < 5 {
                    next += 1;
                    queue.push(put(next));
                    model.push_back(next);
                } else {
                    assert_eq!(queue.pop().map(|e| e.revision), model.pop_front());
                }
                assert_eq!(queue.len(), model.len());
                assert_eq!(queue.events.is_none(), model.is_empty(), "memory kept");
                let one = matches!(queue.events.as_deref(), Some(Waiting::One(_)));
                if one {
                    assert_eq!(model.len(), 1, "one event stored alone");
                }
            }
        }
    }

    #[test]
    fn an_idle_channel_is_one_small_allocation() {
        // Two reference counts (16 bytes) and the state: 56 bytes, a 64-byte malloc block.
        assert_eq!(std::mem::size_of::<ChannelState>(), 40);
        assert_eq!(channel(usize::MAX).1.max_capacity(), MAX_CAPACITY);
    }

    #[test]
    fn the_bound_keeps_the_reserved_slots_for_last_words() {
        let (tx, mut rx) = channel(3);
        assert_eq!(tx.offer(1, || put(1), || None), Offer::Sent);
        assert_eq!(tx.offer(1, || put(2), || None), Offer::Sent);
        assert_eq!(tx.free(), 1);
        assert_eq!(tx.offer(1, || put(3), || Some(put(0))), Offer::Full);
        assert_eq!(tx.free(), 0);
        assert_eq!(tx.offer(1, || put(4), || Some(put(0))), Offer::Full);
        let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.revision)
            .collect();
        assert_eq!(got, vec![1, 2, 0]);
    }

    #[test]
    fn the_stream_ends_when_every_sender_is_gone_and_a_gone_receiver_closes_it() {
        let (tx, mut rx) = channel(4);
        let twin = tx.clone();
        tx.offer(0, || put(1), || None);
        drop(tx);
        assert_eq!(rx.try_recv().unwrap().revision, 1);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(twin);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert!(rx.is_closed());

        let (tx, rx) = channel(4);
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.offer(0, || put(1), || None), Offer::Closed);
    }

    #[test]
    fn a_receiver_gone_after_the_unlocked_check_is_never_sent_to() {
        // The interleaving forced: `offer` finds the receiver alive, the receiver drops (and
        // clears the queue), then `offer` takes the lock.
        let (tx, rx) = channel(4);
        assert!(!tx.is_closed(), "the fast path lets the offer through");
        drop(rx);
        let outcome = tx.offer_locked(1, || put(1), || Some(put(0)));
        assert_eq!(outcome, Offer::Closed, "reported closed, not sent");
        assert!(tx.state.lock().events.is_none(), "nothing queued behind it");
    }

    #[tokio::test]
    async fn recv_wakes_on_an_event_and_on_the_last_sender_leaving() {
        let (tx, mut rx) = channel(4);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await.map(|e| e.revision);
            let end = rx.recv().await;
            (first, end.is_none())
        });
        tokio::task::yield_now().await;
        tx.offer(0, || put(7), || None);
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiting.await.unwrap(), (Some(7), true));
    }
}
