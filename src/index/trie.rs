//! Prefix watchers: a persistent, path-compressed byte trie (a radix trie).
//!
//! Every node stands for one byte string, its *path*: the concatenation, from the root, of
//! each edge's selecting byte and each node's `label`. A prefix watcher on `P` lives in the
//! node whose path is `P`. A key `K` matches the watchers of every node whose path is a
//! leading part of `K`, so one walk down the trie, reading each byte of `K` at most once,
//! finds them all, shortest first:
//!
//! ```text
//!   root ""                      watchers on "/"       : node "/"
//!    └─ '/' label ""  ◀─ "/"     watchers on "/a/"     : node "/a/"
//!        └─ 'a' label "/"  ◀─ "/a/"
//!            ├─ 'b' label "/"  ◀─ "/a/b/"
//!            └─ 'x' label "yz/"  ◀─ "/a/xyz/"
//! ```
//!
//! The trie knows nothing of slashes: it matches byte prefixes. The slash-bounded form of the
//! reference (a prefix starts and ends with `/`) is a registration rule enforced above it,
//! and under that rule "byte prefix of `K`" and "one of `K`'s slash-terminated leading parts"
//! are the same set. Byte-prefix watches would need no change here.
//!
//! Children are found through a 256-bit occupancy bitmap over the selecting byte, so a lookup
//! is a popcount, and a node's child table never exceeds 256 entries: copying it is bounded
//! by the alphabet, not by the number of watchers. A million sibling prefixes under one
//! parent fan out over the bytes that tell them apart, a few levels deep.
//!
//! # Invariants (checked by [`PrefixTrie::check_invariants`])
//! - The root's label is empty.
//! - A non-root node has watchers or at least two children (path compression: a node with
//!   one child and no watchers is merged with that child; a node with neither is removed).
//! - Each child table's bitmap has one bit per child, children in byte order.
//! - `watchers` counts every watcher; `prefixes` counts the nodes that have watchers.
//!
//! # Complexity (L = prefix or key length in bytes, m = watchers on the touched prefix)
//! | operation | cost |
//! |---|---|
//! | `insert` / `remove` | O(L) to walk + O(256) per node copied on the path + O(32 · log₃₂ m) |
//! | `for_each_match` | O(L) byte comparisons + one visit per matching watcher |
//!
//! No operation recurses over the trie's depth: a prefix of 100,000 slashes builds a chain of
//! 100,000 nodes, and walking, copying or dropping it runs in loops with heap stacks.

use smallvec::SmallVec;
use std::mem;
use std::sync::Arc;

use super::watchers::WatcherList;
use super::{array_of, check_array, splice, Vacancy, WatcherEntry};

/// Prefix watcher index.
pub(crate) struct PrefixTrie<W> {
    root: TrieNode<W>,
    watchers: usize,
    prefixes: usize,
}

struct TrieNode<W> {
    /// Path bytes after the byte that selects this node in its parent.
    label: SmallVec<[u8; 16]>,
    watchers: WatcherList<W>,
    children: Children<W>,
}

/// Child table keyed by the selecting byte. The children are stored by value in one shared
/// array, so stepping to a child is one memory access into that array.
struct Children<W> {
    bitmap: [u64; 4],
    nodes: Option<Arc<[TrieNode<W>]>>,
}

impl<W: Clone> Clone for PrefixTrie<W> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            watchers: self.watchers,
            prefixes: self.prefixes,
        }
    }
}

impl<W: Clone> Clone for TrieNode<W> {
    fn clone(&self) -> Self {
        Self {
            label: self.label.clone(),
            watchers: self.watchers.clone(),
            children: self.children.clone(),
        }
    }
}

impl<W> Clone for Children<W> {
    fn clone(&self) -> Self {
        Self {
            bitmap: self.bitmap,
            nodes: self.nodes.clone(),
        }
    }
}

impl<W> Default for Children<W> {
    fn default() -> Self {
        Self {
            bitmap: [0; 4],
            nodes: None,
        }
    }
}

