//! [`History`]: the most recent events the dispatcher delivered, for watches that start
//! from a past revision. Owned by the dispatcher alone (no lock, no tokio); the catch-up
//! protocol that reads it is `dispatch::catch_up`.
//!
//! Invariants (checked by [`History::check_invariants`]):
//! - entries are in dispatch order and their revisions strictly increase (an event whose
//!   revision is not above the last one recorded is a replay and is not recorded);
//! - entry `i` of the deque has sequence number `first_seq + i`; sequence numbers are never
//!   reused, so a cursor below `first_seq` names an entry that was dropped;
//! - `bytes` is the sum of the entries' payloads (key + value + previous value), at most
//!   `max_bytes`, and there are at most `max_events` entries;
//! - every event dispatched with a revision at or above [`History::floor`] is held, so a
//!   watch from any revision at or above the floor misses nothing; below it, it is compacted.
//!
//!
//! Payloads are copied into chunks of at most [`MAX_CHUNK`] bytes and each entry holds a
//! shared slice of its chunk: one allocation per chunk, not one per event (per-event
//! `malloc` and `free` were a third of what recording cost). A chunk is freed when the last
//! entry in it is evicted and the events delivered from it are dropped.
//!
//! | operation | cost |
//! |---|---|
//! | `record` | O(payload) copy, amortised O(1) eviction and chunk allocation |
//! | `start_of` (first entry at or after a revision) | O(log n) |
//! | `get` | O(1) |

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::event::WatchEventType;
use crate::options::HistoryOptions;

/// The largest chunk payloads are copied into (an event larger than that gets a chunk of
/// its own size).
pub(crate) const MAX_CHUNK: usize = 64 << 10;

/// The smallest chunk: a history bounded to fewer bytes still allocates this much at once.
const MIN_CHUNK: usize = 4 << 10;

/// One retained event: its three byte fields, back to back in a chunk.
pub(crate) struct Entry {
    pub(crate) revision: u64,
    pub(crate) event_type: WatchEventType,
    /// Key, value and previous value, back to back.
    data: Bytes,
    key_len: usize,
    value_len: usize,
}

impl Entry {
    /// The key written (a slice of the entry's one allocation).
    pub(crate) fn key(&self) -> Bytes {
        self.data.slice(..self.key_len)
    }

    /// The new value.
    pub(crate) fn value(&self) -> Bytes {
        self.data.slice(self.key_len..self.key_len + self.value_len)
    }

    /// The previous value.
    pub(crate) fn prev_value(&self) -> Bytes {
        self.data.slice(self.key_len + self.value_len..)
    }

    /// The bytes it is charged for.
    fn payload(&self) -> usize {
        self.data.len()
    }

    /// The key, borrowed.
    pub(crate) fn key_bytes(&self) -> &[u8] {
        &self.data[..self.key_len]
    }
}

/// Where a watch from a revision starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// At this sequence number (the history's next one if nothing retained is that recent).
    At(u64),
    /// Below what the history holds: the lowest revision a watch may start from now.
    Compacted { oldest: u64 },
    /// Events were lost to lag and none has come since: the floor is not known yet.
    Unknown,
}

/// The bounded history (see the module docs).
pub(crate) struct History {
    entries: VecDeque<Entry>,
    first_seq: u64,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// The lowest revision a watch may start from; `None` after a lag until the next event.
    floor: Option<u64>,
    /// The revision of the last event recorded (0 before the first).
    last_revision: u64,
    /// The chunk being filled: its spare capacity is where the next payload goes.
    open: BytesMut,
    /// Every chunk some held entry lives in, oldest first: (the sequence number of the last
    /// entry copied into it, its size). For the heap count.
    chunks: VecDeque<(u64, usize)>,
    /// The size of a new chunk (see [`MAX_CHUNK`]).
    chunk_size: usize,
    /// The sizes in `chunks`, summed.
    chunk_bytes: usize,
}

impl History {
    pub(crate) fn new(options: HistoryOptions) -> Self {
        Self {
            entries: VecDeque::new(),
            first_seq: 0,
            bytes: 0,
            max_events: options.max_events(),
            max_bytes: options.max_bytes(),
            floor: Some(options.first_revision()),
            last_revision: 0,
            open: BytesMut::new(),
            chunks: VecDeque::new(),
            chunk_size: (options.max_bytes() / 16).clamp(MIN_CHUNK, MAX_CHUNK),
            chunk_bytes: 0,
        }
    }

