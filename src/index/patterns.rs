//! Wildcard watchers: patterns of pieces where `*` matches exactly one piece.
//!
//! A pattern splits at `/` like a key: `/svc/*/health` is the segments `/`, `svc/`, `*/`
//! and the last piece `health`; it matches keys with exactly those pieces, `*` standing for
//! any one piece (any bytes without `/`, the empty piece included). A pattern that ends
//! with `/` is a *prefix pattern*: `/svc/*/` matches every key whose first segments match
//! its own, whatever follows (NATS's `>` after the last `/`).
//!
//! The patterns form a trie of segments, where a node's children are either literal
//! segments or the one `*` segment. A key is matched by a *frontier*: the set of nodes
//! whose path matches the key's segments read so far. Each of the key's segments takes each
//! frontier node to at most two children (the literal one and `*`); a prefix pattern that
//! ends at a node reached is a match; after the key's last segment, each frontier node's
//! last pieces are looked up (the key's remaining piece, and `*`). A node carries, for its
//! children and for its last pieces, their count, whether `*` is one of them, and a
//! one-word filter of the literal pieces' hashes (`Fanout`), so most probes that would
//! find nothing are skipped without touching a table; a piece is hashed once per key, not
//! once per frontier node.
//!
//! ```text
//!  patterns  /svc/*/health   /svc/a/*   /svc/*/          key /svc/a/health
//!  root ─ "/" ─ "svc/" ─┬─ "*/" [prefix: /svc/*/]        frontier after "/", "svc/":
//!                       │     └ last "health"             {svc/}; after "a/": {*/, a/}
//!                       └─ "a/"                           → prefix /svc/*/ matches;
//!                             └ last "*"                  last pieces: */ has "health",
//!                                                         a/ has "*": both match
//! ```
//!
//! # How big the frontier gets (worst case per event)
//! A frontier node at depth d is reached by a path that is `*` at some of its d levels and
//! literal at the others, and no registered pattern has more than `w` wildcards (a
//! registry limit, 4 by default: `RegistryOptions::with_max_wildcards`). So the frontier
//! at depth d holds at most min(nodes at depth d, Σ_{j ≤ w} C(d, j)) nodes, and an event
//! costs at most two probes per frontier node per segment, plus two per final node. The
//! frontier ends at the deepest pattern. A walk keeps every level's frontier one after
//! the other: O(Σ F) entries of 24 bytes, on the stack up to 32. `docs/BENCHMARKS.md`
//! measures an adversarial set.
//!
//! # Invariants (checked by [`PatternIndex::check_invariants`])
//! - Every node's parent exists (or is the root) and counts it among its children; a node
//!   has prefix watchers, last pieces or children, or it is removed (and so on up).
//! - Every last piece names a node (or the root), holds no `/`, and is counted by it.
//! - A node's path is its parent's path followed by its segment (`*/` for a wildcard), and
//!   its summary and `wildcard` flag are that segment's; `watched` says whether its prefix
//!   list is non-empty.
//! - Each fan-out (children, last pieces) has the recounted literal count and wildcard bit,
//!   and a filter holding at least the recounted pieces' bits (none once no literal is left).
//! - `watchers` counts every watcher; `patterns` every distinct pattern with watchers.
//!
//! # Complexity (P = pattern length, d = its segments, L = key length, F = frontier size)
//! | operation | cost |
//! |---|---|
//! | insert / remove | O(P) hashing + O(d) probes |
//! | match | O(L) hashing + at most 2 probes per frontier node per segment: O(L + Σ F) |

use bytes::Bytes;
use smallvec::SmallVec;

use super::key::KeyBytes;
use super::segment::{Segment, SegmentEnds, SEPARATOR};
use super::table::{Layout, Table};
use super::watchers::WatcherList;
use super::WatcherEntry;

/// The root: the empty path.
const ROOT: u64 = 0;

/// The wildcard piece.
pub(crate) const WILDCARD: &[u8] = b"*";

/// Frontier nodes, over all of a key's levels, kept on the stack before a walk spills to
/// the heap.
const INLINE_FRONTIER: usize = 32;

/// A trie node: one segment (literal, or the wildcard) under its parent. What a match
/// reads (the probe's comparison, the id, both fan-outs, the watched flag) is the first
/// cache line; the table hash and the cold part (path and prefix watchers) follow, so a
/// probe into a table bigger than the caches costs the table's control line and one more.
#[repr(C, align(64))]
struct Node<W> {
    parent: u64,
    id: u64,
    /// The segment with its separator as a probe compares it; the empty segment for the
    /// wildcard. A segment longer than a summary holds is also compared against the path.
    segment: Segment,
    children: Fanout,
    /// Last pieces (exact patterns) ending under this node.
    lasts: Fanout,
    /// Whether the prefix pattern ending here has watchers (`cold.prefix` non-empty).
    watched: bool,
    wildcard: bool,
    hash: u64,
    cold: Box<Cold<W>>,
}