impl<W> Drop for Children<W> {
    /// Drops descendants with a loop, not recursion: a chain of 100,000 nodes must not
    /// overflow the stack. Arrays still shared with another snapshot are only released.
    fn drop(&mut self) {
        let Some(first) = self.nodes.take() else {
            return;
        };
        let mut stack = vec![first];
        while let Some(mut array) = stack.pop() {
            if let Some(nodes) = Arc::get_mut(&mut array) {
                stack.extend(nodes.iter_mut().filter_map(|n| n.children.nodes.take()));
            }
        }
    }
}

impl<W> Children<W> {
    #[inline]
    fn has(&self, byte: u8) -> bool {
        self.bitmap[usize::from(byte >> 6)] & (1 << (byte & 63)) != 0
    }

    #[inline]
    fn position(&self, byte: u8) -> usize {
        let word = usize::from(byte >> 6);
        let below: u32 = self.bitmap[..word].iter().map(|w| w.count_ones()).sum();
        below as usize + (self.bitmap[word] & ((1u64 << (byte & 63)) - 1)).count_ones() as usize
    }

    #[inline]
    fn get(&self, byte: u8) -> Option<&TrieNode<W>> {
        if !self.has(byte) {
            return None;
        }
        self.nodes.as_deref().map(|n| &n[self.position(byte)])
    }

    /// Number of children (the array may hold spare capacity after them).
    fn len(&self) -> usize {
        self.bitmap.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn nodes(&self) -> &[TrieNode<W>] {
        self.nodes.as_deref().map_or(&[], |n| &n[..self.len()])
    }

    /// Selecting bytes in ascending order, paired with their nodes.
    fn iter(&self) -> impl Iterator<Item = (u8, &TrieNode<W>)> {
        (0..=255u8).filter(|&b| self.has(b)).zip(self.nodes())
    }
}

impl<W: Clone> Children<W> {
    fn one(byte: u8, node: TrieNode<W>) -> Self {
        let mut children = Self::default();
        children.insert(byte, node);
        children
    }

    /// The child selected by `byte`, its array made private to this writer first.
    fn get_mut(&mut self, byte: u8) -> Option<&mut TrieNode<W>> {
        if !self.has(byte) {
            return None;
        }
        let pos = self.position(byte);
        self.nodes.as_mut().map(|n| &mut Arc::make_mut(n)[pos])
    }

    /// Adds a child for `byte` (absent).
    fn insert(&mut self, byte: u8, node: TrieNode<W>) {
        debug_assert!(!self.has(byte));
        let (live, pos) = (self.len(), self.position(byte));
        match &mut self.nodes {
            Some(nodes) => {
                splice(nodes, live, pos, Some(node));
            }
            None => self.nodes = Some(array_of(std::iter::once(node))),
        }
        self.bitmap[usize::from(byte >> 6)] |= 1 << (byte & 63);
    }

    /// Removes and returns the child for `byte` (present).
    fn remove(&mut self, byte: u8) -> TrieNode<W> {
        let (live, pos) = (self.len(), self.position(byte));
        let nodes = self.nodes.as_mut().expect("child present");
        let removed = splice(nodes, live, pos, None).expect("child present");
        self.bitmap[usize::from(byte >> 6)] &= !(1 << (byte & 63));
        if live == 1 {
            self.nodes = None;
        }
        removed
    }
}

/// A filler node is empty: no label, no watchers, no children. No live node but the root
/// looks like that (path compression removes such nodes), and the root is never in an array.
impl<W: Clone> Vacancy for TrieNode<W> {
    fn vacant() -> Self {
        TrieNode {
            label: SmallVec::new(),
            watchers: WatcherList::Empty,
            children: Children::default(),
        }
    }
    fn is_vacant(&self) -> bool {
        self.label.is_empty()
            && matches!(self.watchers, WatcherList::Empty)
            && self.children.nodes.is_none()
    }
}

impl<W: WatcherEntry> TrieNode<W> {
    fn new(label: &[u8]) -> Self {
        Self {
            label: SmallVec::from_slice(label),
            watchers: WatcherList::Empty,
            children: Children::default(),
        }
    }

