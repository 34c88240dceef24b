//! The private engine: the two snapshots' contents, every registered watcher filed by target.
//!
//! A [`Snapshot`] holds four indexes: an [`ExactIndex`] (key → watchers, a flat hash map), a
//! [`PrefixTrie`] (slash prefixes → watchers, a hash trie of slash segments, with byte
//! prefixes as tails of its nodes), a [`RangeIndex`] (key ranges, an interval tree) and a
//! [`PatternIndex`] (wildcard patterns, a trie of pieces). It is a plain value,
//! changed in place only while no reader can see it: the registry keeps two and lets readers
//! see one at a time (`crate::publish`). Nothing here knows about tokio, channels or
//! threads: a watcher is any cloneable value with an id ([`WatcherEntry`]).

mod chunks;
mod exact;
mod key;
mod patterns;
mod ranges;
mod segment;
mod slab;
mod sorted;
mod table;
mod tails;
mod trie;
mod watchers;

pub(crate) use watchers::WatcherList;

use crate::meta::TargetKind;
pub(crate) use ranges::{decode as decode_range, encode as encode_range};

use exact::ExactIndex;
pub(crate) use patterns::wildcards;
use patterns::PatternIndex;
use ranges::RangeIndex;
use segment::PathHasher;
use table::Layout;
use trie::{Found, PrefixTrie};

/// What an insertion into one snapshot learnt that the same insertion into its twin can
/// reuse: the twins hash with the same seeds (see [`Snapshot::empty_twin`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Placement {
    exact_tag: Option<exact::Tag>,
}

/// What the index stores per watcher: anything cloneable that carries a unique id.
pub(crate) trait WatcherEntry: Clone {
    /// The watcher's id.
    fn id(&self) -> u64;
}

/// Where a watcher list is filed: its target kind and the stored key or prefix, so that a
/// watcher found dead can be removed without rebuilding what it watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location<'a> {
    pub(crate) kind: TargetKind,
    pub(crate) pattern: &'a [u8],
}

/// The parts of a snapshot a sweep walks, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    EmptyPrefix,
    Exact,
    Prefixes,
    BytePrefixes,
    Ranges,
    PatternPrefixes,
    PatternLasts,
    Done,
}

/// Where a [`Snapshot::sweep`] stands. Holds no reference into a snapshot, so the reader
/// can let go of its snapshot between slices.
#[derive(Clone, Debug)]
pub(crate) struct SweepCursor {
    stage: Stage,
    bucket: usize,
    /// The layout of the table being walked when the walk reached `bucket`.
    layout: Layout,
    restarts: u64,
}

impl Default for SweepCursor {
    fn default() -> Self {
        Self::new()
    }
}

impl SweepCursor {
    /// A sweep that has not started.
    pub(crate) fn new() -> Self {
        Self {
            stage: Stage::EmptyPrefix,
            bucket: 0,
            layout: Layout::default(),
            restarts: 0,
        }
    }

    /// True once every list has been visited.
    pub(crate) fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Times a table was rebuilt under the sweep and walked again from its start.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts
    }

    fn enter(&mut self, stage: Stage) {
        self.stage = stage;
        self.bucket = 0;
        self.layout = Layout::default();
    }

    /// Before walking a table: a different layout than at the last bucket means entries
    /// may have moved, so walk the table again from its start.
    fn check_layout(&mut self, layout: Layout) {
        if self.layout != layout {
            if self.bucket != 0 {
                self.restarts += 1;
                self.bucket = 0;
            }
            self.layout = layout;
        }
    }
}

/// Walks one table's buckets from the cursor until `budget` is spent or the table ends
/// (then moves the cursor to `next`). Nodes kept only for their children have empty lists:
/// skipped.
#[allow(clippy::too_many_arguments)]
fn walk_table<'s, W: WatcherEntry + 's, F: FnMut(Location<'_>, &WatcherList<W>)>(
    cursor: &mut SweepCursor,
    budget: usize,
    spent: &mut usize,
    (layout, buckets): (Layout, usize),
    bucket: impl Fn(usize) -> Option<(Location<'s>, &'s WatcherList<W>)>,
    next: Stage,
    f: &mut F,
) {
    cursor.check_layout(layout);
    while *spent < budget && cursor.bucket < buckets {
        if let Some((location, list)) = bucket(cursor.bucket) {
            if !list.is_empty() {
                f(location, list);
                *spent += list.len();
            }
        }
        cursor.bucket += 1;
        *spent += 1;
    }
    if cursor.bucket >= buckets {
        cursor.enter(next);
    }
}

