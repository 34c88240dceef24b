//! Byte-prefix watchers, hung on the prefix trie's nodes as *tails*.
//!
//! A byte prefix `P` (any bytes) splits at its last separator into a slash path `S` (up to
//! and including the last `/`, possibly empty) and a tail `T` (the rest, without `/`,
//! possibly empty): `/svc/pay` is `/svc/` + `pay`, `abc` is the root + `abc`. A key `K`
//! starts with `P` exactly when `S` leads `K`'s segments and `T` begins the piece of `K`
//! after `S` (the next segment without its separator, or `K`'s last, unterminated piece).
//! So the trie walk, already at `S`'s node, consults that node's tails: one probe per
//! distinct tail length registered there that fits in the piece. The node's own line holds
//! a mask of its tail lengths under 15 bytes (and a bit for "longer ones too"), so the
//! walk probes short tails without reading the node's length list. With no byte prefix
//! registered the walk never looks here; at a node without tails it reads one field of the
//! node's line.
//!
//! ```text
//!  node "/svc/" (tails: 2) ── lengths [(3, 1), (4, 1)]     key "/svc/payment/x":
//!                             tails  ("pay" → watchers)      piece after "/svc/" is
//!                                    ("paym" → watchers)     "payment": probes "pay", "paym"
//! ```
//!
//! # Invariants (checked by [`Tails::check_invariants`], with the trie's side in the trie's)
//! - Every entry's tail holds no separator, and its pattern's first `at` bytes are the path
//!   of the node it hangs on; entries are unique per (node, tail) and never empty.
//! - A node's length list holds each distinct tail length of its entries once, sorted, with
//!   the number of entries of that length; a node with no entries has no list.
//! - `watchers` and `patterns` count every watcher and entry.
//!
//! # Complexity (L = key length, t = distinct tail lengths at a node the walk reaches)
//! | operation | cost |
//! |---|---|
//! | insert / remove | O(|P|) hashing + O(1) probes + O(t) in the length list |
//! | matches at one node | O(t) probes, each hashing the piece's first bytes up to its tail length: O(Σ of the t lengths), at most O(t · L) and at most the bytes of the tails registered there |

use bytes::Bytes;
use smallvec::{smallvec, SmallVec};

use super::segment::{PathHasher, Segment, SEPARATOR};
use super::table::{Layout, Table};
use super::watchers::WatcherList;
use super::WatcherEntry;

/// The watchers of one byte prefix.
struct Tail<W> {
    /// The table hash: the node's path hash chained with the tail.
    hash: u64,
    /// The node the tail hangs on.
    node: u64,
    summary: Segment,
    /// The whole byte prefix; the tail is `pattern[at..]`.
    pattern: Bytes,
    at: u32,
    watchers: WatcherList<W>,
}

impl<W: Clone> Clone for Tail<W> {
    fn clone(&self) -> Self {
        Self {
            hash: self.hash,
            node: self.node,
            summary: self.summary,
            pattern: self.pattern.clone(),
            at: self.at,
            watchers: self.watchers.clone(),
        }
    }
}

impl<W> Tail<W> {
    fn tail(&self) -> &[u8] {
        &self.pattern[self.at as usize..]
    }
}

/// Tails shorter than this have a bit of their own in a node's length mask.
const SHORT_TAILS: usize = 15;

/// The length mask's bit for tails of [`SHORT_TAILS`] bytes or more.
pub(super) const LONG_TAILS: u16 = 1 << 15;

/// The length mask's bit for a tail of `len` bytes.
fn length_bit(len: usize) -> u16 {
    if len < SHORT_TAILS {
        1 << len
    } else {
        LONG_TAILS
    }
}

/// Distinct tail lengths a node keeps inline before its list spills to the heap.
const INLINE_LENGTHS: usize = 3;

/// The distinct tail lengths at one node, with how many entries have each.
#[derive(Clone)]
struct Lengths {
    /// The node's path hash (the table hash) and id.
    hash: u64,
    node: u64,
    /// `(length, entries)`, sorted by length; inline for a few lengths, so that a walk
    /// reads them on the line it probed.
    lengths: SmallVec<[(u32, u32); INLINE_LENGTHS]>,
}

/// Byte-prefix entries and, per node, the tail lengths a walk probes there.
pub(super) struct Tails<W> {
    entries: Table<Tail<W>>,
    lengths: Table<Lengths>,
    watchers: usize,
    patterns: usize,
}

impl<W: Clone> Clone for Tails<W> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            lengths: self.lengths.clone(),
            watchers: self.watchers,
            patterns: self.patterns,
        }
    }
}

/// Where `pattern` splits: the length of its slash path (just past the last separator).
pub(super) fn split(pattern: &[u8]) -> usize {
    pattern
        .iter()
        .rposition(|&b| b == SEPARATOR)
        .map_or(0, |at| at + 1)
}

