//! Exact-key watchers: a flat hash map from key bytes to the [`WatcherList`] of that key.
//!
//! Not persistent: a [`Snapshot`](super::Snapshot) is changed in place only while no reader
//! holds it (the registry's publish protocol guarantees that), so the map can be the fastest
//! thing to read: an open-addressing table (`std`'s SwissTable) hashed with `ahash`, a seeded,
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

use std::collections::HashMap;

use bytes::Bytes;

use super::key::{KeyBytes, INLINE_KEY};
use super::watchers::WatcherList;
use super::WatcherEntry;

/// Below this capacity a table is never shrunk: too small to matter.
const MIN_SHRINK_CAPACITY: usize = 1024;

/// Exact-key watcher index.
pub(crate) struct ExactIndex<W> {
    map: HashMap<KeyBytes, WatcherList<W>, ahash::RandomState>,
    watchers: usize,
}

impl<W: Clone> Clone for ExactIndex<W> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            watchers: self.watchers,
        }
    }
}

impl<W: WatcherEntry> ExactIndex<W> {
    /// An empty index with a randomly seeded hasher.
    pub(crate) fn new() -> Self {
        Self {
            map: HashMap::with_hasher(ahash::RandomState::new()),
            watchers: 0,
        }
    }

    /// Number of distinct watched keys.
    #[inline]
    pub(crate) fn key_count(&self) -> usize {
        self.map.len()
    }

    /// Number of watchers over all keys.
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers
    }

    /// The watchers of `key`.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<&WatcherList<W>> {
        self.map.get(key)
    }

    /// Adds a watcher on `key`.
    pub(crate) fn insert(&mut self, key: Bytes, watcher: W) {
        // One probe: the entry API hashes and searches once (a short key is copied into the
        // probe key; a long one is a reference-counted `Bytes`).
        self.map
            .entry(KeyBytes::new(key))
            .or_default()
            .insert(watcher);
        self.watchers += 1;
    }

    /// Removes the watcher `id` from `key`, dropping the key with its last watcher.
    pub(crate) fn remove(&mut self, key: &[u8], id: u64) -> Option<W> {
        let list = self.map.get_mut(key)?;
        let removed = list.remove(id)?;
        if list.is_empty() {
            self.map.remove(key);
            self.shrink_if_sparse();
        }
        self.watchers -= 1;
        Some(removed)
    }

    /// Gives memory back once the table is less than an eighth full. Shrinking to twice the
    /// live size keeps the cost amortised O(1): many inserts or removals must come before
    /// the next resize either way.
    fn shrink_if_sparse(&mut self) {
        let (len, capacity) = (self.map.len(), self.map.capacity());
        if capacity > MIN_SHRINK_CAPACITY && len * 8 < capacity {
            self.map.shrink_to(len * 2);
        }
    }

    /// Calls `f` with every key and its watchers.
    pub(crate) fn for_each_list<F: FnMut(&[u8], &WatcherList<W>)>(&self, f: &mut F) {
        for (key, list) in &self.map {
            f(key.as_slice(), list);
        }
    }

    /// Panics if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        let mut total = 0;
        for (key, list) in &self.map {
            assert!(!list.is_empty(), "a key without watchers must be removed");
            assert_eq!(
                matches!(key, KeyBytes::Inline { .. }),
                key.as_slice().len() <= INLINE_KEY,
                "short keys are inline, long ones shared"
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
        let mut index = ExactIndex::new();
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
        let mut index = ExactIndex::new();
        for i in 0..100_000u64 {
            index.insert(Bytes::from(format!("/k/{i}")), Id(i));
        }
        let full = index.map.capacity();
        for i in 0..100_000u64 {
            assert_eq!(index.remove(format!("/k/{i}").as_bytes(), i), Some(Id(i)));
        }
        index.check_invariants();
        assert!(
            index.map.capacity() <= MIN_SHRINK_CAPACITY,
            "capacity {} of {full} kept",
            index.map.capacity()
        );
    }
}