    /// Copies `parts` into the open chunk (a new one if they do not fit) and returns them
    /// as one shared slice of it.
    fn copy_in(&mut self, parts: [&[u8]; 3], payload: usize, seq: u64) -> Bytes {
        if self.open.capacity() < payload || self.chunks.is_empty() {
            let size = self.chunk_size.max(payload);
            self.open = BytesMut::with_capacity(size);
            self.chunks.push_back((seq, size));
            self.chunk_bytes += size;
        }
        for part in parts {
            self.open.extend_from_slice(part);
        }
        if let Some(last) = self.chunks.back_mut() {
            last.0 = seq;
        }
        self.open.split().freeze()
    }

    /// Raises the floor to `revision` (what was applied before the dispatcher existed).
    pub(crate) fn raise_floor(&mut self, revision: u64) {
        if let Some(floor) = &mut self.floor {
            *floor = (*floor).max(revision);
        }
    }

    /// Records a dispatched event. A replay (revision not above the last recorded) is not
    /// recorded; an event too large for the bounds empties the history and moves the floor
    /// past it. Returns whether the event was recorded.
    pub(crate) fn record(
        &mut self,
        event_type: WatchEventType,
        key: &[u8],
        value: &[u8],
        prev_value: &[u8],
        revision: u64,
    ) -> bool {
        if revision <= self.last_revision && self.floor.is_some() {
            return false;
        }
        self.last_revision = revision;
        if self.floor.is_none() {
            // The first event after a lag: everything before it may be lost.
            self.floor = Some(revision);
        }
        let payload = key
            .len()
            .saturating_add(value.len())
            .saturating_add(prev_value.len());
        if payload > self.max_bytes || self.max_events == 0 {
            self.clear_through(revision.saturating_add(1));
            // The sequence still moves, so that a cursor at the old head sees the drop.
            self.first_seq += 1;
            return false;
        }
        let seq = self.next_seq();
        let data = self.copy_in([key, value, prev_value], payload, seq);
        self.entries.push_back(Entry {
            revision,
            event_type,
            data,
            key_len: key.len(),
            value_len: value.len(),
        });
        self.bytes += payload;
        while self.entries.len() > self.max_events || self.bytes > self.max_bytes {
            self.evict_front();
        }
        true
    }

