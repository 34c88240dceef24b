//! Prefix watchers: a hash trie over the key's segments, the layout of a file system's
//! directory-entry cache.
//!
//! A prefix is a path of *segments*, each ending with the separator `/`: `/a/bc/` is `/`,
//! `a/`, `bc/`. Every node of the trie stands for one such path and is an entry in **one**
//! hash table. Its hash is its *path hash*, chained segment by segment from the root
//! (`h(P + s) = H(h(P), s)`); it is identified by its parent's node id and its own segment.
//! A key `K` matches the watchers of every node whose path is a leading part of `K`, so the
//! walk takes `K`'s segments in order: one probe per segment, each hashing only that
//! segment's bytes (the whole walk reads `K` once). It stops at the first segment that has
//! no node, at a node without children, or at the trie's depth.
//!
//! ```text
//!   node (hash, parent, segment)        prefixes watched: "/", "/a/", "/a/bc/"
//!   #1 (h("/"),      root, "/")    watchers of "/"
//!   #2 (h("/a/"),    #1,   "a/")   watchers of "/a/"       key "/a/bc/d" probes h("/"),
//!   #3 (h("/a/bc/"), #2,   "bc/")  watchers of "/a/bc/"    h("/a/"), h("/a/bc/"); "d" is
//!                                                          not a whole segment
//! ```
//!
//! A path hash depends on the key's bytes only, not on the node found one level up, so the
//! walk computes a batch of them, issues all the probes, and only then follows the chain,
//! checking parent ids: the probes' cache misses overlap instead of waiting for each other.
//!
//! Why not a byte radix trie (the first version): on real key sets (`svc17/`, `node203/`)
//! names that share leading characters branch a node per differing byte, two or three nodes
//! per segment, each a dependent cache miss; a flat table costs one probe per segment, and
//! its control bytes for the upper levels stay in cache.
//!
//! Any prefix that ends with the separator (or is empty) can be stored, and "`K` starts with
//! `P`" is then the same as "`P`'s segments lead `K`'s", so this is byte-prefix matching
//! restricted to separator-terminated prefixes, which the registry requires. Other forms
//! (byte prefixes ending mid-segment, wildcards on a segment) fit as a second kind of child
//! consulted at each step of the same walk.
//!
//! # Invariants (checked by [`PrefixTrie::check_invariants`])
//! - Every segment is non-empty, ends with the separator and holds no other separator.
//! - Every node's parent exists (or is the root); its `path` is the parent's path followed
//!   by its segment, and its path hash chains the parent's; node ids are unique.
//! - `depth_nodes` counts the nodes at each depth, without trailing zeros.
//! - A node has watchers or children (a node left with neither is removed, and so on up).
//! - Each node's `children` is the number of nodes naming it as parent.
//! - `watchers` counts every watcher; `prefixes` counts the paths that have watchers.
//!
//! # Complexity (L = prefix or key length in bytes, d = its segments, m = watchers on the
//! touched prefix)
//! | operation | cost |
//! |---|---|
//! | `insert` / `remove` | O(L) to hash + O(d) probes + O(1) in the list (amortised: the table grows and shrinks by doubling) |
//! | `for_each_match` | O(L) to hash + at most d probes + one visit per matching watcher |
//! | `clone` | O(nodes) (tests and fuzzing only) |
//!
//! Nothing recurses: a prefix of 100,000 slashes is a chain of 100,000 entries, built,
//! walked and removed in loops.

use bytes::Bytes;

use super::segment::{PathHasher, Segment, SegmentEnds, SEPARATOR};
use super::table::{Layout, Table};
use super::watchers::WatcherList;
use super::WatcherEntry;

/// The id of the root: the empty path, which is nobody's entry in the table.
const ROOT: u64 = 0;

/// The root's path hash, where every chain starts.
const ROOT_HASH: u64 = 0;

/// Segments whose probes a walk issues together, before it looks at any result: their
/// hashes need no memory access (each chains the previous hash, not the previous node), so
/// the probes are independent and their cache misses overlap. Four, not eight: most walks
/// end within a few levels, and probes past the trie's end are work for nothing (eight were
/// 7% slower in `deep`, and no faster in `mixed`).
const PROBE_BATCH: usize = 4;

