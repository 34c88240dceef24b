//! The set of watchers registered on one exact key or one prefix.
//!
//! Most keys have one watcher, so a [`WatcherList`] keeps a single watcher inline (no
//! allocation, no pointer to chase on dispatch) and switches to a persistent map from id to
//! watcher from the second on, so that adding or removing one of a million watchers on the
//! same key copies O(log₃₂ n) small nodes instead of the whole list. Ids are mixed before use
//! as hashes: ids handed out in strides (one key in every 32 registrations) would otherwise
//! share their low bits and build needlessly deep paths.
//!
//! # Invariants
//! - `Many` holds at least two watchers (one is `One`, none is `Empty`).
//! - Every id appears at most once.
//! - The underlying [`Hamt`]'s invariants hold.
//!
//! # Complexity (n watchers on the list)
//! | operation | cost |
//! |---|---|
//! | `insert` / `remove` | O(1) up to two watchers; O(32 · log₃₂ n) when shared with a snapshot |
//! | `for_each` | O(n) |

use super::hamt::{Hamt, HamtEntry};
use super::WatcherEntry;

/// Watchers of one key or prefix, keyed by id.
#[derive(Default)]
pub(crate) enum WatcherList<W> {
    #[default]
    Empty,
    One(W),
    Many(Hamt<ById<W>>),
}

/// Adapts a watcher to the HAMT: its key is its id, its hash a bijective mix of the id.
#[derive(Clone)]
pub(crate) struct ById<W>(W);

impl<W: WatcherEntry> HamtEntry for ById<W> {
    type Key = u64;
    #[inline]
    fn key(&self) -> &u64 {
        self.0.id_ref()
    }
    #[inline]
    fn hash(&self) -> u64 {
        mix_id(self.0.id())
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

impl<W: Clone> Clone for WatcherList<W> {
    fn clone(&self) -> Self {
        match self {
            WatcherList::Empty => WatcherList::Empty,
            WatcherList::One(w) => WatcherList::One(w.clone()),
            WatcherList::Many(map) => WatcherList::Many(map.clone()),
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
            WatcherList::Many(map) => map.len(),
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
            WatcherList::One(existing) => {
                let mut map = Hamt::default();
                map.insert(ById(existing.clone()));
                map.insert(ById(watcher));
                *self = WatcherList::Many(map);
                None
            }
            WatcherList::Many(map) => map.insert(ById(watcher)).map(|w| w.0),
        }
    }

    /// Removes the watcher with this id.
    pub(crate) fn remove(&mut self, id: u64) -> Option<W> {
        match self {
            WatcherList::One(w) if w.id() == id => match std::mem::take(self) {
                WatcherList::One(w) => Some(w),
                _ => unreachable!("matched One above"),
            },
            WatcherList::Many(map) => {
                let removed = map.remove(mix_id(id), &id)?.0;
                if map.len() == 1 {
                    let last = map.first().expect("one left").0.clone();
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
            WatcherList::Many(map) => map.get(mix_id(id), &id).map(|w| &w.0),
            _ => None,
        }
    }

    /// Calls `f` on every watcher.
    #[inline]
    pub(crate) fn for_each<F: FnMut(&W)>(&self, f: &mut F) {
        match self {
            WatcherList::Empty => {}
            WatcherList::One(w) => f(w),
            WatcherList::Many(map) => map.for_each(&mut |w: &ById<W>| f(&w.0)),
        }
    }

    /// Panics if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        if let WatcherList::Many(map) = self {
            assert!(
                map.len() >= 2,
                "a list of fewer than two watchers is not `Many`"
            );
            map.check_invariants();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct W(u64);
    impl WatcherEntry for W {
        fn id_ref(&self) -> &u64 {
            &self.0
        }
    }

    #[test]
    fn strided_ids_stay_shallow_and_removable() {
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
