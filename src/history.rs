//! [`History`]: the most recent events the dispatcher delivered, for watches that start
//! from a past revision. Owned by the dispatcher alone (no lock, no tokio); the catch-up
//! protocol that reads it is `dispatch::catch_up`.
//!
//! Invariants (checked by [`History::check_invariants`]):
//! - entries are in dispatch order and their revisions strictly increase (an event whose
//!   revision is not above the last one recorded is a replay and is not recorded);
//! - entry `i` has sequence number `first_seq + i`; sequence numbers are never reused, so a
//!   cursor below `first_seq` names an entry that was dropped;
//! - `bytes` is the sum of the entries' payloads (key + value + previous value), at most
//!   `max_bytes`, and there are at most `max_events` entries;
//! - every event dispatched with a revision at or above [`History::floor`] is held, so a
//!   watch from any revision at or above the floor misses nothing; below it, it is compacted.
//!
//! ## Layout
//!
//! Memory is what bounds a history, so an entry costs its payload plus about 19 bytes:
//! - a 16-byte header (revision, segment number, offset, payload length up to 64 KiB) in
//!   fixed blocks of up to [`BLOCK`] headers, so that growing never doubles a buffer and the
//!   slack is at most a block at each end;
//! - in a chunk of at most [`MAX_CHUNK`] bytes, its type and three lengths as LEB128
//!   varints (3 bytes for fields under 64 and 128 bytes), then key, value and previous value.
//!
//! A chunk is filled through a `BytesMut`; what has been written of it is frozen into a
//! shared *segment* when the chunk is full and when a catch-up is about to read
//! ([`History::seal`]), so that replayed events are slices of the history, not copies.
//! Recording touches no reference count: one allocation and one freeze per chunk, not per
//! event (per-event `malloc`, `free` and `Bytes` splits were what recording cost). Evicting
//! reads only the header (the payload length in it), not the chunk, except for an entry of
//! 64 KiB or more. A chunk is freed when its last entry is evicted and the events delivered
//! from it are dropped.
//!
//! | operation | cost |
//! |---|---|
//! | `record` | O(payload) copy, amortised O(1) eviction and chunk allocation |
//! | `start_of` (first entry at or after a revision) | O(log n) |
//! | `get` | O(1) |
//! | `seal` | O(1) |

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::WatchEventType;
use crate::options::HistoryOptions;

/// The largest chunk payloads are copied into (an event larger than that gets a chunk of
/// its own size, at offset 0).
pub(crate) const MAX_CHUNK: usize = 64 << 10;

// An entry's offset in a chunk is a `u16`.
const _: () = assert!(MAX_CHUNK <= u16::MAX as usize + 1);

/// The smallest chunk: a history bounded to fewer bytes still allocates this much at once.
const MIN_CHUNK: usize = 4 << 10;

/// Headers per block (fewer when the history holds fewer events).
const BLOCK: usize = 1024;

/// The largest payload an entry can have (a chunk's size, payload and varints, then fits a
/// `u32`). A larger event is treated like one above the byte bound.
const MAX_PAYLOAD: usize = u32::MAX as usize - 3 * MAX_VARINT;

/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT: usize = 10;

/// One retained event's header; its type and fields are in a chunk.
#[derive(Clone, Copy)]
struct Entry {
    revision: u64,
    /// The number of the segment it is in (wrapping); the next segment's number while it is
    /// in the part of the open chunk not sealed yet.
    segment: u32,
    /// Where its varint prefix starts in that segment (or in the open chunk's unsealed part):
    /// below [`MAX_CHUNK`], or 0 in a chunk of its own.
    offset: u16,
    /// Its payload's length, or [`LONG_PAYLOAD`] for one that long or longer (then read from
    /// its varints): eviction needs the length and should not touch the cold chunk.
    payload: u16,
}

/// [`Entry::payload`] for a payload whose length is in its varints only.
const LONG_PAYLOAD: u16 = u16::MAX;

const _: () = assert!(std::mem::size_of::<Entry>() == 16);

/// A sealed stretch of a chunk: the entries in it are read as slices of `bytes`.
struct Segment {
    bytes: Bytes,
    /// The sequence number of the last entry in it.
    last_seq: u64,
}

