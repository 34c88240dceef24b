//! A compact watcher channel: bounded, single receiver, with a buffer allocated only while
//! a backlog waits in it.
//!
//! A tokio `mpsc` channel allocates a block of 32 slots up front (about 4.3 KB for
//! [`WatchEvent`]s): a million idle watchers hold 4.3 GB of empty slots. Here an idle watcher
//! costs its [`ChannelState`] alone (one 56-byte allocation), and one with an event waiting
//! (a receiver that keeps up) holds a pointer to it there: a queue is allocated with the
//! second waiting event and given back whenever the receiver drains it. Semantics are the
//! drop-in channel's: the same bound (the registry reserves the last slot for the cancel sentinel), the receiver
//! sees the end of the stream once every sender is gone (the watcher left both snapshots),
//! and senders see a dropped receiver as closed.
//!
//! An event is copied once per event, not once per watcher: the first compact watcher to
//! take it gets a copy of its own ([`Slot::Own`], which a backlog stores without an
//! allocation of its own), every other one a share of a second copy ([`Slot::Shared`]: one
//! reference count each), which each receiver cuts to its watcher's options ([`Shape`]) as
//! it takes it.
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
use crate::sink::{EventFields, Shape};
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
    /// Slots, the sentinel's included (the low bits, up to [`MAX_CAPACITY`]), and the
    /// watcher's [`Shape`] in [`KEYS_ONLY`] and [`PREV_KV`]: one word, for the 40 bytes.
    config: u32,
    /// Live senders (the index holds one per snapshot) in the low bits, and
    /// [`RECEIVER_GONE`] once the receiver is dropped: one word, so that the state fits in
    /// 40 bytes. The count changes outside the lock; the receiver reads it under the lock,
    /// and the last sender takes the lock to wake it. The bit is set before the receiver's
    /// last lock, and a sender rechecks it under the lock before it pushes.
    ends: AtomicU32,
}

/// The bit of [`ChannelState::ends`] that says the receiver is gone.
const RECEIVER_GONE: u32 = 1 << 31;

/// The bits of [`ChannelState::config`] that hold the receiver's [`Shape`].
const KEYS_ONLY: u32 = 1 << 31;
const PREV_KV: u32 = 1 << 30;

/// One queued event behind a pointer.
pub(crate) enum Queued {
    /// An event's fields, shared by the compact watchers it went to, of any [`Shape`].
    Fields(EventFields),
    /// An event cut for one watcher already (its own copy, or a sentinel), received as it
    /// is.
    Verbatim(WatchEvent),
}

impl Queued {
    /// What a receiver of `shape` gets: the fields moved out if it holds the last
    /// reference, cloned otherwise.
    fn into_event(this: Arc<Queued>, shape: Shape) -> WatchEvent {
        // A load first: with many receivers sharing the copy, a failed unwrap would be one
        // more write to a line they all contend for. A count read as 1 cannot rise again
        // (no one else holds a reference to clone), so the unwrap then only confirms it.
        let unwrapped = if Arc::strong_count(&this) == 1 {
            Arc::try_unwrap(this)
        } else {
            Err(this)
        };
        match unwrapped {
            Ok(Queued::Fields(fields)) => shape.event_from(fields),
            Ok(Queued::Verbatim(event)) => event,
            Err(shared) => match &*shared {
                Queued::Fields(fields) => shape.event_from_shared(fields),
                Queued::Verbatim(event) => event.clone(),
            },
        }
    }
}

/// One waiting event: a copy of its own, or a share of one.
pub(crate) enum Slot {
    /// Cut to the watcher's shape already: the first compact delivery of an event, and
    /// sentinels.
    Own(WatchEvent),
    /// Shared with the other compact watchers the event went to.
    Shared(Arc<Queued>),
}

impl Slot {
    fn into_event(self, shape: Shape) -> WatchEvent {
        match self {
            Slot::Own(event) => event,
            Slot::Shared(queued) => Queued::into_event(queued, shape),
        }
    }

