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
//! Memory is what bounds a history, so an entry costs its payload plus about 5 bytes:
//! - in a chunk of at most [`MAX_CHUNK`] bytes, four LEB128 varints (its revision less the
//!   previous entry's, its type with the key's length, the value's and the previous
//!   value's lengths: 4 bytes for fields under 64 and 128 bytes), then key, value and
//!   previous value, back to back with the next entry;
//! - one entry in [`GROUP`] (sequence numbers that are multiples of it) also has a 16-byte
//!   *mark*, its revision and position, in fixed blocks of up to [`BLOCK`] marks, so that
//!   growing never doubles a buffer.
//!
//! An entry is found from the mark of its group, or from the oldest entry's position
//! (`front`, kept), by decoding at most `GROUP - 1` entries forward; a reader that goes on
//! keeps a [`Hint`] (the position after what it read) and decodes one. Evicting decodes the
//! oldest entry (its payload length and the next one's revision): the chunk is read in
//! order, which the caches prefetch.
//!
//! A chunk is filled through a `BytesMut`; what has been written of it is frozen into a
//! shared *segment* when the chunk is full and when a catch-up is about to read with at
//! least 4 KiB unsealed ([`History::seal_for_readers`]), so that replayed events are slices
//! of the history, not copies (but for a shorter tail, whose entries are copied: a segment
//! per event, 40 bytes, cost more than the entries' varints while anyone was feeding).
//! Recording touches no reference count: one allocation and one freeze per chunk, not per
//! event (per-event `malloc`, `free` and `Bytes` splits were what recording cost). A chunk
//! is freed when its last entry is evicted and the events delivered from it are dropped.
//!
//! | operation | cost |
//! |---|---|
//! | `record` | O(payload) copy, amortised O(1) eviction and chunk allocation |
//! | `start_of` (first entry at or after a revision) | O(log n + `GROUP`) |
//! | `read` with a hint from the previous read | O(1) |
//! | `get` (no hint) | O(`GROUP`) |
//! | `seal` | O(1) |

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::WatchEventType;
use crate::options::HistoryOptions;

/// The largest chunk payloads are copied into (an event larger than that gets a chunk of
/// its own size).
pub(crate) const MAX_CHUNK: usize = 64 << 10;

/// The smallest chunk: a history bounded to fewer bytes still allocates this much at once.
const MIN_CHUNK: usize = 4 << 10;

/// The unsealed bytes [`History::seal_for_readers`] waits for: a segment (40 bytes) per
/// 4 KiB of entries at most (1% of the payload), and a read copies only entries of a tail
/// shorter than this.
const SEAL_MIN: usize = 4 << 10;

/// Marks per block (fewer when the history holds fewer events).
const BLOCK: usize = 1024;

/// Entries per mark (a power of two).
const GROUP: u64 = 16;

/// The largest payload an entry can have: offsets within a chunk are `u32`. A larger event
/// is treated like one above the byte bound.
const MAX_PAYLOAD: usize = u32::MAX as usize - 4 * MAX_VARINT;

/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT: usize = 10;

/// Where an entry starts: the number of its segment (wrapping; the next segment's number
/// while it is in the open chunk's unsealed part) and the offset in it. The position of a
/// held entry never changes (sealing keeps both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    segment: u32,
    offset: u32,
}

/// The revision and position of the first entry of a group.
#[derive(Clone, Copy)]
struct Mark {
    revision: u64,
    pos: Pos,
}

const _: () = assert!(std::mem::size_of::<Mark>() == 16);

/// A sealed stretch of a chunk: the entries in it are read as slices of `bytes`.
struct Segment {
    bytes: Bytes,
    /// The sequence number of the last entry in it.
    last_seq: u64,
}

/// Marks in fixed-size blocks: a deque that never doubles.
///
/// Invariants: every block in `full` holds exactly `block_len` marks and `tail` at most
/// that (its capacity is `block_len`); `skip`, the marks already popped from the first
/// block (`full[0]`, or `tail` while `full` is empty), is below `block_len`; `len` counts
/// the rest. `block_len` is a power of two, so finding a mark is a shift and a mask.
struct Marks {
    full: VecDeque<Vec<Mark>>,
    tail: Vec<Mark>,
    skip: usize,
    len: usize,
    shift: u32,
    /// The last block emptied, kept for the next one needed (no allocation churn at the
    /// bounds, where a block empties at one end as one fills at the other).
    spare: Option<Vec<Mark>>,
}

