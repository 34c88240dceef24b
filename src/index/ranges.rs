//! Range watchers, `[start, end)` over keys ordered as bytes (etcd's key ranges), in a
//! centered interval tree.
//!
//! Every tree node has a *center* key. A range containing the center (`start <= center <
//! end`) lives at that node, in two lists: by start, ascending, and by end, descending.
//! Ranges entirely below the center (`end <= center`) go left, ranges entirely above
//! (`start > center`) go right. A key `k` walks down from the root: if `k < center`, every
//! range at the node with `start <= k` contains it (its end is past the center), and the
//! by-start list is read until the first start past `k`; if `k > center`, likewise the
//! by-end list until the first end at or below `k`; then left or right. If `k == center`,
//! every range at the node contains it and none elsewhere can. So a lookup reads one node
//! per level and one list entry per match beyond one per node: O(depth + matches).
//!
//! The depth is kept logarithmic by scapegoat rebuilding: an insert that lands deeper than
//! log_{1/α}(nodes) (α = 0.7) rebuilds the highest α-unbalanced subtree on its path, with
//! centers at the median start, so each side holds at most half of the subtree's ranges.
//! Removals leave emptied nodes in place (they route, and hold nothing) until they are half
//! of the tree, which is then rebuilt whole. Rebuilds recurse once per level of the new,
//! balanced tree: depth O(log n), whatever the ranges.
//!
//! Most keys are in no range, and a descent costs a cache miss or two per level, so a
//! filter runs first. A range's *anchor* is the longest prefix both its bounds begin with:
//! every key between two strings that share a prefix shares it too. An anchor splits like
//! a byte prefix (`tails.rs`) into whole segments and a tail without `/`, so a key can
//! only be in the range if the anchor's segments lead its own and the tail begins its
//! next piece. The index counts ranges per anchor hash, with the tail lengths in use at
//! each depth; a lookup hashes the key's segments once, probes at each depth for each
//! tail length there that fits the key's next piece, and descends only if a probe hits or
//! some range has no anchor (an unbounded one, or `["a", "b")`). A hash collision only
//! costs a descent that finds nothing.
//!
//! Centers and bounds are stored inline when short (up to 30 bytes, `KeyBytes`), so a
//! descent compares them without following a pointer. Entries sit in a [`Slab`] at stable
//! positions (the tree's lists and the sweep point at them), found by their stored pattern
//! through a hash table.
//!
//! # Invariants (checked by [`RangeIndex::check_invariants`])
//! - Every entry is non-empty (`start < end`), decodes from its pattern, is listed once in
//!   each list of the node it names, and that node is where the descent by [`side`] from
//!   the root leads; every listed entry contains its node's center.
//! - Lists are sorted (by start ascending, by end descending, ties by position); `size` is
//!   the number of nodes in each subtree; every node in the slab is reachable from the root.
//! - The lookup table holds one position per entry; `watchers` counts every watcher.
//! - The anchor counts are those of the entries: per anchor hash, per (depth, tail length),
//!   and `unanchored` for the entries without one; every anchored entry's start passes
//!   the lookup's filter (the start is inside its own range).
//!
//! # Complexity (n = ranges, m = matches, d = depth, O(log n) after a rebuild)
//! | operation | cost |
//! |---|---|
//! | lookup | while every range has an anchor: O(L) to hash the key's segments up to the deepest anchor and one probe per tail length in use at each depth, then, if a probe hits, O(d + m) comparisons of the key with centers and bounds; with an unanchored range, always the descent |
//! | insert | O(bounds) to find and hash the anchor + O(t) into its depth's tail lengths + O(d) comparisons + the sorted insert into one node's lists (l: ranges at that node; O(log l) comparisons, a chunk's moves and, when a chunk splits, O(l / 1,024) more: [`SortedPositions`]); rebuilds amortised O(log² n) |
//! | remove | O(1) to find + O(bounds + t) to uncount the anchor + O(log l) comparisons, a chunk's moves and, when chunks merge, O(l / 1,024) more to unlist; amortised rebuilds |

use std::cmp::Ordering;
use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;

use super::key::KeyBytes;
use super::segment::{SegmentEnds, SEPARATOR};
use super::slab::Slab;
use super::sorted::SortedPositions;
use super::table::{Layout, Table};
use super::watchers::WatcherList;
use super::WatcherEntry;

/// No node.
const NIL: u32 = u32::MAX;

/// Weight balance of the scapegoat tree: a child may hold at most this share of its
/// parent's subtree before an insert's rebuild evens it out.
const ALPHA: f64 = 0.7;

/// Emptied nodes tolerated before the whole tree is rebuilt (and at least this share).
const MIN_GARBAGE: usize = 32;