    /// The slot as one pointer, for a queue holding it alone.
    fn into_shared(self) -> Arc<Queued> {
        match self {
            Slot::Own(event) => Arc::new(Queued::Verbatim(event)),
            Slot::Shared(queued) => queued,
        }
    }
}

/// What a channel holds. The receiver parks only on an empty queue and every push wakes it,
/// so a waker and waiting events never coexist: one enum for both, 24 bytes.
enum Queue {
    Empty,
    /// The receiver waits for an event.
    Parked(Waker),
    /// One event: a receiver that keeps up has one at a time, and it costs one pointer.
    One(Arc<Queued>),
    /// A backlog. Boxed so that the idle state stays small: allocated with the second
    /// waiting event, freed when the receiver takes the last.
    Many(Box<Backlog>),
}

/// Events waiting behind one another. Shared copies are one pointer a slot; owned ones
/// wait in a queue of their own, in order, each marked by an empty slot: so a backlog of
/// shared events costs 8 bytes an event, and one of owned events no allocation per event.
struct Backlog {
    /// Every waiting event in order: a shared copy, or `None` for the next owned one.
    order: Chunked<Option<Arc<Queued>>>,
    owned: Chunked<WatchEvent>,
}

/// Slots the first chunk of a queue has: a burst usually brings a few.
const FIRST_CHUNK: usize = 4;

/// Bytes of slots a full-grown chunk holds (tokio's channel keeps 32 events a block).
const CHUNK_BYTES: usize = 4096;

/// A FIFO kept in chunks of at most [`CHUNK_BYTES`] of slots, a new one started when the
/// last is full. A push never moves what waits: a `VecDeque` that doubles would copy a
/// lagging receiver's whole backlog in one delivery, under the channel's lock. The list of
/// chunks after the first still doubles, at 32 bytes a chunk (about one byte an owned
/// event). The first chunk sits inline, so a short queue costs what a `VecDeque` does (one
/// buffer). Emptied chunks are kept for the pushes to come, as a `VecDeque` keeps its
/// capacity, until the whole backlog goes (outside the lock): the receiver frees nothing
/// while it drains (freeing there, it contended with the dispatcher's allocations for the
/// allocator's lock: +60 ns a delivery for a lone lagging reader).
///
/// Invariants: `front` is empty only if `rest` is, and no chunk of `rest` is empty;
/// `len` is the sum of the chunks' lengths; no chunk is pushed to past its capacity (so
/// none reallocates); the spares are empty.
struct Chunked<T> {
    /// The oldest chunk: the only one while the queue is short.
    front: VecDeque<T>,
    /// The chunks after it, oldest first.
    rest: VecDeque<VecDeque<T>>,
    /// Emptied chunks, for reuse.
    spares: Vec<VecDeque<T>>,
    len: usize,
}

impl<T> Chunked<T> {
    const fn new() -> Self {
        Self {
            front: VecDeque::new(),
            rest: VecDeque::new(),
            spares: Vec::new(),
            len: 0,
        }
    }

    /// The capacity of the chunk after one of `previous` slots: doubling from
    /// [`FIRST_CHUNK`] up to [`CHUNK_BYTES`].
    fn next_capacity(previous: usize) -> usize {
        let full = (CHUNK_BYTES / std::mem::size_of::<T>().max(1)).max(FIRST_CHUNK);
        previous.saturating_mul(2).clamp(FIRST_CHUNK, full)
    }

    fn push_back(&mut self, value: T) {
        self.len += 1;
        let last = self.rest.back_mut().unwrap_or(&mut self.front);
        if last.len() < last.capacity() {
            last.push_back(value);
            return;
        }
        let capacity = match last.capacity() {
            0 => FIRST_CHUNK,
            full => Self::next_capacity(full),
        };
        let mut chunk = match self.spares.pop() {
            Some(spare) if spare.capacity() >= capacity => spare,
            // Smaller: one of the first chunks, outgrown.
            _ => VecDeque::with_capacity(capacity),
        };
        chunk.push_back(value);
        if self.front.capacity() == 0 {
            self.front = chunk;
        } else {
            self.rest.push_back(chunk);
        }
    }

