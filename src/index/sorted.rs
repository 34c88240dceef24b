//! [`SortedPositions`]: a sorted list of entry positions whose inserts and removals stay
//! cheap however long it grows.
//!
//! A range tree node lists every range containing its center, and nested ranges (all
//! containing one key) pile onto one node: a flat sorted vector would move the whole list
//! per insert, O(l), so 200,000 nested ranges cost tens of gigabytes of copying. The list is
//! kept in chunks of at most [`MAX_CHUNK`] positions instead: an insert or removal finds its
//! chunk by binary search over the chunks' last positions and moves at most one chunk's
//! worth. A list that never outgrows one chunk keeps that chunk's buffer inline, so reading
//! it follows the same one pointer a `Vec` does.
//!
//! The order is the caller's: every operation takes `order(x)`, the order of the listed
//! position `x` relative to the one inserted or removed (so never `Equal` for an insert).
//!
//! # Invariants (checked by [`SortedPositions::check_invariants`])
//! - No chunk is empty; none holds more than [`MAX_CHUNK`] positions.
//! - The chunks read in turn are sorted by the caller's order, each position once.
//!
//! # Complexity (l = positions listed)
//! | operation | cost |
//! |---|---|
//! | insert, remove | O(log l) comparisons + O([`MAX_CHUNK`] + l / [`MAX_CHUNK`]) moves |
//! | iterate | O(l) |

use std::cmp::Ordering;

use smallvec::SmallVec;

/// Positions a chunk holds at most; a full chunk splits in two halves.
const MAX_CHUNK: usize = 1024;

/// A chunk this short merges into a neighbour with room for it.
const MIN_CHUNK: usize = MAX_CHUNK / 4;

/// Entry positions in the caller's order, in chunks.
#[derive(Clone, Default)]
pub(super) struct SortedPositions {
    chunks: SmallVec<[Vec<u32>; 1]>,
}

impl SortedPositions {
    /// A list of `sorted`, already in the caller's order.
    pub(super) fn from_sorted(sorted: Vec<u32>) -> Self {
        let mut chunks = SmallVec::new();
        if sorted.len() <= MAX_CHUNK {
            if !sorted.is_empty() {
                chunks.push(sorted);
            }
        } else {
            for chunk in sorted.chunks(MAX_CHUNK / 2) {
                chunks.push(chunk.to_vec());
            }
        }
        Self { chunks }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// Chunks in use (tests).
    #[cfg(test)]
    pub(super) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// The positions in order.
    #[inline]
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks.iter().flat_map(|chunk| chunk.iter().copied())
    }

    /// The chunk a position ordered by `order` belongs in: the first whose last position
    /// is not before it (the last chunk if every one is).
    fn chunk_for(&self, order: &impl Fn(u32) -> Ordering) -> usize {
        let past = self.chunks.partition_point(|chunk| {
            order(*chunk.last().expect("no empty chunk")) == Ordering::Less
        });
        past.min(self.chunks.len().saturating_sub(1))
    }

    /// Lists `at`, which `order` places (`order(x)`: `x` relative to `at`).
    pub(super) fn insert(&mut self, at: u32, order: impl Fn(u32) -> Ordering) {
        if self.chunks.is_empty() {
            self.chunks.push(vec![at]);
            return;
        }
        let c = self.chunk_for(&order);
        let chunk = &mut self.chunks[c];
        let i = chunk
            .binary_search_by(|&x| order(x))
            .expect_err("a position is listed once");
        chunk.insert(i, at);
        if chunk.len() > MAX_CHUNK {
            let upper = chunk.split_off(chunk.len() / 2);
            self.chunks.insert(c + 1, upper);
        }
    }