/// One view of all watchers. Cloning copies all four indexes, keeping their layout: the
/// registry clones the published snapshot to rebuild its back one after a publish that
/// panicked (`Shared::mend`), and otherwise builds the second with
/// [`Snapshot::empty_twin`] and the same changes.
pub(crate) struct Snapshot<W> {
    exact: ExactIndex<W>,
    prefixes: PrefixTrie<W>,
    ranges: RangeIndex<W>,
    patterns: PatternIndex<W>,
}

impl<W: Clone> Clone for Snapshot<W> {
    fn clone(&self) -> Self {
        Self {
            exact: self.exact.clone(),
            prefixes: self.prefixes.clone(),
            ranges: self.ranges.clone(),
            patterns: self.patterns.clone(),
        }
    }
}

impl<W: WatcherEntry> Default for Snapshot<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: WatcherEntry> Snapshot<W> {
    /// An empty snapshot with fresh hash seeds.
    pub(crate) fn new() -> Self {
        Self {
            exact: ExactIndex::with_hasher(ahash::RandomState::new()),
            prefixes: PrefixTrie::with_hasher(PathHasher::new()),
            ranges: RangeIndex::with_hasher(ahash::RandomState::new()),
            patterns: PatternIndex::with_hasher(ahash::RandomState::new()),
        }
    }

    /// An empty snapshot with this one's hash seeds: given the same changes in the same
    /// order, the two keep every entry in the same bucket, so a sweep can move from one to
    /// the other (see `table`).
    pub(crate) fn empty_twin(&self) -> Self {
        Self {
            exact: self.exact.empty_twin(),
            prefixes: self.prefixes.empty_twin(),
            ranges: self.ranges.empty_twin(),
            patterns: self.patterns.empty_twin(),
        }
    }

    /// Visits watcher lists in a fixed order (the empty prefix, then by bucket: exact keys,
    /// prefixes, byte prefixes, ranges, prefix patterns, exact patterns), resuming where
    /// `cursor` stopped, and returns after about `budget` units of work (one per bucket
    /// looked at, one per watcher in a visited list) or at the end (then
    /// `cursor.is_done()`). A list is visited whole.
    ///
    /// Between calls the snapshot may change or be exchanged for its twin. Lists present
    /// throughout are visited once, unless the table they sit in is rebuilt mid-sweep: then
    /// that table's walk restarts and may visit some of them again. Lists added or removed
    /// meanwhile may or may not be visited.
    pub(crate) fn sweep<F: FnMut(Location<'_>, &WatcherList<W>)>(
        &self,
        cursor: &mut SweepCursor,
        budget: usize,
        f: &mut F,
    ) {
        let mut spent = 0;
        while spent < budget {
            match cursor.stage {
                Stage::EmptyPrefix => {
                    let list = self.prefixes.root_watchers();
                    if !list.is_empty() {
                        let location = Location {
                            kind: TargetKind::Prefix,
                            pattern: &[],
                        };
                        f(location, list);
                        spent += list.len();
                    }
                    cursor.enter(Stage::Exact);
                }
                Stage::Exact => walk_table(
                    cursor,
                    budget,
                    &mut spent,
                    (self.exact.layout(), self.exact.buckets()),
                    |i| {
                        let (pattern, list) = self.exact.bucket(i)?;
                        let kind = TargetKind::Exact;
                        Some((Location { kind, pattern }, list))
                    },
                    Stage::Prefixes,
                    f,
                ),
                Stage::Prefixes => walk_table(
                    cursor,
                    budget,
                    &mut spent,
                    (self.prefixes.layout(), self.prefixes.buckets()),
                    |i| {
                        let (pattern, list) = self.prefixes.bucket(i)?;
                        let kind = TargetKind::Prefix;
                        Some((Location { kind, pattern }, list))
                    },
                    Stage::BytePrefixes,
                    f,
                ),
                Stage::BytePrefixes => walk_table(
                    cursor,
                    budget,
                    &mut spent,
                    (self.prefixes.tails_layout(), self.prefixes.tails_buckets()),
                    |i| {
                        let (pattern, list) = self.prefixes.tails_bucket(i)?;
                        let kind = TargetKind::BytePrefix;
                        Some((Location { kind, pattern }, list))
                    },
                    Stage::Ranges,
                    f,
                ),
                Stage::Ranges => walk_table(
                    cursor,
                    budget,
                    &mut spent,
                    (self.ranges.layout(), self.ranges.buckets()),
                    |i| {
                        let (pattern, list) = self.ranges.bucket(i)?;
                        let kind = TargetKind::Range;
                        Some((Location { kind, pattern }, list))
                    },
                    Stage::PatternPrefixes,
                    f,
                ),
                Stage::PatternPrefixes => walk_table(
                    cursor,
                    budget,
                    &mut spent,
                    (self.patterns.nodes_layout(), self.patterns.nodes_buckets()),
                    |i| {
                        let (pattern, list) = self.patterns.nodes_bucket(i)?;
                        let kind = TargetKind::Pattern;
                        Some((Location { kind, pattern }, list))
                    },
                    Stage::PatternLasts,
                    f,
                ),
                Stage::PatternLasts => walk_table(
                    cursor,
                    budget,
                    &mut spent,
                    (self.patterns.lasts_layout(), self.patterns.lasts_buckets()),
                    |i| {
                        let (pattern, list) = self.patterns.lasts_bucket(i)?;
                        let kind = TargetKind::Pattern;
                        Some((Location { kind, pattern }, list))
                    },
                    Stage::Done,
                    f,
                ),
                Stage::Done => return,
            }
        }
    }