impl<W: WatcherEntry> Tails<W> {
    pub(super) fn new() -> Self {
        Self {
            entries: Table::new(),
            lengths: Table::new(),
            watchers: 0,
            patterns: 0,
        }
    }

    pub(super) fn watcher_count(&self) -> usize {
        self.watchers
    }

    pub(super) fn pattern_count(&self) -> usize {
        self.patterns
    }

    fn find(
        &self,
        hasher: &PathHasher,
        (node, node_hash): (u64, u64),
        tail: &[u8],
    ) -> Option<&Tail<W>> {
        let summary = Segment::of(tail);
        let hash = hasher.chain(node_hash, summary, tail);
        self.entries.find(hash, |t| {
            t.node == node && t.summary == summary && (summary.is_exact() || t.tail() == tail)
        })
    }

    /// The watchers of the byte prefix whose tail `tail` hangs on `node`.
    pub(super) fn get(
        &self,
        hasher: &PathHasher,
        node: (u64, u64),
        tail: &[u8],
    ) -> Option<&WatcherList<W>> {
        self.find(hasher, node, tail).map(|t| &t.watchers)
    }

    /// Adds `watcher` on `pattern`, whose tail `pattern[at..]` hangs on `node` (id, path
    /// hash). Returns true if the tail is new at that node.
    pub(super) fn insert(
        &mut self,
        hasher: &PathHasher,
        (node, node_hash): (u64, u64),
        pattern: Bytes,
        at: usize,
        watcher: W,
    ) -> bool {
        let tail = &pattern[at..];
        let summary = Segment::of(tail);
        let hash = hasher.chain(node_hash, summary, tail);
        self.watchers += 1;
        if let Some(entry) = self.entries.find_mut(hash, |t| {
            t.node == node && t.summary == summary && (summary.is_exact() || t.tail() == tail)
        }) {
            entry.watchers.insert(watcher);
            return false;
        }
        let len = tail.len() as u32;
        let mut watchers = WatcherList::Empty;
        watchers.insert(watcher);
        let entry = Tail {
            hash,
            node,
            summary,
            at: at as u32,
            pattern,
            watchers,
        };
        self.entries.insert_unique(hash, entry, |t| t.hash);
        self.patterns += 1;
        match self.lengths.find_mut(node_hash, |l| l.node == node) {
            Some(list) => match list.lengths.binary_search_by_key(&len, |&(l, _)| l) {
                Ok(i) => list.lengths[i].1 += 1,
                Err(i) => list.lengths.insert(i, (len, 1)),
            },
            None => {
                let list = Lengths {
                    hash: node_hash,
                    node,
                    lengths: smallvec![(len, 1)],
                };
                self.lengths.insert_unique(node_hash, list, |l| l.hash);
            }
        }
        true
    }

    /// Removes watcher `id` from the tail `tail` at `node`. Returns it, and whether the
    /// tail left the node with it.
    pub(super) fn remove(
        &mut self,
        hasher: &PathHasher,
        (node, node_hash): (u64, u64),
        tail: &[u8],
        id: u64,
    ) -> Option<(W, bool)> {
        let summary = Segment::of(tail);
        let hash = hasher.chain(node_hash, summary, tail);
        let mut entry = self.entries.find_entry(hash, |t| {
            t.node == node && t.summary == summary && (summary.is_exact() || t.tail() == tail)
        })?;
        let removed = entry.get_mut().watchers.remove(id)?;
        self.watchers -= 1;
        if !entry.get().watchers.is_empty() {
            return Some((removed, false));
        }
        entry.remove();
        self.patterns -= 1;
        let len = tail.len() as u32;
        let mut lengths = self
            .lengths
            .find_entry(node_hash, |l| l.node == node)
            .expect("a node with tails has a length list");
        let list = &mut lengths.get_mut().lengths;
        let i = list
            .binary_search_by_key(&len, |&(l, _)| l)
            .expect("each tail's length is listed");
        list[i].1 -= 1;
        if list[i].1 == 0 {
            list.remove(i);
        }
        if list.is_empty() {
            lengths.remove();
        }
        self.entries.shrink_if_sparse(|t| t.hash);
        self.lengths.shrink_if_sparse(|l| l.hash);
        Some((removed, true))
    }

    /// The summary of `node`'s tail lengths that the trie keeps in the node's own line:
    /// bit `l` for a tail of `l` bytes (`l` < 15), [`LONG_TAILS`] for any longer one.
    pub(super) fn length_mask(&self, (node, node_hash): (u64, u64)) -> u16 {
        self.lengths
            .find(node_hash, |l| l.node == node)
            .map_or(0, |list| {
                list.lengths
                    .iter()
                    .fold(0, |mask, &(len, _)| mask | length_bit(len as usize))
            })
    }