/// Prefix watcher index.
pub(crate) struct PrefixTrie<W> {
    /// Every node but the root, keyed by `(parent, segment)`.
    nodes: Table<Node<W>>,
    hasher: PathHasher,
    /// Watchers of the empty prefix, which matches every key.
    root_watchers: WatcherList<W>,
    /// Number of nodes whose parent is the root.
    root_children: usize,
    /// `depth_nodes[d - 1]`: nodes `d` segments deep; no trailing zeros. A walk never probes
    /// deeper than its length.
    depth_nodes: Vec<usize>,
    next_id: u64,
    watchers: usize,
    prefixes: usize,
}

/// One prefix path. The fields a walk reads (a probe compares the path hash and segment, the
/// chain check the parent, then `watched` and `children` decide whether to go on) come first
/// and fill the first 64-byte line; the node is 128-aligned, so it is one 128-byte pair of
/// lines and a probe that misses waits for one line, not three (a 120-byte node at the
/// table's 16-byte alignment straddled up to three). The path and the list, read only when
/// the node has watchers or on writes, are the second line.
#[repr(C, align(128))]
struct Node<W> {
    /// Hash of the whole path, chained segment by segment from the root: the table's hash.
    path_hash: u64,
    parent: u64,
    id: u64,
    /// Nodes whose parent is this one. A node takes well over 64 bytes in each of two
    /// tables, so 2^32 of them would not fit in memory.
    children: u32,
    /// Whether `watchers` is non-empty, kept in the first line so that a walk through a
    /// node without watchers reads nothing else.
    watched: bool,
    /// The path's last segment as a probe compares it (its bytes are the end of `path`).
    segment: Segment,
    /// The whole path (a slice of the first prefix registered through this node).
    path: Bytes,
    watchers: WatcherList<W>,
}

impl<W: Clone> Clone for Node<W> {
    fn clone(&self) -> Self {
        Self {
            path_hash: self.path_hash,
            parent: self.parent,
            id: self.id,
            children: self.children,
            watched: self.watched,
            segment: self.segment,
            path: self.path.clone(),
            watchers: self.watchers.clone(),
        }
    }
}

impl<W> Node<W> {
    /// Whether this is the node with path hash `hash` whose last segment is `segment`
    /// (summarised as `summary`). Reads the first line only, unless the segment is longer
    /// than a summary identifies.
    #[inline]
    fn is_for(&self, hash: u64, summary: Segment, segment: &[u8]) -> bool {
        self.path_hash == hash
            && self.segment == summary
            && (summary.is_exact() || self.path.ends_with(segment))
    }
}

impl<W: Clone> Clone for PrefixTrie<W> {
    fn clone(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
            hasher: self.hasher.clone(),
            root_watchers: self.root_watchers.clone(),
            root_children: self.root_children,
            depth_nodes: self.depth_nodes.clone(),
            next_id: self.next_id,
            watchers: self.watchers,
            prefixes: self.prefixes,
        }
    }
}

/// The segments of `path`, each with its end offset; a last piece without the separator is
/// not a segment and is left out.
#[inline]
fn segments(path: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut start = 0;
    SegmentEnds::new(path).map(move |end| {
        let segment = &path[start..end];
        start = end;
        (segment, end)
    })
}

/// The node `step` found (it must still be in `nodes`).
fn node_mut<W>(nodes: &mut Table<Node<W>>, step: Step) -> &mut Node<W> {
    nodes
        .find_mut(step.hash, |n| n.id == step.id)
        .expect("a node on the walked path")
}

/// One step of a walk: the table hash of a node and its id.
#[derive(Clone, Copy)]
struct Step {
    hash: u64,
    id: u64,
}

impl<W: WatcherEntry> PrefixTrie<W> {
    /// An empty trie hashing with `hasher` (the two snapshots of a pair share seeds, so
    /// that their tables have one layout).
    pub(crate) fn with_hasher(hasher: PathHasher) -> Self {
        Self {
            nodes: Table::new(),
            hasher,
            root_watchers: WatcherList::Empty,
            root_children: 0,
            depth_nodes: Vec::new(),
            next_id: ROOT + 1,
            watchers: 0,
            prefixes: 0,
        }
    }

