//! [`Slab`]: entries at stable positions, with holes reused last-freed first.
//!
//! The range and pattern indexes point at their entries by position, and a sweep walks
//! them by position: nothing moves while present, so a sweep that resumes on the other twin
//! (same operations, same positions) visits every entry present throughout exactly once.
//! Holes are reused, never compacted; the trailing ones are given back.
//!
//! # Invariants
//! - `free` holds exactly the empty positions below `slots.len()`, each once.
//! - The last slot, if any, is full.

/// A vector of optional entries with a free list.
pub(super) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T: Clone> Clone for Slab<T> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            free: self.free.clone(),
            len: self.len,
        }
    }
}

impl<T> Slab<T> {
    pub(super) const fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Live entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Positions a walk covers: `0..span()`.
    pub(super) fn span(&self) -> usize {
        self.slots.len()
    }

    /// Stores `value` in the most recently freed hole, or at the end.
    pub(super) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        match self.free.pop() {
            Some(at) => {
                self.slots[at as usize] = Some(value);
                at
            }
            None => {
                let at = u32::try_from(self.slots.len()).expect("fewer than 2^32 entries");
                self.slots.push(Some(value));
                at
            }
        }
    }

    /// Takes the entry at `at` out (it must be full).
    pub(super) fn remove(&mut self, at: u32) -> T {
        let value = self.slots[at as usize].take().expect("a full slot");
        self.len -= 1;
        self.free.push(at);
        // Give back trailing holes.
        while self.slots.last().is_some_and(Option::is_none) {
            let end = (self.slots.len() - 1) as u32;
            self.slots.pop();
            let i = self
                .free
                .iter()
                .rposition(|&f| f == end)
                .expect("a hole is listed");
            self.free.swap_remove(i);
        }
        if self.slots.capacity() > 64 && self.slots.len() * 4 < self.slots.capacity() {
            self.slots.shrink_to(self.slots.len() * 2);
        }
        value
    }

    #[inline]
    pub(super) fn get(&self, at: u32) -> Option<&T> {
        self.slots.get(at as usize).and_then(Option::as_ref)
    }

    #[inline]
    pub(super) fn get_mut(&mut self, at: u32) -> Option<&mut T> {
        self.slots.get_mut(at as usize).and_then(Option::as_mut)
    }

    /// The full slots with their positions.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| slot.as_ref().map(|v| (i as u32, v)))
    }

    pub(super) fn check_invariants(&self) {
        let holes: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].is_none())
            .collect();
        let mut free = self.free.clone();
        free.sort_unstable();
        assert_eq!(free, holes, "the free list is exactly the holes");
        assert_eq!(self.len, self.slots.len() - holes.len(), "live count");
        assert!(
            self.slots.last().is_none_or(Option::is_some),
            "no trailing hole"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_stable_and_holes_are_reused() {
        let mut slab = Slab::new();
        let a = slab.insert('a');
        let b = slab.insert('b');
        let c = slab.insert('c');
        assert_eq!(slab.remove(b), 'b');
        slab.check_invariants();
        assert_eq!(slab.get(a), Some(&'a'));
        assert_eq!(slab.get(c), Some(&'c'));
        assert_eq!(slab.insert('d'), b, "the hole is reused");
        assert_eq!(slab.remove(c), 'c');
        assert_eq!(slab.span(), 2, "a trailing hole is given back");
        slab.check_invariants();
        assert_eq!(slab.iter().map(|(_, v)| *v).collect::<String>(), "ad");
    }
}
