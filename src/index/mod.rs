//! The private engine: immutable snapshots of every registered watcher.
//!
//! A [`Snapshot`] pairs an [`ExactIndex`] (key → watchers, a flat hash map) with a
//! [`PrefixTrie`] (prefix → watchers, a persistent radix trie). A snapshot is changed in place
//! only while nobody else can see it: the registry keeps two and lets readers see one at a
//! time (see `registry::Writer`). Nothing here knows about tokio, channels
//! or threads: a watcher is any cloneable value with an id ([`WatcherEntry`]).

mod exact;
mod key;
mod trie;
mod watchers;

pub(crate) use watchers::WatcherList;

use exact::ExactIndex;
use trie::PrefixTrie;

/// What the index stores per watcher: anything cloneable that carries a unique id.
pub(crate) trait WatcherEntry: Clone {
    /// The watcher's id.
    fn id(&self) -> u64;
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