/// What a match needs only when a node's prefix pattern matches or a long segment is
/// compared.
struct Cold<W> {
    /// The pattern's bytes up to and including this segment.
    path: Bytes,
    /// Watchers of the prefix pattern that ends with this segment.
    prefix: WatcherList<W>,
}

impl<W: Clone> Clone for Node<W> {
    fn clone(&self) -> Self {
        Self {
            parent: self.parent,
            id: self.id,
            segment: self.segment,
            children: self.children,
            lasts: self.lasts,
            watched: self.watched,
            wildcard: self.wildcard,
            hash: self.hash,
            cold: Box::new(Cold {
                path: self.cold.path.clone(),
                prefix: self.cold.prefix.clone(),
            }),
        }
    }
}

impl<W> Node<W> {
    /// Whether this is the child `segment` (summarised as `summary`; empty for `*`) of
    /// `parent`.
    #[inline]
    fn is(&self, parent: u64, wildcard: bool, summary: Segment, segment: &[u8]) -> bool {
        self.parent == parent
            && self.wildcard == wildcard
            && self.segment == summary
            && (summary.is_exact() || self.cold.path.ends_with(segment))
    }
}

/// How many literal children (or last pieces) a node has, whether it has the wildcard one,
/// and a one-word filter of the literal pieces' hashes: a match probes the table only for
/// the kinds that exist, and for a literal piece only if its bit is set. Bits are set on
/// insert and cleared only when the last literal goes (a stale bit costs one probe).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fanout {
    /// Literal children; the top bit is the wildcard child.
    count: u32,
    filter: u32,
}

/// `Fanout::count`'s wildcard bit.
const WILDCARD_BIT: u32 = 1 << 31;

/// The filter bit of a piece hash (its top five bits choose it).
#[inline]
fn filter_bit(piece_hash: u64) -> u32 {
    1 << (piece_hash >> 59)
}

impl Fanout {
    fn literal(self) -> u32 {
        self.count & !WILDCARD_BIT
    }

    fn wildcard(self) -> bool {
        self.count & WILDCARD_BIT != 0
    }

    fn add(&mut self, wildcard: bool, piece_hash: u64) {
        if wildcard {
            debug_assert!(!self.wildcard(), "one wildcard child per node");
            self.count |= WILDCARD_BIT;
        } else {
            assert!(
                self.literal() < WILDCARD_BIT - 1,
                "literal children fit in 31 bits"
            );
            self.count += 1;
            self.filter |= filter_bit(piece_hash);
        }
    }

    fn remove(&mut self, wildcard: bool) {
        if wildcard {
            self.count &= !WILDCARD_BIT;
        } else {
            self.count -= 1;
            if self.literal() == 0 {
                self.filter = 0;
            }
        }
    }

    fn is_empty(self) -> bool {
        self.count == 0
    }

    /// The probes that can find something for a piece of this hash: `false` for the
    /// literal one, `true` for `*`.
    #[inline]
    fn probes(self, piece_hash: u64) -> impl Iterator<Item = bool> {
        // Bit 0: the literal probe; bit 1: the wildcard's (its count bit, moved down). A
        // mask, not an iterator over an array: this runs per frontier node per segment.
        let literal = u32::from(self.filter & filter_bit(piece_hash) != 0);
        let mut left = literal | (self.count & WILDCARD_BIT) >> 30;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let wildcard = left & 1 == 0;
            left &= left - 1;
            Some(wildcard)
        })
    }

    /// Whether `self` (kept incrementally) agrees with `exact` (recounted): same counts,
    /// and a filter with at least the recounted bits.
    fn covers(self, exact: Fanout) -> bool {
        self.count == exact.count
            && self.filter & exact.filter == exact.filter
            && (self.literal() > 0 || self.filter == 0)
    }
}

/// A piece (segment or last piece) with its hash and summary, so that probing it under
/// several frontier nodes computes them once.
#[derive(Clone, Copy)]
struct Piece<'a> {
    bytes: &'a [u8],
    hash: u64,
    summary: Segment,
}

