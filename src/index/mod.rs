//! The private engine: immutable snapshots of every registered watcher.
//!
//! A [`Snapshot`] pairs an [`ExactIndex`] (key → watchers) with a [`PrefixTrie`]
//! (prefix → watchers). Both are persistent: a write copies only the nodes on the path it
//! touches and shares the rest with the snapshot it started from, so older snapshots stay
//! valid, unchanged, for readers still holding them. Nothing here knows about tokio, channels
//! or threads: a watcher is any cloneable value with an id ([`WatcherEntry`]).

mod exact;
mod hamt;
mod trie;
mod watchers;

pub(crate) use watchers::WatcherList;

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

/// Rebuilds `array` with `insert` placed at `pos`, or without the element at `pos` when
/// `insert` is `None` (that element is returned). Elements are moved out with `vacate` when
/// the array is private to this writer, cloned when a snapshot still shares it; either way
/// the new array is allocated once, at its exact size.
pub(crate) fn splice<T: Clone>(
    array: &mut Arc<[T]>,
    pos: usize,
    insert: Option<T>,
    vacate: impl Fn(&mut T) -> T,
) -> Option<T> {
    let skip = usize::from(insert.is_none());
    let (rebuilt, removed): (Arc<[T]>, Option<T>) = match Arc::get_mut(array) {
        Some(items) => {
            let (head, tail) = items.split_at_mut(pos);
            let removed = (skip == 1).then(|| vacate(&mut tail[0]));
            let moved = head.iter_mut().map(&vacate);
            let rest = tail[skip..].iter_mut().map(&vacate);
            (moved.chain(insert).chain(rest).collect(), removed)
        }
        None => {
            let removed = (skip == 1).then(|| array[pos].clone());
            let kept = array[..pos].iter().cloned();
            let rest = array[pos + skip..].iter().cloned();
            (kept.chain(insert).chain(rest).collect(), removed)
        }
    };
    *array = rebuilt;
    removed
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

/// One immutable view of all watchers. Cloning is O(1).
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
    /// One hash of `key` and one walk over its bytes; no allocation.
    #[inline]
    pub(crate) fn for_each_match<F: FnMut(MatchKind, &WatcherList<W>)>(
        &self,
        key: &[u8],
        f: &mut F,
    ) {
        if self.exact.key_count() != 0 {
            let hash = self.exact.hash_key(key);
            if let Some(list) = self.exact.get(hash, key) {
                f(MatchKind::Exact, list);
            }
        }
        if self.prefixes.watcher_count() != 0 {
            self.prefixes
                .for_each_match(key, &mut |len, list| f(MatchKind::Prefix { len }, list));
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
    pub(crate) fn insert_prefix(&mut self, prefix: &[u8], watcher: W) {
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
        let hash = self.exact.hash_key(key);
        self.exact.get(hash, key).map_or(0, WatcherList::len)
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
