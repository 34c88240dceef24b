//! Exact-key watchers: a flat hash map from key bytes to the [`WatcherList`] of that key.
//!
//! Not persistent: a [`Snapshot`](super::Snapshot) is changed in place only while no reader
//! holds it (the registry's publish protocol guarantees that), so the map can be the fastest
//! thing to read: an open-addressing table (hashbrown's SwissTable, see [`Table`]) hashed with `ahash`, a seeded,
//! DoS-resistant hash much cheaper than SipHash on short keys. A lookup touches the control
//! bytes and one bucket; keys of up to [`INLINE_KEY`] bytes sit in the bucket itself ([`KeyBytes`]), so a
//! hit compares them without following a pointer.
//!
//! # Invariants
//! - No entry has an empty watcher list (the entry is removed with its last watcher).
//! - Keys of up to [`INLINE_KEY`] bytes are inline, longer ones shared.
//! - `watchers` is the sum of all list lengths.
//!
//! # Complexity (k keys, m watchers on the touched key)
//! | operation | cost |
//! |---|---|
//! | `insert` / `remove` | O(|key|) to hash + O(1) amortised (O(k) when the table grows or shrinks) + O(1) in the list |
//! | `get` | O(|key|) + O(1) expected |
//! | `clone` | O(k) (tests and fuzzing only; the registry never copies an index) |

use bytes::Bytes;
use hashbrown::hash_table::Entry as Slot;

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

/// Exact-key watcher index.
pub(crate) struct ExactIndex<W> {
    table: Table<Entry<W>>,
    hasher: ahash::RandomState,
    watchers: usize,
}

impl<W: Clone> Clone for ExactIndex<W> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
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
            table: Table::new(),
            hasher,
            watchers: 0,
        }
    }

    /// An empty index, hashing with `hasher`'s seeds, for the other snapshot of a pair.
    pub(crate) fn empty_twin(&self) -> Self {
        Self::with_hasher(self.hasher.clone())
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Number of distinct watched keys.
    #[inline]
    pub(crate) fn key_count(&self) -> usize {
        self.table.len()
    }

    /// Number of watchers over all keys.
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers
    }

    /// The watchers of `key`.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<&WatcherList<W>> {
        self.table
            .find(self.hash(key), |e| e.key.as_slice() == key)
            .map(|e| &e.watchers)
    }

    /// Adds a watcher on `key`.
    pub(crate) fn insert(&mut self, key: Bytes, watcher: W) {
        // One probe: the entry API searches once for the key or its free slot.
        let hash = self.hash(&key);
        let hasher = &self.hasher;
        let slot = self.table.entry(
            hash,
            |e| e.key.as_slice() == &key[..],
            |e| hasher.hash_one(e.key.as_slice()),
        );
        match slot {
            Slot::Occupied(mut entry) => {
                entry.get_mut().watchers.insert(watcher);
            }
            Slot::Vacant(slot) => {
                let mut watchers = WatcherList::Empty;
                watchers.insert(watcher);
                slot.insert(Entry {
                    key: KeyBytes::new(key),
                    watchers,
                });
            }
        }
        self.watchers += 1;
    }

    /// Removes the watcher `id` from `key`, dropping the key with its last watcher.
    pub(crate) fn remove(&mut self, key: &[u8], id: u64) -> Option<W> {
        let mut entry = self
            .table
            .find_entry(self.hash(key), |e| e.key.as_slice() == key)?;
        let removed = entry.get_mut().watchers.remove(id)?;
        if entry.get().watchers.is_empty() {
            entry.remove();
            let hasher = &self.hasher;
            self.table
                .shrink_if_sparse(|e| hasher.hash_one(e.key.as_slice()));
        }
        self.watchers -= 1;
        Some(removed)
    }

    /// The bucket arrangement, for a sweep resuming across snapshots.
    pub(crate) fn layout(&self) -> Layout {
        self.table.layout()
    }

    /// Number of buckets a sweep walks.
    pub(crate) fn buckets(&self) -> usize {
        self.table.buckets()
    }

    /// The key and watchers in bucket `index`, if it is full.
    #[inline]
    pub(crate) fn bucket(&self, index: usize) -> Option<(&[u8], &WatcherList<W>)> {
        self.table
            .bucket(index)
            .map(|e| (e.key.as_slice(), &e.watchers))
    }

    /// Panics if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        let mut total = 0;
        for entry in self.table.iter() {
            let (key, list) = (&entry.key, &entry.watchers);
            assert!(!list.is_empty(), "a key without watchers must be removed");
            assert_eq!(
                matches!(key, KeyBytes::Inline { .. }),
                key.as_slice().len() <= INLINE_KEY,
                "short keys are inline, long ones shared"
            );
            assert!(
                self.get(key.as_slice())
                    .is_some_and(|found| std::ptr::eq(found, list)),
                "a key is found in its own entry"
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

    #[test]
    fn an_emptied_table_gives_its_memory_back() {
        let mut index = ExactIndex::with_hasher(ahash::RandomState::new());
        for i in 0..100_000u64 {
            index.insert(Bytes::from(format!("/k/{i}")), Id(i));
        }
        let full = index.table.capacity();
        for i in 0..100_000u64 {
            assert_eq!(index.remove(format!("/k/{i}").as_bytes(), i), Some(Id(i)));
        }
        index.check_invariants();
        assert!(
            index.table.capacity() <= 1024,
            "capacity {} of {full} kept",
            index.table.capacity()
        );
    }
}