/// How a range's bounds are stored as one pattern: a tag (0 bounded, 1 unbounded), the
/// start's length as 4 little-endian bytes, the start, then the end.
pub(crate) fn encode(start: &[u8], end: Option<&[u8]>) -> Bytes {
    let mut out = Vec::with_capacity(5 + start.len() + end.map_or(0, <[u8]>::len));
    out.push(u8::from(end.is_none()));
    out.extend_from_slice(&(start.len() as u32).to_le_bytes());
    out.extend_from_slice(start);
    if let Some(end) = end {
        out.extend_from_slice(end);
    }
    Bytes::from(out)
}

/// The bounds stored in `pattern`, or `None` if it is not an encoded range.
pub(crate) fn decode(pattern: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (&tag, rest) = pattern.split_first()?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let rest = &rest[4..];
    let start = rest.get(..len)?;
    match tag {
        0 => Some((start, Some(&rest[len..]))),
        1 if rest.len() == len => Some((start, None)),
        _ => None,
    }
}

/// The watchers of one range.
struct Entry<W> {
    start: KeyBytes,
    /// `None`: no upper bound.
    end: Option<KeyBytes>,
    /// The encoded bounds (see [`encode`]): what removals and sweeps name it by.
    pattern: Bytes,
    hash: u64,
    watchers: WatcherList<W>,
    /// The tree node it is listed at.
    node: u32,
}

impl<W: Clone> Clone for Entry<W> {
    fn clone(&self) -> Self {
        Self {
            start: self.start.clone(),
            end: self.end.clone(),
            pattern: self.pattern.clone(),
            hash: self.hash,
            watchers: self.watchers.clone(),
            node: self.node,
        }
    }
}

impl<W> Entry<W> {
    #[inline]
    fn contains(&self, key: &[u8]) -> bool {
        &self.start[..] <= key && self.end.as_ref().is_none_or(|end| key < &end[..])
    }
}

/// Where a range goes relative to a center.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Left,
    Here,
    Right,
}

fn side(start: &[u8], end: Option<&[u8]>, center: &[u8]) -> Side {
    if end.is_some_and(|end| end <= center) {
        Side::Left
    } else if start > center {
        Side::Right
    } else {
        Side::Here
    }
}

#[derive(Clone)]
struct Node {
    center: KeyBytes,
    left: u32,
    right: u32,
    /// Nodes in this subtree, this one included.
    size: u32,
    /// Entry positions, by start ascending (ties by position).
    by_start: SortedPositions,
    /// Entry positions, by end descending, unbounded first (ties by position).
    by_end: SortedPositions,
}

/// What every key in `[start, end)` begins with: the longest prefix both bounds begin with
/// (empty without an end).
fn anchor<'a>(start: &'a [u8], end: Option<&[u8]>) -> &'a [u8] {
    let Some(end) = end else {
        return &[];
    };
    let common = start.iter().zip(end).take_while(|(a, b)| a == b).count();
    &start[..common]
}

/// Ranges sharing one anchor, by the anchor's hash.
#[derive(Clone)]
struct Anchor {
    hash: u64,
    ranges: u32,
}

/// Range watchers.
pub(crate) struct RangeIndex<W> {
    entries: Slab<Entry<W>>,
    lookup: Table<u32>,
    nodes: Slab<Node>,
    root: u32,
    hasher: ahash::RandomState,
    watchers: usize,
    /// Nodes whose lists are empty.
    empty_nodes: usize,
    /// Entries per anchor (by hash: see [`RangeIndex::anchor_key`]).
    anchors: Table<Anchor>,
    /// Per anchor depth in whole segments (trimmed of empty depths at the end): the tail
    /// lengths in use there, ascending, each with its number of entries.
    anchor_tails: Vec<Vec<(u32, u32)>>,
    /// Entries without an anchor: every lookup descends while there is one.
    unanchored: usize,
}

impl<W: Clone> Clone for RangeIndex<W> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            lookup: self.lookup.clone(),
            nodes: self.nodes.clone(),
            root: self.root,
            hasher: self.hasher.clone(),
            watchers: self.watchers,
            empty_nodes: self.empty_nodes,
            anchors: self.anchors.clone(),
            anchor_tails: self.anchor_tails.clone(),
            unanchored: self.unanchored,
        }
    }
}

/// By start ascending, ties by position.
fn start_order<W>(entries: &Slab<Entry<W>>, a: u32, b: u32) -> Ordering {
    let (x, y) = (entry(entries, a), entry(entries, b));
    x.start.cmp(&y.start).then(a.cmp(&b))
}

