//! Exact-key watchers: a flat hash map from key bytes to the [`WatcherList`] of that key.
//!
//! Not persistent: a [`Snapshot`](super::Snapshot) is changed in place only while no reader
//! holds it (the registry's publish protocol guarantees that), so the map can be the fastest
//! thing to read that is also small at ten million keys:
//!
//! ```text
//!   slots: Table<Slot> (SwissTable, ahash)       entries: Chunks<Entry> (0..len, with holes)
//!   ctrl | position + hash tag (8 B)             [ key (inline ≤ 30 B) | watchers ] ...
//!         └──────────── position ──────────────▶ free: positions of holes, reused first
//! ```
//!
//! The table holds only 8-byte slots, so with its unavoidable slack (a SwissTable doubles: it
//! is 44–88% full) it costs 10–20 bytes per key (a slot and a control byte per bucket)
//! instead of a whole 64-byte entry per bucket; the entries
//! themselves sit in [`Chunks`], which has no slack to speak of. Each slot keeps 32 bits of
//! its key's hash, from which the table's hash is derived ([`spread`]): growing the table
//! rehashes from the slots alone instead of reading every entry's key at random (that
//! read was a quarter of a registration's time at a million keys, `watchbench --scenario
//! fill`), and a probe compares tags before it follows a slot to its entry. A lookup touches the control
//! bytes, the position and the entry (one dependent load more than entries stored in the
//! table: the price of the memory, measured in `docs/BENCHMARKS.md`). Keys of up to
//! [`INLINE_KEY`] bytes sit in the entry itself ([`KeyBytes`]), so a hit compares them without
//! following another pointer.
//!
//! Removing a key leaves a *hole* where its entry was, listed in `free` for the next new
//! key. Moving the last entry into the gap instead would repoint that entry's slot: a hash
//! and a probe that misses the cache twice at a million keys, which was nine tenths of a
//! removal's time in the index (`perf`, `watchbench --scenario fill`). Holes are compacted
//! away once they outnumber the live entries twice over: a scan of the slots in bucket
//! order moves each entry past the live count into a hole below it and repoints its slot
//! in the same visit, so there is no probe, and the cost is paid for by the removals that
//! made the holes. The price is memory: until then the holes may take twice the live
//! entries' room. Slots never move except when the table is rebuilt, which keeps sweeps'
//! bucket order (see `table`).
//!
//! # Invariants
//! - Exactly one slot per live entry, holding that entry's position; none points at a hole.
//! - An entry with an empty watcher list is a hole: its key is empty and its position is
//!   in `free`, once. Every other entry has watchers (a key goes with its last watcher).
//! - Holes are at most [`COMPACT_MIN`] or twice the live entries, whichever is more; an
//!   index without live entries holds no entries at all.
//! - Keys of up to [`INLINE_KEY`] bytes are inline, longer ones shared.
//! - `watchers` is the sum of all list lengths.
//!
//! # Complexity (k keys, m watchers on the touched key)
//! | operation | cost |
//! |---|---|
//! | `insert` | O(|key|) to hash + O(1) amortised (O(k) when the table grows) + O(1) in the list |
//! | `remove` | as `insert`; amortised O(1) more for compaction (O(buckets) + O(k) moves, after more than max(16, 2k) removals since the last, with buckets ≤ max(1,024, ~9.2k) since the table shrinks under an eighth full); O(k) when the table shrinks |
//! | `get` | O(|key|) + O(1) expected |
//! | `clone` | O(k) (tests and fuzzing only; the registry never copies an index) |

use bytes::Bytes;
use hashbrown::hash_table::Entry as TableEntry;

use super::chunks::Chunks;
use super::key::{KeyBytes, INLINE_KEY};
use super::table::{Layout, Table};
use super::watchers::WatcherList;
use super::WatcherEntry;

/// One watched key and its watchers: 64 bytes with one watcher inline.
#[derive(Clone)]
struct Entry<W> {
    key: KeyBytes,
    watchers: WatcherList<W>,
}

impl<W> Entry<W> {
    /// A hole: no key, no watchers.
    fn hole() -> Self {
        Entry {
            key: KeyBytes::new(&Bytes::new()),
            watchers: WatcherList::Empty,
        }
    }
}