/// The watchers of an exact pattern: its last piece under its node. What a probe compares
/// comes first, in one cache line (as for [`Node`]).
#[repr(C, align(64))]
struct Last<W> {
    node: u64,
    /// The piece; empty for the wildcard. Inline when short, so that a probe compares it
    /// without following a pointer.
    piece: KeyBytes,
    wildcard: bool,
    hash: u64,
    pattern: Bytes,
    watchers: WatcherList<W>,
}

impl<W: Clone> Clone for Last<W> {
    fn clone(&self) -> Self {
        Self {
            hash: self.hash,
            node: self.node,
            piece: self.piece.clone(),
            wildcard: self.wildcard,
            pattern: self.pattern.clone(),
            watchers: self.watchers.clone(),
        }
    }
}

/// Wildcard patterns.
pub(crate) struct PatternIndex<W> {
    nodes: Table<Node<W>>,
    lasts: Table<Last<W>>,
    hasher: ahash::RandomState,
    /// The wildcard's piece (no bytes), hashed and summarised.
    wildcard_piece: Piece<'static>,
    /// Root-level last pieces (patterns without `/`) and children.
    root_lasts: Fanout,
    root_children: Fanout,
    next_id: u64,
    watchers: usize,
    patterns: usize,
}

impl<W: Clone> Clone for PatternIndex<W> {
    fn clone(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
            lasts: self.lasts.clone(),
            hasher: self.hasher.clone(),
            wildcard_piece: self.wildcard_piece,
            root_lasts: self.root_lasts,
            root_children: self.root_children,
            next_id: self.next_id,
            watchers: self.watchers,
            patterns: self.patterns,
        }
    }
}

/// A pattern's parts: its segments (each with its separator) and its last piece, `None`
/// for a prefix pattern.
fn parts(pattern: &[u8]) -> (impl Iterator<Item = (&[u8], usize)>, Option<&[u8]>) {
    let at = pattern
        .iter()
        .rposition(|&b| b == SEPARATOR)
        .map_or(0, |i| i + 1);
    let last = (at < pattern.len() || pattern.is_empty()).then(|| &pattern[at..]);
    let mut start = 0;
    let segments = SegmentEnds::new(pattern).map(move |end| {
        let segment = &pattern[start..end];
        start = end;
        (segment, end)
    });
    (segments, last)
}

/// Whether a segment (with its separator) is the wildcard's.
fn is_wildcard_segment(segment: &[u8]) -> bool {
    segment == b"*/"
}

/// Why `pattern` cannot be registered, if it cannot: a `*` that is not a whole piece.
/// Returns the number of wildcards otherwise.
pub(crate) fn wildcards(pattern: &[u8]) -> Result<usize, &'static str> {
    let mut count = 0;
    for piece in pattern.split(|&b| b == SEPARATOR) {
        if piece == WILDCARD {
            count += 1;
        } else if piece.contains(&b'*') {
            return Err("a wildcard must be a whole piece: `*` between two `/`");
        }
    }
    Ok(count)
}

impl<W: WatcherEntry> PatternIndex<W> {
    pub(crate) fn with_hasher(hasher: ahash::RandomState) -> Self {
        Self {
            nodes: Table::new(),
            lasts: Table::new(),
            wildcard_piece: Piece {
                bytes: &[],
                hash: hasher.hash_one(&[][..] as &[u8]),
                summary: Segment::of(&[]),
            },
            hasher,
            root_lasts: Fanout::default(),
            root_children: Fanout::default(),
            next_id: ROOT + 1,
            watchers: 0,
            patterns: 0,
        }
    }

