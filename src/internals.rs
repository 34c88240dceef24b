//! The private index behind a small API, for the fuzz target and property tests that check
//! it against a naive model. Not part of the stable API: enabled by the `internals` feature.

use crate::index::{Placement, Snapshot, SweepCursor, WatcherEntry};
use crate::meta::TargetKind;

/// What a watcher watches, as the index files it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// One exact key.
    Exact,
    /// Every key that starts with the prefix, which is empty or ends with `/`.
    Prefix,
    /// Every key that starts with the bytes.
    BytePrefix,
    /// Every key in a range; its pattern is [`encode_range`]'s.
    Range,
    /// Every key a wildcard pattern matches (`*` as whole pieces only).
    Pattern,
}

/// The pattern a range `[start, end)` (`None`: unbounded) is stored as.
pub fn encode_range(start: &[u8], end: Option<&[u8]>) -> Vec<u8> {
    crate::index::encode_range(start, end).to_vec()
}

impl Kind {
    fn target(self) -> TargetKind {
        match self {
            Kind::Exact => TargetKind::Exact,
            Kind::Prefix => TargetKind::Prefix,
            Kind::BytePrefix => TargetKind::BytePrefix,
            Kind::Range => TargetKind::Range,
            Kind::Pattern => TargetKind::Pattern,
        }
    }

    fn of(kind: TargetKind) -> Self {
        match kind {
            TargetKind::Exact => Kind::Exact,
            TargetKind::Prefix => Kind::Prefix,
            TargetKind::BytePrefix => Kind::BytePrefix,
            TargetKind::Range => Kind::Range,
            TargetKind::Pattern => Kind::Pattern,
        }
    }
}

/// A watcher reduced to its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Id(u64);

impl WatcherEntry for Id {
    fn id(&self) -> u64 {
        self.0
    }
}

/// One match of a key: `(kind, the stored key or prefix, watcher id)`.
pub type Match = (Kind, Vec<u8>, u64);

/// The index, and a twin that receives every change too (as the registry's two snapshots
/// do), so that a sweep can alternate between them.
pub struct TestIndex {
    current: Snapshot<Id>,
    twin: Snapshot<Id>,
    sweep: SweepCursor,
}

impl Default for TestIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIndex {
    /// An empty index.
    pub fn new() -> Self {
        let current = Snapshot::new();
        let twin = current.empty_twin();
        Self {
            current,
            twin,
            sweep: SweepCursor::new(),
        }
    }

    /// Adds watcher `id` on `pattern`; a prefix must be empty or end with `/` (the index
    /// matches byte prefixes that end at a separator), or this panics.
    pub fn insert(&mut self, kind: Kind, pattern: &[u8], id: u64) {
        let pattern = bytes::Bytes::copy_from_slice(pattern);
        let mut placement = Placement::default();
        for s in [&mut self.current, &mut self.twin] {
            s.insert(kind.target(), &pattern, Id(id), &mut placement);
        }
    }

    /// Removes watcher `id` from `pattern`; true if it was there.
    pub fn remove(&mut self, kind: Kind, pattern: &[u8], id: u64) -> bool {
        let twin = self.twin.remove(kind.target(), pattern, id).is_some();
        let current = self.current.remove(kind.target(), pattern, id).is_some();
        assert_eq!(twin, current, "the twins disagree");
        current
    }

    /// Starts a new sweep over every watcher list.
    pub fn start_sweep(&mut self) {
        self.sweep = SweepCursor::new();
    }

    /// Advances the sweep by about `budget` units of work, reading the twin when `on_twin`
    /// (as a dispatcher finds either snapshot published). Returns the ids visited, with
    /// the kind each is filed as.
    pub fn sweep_step(&mut self, budget: usize, on_twin: bool) -> Vec<(Kind, u64)> {
        let snapshot = if on_twin { &self.twin } else { &self.current };
        let mut out = Vec::new();
        snapshot.sweep(&mut self.sweep, budget, &mut |at, list| {
            list.for_each(&mut |w| out.push((Kind::of(at.kind), w.0)));
        });
        out
    }

    /// True once the sweep has visited everything.
    pub fn sweep_done(&self) -> bool {
        self.sweep.is_done()
    }

    /// Tables the sweep walked again because they were rebuilt under it.
    pub fn sweep_restarts(&self) -> u64 {
        self.sweep.restarts()
    }

    /// Every watcher an event on `key` reaches, in dispatch order (exact first, then
    /// prefixes shortest first); ids within one list sorted.
    pub fn matches(&self, key: &[u8]) -> Vec<Match> {
        matches_in(&self.current, key)
    }

    /// Watchers in the index.
    pub fn watcher_count(&self) -> usize {
        self.current.watcher_count()
    }

    /// Positions the exact index holds, live entries and holes: it drops below the
    /// high-water mark only when holes are compacted away or the index empties.
    pub fn exact_positions(&self) -> usize {
        self.current.exact_positions()
    }

    /// Panics if an invariant of the index is broken, or if its twin places any entry
    /// elsewhere.
    pub fn check_invariants(&self) {
        self.current.check_invariants();
        self.twin.check_invariants();
        assert!(
            self.current.same_layout(&self.twin),
            "twins with one history must share a layout"
        );
    }
}

fn matches_in(snapshot: &Snapshot<Id>, key: &[u8]) -> Vec<Match> {
    let mut out = Vec::new();
    snapshot.for_each_match(key, &mut |at, list| {
        let start = out.len();
        list.for_each(&mut |w| out.push((Kind::of(at.kind), at.pattern.to_vec(), w.0)));
        out[start..].sort_unstable();
    });
    out
}