/// Holes up to this many are never compacted, so that a small index (a table of up to
/// 1,024 buckets is never shrunk) does not scan its table every few removals.
#[cfg(not(any(test, fuzzing)))]
const COMPACT_MIN: usize = 16;
/// Under unit tests and fuzzing, few: so that short operation sequences reach compaction.
#[cfg(any(test, fuzzing))]
const COMPACT_MIN: usize = 2;

/// 32 bits of a key's hash, kept in its slot. Twins hash with the same seeds, so a tag
/// computed for one snapshot is the key's tag in the other (see `Snapshot::insert`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag(u32);

/// Where a key's entry is, and its hash tag.
#[derive(Clone, Copy, Debug)]
struct Slot {
    at: u32,
    tag: Tag,
}

/// The table's 64-bit hash of a tag. The table takes its bucket from the low bits and a
/// 7-bit control byte from the top ones; an odd multiplier maps the tag's low bits onto the
/// low bits one to one and mixes all 32 into the top.
#[inline]
fn spread(tag: Tag) -> u64 {
    u64::from(tag.0).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Exact-key watcher index.
pub(crate) struct ExactIndex<W> {
    /// Position in `entries` of each key, hashed by the key's bytes.
    slots: Table<Slot>,
    entries: Chunks<Entry<W>>,
    /// Positions of the holes in `entries`, the next one to reuse last.
    free: Vec<u32>,
    hasher: ahash::RandomState,
    watchers: usize,
}

impl<W: Clone> Clone for ExactIndex<W> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            entries: self.entries.clone(),
            free: self.free.clone(),
            hasher: self.hasher.clone(),
            watchers: self.watchers,
        }
    }
}

impl<W: WatcherEntry> ExactIndex<W> {
    /// An empty index hashing with `hasher` (the two snapshots of a pair share seeds, so
    /// that their tables have one layout).
    pub(crate) fn with_hasher(hasher: ahash::RandomState) -> Self {
        Self {
            slots: Table::new(),
            entries: Chunks::new(),
            free: Vec::new(),
            hasher,
            watchers: 0,
        }
    }

    /// An empty index, hashing with `hasher`'s seeds, for the other snapshot of a pair.
    pub(crate) fn empty_twin(&self) -> Self {
        Self::with_hasher(self.hasher.clone())
    }

    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> Tag {
        // The high half: ahash mixes every input bit into all of its output.
        Tag((self.hasher.hash_one(key) >> 32) as u32)
    }

    /// Number of distinct watched keys.
    #[inline]
    pub(crate) fn key_count(&self) -> usize {
        self.slots.len()
    }

