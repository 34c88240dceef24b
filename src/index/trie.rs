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
//! A node is one 64-byte line holding what a walk reads: path hash, parent, id, child
//! count, the segment's two-word summary (`segment.rs`), a has-watchers flag, its tail
//! count and the tails' length mask (`tails.rs`). Its path
//! and watcher list live apart, in a dense vector of *extras*, and only nodes that have
//! watchers (or a segment longer than its summary identifies, compared against the path)
//! have one: most nodes are steps on the way to a watched prefix, and at 64 bytes they
//! halve the table a walk probes and the memory a registration faults in.
//!
//! ```text
//!   table (64-byte nodes)                         extras (dense)
//!   #2 h("/a/")   parent #1  "a/"   extra ─────▶  [0] "/a/"     watchers of "/a/"
//!   #4 h("/a/x/") parent #2  "x/"   extra: none   (no watchers, short segment)
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
//! restricted to separator-terminated prefixes. Byte prefixes that end mid-segment hang off
//! the node of their whole segments as tails (`tails.rs`), consulted at each step of the
//! same walk; wildcard patterns have an index of their own (`patterns.rs`).
//!
//! # Invariants (checked by [`PrefixTrie::check_invariants`])
//! - Every segment is non-empty, ends with the separator and holds no other separator.
//! - Every node's parent exists (or is the root); its path hash chains the parent's with its
//!   segment; node ids are unique.
//! - A node has an extra exactly when it has watchers or a segment over 16 bytes; the extra
//!   names its node (hash and id), its path is the parent's path followed by the segment,
//!   and every extra belongs to a node. `watched` says whether the extra's list is non-empty.
//! - `depth_nodes` counts the nodes at each depth, without trailing zeros.
//! - A node has watchers, children or tails (a node left with none is removed, and so on
//!   up); its `tails` and `tail_lengths` are those of the tails hung on it.
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

use super::chunks::Chunks;
use super::segment::{PathHasher, Segment, SegmentEnds, SEPARATOR};
use super::table::{Layout, Table};
use super::tails::{split, Tails};
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
    nodes: Table<Node>,
    /// The paths and watcher lists of the nodes that have watchers (or a segment too long
    /// for its summary to identify), stored densely apart from the table: most nodes are
    /// only a step on the way to a watched one and need neither.
    extras: Chunks<Extra<W>>,
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
    /// Byte-prefix watchers, hung on nodes as tails (`tails.rs`).
    tails: Tails<W>,
    /// Distinct tails hung on the root, and their length mask.
    root_tails: u32,
    root_tail_lengths: u16,
}

/// What a walk found: the watchers of a slash prefix, or of a byte prefix (a tail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// A slash prefix of this many bytes.
    Prefix(usize),
    /// A byte prefix of this many bytes.
    BytePrefix(usize),
}

/// One prefix path: 64 bytes, one cache line, everything a walk reads (a probe compares the
/// path hash and segment, the chain check the parent, then `watched` and `children` decide
/// whether to go on). Its path and watchers, when it has any, are an [`Extra`].
#[derive(Clone)]
#[repr(C, align(64))]
struct Node {
    /// Hash of the whole path, chained segment by segment from the root: the table's hash.
    path_hash: u64,
    parent: u64,
    id: u64,
    /// Nodes whose parent is this one. A node takes 64 bytes in each of two tables, so 2^32
    /// of them would not fit in memory.
    children: u32,
    /// Where this node's [`Extra`] is in `extras`, or [`NO_EXTRA`].
    extra: u32,
    /// The path's last segment as a probe compares it.
    segment: Segment,
    /// Distinct byte-prefix tails hung on this node (`tails.rs`).
    tails: u32,
    /// Whether the node has watchers (then `extra` is set).
    watched: bool,
    /// The tails' length mask (`Tails::length_mask`), so that a walk probes short tails
    /// without reading their length list.
    tail_lengths: u16,
}

/// What a node has beyond its place in the trie, when it needs it: the whole path (for the
/// sweep, which reports it, and to compare a segment longer than its summary) and the list.
struct Extra<W> {
    /// The whole path (a slice of the first prefix registered through this node).
    path: Bytes,
    watchers: WatcherList<W>,
    /// The node's table hash and id, to repoint it when this entry moves.
    path_hash: u64,
    id: u64,
}