    /// Merges this node with its only child; the node must have no watchers.
    fn absorb_only_child(&mut self) {
        debug_assert!(self.watchers.is_empty() && self.children.len() == 1);
        let byte = self
            .children
            .iter()
            .next()
            .map(|(b, _)| b)
            .expect("one child");
        let mut child = self.children.remove(byte);
        self.label.push(byte);
        self.label.extend_from_slice(&child.label);
        self.watchers = mem::take(&mut child.watchers);
        self.children = mem::take(&mut child.children);
    }

    /// Splits this node's label after `at` bytes: the node keeps the head and no watchers, and
    /// a new child holds the tail, the watchers and the children.
    fn split(&mut self, at: usize) {
        let byte = self.label[at];
        let lower = TrieNode {
            label: SmallVec::from_slice(&self.label[at + 1..]),
            watchers: mem::take(&mut self.watchers),
            children: mem::take(&mut self.children),
        };
        self.label.truncate(at);
        self.children = Children::one(byte, lower);
    }
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl<W: WatcherEntry> PrefixTrie<W> {
    /// An empty trie.
    pub(crate) fn new() -> Self {
        Self {
            root: TrieNode::new(&[]),
            watchers: 0,
            prefixes: 0,
        }
    }

    /// Number of watchers over all prefixes.
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers
    }

    /// Number of distinct prefixes that have watchers.
    pub(crate) fn prefix_count(&self) -> usize {
        self.prefixes
    }

    /// The node whose path is exactly `path`.
    fn find(&self, path: &[u8]) -> Option<&TrieNode<W>> {
        let mut node = &self.root;
        let mut rest = path;
        while let Some((&b, tail)) = rest.split_first() {
            let child = node.children.get(b)?;
            rest = tail.strip_prefix(child.label.as_slice())?;
            node = child;
        }
        Some(node)
    }

    /// The watchers registered on exactly `prefix`.
    pub(crate) fn get(&self, prefix: &[u8]) -> Option<&WatcherList<W>> {
        self.find(prefix)
            .map(|n| &n.watchers)
            .filter(|w| !w.is_empty())
    }

    /// Calls `f(len, watchers)` for every prefix `key[..len]` that has watchers, shortest first.
    #[inline]
    pub(crate) fn for_each_match<F: FnMut(usize, &WatcherList<W>)>(&self, key: &[u8], f: &mut F) {
        let mut node = &self.root;
        let mut pos = 0;
        loop {
            if !node.watchers.is_empty() {
                f(pos, &node.watchers);
            }
            let Some(&b) = key.get(pos) else { return };
            let Some(child) = node.children.get(b) else {
                return;
            };
            if !key[pos + 1..].starts_with(&child.label) {
                return;
            }
            pos += 1 + child.label.len();
            node = child;
        }
    }

    /// Calls `f(prefix, watchers)` for every prefix that has watchers.
    pub(crate) fn for_each_list<F: FnMut(&[u8], &WatcherList<W>)>(&self, f: &mut F) {
        let mut path = Vec::new();
        let mut stack: Vec<(&TrieNode<W>, usize, Option<u8>)> = vec![(&self.root, 0, None)];
        while let Some((node, base, byte)) = stack.pop() {
            path.truncate(base);
            path.extend(byte);
            path.extend_from_slice(&node.label);
            if !node.watchers.is_empty() {
                f(&path, &node.watchers);
            }
            let here = path.len();
            stack.extend(node.children.iter().map(|(b, c)| (c, here, Some(b))));
        }
    }

    /// Adds a watcher on `prefix`.
    pub(crate) fn insert(&mut self, prefix: &[u8], watcher: W) {
        let mut node = &mut self.root;
        let mut rest = prefix;
        while let Some((&b, tail)) = rest.split_first() {
            if !node.children.has(b) {
                let mut leaf = TrieNode::new(tail);
                leaf.watchers = WatcherList::One(watcher);
                node.children.insert(b, leaf);
                self.watchers += 1;
                self.prefixes += 1;
                return;
            }
            let child = node.children.get_mut(b).expect("checked above");
            let common = common_prefix_len(&child.label, tail);
            if common < child.label.len() {
                child.split(common);
            }
            node = child;
            rest = &tail[common..];
        }
        if node.watchers.is_empty() {
            self.prefixes += 1;
        }
        node.watchers.insert(watcher);
        self.watchers += 1;
    }