    fn evict_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= entry.payload();
            self.floor = Some(entry.revision.saturating_add(1));
            // Chunks whose last entry this was are no longer held (the open one stays).
            while self.chunks.len() > 1 && self.chunks[0].0 <= self.first_seq {
                if let Some((_, size)) = self.chunks.pop_front() {
                    self.chunk_bytes -= size;
                }
            }
            self.first_seq += 1;
        }
    }

    /// Drops every entry; a watch may start at `floor` or later.
    fn clear_through(&mut self, floor: u64) {
        self.first_seq += self.entries.len() as u64;
        self.entries.clear();
        self.bytes = 0;
        self.floor = Some(floor);
        self.chunks.clear();
        self.chunk_bytes = 0;
        self.open = BytesMut::new();
    }

    /// No event up to `through` will come (a gap in the stream, above everything recorded):
    /// nothing held can be resumed across it, and the floor is the revision after it.
    pub(crate) fn skip_through(&mut self, through: u64) {
        self.clear_through(through.saturating_add(1));
        self.last_revision = self.last_revision.max(through);
    }

    /// Events were lost before reaching the dispatcher: nothing held can be resumed across
    /// the hole, and the floor is the next event's revision.
    pub(crate) fn lost(&mut self) {
        self.clear_through(0);
        self.floor = None;
    }

    /// Where a watch from `revision` starts.
    pub(crate) fn start_of(&self, revision: u64) -> Start {
        match self.floor {
            None => Start::Unknown,
            Some(floor) if revision < floor => Start::Compacted { oldest: floor },
            Some(_) => {
                let skipped = self.entries.partition_point(|e| e.revision < revision);
                Start::At(self.first_seq + skipped as u64)
            }
        }
    }

    /// The entry with sequence number `seq`, if still held.
    pub(crate) fn get(&self, seq: u64) -> Option<&Entry> {
        let index = seq.checked_sub(self.first_seq)?;
        self.entries.get(usize::try_from(index).ok()?)
    }

    /// The sequence number of the oldest entry held (the next one when empty).
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The sequence number the next recorded event will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }

    /// The lowest revision a watch may start from (`None` while unknown after a lag).
    pub(crate) fn floor(&self) -> Option<u64> {
        self.floor
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Payload bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Heap bytes held: the chunks entries live in (the open one whole) and the deque of
    /// entry headers (allocator overhead not included).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunk_bytes + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Checks the module's invariants; panics with a description otherwise.
    pub(crate) fn check_invariants(&self) {
        let mut bytes = 0;
        let mut previous = None;
        for entry in &self.entries {
            assert!(
                previous.is_none_or(|p| p < entry.revision),
                "history revisions must strictly increase"
            );
            previous = Some(entry.revision);
            bytes += entry.payload();
            assert!(entry.key_bytes().len() == entry.key_len);
        }
        assert_eq!(bytes, self.bytes, "history byte count");
        let chunked: usize = self.chunks.iter().map(|&(_, size)| size).sum();
        assert!(
            chunked >= self.bytes,
            "every held byte is in a counted chunk"
        );
        if let (Some(&(last, _)), false) = (self.chunks.front(), self.entries.is_empty()) {
            assert!(
                last >= self.first_seq,
                "the oldest chunk holds a held entry"
            );
        }
        assert!(self.entries.len() <= self.max_events && self.bytes <= self.max_bytes);
        if let (Some(floor), Some(first)) = (self.floor, self.entries.front()) {
            assert!(floor <= first.revision, "an entry below the floor");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(events: usize, bytes: usize) -> History {
        History::new(HistoryOptions::new(events, bytes))
    }

    fn put(h: &mut History, key: &str, revision: u64) -> bool {
        let recorded = h.record(WatchEventType::Put, key.as_bytes(), b"v", b"", revision);
        h.check_invariants();
        recorded
    }

    #[test]
    fn a_start_finds_the_first_entry_at_or_after_its_revision() {
        let mut h = history(10, 1 << 20);
        for revision in [2, 4, 6] {
            put(&mut h, "/k", revision);
        }
        let cases = [(1, 0), (2, 0), (3, 1), (6, 2), (7, 3), (100, 3)];
        for (revision, seq) in cases {
            assert_eq!(h.start_of(revision), Start::At(seq), "from {revision}");
        }
        assert_eq!(h.start_of(0), Start::Compacted { oldest: 1 });
    }

    #[test]
    fn eviction_by_count_or_bytes_raises_the_floor_past_what_it_dropped() {
        let mut h = history(2, 1 << 20);
        for revision in 1..=3 {
            put(&mut h, "/k", revision);
        }
        assert_eq!((h.len(), h.first_seq()), (2, 1));
        assert_eq!(h.start_of(1), Start::Compacted { oldest: 2 });
        assert_eq!(h.start_of(2), Start::At(1));

        let mut h = history(100, 10); // "/k" + "v" = 3 bytes each
        for revision in 1..=4 {
            put(&mut h, "/k", revision);
        }
        assert_eq!((h.len(), h.bytes()), (3, 9));
        assert_eq!(h.floor(), Some(2));
    }

    #[test]
    fn a_replay_is_not_recorded_and_an_oversized_event_empties_the_history() {
        let mut h = history(10, 8);
        assert!(put(&mut h, "/k", 5));
        assert!(!put(&mut h, "/k", 5));
        assert!(!put(&mut h, "/k", 4));
        assert!(!put(&mut h, "/a-long-key", 6));
        assert_eq!((h.len(), h.floor()), (0, Some(7)));
        assert_eq!(
            h.first_seq(),
            2,
            "the held entry and the oversized one moved the sequence"
        );
    }

    #[test]
    fn after_a_lag_the_floor_is_the_next_events_revision() {
        let mut h = history(10, 1 << 20);
        put(&mut h, "/k", 1);
        h.lost();
        assert_eq!(h.start_of(1), Start::Unknown);
        put(&mut h, "/k", 9);
        assert_eq!(h.start_of(8), Start::Compacted { oldest: 9 });
        assert_eq!(h.start_of(9), Start::At(1));
    }

    #[test]
    fn an_entry_gives_back_its_fields() {
        let mut h = history(10, 1 << 20);
        h.record(WatchEventType::Delete, b"/key", b"", b"old", 3);
        let entry = h.get(0).unwrap();
        assert_eq!(
            (entry.key(), entry.value(), entry.prev_value()),
            (Bytes::from("/key"), Bytes::new(), Bytes::from("old"))
        );
        assert_eq!(entry.event_type, WatchEventType::Delete);
        assert!(h.get(1).is_none());
    }
}
