//! [`Chunks`]: a vector that grows a fixed-size chunk at a time.
//!
//! A `Vec` doubles: after growing it is between half and fully used, and at ten million
//! entries the unused half is hundreds of megabytes (and growing copies everything). Here
//! the first chunk grows like a `Vec` up to [`CHUNK`] entries, and every later chunk is
//! allocated at exactly [`CHUNK`] entries: only the last chunk in use is ever partly empty
//! (and one spare after it may be empty), and growing never moves an entry. Positions are
//! dense (`0..len`). `swap_remove` moves the last entry into the gap, so the caller must
//! update whatever pointed at it (the trie's extras do); `truncate` drops a tail (the exact
//! index, which leaves holes on removal, after compacting them).
//!
//! # Invariants
//! - Every chunk but the last in use holds exactly [`CHUNK`] entries; the last in use holds
//!   1..=[`CHUNK`] (or there are no chunks); one empty spare chunk may follow it, kept when
//!   a removal or a truncation emptied it (so at most [`CHUNK`] spare slots).
//! - Chunks after the first were allocated with a capacity of exactly [`CHUNK`].
//!
//! # Complexity
//! | operation | cost |
//! |---|---|
//! | `get` / `get_mut` | O(1): two loads, the second into the chunk |
//! | `push` | O(1); amortised within the first chunk, which doubles up to [`CHUNK`] |
//! | `swap_remove` | O(1) |

/// Entries per chunk (a power of two, so that a position splits with a shift and a mask).
const CHUNK_BITS: u32 = 10;
/// Entries per chunk: 1,024 (64 KiB of 64-byte exact entries).
pub(crate) const CHUNK: usize = 1 << CHUNK_BITS;
const MASK: usize = CHUNK - 1;

/// A dense sequence of `T`, stored in fixed-size chunks.
pub(crate) struct Chunks<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T: Clone> Clone for Chunks<T> {
    fn clone(&self) -> Self {
        // A clone keeps the layout's promise: later chunks at exactly `CHUNK` capacity.
        let chunks = self
            .chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut copy = Vec::with_capacity(if i == 0 { chunk.len() } else { CHUNK });
                copy.extend_from_slice(chunk);
                copy
            })
            .collect();
        Self {
            chunks,
            len: self.len,
        }
    }
}