    /// Positions of entries, holes included.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn positions(&self) -> usize {
        self.entries.len()
    }

    /// Number of watchers over all keys.
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers
    }

    /// The position of `key`'s entry.
    #[inline]
    fn position(&self, key: &[u8]) -> Option<usize> {
        self.position_hashed(self.hash(key), key)
    }

    /// [`Self::position`], with `key`'s hash already computed.
    #[inline]
    fn position_hashed(&self, tag: Tag, key: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.slots
            .find(spread(tag), |slot| {
                slot.tag == tag && entries.get(slot.at as usize).key.as_slice() == key
            })
            .map(|slot| slot.at as usize)
    }

    /// The watchers of `key`.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<&WatcherList<W>> {
        self.position(key).map(|at| &self.entries.get(at).watchers)
    }

    /// Adds a watcher on `key`.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, key: Bytes, watcher: W) {
        let tag = self.hash(&key);
        self.insert_hashed(&key, tag, watcher);
    }

    /// Adds a watcher on `key`, whose [`Self::hash`] is `tag`. The key's buffer is shared
    /// only if the key is too long to sit inline.
    pub(crate) fn insert_hashed(&mut self, key: &Bytes, tag: Tag, watcher: W) {
        debug_assert_eq!(tag, self.hash(key), "a tag of this index's seeds");
        // One probe: the entry API searches once for the key or its free slot.
        let entries = &mut self.entries;
        let slot = self.slots.entry(
            spread(tag),
            |slot| slot.tag == tag && entries.get(slot.at as usize).key.as_slice() == &key[..],
            |slot| spread(slot.tag),
        );
        match slot {
            TableEntry::Occupied(found) => {
                entries
                    .get_mut(found.get().at as usize)
                    .watchers
                    .insert(watcher);
            }
            TableEntry::Vacant(slot) => {
                let mut watchers = WatcherList::Empty;
                watchers.insert(watcher);
                let entry = Entry {
                    key: KeyBytes::new(key),
                    watchers,
                };
                let at = match self.free.pop() {
                    Some(hole) => {
                        *entries.get_mut(hole as usize) = entry;
                        hole
                    }
                    None => {
                        u32::try_from(entries.push(entry)).expect("fewer than 2^32 watched keys")
                    }
                };
                slot.insert(Slot { at, tag });
            }
        }
        self.watchers += 1;
    }

    /// Removes the watcher `id` from `key`, dropping the key with its last watcher.
    pub(crate) fn remove(&mut self, key: &[u8], id: u64) -> Option<W> {
        let hash = self.hash(key);
        let at = self.position_hashed(hash, key)?;
        let list = &mut self.entries.get_mut(at).watchers;
        let removed = list.remove(id)?;
        self.watchers -= 1;
        if list.is_empty() {
            self.remove_entry(hash, at);
        }
        Some(removed)
    }

    /// Drops the entry at position `at`, whose key hashes to `tag`, leaving a hole there.
    fn remove_entry(&mut self, tag: Tag, at: usize) {
        if let Some(slot) = self
            .slots
            .find_entry(spread(tag), |slot| slot.at as usize == at)
        {
            slot.remove();
        }
        if at + 1 == self.entries.len() {
            // The last position: gone, not a hole (removals newest first leave none).
            self.entries.truncate(at);
        } else {
            *self.entries.get_mut(at) = Entry::hole();
            self.free.push(at as u32);
        }
        self.slots.shrink_if_sparse(|slot| spread(slot.tag));
        let live = self.slots.len();
        if live == 0 {
            self.entries = Chunks::new();
            self.free = Vec::new();
        } else if self.free.len() > COMPACT_MIN.max(2 * live) {
            self.compact();
        }
    }

    /// Moves every live entry below the live count, into the holes there, and drops the
    /// rest. One pass over the slots in bucket order finds each entry to move and
    /// repoints it; no slot moves, so the layout (and a sweep's place) is kept.
    fn compact(&mut self) {
        let live = self.slots.len();
        let mut below = std::mem::take(&mut self.free);
        below.retain(|&hole| (hole as usize) < live);
        // Positions are each twin's own (nothing carries one across); no slot moves, so the
        // layout the twins share is kept.
        for slot in self.slots.iter_mut() {
            if (slot.at as usize) < live {
                continue;
            }
            let to = below
                .pop()
                .expect("a hole below the live count for each entry above it");
            let entry = std::mem::replace(self.entries.get_mut(slot.at as usize), Entry::hole());
            *self.entries.get_mut(to as usize) = entry;
            slot.at = to;
        }
        debug_assert!(below.is_empty());
        self.entries.truncate(live);
    }

    /// The bucket arrangement, for a sweep resuming across snapshots.
    pub(crate) fn layout(&self) -> Layout {
        self.slots.layout()
    }

    /// Number of buckets a sweep walks.
    pub(crate) fn buckets(&self) -> usize {
        self.slots.buckets()
    }

    /// The key and watchers in bucket `index`, if it is full.
    #[inline]
    pub(crate) fn bucket(&self, index: usize) -> Option<(&[u8], &WatcherList<W>)> {
        self.slots.bucket(index).map(|slot| {
            let entry = self.entries.get(slot.at as usize);
            (entry.key.as_slice(), &entry.watchers)
        })
    }

    /// Panics if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        self.entries.check_invariants();
        let live = self.slots.len();
        assert_eq!(
            live + self.free.len(),
            self.entries.len(),
            "one slot per live entry"
        );
        assert!(
            self.free.len() <= COMPACT_MIN.max(2 * live),
            "{} holes for {live} live entries",
            self.free.len()
        );
        assert!(
            live > 0 || self.entries.len() == 0,
            "an emptied index keeps entries"
        );
        let mut holes = vec![false; self.entries.len()];
        for &hole in &self.free {
            let at = hole as usize;
            assert!(
                at < holes.len() && !holes[at],
                "hole {at} listed twice or out of range"
            );
            holes[at] = true;
        }
        let mut total = 0;
        for (at, entry) in self.entries.iter().enumerate() {
            let (key, list) = (&entry.key, &entry.watchers);
            if holes[at] {
                assert!(
                    list.is_empty() && key.as_slice().is_empty(),
                    "hole {at} holds a key"
                );
                continue;
            }
            assert!(!list.is_empty(), "a key without watchers must be removed");
            assert_eq!(
                matches!(key, KeyBytes::Inline { .. }),
                key.as_slice().len() <= INLINE_KEY,
                "short keys are inline, long ones shared"
            );
            assert_eq!(
                self.position(key.as_slice()),
                Some(at),
                "a key's slot points at its own entry"
            );
            list.check_invariants();
            total += list.len();
        }
        assert_eq!(total, self.watchers, "watcher total out of step");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Id(u64);
    impl WatcherEntry for Id {
        fn id(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn lookup_by_bytes_finds_inline_and_shared_keys() {
        let mut index = ExactIndex::with_hasher(ahash::RandomState::new());
        let long = Bytes::from(vec![b'k'; INLINE_KEY + 1]);
        let short = Bytes::from_static(b"/a");
        index.insert(long.clone(), Id(1));
        index.insert(short.clone(), Id(2));
        index.insert(short.clone(), Id(3));
        index.check_invariants();
        assert_eq!(index.get(&long).map(WatcherList::len), Some(1));
        assert_eq!(index.get(&short).map(WatcherList::len), Some(2));
        assert!(index.get(b"/b").is_none());
        assert_eq!(index.remove(&short, 2), Some(Id(2)));
        assert_eq!(index.remove(&short, 2), None);
        assert_eq!(index.remove(&short, 3), Some(Id(3)));
        assert!(index.get(&short).is_none(), "emptied key is dropped");
        assert_eq!((index.key_count(), index.watcher_count()), (1, 1));
        index.check_invariants();
    }

    /// A removal order: a name, and the key removed at each step.
    type RemovalOrder = (&'static str, fn(u64) -> u64);

    #[test]
    fn removals_leave_holes_that_are_reused_or_compacted_and_every_key_stays_found() {
        // Removal orders that put the holes in front of, among and behind the live entries.
        let orders: [RemovalOrder; 3] = [
            ("oldest first", |i| i),
            ("newest first", |i| 9_999 - i),
            ("scattered", |i| (i * 7_919) % 10_000),
        ];
        for (name, order) in orders {
            let mut index = ExactIndex::with_hasher(ahash::RandomState::new());
            let mut model = std::collections::BTreeSet::new();
            for i in 0..10_000u64 {
                index.insert(Bytes::from(format!("/k/{i}")), Id(i));
                model.insert(i);
            }
            for step in 0..9_990u64 {
                let gone = order(step);
                assert_eq!(
                    index.remove(format!("/k/{gone}").as_bytes(), gone),
                    Some(Id(gone))
                );
                model.remove(&gone);
                if step % 5 == 0 {
                    // A new key now and then takes a hole, if there is one.
                    let (positions, holes) = (index.positions(), index.free.len());
                    let new = 10_000 + step;
                    index.insert(Bytes::from(format!("/k/{new}")), Id(new));
                    model.insert(new);
                    let grew = index.positions() - positions;
                    assert_eq!(grew, usize::from(holes == 0), "{name}: a hole not reused");
                }
                if step % 499 == 0 {
                    index.check_invariants();
                }
            }
            index.check_invariants();
            assert_eq!(index.key_count(), model.len(), "{name}");
            for &i in &model {
                let found = index
                    .get(format!("/k/{i}").as_bytes())
                    .map(|list| list.get(i).is_some());
                assert_eq!(found, Some(true), "{name}: /k/{i} lost");
            }
            assert!(
                index.entries.len() <= COMPACT_MIN.max(3 * model.len()),
                "{name}: {} entries kept for {} keys",
                index.entries.len(),
                model.len()
            );
        }
    }

    #[test]
    fn an_emptied_table_gives_its_memory_back() {
        let mut index = ExactIndex::with_hasher(ahash::RandomState::new());
        for i in 0..100_000u64 {
            index.insert(Bytes::from(format!("/k/{i}")), Id(i));
        }
        let full = index.slots.capacity();
        for i in 0..100_000u64 {
            assert_eq!(index.remove(format!("/k/{i}").as_bytes(), i), Some(Id(i)));
        }
        index.check_invariants();
        assert!(
            index.slots.capacity() <= 1024,
            "capacity {} of {full} kept",
            index.slots.capacity()
        );
        assert_eq!(index.entries.allocated_entries(), 0);
    }
}
