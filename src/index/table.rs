//! [`Table`]: the open-addressing table under both indexes, with a *layout* a sweep can
//! resume in.
//!
//! A long sweep (heartbeats, the closed-receiver scan) visits the buckets of a table in
//! order, a slice at a time, and lets go of its snapshot between slices so that writers are
//! not held up. The next slice may read the *other* snapshot of the pair (see
//! `registry::Writer`), changed in the meantime. Resuming at the same bucket index is sound
//! only if both tables put every entry in the same bucket, and if neither moved an entry
//! since the previous slice. Both hold by construction:
//!
//! - the two snapshots' tables use the same hash seeds and receive the same operations in
//!   the same order, and a SwissTable is deterministic: equal histories, equal layouts
//!   (checked by `WatchRegistry::check_invariants`);
//! - an entry moves only when the table is rebuilt (grown, rehashed in place, shrunk).
//!   Every rebuild goes through this wrapper and bumps [`Layout::generation`]: an insert
//!   rebuilds exactly when no growth room is left, so the wrapper makes that room itself
//!   first (`reserve(1)`) and counts it.
//!
//! A sweep that finds a different [`Layout`] than the one it started a table with restarts
//! that table from bucket 0.

use hashbrown::hash_table::{Entry, OccupiedEntry};
use hashbrown::HashTable;

/// Below this capacity a table is never shrunk: too small to matter.
const MIN_SHRINK_CAPACITY: usize = 1024;

/// Identifies a bucket arrangement: equal layouts put every entry in the same bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    buckets: usize,
    generation: u64,
}

/// A hash table whose rebuilds are counted.
pub(crate) struct Table<T> {
    inner: HashTable<T>,
    generation: u64,
}

impl<T: Clone> Clone for Table<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            generation: self.generation,
        }
    }
}

impl<T> Table<T> {
    /// An empty table (allocates nothing).
    pub(crate) fn new() -> Self {
        Self {
            inner: HashTable::new(),
            generation: 0,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }

    /// The current bucket arrangement.
    pub(crate) fn layout(&self) -> Layout {
        Layout {
            buckets: self.inner.num_buckets(),
            generation: self.generation,
        }
    }

    /// Number of buckets (the range of [`Self::bucket`]).
    pub(crate) fn buckets(&self) -> usize {
        self.inner.num_buckets()
    }

    /// The entry in bucket `index`, if that bucket is full.
    #[inline]
    pub(crate) fn bucket(&self, index: usize) -> Option<&T> {
        self.inner.get_bucket(index)
    }

    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        self.inner.find(hash, eq)
    }

    #[inline]
    pub(crate) fn find_mut(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        self.inner.find_mut(hash, eq)
    }

    /// The entry matching `eq`, to remove it.
    pub(crate) fn find_entry(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
    ) -> Option<OccupiedEntry<'_, T>> {
        self.inner.find_entry(hash, eq).ok()
    }

    /// The entry matching `eq`, or the slot to insert it: one probe either way.
    pub(crate) fn entry(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        rehash: impl Fn(&T) -> u64,
    ) -> Entry<'_, T> {
        self.make_room(&rehash);
        self.inner.entry(hash, eq, rehash)
    }

    /// Inserts `value`, known to be absent.
    pub(crate) fn insert_unique(&mut self, hash: u64, value: T, rehash: impl Fn(&T) -> u64) {
        self.make_room(&rehash);
        self.inner.insert_unique(hash, value, rehash);
    }

    /// Guarantees room for one more entry, so that the insert that follows cannot rebuild
    /// the table behind the generation count's back. `capacity()` is the entries plus the
    /// growth room left: equal to `len()` exactly when an insert would rebuild.
    fn make_room(&mut self, rehash: &impl Fn(&T) -> u64) {
        if self.inner.len() == self.inner.capacity() {
            self.generation += 1;
            self.inner.reserve(1, rehash);
        }
    }

    /// Gives memory back once the table is less than an eighth full. Shrinking to twice the
    /// live size keeps the cost amortised O(1): many inserts or removals must come before
    /// the next rebuild either way. Returns whether it shrank.
    pub(crate) fn shrink_if_sparse(&mut self, rehash: impl Fn(&T) -> u64) -> bool {
        let (len, capacity) = (self.inner.len(), self.inner.capacity());
        if capacity > MIN_SHRINK_CAPACITY && len * 8 < capacity {
            self.generation += 1;
            self.inner.shrink_to(len * 2, rehash);
            return true;
        }
        false
    }

    /// The entries, in bucket order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.inner.iter()
    }

    /// The entries, in bucket order, to change in place: none moves, so the layout stays.
    /// The caller must not change what an entry's hash is computed from.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.inner.iter_mut()
    }

    /// The allocated capacity (tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(x: &u64) -> u64 {
        x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Where each entry sits.
    fn placement(table: &Table<u64>) -> Vec<Option<u64>> {
        (0..table.buckets())
            .map(|i| table.bucket(i).copied())
            .collect()
    }

    #[test]
    fn an_unchanged_layout_means_no_entry_moved() {
        let mut table = Table::new();
        let mut last = (table.layout(), placement(&table));
        for i in 0..10_000u64 {
            table.insert_unique(hash(&i), i, hash);
            if i % 3 == 0 {
                let gone = i / 2;
                if let Some(e) = table.find_entry(hash(&gone), |&x| x == gone) {
                    e.remove();
                    table.shrink_if_sparse(hash);
                }
            }
            let now = (table.layout(), placement(&table));
            if now.0 == last.0 {
                // Same layout: every entry present before is in the same bucket.
                for (before, after) in last.1.iter().zip(&now.1) {
                    if let (Some(b), Some(a)) = (before, after) {
                        assert_eq!(b, a, "an entry moved without a layout change");
                    }
                }
            }
            last = now;
        }
    }

    #[test]
    fn equal_histories_give_equal_placements() {
        let (mut a, mut b) = (Table::new(), Table::new());
        for t in [&mut a, &mut b] {
            for i in 0..5_000u64 {
                t.insert_unique(hash(&i), i, hash);
                if i % 2 == 0 {
                    t.find_entry(hash(&(i / 2)), |&x| x == i / 2)
                        .map(OccupiedEntry::remove);
                }
            }
        }
        assert_eq!(a.layout(), b.layout());
        assert_eq!(placement(&a), placement(&b));
    }
}