    /// True when both snapshots put every entry in the same bucket (`other` is this one's
    /// twin, with the same history).
    pub(crate) fn same_layout(&self, other: &Self) -> bool {
        fn placement<W: WatcherEntry>(s: &Snapshot<W>) -> Vec<Option<(Vec<u8>, usize)>> {
            let exact = (0..s.exact.buckets()).map(|i| s.exact.bucket(i));
            let prefixes = (0..s.prefixes.buckets()).map(|i| s.prefixes.bucket(i));
            exact
                .chain(prefixes)
                .map(|b| b.map(|(key, list)| (key.to_vec(), list.len())))
                .collect()
        }
        self.exact.layout() == other.exact.layout()
            && self.prefixes.layout() == other.prefixes.layout()
            && self.prefixes.tails_layout() == other.prefixes.tails_layout()
            && placement(self) == placement(other)
            && self.prefixes.tails_placement() == other.prefixes.tails_placement()
            && self.ranges.placement() == other.ranges.placement()
            && self.patterns.placement() == other.patterns.placement()
    }

    /// Calls `f` with every watcher list matching an event on `key`: the exact watchers of
    /// `key` first, then the prefix watchers of each leading part of `key`, shortest first.
    /// One probe for the key, one per segment; no allocation, except a pattern walk whose
    /// frontier outgrows its inline room (`patterns.rs`).
    ///
    /// The exact list is looked up first but handed to `f` only when the trie walk reports
    /// its first match (or ends): the walk's probes do not wait for the exact probe's cache
    /// miss, so the two overlap.
    #[cfg(feature = "internals")]
    pub(crate) fn for_each_match<F: FnMut(Location<'_>, &WatcherList<W>)>(
        &self,
        key: &[u8],
        f: &mut F,
    ) {
        self.for_each_match_given(key, self.exact_watchers(key), f);
    }

    /// Positions of the exact index's entries, holes included (tests).
    #[cfg(feature = "internals")]
    pub(crate) fn exact_positions(&self) -> usize {
        self.exact.positions()
    }

    /// The exact watchers of `key` (the first half of [`Self::for_each_match`], for callers
    /// that look up several keys before delivering to any: independent lookups whose cache
    /// misses overlap).
    #[inline]
    pub(crate) fn exact_watchers(&self, key: &[u8]) -> Option<&WatcherList<W>> {
        match self.exact.key_count() {
            0 => None,
            _ => self.exact.get(key),
        }
    }

