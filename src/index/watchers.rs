//! The set of watchers registered on one exact key or one prefix.
//!
//! Most keys have one watcher, so a [`WatcherList`] keeps a single watcher inline (no
//! allocation, no pointer to chase on dispatch). From the second on, the watchers live in a
//! vector, in registration order except where a removal moved the last one into the gap,
//! with a hash table from id to position beside it: delivery walks the vector front to back
//! (watchers and their channels were allocated in about that order, so the walk is mostly
//! sequential in memory), and adding or removing one of a million watchers on the same key
//! is O(1). Ids are mixed (SplitMix64) before hashing: ids handed out in strides would
//! otherwise share their low bits.
//!
//! # Invariants
//! - `Many` holds at least two watchers (one is `One`, none is `Empty`).
//! - Every id appears at most once.
//! - The position table maps each watcher's id to its index in the vector, and nothing else.
//!
//! # Complexity (n watchers on the list)
//! | operation | cost |
//! |---|---|
//! | `insert` / `remove` / `get` | O(1) expected (amortised: the vector and table double and halve) |
//! | `for_each` | O(n), in vector order |

use hashbrown::HashTable;

use super::WatcherEntry;

/// Watchers of one key or prefix, keyed by id.
#[derive(Default)]
pub(crate) enum WatcherList<W> {
    #[default]
    Empty,
    One(W),
    Many(Box<Many<W>>),
}

/// Two or more watchers: a vector, and the position of each id in it.
pub(crate) struct Many<W> {
    items: Vec<W>,
    positions: HashTable<u32>,
}

impl<W: Clone> Clone for Many<W> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
            positions: self.positions.clone(),
        }
    }
}