    /// Removes the watcher `id` from `prefix`. A miss copies nothing.
    pub(crate) fn remove(&mut self, prefix: &[u8], id: u64) -> Option<W> {
        self.find(prefix)?.watchers.get(id)?;
        let removed = match prefix.split_first() {
            None => self.root.watchers.remove(id),
            Some(_) => remove_below(&mut self.root, prefix, id),
        };
        if removed.is_some() {
            self.watchers -= 1;
            if self.find(prefix).is_none_or(|n| n.watchers.is_empty()) {
                self.prefixes -= 1;
            }
        }
        removed
    }

    /// Panics with a description if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        assert!(self.root.label.is_empty(), "the root's label must be empty");
        let (mut watchers, mut prefixes) = (0, 0);
        let mut stack = vec![(&self.root, true)];
        while let Some((node, is_root)) = stack.pop() {
            let c = &node.children;
            let bits: u32 = c.bitmap.iter().map(|w| w.count_ones()).sum();
            match &c.nodes {
                Some(nodes) => check_array(nodes, bits as usize),
                None => assert_eq!(bits, 0, "children without a table"),
            }
            assert!(
                c.nodes.is_none() || bits > 0,
                "an empty child table is None"
            );
            if !is_root {
                assert!(
                    !node.watchers.is_empty() || c.len() >= 2,
                    "a node without watchers must branch (len {}, children {})",
                    node.watchers.len(),
                    c.len()
                );
            }
            node.watchers.check_invariants();
            watchers += node.watchers.len();
            prefixes += usize::from(!node.watchers.is_empty());
            stack.extend(c.nodes().iter().map(|n| (n, false)));
        }
        assert_eq!(watchers, self.watchers, "watcher count out of step");
        assert_eq!(prefixes, self.prefixes, "prefix count out of step");
    }
}