    /// [`Self::for_each_match`] with the exact watchers of `key` already looked up (by
    /// [`Self::exact_watchers`] on this snapshot). Each list comes with its [`Location`],
    /// whose pattern is a slice of `key` (for these kinds a match's pattern is the key or
    /// one of its leading parts).
    #[inline]
    pub(crate) fn for_each_match_given<'s, F: FnMut(Location<'_>, &WatcherList<W>)>(
        &'s self,
        key: &[u8],
        mut exact: Option<&'s WatcherList<W>>,
        f: &mut F,
    ) {
        let exact_at = Location {
            kind: TargetKind::Exact,
            pattern: key,
        };
        if self.prefixes.watcher_count() + self.prefixes.byte_prefix_watcher_count() != 0 {
            self.prefixes.for_each_match(key, &mut |found, list| {
                if let Some(exact) = exact.take() {
                    f(exact_at, exact);
                }
                let (kind, len) = match found {
                    Found::Prefix(len) => (TargetKind::Prefix, len),
                    Found::BytePrefix(len) => (TargetKind::BytePrefix, len),
                };
                let location = Location {
                    kind,
                    pattern: &key[..len],
                };
                f(location, list);
            });
        }
        if self.ranges.watcher_count() != 0 {
            self.ranges.for_each_match(key, &mut |pattern, list| {
                if let Some(exact) = exact.take() {
                    f(exact_at, exact);
                }
                let kind = TargetKind::Range;
                f(Location { kind, pattern }, list);
            });
        }
        if self.patterns.watcher_count() != 0 {
            self.patterns.for_each_match(key, &mut |pattern, list| {
                if let Some(exact) = exact.take() {
                    f(exact_at, exact);
                }
                let kind = TargetKind::Pattern;
                f(Location { kind, pattern }, list);
            });
        }
        if let Some(exact) = exact {
            f(exact_at, exact);
        }
    }

    /// Adds `watcher` on `pattern`, filed as `kind` (a prefix must be empty or end with the
    /// separator: the registry checks). `placement` carries what one twin computed for the
    /// other: the same change applied to both hashes its key once.
    pub(crate) fn insert(
        &mut self,
        kind: TargetKind,
        pattern: &bytes::Bytes,
        watcher: W,
        placement: &mut Placement,
    ) {
        match kind {
            TargetKind::Exact => {
                let tag = *placement
                    .exact_tag
                    .get_or_insert_with(|| self.exact.hash(pattern));
                self.exact.insert_hashed(pattern, tag, watcher)
            }
            TargetKind::Prefix => self.prefixes.insert(pattern, watcher),
            TargetKind::BytePrefix => self.prefixes.insert_byte_prefix(pattern.clone(), watcher),
            TargetKind::Range => self.ranges.insert(pattern.clone(), watcher),
            TargetKind::Pattern => self.patterns.insert(pattern.clone(), watcher),
        }
    }

    /// Removes watcher `id` from the watchers of `pattern` filed as `kind`.
    pub(crate) fn remove(&mut self, kind: TargetKind, pattern: &[u8], id: u64) -> Option<W> {
        match kind {
            TargetKind::Exact => self.exact.remove(pattern, id),
            TargetKind::Prefix => self.prefixes.remove(pattern, id),
            TargetKind::BytePrefix => self.prefixes.remove_byte_prefix(pattern, id),
            TargetKind::Range => self.ranges.remove(pattern, id),
            TargetKind::Pattern => self.patterns.remove(pattern, id),
        }
    }

    /// The watchers of exactly `pattern`, filed as `kind`.
    pub(crate) fn list(&self, kind: TargetKind, pattern: &[u8]) -> Option<&WatcherList<W>> {
        match kind {
            TargetKind::Exact => self.exact.get(pattern),
            TargetKind::Prefix => self.prefixes.get(pattern),
            TargetKind::BytePrefix => self.prefixes.byte_prefix_watchers(pattern),
            TargetKind::Range => self.ranges.get(pattern),
            TargetKind::Pattern => self.patterns.get(pattern),
        }
    }

    /// Number of watchers of exactly `pattern`, filed as `kind`.
    pub(crate) fn watchers_of(&self, kind: TargetKind, pattern: &[u8]) -> usize {
        self.list(kind, pattern).map_or(0, WatcherList::len)
    }

    /// Number of distinct keys with exact watchers.
    pub(crate) fn exact_key_count(&self) -> usize {
        self.exact.key_count()
    }

    /// Number of distinct prefixes with watchers.
    pub(crate) fn prefix_count(&self) -> usize {
        self.prefixes.prefix_count()
    }

    /// Number of distinct byte prefixes with watchers.
    pub(crate) fn byte_prefix_count(&self) -> usize {
        self.prefixes.byte_prefix_count()
    }

    /// Number of distinct ranges with watchers.
    pub(crate) fn range_count(&self) -> usize {
        self.ranges.range_count()
    }

    /// Number of distinct wildcard patterns with watchers.
    pub(crate) fn pattern_count(&self) -> usize {
        self.patterns.pattern_count()
    }

    /// Number of watchers, of every kind.
    pub(crate) fn watcher_count(&self) -> usize {
        self.exact.watcher_count()
            + self.prefixes.watcher_count()
            + self.prefixes.byte_prefix_watcher_count()
            + self.ranges.watcher_count()
            + self.patterns.watcher_count()
    }

    /// Panics if an invariant of either index is broken.
    pub(crate) fn check_invariants(&self) {
        self.exact.check_invariants();
        self.prefixes.check_invariants();
        self.ranges.check_invariants();
        self.patterns.check_invariants();
    }
}
