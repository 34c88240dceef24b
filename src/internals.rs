//! The private index behind a small API, for the fuzz target and property tests that check
//! it against a naive model. Not part of the stable API: enabled by the `internals` feature.

use crate::index::{MatchKind, Snapshot, SweepCursor, WatcherEntry};

/// A watcher reduced to its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Id(u64);

impl WatcherEntry for Id {
    fn id(&self) -> u64 {
        self.0
    }
}

/// One match of a key: `(is_prefix, length of the matched prefix or key, watcher id)`.
pub type Match = (bool, usize, u64);

/// The index, with older versions kept on demand, and a twin that receives every change
/// too (as the registry's two snapshots do), so that a sweep can alternate between them.
pub struct TestIndex {
    current: Snapshot<Id>,
    twin: Snapshot<Id>,
    kept: Vec<Snapshot<Id>>,
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
            kept: Vec::new(),
            sweep: SweepCursor::new(),
        }
    }

    /// Adds exact watcher `id` on `key`.
    pub fn insert_exact(&mut self, key: &[u8], id: u64) {
        for s in [&mut self.current, &mut self.twin] {
            s.insert_exact(bytes::Bytes::copy_from_slice(key), Id(id));
        }
    }

    /// Adds prefix watcher `id` on `prefix`, which must be empty or end with `/` (the index
    /// matches byte prefixes that end at a separator); panics otherwise.
    pub fn insert_prefix(&mut self, prefix: &[u8], id: u64) {
        for s in [&mut self.current, &mut self.twin] {
            s.insert_prefix(bytes::Bytes::copy_from_slice(prefix), Id(id));
        }
    }

    /// Removes exact watcher `id` from `key`; true if it was there.
    pub fn remove_exact(&mut self, key: &[u8], id: u64) -> bool {
        let twin = self.twin.remove_exact(key, id).is_some();
        let current = self.current.remove_exact(key, id).is_some();
        assert_eq!(twin, current, "the twins disagree");
        current
    }

    /// Removes prefix watcher `id` from `prefix`; true if it was there.
    pub fn remove_prefix(&mut self, prefix: &[u8], id: u64) -> bool {
        let twin = self.twin.remove_prefix(prefix, id).is_some();
        let current = self.current.remove_prefix(prefix, id).is_some();
        assert_eq!(twin, current, "the twins disagree");
        current
    }

    /// Starts a new sweep over every watcher list.
    pub fn start_sweep(&mut self) {
        self.sweep = SweepCursor::new();
    }

    /// Advances the sweep by about `budget` units of work, reading the twin when `on_twin`
    /// (as a dispatcher finds either snapshot published). Returns the ids visited, with
    /// whether each is a prefix watcher.
    pub fn sweep_step(&mut self, budget: usize, on_twin: bool) -> Vec<(bool, u64)> {
        let snapshot = if on_twin { &self.twin } else { &self.current };
        let mut out = Vec::new();
        snapshot.sweep(&mut self.sweep, budget, &mut |_, is_prefix, list| {
            list.for_each(&mut |w| out.push((is_prefix, w.0)));
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

    /// Every watcher an event on `key` reaches, in dispatch order within each list kind
    /// (exact first, then prefixes shortest first); ids within one list sorted.
    pub fn matches(&self, key: &[u8]) -> Vec<Match> {
        matches_in(&self.current, key)
    }

    /// Keeps a copy of the current version: later writes must copy the paths they change.
    pub fn keep_version(&mut self) {
        self.kept.push(self.current.clone());
    }

    /// Matches of `key` in the `n`-th kept version.
    pub fn kept_matches(&self, n: usize, key: &[u8]) -> Vec<Match> {
        matches_in(&self.kept[n], key)
    }

    /// Number of kept versions.
    pub fn kept_versions(&self) -> usize {
        self.kept.len()
    }

    /// Drops every kept version.
    pub fn release_versions(&mut self) {
        self.kept.clear();
    }

    /// Watchers in the current version.
    pub fn watcher_count(&self) -> usize {
        self.current.watcher_count()
    }

    /// Panics if an invariant of the current version is broken, or if its twin places any
    /// entry elsewhere.
    pub fn check_invariants(&self) {
        self.current.check_invariants();
        assert!(
            self.current.same_layout(&self.twin),
            "twins with one history must share a layout"
        );
    }

    /// Panics if an invariant of a kept version is broken (they are copies: writes to the
    /// current version must never reach them).
    pub fn check_kept_invariants(&self) {
        self.kept.iter().for_each(Snapshot::check_invariants);
    }
}

fn matches_in(snapshot: &Snapshot<Id>, key: &[u8]) -> Vec<Match> {
    let mut out = Vec::new();
    snapshot.for_each_match(key, &mut |kind, list| {
        let (is_prefix, len) = match kind {
            MatchKind::Exact => (false, key.len()),
            MatchKind::Prefix { len } => (true, len),
        };
        let start = out.len();
        list.for_each(&mut |w| out.push((is_prefix, len, w.0)));
        out[start..].sort_unstable();
    });
    out
}