/// Entry headers in fixed-size blocks: a deque that never doubles.
///
/// Invariants: every block in `full` holds exactly `block_len` headers and `tail` at most
/// that (its capacity is `block_len`); `skip`, the headers already popped from the first
/// block (`full[0]`, or `tail` while `full` is empty), is below `block_len`; `len` counts
/// the rest. `block_len` is a power of two, so finding a header is a shift and a mask.
struct Headers {
    full: VecDeque<Vec<Entry>>,
    tail: Vec<Entry>,
    skip: usize,
    len: usize,
    shift: u32,
    /// The last block emptied, kept for the next one needed (no allocation churn at the
    /// bounds, where a block empties at one end as one fills at the other).
    spare: Option<Vec<Entry>>,
}

impl Headers {
    fn new(at_most: usize) -> Self {
        let block_len = at_most.clamp(1, BLOCK).next_power_of_two();
        Self {
            full: VecDeque::new(),
            tail: Vec::with_capacity(block_len),
            skip: 0,
            len: 0,
            shift: block_len.trailing_zeros(),
            spare: None,
        }
    }

    fn block_len(&self) -> usize {
        1 << self.shift
    }

    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn push(&mut self, entry: Entry) {
        if self.tail.len() == self.block_len() {
            self.next_block();
        }
        self.tail.push(entry);
        self.len += 1;
    }

    /// Moves the full tail block to `full` and starts an empty one (once per block).
    #[cold]
    fn next_block(&mut self) {
        let block_len = self.block_len();
        let mut next = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(block_len));
        next.clear();
        let full = std::mem::replace(&mut self.tail, next);
        self.full.push_back(full);
    }

    fn get(&self, index: usize) -> Option<&Entry> {
        if index >= self.len {
            return None;
        }
        let at = index + self.skip;
        let (block, slot) = (at >> self.shift, at & (self.block_len() - 1));
        match self.full.get(block) {
            Some(full) => full.get(slot),
            None => self.tail.get(slot),
        }
    }

    fn front(&self) -> Option<&Entry> {
        self.get(0)
    }

    #[inline]
    fn pop_front(&mut self) -> Option<Entry> {
        if self.len == 0 {
            return None;
        }
        let first = self.full.front().unwrap_or(&self.tail);
        let entry = *first.get(self.skip)?;
        self.skip += 1;
        self.len -= 1;
        if self.skip == self.block_len() {
            self.skip = 0;
            match self.full.pop_front() {
                Some(emptied) => self.spare = Some(emptied),
                None => self.tail.clear(),
            }
        }
        Some(entry)
    }

    fn clear(&mut self) {
        self.full.clear();
        self.tail.clear();
        self.skip = 0;
        self.len = 0;
    }

    /// The number of leading headers for which `below` holds (it must hold for a prefix).
    fn partition_point(&self, below: impl Fn(&Entry) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.get(mid).is_some_and(&below) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    fn heap_bytes(&self) -> usize {
        let blocks = self.full.len() + 1 + usize::from(self.spare.is_some());
        blocks * self.block_len() * std::mem::size_of::<Entry>()
            + self.full.capacity() * std::mem::size_of::<Vec<Entry>>()
    }

    fn check_invariants(&self) {
        let block_len = self.block_len();
        assert!(self.skip < block_len, "a fully popped block is kept");
        for block in &self.full {
            assert!(block.len() == block_len, "a hole in the blocks");
        }
        assert!(self.tail.len() <= block_len && self.tail.capacity() == block_len);
        let stored = self.full.len() * block_len + self.tail.len();
        assert_eq!(stored - self.skip, self.len, "header count");
    }
}

/// One retained event, borrowed from the history.
pub(crate) struct Retained<'a> {
    pub(crate) revision: u64,
    pub(crate) event_type: WatchEventType,
    /// Key, value and previous value, back to back.
    fields: &'a [u8],
    /// The sealed segment `fields` is in and where they start in it; `None` while they are
    /// in the open chunk's unsealed part.
    sealed: Option<(&'a Bytes, usize)>,
    key_len: usize,
    value_len: usize,
}

