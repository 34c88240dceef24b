//! The private engine: immutable snapshots of every registered watcher.
//!
//! A [`Snapshot`] pairs an [`ExactIndex`] (key → watchers, a flat hash map) with a
//! [`PrefixTrie`] (prefix → watchers, a persistent radix trie). A snapshot is changed in place
//! only while nobody else can see it: the registry keeps two and lets readers see one at a
//! time (see `registry::Writer`). Nothing here knows about tokio, channels
//! or threads: a watcher is any cloneable value with an id ([`WatcherEntry`]).

mod exact;
mod hamt;
mod key;
mod trie;
mod watchers;

pub(crate) use watchers::WatcherList;

use std::iter;
use std::mem;
use std::sync::Arc;

use exact::ExactIndex;
use trie::PrefixTrie;

/// What the index stores per watcher: anything cloneable that carries a unique id.
pub(crate) trait WatcherEntry: Clone {
    /// The watcher's id, by reference (it is the key of its [`WatcherList`]).
    fn id_ref(&self) -> &u64;
    /// The watcher's id.
    #[inline]
    fn id(&self) -> u64 {
        *self.id_ref()
    }
}

/// An element that can stand in an array's spare capacity.
pub(crate) trait Vacancy: Clone {
    /// The filler of spare capacity: cheap, allocation-free.
    fn vacant() -> Self;
    /// True for a filler.
    fn is_vacant(&self) -> bool;
}

/// Capacity for `live` elements: the next power of two, so that growth reallocates rarely.
fn capacity_for(live: usize) -> usize {
    live.max(1).next_power_of_two()
}

/// Inserts `insert` at `pos`, or removes and returns the element at `pos` when `insert` is
/// `None`, in an array whose first `live` elements are live and the rest vacant fillers.
///
/// An array private to this writer is changed in place while it has room (a shift, no
/// allocation), grown to the next power of two when full and shrunk when a quarter full,
/// moving its elements. An array still shared with a snapshot is copied, cloning them.
pub(crate) fn splice<T: Vacancy>(
    array: &mut Arc<[T]>,
    live: usize,
    pos: usize,
    insert: Option<T>,
) -> Option<T> {
    let new_live = if insert.is_some() { live + 1 } else { live - 1 };
    let take = |item: &mut T| mem::replace(item, T::vacant());
    if let Some(items) = Arc::get_mut(array) {
        let cap = items.len();
        let fits = new_live <= cap && (new_live > cap / 4 || cap <= 4);
        if fits {
            return match insert {
                Some(item) => {
                    items[pos..=live].rotate_right(1);
                    items[pos] = item;
                    None
                }
                None => {
                    let removed = take(&mut items[pos]);
                    items[pos..live].rotate_left(1);
                    Some(removed)
                }
            };
        }
        let skip = usize::from(insert.is_none());
        let (head, tail) = items.split_at_mut(pos);
        let removed = (skip == 1).then(|| take(&mut tail[0]));
        let rebuilt: Arc<[T]> = head
            .iter_mut()
            .map(take)
            .chain(insert)
            .chain(tail[skip..live - pos].iter_mut().map(take))
            .chain(iter::repeat_with(T::vacant).take(capacity_for(new_live) - new_live))
            .collect();
        *array = rebuilt;
        return removed;
    }
    let skip = usize::from(insert.is_none());
    let removed = (skip == 1).then(|| array[pos].clone());
    let rebuilt: Arc<[T]> = array[..pos]
        .iter()
        .cloned()
        .chain(insert)
        .chain(array[pos + skip..live].iter().cloned())
        .chain(iter::repeat_with(T::vacant).take(capacity_for(new_live) - new_live))
        .collect();
    *array = rebuilt;
    removed
}

/// A fresh array holding `items` (in order), with spare capacity.
pub(crate) fn array_of<T: Vacancy>(items: impl ExactSizeIterator<Item = T>) -> Arc<[T]> {
    let live = items.len();
    items
        .chain(iter::repeat_with(T::vacant).take(capacity_for(live) - live))
        .collect()
}

/// Panics unless `array` has a power-of-two length, `live` live elements, then fillers.
pub(crate) fn check_array<T: Vacancy>(array: &[T], live: usize) {
    assert!(
        array.len().is_power_of_two(),
        "array capacity is a power of two"
    );
    assert!(array.len() >= live, "more live elements than capacity");
    assert!(
        array[..live].iter().all(|x| !x.is_vacant()),
        "a filler among live elements"
    );
    assert!(
        array[live..].iter().all(Vacancy::is_vacant),
        "a live element past the end"
    );
}