    /// Calls `f(length, watchers)` for each tail at `node` that begins `rest` (the key after
    /// the node's path) without crossing a separator, shortest first. `mask` is the node's [`Self::length_mask`]: short tails are probed from it,
    /// without reading the node's length list; the list is read only for long ones.
    #[inline]
    pub(super) fn for_each_match<F: FnMut(usize, &WatcherList<W>)>(
        &self,
        hasher: &PathHasher,
        (node, node_hash): (u64, u64),
        mask: u16,
        rest: &[u8],
        f: &mut F,
    ) {
        let piece = rest
            .iter()
            .position(|&b| b == SEPARATOR)
            .unwrap_or(rest.len());
        let mut short = mask & !LONG_TAILS;
        while short != 0 {
            let len = short.trailing_zeros() as usize;
            short &= short - 1;
            if len > piece {
                return;
            }
            if let Some(entry) = self.find(hasher, (node, node_hash), &rest[..len]) {
                f(len, &entry.watchers);
            }
        }
        if mask & LONG_TAILS == 0 {
            return;
        }
        let Some(list) = self.lengths.find(node_hash, |l| l.node == node) else {
            return;
        };
        for &(len, _) in &list.lengths {
            let len = len as usize;
            if len < SHORT_TAILS {
                continue;
            }
            if len > piece {
                return;
            }
            if let Some(entry) = self.find(hasher, (node, node_hash), &rest[..len]) {
                f(len, &entry.watchers);
            }
        }
    }

    pub(super) fn layout(&self) -> Layout {
        self.entries.layout()
    }

    pub(super) fn buckets(&self) -> usize {
        self.entries.buckets()
    }

    /// The pattern and watchers of the entry in bucket `index`, if it is full.
    pub(super) fn bucket(&self, index: usize) -> Option<(&[u8], &WatcherList<W>)> {
        self.entries
            .bucket(index)
            .map(|t| (&t.pattern[..], &t.watchers))
    }

    /// Each entry's node and pattern split, for the trie's own checks.
    pub(super) fn nodes(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.entries
            .iter()
            .map(|t| (t.node, &t.pattern[..t.at as usize]))
    }

    /// Panics if an invariant of the tails alone is broken; returns the number of entries
    /// per node, for the trie to compare with its nodes' counts.
    pub(super) fn check_invariants(
        &self,
        hasher: &PathHasher,
    ) -> std::collections::HashMap<u64, u32> {
        use std::collections::{BTreeMap, HashMap};
        let mut per_node: HashMap<u64, BTreeMap<u32, u32>> = HashMap::new();
        let (mut watchers, mut patterns) = (0, 0);
        for entry in self.entries.iter() {
            let tail = entry.tail();
            assert!(!tail.contains(&SEPARATOR), "a tail holds no separator");
            assert_eq!(
                split(&entry.pattern),
                entry.at as usize,
                "a pattern splits at its last separator"
            );
            assert_eq!(entry.summary, Segment::of(tail), "a tail's summary");
            assert!(!entry.watchers.is_empty(), "an empty tail is removed");
            entry.watchers.check_invariants();
            let lengths = self
                .lengths
                .iter()
                .find(|l| l.node == entry.node)
                .expect("a node with tails has a length list");
            assert_eq!(
                self.find(hasher, (entry.node, lengths.hash), tail)
                    .map(|t| t.pattern.clone()),
                Some(entry.pattern.clone()),
                "an entry is found under its own key"
            );
            assert_eq!(
                entry.hash,
                hasher.chain(lengths.hash, entry.summary, tail),
                "an entry's hash chains its node's"
            );
            *per_node
                .entry(entry.node)
                .or_default()
                .entry(tail.len() as u32)
                .or_default() += 1;
            watchers += entry.watchers.len();
            patterns += 1;
        }
        assert_eq!(
            self.lengths.len(),
            per_node.len(),
            "one length list per node with tails"
        );
        for list in self.lengths.iter() {
            let want: Vec<(u32, u32)> = per_node
                .get(&list.node)
                .map(|m| m.iter().map(|(&l, &n)| (l, n)).collect())
                .unwrap_or_default();
            assert_eq!(
                list.lengths.as_slice(),
                want.as_slice(),
                "a node's tail lengths, sorted and counted"
            );
        }
        assert_eq!(watchers, self.watchers, "tail watcher count out of step");
        assert_eq!(patterns, self.patterns, "byte prefix count out of step");
        per_node
            .into_iter()
            .map(|(node, m)| (node, m.values().sum()))
            .collect()
    }

    /// The bucket placement of every entry, to compare twins.
    pub(super) fn placement(&self) -> Vec<Option<Vec<u8>>> {
        (0..self.entries.buckets())
            .map(|i| self.entries.bucket(i).map(|t| t.pattern.to_vec()))
            .collect()
    }
}