impl Retained<'_> {
    /// The key, borrowed.
    pub(crate) fn key_bytes(&self) -> &[u8] {
        &self.fields[..self.key_len]
    }

    /// Key, value and previous value as shared slices of the history (copies if the entry
    /// is not sealed yet: [`History::seal`] before reading avoids them).
    pub(crate) fn to_bytes(&self) -> [Bytes; 3] {
        let value_end = self.key_len + self.value_len;
        let ranges = [
            0..self.key_len,
            self.key_len..value_end,
            value_end..self.fields.len(),
        ];
        ranges.map(|range| match self.sealed {
            Some((segment, start)) => segment.slice(start + range.start..start + range.end),
            None => Bytes::copy_from_slice(&self.fields[range]),
        })
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
    entries: Headers,
    first_seq: u64,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// One above the largest payload recorded (0 when nothing is: no entry allowed).
    payload_cap: usize,
    /// The lowest revision a watch may start from; `None` after a lag until the next event.
    floor: Option<u64>,
    /// The revision of the last event recorded (0 before the first).
    last_revision: u64,
    /// The unsealed part of the chunk being filled; its spare capacity is where the next
    /// entry goes.
    open: BytesMut,
    /// What is left of the open chunk's size to fill (its capacity may be larger: an offset
    /// must stay below [`MAX_CHUNK`]).
    open_room: usize,
    /// Sealed segments some held entry lives in, oldest first.
    segments: VecDeque<Segment>,
    /// The number of `segments[0]` (numbers wrap: fewer segments than entries are held).
    first_segment: u32,
    /// Every full chunk some held entry lives in, oldest first: (the sequence number of the
    /// last entry copied into it, its size). For the heap count.
    chunks: VecDeque<(u64, usize)>,
    /// The size of the chunk being filled (0 before the first).
    open_chunk: usize,
    /// The size of a new chunk (see [`MAX_CHUNK`]).
    chunk_size: usize,
    /// The sizes in `chunks` and `open_chunk`, summed.
    chunk_bytes: usize,
    /// [`Self::next_release`], kept: evicting up to it releases no chunk and no segment.
    release_at: u64,
}

impl History {
    pub(crate) fn new(options: HistoryOptions) -> Self {
        // Segment numbers are `u32`: never more entries than they can tell apart.
        let max_events = options.max_events().min(u32::MAX as usize);
        Self {
            entries: Headers::new(max_events),
            first_seq: 0,
            bytes: 0,
            max_events,
            max_bytes: options.max_bytes(),
            payload_cap: match max_events {
                0 => 0,
                _ => options.max_bytes().min(MAX_PAYLOAD) + 1,
            },
            floor: Some(options.first_revision()),
            last_revision: 0,
            open: BytesMut::new(),
            open_room: 0,
            segments: VecDeque::new(),
            first_segment: 0,
            chunks: VecDeque::new(),
            open_chunk: 0,
            chunk_size: (options.max_bytes() / 16).clamp(MIN_CHUNK, MAX_CHUNK),
            chunk_bytes: 0,
            release_at: u64::MAX,
        }
    }

    /// The number the next sealed segment gets: entries in the unsealed part carry it.
    fn open_segment(&self) -> u32 {
        self.first_segment.wrapping_add(self.segments.len() as u32)
    }

