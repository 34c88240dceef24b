//! Exact-key watchers: a persistent map from key bytes to the [`WatcherList`] of that key.
//!
//! Keys are hashed once with `ahash` (a seeded, DoS-resistant hash that is much cheaper than
//! SipHash on short keys); the hash is stored beside the key so that path copies and splits
//! never hash again. Keys of up to [`INLINE_KEY`] bytes are stored inline in the entry: a
//! lookup compares them without following a pointer, and a path copy clones them without
//! touching a reference count.
//!
//! # Invariants
//! - No entry has an empty watcher list (the entry is removed with its last watcher).
//! - Each entry's stored hash is the hash of its key under this index's hasher.
//! - `watchers` is the sum of all list lengths.
//!
//! # Complexity (k keys, m watchers on the touched key)
//! | operation | cost |
//! |---|---|
//! | `insert` / `remove` | O(|key|) to hash + O(32 · log₃₂ k) + O(32 · log₃₂ m) copies |
//! | `get` | O(|key|) + O(log₃₂ k) |

use bytes::Bytes;

use super::hamt::{Hamt, HamtEntry};
use super::watchers::WatcherList;
use super::WatcherEntry;

/// Longest key stored inline in an entry.
const INLINE_KEY: usize = 30;

/// A key's bytes: inline when short, a shared `Bytes` otherwise.
#[derive(Clone)]
enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Shared(Bytes),
}

impl KeyBytes {
    fn new(key: Bytes) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(&key);
            KeyBytes::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            KeyBytes::Shared(key)
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            KeyBytes::Shared(b) => b,
        }
    }
}

/// Exact-key watcher index.
pub(crate) struct ExactIndex<W> {
    map: Hamt<ExactEntry<W>>,
    hasher: ahash::RandomState,
    watchers: usize,
}

struct ExactEntry<W> {
    hash: u64,
    key: KeyBytes,
    watchers: WatcherList<W>,
}

impl<W: Clone> Clone for ExactEntry<W> {
    fn clone(&self) -> Self {
        Self {
            hash: self.hash,
            key: self.key.clone(),
            watchers: self.watchers.clone(),
        }
    }
}

impl<W: Clone> HamtEntry for ExactEntry<W> {
    type Key = [u8];
    #[inline]
    fn key(&self) -> &[u8] {
        self.key.as_slice()
    }
    #[inline]
    fn hash(&self) -> u64 {
        self.hash
    }
}

impl<W: Clone> Clone for ExactIndex<W> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            hasher: self.hasher.clone(),
            watchers: self.watchers,
        }
    }
}

impl<W: WatcherEntry> ExactIndex<W> {
    /// An empty index with a randomly seeded hasher.
    pub(crate) fn new() -> Self {
        Self {
            map: Hamt::default(),
            hasher: ahash::RandomState::new(),
            watchers: 0,
        }
    }

    /// The hash under which `key` is stored.
    #[inline]
    pub(crate) fn hash_key(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Number of distinct watched keys.
    pub(crate) fn key_count(&self) -> usize {
        self.map.len()
    }

    /// Number of watchers over all keys.
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers
    }

    /// The watchers of `key`; `hash` must come from [`Self::hash_key`].
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<&WatcherList<W>> {
        self.map.get(hash, key).map(|e| &e.watchers)
    }

    /// Adds a watcher on `key`.
    pub(crate) fn insert(&mut self, key: Bytes, watcher: W) {
        let hash = self.hash_key(&key);
        let watcher = std::cell::Cell::new(Some(watcher));
        self.map.upsert(
            hash,
            &key[..],
            |entry| {
                entry.watchers.insert(watcher.take().expect("used once"));
            },
            || ExactEntry {
                hash,
                key: KeyBytes::new(key.clone()),
                watchers: WatcherList::One(watcher.take().expect("used once")),
            },
        );
        self.watchers += 1;
    }

    /// Removes the watcher `id` from `key`, dropping the key with its last watcher.
    pub(crate) fn remove(&mut self, key: &[u8], id: u64) -> Option<W> {
        let hash = self.hash_key(key);
        // Look before writing so that a miss copies nothing.
        self.map.get(hash, key)?.watchers.get(id)?;
        let (removed, now_empty) = self.map.update(hash, key, |entry| {
            (entry.watchers.remove(id), entry.watchers.is_empty())
        })?;
        let removed = removed?;
        if now_empty {
            self.map.remove(hash, key);
        }
        self.watchers -= 1;
        Some(removed)
    }

    /// Calls `f` with every key and its watchers.
    pub(crate) fn for_each_list<F: FnMut(&[u8], &WatcherList<W>)>(&self, f: &mut F) {
        self.map
            .for_each(&mut |e: &ExactEntry<W>| f(e.key.as_slice(), &e.watchers));
    }

    /// Panics if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        self.map.check_invariants();
        let mut total = 0;
        self.map.for_each(&mut |e: &ExactEntry<W>| {
            assert!(
                !e.watchers.is_empty(),
                "a key without watchers must be removed"
            );
            assert_eq!(
                e.hash,
                self.hash_key(e.key.as_slice()),
                "stored hash is stale"
            );
            assert_eq!(
                matches!(e.key, KeyBytes::Inline { .. }),
                e.key.as_slice().len() <= INLINE_KEY,
                "short keys are inline, long ones shared"
            );
            e.watchers.check_invariants();
            total += e.watchers.len();
        });
        assert_eq!(total, self.watchers, "watcher total out of step");
    }
}