    /// The oldest value. An emptied chunk is kept for reuse.
    fn pop_front(&mut self) -> Option<T> {
        let value = self.front.pop_front()?;
        self.len -= 1;
        if self.front.is_empty() {
            if let Some(next) = self.rest.pop_front() {
                let emptied = std::mem::replace(&mut self.front, next);
                self.spares.push(emptied);
            }
        }
        Some(value)
    }

    fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let rest: usize = self.rest.iter().map(VecDeque::len).sum();
        assert_eq!(self.front.len() + rest, self.len);
        assert!(
            self.rest.iter().all(|c| !c.is_empty()),
            "an empty chunk in the middle of a queue"
        );
        assert!(!self.front.is_empty() || self.rest.is_empty());
        assert!(self.spares.iter().all(VecDeque::is_empty));
    }
}

impl Backlog {
    fn push(&mut self, slot: Slot) {
        match slot {
            Slot::Shared(queued) => self.order.push_back(Some(queued)),
            Slot::Own(event) => {
                self.order.push_back(None);
                self.owned.push_back(event);
            }
        }
    }

    fn pop(&mut self) -> Option<Slot> {
        match self.order.pop_front()? {
            Some(queued) => Some(Slot::Shared(queued)),
            None => self.owned.pop_front().map(Slot::Own),
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

impl Queue {
    fn len(&self) -> usize {
        match self {
            Queue::Empty | Queue::Parked(_) => 0,
            Queue::One(_) => 1,
            Queue::Many(backlog) => backlog.len(),
        }
    }

    /// Queues `event`; returns the waker of a receiver waiting for it.
    fn push(&mut self, event: Slot) -> Option<Waker> {
        match std::mem::replace(self, Queue::Empty) {
            Queue::Empty => *self = Queue::One(event.into_shared()),
            Queue::Parked(waker) => {
                *self = Queue::One(event.into_shared());
                return Some(waker);
            }
            Queue::One(first) => {
                let mut backlog = Box::new(Backlog {
                    order: Chunked::new(),
                    owned: Chunked::new(),
                });
                backlog.order.push_back(Some(first));
                backlog.push(event);
                *self = Queue::Many(backlog);
            }
            Queue::Many(mut backlog) => {
                backlog.push(event);
                *self = Queue::Many(backlog);
            }
        }
        None
    }

    /// Takes the oldest event. With the last one of a backlog comes the emptied backlog, for
    /// the caller to drop once it has released the lock: a long backlog's buffer is a
    /// large free, which the dispatcher must not wait behind.
    fn pop(&mut self) -> Option<(Slot, Queue)> {
        match self {
            Queue::Empty | Queue::Parked(_) => None,
            Queue::Many(backlog) if backlog.len() > 1 => {
                backlog.pop().map(|event| (event, Queue::Empty))
            }
            _ => match std::mem::replace(self, Queue::Empty) {
                Queue::One(event) => Some((Slot::Shared(event), Queue::Empty)),
                Queue::Many(mut backlog) => {
                    let event = backlog.pop().expect("a backlog holds an event");
                    Some((event, Queue::Many(backlog)))
                }
                Queue::Empty | Queue::Parked(_) => unreachable!("matched above"),
            },
        }
    }

    /// Parks the receiver of an empty queue (keeping the waker it holds if that one wakes
    /// the same task).
    fn park(&mut self, waker: &Waker) {
        debug_assert_eq!(self.len(), 0, "a receiver parks only on an empty queue");
        if !matches!(self, Queue::Parked(parked) if parked.will_wake(waker)) {
            *self = Queue::Parked(waker.clone());
        }
    }

    /// The parked receiver's waker, unparking it.
    fn unpark(&mut self) -> Option<Waker> {
        match std::mem::replace(self, Queue::Empty) {
            Queue::Parked(waker) => Some(waker),
            other => {
                *self = other;
                None
            }
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

    fn capacity(&self) -> usize {
        (self.config & MAX_CAPACITY as u32) as usize
    }

    fn shape(&self) -> Shape {
        Shape {
            keys_only: self.config & KEYS_ONLY != 0,
            prev_kv: self.config & PREV_KV != 0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (every operation on it
        // is a single push, pop or replace): carry on.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The most slots a compact channel holds (a larger buffer size is clamped to it: it is
/// 1 G events, far beyond any memory).
pub(crate) const MAX_CAPACITY: usize = (1 << 30) - 1;

/// A channel of `capacity` slots (at least 1, at most [`MAX_CAPACITY`]) for a watcher of
/// `shape`.
pub(crate) fn channel(capacity: usize, shape: Shape) -> (CompactSender, CompactReceiver) {
    let state = Arc::new(ChannelState {
        queue: Mutex::new(Queue::Empty),
        config: capacity.clamp(1, MAX_CAPACITY) as u32
            | if shape.keys_only { KEYS_ONLY } else { 0 }
            | if shape.prev_kv { PREV_KV } else { 0 },
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
        event: impl FnOnce() -> Slot,
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
        event: impl FnOnce() -> Slot,
        last_words: impl FnOnce() -> Option<WatchEvent>,
    ) -> Offer {
        // Made before the lock (it clones the event's fields, and the second compact delivery
        // of an event allocates the shared copy): a receiver must not wait behind that.
        // Dropped unused if the watcher overflows, which ends it, or its receiver is gone.
        let event = event();
        let mut queue = self.state.lock();
        // The receiver's drop sets its bit before it takes this lock to clear the queue, so
        // a push after that clear would sit here until the last sender goes: recheck under it.
        if self.state.receiver_gone() {
            return Offer::Closed;
        }
        let free = self.capacity() - queue.len();
        let (outcome, waker) = if free > reserve {
            (Offer::Sent, queue.push(event))
        } else {
            let waker = match last_words() {
                Some(last) if free > 0 => queue.push(Slot::Own(last)),
                _ => None,
            };
            (Offer::Full, waker)
        };
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
        self.state.capacity()
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
            let waker = self.state.lock().unpark();
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
/// Memory: one 56-byte allocation while idle, and the events waiting; a queue is allocated
/// for a backlog and given back whenever the receiver takes the last event.
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
            Some(taken) => Ok(self.finish_take(queue, taken)),
            // Read under the lock: no push can come between the empty queue and the count.
            None if self.state.senders() == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Polls for the next event (the building block of [`Self::recv`] and the `Stream`
    /// implementation).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        let mut queue = self.state.lock();
        if let Some(taken) = queue.pop() {
            return Poll::Ready(Some(self.finish_take(queue, taken)));
        }
        // Read under the lock, and the last sender takes this lock after its decrement, so
        // a waker stored here is always woken.
        if self.state.senders() == 0 {
            return Poll::Ready(None);
        }
        queue.park(cx.waker());
        Poll::Pending
    }

    /// The event [`Queue::pop`] took, cut to the watcher's shape, and the backlog it
    /// emptied freed, both once the lock is released: the dispatcher may be waiting for it.
    fn finish_take(
        &self,
        queue: MutexGuard<'_, Queue>,
        (slot, spent): (Slot, Queue),
    ) -> WatchEvent {
        drop(queue);
        drop(spent);
        slot.into_event(self.state.shape())
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.state.lock().len()
    }

    /// True when no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots in all: the watcher buffer size plus the one reserved for the cancel sentinel,
    /// at most 2³⁰ − 1 (a larger buffer size is clamped to that).
    pub fn max_capacity(&self) -> usize {
        self.state.capacity()
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
        // Dropped after the lock is released.
        let events = std::mem::replace(&mut *self.state.lock(), Queue::Empty);
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

    fn fields(revision: u64) -> EventFields {
        EventFields {
            event_type: WatchEventType::Put,
            key: Bytes::from_static(b"/k"),
            value: Bytes::from_static(b"v"),
            prev_value: Bytes::from_static(b"old"),
            revision,
        }
    }

    fn put(revision: u64) -> Slot {
        Slot::Shared(Arc::new(Queued::Fields(fields(revision))))
    }

    fn own(revision: u64) -> Slot {
        Slot::Own(PLAIN.event_from(fields(revision)))
    }

    fn sentinel() -> Option<WatchEvent> {
        Some(WatchEvent::cancel_sentinel(Bytes::from_static(b"/k")))
    }

    fn revision(slot: &Slot) -> u64 {
        match slot {
            Slot::Own(event) => event.revision,
            Slot::Shared(queued) => match &**queued {
                Queued::Fields(fields) => fields.revision,
                Queued::Verbatim(event) => event.revision,
            },
        }
    }

    const PLAIN: Shape = Shape {
        keys_only: false,
        prev_kv: false,
    };

    #[test]
    fn an_idle_channel_holds_no_queue_memory() {
        let (tx, mut rx) = channel(16, PLAIN);
        assert!(matches!(*rx.state.lock(), Queue::Empty));
        assert_eq!(tx.offer(1, || put(1), || None), Offer::Sent);
        assert_eq!(tx.offer(1, || put(2), || None), Offer::Sent);
        assert!(matches!(*rx.state.lock(), Queue::Many(_)));
        assert_eq!(rx.try_recv().unwrap().revision, 1);
        assert_eq!(rx.try_recv().unwrap().revision, 2);
        assert!(
            matches!(*rx.state.lock(), Queue::Empty),
            "given back when drained"
        );
    }

    #[test]
    fn events_come_out_in_order_whether_one_or_many_wait() {
        // Every push / pop interleaving up to a depth of 5, against a VecDeque.
        let mut queue = Queue::Empty;
        let mut model = VecDeque::new();
        let mut next = 0;
        for pattern in 0u32..1 << 12 {
            for bit in 0..12 {
                if pattern >> bit & 1 == 1 && model.len() < 5 {
                    next += 1;
                    // Owned and shared slots alternate.
                    queue.push(if next % 2 == 0 { own(next) } else { put(next) });
                    model.push_back(next);
                } else {
                    assert_eq!(queue.pop().map(|(e, _)| revision(&e)), model.pop_front());
                }
                assert_eq!(queue.len(), model.len());
                // A backlog's buffer stays until its last event is taken, never longer.
                assert_eq!(
                    matches!(queue, Queue::Empty),
                    model.is_empty(),
                    "memory kept"
                );
                if matches!(queue, Queue::One(_)) {
                    assert_eq!(model.len(), 1, "one event stored alone");
                }
            }
        }
    }

    #[test]
    fn a_chunked_queue_is_a_fifo_whose_chunks_never_grow() {
        // Bursts and drains of every length up to a few full chunks, against a VecDeque.
        let mut queue: Chunked<u64> = Chunked::new();
        let mut model = VecDeque::new();
        let (mut next, mut seed) = (0u64, 0x9E37_79B9_7F4A_7C15u64);
        let full = Chunked::<u64>::next_capacity(usize::MAX);
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let (push, n) = (seed & 1 == 0, (seed >> 1) as usize % (3 * full));
            for _ in 0..n {
                if push {
                    next += 1;
                    queue.push_back(next);
                    model.push_back(next);
                } else {
                    assert_eq!(queue.pop_front(), model.pop_front());
                }
            }
            assert_eq!(queue.len(), model.len());
            queue.check_invariants();
            assert!(
                std::iter::once(&queue.front)
                    .chain(&queue.rest)
                    .all(|c| c.capacity() <= full.next_power_of_two()),
                "a chunk grew past its size"
            );
        }
    }

    #[test]
    fn an_idle_channel_is_one_small_allocation() {
        // Two reference counts (16 bytes) and the state: 56 bytes, a 64-byte malloc block.
        assert_eq!(std::mem::size_of::<ChannelState>(), 40);
        assert_eq!(channel(usize::MAX, PLAIN).1.max_capacity(), MAX_CAPACITY);
    }

    #[test]
    fn the_bound_keeps_the_reserved_slots_for_last_words() {
        let (tx, mut rx) = channel(3, PLAIN);
        assert_eq!(tx.offer(1, || put(1), || None), Offer::Sent);
        assert_eq!(tx.offer(1, || put(2), || None), Offer::Sent);
        assert_eq!(tx.free(), 1);
        assert_eq!(tx.offer(1, || put(3), sentinel), Offer::Full);
        assert_eq!(tx.free(), 0);
        assert_eq!(tx.offer(1, || put(4), sentinel), Offer::Full);
        let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.revision)
            .collect();
        assert_eq!(got, vec![1, 2, 0], "the sentinel (revision 0) last");
    }

    #[test]
    fn the_stream_ends_when_every_sender_is_gone_and_a_gone_receiver_closes_it() {
        let (tx, mut rx) = channel(4, PLAIN);
        let twin = tx.clone();
        tx.offer(0, || put(1), || None);
        drop(tx);
        assert_eq!(rx.try_recv().unwrap().revision, 1);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(twin);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert!(rx.is_closed());

        let (tx, rx) = channel(4, PLAIN);
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.offer(0, || put(1), || None), Offer::Closed);
    }

    #[test]
    fn a_receiver_gone_after_the_unlocked_check_is_never_sent_to() {
        // The interleaving forced: `offer` finds the receiver alive, the receiver drops (and
        // clears the queue), then `offer` takes the lock.
        let (tx, rx) = channel(4, PLAIN);
        assert!(!tx.is_closed(), "the fast path lets the offer through");
        drop(rx);
        let outcome = tx.offer_locked(1, || put(1), sentinel);
        assert_eq!(outcome, Offer::Closed, "reported closed, not sent");
        assert!(
            matches!(*tx.state.lock(), Queue::Empty),
            "nothing queued behind it"
        );
    }

    #[test]
    fn one_shared_event_is_cut_to_each_receivers_shape() {
        let shapes = [(false, false), (false, true), (true, false), (true, true)];
        let mut receivers = Vec::new();
        let mut senders = Vec::new();
        for (keys_only, prev_kv) in shapes {
            let (tx, rx) = channel(4, Shape { keys_only, prev_kv });
            senders.push(tx);
            receivers.push(rx);
        }
        let shared = Arc::new(Queued::Fields(fields(1)));
        for tx in &senders {
            let slot = || Slot::Shared(Arc::clone(&shared));
            assert_eq!(tx.offer(1, slot, || None), Offer::Sent);
        }
        drop(shared);
        // The first three clone what they keep; the last holds the only reference and
        // moves the fields out.
        for (rx, (keys_only, prev_kv)) in receivers.iter_mut().zip(shapes) {
            let got = rx.try_recv().unwrap();
            let value = if keys_only { &b""[..] } else { &b"v"[..] };
            let prev = if keys_only { &b""[..] } else { &b"old"[..] };
            assert_eq!((&got.key[..], &got.value[..]), (&b"/k"[..], value));
            assert_eq!(got.prev_value.as_deref(), prev_kv.then_some(prev));
            assert_eq!(got.revision, 1);
        }
    }

    #[tokio::test]
    async fn recv_wakes_on_an_event_and_on_the_last_sender_leaving() {
        let (tx, mut rx) = channel(4, PLAIN);
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