    /// Freezes what has been written to the open chunk into a segment, so that reading its
    /// entries shares them instead of copying. O(1); a no-op when nothing is unsealed.
    pub(crate) fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let bytes = self.open.split().freeze();
        let last_seq = self.next_seq() - 1;
        self.segments.push_back(Segment { bytes, last_seq });
        self.release_at = self.release_at.min(last_seq);
    }

    /// Writes one entry's varints and fields into the open chunk (a new one if it does not
    /// fit) and returns where it starts in the unsealed part.
    #[inline]
    fn copy_in(&mut self, lengths: [u64; 3], parts: [&[u8]; 3], payload: usize) -> usize {
        let short = (lengths[0] | lengths[1] | lengths[2]) < 0x80;
        let size = match short {
            true => 3 + payload,
            false => lengths.iter().map(|&n| varint_len(n)).sum::<usize>() + payload,
        };
        // Before the first chunk there is no room, so this opens it too.
        if self.open_room < size {
            self.open_chunk_for(size);
        }
        let offset = self.open.len();
        if short {
            // One byte each, written as one 3-byte copy.
            self.open
                .extend_from_slice(&[lengths[0] as u8, lengths[1] as u8, lengths[2] as u8]);
        } else {
            for n in lengths {
                put_varint(&mut self.open, n);
            }
        }
        for part in parts {
            // Empty fields (a Put's previous value, a Delete's value) are common.
            if !part.is_empty() {
                self.open.extend_from_slice(part);
            }
        }
        self.open_room -= size;
        offset
    }

    /// Seals the open chunk and opens one with room for `size` bytes (once per chunk).
    #[cold]
    fn open_chunk_for(&mut self, size: usize) {
        self.seal();
        if self.open_chunk > 0 {
            let last = self.next_seq() - 1;
            self.chunks.push_back((last, self.open_chunk));
            self.release_at = self.release_at.min(last);
        }
        self.open_chunk = self.chunk_size.max(size);
        self.open = BytesMut::with_capacity(self.open_chunk);
        self.open_room = self.open_chunk;
        self.chunk_bytes += self.open_chunk;
    }

    /// Raises the floor to `revision` (what was applied before the dispatcher existed).
    pub(crate) fn raise_floor(&mut self, revision: u64) {
        if let Some(floor) = &mut self.floor {
            *floor = (*floor).max(revision);
        }
    }

    /// Records a dispatched Put or Delete (other types are not recorded). A replay
    /// (revision not above the last recorded) is not recorded; an event too large for the
    /// bounds empties the history and moves the floor past it. Returns whether the event
    /// was recorded.
    #[inline]
    pub(crate) fn record(
        &mut self,
        event_type: WatchEventType,
        key: &[u8],
        value: &[u8],
        prev_value: &[u8],
        revision: u64,
    ) -> bool {
        let deleted = match event_type {
            WatchEventType::Put => 0,
            WatchEventType::Delete => 1,
            WatchEventType::Canceled | WatchEventType::Progress => return false,
        };
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
        if payload >= self.payload_cap {
            self.clear_through(revision.saturating_add(1));
            // The sequence still moves, so that a cursor at the old head sees the drop.
            self.first_seq += 1;
            return false;
        }
        let lengths = [
            (key.len() as u64) << 1 | deleted,
            value.len() as u64,
            prev_value.len() as u64,
        ];
        let offset = self.copy_in(lengths, [key, value, prev_value], payload);
        // After the copy: a new chunk seals the old one, which moves the open number.
        let segment = self.open_segment();
        self.entries.push(Entry {
            revision,
            segment,
            // Below `MAX_CHUNK` in a shared chunk; 0 in a chunk of its own.
            offset: offset as u16,
            payload: u16::try_from(payload).unwrap_or(LONG_PAYLOAD),
        });
        self.bytes += payload;
        while self.entries.len() > self.max_events || self.bytes > self.max_bytes {
            self.evict_front();
        }
        true
    }

    #[inline]
    fn evict_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            // Before its segment is dropped below, while a long payload can still be read.
            let payload = match entry.payload {
                LONG_PAYLOAD => self.decode(&entry).map_or(0, |e| e.fields.len()),
                short => usize::from(short),
            };
            self.bytes -= payload;
            self.floor = Some(entry.revision.saturating_add(1));
            if self.first_seq >= self.release_at {
                self.release_through(self.first_seq);
            }
            self.first_seq += 1;
        }
    }

    /// Drops the chunks and segments whose last entry is at or before `seq`, just evicted
    /// (the open chunk stays), and sets [`Self::release_at`] to the next one's.
    #[cold]
    fn release_through(&mut self, seq: u64) {
        while self.chunks.front().is_some_and(|c| c.0 <= seq) {
            if let Some((_, size)) = self.chunks.pop_front() {
                self.chunk_bytes -= size;
            }
        }
        while self.segments.front().is_some_and(|s| s.last_seq <= seq) {
            self.segments.pop_front();
            self.first_segment = self.first_segment.wrapping_add(1);
        }
        self.release_at = self.next_release();
    }

    /// The lowest last entry of the oldest chunk and segment (`u64::MAX` with neither).
    fn next_release(&self) -> u64 {
        let chunk = self.chunks.front().map_or(u64::MAX, |c| c.0);
        let segment = self.segments.front().map_or(u64::MAX, |s| s.last_seq);
        chunk.min(segment)
    }

    /// Drops every entry; a watch may start at `floor` or later.
    fn clear_through(&mut self, floor: u64) {
        self.first_seq += self.entries.len() as u64;
        self.entries.clear();
        self.bytes = 0;
        self.floor = Some(floor);
        self.first_segment = self.open_segment();
        self.segments.clear();
        self.chunks.clear();
        self.release_at = u64::MAX;
        self.open_chunk = 0;
        self.chunk_bytes = 0;
        self.open = BytesMut::new();
        self.open_room = 0;
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
    pub(crate) fn get(&self, seq: u64) -> Option<Retained<'_>> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.decode(self.entries.get(index)?)
    }

    /// The entry `entry` is the header of, read from its segment or the open chunk.
    fn decode(&self, entry: &Entry) -> Option<Retained<'_>> {
        let (data, sealed) = if entry.segment == self.open_segment() {
            (&self.open[..], None)
        } else {
            let at = entry.segment.wrapping_sub(self.first_segment) as usize;
            let bytes = &self.segments.get(at)?.bytes;
            (&bytes[..], Some(bytes))
        };
        let mut at = entry.offset as usize;
        let [key_field, value_len, prev_len] = [(); 3].map(|()| read_varint(data, &mut at));
        let key_len = (key_field >> 1) as usize;
        let end = at + key_len + value_len as usize + prev_len as usize;
        Some(Retained {
            revision: entry.revision,
            event_type: if key_field & 1 == 1 {
                WatchEventType::Delete
            } else {
                WatchEventType::Put
            },
            fields: data.get(at..end)?,
            sealed: sealed.map(|bytes| (bytes, at)),
            key_len,
            value_len: value_len as usize,
        })
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

    /// Heap bytes held: the chunks entries live in (the open one whole), the header blocks
    /// and the deques of segments and chunks (allocator overhead not included).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunk_bytes
            + self.entries.heap_bytes()
            + self.segments.capacity() * std::mem::size_of::<Segment>()
            + self.chunks.capacity() * std::mem::size_of::<(u64, usize)>()
    }

    /// Checks the module's invariants; panics with a description otherwise.
    pub(crate) fn check_invariants(&self) {
        self.entries.check_invariants();
        let mut bytes = 0;
        let mut previous = None;
        for seq in self.first_seq..self.next_seq() {
            let entry = self.get(seq).expect("every header's entry is readable");
            assert!(
                previous.is_none_or(|p| p < entry.revision),
                "history revisions must strictly increase"
            );
            previous = Some(entry.revision);
            bytes += entry.fields.len();
            let index = (seq - self.first_seq) as usize;
            let header = self.entries.get(index).expect("a header per entry");
            assert_eq!(
                header.payload,
                u16::try_from(entry.fields.len()).unwrap_or(LONG_PAYLOAD),
                "the header's payload length"
            );
        }
        assert_eq!(bytes, self.bytes, "history byte count");
        let chunked = self.open_chunk + self.chunks.iter().map(|&(_, size)| size).sum::<usize>();
        assert_eq!(chunked, self.chunk_bytes, "chunk byte count");
        assert!(
            chunked >= self.bytes,
            "every held byte is in a counted chunk"
        );
        if self.entries.len() != 0 {
            let oldest = |last: Option<u64>| last.is_none_or(|last| last >= self.first_seq);
            assert!(
                oldest(self.chunks.front().map(|c| c.0)),
                "the oldest chunk holds a held entry"
            );
            assert!(
                oldest(self.segments.front().map(|s| s.last_seq)),
                "the oldest segment holds a held entry"
            );
        }
        assert_eq!(
            self.release_at,
            self.next_release(),
            "the kept release point"
        );
        let ends: Vec<u64> = self.segments.iter().map(|s| s.last_seq).collect();
        assert!(
            ends.windows(2).all(|w| w[0] < w[1]),
            "segments out of order"
        );
        assert!(self.entries.len() <= self.max_events && self.bytes <= self.max_bytes);
        if let (Some(floor), Some(first)) = (self.floor, self.entries.front()) {
            assert!(floor <= first.revision, "an entry below the floor");
        }
    }
}