/// Removes watcher `id` from the node at `prefix` (non-empty, known to hold it) below `root`,
/// then restores path compression at that node and its parent, the only two that can break.
fn remove_below<W: WatcherEntry>(root: &mut TrieNode<W>, prefix: &[u8], id: u64) -> Option<W> {
    let mut parent = root;
    let mut parent_is_root = true;
    let mut rest = prefix;
    loop {
        let (&b, tail) = rest.split_first()?;
        let label_len = parent.children.get(b)?.label.len();
        if tail.len() > label_len {
            parent = parent.children.get_mut(b)?;
            parent_is_root = false;
            rest = &tail[label_len..];
            continue;
        }
        let target = parent.children.get_mut(b)?;
        let removed = target.watchers.remove(id);
        if target.watchers.is_empty() {
            match target.children.len() {
                0 => drop(parent.children.remove(b)),
                1 => target.absorb_only_child(),
                _ => {}
            }
        }
        if !parent_is_root && parent.watchers.is_empty() && parent.children.len() == 1 {
            parent.absorb_only_child();
        }
        return removed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    struct W(u64);
    impl WatcherEntry for W {
        fn id_ref(&self) -> &u64 {
            &self.0
        }
    }

    fn matches(trie: &PrefixTrie<W>, key: &[u8]) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        trie.for_each_match(key, &mut |len, list| {
            let mut ids = Vec::new();
            list.for_each(&mut |w| ids.push(w.0));
            ids.sort_unstable();
            out.extend(ids.into_iter().map(|id| (len, id)));
        });
        out
    }

    #[test]
    fn walk_finds_every_leading_prefix_shortest_first() {
        let mut trie = PrefixTrie::new();
        for (id, p) in ["/", "/a/", "/a/b/", "/a/bc/", "/b/", "/a/b/c/d/"]
            .iter()
            .enumerate()
        {
            trie.insert(p.as_bytes(), W(id as u64));
            trie.check_invariants();
        }
        assert_eq!(matches(&trie, b"/a/b/c"), vec![(1, 0), (3, 1), (5, 2)]);
        assert_eq!(matches(&trie, b"/a/"), vec![(1, 0), (3, 1)]);
        assert_eq!(matches(&trie, b"/a/bc/x"), vec![(1, 0), (3, 1), (6, 3)]);
        assert_eq!(matches(&trie, b"/a/b"), vec![(1, 0), (3, 1)]);
        assert_eq!(matches(&trie, b"a/b"), vec![]);
        assert_eq!(matches(&trie, b""), vec![]);
        assert_eq!(trie.prefix_count(), 6);
    }

    #[test]
    fn removing_restores_compression_and_empties_the_trie() {
        let mut trie = PrefixTrie::new();
        let prefixes = ["/a/b/c/", "/a/b/", "/a/x/", "/a/", "/", "/a/b/d/"];
        for (id, p) in prefixes.iter().enumerate() {
            trie.insert(p.as_bytes(), W(id as u64));
        }
        for (id, p) in prefixes.iter().enumerate() {
            assert!(trie.remove(p.as_bytes(), 99).is_none());
            assert_eq!(
                trie.remove(p.as_bytes(), id as u64).map(|w| w.0),
                Some(id as u64)
            );
            trie.check_invariants();
            assert!(trie.get(p.as_bytes()).is_none());
        }
        assert_eq!(trie.watcher_count(), 0);
        assert_eq!(trie.root.children.len(), 0);
        assert!(trie.root.children.nodes.is_none());
    }

    #[test]
    fn a_deep_chain_builds_walks_and_drops_without_recursion() {
        let depth = 100_000;
        let key: Vec<u8> = b"/".repeat(depth);
        let mut trie = PrefixTrie::new();
        for (id, len) in (1..=depth).step_by(1000).enumerate() {
            trie.insert(&key[..len], W(id as u64));
        }
        trie.insert(&key, W(u64::MAX));
        let mut n = 0;
        trie.for_each_match(&key, &mut |_, l| n += l.len());
        assert_eq!(n, 101);
        let copy = trie.clone();
        trie.remove(&key, u64::MAX);
        drop(trie);
        copy.check_invariants();
        drop(copy);
        // A chain with a watcher at each of 30,000 levels (a node each), dropped whole: a
        // recursive drop would need far more than a test thread's 2 MiB of stack.
        let mut chain = PrefixTrie::new();
        for len in 1..=30_000 {
            chain.insert(&key[..len], W(len as u64));
        }
        drop(chain);
    }

    #[test]
    fn older_clones_are_unchanged_by_writes() {
        let mut trie = PrefixTrie::new();
        trie.insert(b"/a/", W(1));
        let before = trie.clone();
        trie.insert(b"/a/b/", W(2));
        trie.remove(b"/a/", 1);
        assert_eq!(matches(&before, b"/a/b/c"), vec![(3, 1)]);
        assert_eq!(matches(&trie, b"/a/b/c"), vec![(5, 2)]);
    }

    proptest::proptest! {
        #[test]
        fn walk_agrees_with_a_naive_model(
            ops in proptest::collection::vec((proptest::collection::vec(0u8..3, 0..6), 0u64..4, proptest::bool::ANY), 1..200),
            probes in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..8), 1..20),
        ) {
            // Paths over a 3-letter alphabet ({'/', 'a', 'b'}) so that they share prefixes often.
            let spell = |v: &[u8]| v.iter().map(|&c| b"/ab"[usize::from(c)]).collect::<Vec<u8>>();
            let mut trie = PrefixTrie::new();
            let mut model: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
            for (path, id, insert) in ops {
                let path = spell(&path);
                let ids = model.entry(path.clone()).or_default();
                if insert && !ids.contains(&id) {
                    ids.push(id);
                    trie.insert(&path, W(id));
                } else if !insert {
                    let had = ids.iter().position(|&x| x == id).map(|i| ids.remove(i));
                    proptest::prop_assert_eq!(trie.remove(&path, id).map(|w| w.0), had);
                }
                model.retain(|_, v| !v.is_empty());
                trie.check_invariants();
            }
            for probe in probes {
                let key = spell(&probe);
                let mut want: Vec<(usize, u64)> = model.iter()
                    .filter(|(p, _)| key.starts_with(p))
                    .flat_map(|(p, ids)| ids.iter().map(move |&id| (p.len(), id)))
                    .collect();
                want.sort_unstable();
                proptest::prop_assert_eq!(matches(&trie, &key), want);
            }
        }
    }
}
