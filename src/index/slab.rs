//! [`Slab`]: entries at stable positions, with holes reused last-freed first.
//!
//! The range and pattern indexes point at their entries by position, and a sweep walks
//! them by position: nothing moves while present, so a sweep that resumes on the other twin
//! (same operations, same positions) visits every entry present throughout exactly once.
//! Holes are reused, never compacted; the trailing ones are given back. A hole records
//! where it sits in the free list, so giving one back takes it off the list in O(1) (a
//! search of the list per hole made emptying a slab from the front quadratic).
//!
//! # Invariants (checked by [`Slab::check_invariants`])
//! - `free` holds exactly the empty positions below `slots.len()`, each once, and each
//!   hole names its own index in `free`.
//! - The last slot, if any, is full.
//!
//! # Complexity
//! | operation | cost |
//! |---|---|
//! | insert, get | O(1) (amortised for a push) |
//! | remove | O(1) + O(1) per trailing hole given back (each hole is given back once) |

/// One position: an entry, or a hole and its index in the free list.
#[derive(Clone)]
enum Slot<T> {
    Full(T),
    Hole(u32),
}

/// A vector of optional entries with a free list.
pub(super) struct Slab<T> {
    slots: Vec<Slot<T>>,
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
                self.slots[at as usize] = Slot::Full(value);
                at
            }
            None => {
                let at = u32::try_from(self.slots.len()).expect("fewer than 2^32 entries");
                self.slots.push(Slot::Full(value));
                at
            }
        }
    }

    /// Takes the entry at `at` out (it must be full).
    pub(super) fn remove(&mut self, at: u32) -> T {
        let hole = Slot::Hole(u32::try_from(self.free.len()).expect("fewer than 2^32 holes"));
        let Slot::Full(value) = std::mem::replace(&mut self.slots[at as usize], hole) else {
            panic!("removing from a hole");
        };
        self.len -= 1;
        self.free.push(at);
        // Give back trailing holes, each taken off the free list where it says it is.
        while let Some(&Slot::Hole(index)) = self.slots.last() {
            self.slots.pop();
            self.free.swap_remove(index as usize);
            if let Some(&moved) = self.free.get(index as usize) {
                self.slots[moved as usize] = Slot::Hole(index);
            }
        }
        if self.slots.capacity() > 64 && self.slots.len() * 4 < self.slots.capacity() {
            self.slots.shrink_to(self.slots.len() * 2);
        }
        value
    }

    #[inline]
    pub(super) fn get(&self, at: u32) -> Option<&T> {
        match self.slots.get(at as usize) {
            Some(Slot::Full(value)) => Some(value),
            _ => None,
        }
    }

    #[inline]
    pub(super) fn get_mut(&mut self, at: u32) -> Option<&mut T> {
        match self.slots.get_mut(at as usize) {
            Some(Slot::Full(value)) => Some(value),
            _ => None,
        }
    }

    /// The full slots with their positions.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                Slot::Full(value) => Some((i as u32, value)),
                Slot::Hole(_) => None,
            })
    }

    pub(super) fn check_invariants(&self) {
        let mut holes = 0;
        for (at, slot) in self.slots.iter().enumerate() {
            if let Slot::Hole(index) = slot {
                holes += 1;
                assert_eq!(
                    self.free.get(*index as usize),
                    Some(&(at as u32)),
                    "a hole names its place in the free list"
                );
            }
        }
        // Every listed position is a hole naming its own index, so none is listed twice.
        assert_eq!(self.free.len(), holes, "the free list is exactly the holes");
        assert_eq!(self.len, self.slots.len() - holes, "live count");
        assert!(
            self.slots
                .last()
                .is_none_or(|slot| matches!(slot, Slot::Full(_))),
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

    #[test]
    fn emptying_from_the_front_gives_every_trailing_hole_back() {
        // Holes from the front up, then the last entry: it gives back every hole at once
        // (each used to be searched for in the free list: quadratic).
        let n = 50_000u32;
        let mut slab = Slab::new();
        for i in 0..n {
            assert_eq!(slab.insert(i), i);
        }
        for at in (0..n - 1).rev() {
            assert_eq!(slab.remove(at), at);
        }
        slab.check_invariants();
        assert_eq!(slab.span(), n as usize);
        assert_eq!(slab.remove(n - 1), n - 1);
        slab.check_invariants();
        assert_eq!((slab.span(), slab.len()), (0, 0));
        assert_eq!(slab.insert(7), 0, "an empty slab starts again at 0");
    }

    #[test]
    fn holes_reused_after_trailing_ones_went_back_keep_the_list_exact() {
        let mut slab = Slab::new();
        let at: Vec<u32> = (0..10).map(|i| slab.insert(i)).collect();
        for &i in &[1, 3, 8, 9, 5] {
            slab.remove(at[i]);
            slab.check_invariants();
        }
        // 8 and 9 went back; 1, 3 and 5 are holes, reused last-freed first.
        assert_eq!(slab.span(), 8);
        assert_eq!(slab.insert(50), 5);
        assert_eq!(slab.insert(30), 3);
        slab.remove(7);
        slab.remove(6);
        slab.check_invariants();
        assert_eq!(slab.span(), 6, "7 and 6 went back, then 5 held 50");
        assert_eq!(slab.insert(10), 1);
        assert_eq!(slab.insert(60), 6);
        slab.check_invariants();
        let live: Vec<(u32, u32)> = slab.iter().map(|(i, &v)| (i, v)).collect();
        assert_eq!(
            live,
            vec![(0, 0), (1, 10), (2, 2), (3, 30), (4, 4), (5, 50), (6, 60)]
        );
    }
}