/// The length of `n`'s LEB128 encoding.
#[inline]
fn varint_len(n: u64) -> usize {
    if n < 0x80 {
        return 1; // most lengths
    }
    // 7 bits a byte.
    (64 - n.leading_zeros() as usize).div_ceil(7)
}

/// Appends `n` as a LEB128 varint ([`varint_len`] bytes) to `out`.
#[inline]
fn put_varint(out: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8(n as u8 | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

/// Reads a varint the history wrote at `*at`, moving past it (a truncated one reads as
/// what it holds; `get` then finds the fields out of range).
fn read_varint(data: &[u8], at: &mut usize) -> u64 {
    let mut n = 0;
    let mut shift = 0;
    while let Some(&byte) = data.get(*at) {
        *at += 1;
        n |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        shift += 7;
        if byte < 0x80 {
            break;
        }
    }
    n
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
    fn an_entry_gives_back_its_fields_sealed_or_not() {
        let long_key = vec![b'k'; 300];
        let long_value = vec![b'v'; 70_000];
        type Case<'a> = (WatchEventType, &'a [u8], &'a [u8], &'a [u8]);
        let cases: [Case<'_>; 4] = [
            (WatchEventType::Delete, b"/key", b"", b"old"),
            (WatchEventType::Put, b"", b"", b""),
            (WatchEventType::Put, &long_key, &long_value, b"p"),
            (WatchEventType::Delete, b"/x", b"", &long_value),
        ];
        for seal in [false, true] {
            let mut h = history(10, 1 << 20);
            for (revision, (event_type, key, value, prev)) in cases.iter().enumerate() {
                h.record(*event_type, key, value, prev, revision as u64 + 1);
            }
            if seal {
                h.seal();
            }
            h.check_invariants();
            for (seq, (event_type, key, value, prev)) in cases.iter().enumerate() {
                let entry = h.get(seq as u64).unwrap();
                assert_eq!(entry.event_type, *event_type, "type of {seq}");
                assert_eq!(entry.key_bytes(), *key);
                let [k, v, p] = entry.to_bytes();
                assert_eq!(
                    (&k[..], &v[..], &p[..]),
                    (*key, *value, *prev),
                    "fields of {seq}"
                );
            }
            assert!(h.get(cases.len() as u64).is_none());
        }
    }

    #[test]
    fn a_sealed_entry_is_shared_not_copied() {
        let mut h = history(10, 1 << 20);
        put(&mut h, "/k", 1);
        let [unsealed, _, _] = h.get(0).unwrap().to_bytes();
        h.seal();
        put(&mut h, "/k", 2);
        let [first, _, _] = h.get(0).unwrap().to_bytes();
        let [again, _, _] = h.get(0).unwrap().to_bytes();
        assert_ne!(
            unsealed.as_ptr(),
            first.as_ptr(),
            "before sealing it is a copy"
        );
        assert_eq!(
            first.as_ptr(),
            again.as_ptr(),
            "once sealed, one shared slice"
        );
        assert_eq!(
            h.get(1).unwrap().key_bytes(),
            b"/k",
            "the open part after a seal"
        );
    }

    #[test]
    fn segments_and_chunks_go_with_their_last_entry() {
        let mut h = history(50, 1 << 20);
        for revision in 1..=1_000 {
            put(&mut h, "/some/key", revision);
            if revision % 3 == 0 {
                h.seal();
            }
        }
        assert_eq!(h.len(), 50);
        assert!(
            h.segments.len() <= 18,
            "{} segments for 50 entries",
            h.segments.len()
        );
        assert!(h.chunks.is_empty(), "all of it fits one chunk");
    }

    #[test]
    fn the_history_costs_its_payload_and_a_header_per_entry() {
        // 31-byte keys and 100-byte values, as in watchbench's history memory run.
        let (events, key, value) = (20_000, [b'k'; 31], [b'v'; 100]);
        let mut h = history(events, 64 << 20);
        let mut steady = 0;
        for revision in 1..=3 * events as u64 {
            h.record(WatchEventType::Put, &key, &value, b"", revision);
            if revision == events as u64 {
                steady = h.heap_bytes();
            }
        }
        h.check_invariants();
        let per_entry = 16 + 3;
        let slack = 2 * BLOCK * 16 + 2 * MAX_CHUNK + 4096;
        assert!(
            h.heap_bytes() <= h.bytes() + per_entry * h.len() + slack,
            "{} heap bytes for {} payload bytes",
            h.heap_bytes(),
            h.bytes()
        );
        assert!(
            h.heap_bytes() <= steady + MAX_CHUNK + BLOCK * 16,
            "at the bounds the history stops growing: {} then {}",
            steady,
            h.heap_bytes()
        );
    }

    #[test]
    fn eviction_subtracts_each_payload_short_or_long() {
        // A payload of 64 KiB or more has no length in its header: eviction reads it.
        let mut h = history(3, 1 << 20);
        let lengths = [1, 70_000, 65_534, 65_535, 65_536, 0, 200_000, 3];
        for (revision, length) in lengths.into_iter().enumerate() {
            let value = vec![b'v'; length];
            assert!(h.record(WatchEventType::Put, b"/k", &value, b"", revision as u64 + 1));
            h.check_invariants();
        }
        let held: usize = lengths[lengths.len() - 3..].iter().map(|l| l + 2).sum();
        assert_eq!((h.len(), h.bytes()), (3, held));
    }

    #[test]
    fn only_puts_and_deletes_are_recorded() {
        let mut h = history(10, 1 << 20);
        for event_type in [WatchEventType::Progress, WatchEventType::Canceled] {
            assert!(!h.record(event_type, b"/k", b"", b"", 1));
        }
        assert!(h.record(WatchEventType::Put, b"/k", b"", b"", 1));
        h.check_invariants();
    }
}