    pub(crate) fn empty_twin(&self) -> Self {
        Self::with_hasher(self.hasher.clone())
    }

    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers
    }

    /// Distinct patterns with watchers.
    pub(crate) fn pattern_count(&self) -> usize {
        self.patterns
    }

    /// The hash of a piece (a segment with its separator, or a last piece), computed once
    /// per piece of a key and mixed with each frontier node's id by [`Self::mix`].
    #[inline]
    fn piece_hash(&self, piece: &[u8]) -> u64 {
        self.hasher.hash_one(piece)
    }

    /// The table hash of a child (or, with `tag` 1, a last piece) under `node`: the piece's
    /// hash mixed with the node's id, the tag and whether it is the wildcard (whose piece is
    /// no bytes). A folded multiply spreads the mix to the high bits the table's tags use.
    #[inline]
    fn mix(node: u64, piece_hash: u64, wildcard: bool, tag: u64) -> u64 {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let a = piece_hash ^ node.wrapping_mul(K);
        // Shifted past bit 0, which `| 1` below sets to keep the multiplier odd.
        let b = (u64::from(wildcard) << 1 | tag << 2) ^ K.rotate_left(23);
        let product = u128::from(a) * u128::from(b | 1);
        (product as u64) ^ ((product >> 64) as u64)
    }

    #[inline]
    fn child_hash(&self, parent: u64, piece: &[u8], wildcard: bool) -> u64 {
        let piece = if wildcard { &[][..] } else { piece };
        Self::mix(parent, self.piece_hash(piece), wildcard, 0)
    }

    #[inline]
    fn child(&self, parent: u64, segment: &[u8], wildcard: bool) -> Option<&Node<W>> {
        let piece = if wildcard { &[][..] } else { segment };
        self.child_of(parent, &self.piece(piece), wildcard)
    }

    /// [`Self::child`] given the key's piece already hashed and summarised (ignored for
    /// `*`, whose piece is no bytes).
    #[inline]
    fn child_of(&self, parent: u64, piece: &Piece<'_>, wildcard: bool) -> Option<&Node<W>> {
        let piece = if wildcard {
            &self.wildcard_piece
        } else {
            piece
        };
        let hash = Self::mix(parent, piece.hash, wildcard, 0);
        self.nodes
            .find(hash, |n| n.is(parent, wildcard, piece.summary, piece.bytes))
    }

    /// A piece of a key or pattern with what every probe for it needs, computed once.
    #[inline]
    fn piece<'a>(&self, bytes: &'a [u8]) -> Piece<'a> {
        Piece {
            bytes,
            hash: self.piece_hash(bytes),
            summary: Segment::of(bytes),
        }
    }

    #[inline]
    fn last(&self, node: u64, piece: &[u8], wildcard: bool) -> Option<&Last<W>> {
        let piece = if wildcard { &[][..] } else { piece };
        self.last_hashed(node, piece, self.piece_hash(piece), wildcard)
    }

    /// [`Self::last`] given the hash of `piece` (ignored, with `piece`, for `*`).
    #[inline]
    fn last_hashed(
        &self,
        node: u64,
        piece: &[u8],
        piece_hash: u64,
        wildcard: bool,
    ) -> Option<&Last<W>> {
        let (piece, piece_hash) = if wildcard {
            (&[][..], self.wildcard_piece.hash)
        } else {
            (piece, piece_hash)
        };
        let hash = Self::mix(node, piece_hash, wildcard, 1);
        self.lasts.find(hash, |l| {
            l.node == node && l.wildcard == wildcard && l.piece.as_slice() == piece
        })
    }

    #[inline]
    fn last_hash(&self, node: u64, piece: &[u8], wildcard: bool) -> u64 {
        let piece = if wildcard { &[][..] } else { piece };
        Self::mix(node, self.piece_hash(piece), wildcard, 1)
    }

    /// The nodes along the pattern's segments (ids and hashes), `None` if one is missing.
    fn walk(&self, pattern: &[u8]) -> Option<Vec<(u64, u64)>> {
        let (segments, _) = parts(pattern);
        let mut steps = Vec::new();
        let mut parent = ROOT;
        for (segment, _) in segments {
            let wildcard = is_wildcard_segment(segment);
            let node = self.child(parent, segment, wildcard)?;
            steps.push((node.id, node.hash));
            parent = node.id;
        }
        Some(steps)
    }

    /// The watchers registered on exactly `pattern`.
    pub(crate) fn get(&self, pattern: &[u8]) -> Option<&WatcherList<W>> {
        let steps = self.walk(pattern)?;
        let node = steps.last().map_or(ROOT, |s| s.0);
        let (_, last) = parts(pattern);
        let list = match last {
            None => {
                &self
                    .nodes
                    .find(steps.last()?.1, |n| n.id == node)?
                    .cold
                    .prefix
            }
            Some(piece) => &self.last(node, piece, piece == WILDCARD)?.watchers,
        };
        (!list.is_empty()).then_some(list)
    }

    /// Adds `watcher` on `pattern` (checked by [`wildcards`] first).
    pub(crate) fn insert(&mut self, pattern: Bytes, watcher: W) {
        debug_assert!(wildcards(&pattern).is_ok(), "a checked pattern");
        let (segments, last) = parts(&pattern);
        let segments: Vec<(&[u8], usize)> = segments.collect();
        let mut parent: Option<(u64, u64)> = None;
        for (segment, end) in segments {
            let wildcard = is_wildcard_segment(segment);
            let piece = if wildcard { &[][..] } else { segment };
            let parent_id = parent.map_or(ROOT, |p| p.0);
            let piece_hash = self.piece_hash(piece);
            let hash = self.child_hash(parent_id, piece, wildcard);
            let summary = Segment::of(piece);
            if let Some(node) = self
                .nodes
                .find(hash, |n| n.is(parent_id, wildcard, summary, piece))
            {
                parent = Some((node.id, hash));
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            match parent {
                None => self.root_children.add(wildcard, piece_hash),
                Some((pid, phash)) => self.node_mut(pid, phash).children.add(wildcard, piece_hash),
            }
            let node = Node {
                parent: parent_id,
                id,
                segment: summary,
                children: Fanout::default(),
                lasts: Fanout::default(),
                watched: false,
                wildcard,
                hash,
                cold: Box::new(Cold {
                    path: pattern.slice(..end),
                    prefix: WatcherList::Empty,
                }),
            };
            self.nodes.insert_unique(hash, node, |n| n.hash);
            parent = Some((id, hash));
        }
        let added = match last {
            None => {
                let (id, hash) = parent.expect("a prefix pattern has a segment");
                let node = self.node_mut(id, hash);
                let new = !node.watched;
                node.cold.prefix.insert(watcher);
                node.watched = true;
                new
            }
            Some(piece) => {
                let node = parent.map_or(ROOT, |p| p.0);
                let wildcard = piece == WILDCARD;
                let piece = if wildcard { &[][..] } else { piece };
                let piece_hash = self.piece_hash(piece);
                let hash = self.last_hash(node, piece, wildcard);
                match self.lasts.find_mut(hash, |l| {
                    l.node == node && l.wildcard == wildcard && l.piece.as_slice() == piece
                }) {
                    Some(entry) => {
                        entry.watchers.insert(watcher);
                        false
                    }
                    None => {
                        let mut watchers = WatcherList::Empty;
                        watchers.insert(watcher);
                        let entry = Last {
                            hash,
                            node,
                            piece: KeyBytes::new(&pattern.slice_ref(piece)),
                            wildcard,
                            pattern: pattern.clone(),
                            watchers,
                        };
                        self.lasts.insert_unique(hash, entry, |l| l.hash);
                        match parent {
                            None => self.root_lasts.add(wildcard, piece_hash),
                            Some((id, h)) => self.node_mut(id, h).lasts.add(wildcard, piece_hash),
                        }
                        true
                    }
                }
            }
        };
        self.watchers += 1;
        self.patterns += usize::from(added);
    }

    fn node_mut(&mut self, id: u64, hash: u64) -> &mut Node<W> {
        self.nodes
            .find_mut(hash, |n| n.id == id)
            .expect("a node on the pattern's path")
    }

    /// Removes watcher `id` from `pattern`, then every node left with nothing, up the path.
    pub(crate) fn remove(&mut self, pattern: &[u8], id: u64) -> Option<W> {
        let steps = self.walk(pattern)?;
        let (_, last) = parts(pattern);
        let removed = match last {
            None => {
                let &(node, hash) = steps.last()?;
                let node = self.node_mut(node, hash);
                let removed = node.cold.prefix.remove(id)?;
                if node.cold.prefix.is_empty() {
                    node.watched = false;
                    self.patterns -= 1;
                }
                removed
            }
            Some(piece) => {
                let node = steps.last().map_or(ROOT, |s| s.0);
                let wildcard = piece == WILDCARD;
                let piece = if wildcard { &[][..] } else { piece };
                let hash = self.last_hash(node, piece, wildcard);
                let mut entry = self.lasts.find_entry(hash, |l| {
                    l.node == node && l.wildcard == wildcard && l.piece.as_slice() == piece
                })?;
                let removed = entry.get_mut().watchers.remove(id)?;
                if entry.get().watchers.is_empty() {
                    entry.remove();
                    self.patterns -= 1;
                    match steps.last() {
                        None => self.root_lasts.remove(wildcard),
                        Some(&(n, h)) => self.node_mut(n, h).lasts.remove(wildcard),
                    }
                    self.lasts.shrink_if_sparse(|l| l.hash);
                }
                removed
            }
        };
        self.watchers -= 1;
        for at in (0..steps.len()).rev() {
            let (node, hash) = steps[at];
            let n = self.node_mut(node, hash);
            if n.watched || !n.children.is_empty() || !n.lasts.is_empty() {
                break;
            }
            let wildcard = n.wildcard;
            self.nodes
                .find_entry(hash, |n| n.id == node)
                .expect("on the path")
                .remove();
            match at.checked_sub(1) {
                None => self.root_children.remove(wildcard),
                Some(up) => {
                    let (pid, ph) = steps[up];
                    self.node_mut(pid, ph).children.remove(wildcard);
                }
            }
        }
        self.nodes.shrink_if_sparse(|n| n.hash);
        Some(removed)
    }

    /// Calls `f(pattern, watchers)` for every pattern `key` matches.
    pub(crate) fn for_each_match<F: FnMut(&[u8], &WatcherList<W>)>(&self, key: &[u8], f: &mut F) {
        // (node id, its children, its last pieces)
        type Step = (u64, Fanout, Fanout);
        // Every level's frontier, one after the other: the current one is `steps[level..]`
        // and the next is pushed after it (two vectors swapped per level cost more than the
        // probes: each swap moved both inline buffers).
        let mut steps: SmallVec<[Step; INLINE_FRONTIER]> = SmallVec::new();
        steps.push((ROOT, self.root_children, self.root_lasts));
        let mut level = 0;
        let mut has_children = !self.root_children.is_empty();
        let mut start = 0;
        for end in SegmentEnds::new(key) {
            if !has_children {
                // No frontier node has a child: no pattern is as deep as the key.
                return;
            }
            let segment = &key[start..end];
            start = end;
            let piece = self.piece(segment);
            has_children = false;
            let next = steps.len();
            for at in level..next {
                let (node, children, _) = steps[at];
                for wildcard in children.probes(piece.hash) {
                    if let Some(child) = self.child_of(node, &piece, wildcard) {
                        if child.watched {
                            f(&child.cold.path, &child.cold.prefix);
                        }
                        if !child.children.is_empty() || !child.lasts.is_empty() {
                            has_children |= !child.children.is_empty();
                            steps.push((child.id, child.children, child.lasts));
                        }
                    }
                }
            }
            if steps.len() == next {
                return;
            }
            level = next;
        }
        // The key's last piece, after its last separator (possibly empty).
        let piece = &key[start..];
        let piece_hash = self.piece_hash(piece);
        for &(node, _, lasts) in &steps[level..] {
            for wildcard in lasts.probes(piece_hash) {
                if let Some(last) = self.last_hashed(node, piece, piece_hash, wildcard) {
                    f(&last.pattern, &last.watchers);
                }
            }
        }
    }

    /// For a sweep: node lists, then last pieces.
    pub(crate) fn nodes_layout(&self) -> Layout {
        self.nodes.layout()
    }

    pub(crate) fn nodes_buckets(&self) -> usize {
        self.nodes.buckets()
    }

    pub(crate) fn nodes_bucket(&self, at: usize) -> Option<(&[u8], &WatcherList<W>)> {
        self.nodes
            .bucket(at)
            .map(|n| (&n.cold.path[..], &n.cold.prefix))
    }

    pub(crate) fn lasts_layout(&self) -> Layout {
        self.lasts.layout()
    }

    pub(crate) fn lasts_buckets(&self) -> usize {
        self.lasts.buckets()
    }

    pub(crate) fn lasts_bucket(&self, at: usize) -> Option<(&[u8], &WatcherList<W>)> {
        self.lasts.bucket(at).map(|l| (&l.pattern[..], &l.watchers))
    }

    /// Both tables' bucket placement, to compare twins.
    pub(crate) fn placement(&self) -> Vec<Option<Vec<u8>>> {
        let nodes =
            (0..self.nodes.buckets()).map(|i| self.nodes.bucket(i).map(|n| n.cold.path.to_vec()));
        let lasts =
            (0..self.lasts.buckets()).map(|i| self.lasts.bucket(i).map(|l| l.pattern.to_vec()));
        nodes.chain(lasts).collect()
    }

    /// Panics with a description if an invariant is broken.
    pub(crate) fn check_invariants(&self) {
        use std::collections::HashMap;
        let by_id: HashMap<u64, &Node<W>> = self.nodes.iter().map(|n| (n.id, n)).collect();
        assert_eq!(by_id.len(), self.nodes.len(), "node ids are unique");
        let mut children: HashMap<u64, Fanout> = HashMap::new();
        let mut lasts: HashMap<u64, Fanout> = HashMap::new();
        let (mut watchers, mut patterns) = (0, 0);
        for node in self.nodes.iter() {
            let parent_path = match node.parent {
                ROOT => Bytes::new(),
                id => by_id
                    .get(&id)
                    .expect("a node's parent exists")
                    .cold
                    .path
                    .clone(),
            };
            let path = &node.cold.path;
            // In full only for paths of ordinary length: on a chain of 100,000 segments the
            // comparison would be quadratic. The length is checked for all.
            assert!(
                path.len() > parent_path.len()
                    && (path.len() > 4096 || path[..parent_path.len()] == parent_path[..]),
                "a node's path extends its parent's"
            );
            let segment = &path[parent_path.len()..];
            assert!(
                segment.last() == Some(&SEPARATOR)
                    && !segment[..segment.len() - 1].contains(&SEPARATOR),
                "a segment ends with its only separator"
            );
            assert_eq!(
                is_wildcard_segment(segment),
                node.wildcard,
                "the wildcard flag"
            );
            let piece: &[u8] = if node.wildcard { &[] } else { segment };
            assert_eq!(node.segment, Segment::of(piece), "a node's segment summary");
            assert_eq!(
                self.child(node.parent, piece, node.wildcard).map(|n| n.id),
                Some(node.id),
                "a node is found under its own key"
            );
            assert_eq!(
                node.watched,
                !node.cold.prefix.is_empty(),
                "the watched flag is the prefix list's"
            );
            assert!(
                node.watched || !node.children.is_empty() || !node.lasts.is_empty(),
                "a node with nothing is removed"
            );
            node.cold.prefix.check_invariants();
            watchers += node.cold.prefix.len();
            patterns += usize::from(node.watched);
            children
                .entry(node.parent)
                .or_default()
                .add(node.wildcard, self.piece_hash(piece));
        }
        for last in self.lasts.iter() {
            assert!(
                !last.piece.as_slice().contains(&SEPARATOR),
                "a last piece holds no separator"
            );
            assert!(!last.watchers.is_empty(), "an empty last piece is removed");
            assert!(
                last.node == ROOT || by_id.contains_key(&last.node),
                "a last piece's node exists"
            );
            assert_eq!(
                self.last(last.node, last.piece.as_slice(), last.wildcard)
                    .map(|l| l.pattern.clone()),
                Some(last.pattern.clone()),
                "a last piece is found under its own key"
            );
            last.watchers.check_invariants();
            watchers += last.watchers.len();
            patterns += 1;
            lasts
                .entry(last.node)
                .or_default()
                .add(last.wildcard, self.piece_hash(last.piece.as_slice()));
        }
        let recounted =
            |counts: &HashMap<u64, Fanout>, id: u64| counts.get(&id).copied().unwrap_or_default();
        assert!(
            self.root_children.covers(recounted(&children, ROOT)),
            "root children"
        );
        assert!(
            self.root_lasts.covers(recounted(&lasts, ROOT)),
            "root last pieces"
        );
        for node in self.nodes.iter() {
            assert!(
                node.children.covers(recounted(&children, node.id)),
                "child count and filter"
            );
            assert!(
                node.lasts.covers(recounted(&lasts, node.id)),
                "last piece count and filter"
            );
        }
        assert_eq!(watchers, self.watchers, "pattern watcher count out of step");
        assert_eq!(patterns, self.patterns, "pattern count out of step");
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

    #[test]
    fn what_a_match_reads_of_a_node_is_its_first_cache_line() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(align_of::<Node<W>>(), 64);
        assert_eq!(size_of::<Node<W>>(), 128);
        let hot_end = offset_of!(Node<W>, wildcard) + size_of::<bool>();
        assert!(hot_end <= 64, "hot fields end at {hot_end}");
        assert!(offset_of!(Node<W>, watched) < 64 && offset_of!(Node<W>, lasts) < 64);
        assert_eq!(size_of::<Fanout>(), 8);
        assert!(offset_of!(Last<W>, wildcard) < 64);
    }

    /// A naive matcher, the definition: pieces split at `/`, `*` any one piece; a trailing
    /// `/` in the pattern lets the key go on.
    pub(crate) fn naive(pattern: &[u8], key: &[u8]) -> bool {
        let p: Vec<&[u8]> = pattern.split(|&b| b == b'/').collect();
        let k: Vec<&[u8]> = key.split(|&b| b == b'/').collect();
        let prefix = pattern.ends_with(b"/");
        let fixed = if prefix { &p[..p.len() - 1] } else { &p[..] };
        let enough = if prefix {
            k.len() > fixed.len()
        } else {
            k.len() == fixed.len()
        };
        enough && fixed.iter().zip(&k).all(|(p, k)| *p == WILDCARD || p == k)
    }

    fn matches(index: &PatternIndex<W>, key: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        index.for_each_match(key, &mut |_, list| list.for_each(&mut |w| out.push(w.0)));
        out.sort_unstable();
        out
    }

    #[test]
    fn a_frontier_past_its_inline_room_still_finds_every_match() {
        // Every pattern of six pieces, each `a` or `*`: the key /a/a/a/a/a/a reaches
        // 2 + 4 + … + 64 frontier nodes over its levels, far past the 32 kept inline.
        let mut index = PatternIndex::with_hasher(ahash::RandomState::new());
        let mut all = Vec::new();
        for mask in 0u64..64 {
            let pattern: Vec<u8> = (0..6)
                .flat_map(|i| if mask >> i & 1 == 1 { *b"/*" } else { *b"/a" })
                .collect();
            index.insert(Bytes::from(pattern), W(mask));
            all.push(mask);
        }
        index.check_invariants();
        assert_eq!(matches(&index, b"/a/a/a/a/a/a"), all);
        // Bit i stars piece i: the first piece must be `*` for a key that starts with `b`.
        assert_eq!(
            matches(&index, b"/b/a/a/a/a/a"),
            (1..64).step_by(2).collect::<Vec<_>>()
        );
        assert!(matches(&index, b"/a/a/a/a/a").is_empty());
    }

    #[test]
    fn a_wildcard_is_one_piece_and_a_trailing_slash_makes_a_prefix_pattern() {
        let patterns: [&[u8]; 8] = [
            b"/svc/*/health",
            b"/svc/*/",
            b"/svc/a/*",
            b"*",
            b"/*/*",
            b"/svc/a/health",
            b"/",
            b"",
        ];
        let mut index = PatternIndex::with_hasher(ahash::RandomState::new());
        for (id, p) in patterns.iter().enumerate() {
            index.insert(Bytes::from_static(p), W(id as u64));
            index.check_invariants();
        }
        let keys: [&[u8]; 10] = [
            b"/svc/a/health",
            b"/svc/b/health",
            b"/svc/b/health/x",
            b"/svc/a/",
            b"/svc/",
            b"/svc",
            b"abc",
            b"",
            b"//",
            b"/svc//health",
        ];
        for key in keys {
            let want: Vec<u64> = (0..patterns.len() as u64)
                .filter(|&i| naive(patterns[i as usize], key))
                .collect();
            assert_eq!(
                matches(&index, key),
                want,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        for (id, p) in patterns.iter().enumerate() {
            assert!(index.remove(p, 99).is_none());
            assert!(index.remove(p, id as u64).is_some());
            index.check_invariants();
        }
        assert_eq!(
            (index.nodes.len(), index.lasts.len(), index.root_children),
            (0, 0, Fanout::default())
        );
    }

    #[test]
    fn a_star_inside_a_piece_is_refused_and_wildcards_are_counted() {
        assert_eq!(wildcards(b"/svc/*/health"), Ok(1));
        assert_eq!(wildcards(b"/*/*/*/"), Ok(3));
        assert_eq!(wildcards(b"/svc/health"), Ok(0));
        assert!(wildcards(b"/svc/a*/x").is_err());
        assert!(wildcards(b"/**/").is_err());
    }

    proptest::proptest! {
        #[test]
        fn matches_agree_with_the_naive_definition(
            ops in proptest::collection::vec((proptest::collection::vec(0u8..5, 0..6), 0u64..3, proptest::bool::ANY), 1..120),
            keys in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..7), 1..12),
        ) {
            // Patterns over '/', 'a', 'b', '*' (as whole pieces only) and "ab"; keys without '*'.
            const P: [&[u8]; 5] = [b"/", b"a", b"b", b"*", b"ab"];
            let spell = |v: &[u8]| v.iter().flat_map(|&c| P[usize::from(c)].iter().copied()).collect::<Vec<u8>>();
            let mut index = PatternIndex::with_hasher(ahash::RandomState::new());
            let mut model: std::collections::BTreeMap<Vec<u8>, Vec<u64>> = Default::default();
            for (p, id, insert) in ops {
                let pattern = spell(&p);
                if wildcards(&pattern).is_err() {
                    continue;
                }
                let ids = model.entry(pattern.clone()).or_default();
                if insert && !ids.contains(&id) {
                    ids.push(id);
                    index.insert(Bytes::from(pattern), W(id));
                } else if !insert {
                    let had = ids.iter().position(|&x| x == id).map(|i| ids.remove(i));
                    proptest::prop_assert_eq!(index.remove(&pattern, id).map(|w| w.0), had);
                }
                model.retain(|_, v| !v.is_empty());
                index.check_invariants();
            }
            for k in keys {
                let key = spell(&k.iter().map(|&c| if c == 3 { 4 } else { c }).collect::<Vec<_>>());
                let mut want: Vec<u64> = model.iter()
                    .filter(|(p, _)| naive(p, &key))
                    .flat_map(|(_, ids)| ids.iter().copied())
                    .collect();
                want.sort_unstable();
                proptest::prop_assert_eq!(matches(&index, &key), want);
            }
        }
    }
}