    /// An empty trie with fresh hash seeds.
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::with_hasher(PathHasher::new())
    }

    /// An empty trie with this one's hash seeds, for the other snapshot of a pair.
    pub(crate) fn empty_twin(&self) -> Self {
        Self::with_hasher(self.hasher.clone())
    }

    /// The watchers of the empty prefix.
    pub(crate) fn root_watchers(&self) -> &WatcherList<W> {
        &self.root_watchers
    }

    /// The bucket arrangement, for a sweep resuming across snapshots.
    pub(crate) fn layout(&self) -> Layout {
        self.nodes.layout()
    }

    /// Number of buckets a sweep walks.
    pub(crate) fn buckets(&self) -> usize {
        self.nodes.buckets()
    }

    /// The prefix and watchers of the node in bucket `index`, if it is full (the list may
    /// be empty: a node kept for its children).
    #[inline]
    pub(crate) fn bucket(&self, index: usize) -> Option<(&[u8], &WatcherList<W>)> {
        self.nodes.bucket(index).map(|n| (&n.path[..], &n.watchers))
    }

    /// Number of watchers over all prefixes.
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers
    }

    /// Number of distinct prefixes that have watchers.
    pub(crate) fn prefix_count(&self) -> usize {
        self.prefixes
    }

    /// The path hash of `segment` under a node whose path hash is `parent_hash`.
    #[inline]
    fn hash(&self, parent_hash: u64, segment: &[u8]) -> u64 {
        self.hasher
            .chain(parent_hash, Segment::of(segment), segment)
    }

    /// The node for `segment` under node `parent`, whose path hash chains to `hash`.
    #[inline]
    fn find(&self, hash: u64, parent: u64, segment: &[u8]) -> Option<&Node<W>> {
        self.nodes.find(hash, |n| {
            n.parent == parent && n.is_for(hash, Segment::of(segment), segment)
        })
    }

    /// The nodes along `path`, root excluded; `None` if one is missing or `path` does not end
    /// with the separator.
    fn walk(&self, path: &[u8]) -> Option<Vec<Step>> {
        if path.last().is_some_and(|&b| b != SEPARATOR) {
            return None;
        }
        let mut steps = Vec::new();
        let (mut parent, mut parent_hash) = (ROOT, ROOT_HASH);
        for (segment, _) in segments(path) {
            let hash = self.hash(parent_hash, segment);
            parent = self.find(hash, parent, segment)?.id;
            parent_hash = hash;
            steps.push(Step { hash, id: parent });
        }
        Some(steps)
    }

    fn list(&self, steps: &[Step]) -> Option<&WatcherList<W>> {
        match steps.last() {
            None => Some(&self.root_watchers),
            Some(last) => self
                .nodes
                .find(last.hash, |n| n.id == last.id)
                .map(|n| &n.watchers),
        }
    }

    /// The watchers registered on exactly `prefix`.
    pub(crate) fn get(&self, prefix: &[u8]) -> Option<&WatcherList<W>> {
        let steps = self.walk(prefix)?;
        self.list(&steps).filter(|w| !w.is_empty())
    }

    /// Calls `f(len, watchers)` for every prefix `key[..len]` that has watchers, shortest first.
    ///
    /// Works in batches of [`PROBE_BATCH`] segments: hash them all (no memory access), probe
    /// them all (independent loads, so their misses overlap), then follow the chain in order,
    /// checking that each node found hangs under the one before. A probe matches on path
    /// hash and segment only; in the rare case of a full 64-bit collision the chain check
    /// fails and that level is probed again exactly.
    #[inline]
    pub(crate) fn for_each_match<F: FnMut(usize, &WatcherList<W>)>(&self, key: &[u8], f: &mut F) {
        if !self.root_watchers.is_empty() {
            f(0, &self.root_watchers);
        }
        if self.root_children == 0 {
            return;
        }
        let mut ends = SegmentEnds::new(key).take(self.depth_nodes.len());
        let (mut parent, mut parent_hash, mut start) = (ROOT, ROOT_HASH, 0);
        loop {
            // Segment `i` of the batch is `key[bounds[i]..bounds[i + 1]]`.
            let mut bounds = [start; PROBE_BATCH + 1];
            let mut hashes = [0u64; PROBE_BATCH];
            let mut summaries = [Segment::of(&[]); PROBE_BATCH];
            let mut n = 0;
            let mut hash = parent_hash;
            for end in ends.by_ref().take(PROBE_BATCH) {
                let segment = &key[bounds[n]..end];
                summaries[n] = Segment::of(segment);
                hash = self.hasher.chain(hash, summaries[n], segment);
                hashes[n] = hash;
                bounds[n + 1] = end;
                n += 1;
            }
            if n == 0 {
                return;
            }
            let mut found: [Option<&Node<W>>; PROBE_BATCH] = [None; PROBE_BATCH];
            for i in 0..n {
                let (hash, summary) = (hashes[i], summaries[i]);
                let segment = &key[bounds[i]..bounds[i + 1]];
                found[i] = self.nodes.find(hash, |x| x.is_for(hash, summary, segment));
            }
            for i in 0..n {
                let node = match found[i] {
                    Some(node) if node.parent == parent => node,
                    Some(_) => match self.find(hashes[i], parent, &key[bounds[i]..bounds[i + 1]]) {
                        Some(node) => node,
                        None => return,
                    },
                    None => return,
                };
                if node.watched {
                    f(bounds[i + 1], &node.watchers);
                }
                if node.children == 0 {
                    return;
                }
                parent = node.id;
                parent_hash = hashes[i];
            }
            start = bounds[n];
        }
    }

    /// Adds a watcher on `prefix`, which must be empty or end with the separator (the
    /// registry's rule; anything else is a bug in the caller).
    pub(crate) fn insert(&mut self, prefix: Bytes, watcher: W) {
        assert!(
            prefix.last().is_none_or(|&b| b == SEPARATOR),
            "a stored prefix ends with the separator"
        );
        let mut parent: Option<Step> = None;
        for (depth, (segment, end)) in segments(&prefix).enumerate() {
            let parent_id = parent.map_or(ROOT, |p| p.id);
            let hash = self.hash(parent.map_or(ROOT_HASH, |p| p.hash), segment);
            if let Some(node) = self.find(hash, parent_id, segment) {
                parent = Some(Step { hash, id: node.id });
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            match parent {
                None => self.root_children += 1,
                Some(step) => node_mut(&mut self.nodes, step).children += 1,
            }
            if self.depth_nodes.len() == depth {
                self.depth_nodes.push(0);
            }
            self.depth_nodes[depth] += 1;
            let node = Node {
                path_hash: hash,
                parent: parent_id,
                id,
                children: 0,
                watched: false,
                segment: Segment::of(segment),
                path: prefix.slice(..end),
                watchers: WatcherList::Empty,
            };
            self.nodes.insert_unique(hash, node, |n| n.path_hash);
            parent = Some(Step { hash, id });
        }
        let list = match parent {
            None => &mut self.root_watchers,
            Some(step) => {
                let node = node_mut(&mut self.nodes, step);
                node.watched = true;
                &mut node.watchers
            }
        };
        if list.is_empty() {
            self.prefixes += 1;
        }
        list.insert(watcher);
        self.watchers += 1;
    }

    /// Removes the watcher `id` from `prefix`, then every node left without watchers and
    /// children, from the end of the path up.
    pub(crate) fn remove(&mut self, prefix: &[u8], id: u64) -> Option<W> {
        let steps = self.walk(prefix)?;
        self.list(&steps)?.get(id)?;
        let (list, watched) = match steps.last() {
            None => (&mut self.root_watchers, None),
            Some(&last) => {
                let node = node_mut(&mut self.nodes, last);
                (&mut node.watchers, Some(&mut node.watched))
            }
        };
        let removed = list.remove(id)?;
        if list.is_empty() {
            self.prefixes -= 1;
            if let Some(watched) = watched {
                *watched = false;
            }
        }
        self.watchers -= 1;
        for at in (0..steps.len()).rev() {
            let step = steps[at];
            let node = node_mut(&mut self.nodes, step);
            if node.watched || node.children > 0 {
                break;
            }
            if let Some(entry) = self.nodes.find_entry(step.hash, |n| n.id == step.id) {
                entry.remove();
            }
            self.depth_nodes[at] -= 1;
            while self.depth_nodes.last() == Some(&0) {
                self.depth_nodes.pop();
            }
            match at.checked_sub(1) {
                None => self.root_children -= 1,
                Some(up) => node_mut(&mut self.nodes, steps[up]).children -= 1,
            }
        }
        self.shrink_if_sparse();
        Some(removed)
    }

    /// Gives memory back once the table is less than an eighth full (amortised O(1)).
    fn shrink_if_sparse(&mut self) {
        if self.nodes.shrink_if_sparse(|n| n.path_hash) {
            self.depth_nodes.shrink_to_fit();
        }
    }

    /// Panics with a description if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        use std::collections::HashMap;
        let by_id: HashMap<u64, &Node<W>> = self.nodes.iter().map(|n| (n.id, n)).collect();
        assert_eq!(by_id.len(), self.nodes.len(), "node ids are unique");
        let mut children: HashMap<u64, u32> = HashMap::new();
        let (mut watchers, mut prefixes) = (self.root_watchers.len(), 0);
        prefixes += usize::from(!self.root_watchers.is_empty());
        self.root_watchers.check_invariants();
        for node in self.nodes.iter() {
            assert!(
                node.segment.len() <= node.path.len(),
                "a node's segment ends its path"
            );
            let segment = &node.path[node.path.len() - node.segment.len()..];
            assert_eq!(
                node.segment,
                Segment::of(segment),
                "a node's segment summary"
            );
            assert!(
                segment.last() == Some(&SEPARATOR)
                    && !segment[..segment.len() - 1].contains(&SEPARATOR),
                "a segment ends with the only separator it holds"
            );
            let (parent_path, parent_hash): (&[u8], u64) = match node.parent {
                ROOT => (&[], ROOT_HASH),
                id => {
                    let parent = by_id.get(&id).expect("the parent of a node exists");
                    (&parent.path, parent.path_hash)
                }
            };
            assert_eq!(
                node.path_hash,
                self.hash(parent_hash, segment),
                "a node's path hash chains its parent's"
            );
            // In full only for paths of ordinary length: on a chain of 100,000 segments the
            // full comparison would be quadratic. Lengths and suffixes are always checked.
            assert!(
                node.path.len() == parent_path.len() + segment.len()
                    && node.path.ends_with(segment)
                    && (node.path.len() > 4096 || node.path.starts_with(parent_path)),
                "a node's path is its parent's path and its segment"
            );
            assert!(
                node.id != ROOT && node.id < self.next_id,
                "node id in range"
            );
            assert!(
                self.find(node.path_hash, node.parent, segment)
                    .is_some_and(|found| found.id == node.id),
                "a node is found under its own key"
            );
            assert_eq!(
                node.watched,
                !node.watchers.is_empty(),
                "a node's watched flag says whether its list is empty"
            );
            assert!(
                node.watched || node.children > 0,
                "a node without watchers or children is removed"
            );
            *children.entry(node.parent).or_default() += 1;
            node.watchers.check_invariants();
            watchers += node.watchers.len();
            prefixes += usize::from(!node.watchers.is_empty());
        }
        assert_eq!(
            children.get(&ROOT).map_or(0, |&c| c as usize),
            self.root_children,
            "root child count out of step"
        );
        for node in self.nodes.iter() {
            assert_eq!(
                children.get(&node.id).copied().unwrap_or(0),
                node.children,
                "child count out of step"
            );
        }
        assert_eq!(watchers, self.watchers, "watcher count out of step");
        assert_eq!(prefixes, self.prefixes, "prefix count out of step");
        // Depth = segments in the path: memoised walks up, linear overall.
        let mut depth_of: HashMap<u64, usize> = HashMap::from([(ROOT, 0)]);
        let mut depths: Vec<usize> = Vec::new();
        for node in self.nodes.iter() {
            let mut chain = vec![node.id];
            let mut at = node.parent;
            while !depth_of.contains_key(&at) {
                chain.push(at);
                at = by_id[&at].parent;
                assert!(chain.len() <= self.nodes.len(), "parent links form a cycle");
            }
            let mut depth = depth_of[&at];
            for id in chain.into_iter().rev() {
                depth += 1;
                if depth_of.insert(id, depth).is_none() {
                    if depths.len() < depth {
                        depths.resize(depth, 0);
                    }
                    depths[depth - 1] += 1;
                }
            }
        }
        assert_eq!(depths, self.depth_nodes, "depth counts out of step");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    struct W(u64);
    impl WatcherEntry for W {
        fn id(&self) -> u64 {
            self.0
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

    /// What a walk reads of a node fits in its first cache line, and a node is one aligned
    /// pair of lines.
    #[test]
    fn a_walk_reads_one_line_of_a_node() {
        use std::mem::{align_of, offset_of, size_of};
        type N = Node<crate::sink::Watcher>;
        assert_eq!((size_of::<N>(), align_of::<N>()), (128, 128));
        let ends = [
            offset_of!(N, path_hash) + 8,
            offset_of!(N, parent) + 8,
            offset_of!(N, id) + 8,
            offset_of!(N, children) + 4,
            offset_of!(N, watched) + 1,
            offset_of!(N, segment) + size_of::<Segment>(),
        ];
        assert!(ends.iter().all(|&end| end <= 64), "{ends:?}");
    }

    #[test]
    fn walk_finds_every_leading_prefix_shortest_first() {
        let mut trie = PrefixTrie::new();
        for (id, p) in ["/", "/a/", "/a/b/", "/a/bc/", "/b/", "/a/b/c/d/"]
            .iter()
            .enumerate()
        {
            trie.insert(Bytes::from_static(p.as_bytes()), W(id as u64));
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
    fn removing_the_last_watcher_removes_its_empty_ancestors() {
        let mut trie = PrefixTrie::new();
        let prefixes = ["/a/b/c/", "/a/b/", "/a/x/", "/a/", "/", "/a/b/d/", ""];
        for (id, p) in prefixes.iter().enumerate() {
            trie.insert(Bytes::from_static(p.as_bytes()), W(id as u64));
        }
        trie.check_invariants();
        assert_eq!(trie.nodes.len(), 6, "one node per distinct non-empty path");
        for (id, p) in prefixes.iter().enumerate() {
            assert!(trie.remove(p.as_bytes(), 99).is_none());
            assert_eq!(
                trie.remove(p.as_bytes(), id as u64).map(|w| w.0),
                Some(id as u64)
            );
            trie.check_invariants();
            assert!(trie.get(p.as_bytes()).is_none());
        }
        assert_eq!((trie.watcher_count(), trie.prefix_count()), (0, 0));
        assert_eq!((trie.nodes.len(), trie.root_children), (0, 0));
    }

    #[test]
    fn a_deep_chain_builds_walks_and_drops_without_recursion() {
        let depth = 100_000;
        let key = Bytes::from(b"/".repeat(depth));
        let mut trie = PrefixTrie::new();
        for (id, len) in (1..=depth).step_by(10_000).enumerate() {
            trie.insert(key.slice(..len), W(id as u64));
        }
        trie.insert(key.clone(), W(u64::MAX));
        let mut n = 0;
        trie.for_each_match(&key, &mut |_, l| n += l.len());
        assert_eq!(n, 11);
        let copy = trie.clone();
        trie.remove(&key, u64::MAX);
        drop(trie);
        copy.check_invariants();
        drop(copy);
        // One watcher at the bottom of a 100,000-segment chain: removing it removes every
        // ancestor, in a loop.
        let mut bottom = PrefixTrie::new();
        bottom.insert(key.clone(), W(1));
        assert_eq!(bottom.nodes.len(), depth);
        assert!(bottom.remove(&key, 1).is_some());
        assert_eq!((bottom.nodes.len(), bottom.root_children), (0, 0));
    }

    #[test]
    fn older_clones_are_unchanged_by_writes() {
        let mut trie = PrefixTrie::new();
        trie.insert(Bytes::from_static(b"/a/"), W(1));
        let before = trie.clone();
        trie.insert(Bytes::from_static(b"/a/b/"), W(2));
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
                // Stored prefixes end with the separator (or are empty).
                let mut path = spell(&path);
                if path.last().is_some_and(|&b| b != b'/') {
                    path.push(b'/');
                }
                let ids = model.entry(path.clone()).or_default();
                if insert && !ids.contains(&id) {
                    ids.push(id);
                    trie.insert(Bytes::from(path.clone()), W(id));
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