impl<T> Default for Chunks<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Chunks<T> {
    /// An empty sequence (allocates nothing).
    pub(crate) const fn new() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// Number of entries.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The entry at `index`. Panics if `index >= len()`.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> &T {
        &self.chunks[index >> CHUNK_BITS][index & MASK]
    }

    /// The entry at `index`, to change. Panics if `index >= len()`.
    #[inline]
    pub(crate) fn get_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index >> CHUNK_BITS][index & MASK]
    }

    /// Appends `value`; returns its position.
    pub(crate) fn push(&mut self, value: T) -> usize {
        let index = self.len;
        let chunk = index >> CHUNK_BITS;
        if chunk == self.chunks.len() {
            // Past the first chunk every chunk is allocated whole, once.
            let capacity = if chunk == 0 { 0 } else { CHUNK };
            self.chunks.push(Vec::with_capacity(capacity));
        }
        self.chunks[chunk].push(value);
        self.len += 1;
        index
    }

    /// Removes the entry at `index` and moves the last entry into its place. Returns the
    /// removed entry, and the position the moved entry came from (`None` when `index` was
    /// the last). Panics if `index >= len()`.
    pub(crate) fn swap_remove(&mut self, index: usize) -> (T, Option<usize>) {
        assert!(index < self.len, "position {index} out of {}", self.len);
        let last = self.len - 1;
        let tail = self
            .chunks
            .get_mut(last >> CHUNK_BITS)
            .and_then(Vec::pop)
            .expect("the last position is in the last non-empty chunk");
        self.len = last;
        let result = if index == last {
            (tail, None)
        } else {
            (std::mem::replace(self.get_mut(index), tail), Some(last))
        };
        self.release_spare();
        result
    }

    /// Drops every entry from position `len` on (nothing if there are fewer).
    pub(crate) fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let last = len >> CHUNK_BITS;
        if let Some(chunk) = self.chunks.get_mut(last) {
            chunk.truncate(len & MASK);
        }
        for chunk in self.chunks.iter_mut().skip(last + 1) {
            chunk.clear();
        }
        self.len = len;
        self.release_spare();
    }

    /// Frees trailing empty chunks, keeping one spare so that a caller adding and removing
    /// at a chunk boundary does not allocate and free a chunk each time.
    fn release_spare(&mut self) {
        let in_use = self.len.div_ceil(CHUNK);
        while self.chunks.len() > in_use + 1 {
            self.chunks.pop();
        }
        if in_use == 0 {
            // Empty: keep nothing, so an emptied index holds no memory.
            self.chunks = Vec::new();
        }
    }

    /// The entries, in position order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// Bytes allocated for entries (tests and measurements).
    #[cfg(test)]
    pub(crate) fn allocated_entries(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }

    /// Panics if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        let in_use = self.len.div_ceil(CHUNK);
        assert!(
            self.chunks.len() == in_use || self.chunks.len() == in_use + 1,
            "{} chunks for {} entries",
            self.chunks.len(),
            self.len
        );
        for (i, chunk) in self.chunks.iter().enumerate() {
            let expected = self.len.saturating_sub(i * CHUNK).min(CHUNK);
            assert_eq!(chunk.len(), expected, "chunk {i} out of step with len");
            if i > 0 {
                assert_eq!(chunk.capacity(), CHUNK, "chunk {i} allocated with slack");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_stay_dense_through_swap_removal() {
        let mut chunks = Chunks::new();
        let mut model = Vec::new();
        let mut seed = 7u64;
        for step in 0..20_000u64 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            if model.is_empty() || seed % 3 != 0 {
                assert_eq!(chunks.push(step), model.len());
                model.push(step);
            } else {
                let at = (seed >> 33) as usize % model.len();
                let expected_moved = (at + 1 != model.len()).then_some(model.len() - 1);
                let removed = model.swap_remove(at);
                assert_eq!(chunks.swap_remove(at), (removed, expected_moved));
            }
            if step % 97 == 0 {
                chunks.check_invariants();
                assert!(chunks.iter().eq(model.iter()));
            }
        }
        chunks.check_invariants();
        assert!((0..model.len()).all(|i| *chunks.get(i) == model[i]));
    }

    #[test]
    fn slack_is_at_most_two_chunks_and_an_emptied_sequence_frees_everything() {
        let mut chunks = Chunks::new();
        for i in 0..10 * CHUNK + 1 {
            chunks.push(i);
        }
        chunks.check_invariants();
        assert!(chunks.allocated_entries() - chunks.len() < 2 * CHUNK);
        while chunks.len() > 0 {
            chunks.swap_remove(0);
        }
        chunks.check_invariants();
        assert_eq!(chunks.allocated_entries(), 0);
    }

    #[test]
    fn truncation_keeps_the_layout_and_frees_emptied_chunks() {
        for cut in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, 4 * CHUNK] {
            let mut chunks = Chunks::new();
            for i in 0..4 * CHUNK {
                chunks.push(i);
            }
            chunks.truncate(cut);
            chunks.check_invariants();
            assert!(chunks.iter().copied().eq(0..cut), "cut at {cut}");
            assert!(chunks.allocated_entries() <= cut.div_ceil(CHUNK) * CHUNK + CHUNK);
        }
    }

    #[test]
    fn a_small_sequence_does_not_allocate_a_whole_chunk() {
        let mut chunks = Chunks::new();
        for i in 0..3u64 {
            chunks.push(i);
        }
        assert!(chunks.allocated_entries() < 16);
    }
}