impl<W: Clone> Clone for Extra<W> {
    fn clone(&self) -> Self {
        Self {
            path: self.path.clone(),
            watchers: self.watchers.clone(),
            path_hash: self.path_hash,
            id: self.id,
        }
    }
}

/// `Node::extra` of a node without one.
const NO_EXTRA: u32 = u32::MAX;

impl<W: Clone> Clone for PrefixTrie<W> {
    fn clone(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
            extras: self.extras.clone(),
            hasher: self.hasher.clone(),
            root_watchers: self.root_watchers.clone(),
            root_children: self.root_children,
            depth_nodes: self.depth_nodes.clone(),
            next_id: self.next_id,
            watchers: self.watchers,
            prefixes: self.prefixes,
            tails: self.tails.clone(),
            root_tails: self.root_tails,
            root_tail_lengths: self.root_tail_lengths,
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
fn node_mut(nodes: &mut Table<Node>, step: Step) -> &mut Node {
    nodes
        .find_mut(step.hash, |n| n.id == step.id)
        .expect("a node on the walked path")
}

/// Stores a new extra (no watchers yet) for the node `(path_hash, id)`; returns its index.
fn push_extra<W>(extras: &mut Chunks<Extra<W>>, path: Bytes, path_hash: u64, id: u64) -> u32 {
    let at = extras.push(Extra {
        path,
        watchers: WatcherList::Empty,
        path_hash,
        id,
    });
    // Each extra takes over 72 bytes in each of two snapshots: 2^32 - 1 of them would need
    // more than 600 GB.
    u32::try_from(at)
        .ok()
        .filter(|&i| i != NO_EXTRA)
        .expect("fewer than 2^32 - 1 watched prefixes")
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
            extras: Chunks::default(),
            hasher,
            root_watchers: WatcherList::Empty,
            root_children: 0,
            depth_nodes: Vec::new(),
            next_id: ROOT + 1,
            watchers: 0,
            prefixes: 0,
            tails: Tails::new(),
            root_tails: 0,
            root_tail_lengths: 0,
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

    /// The prefix and watchers of the node in bucket `index`, if it is full and the node
    /// has an extra (its list may be empty: a long segment's node kept for its children).
    #[inline]
    pub(crate) fn bucket(&self, index: usize) -> Option<(&[u8], &WatcherList<W>)> {
        let extra = self.extra(self.nodes.bucket(index)?)?;
        Some((&extra.path[..], &extra.watchers))
    }

    /// The extra of `node`, if it has one.
    #[inline]
    fn extra(&self, node: &Node) -> Option<&Extra<W>> {
        (node.extra != NO_EXTRA).then(|| self.extras.get(node.extra as usize))
    }

    /// Whether `node` is the node with path hash `hash` whose last segment is `segment`
    /// (summarised as `summary`). Reads the node's line only, unless the segment is longer
    /// than a summary identifies.
    #[inline]
    fn is_node_for(&self, node: &Node, hash: u64, summary: Segment, segment: &[u8]) -> bool {
        node.path_hash == hash
            && node.segment == summary
            && (summary.is_exact() || self.extra(node).is_some_and(|e| e.path.ends_with(segment)))
    }

    /// Number of watchers over all slash prefixes.
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers
    }

    /// Number of byte-prefix watchers.
    pub(crate) fn byte_prefix_watcher_count(&self) -> usize {
        self.tails.watcher_count()
    }

    /// Number of distinct byte prefixes with watchers.
    pub(crate) fn byte_prefix_count(&self) -> usize {
        self.tails.pattern_count()
    }

    /// The watchers registered on exactly the byte prefix `pattern`.
    pub(crate) fn byte_prefix_watchers(&self, pattern: &[u8]) -> Option<&WatcherList<W>> {
        let at = split(pattern);
        let node = self.node_of(&pattern[..at])?;
        self.tails.get(&self.hasher, node, &pattern[at..])
    }

    /// The (id, path hash) of the node for `path` (the root for an empty path).
    fn node_of(&self, path: &[u8]) -> Option<(u64, u64)> {
        Some(
            self.walk(path)?
                .last()
                .map_or((ROOT, ROOT_HASH), |step| (step.id, step.hash)),
        )
    }

    /// Byte-prefix entries, for a sweep: layout, buckets, and each bucket's pattern and list.
    pub(crate) fn tails_layout(&self) -> Layout {
        self.tails.layout()
    }

    pub(crate) fn tails_buckets(&self) -> usize {
        self.tails.buckets()
    }

    pub(crate) fn tails_bucket(&self, index: usize) -> Option<(&[u8], &WatcherList<W>)> {
        self.tails.bucket(index)
    }

    /// The byte-prefix entries' bucket placement, to compare twins.
    pub(crate) fn tails_placement(&self) -> Vec<Option<Vec<u8>>> {
        self.tails.placement()
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
    fn find(&self, hash: u64, parent: u64, segment: &[u8]) -> Option<&Node> {
        let summary = Segment::of(segment);
        self.nodes.find(hash, |n| {
            n.parent == parent && self.is_node_for(n, hash, summary, segment)
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
            Some(last) => {
                let node = self.nodes.find(last.hash, |n| n.id == last.id)?;
                self.extra(node).map(|e| &e.watchers)
            }
        }
    }

    /// The watchers registered on exactly `prefix`.
    pub(crate) fn get(&self, prefix: &[u8]) -> Option<&WatcherList<W>> {
        let steps = self.walk(prefix)?;
        self.list(&steps).filter(|w| !w.is_empty())
    }

    /// Calls `f(found, watchers)` for every slash prefix and byte prefix of `key` that has
    /// watchers: at each node the walk reaches (the root first), the node's own watchers,
    /// then the byte prefixes whose tails hang there, shortest first.
    ///
    /// Works in batches of [`PROBE_BATCH`] segments: hash them all (no memory access), probe
    /// them all (independent loads, so their misses overlap), then follow the chain in order,
    /// checking that each node found hangs under the one before. A probe matches on path
    /// hash and segment only; in the rare case of a full 64-bit collision the chain check
    /// fails and that level is probed again exactly.
    #[inline]
    pub(crate) fn for_each_match<F: FnMut(Found, &WatcherList<W>)>(&self, key: &[u8], f: &mut F) {
        if !self.root_watchers.is_empty() {
            f(Found::Prefix(0), &self.root_watchers);
        }
        if self.root_tails > 0 {
            self.match_tails((ROOT, ROOT_HASH), self.root_tail_lengths, key, 0, f);
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
            let mut found: [Option<&Node>; PROBE_BATCH] = [None; PROBE_BATCH];
            for i in 0..n {
                let (hash, summary) = (hashes[i], summaries[i]);
                let segment = &key[bounds[i]..bounds[i + 1]];
                found[i] = self
                    .nodes
                    .find(hash, |x| self.is_node_for(x, hash, summary, segment));
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
                    f(
                        Found::Prefix(bounds[i + 1]),
                        &self.extras.get(node.extra as usize).watchers,
                    );
                }
                if node.tails > 0 {
                    let node_key = (node.id, hashes[i]);
                    self.match_tails(node_key, node.tail_lengths, key, bounds[i + 1], f);
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

    /// Reports the byte prefixes whose tails hang on `node` and begin `key[at..]`.
    #[cold]
    fn match_tails<F: FnMut(Found, &WatcherList<W>)>(
        &self,
        node: (u64, u64),
        mask: u16,
        key: &[u8],
        at: usize,
        f: &mut F,
    ) {
        self.tails
            .for_each_match(&self.hasher, node, mask, &key[at..], &mut |len, list| {
                f(Found::BytePrefix(at + len), list)
            });
    }

    /// Adds a watcher on `prefix`, which must be empty or end with the separator (the
    /// registry's rule; anything else is a bug in the caller).
    /// The prefix's buffer is shared only when the prefix is new.
    pub(crate) fn insert(&mut self, prefix: &Bytes, watcher: W) {
        assert!(
            prefix.last().is_none_or(|&b| b == SEPARATOR),
            "a stored prefix ends with the separator"
        );
        let list = match self.ensure_path(prefix) {
            None => &mut self.root_watchers,
            Some(step) => {
                let node = node_mut(&mut self.nodes, step);
                node.watched = true;
                if node.extra == NO_EXTRA {
                    node.extra = push_extra(&mut self.extras, prefix.clone(), step.hash, step.id);
                }
                &mut self.extras.get_mut(node.extra as usize).watchers
            }
        };
        if list.is_empty() {
            self.prefixes += 1;
        }
        list.insert(watcher);
        self.watchers += 1;
    }

    /// Adds a watcher on the byte prefix `pattern` (any bytes): its tail hangs on the node of
    /// its slash path, created if missing.
    pub(crate) fn insert_byte_prefix(&mut self, pattern: Bytes, watcher: W) {
        let at = split(&pattern);
        let step = self.ensure_path(&pattern.slice(..at));
        let node = step.map_or((ROOT, ROOT_HASH), |s| (s.id, s.hash));
        if self.tails.insert(&self.hasher, node, pattern, at, watcher) {
            let mask = self.tails.length_mask(node);
            match step {
                None => (self.root_tails, self.root_tail_lengths) = (self.root_tails + 1, mask),
                Some(step) => {
                    let n = node_mut(&mut self.nodes, step);
                    (n.tails, n.tail_lengths) = (n.tails + 1, mask);
                }
            }
        }
    }

    /// Removes watcher `id` from the byte prefix `pattern`, then every node left with no
    /// watchers, children or tails, from the end of its path up.
    pub(crate) fn remove_byte_prefix(&mut self, pattern: &[u8], id: u64) -> Option<W> {
        let at = split(pattern);
        let steps = self.walk(&pattern[..at])?;
        let node = steps.last().map_or((ROOT, ROOT_HASH), |s| (s.id, s.hash));
        let (removed, gone) = self.tails.remove(&self.hasher, node, &pattern[at..], id)?;
        if gone {
            let mask = self.tails.length_mask(node);
            match steps.last() {
                None => (self.root_tails, self.root_tail_lengths) = (self.root_tails - 1, mask),
                Some(&step) => {
                    let n = node_mut(&mut self.nodes, step);
                    (n.tails, n.tail_lengths) = (n.tails - 1, mask);
                }
            }
            self.prune(&steps);
        }
        Some(removed)
    }

    /// The nodes along `path` (empty or ending with the separator), created where missing;
    /// returns the last (`None`: the root).
    fn ensure_path(&mut self, path: &Bytes) -> Option<Step> {
        let prefix = path;
        let mut parent: Option<Step> = None;
        for (depth, (segment, end)) in segments(prefix).enumerate() {
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
            let summary = Segment::of(segment);
            // A segment its summary does not identify is compared against the path.
            let extra = match summary.is_exact() {
                true => NO_EXTRA,
                false => push_extra(&mut self.extras, prefix.slice(..end), hash, id),
            };
            let node = Node {
                path_hash: hash,
                parent: parent_id,
                id,
                children: 0,
                extra,
                segment: summary,
                tails: 0,
                watched: false,
                tail_lengths: 0,
            };
            self.nodes.insert_unique(hash, node, |n| n.path_hash);
            parent = Some(Step { hash, id });
        }
        parent
    }

    /// Removes the watcher `id` from `prefix`, then every node left without watchers,
    /// children and tails, from the end of the path up.
    pub(crate) fn remove(&mut self, prefix: &[u8], id: u64) -> Option<W> {
        let steps = self.walk(prefix)?;
        self.list(&steps)?.get(id)?;
        let removed = match steps.last() {
            None => {
                let removed = self.root_watchers.remove(id)?;
                if self.root_watchers.is_empty() {
                    self.prefixes -= 1;
                }
                removed
            }
            Some(&last) => {
                let node = node_mut(&mut self.nodes, last);
                let at = node.extra as usize;
                let list = &mut self.extras.get_mut(at).watchers;
                let removed = list.remove(id)?;
                if list.is_empty() {
                    self.prefixes -= 1;
                    node.watched = false;
                    if node.segment.is_exact() {
                        node.extra = NO_EXTRA;
                        self.drop_extra(at);
                    }
                }
                removed
            }
        };
        self.watchers -= 1;
        self.prune(&steps);
        Some(removed)
    }

    /// Removes every node along `steps` left with no watchers, children or tails, from the
    /// end up.
    fn prune(&mut self, steps: &[Step]) {
        for at in (0..steps.len()).rev() {
            let step = steps[at];
            let node = node_mut(&mut self.nodes, step);
            if node.watched || node.children > 0 || node.tails > 0 {
                break;
            }
            let extra = node.extra;
            if let Some(entry) = self.nodes.find_entry(step.hash, |n| n.id == step.id) {
                entry.remove();
            }
            if extra != NO_EXTRA {
                self.drop_extra(extra as usize);
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
    }

    /// Drops the extra at `at` (its node no longer points to it): the last extra moves into
    /// its place, and that extra's node is pointed at `at`.
    fn drop_extra(&mut self, at: usize) {
        let (_, moved_from) = self.extras.swap_remove(at);
        if moved_from.is_some() {
            let moved = self.extras.get(at);
            let (hash, id) = (moved.path_hash, moved.id);
            node_mut(&mut self.nodes, Step { hash, id }).extra = at as u32;
        }
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
        let by_id: HashMap<u64, &Node> = self.nodes.iter().map(|n| (n.id, n)).collect();
        assert_eq!(by_id.len(), self.nodes.len(), "node ids are unique");
        self.extras.check_invariants();
        let mut children: HashMap<u64, u32> = HashMap::new();
        let (mut watchers, mut prefixes) = (self.root_watchers.len(), 0);
        prefixes += usize::from(!self.root_watchers.is_empty());
        self.root_watchers.check_invariants();
        let mut extras_in_use = 0;
        for node in self.nodes.iter() {
            let extra = self.extra(node);
            assert_eq!(
                extra.is_some(),
                node.watched || !node.segment.is_exact(),
                "a node has an extra exactly when it has watchers or a long segment"
            );
            let segment = match node.segment.bytes() {
                Some(bytes) => bytes,
                None => {
                    let path = &extra.expect("checked above").path;
                    assert!(
                        node.segment.len() <= path.len(),
                        "a node's segment ends its path"
                    );
                    path[path.len() - node.segment.len()..].to_vec()
                }
            };
            assert_eq!(
                node.segment,
                Segment::of(&segment),
                "a node's segment summary"
            );
            assert!(
                segment.last() == Some(&SEPARATOR)
                    && !segment[..segment.len() - 1].contains(&SEPARATOR),
                "a segment ends with the only separator it holds"
            );
            let parent = match node.parent {
                ROOT => None,
                id => Some(*by_id.get(&id).expect("the parent of a node exists")),
            };
            assert_eq!(
                node.path_hash,
                self.hash(parent.map_or(ROOT_HASH, |p| p.path_hash), &segment),
                "a node's path hash chains its parent's"
            );
            assert!(
                node.id != ROOT && node.id < self.next_id,
                "node id in range"
            );
            assert!(
                self.find(node.path_hash, node.parent, &segment)
                    .is_some_and(|found| found.id == node.id),
                "a node is found under its own key"
            );
            assert!(
                node.watched || node.children > 0 || node.tails > 0,
                "a node without watchers, children or tails is removed"
            );
            if let Some(extra) = extra {
                extras_in_use += 1;
                assert_eq!(
                    (extra.path_hash, extra.id),
                    (node.path_hash, node.id),
                    "an extra names its node"
                );
                assert_eq!(
                    node.watched,
                    !extra.watchers.is_empty(),
                    "a node's watched flag says whether its list is empty"
                );
                // In full only for paths of ordinary length: on a chain of 100,000 segments
                // the comparison would be quadratic. Lengths are checked below for all.
                let parent_path = parent.and_then(|p| self.extra(p)).map(|e| &e.path);
                assert!(
                    extra.path.ends_with(&segment)
                        && (extra.path.len() > 4096
                            || parent_path.is_none_or(|p| extra.path.starts_with(p))),
                    "a node's path is its parent's path and its segment"
                );
                extra.watchers.check_invariants();
                watchers += extra.watchers.len();
                prefixes += usize::from(!extra.watchers.is_empty());
            }
            *children.entry(node.parent).or_default() += 1;
        }
        assert_eq!(
            extras_in_use,
            self.extras.len(),
            "every extra belongs to a node"
        );
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
        // Depth = segments in the path, and the path's length: memoised walks up, linear
        // overall.
        let mut depth_of: HashMap<u64, (usize, usize)> = HashMap::from([(ROOT, (0, 0))]);
        let mut depths: Vec<usize> = Vec::new();
        for node in self.nodes.iter() {
            let mut chain = vec![node.id];
            let mut at = node.parent;
            while !depth_of.contains_key(&at) {
                chain.push(at);
                at = by_id[&at].parent;
                assert!(chain.len() <= self.nodes.len(), "parent links form a cycle");
            }
            let (mut depth, mut len) = depth_of[&at];
            for id in chain.into_iter().rev() {
                depth += 1;
                len += by_id[&id].segment.len();
                if depth_of.insert(id, (depth, len)).is_none() {
                    if depths.len() < depth {
                        depths.resize(depth, 0);
                    }
                    depths[depth - 1] += 1;
                }
            }
            if let Some(extra) = self.extra(node) {
                assert_eq!(
                    extra.path.len(),
                    depth_of[&node.id].1,
                    "a node's path is as long as its segments"
                );
            }
        }
        assert_eq!(depths, self.depth_nodes, "depth counts out of step");
        let tails = self.tails.check_invariants(&self.hasher);
        assert_eq!(
            tails.get(&ROOT).copied().unwrap_or(0),
            self.root_tails,
            "root tail count out of step"
        );
        assert_eq!(
            self.tails.length_mask((ROOT, ROOT_HASH)),
            self.root_tail_lengths,
            "the root's tail length mask out of step"
        );
        for node in self.nodes.iter() {
            assert_eq!(
                tails.get(&node.id).copied().unwrap_or(0),
                node.tails,
                "a node's tail count out of step"
            );
            assert_eq!(
                self.tails.length_mask((node.id, node.path_hash)),
                node.tail_lengths,
                "a node's tail length mask out of step"
            );
        }
        for (node, path) in self.tails.nodes() {
            assert_eq!(
                self.node_of(path).map(|(id, _)| id),
                Some(node),
                "a tail hangs on the node of its pattern's slash path"
            );
        }
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

    /// Slash-prefix matches of `key` as (prefix length, id), in walk order.
    fn matches(trie: &PrefixTrie<W>, key: &[u8]) -> Vec<(usize, u64)> {
        all_matches(trie, key)
            .into_iter()
            .map(|(found, id)| match found {
                Found::Prefix(len) => (len, id),
                Found::BytePrefix(_) => panic!("no byte prefix in this test"),
            })
            .collect()
    }

    /// Every match of `key`, in walk order, ids sorted within a list.
    fn all_matches(trie: &PrefixTrie<W>, key: &[u8]) -> Vec<(Found, u64)> {
        let mut out = Vec::new();
        trie.for_each_match(key, &mut |found, list| {
            let mut ids = Vec::new();
            list.for_each(&mut |w| ids.push(w.0));
            ids.sort_unstable();
            out.extend(ids.into_iter().map(|id| (found, id)));
        });
        out
    }

    /// A node is one cache line, aligned: a probe waits for one line.
    #[test]
    fn a_node_is_one_cache_line() {
        assert_eq!(
            (std::mem::size_of::<Node>(), std::mem::align_of::<Node>()),
            (64, 64)
        );
    }

    #[test]
    fn walk_finds_every_leading_prefix_shortest_first() {
        let mut trie = PrefixTrie::new();
        for (id, p) in ["/", "/a/", "/a/b/", "/a/bc/", "/b/", "/a/b/c/d/"]
            .iter()
            .enumerate()
        {
            trie.insert(&Bytes::from_static(p.as_bytes()), W(id as u64));
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
            trie.insert(&Bytes::from_static(p.as_bytes()), W(id as u64));
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
            trie.insert(&key.slice(..len), W(id as u64));
        }
        trie.insert(&key, W(u64::MAX));
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
        bottom.insert(&key, W(1));
        assert_eq!(bottom.nodes.len(), depth);
        assert!(bottom.remove(&key, 1).is_some());
        assert_eq!((bottom.nodes.len(), bottom.root_children), (0, 0));
    }

    #[test]
    fn older_clones_are_unchanged_by_writes() {
        let mut trie = PrefixTrie::new();
        trie.insert(&Bytes::from_static(b"/a/"), W(1));
        let before = trie.clone();
        trie.insert(&Bytes::from_static(b"/a/b/"), W(2));
        trie.remove(b"/a/", 1);
        assert_eq!(matches(&before, b"/a/b/c"), vec![(3, 1)]);
        assert_eq!(matches(&trie, b"/a/b/c"), vec![(5, 2)]);
    }

    /// Tails under 15 bytes are probed from the node's mask, longer ones from its length
    /// list: both are found, shortest first, and the mask follows removals.
    #[test]
    fn tails_of_every_length_are_found_from_the_mask_or_the_list() {
        let mut trie = PrefixTrie::new();
        let piece = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let lengths = [0usize, 1, 13, 14, 15, 16, 30];
        for (id, &len) in lengths.iter().enumerate() {
            let mut pattern = b"/n/".to_vec();
            pattern.extend_from_slice(&piece[..len]);
            trie.insert_byte_prefix(Bytes::from(pattern), W(id as u64));
            trie.check_invariants();
        }
        let mut key = b"/n/".to_vec();
        key.extend_from_slice(piece);
        let want: Vec<(Found, u64)> = lengths
            .iter()
            .enumerate()
            .map(|(id, &len)| (Found::BytePrefix(3 + len), id as u64))
            .collect();
        assert_eq!(all_matches(&trie, &key), want);
        // A key whose next piece is 15 bytes long: tails of 16 and 30 do not fit.
        let short_key = [&b"/n/"[..], &piece[..15], b"/rest"].concat();
        assert_eq!(all_matches(&trie, &short_key), want[..5].to_vec());
        for (id, &len) in lengths.iter().enumerate().rev() {
            let mut pattern = b"/n/".to_vec();
            pattern.extend_from_slice(&piece[..len]);
            assert!(trie.remove_byte_prefix(&pattern, id as u64).is_some());
            trie.check_invariants();
            assert_eq!(all_matches(&trie, &key), want[..id].to_vec());
        }
        assert_eq!(trie.nodes.len(), 0);
    }

    /// Byte prefixes hang on the node of their slash path, are found from the key's next
    /// piece, whether it ends with a separator or ends the key, and leave no node behind.
    #[test]
    fn byte_prefixes_match_within_a_segment_and_in_the_last_piece() {
        let mut trie = PrefixTrie::new();
        let byte_prefixes: [&[u8]; 7] = [
            b"/svc/pay",
            b"/svc/",
            b"",
            b"ab",
            b"/svc/payment",
            b"/",
            b"/x/y/z",
        ];
        for (id, p) in byte_prefixes.iter().enumerate() {
            trie.insert_byte_prefix(Bytes::from_static(p), W(id as u64));
            trie.check_invariants();
        }
        trie.insert(&Bytes::from_static(b"/svc/"), W(100));
        use Found::{BytePrefix as B, Prefix as P};
        // (key, every match in walk order)
        type Case<'a> = (&'a [u8], Vec<(Found, u64)>);
        let table: [Case<'_>; 7] = [
            (
                b"/svc/payment/x",
                vec![
                    (B(0), 2),
                    (B(1), 5),
                    (P(5), 100),
                    (B(5), 1),
                    (B(8), 0),
                    (B(12), 4),
                ],
            ),
            (
                b"/svc/pay",
                vec![(B(0), 2), (B(1), 5), (P(5), 100), (B(5), 1), (B(8), 0)],
            ),
            (
                b"/svc/pa",
                vec![(B(0), 2), (B(1), 5), (P(5), 100), (B(5), 1)],
            ),
            (b"/svc", vec![(B(0), 2), (B(1), 5)]),
            (b"abc", vec![(B(0), 2), (B(2), 3)]),
            (b"a", vec![(B(0), 2)]),
            (b"/x/y/zz/", vec![(B(0), 2), (B(1), 5), (B(6), 6)]),
        ];
        for (key, want) in table {
            assert_eq!(
                all_matches(&trie, key),
                want,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(trie.byte_prefix_count(), 7);
        for (id, p) in byte_prefixes.iter().enumerate() {
            assert!(trie.remove_byte_prefix(p, 99).is_none());
            assert_eq!(
                trie.remove_byte_prefix(p, id as u64).map(|w| w.0),
                Some(id as u64)
            );
            trie.check_invariants();
        }
        assert_eq!(trie.byte_prefix_watcher_count(), 0);
        assert_eq!(trie.nodes.len(), 2, "only /svc/'s path is left");
        trie.remove(b"/svc/", 100);
        assert_eq!(
            (trie.nodes.len(), trie.root_children, trie.root_tails),
            (0, 0, 0)
        );
    }

    proptest::proptest! {
        #[test]
        fn walk_agrees_with_a_naive_model(
            ops in proptest::collection::vec((proptest::collection::vec(0u8..5, 0..6), 0u64..4, proptest::bool::ANY, proptest::bool::ANY), 1..200),
            probes in proptest::collection::vec(proptest::collection::vec(0u8..5, 0..8), 1..20),
        ) {
            // Paths over a small alphabet so that they share prefixes often: '/', 'a', 'b',
            // and two 20-byte names that differ only in the middle (segments longer than a
            // summary identifies, with equal summaries).
            const LONG: [&[u8]; 5] = [b"/", b"a", b"b", b"xxxxxxxxxxxxxxxxxxxx", b"xxxxxxxxxyxxxxxxxxxx"];
            let spell = |v: &[u8]| v.iter().flat_map(|&c| LONG[usize::from(c)].iter().copied()).collect::<Vec<u8>>();
            let mut trie = PrefixTrie::new();
            // (is a byte prefix, pattern) -> ids
            let mut model: BTreeMap<(bool, Vec<u8>), Vec<u64>> = BTreeMap::new();
            for (path, id, insert, bytewise) in ops {
                // Slash prefixes end with the separator (or are empty); byte prefixes as spelled.
                let mut path = spell(&path);
                if !bytewise && path.last().is_some_and(|&b| b != b'/') {
                    path.push(b'/');
                }
                let ids = model.entry((bytewise, path.clone())).or_default();
                if insert && !ids.contains(&id) {
                    ids.push(id);
                    match bytewise {
                        true => trie.insert_byte_prefix(Bytes::from(path.clone()), W(id)),
                        false => trie.insert(&Bytes::from(path.clone()), W(id)),
                    }
                } else if !insert {
                    let had = ids.iter().position(|&x| x == id).map(|i| ids.remove(i));
                    let removed = match bytewise {
                        true => trie.remove_byte_prefix(&path, id),
                        false => trie.remove(&path, id),
                    };
                    proptest::prop_assert_eq!(removed.map(|w| w.0), had);
                }
                model.retain(|_, v| !v.is_empty());
                trie.check_invariants();
            }
            for probe in probes {
                let key = spell(&probe);
                // Walk order: by matched length, a node's own watchers before its tails.
                let mut want: Vec<((usize, bool), u64)> = model.iter()
                    .filter(|((_, p), _)| key.starts_with(p))
                    .flat_map(|((b, p), ids)| ids.iter().map(move |&id| ((p.len(), *b), id)))
                    .collect();
                want.sort_unstable();
                let got: Vec<((usize, bool), u64)> = all_matches(&trie, &key).into_iter()
                    .map(|(found, id)| match found {
                        Found::Prefix(len) => ((len, false), id),
                        Found::BytePrefix(len) => ((len, true), id),
                    })
                    .collect();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