/// SplitMix64's finaliser: a bijection on u64, so distinct ids never collide.
#[inline]
fn mix_id(id: u64) -> u64 {
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<W: WatcherEntry> Many<W> {
    fn of(first: W, second: W) -> Self {
        let mut many = Self {
            items: Vec::with_capacity(2),
            positions: HashTable::with_capacity(2),
        };
        many.push(first);
        many.push(second);
        many
    }

    fn position(&self, id: u64) -> Option<usize> {
        let items = &self.items;
        self.positions
            .find(mix_id(id), |&i| items[i as usize].id() == id)
            .map(|&i| i as usize)
    }

    /// Appends a watcher whose id is not on the list.
    fn push(&mut self, watcher: W) {
        let index = u32::try_from(self.items.len()).expect("fewer than 2^32 watchers on a key");
        let items = &self.items;
        self.positions
            .insert_unique(mix_id(watcher.id()), index, |&i| {
                mix_id(items[i as usize].id())
            });
        self.items.push(watcher);
    }

    /// Removes the watcher at `index`; the last one takes its place.
    fn swap_remove(&mut self, index: usize) -> W {
        let id = self.items[index].id();
        let items = &self.items;
        if let Ok(entry) = self
            .positions
            .find_entry(mix_id(id), |&i| items[i as usize].id() == id)
        {
            entry.remove();
        }
        let removed = self.items.swap_remove(index);
        if let Some(moved) = self.items.get(index) {
            // The watcher that was last now sits at `index`; its entry still says `last`.
            let last = self.items.len() as u32;
            if let Some(slot) = self.positions.find_mut(mix_id(moved.id()), |&i| i == last) {
                *slot = index as u32;
            }
        }
        self.shrink_if_sparse();
        removed
    }

    /// Gives memory back once less than a quarter of the capacity is used.
    fn shrink_if_sparse(&mut self) {
        let len = self.items.len();
        if self.items.capacity() > 64 && len * 4 < self.items.capacity() {
            self.items.shrink_to(len * 2);
            let items = &self.items;
            self.positions
                .shrink_to(len * 2, |&i| mix_id(items[i as usize].id()));
        }
    }
}

impl<W: Clone> Clone for WatcherList<W> {
    fn clone(&self) -> Self {
        match self {
            WatcherList::Empty => WatcherList::Empty,
            WatcherList::One(w) => WatcherList::One(w.clone()),
            WatcherList::Many(many) => WatcherList::Many(many.clone()),
        }
    }
}

impl<W: WatcherEntry> WatcherList<W> {
    /// Number of watchers.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            WatcherList::Empty => 0,
            WatcherList::One(_) => 1,
            WatcherList::Many(many) => many.items.len(),
        }
    }

    /// True when no watcher is on the list.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, WatcherList::Empty)
    }

    /// Adds a watcher; an existing watcher with the same id is replaced and returned.
    pub(crate) fn insert(&mut self, watcher: W) -> Option<W> {
        match self {
            WatcherList::Empty => {
                *self = WatcherList::One(watcher);
                None
            }
            WatcherList::One(existing) if existing.id() == watcher.id() => {
                Some(std::mem::replace(existing, watcher))
            }
            WatcherList::One(_) => {
                let WatcherList::One(first) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                *self = WatcherList::Many(Box::new(Many::of(first, watcher)));
                None
            }
            WatcherList::Many(many) => match many.position(watcher.id()) {
                Some(i) => Some(std::mem::replace(&mut many.items[i], watcher)),
                None => {
                    many.push(watcher);
                    None
                }
            },
        }
    }

    /// Removes the watcher with this id.
    pub(crate) fn remove(&mut self, id: u64) -> Option<W> {
        match self {
            WatcherList::One(w) if w.id() == id => match std::mem::take(self) {
                WatcherList::One(w) => Some(w),
                _ => unreachable!("matched One above"),
            },
            WatcherList::Many(many) => {
                let index = many.position(id)?;
                let removed = many.swap_remove(index);
                if many.items.len() == 1 {
                    let last = many.items.pop().expect("one left");
                    *self = WatcherList::One(last);
                }
                Some(removed)
            }
            _ => None,
        }
    }

    /// The watcher with this id.
    pub(crate) fn get(&self, id: u64) -> Option<&W> {
        match self {
            WatcherList::One(w) if w.id() == id => Some(w),
            WatcherList::Many(many) => many.position(id).map(|i| &many.items[i]),
            _ => None,
        }
    }

    /// Calls `f` on every watcher, in list order.
    #[inline]
    pub(crate) fn for_each<F: FnMut(&W)>(&self, f: &mut F) {
        match self {
            WatcherList::Empty => {}
            WatcherList::One(w) => f(w),
            WatcherList::Many(many) => many.items.iter().for_each(f),
        }
    }

    /// Panics if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        if let WatcherList::Many(many) = self {
            assert!(
                many.items.len() >= 2,
                "a list of fewer than two watchers is not `Many`"
            );
            assert_eq!(
                many.positions.len(),
                many.items.len(),
                "one position per watcher"
            );
            for (i, w) in many.items.iter().enumerate() {
                assert_eq!(
                    many.position(w.id()),
                    Some(i),
                    "position of {} is stale",
                    w.id()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct W(u64);
    impl WatcherEntry for W {
        fn id(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn strided_ids_are_added_and_removed_in_constant_time() {
        let mut list = WatcherList::default();
        for i in 0..10_000u64 {
            list.insert(W(i * 1024 + 1));
        }
        list.check_invariants();
        assert_eq!(list.len(), 10_000);
        for i in (0..10_000u64).step_by(2) {
            assert!(list.remove(i * 1024 + 1).is_some());
        }
        assert!(list.remove(3).is_none());
        list.check_invariants();
        assert_eq!(list.len(), 5_000);
        let mut n = 0;
        list.for_each(&mut |w| {
            assert_eq!((w.0 - 1) / 1024 % 2, 1);
            n += 1;
        });
        assert_eq!(n, 5_000);
    }

    #[test]
    fn lists_shrink_back_to_one_and_empty() {
        let mut list = WatcherList::default();
        list.insert(W(1));
        assert!(matches!(list, WatcherList::One(_)));
        list.insert(W(2));
        list.insert(W(3));
        list.check_invariants();
        assert_eq!(list.remove(2).map(|w| w.0), Some(2));
        assert_eq!(list.remove(1).map(|w| w.0), Some(1));
        assert!(matches!(list, WatcherList::One(W(3))));
        assert!(list.remove(9).is_none());
        assert_eq!(list.remove(3).map(|w| w.0), Some(3));
        assert!(list.is_empty());
        list.check_invariants();
    }

    #[test]
    fn mix_is_injective_on_a_sample() {
        let mut seen = std::collections::HashSet::new();
        for id in 0..100_000u64 {
            assert!(seen.insert(mix_id(id)));
        }
    }
}