/// By end descending (unbounded first), ties by position.
fn end_order<W>(entries: &Slab<Entry<W>>, a: u32, b: u32) -> Ordering {
    let (x, y) = (entry(entries, a), entry(entries, b));
    let by_end = match (&x.end, &y.end) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(p), Some(q)) => q.cmp(p),
    };
    by_end.then(a.cmp(&b))
}

#[inline]
fn entry<W>(entries: &Slab<Entry<W>>, at: u32) -> &Entry<W> {
    entries.get(at).expect("a listed entry exists")
}

impl<W: WatcherEntry> RangeIndex<W> {
    pub(crate) fn with_hasher(hasher: ahash::RandomState) -> Self {
        Self {
            entries: Slab::new(),
            lookup: Table::new(),
            nodes: Slab::new(),
            root: NIL,
            hasher,
            watchers: 0,
            empty_nodes: 0,
            anchors: Table::new(),
            anchor_tails: Vec::new(),
            unanchored: 0,
        }
    }

    /// An empty index with this one's seeds (the other snapshot of a pair).
    pub(crate) fn empty_twin(&self) -> Self {
        Self::with_hasher(self.hasher.clone())
    }

    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers
    }

    /// Distinct ranges with watchers.
    pub(crate) fn range_count(&self) -> usize {
        self.entries.len()
    }

    fn position(&self, pattern: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(pattern);
        let entries = &self.entries;
        self.lookup
            .find(hash, |&at| entry(entries, at).pattern == pattern)
            .copied()
    }

    /// The watchers of exactly the range stored as `pattern`.
    pub(crate) fn get(&self, pattern: &[u8]) -> Option<&WatcherList<W>> {
        self.position(pattern)
            .map(|at| &entry(&self.entries, at).watchers)
    }

    /// Adds `watcher` on the range encoded in `pattern` (see [`encode`]; the registry
    /// checks that it is non-empty).
    pub(crate) fn insert(&mut self, pattern: Bytes, watcher: W) {
        self.watchers += 1;
        if let Some(at) = self.position(&pattern) {
            let entry = self.entries.get_mut(at).expect("found");
            entry.watchers.insert(watcher);
            return;
        }
        let (start, end) = decode(&pattern).expect("an encoded range");
        let (start, end) = (pattern.slice_ref(start), end.map(|e| pattern.slice_ref(e)));
        assert!(
            end.as_ref().is_none_or(|end| start < end),
            "a range is non-empty"
        );
        let hash = self.hasher.hash_one(&pattern[..]);
        let mut watchers = WatcherList::Empty;
        watchers.insert(watcher);
        // Inline when short: a descent compares bounds without following a pointer.
        let at = self.entries.insert(Entry {
            start: KeyBytes::new(&start),
            end: end.as_ref().map(KeyBytes::new),
            pattern,
            hash,
            watchers,
            node: NIL,
        });
        let entries = &self.entries;
        self.lookup
            .insert_unique(hash, at, |&i| entry(entries, i).hash);
        self.count_anchor(at, true);
        self.place(at);
    }

    /// Lists entry `at` at the node its bounds lead to, creating it if needed, and rebuilds
    /// a subtree if the tree got too deep.
    fn place(&mut self, at: u32) {
        let (start, end) = {
            let e = entry(&self.entries, at);
            (e.start.clone(), e.end.clone())
        };
        let mut path: Vec<u32> = Vec::new();
        let mut node = self.root;
        while node != NIL {
            let n = self.nodes.get(node).expect("a linked node");
            match side(&start, end.as_deref(), &n.center) {
                Side::Here => {
                    self.list(node, at);
                    return;
                }
                Side::Left => {
                    path.push(node);
                    node = n.left;
                }
                Side::Right => {
                    path.push(node);
                    node = n.right;
                }
            }
        }
        let new = self.nodes.insert(Node {
            center: start.clone(),
            left: NIL,
            right: NIL,
            size: 1,
            by_start: SortedPositions::default(),
            by_end: SortedPositions::default(),
        });
        self.empty_nodes += 1;
        self.list(new, at);
        match path.last() {
            None => self.root = new,
            Some(&parent) => {
                let p = self.nodes.get(parent).expect("a linked node");
                let goes_left = side(&start, end.as_deref(), &p.center) == Side::Left;
                let p = self.nodes.get_mut(parent).expect("a linked node");
                if goes_left {
                    p.left = new;
                } else {
                    p.right = new;
                }
            }
        }
        for &up in &path {
            self.nodes.get_mut(up).expect("a linked node").size += 1;
        }
        let total = self.nodes.len() as f64;
        if path.len() as f64 > total.ln() / (1.0 / ALPHA).ln() + 1.0 {
            self.rebuild_scapegoat(&path, new);
        }
    }

    /// Adds entry `at` to `node`'s two lists, in order.
    fn list(&mut self, node: u32, at: u32) {
        let entries = &self.entries;
        let n = self.nodes.get_mut(node).expect("a linked node");
        if n.by_start.is_empty() {
            // Every node with empty lists is counted, a fresh one included (see `place`).
            self.empty_nodes -= 1;
        }
        n.by_start.insert(at, |x| start_order(entries, x, at));
        n.by_end.insert(at, |x| end_order(entries, x, at));
        self.entries.get_mut(at).expect("listed").node = node;
    }

    /// After an insert at the end of `path` (+ `new`): rebuilds the highest ancestor whose
    /// heavier child holds more than α of its subtree.
    fn rebuild_scapegoat(&mut self, path: &[u32], new: u32) {
        let mut child = new;
        let mut scapegoat = None;
        for (depth, &up) in path.iter().enumerate().rev() {
            let size = self.nodes.get(up).expect("linked").size;
            let child_size = self.nodes.get(child).expect("linked").size;
            if f64::from(child_size) > ALPHA * f64::from(size) {
                scapegoat = Some(depth);
            }
            child = up;
        }
        let Some(depth) = scapegoat else {
            return;
        };
        self.rebuild_at(&path[..depth], path[depth]);
    }

    /// Rebuilds the subtree rooted at `node`, whose ancestors are `above` (root first).
    fn rebuild_at(&mut self, above: &[u32], node: u32) {
        let old_size = self.nodes.get(node).expect("linked").size;
        let mut slots = Vec::new();
        let mut stack = vec![node];
        while let Some(at) = stack.pop() {
            let n = self.nodes.remove(at);
            if n.by_start.is_empty() {
                self.empty_nodes -= 1;
            }
            slots.extend(n.by_start.iter());
            stack.extend([n.left, n.right].into_iter().filter(|&c| c != NIL));
        }
        let built = self.build(slots);
        let new_size = built.map_or(0, |b| self.nodes.get(b).expect("built").size);
        let built = built.unwrap_or(NIL);
        match above.last() {
            None => self.root = built,
            Some(&parent) => {
                let p = self.nodes.get_mut(parent).expect("linked");
                if p.left == node {
                    p.left = built;
                } else {
                    p.right = built;
                }
            }
        }
        for &up in above {
            let n = self.nodes.get_mut(up).expect("linked");
            n.size = n.size - old_size + new_size;
        }
    }

    /// A balanced subtree holding `slots`: the center is the median start, so each side
    /// gets at most half. Recurses once per level of the result (O(log n) deep).
    fn build(&mut self, mut slots: Vec<u32>) -> Option<u32> {
        if slots.is_empty() {
            return None;
        }
        let entries = &self.entries;
        slots.sort_unstable_by(|&a, &b| start_order(entries, a, b));
        let center = entry(entries, slots[slots.len() / 2]).start.clone();
        let (mut left, mut here, mut right) = (Vec::new(), Vec::new(), Vec::new());
        for at in slots {
            let e = entry(entries, at);
            match side(&e.start, e.end.as_deref(), &center) {
                Side::Left => left.push(at),
                Side::Here => here.push(at),
                Side::Right => right.push(at),
            }
        }
        let mut by_end = here.clone();
        by_end.sort_unstable_by(|&a, &b| end_order(entries, a, b));
        let left = self.build(left);
        let right = self.build(right);
        let size = |index: &Self, child: Option<u32>| {
            child.map_or(0, |c| index.nodes.get(c).expect("built").size)
        };
        let size = 1 + size(self, left) + size(self, right);
        let node = self.nodes.insert(Node {
            center,
            left: left.unwrap_or(NIL),
            right: right.unwrap_or(NIL),
            size,
            by_start: SortedPositions::from_sorted(here.clone()),
            by_end: SortedPositions::from_sorted(by_end),
        });
        for at in here {
            self.entries.get_mut(at).expect("listed").node = node;
        }
        Some(node)
    }

    /// Removes watcher `id` from the range stored as `pattern`.
    pub(crate) fn remove(&mut self, pattern: &[u8], id: u64) -> Option<W> {
        let at = self.position(pattern)?;
        let e = self.entries.get_mut(at).expect("found");
        let removed = e.watchers.remove(id)?;
        self.watchers -= 1;
        if !e.watchers.is_empty() {
            return Some(removed);
        }
        let node = e.node;
        let entries = &self.entries;
        let n = self.nodes.get_mut(node).expect("an entry's node");
        let listed = n.by_start.remove(|x| start_order(entries, x, at));
        assert!(listed, "listed by start");
        let listed = n.by_end.remove(|x| end_order(entries, x, at));
        assert!(listed, "listed by end");
        if n.by_start.is_empty() {
            self.empty_nodes += 1;
        }
        self.count_anchor(at, false);
        let hash = entry(&self.entries, at).hash;
        self.lookup
            .find_entry(hash, |&x| x == at)
            .expect("an entry is in the lookup")
            .remove();
        let entries = &self.entries;
        self.lookup.shrink_if_sparse(|&x| entry(entries, x).hash);
        self.entries.remove(at);
        if self.empty_nodes >= MIN_GARBAGE && self.empty_nodes * 2 > self.nodes.len() {
            let root = self.root;
            self.rebuild_at(&[], root);
        } else if self.entries.len() == 0 {
            // The last range left: drop the empty tree too.
            let root = self.root;
            if root != NIL {
                self.rebuild_at(&[], root);
            }
        }
        Some(removed)
    }

    /// Calls `f(pattern, watchers)` for every range containing `key`.
    #[inline]
    pub(crate) fn for_each_match<F: FnMut(&[u8], &WatcherList<W>)>(&self, key: &[u8], f: &mut F) {
        if self.unanchored == 0 && !self.anchored_on(key) {
            return;
        }
        let mut at = self.root;
        while at != NIL {
            let node = self.nodes.get(at).expect("a linked node");
            match key.cmp(&node.center[..]) {
                Ordering::Less => {
                    for i in node.by_start.iter() {
                        let e = entry(&self.entries, i);
                        if &e.start[..] > key {
                            break;
                        }
                        f(&e.pattern, &e.watchers);
                    }
                    at = node.left;
                }
                order => {
                    for i in node.by_end.iter() {
                        let e = entry(&self.entries, i);
                        if e.end.as_ref().is_some_and(|end| &end[..] <= key) {
                            break;
                        }
                        f(&e.pattern, &e.watchers);
                    }
                    if order == Ordering::Equal {
                        return;
                    }
                    at = node.right;
                }
            }
        }
    }

    /// Whether `key` begins with an anchor (or collides with one): at each depth, the key's
    /// segments so far hashed once, then each tail length in use there that fits the
    /// key's next piece.
    #[inline]
    fn anchored_on(&self, key: &[u8]) -> bool {
        let mut segments = self.hasher.build_hasher();
        let mut rest = key;
        for tails in &self.anchor_tails {
            let piece = rest
                .iter()
                .position(|&b| b == SEPARATOR)
                .unwrap_or(rest.len());
            for &(len, _) in tails {
                let len = len as usize;
                if len > piece {
                    break;
                }
                let mut hasher = segments.clone();
                hasher.write(&rest[..len]);
                let hash = hasher.finish();
                if self.anchors.find(hash, |a| a.hash == hash).is_some() {
                    return true;
                }
            }
            if piece == rest.len() {
                return false;
            }
            segments.write(&rest[..=piece]);
            rest = &rest[piece + 1..];
        }
        false
    }

    /// The hash, depth (whole segments) and tail length of a non-empty anchor, hashed as
    /// [`Self::anchored_on`] hashes a key: one write per segment, then one for the tail.
    fn anchor_key(&self, anchor: &[u8]) -> (u64, usize, usize) {
        let mut hasher = self.hasher.build_hasher();
        let (mut depth, mut start) = (0, 0);
        for end in SegmentEnds::new(anchor) {
            hasher.write(&anchor[start..end]);
            (depth, start) = (depth + 1, end);
        }
        hasher.write(&anchor[start..]);
        (hasher.finish(), depth, anchor.len() - start)
    }

    /// Counts entry `at` in (or, `added == false`, out of) its anchor's counts.
    fn count_anchor(&mut self, at: u32, added: bool) {
        let e = entry(&self.entries, at);
        let anchor = anchor(&e.start, e.end.as_deref());
        if anchor.is_empty() {
            if added {
                self.unanchored += 1;
            } else {
                self.unanchored -= 1;
            }
            return;
        }
        let (hash, depth, tail) = self.anchor_key(anchor);
        let tail = tail as u32;
        if added {
            match self.anchors.find_mut(hash, |a| a.hash == hash) {
                Some(a) => a.ranges += 1,
                None => self
                    .anchors
                    .insert_unique(hash, Anchor { hash, ranges: 1 }, |a| a.hash),
            }
            if self.anchor_tails.len() <= depth {
                self.anchor_tails.resize(depth + 1, Vec::new());
            }
            let tails = &mut self.anchor_tails[depth];
            match tails.binary_search_by_key(&tail, |&(len, _)| len) {
                Ok(i) => tails[i].1 += 1,
                Err(i) => tails.insert(i, (tail, 1)),
            }
        } else {
            let mut a = self
                .anchors
                .find_entry(hash, |a| a.hash == hash)
                .expect("a counted anchor");
            a.get_mut().ranges -= 1;
            if a.get().ranges == 0 {
                a.remove();
                self.anchors.shrink_if_sparse(|a| a.hash);
            }
            let tails = &mut self.anchor_tails[depth];
            let i = tails
                .binary_search_by_key(&tail, |&(len, _)| len)
                .expect("a counted tail length");
            tails[i].1 -= 1;
            if tails[i].1 == 0 {
                tails.remove(i);
            }
            while self.anchor_tails.last().is_some_and(Vec::is_empty) {
                self.anchor_tails.pop();
            }
        }
    }

    /// For a sweep: entries by position, which never move while present.
    pub(crate) fn layout(&self) -> Layout {
        Layout::default()
    }

    pub(crate) fn buckets(&self) -> usize {
        self.entries.span()
    }

    pub(crate) fn bucket(&self, at: usize) -> Option<(&[u8], &WatcherList<W>)> {
        self.entries
            .get(at as u32)
            .map(|e| (&e.pattern[..], &e.watchers))
    }

    /// Every entry's position and pattern, to compare twins.
    pub(crate) fn placement(&self) -> Vec<(u32, Vec<u8>)> {
        self.entries
            .iter()
            .map(|(at, e)| (at, e.pattern.to_vec()))
            .collect()
    }

    /// The tree's depth (tests).
    #[cfg(test)]
    fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self.root, 1)];
        while let Some((at, depth)) = stack.pop() {
            if at == NIL {
                continue;
            }
            deepest = deepest.max(depth);
            let n = self.nodes.get(at).expect("linked");
            stack.push((n.left, depth + 1));
            stack.push((n.right, depth + 1));
        }
        deepest
    }

    /// The anchor counts are recounted from the entries, and each anchored entry's start
    /// must pass the lookup's filter: this checks `anchored_on` against `anchor_key`.
    fn check_anchors(&self) {
        use std::collections::HashMap;
        let mut by_hash: HashMap<u64, u32> = HashMap::new();
        let mut tails: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut unanchored = 0;
        for (_, e) in self.entries.iter() {
            let anchor = anchor(&e.start, e.end.as_deref());
            if anchor.is_empty() {
                unanchored += 1;
                continue;
            }
            let (hash, depth, tail) = self.anchor_key(anchor);
            *by_hash.entry(hash).or_default() += 1;
            if tails.len() <= depth {
                tails.resize(depth + 1, Vec::new());
            }
            match tails[depth].iter_mut().find(|(len, _)| *len == tail as u32) {
                Some((_, n)) => *n += 1,
                None => tails[depth].push((tail as u32, 1)),
            }
        }
        let counted: HashMap<u64, u32> = self.anchors.iter().map(|a| (a.hash, a.ranges)).collect();
        assert_eq!(counted.len(), self.anchors.len(), "one count per anchor");
        assert_eq!(counted, by_hash, "anchor counts out of step");
        for at_depth in &mut tails {
            at_depth.sort_unstable();
        }
        assert_eq!(tails, self.anchor_tails, "anchor tail lengths out of step");
        assert_eq!(unanchored, self.unanchored, "unanchored count out of step");
        for (_, e) in self.entries.iter() {
            if !anchor(&e.start, e.end.as_deref()).is_empty() {
                assert!(
                    self.anchored_on(&e.start),
                    "a range's start passes the anchor filter"
                );
            }
        }
    }

    /// Panics with a description if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        self.check_anchors();
        self.entries.check_invariants();
        self.nodes.check_invariants();
        let mut reached = 0;
        let mut empty = 0;
        let mut listed = 0;
        let mut stack = vec![self.root];
        while let Some(at) = stack.pop() {
            if at == NIL {
                continue;
            }
            reached += 1;
            let n = self.nodes.get(at).expect("a linked node exists");
            let child_size = |c: u32| {
                if c == NIL {
                    0
                } else {
                    self.nodes.get(c).expect("linked").size
                }
            };
            assert_eq!(
                n.size,
                1 + child_size(n.left) + child_size(n.right),
                "subtree size"
            );
            assert_eq!(n.by_start.len(), n.by_end.len(), "one entry, two lists");
            empty += usize::from(n.by_start.is_empty());
            // Sorted, each position once (so the counts below see every listing).
            n.by_start
                .check_invariants(|a, b| start_order(&self.entries, a, b));
            n.by_end
                .check_invariants(|a, b| end_order(&self.entries, a, b));
            let mut by_start: Vec<u32> = n.by_start.iter().collect();
            let mut by_end: Vec<u32> = n.by_end.iter().collect();
            by_start.sort_unstable();
            by_end.sort_unstable();
            assert_eq!(by_start, by_end, "listed in both lists");
            listed += by_start.len();
            for i in by_start {
                let e = entry(&self.entries, i);
                assert!(
                    e.contains(&n.center),
                    "a listed range contains its node's center"
                );
                assert_eq!(e.node, at, "an entry names its node");
            }
            stack.push(n.left);
            stack.push(n.right);
        }
        assert_eq!(
            reached,
            self.nodes.len(),
            "every node is reachable from the root"
        );
        assert_eq!(empty, self.empty_nodes, "emptied nodes counted");
        assert_eq!(
            listed,
            self.entries.len(),
            "every entry is listed at its node"
        );
        let mut watchers = 0;
        for (at, e) in self.entries.iter() {
            let (start, end) = decode(&e.pattern).expect("an entry's pattern decodes");
            assert_eq!(
                (start, end),
                (&e.start[..], e.end.as_deref()),
                "bounds from the pattern"
            );
            assert!(
                e.end.as_ref().is_none_or(|end| e.start[..] < end[..]),
                "non-empty"
            );
            assert!(!e.watchers.is_empty(), "an empty entry is removed");
            e.watchers.check_invariants();
            watchers += e.watchers.len();
            assert_eq!(
                self.position(&e.pattern),
                Some(at),
                "found under its pattern"
            );
            // The descent by bounds leads to its node.
            let mut node = self.root;
            loop {
                assert_ne!(node, NIL, "the descent reaches the entry's node");
                let n = self.nodes.get(node).expect("linked");
                match side(&e.start, e.end.as_deref(), &n.center) {
                    Side::Here => break,
                    Side::Left => node = n.left,
                    Side::Right => node = n.right,
                }
            }
            assert_eq!(node, e.node, "an entry sits where its bounds lead");
        }
        assert_eq!(
            self.lookup.len(),
            self.entries.len(),
            "one lookup slot per entry"
        );
        assert_eq!(watchers, self.watchers, "range watcher count out of step");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct W(u64);
    impl WatcherEntry for W {
        fn id(&self) -> u64 {
            self.0
        }
    }

    fn matches(index: &RangeIndex<W>, key: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        index.for_each_match(key, &mut |_, list| list.for_each(&mut |w| out.push(w.0)));
        out.sort_unstable();
        out
    }

    #[test]
    fn the_pattern_encoding_round_trips_and_rejects_what_it_did_not_make() {
        for (start, end) in [
            (&b""[..], Some(&b"a"[..])),
            (b"a", None),
            (b"/x", Some(b"/y")),
            (b"", None),
        ] {
            assert_eq!(decode(&encode(start, end)), Some((start, end)));
        }
        for bad in [
            &b""[..],
            b"\x00\x05\x00\x00\x00ab",
            b"\x02\x00\x00\x00\x00",
            b"\x01\x00\x00\x00\x00x",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_key_matches_exactly_the_ranges_that_contain_it() {
        let ranges: [(&[u8], Option<&[u8]>); 6] = [
            (b"a", Some(b"c")),
            (b"b", Some(b"d")),
            (b"", Some(b"b")),
            (b"c", None),
            (b"bb", Some(b"bc")),
            (b"a", Some(b"a\x00")),
        ];
        let mut index = RangeIndex::with_hasher(ahash::RandomState::new());
        for (id, (start, end)) in ranges.iter().enumerate() {
            index.insert(encode(start, *end), W(id as u64));
            index.check_invariants();
        }
        // (key, ids of the ranges containing it)
        let table: [(&[u8], &[u64]); 9] = [
            (b"", &[2]),
            (b"a", &[0, 2, 5]),
            (b"a\x00", &[0, 2]),
            (b"b", &[0, 1]),
            (b"bb", &[0, 1, 4]),
            (b"bc", &[0, 1]),
            (b"c", &[1, 3]),
            (b"d", &[3]),
            (b"zzz", &[3]),
        ];
        for (key, want) in table {
            assert_eq!(matches(&index, key), want, "{key:?}");
        }
        for (id, (start, end)) in ranges.iter().enumerate() {
            assert!(index.remove(&encode(start, *end), 99).is_none());
            assert!(index.remove(&encode(start, *end), id as u64).is_some());
            index.check_invariants();
        }
        assert_eq!((index.range_count(), index.nodes.len()), (0, 0));
    }

    #[test]
    fn sorted_inserts_keep_the_tree_logarithmic() {
        let mut index = RangeIndex::with_hasher(ahash::RandomState::new());
        let n = 20_000u32;
        for i in 0..n {
            let start = format!("/k/{i:08}");
            let end = format!("/k/{i:08}\x00");
            index.insert(
                encode(start.as_bytes(), Some(end.as_bytes())),
                W(u64::from(i)),
            );
        }
        index.check_invariants();
        let bound = (f64::from(n).ln() / (1.0 / ALPHA).ln()) as usize + 2;
        assert!(
            index.depth() <= bound,
            "depth {} over {bound}",
            index.depth()
        );
        assert_eq!(matches(&index, b"/k/00012345"), vec![12345]);
        for i in (0..n).step_by(2) {
            let start = format!("/k/{i:08}");
            let end = format!("/k/{i:08}\x00");
            assert!(index
                .remove(
                    &encode(start.as_bytes(), Some(end.as_bytes())),
                    u64::from(i)
                )
                .is_some());
        }
        index.check_invariants();
        assert!(matches(&index, b"/k/00012344").is_empty());
        assert_eq!(matches(&index, b"/k/00012345"), vec![12345]);
    }

    #[test]
    fn nested_ranges_at_one_node_are_listed_and_unlisted_in_chunks() {
        // Every range contains the first one's start, so all sit at the root: a flat list
        // moved all of them per insert (each goes in at the front) and per removal.
        let mut index = RangeIndex::with_hasher(ahash::RandomState::new());
        let n = 100_000u32;
        let bounds = |i: u32| encode(format!("/n/{:07}", n - i).as_bytes(), Some(b"/o"));
        for i in 0..n {
            index.insert(bounds(i), W(u64::from(i)));
        }
        index.check_invariants();
        assert_eq!(index.nodes.len(), 1, "every range at the root");
        let root = index.nodes.get(index.root).expect("a root");
        assert!(
            root.by_start.chunk_count() >= n as usize / 1024
                && root.by_end.chunk_count() >= n as usize / 1024,
            "the lists are chunked"
        );
        // A key inside the first `k` starts is in every range starting at or below it.
        assert_eq!(matches(&index, b"/n/0000003").len(), 3);
        assert_eq!(matches(&index, b"/n/1000000").len(), n as usize);
        for i in (0..n).rev().step_by(2) {
            assert!(index.remove(&bounds(i), u64::from(i)).is_some());
        }
        index.check_invariants();
        assert_eq!(matches(&index, b"/n/1000000").len(), n as usize / 2);
    }

    proptest::proptest! {
        #[test]
        fn lookups_agree_with_a_naive_model(
            ops in proptest::collection::vec((0u8..16, 0u8..16, proptest::bool::weighted(0.9), 0u64..3, proptest::bool::ANY), 1..150),
            keys in proptest::collection::vec(0u8..16, 1..16),
        ) {
            // Bounds over a tiny alphabet so that ranges nest, touch and coincide; words
            // with `/` give anchors of several depths, and mostly bounded ranges let the
            // anchor filter run (one unanchored range switches it off).
            const WORDS: [&[u8]; 16] = [
                b"", b"a", b"ab", b"b", b"ba", b"c", b"ca", b"d",
                b"/", b"a/", b"a/b", b"a/b/", b"a/bc", b"a/c/d", b"/a/", b"/a/b",
            ];
            let mut index = RangeIndex::with_hasher(ahash::RandomState::new());
            type Bounds = (Vec<u8>, Option<Vec<u8>>);
            let mut model: std::collections::BTreeMap<Bounds, Vec<u64>> = Default::default();
            for (s, e, bounded, id, insert) in ops {
                let (start, end) = (WORDS[usize::from(s)], WORDS[usize::from(e)]);
                let end = bounded.then_some(end);
                if end.is_some_and(|end| end <= start) {
                    continue;
                }
                let pattern = encode(start, end);
                let ids = model.entry((start.to_vec(), end.map(<[u8]>::to_vec))).or_default();
                if insert && !ids.contains(&id) {
                    ids.push(id);
                    index.insert(pattern, W(id));
                } else if !insert {
                    let had = ids.iter().position(|&x| x == id).map(|i| ids.remove(i));
                    proptest::prop_assert_eq!(index.remove(&pattern, id).map(|w| w.0), had);
                }
                model.retain(|_, v| !v.is_empty());
                index.check_invariants();
            }
            for k in keys {
                let key = WORDS[usize::from(k)];
                let mut want: Vec<u64> = model.iter()
                    .filter(|((s, e), _)| &s[..] <= key && e.as_ref().is_none_or(|e| key < &e[..]))
                    .flat_map(|(_, ids)| ids.iter().copied())
                    .collect();
                want.sort_unstable();
                proptest::prop_assert_eq!(matches(&index, key), want);
            }
        }
    }
}