impl Marks {
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
    fn push(&mut self, entry: Mark) {
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

    fn get(&self, index: usize) -> Option<&Mark> {
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

    #[inline]
    fn pop_front(&mut self) -> Option<Mark> {
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

    /// The number of leading marks for which `below` holds (it must hold for a prefix).
    fn partition_point(&self, below: impl Fn(&Mark) -> bool) -> usize {
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
        blocks * self.block_len() * std::mem::size_of::<Mark>()
            + self.full.capacity() * std::mem::size_of::<Vec<Mark>>()
    }

    fn check_invariants(&self) {
        let block_len = self.block_len();
        assert!(self.skip < block_len, "a fully popped block is kept");
        for block in &self.full {
            assert!(block.len() == block_len, "a hole in the blocks");
        }
        assert!(self.tail.len() <= block_len && self.tail.capacity() == block_len);
        let stored = self.full.len() * block_len + self.tail.len();
        assert_eq!(stored - self.skip, self.len, "mark count");
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

/// Where a reader left off: the position just past the entry it read last and that entry's
/// revision, for the history it was read from (`clears` tells a history emptied since).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hint {
    pos: Pos,
    revision: u64,
    clears: u64,
}

/// An entry decoded at a position.
struct Decoded<'a> {
    /// Its revision less the previous entry's (0 for the first after an empty history).
    delta: u64,
    event_type: WatchEventType,
    fields: &'a [u8],
    sealed: Option<(&'a Bytes, usize)>,
    key_len: usize,
    value_len: usize,
    /// Where the next entry starts.
    next: Pos,
}

/// Where a position's bytes are ([`History::place`]).
struct Place<'a> {
    data: &'a [u8],
    sealed: Option<&'a Bytes>,
    segment: u32,
    offset: usize,
}

/// An entry's varints, read at a position ([`History::skip`]).
struct Skipped {
    delta: u64,
    payload: usize,
    key_field: u64,
    value_len: usize,
    /// Where its fields start in its segment.
    fields_at: usize,
    next: Pos,
}

/// The bounded history (see the module docs).
pub(crate) struct History {
    /// One per group that holds an entry, the oldest's first (its entry may be evicted:
    /// that group is read from `front`).
    marks: Marks,
    /// The group of `marks[0]`: `first_seq / GROUP` while any entry is held.
    first_group: u64,
    first_seq: u64,
    /// Entries held.
    len: usize,
    /// Where the oldest entry starts (while `len > 0`).
    front: Pos,
    /// What the oldest entry's delta is added to: the last evicted entry's revision, or the
    /// oldest's own when it came into an empty history (its delta is then 0). Eviction so
    /// reads each entry's varints once.
    before_front: u64,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// One above the largest payload recorded (0 when nothing is: no entry allowed).
    payload_cap: usize,
    /// The lowest revision a watch may start from; `None` after a lag until the next event.
    floor: Option<u64>,
    /// An event at `u64::MAX` is gone (or skipped): the floor would be past every revision,
    /// which it cannot say, so every start is compacted.
    exhausted: bool,
    /// The revision of the last event recorded (0 before the first).
    last_revision: u64,
    /// Times the history was emptied at once (hints from before are not followed).
    clears: u64,
    /// The unsealed part of the chunk being filled; its spare capacity is where the next
    /// entry goes.
    open: BytesMut,
    /// What is left of the open chunk's size to fill (its capacity may be larger).
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
            marks: Marks::new(max_events.div_ceil(GROUP as usize)),
            first_group: 0,
            first_seq: 0,
            len: 0,
            front: Pos {
                segment: 0,
                offset: 0,
            },
            before_front: 0,
            bytes: 0,
            max_events,
            max_bytes: options.max_bytes(),
            payload_cap: match (max_events, options.max_bytes()) {
                // Either bound 0 keeps nothing, not even an event whose fields are empty.
                (0, _) | (_, 0) => 0,
                (_, max_bytes) => max_bytes.min(MAX_PAYLOAD) + 1,
            },
            floor: Some(options.first_revision()),
            exhausted: false,
            last_revision: 0,
            clears: 0,
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

    /// [`Self::seal`], once the unsealed part holds at least [`SEAL_MIN`] bytes: what the
    /// dispatcher calls before catching-up watchers read, after every event while any feeds.
    /// Sealing each event alone would cost a 40-byte segment per entry; the entries of a
    /// shorter unsealed tail are copied when read instead (at most [`SEAL_MIN`] bytes' worth).
    pub(crate) fn seal_for_readers(&mut self) {
        if self.open.len() >= SEAL_MIN {
            self.seal();
        }
    }

    /// Writes one entry's varints and fields into the open chunk (a new one if it does not
    /// fit) and returns where it starts in the unsealed part.
    #[inline]
    fn copy_in(&mut self, lengths: [u64; 4], parts: [&[u8]; 3], payload: usize) -> usize {
        let short = (lengths[0] | lengths[1] | lengths[2] | lengths[3]) < 0x80;
        let size = match short {
            true => 4 + payload,
            false => lengths.iter().map(|&n| varint_len(n)).sum::<usize>() + payload,
        };
        // Before the first chunk there is no room, so this opens it too.
        if self.open_room < size {
            self.open_chunk_for(size);
        }
        let offset = self.open.len();
        if short {
            // One byte each, written as one 4-byte copy.
            self.open.extend_from_slice(&lengths.map(|n| n as u8));
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
        // Below a raised floor (events applied before the dispatcher started, still queued):
        // no watch may start there, so holding it would only put an entry under the floor.
        if self.floor.is_some_and(|floor| revision < floor) {
            return false;
        }
        // While entries are held, the newest was recorded last: revisions increase.
        let delta = match self.len {
            0 => 0,
            _ => revision - self.last_revision,
        };
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
            let floor = self.floor_after(revision);
            self.clear_through(floor);
            // The sequence still moves, so that a cursor at the old head sees the drop.
            self.first_seq += 1;
            return false;
        }
        let lengths = [
            delta,
            (key.len() as u64) << 1 | deleted,
            value.len() as u64,
            prev_value.len() as u64,
        ];
        let offset = self.copy_in(lengths, [key, value, prev_value], payload);
        // After the copy: a new chunk seals the old one, which moves the open number.
        let pos = Pos {
            segment: self.open_segment(),
            offset: offset as u32,
        };
        let seq = self.next_seq();
        if self.len == 0 {
            self.front = pos;
            self.before_front = revision;
            self.marks.clear();
            self.first_group = seq / GROUP;
            self.marks.push(Mark { revision, pos });
        } else if seq % GROUP == 0 {
            self.marks.push(Mark { revision, pos });
        }
        self.len += 1;
        self.bytes += payload;
        while self.len > self.max_events || self.bytes > self.max_bytes {
            self.evict_front();
        }
        true
    }

    #[inline]
    fn evict_front(&mut self) {
        if self.len == 0 {
            return;
        }
        let Some(oldest) = self.skip(self.front) else {
            unreachable!("the oldest entry is held")
        };
        self.bytes -= oldest.payload;
        let evicted = self.before_front + oldest.delta;
        self.before_front = evicted;
        // Never lowered: a floor raised above what is recorded (or set by a gap) stays.
        let after = self.floor_after(evicted);
        self.floor = Some(self.floor.unwrap_or(0).max(after));
        self.len -= 1;
        // Never the end of a sealed segment (`skip` moves that on), which may go below.
        self.front = oldest.next;
        if self.first_seq >= self.release_at {
            self.release_through(self.first_seq);
        }
        self.first_seq += 1;
        if self.first_seq / GROUP > self.first_group && self.len > 0 {
            self.marks.pop_front();
            self.first_group += 1;
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

    /// Drops every entry; a watch may start at `floor` or later (or at the floor already
    /// known, if that is higher: a floor is never lowered).
    fn clear_through(&mut self, floor: u64) {
        self.first_seq += self.len as u64;
        self.len = 0;
        self.marks.clear();
        self.first_group = self.first_seq / GROUP;
        self.clears += 1;
        self.bytes = 0;
        self.floor = Some(self.floor.map_or(floor, |known| known.max(floor)));
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
    /// A floor unknown since events were lost ([`Self::lost`]) stays unknown: what was lost
    /// may lie above the gap.
    pub(crate) fn skip_through(&mut self, through: u64) {
        let unknown = self.floor.is_none();
        let floor = self.floor_after(through);
        self.clear_through(floor);
        if unknown {
            self.floor = None;
        }
        self.last_revision = self.last_revision.max(through);
    }

    /// Events were lost before reaching the dispatcher: nothing held can be resumed across
    /// the hole, and the floor is the next event's revision.
    pub(crate) fn lost(&mut self) {
        self.clear_through(0);
        self.floor = None;
    }

    /// The floor once every event up to `revision` is gone: the revision after it (noting,
    /// at `u64::MAX`, that none is left).
    fn floor_after(&mut self, revision: u64) -> u64 {
        self.exhausted |= revision == u64::MAX;
        revision.saturating_add(1)
    }

    /// Where a watch from `revision` starts (compacted, `oldest` `u64::MAX`, for every one
    /// once an event at `u64::MAX` is gone: nothing can be resumed any more).
    pub(crate) fn start_of(&self, revision: u64) -> Start {
        if self.exhausted {
            return Start::Compacted { oldest: u64::MAX };
        }
        match self.floor {
            None => Start::Unknown,
            Some(floor) if revision < floor => Start::Compacted { oldest: floor },
            Some(_) => {
                if self.len == 0 || revision <= self.front_revision() {
                    return Start::At(self.first_seq);
                }
                // The last group whose first entry is below `revision` (not the oldest
                // group's mark, whose entry may be gone: that group starts at `front`).
                let below = self.marks.partition_point(|m| m.revision < revision);
                let (mut seq, mut pos, mut at) = match below {
                    0 | 1 => (self.first_seq, self.front, self.front_revision()),
                    g => {
                        let mark = self.marks.get(g - 1).expect("below the mark count");
                        let seq = (self.first_group + g as u64 - 1) * GROUP;
                        (seq, mark.pos, mark.revision)
                    }
                };
                // Forward to the first entry at or after it (within the group).
                while at < revision {
                    seq += 1;
                    if seq == self.next_seq() {
                        break;
                    }
                    let Some(current) = self.skip(pos) else {
                        break;
                    };
                    pos = current.next;
                    at += self.skip(pos).map_or(0, |next| next.delta);
                }
                Start::At(seq)
            }
        }
    }

    /// The entry with sequence number `seq`, if still held.
    pub(crate) fn get(&self, seq: u64) -> Option<Retained<'_>> {
        self.read(seq, None).map(|(entry, _)| entry)
    }

    /// The entry with sequence number `seq`, if still held, and the hint that reads the one
    /// after it in O(1). `hint` is what the read of `seq - 1` returned (or `None`).
    pub(crate) fn read(&self, seq: u64, hint: Option<Hint>) -> Option<(Retained<'_>, Hint)> {
        if seq < self.first_seq || seq >= self.next_seq() {
            return None;
        }
        let (entry, revision) = match hint {
            // The oldest entry's position is kept: no hint needed, and a hint for it
            // may be stale (from before a clear).
            Some(hint) if hint.clears == self.clears && seq > self.first_seq => {
                match self.decode(hint.pos) {
                    Some(entry) => {
                        let revision = hint.revision + entry.delta;
                        (entry, revision)
                    }
                    // Its segment went (it pointed at the end of one since released).
                    None => self.locate(seq)?,
                }
            }
            _ => self.locate(seq)?,
        };
        let hint = Hint {
            pos: entry.next,
            revision,
            clears: self.clears,
        };
        let retained = Retained {
            revision,
            event_type: entry.event_type,
            fields: entry.fields,
            sealed: entry.sealed,
            key_len: entry.key_len,
            value_len: entry.value_len,
        };
        Some((retained, hint))
    }

    /// The held entry `seq` and its revision, decoded forward from its group's mark (or
    /// from `front` in the oldest group).
    fn locate(&self, seq: u64) -> Option<(Decoded<'_>, u64)> {
        let group = seq / GROUP;
        let (mut at, mut pos, mut revision) = if group == self.first_group {
            (self.first_seq, self.front, self.front_revision())
        } else {
            let mark = self.marks.get((group - self.first_group) as usize)?;
            (group * GROUP, mark.pos, mark.revision)
        };
        let mut entry = self.decode(pos)?;
        while at < seq {
            pos = entry.next;
            entry = self.decode(pos)?;
            revision += entry.delta;
            at += 1;
        }
        Some((entry, revision))
    }

    /// The revision of the oldest entry (while one is held).
    fn front_revision(&self) -> u64 {
        self.before_front + self.skip(self.front).map_or(0, |oldest| oldest.delta)
    }

    /// The bytes a position is in: the segment's (or the open part's), the segment that
    /// holds it and the offset. A position at the very end of a sealed segment is the
    /// start of the next one (the entry after it went into a new chunk, or was written
    /// after a seal).
    #[inline]
    fn place(&self, pos: Pos) -> Option<Place<'_>> {
        let (mut segment, mut offset) = (pos.segment, pos.offset as usize);
        loop {
            if segment == self.open_segment() {
                let data = &self.open[..];
                return Some(Place {
                    data,
                    sealed: None,
                    segment,
                    offset,
                });
            }
            let at = segment.wrapping_sub(self.first_segment) as usize;
            let bytes = &self.segments.get(at)?.bytes;
            if offset < bytes.len() {
                let data = &bytes[..];
                return Some(Place {
                    data,
                    sealed: Some(bytes),
                    segment,
                    offset,
                });
            }
            // At its end: the next segment, from its start (never empty, so this moves on).
            segment = segment.wrapping_add(1);
            offset = 0;
        }
    }

    /// The varints of the entry at `pos` and where the next one starts, without its fields.
    #[inline]
    fn skip(&self, pos: Pos) -> Option<Skipped> {
        Self::skip_at(&self.place(pos)?)
    }

    #[inline]
    fn skip_at(place: &Place<'_>) -> Option<Skipped> {
        let mut at = place.offset;
        let window = place
            .data
            .get(at..at + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok());
        let [delta, key_field, value_len, prev_len] = match window {
            // Four one-byte varints: most entries.
            Some(bytes) if u32::from_le_bytes(bytes) & 0x8080_8080 == 0 => {
                at += 4;
                bytes.map(u64::from)
            }
            _ => [(); 4].map(|()| read_varint(place.data, &mut at)),
        };
        let payload = (key_field >> 1)
            .saturating_add(value_len)
            .saturating_add(prev_len) as usize;
        let end = at
            .checked_add(payload)
            .filter(|&end| end <= place.data.len())?;
        // The end of a sealed segment is the next one's start: a position that stays good
        // when this segment goes.
        let next = match place.sealed {
            Some(bytes) if end == bytes.len() => Pos {
                segment: place.segment.wrapping_add(1),
                offset: 0,
            },
            _ => Pos {
                segment: place.segment,
                offset: end as u32,
            },
        };
        Some(Skipped {
            delta,
            payload,
            key_field,
            value_len: value_len as usize,
            fields_at: at,
            next,
        })
    }

    /// The entry at `pos`.
    #[inline]
    fn decode(&self, pos: Pos) -> Option<Decoded<'_>> {
        let place = self.place(pos)?;
        let entry = Self::skip_at(&place)?;
        let fields = &place.data[entry.fields_at..entry.fields_at + entry.payload];
        Some(Decoded {
            delta: entry.delta,
            event_type: if entry.key_field & 1 == 1 {
                WatchEventType::Delete
            } else {
                WatchEventType::Put
            },
            fields,
            sealed: place.sealed.map(|bytes| (bytes, entry.fields_at)),
            key_len: (entry.key_field >> 1) as usize,
            value_len: entry.value_len,
            next: entry.next,
        })
    }

    /// The sequence number of the oldest entry held (the next one when empty).
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The sequence number the next recorded event will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first_seq + self.len as u64
    }

    /// The lowest revision a watch may start from (`None` while unknown after a lag).
    pub(crate) fn floor(&self) -> Option<u64> {
        self.floor
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Payload bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Heap bytes held: the chunks entries live in (the open one whole), the mark blocks
    /// and the deques of segments and chunks (allocator overhead not included).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunk_bytes
            + self.marks.heap_bytes()
            + self.segments.capacity() * std::mem::size_of::<Segment>()
            + self.chunks.capacity() * std::mem::size_of::<(u64, usize)>()
    }

    /// Checks the module's invariants; panics with a description otherwise.
    pub(crate) fn check_invariants(&self) {
        self.marks.check_invariants();
        let mut bytes = 0;
        let mut previous = None;
        let mut hint = None;
        for seq in self.first_seq..self.next_seq() {
            let (entry, next) = self.read(seq, hint).expect("every entry is readable");
            let (located, revision) = self.locate(seq).expect("every entry is located");
            assert_eq!(
                (revision, located.fields),
                (entry.revision, entry.fields),
                "a hint and a mark find entry {seq} alike"
            );
            assert!(
                previous.is_none_or(|p| p < entry.revision),
                "history revisions must strictly increase"
            );
            assert_eq!(
                self.start_of(entry.revision),
                Start::At(seq),
                "the start of its revision"
            );
            previous = Some(entry.revision);
            bytes += entry.fields.len();
            hint = Some(next);
        }
        assert_eq!(bytes, self.bytes, "history byte count");
        if self.len > 0 {
            assert_eq!(self.first_group, self.first_seq / GROUP, "the oldest group");
            let groups = (self.next_seq() - 1) / GROUP - self.first_group + 1;
            assert_eq!(self.marks.len() as u64, groups, "a mark per group");
            for g in 1..groups {
                let mark = self.marks.get(g as usize).expect("counted");
                let seq = (self.first_group + g) * GROUP;
                let (entry, revision) = self.locate(seq).expect("held");
                assert_eq!(
                    (mark.revision, self.decode(mark.pos).map(|d| d.fields)),
                    (revision, Some(entry.fields)),
                    "the mark of group {}",
                    self.first_group + g
                );
            }
        }
        let chunked = self.open_chunk + self.chunks.iter().map(|&(_, size)| size).sum::<usize>();
        assert_eq!(chunked, self.chunk_bytes, "chunk byte count");
        assert!(
            chunked >= self.bytes,
            "every held byte is in a counted chunk"
        );
        if self.len != 0 {
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
        assert!(self.len <= self.max_events && self.bytes <= self.max_bytes);
        if let (Some(floor), true) = (self.floor, self.len > 0) {
            assert!(floor <= self.front_revision(), "an entry below the floor");
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
/// what it holds; `decode` then finds the fields out of range).
#[inline]
fn read_varint(data: &[u8], at: &mut usize) -> u64 {
    // Most are one byte.
    if let Some(&byte) = data.get(*at) {
        if byte < 0x80 {
            *at += 1;
            return u64::from(byte);
        }
    }
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
    fn a_zero_bound_keeps_nothing_not_even_an_event_without_bytes() {
        for (events, bytes) in [(0, 1 << 20), (10, 0)] {
            let mut h = history(events, bytes);
            assert!(!h.record(WatchEventType::Put, b"", b"", b"", 1));
            assert_eq!(h.len(), 0, "{events} events, {bytes} bytes");
            assert_eq!(h.start_of(1), Start::Compacted { oldest: 2 });
            h.check_invariants();
        }
    }

    #[test]
    fn the_floor_never_goes_down_and_nothing_is_held_below_it() {
        let mut h = history(2, 1 << 20);
        h.raise_floor(10);
        for revision in [8, 9] {
            assert!(!put(&mut h, "/k", revision), "below the raised floor");
        }
        for revision in 10..=13 {
            assert!(put(&mut h, "/k", revision));
        }
        assert_eq!(h.floor(), Some(12));
        assert_eq!(h.start_of(9), Start::Compacted { oldest: 12 });
    }

    #[test]
    fn once_an_event_at_the_last_revision_is_gone_every_start_is_compacted() {
        let mut oversized = history(10, 8);
        assert!(!oversized.record(WatchEventType::Put, b"/a-long-key", b"v", b"", u64::MAX));
        let mut skipped = history(10, 1 << 20);
        skipped.skip_through(u64::MAX);
        for h in [oversized, skipped] {
            for revision in [1, u64::MAX] {
                assert_eq!(h.start_of(revision), Start::Compacted { oldest: u64::MAX });
            }
            h.check_invariants();
        }
    }

    #[test]
    fn a_gap_below_a_raised_floor_does_not_lower_it() {
        let mut h = history(10, 1 << 20);
        h.raise_floor(10);
        h.skip_through(5);
        assert_eq!(h.floor(), Some(10));
        assert!(!put(&mut h, "/k", 7), "below the raised floor");
        assert_eq!(h.start_of(6), Start::Compacted { oldest: 10 });
    }

    #[test]
    fn a_gap_after_lost_events_leaves_the_floor_unknown_until_the_next_event() {
        let mut h = history(10, 1 << 20);
        for revision in 1..=10 {
            put(&mut h, "/k", revision);
        }
        h.lost(); // 11 and up may be lost
        h.skip_through(12);
        assert_eq!(h.floor(), None, "what was lost may lie above the gap");
        put(&mut h, "/k", 21);
        assert_eq!(h.start_of(15), Start::Compacted { oldest: 21 });
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
    fn the_history_costs_its_payload_and_about_five_bytes_per_entry() {
        // With catching-up readers the dispatcher seals for them after every event.
        for readers in [false, true] {
            history_cost_at_bounds(readers);
        }
    }

    fn history_cost_at_bounds(readers: bool) {
        // 31-byte keys and 100-byte values, as in watchbench's history memory run.
        let (events, key, value) = (20_000, [b'k'; 31], [b'v'; 100]);
        let mut h = history(events, 64 << 20);
        let mut steady = 0;
        for revision in 1..=3 * events as u64 {
            h.record(WatchEventType::Put, &key, &value, b"", revision);
            if readers {
                h.seal_for_readers();
            }
            if revision == events as u64 {
                steady = h.heap_bytes();
            }
        }
        h.check_invariants();
        // Four 1-byte varints, and a 16-byte mark every `GROUP` entries.
        let per_entry = 4 + 16 / GROUP as usize;
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
        // Lengths around the varints' byte boundaries and the 64 KiB chunk size.
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
    fn a_reader_hint_reads_what_a_lookup_reads_across_seals_chunks_evictions_and_clears() {
        // 4 KiB chunks (the smallest), entries of 100-odd bytes: a new chunk every ~35.
        let mut h = history(40, 64 << 10);
        let value = [b'v'; 100];
        let (mut next, mut hint) = (0u64, None);
        for revision in 1..=2_000u64 {
            let key = format!("/k{revision}");
            h.record(WatchEventType::Put, key.as_bytes(), &value, b"", revision);
            match revision % 7 {
                0 => h.seal(),
                3 if revision % 500 == 3 => h.skip_through(revision + 5),
                _ => {}
            }
            // The reader keeps up for a while, then falls behind and is compacted.
            let reads = if revision % 300 < 200 { 2 } else { 0 };
            for _ in 0..reads {
                if next < h.first_seq() {
                    (next, hint) = (h.first_seq(), None);
                }
                let Some((entry, after)) = h.read(next, hint) else {
                    break;
                };
                let looked_up = h.get(next).expect("held");
                assert_eq!(
                    (entry.revision, entry.key_bytes()),
                    (looked_up.revision, looked_up.key_bytes()),
                    "entry {next} read with a hint"
                );
                (next, hint) = (next + 1, Some(after));
            }
            if revision % 97 == 0 {
                h.check_invariants();
            }
        }
        h.check_invariants();
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