/// Where a matched watcher list was found, so that a watcher found dead can be removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatchKind {
    /// The exact watchers of the event's key.
    Exact,
    /// The prefix watchers of `key[..len]`.
    Prefix {
        /// Length of the prefix within the event's key.
        len: usize,
    },
}

/// One view of all watchers. Cloning copies the exact index (O(k)) and shares the trie.
pub(crate) struct Snapshot<W> {
    exact: ExactIndex<W>,
    prefixes: PrefixTrie<W>,
}

impl<W: Clone> Clone for Snapshot<W> {
    fn clone(&self) -> Self {
        Self {
            exact: self.exact.clone(),
            prefixes: self.prefixes.clone(),
        }
    }
}

impl<W: WatcherEntry> Default for Snapshot<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: WatcherEntry> Snapshot<W> {
    /// An empty snapshot.
    pub(crate) fn new() -> Self {
        Self {
            exact: ExactIndex::new(),
            prefixes: PrefixTrie::new(),
        }
    }

    /// Calls `f` with every watcher list matching an event on `key`: the exact watchers of
    /// `key` first, then the prefix watchers of each leading part of `key`, shortest first.
    /// One probe for the key, one per segment; no allocation.
    ///
    /// The exact list is looked up first but handed to `f` only when the trie walk reports
    /// its first match (or ends): the walk's probes do not wait for the exact probe's cache
    /// miss, so the two overlap.
    #[inline]
    pub(crate) fn for_each_match<F: FnMut(MatchKind, &WatcherList<W>)>(
        &self,
        key: &[u8],
        f: &mut F,
    ) {
        let mut exact = match self.exact.key_count() {
            0 => None,
            _ => self.exact.get(key),
        };
        if self.prefixes.watcher_count() != 0 {
            self.prefixes.for_each_match(key, &mut |len, list| {
                if let Some(exact) = exact.take() {
                    f(MatchKind::Exact, exact);
                }
                f(MatchKind::Prefix { len }, list);
            });
        }
        if let Some(exact) = exact {
            f(MatchKind::Exact, exact);
        }
    }

    /// Calls `f(key, is_prefix, watchers)` for every watched key, exact keys first.
    pub(crate) fn for_each_list<F: FnMut(&[u8], bool, &WatcherList<W>)>(&self, f: &mut F) {
        self.exact
            .for_each_list(&mut |key, list| f(key, false, list));
        self.prefixes
            .for_each_list(&mut |key, list| f(key, true, list));
    }

    /// Adds an exact watcher on `key`.
    pub(crate) fn insert_exact(&mut self, key: bytes::Bytes, watcher: W) {
        self.exact.insert(key, watcher);
    }

    /// Adds a prefix watcher on `prefix`.
    pub(crate) fn insert_prefix(&mut self, prefix: bytes::Bytes, watcher: W) {
        self.prefixes.insert(prefix, watcher);
    }

    /// Removes watcher `id` from the exact watchers of `key`.
    pub(crate) fn remove_exact(&mut self, key: &[u8], id: u64) -> Option<W> {
        self.exact.remove(key, id)
    }

    /// Removes watcher `id` from the prefix watchers of `prefix`.
    pub(crate) fn remove_prefix(&mut self, prefix: &[u8], id: u64) -> Option<W> {
        self.prefixes.remove(prefix, id)
    }

    /// Number of exact watchers on `key`.
    pub(crate) fn exact_watchers_of(&self, key: &[u8]) -> usize {
        self.exact.get(key).map_or(0, WatcherList::len)
    }

    /// Number of prefix watchers on exactly `prefix`.
    pub(crate) fn prefix_watchers_of(&self, prefix: &[u8]) -> usize {
        self.prefixes.get(prefix).map_or(0, WatcherList::len)
    }

    /// Number of distinct keys with exact watchers.
    pub(crate) fn exact_key_count(&self) -> usize {
        self.exact.key_count()
    }

    /// Number of distinct prefixes with watchers.
    pub(crate) fn prefix_count(&self) -> usize {
        self.prefixes.prefix_count()
    }

    /// Number of watchers, exact and prefix.
    pub(crate) fn watcher_count(&self) -> usize {
        self.exact.watcher_count() + self.prefixes.watcher_count()
    }

    /// Panics if an invariant of either index is broken.
    pub(crate) fn check_invariants(&self) {
        self.exact.check_invariants();
        self.prefixes.check_invariants();
    }
}