    /// Unlists `at`, which `order` places; false if it was not listed.
    pub(super) fn remove(&mut self, order: impl Fn(u32) -> Ordering) -> bool {
        if self.chunks.is_empty() {
            return false;
        }
        let c = self.chunk_for(&order);
        let chunk = &mut self.chunks[c];
        let Ok(i) = chunk.binary_search_by(|&x| order(x)) else {
            return false;
        };
        chunk.remove(i);
        let len = chunk.len();
        if len == 0 {
            self.chunks.remove(c);
        } else if len < MIN_CHUNK {
            // Merge into a neighbour with room, so that removals cannot leave a long list
            // of nearly empty chunks behind.
            if c + 1 < self.chunks.len() && self.chunks[c + 1].len() + len <= MAX_CHUNK {
                let next = self.chunks.remove(c + 1);
                self.chunks[c].extend_from_slice(&next);
            } else if c > 0 && self.chunks[c - 1].len() + len <= MAX_CHUNK {
                let this = self.chunks.remove(c);
                self.chunks[c - 1].extend_from_slice(&this);
            }
        }
        true
    }

    /// Asserts the invariants, with `order(a, b)` the caller's order.
    pub(super) fn check_invariants(&self, order: impl Fn(u32, u32) -> Ordering) {
        for chunk in &self.chunks {
            assert!(!chunk.is_empty(), "no empty chunk");
            assert!(chunk.len() <= MAX_CHUNK, "a chunk within its bound");
        }
        let all: Vec<u32> = self.iter().collect();
        for pair in all.windows(2) {
            assert_eq!(order(pair[0], pair[1]), Ordering::Less, "sorted, each once");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts and removes `values` in the given orders, against a sorted vector.
    fn replay(inserts: &[u32], removals: &[u32]) {
        let mut list = SortedPositions::default();
        let mut model: Vec<u32> = Vec::new();
        for &v in inserts {
            list.insert(v, |x| x.cmp(&v));
            let i = model.binary_search(&v).unwrap_err();
            model.insert(i, v);
        }
        list.check_invariants(|a, b| a.cmp(&b));
        assert_eq!(list.iter().collect::<Vec<_>>(), model);
        for &v in removals {
            assert!(list.remove(|x| x.cmp(&v)));
            assert!(!list.remove(|x| x.cmp(&v)), "removed once");
            model.retain(|&m| m != v);
            list.check_invariants(|a, b| a.cmp(&b));
        }
        assert_eq!(list.iter().collect::<Vec<_>>(), model);
        assert_eq!(list.len(), model.len());
    }

    #[test]
    fn a_long_list_stays_sorted_through_inserts_and_removals_anywhere() {
        let n = 5 * MAX_CHUNK as u32;
        // Descending inserts: each at the very front, the nested ranges' case.
        let descending: Vec<u32> = (0..n).rev().collect();
        let every_third: Vec<u32> = (0..n).step_by(3).collect();
        replay(&descending, &every_third);
        // Scattered inserts, then everything removed from the middle outwards.
        let scattered: Vec<u32> = (0..n).map(|i| (i * 7919) % n).collect();
        let mut middle_out: Vec<u32> = (0..n).collect();
        middle_out.sort_by_key(|&v| (v as i64 - n as i64 / 2).abs());
        replay(&scattered, &middle_out);
    }

    #[test]
    fn removals_merge_short_chunks_so_they_do_not_accumulate() {
        let n = 8 * MAX_CHUNK as u32;
        let inserts: Vec<u32> = (0..n).collect();
        let mut list = SortedPositions::default();
        for &v in &inserts {
            list.insert(v, |x| x.cmp(&v));
        }
        // Keep one position in sixteen.
        for v in (0..n).filter(|v| v % 16 != 0) {
            assert!(list.remove(|x| x.cmp(&v)));
        }
        list.check_invariants(|a, b| a.cmp(&b));
        assert!(
            list.chunks.len() <= 2,
            "{} chunks for {} positions",
            list.chunks.len(),
            list.len()
        );
    }

    #[test]
    fn a_built_list_matches_its_input() {
        for n in [0, 1, MAX_CHUNK, MAX_CHUNK + 1, 3 * MAX_CHUNK + 5] {
            let sorted: Vec<u32> = (0..n as u32).collect();
            let list = SortedPositions::from_sorted(sorted.clone());
            list.check_invariants(|a, b| a.cmp(&b));
            assert_eq!(list.iter().collect::<Vec<_>>(), sorted);
        }
    }
}
