//! A model of the semantics the reference does not have: every target kind, event filters,
//! keys-only, owners with caps, progress on demand. Naive on purpose (a list of watchers,
//! each match decided from the definitions), so that it is obviously right; `run` drives
//! watchtrie's `WatchRegistry::watch` and `InlineDispatcher` with the same operations and
//! reports the first divergence.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use proptest::prelude::*;
use tokio::sync::mpsc;
use watchtrie::{
    CompactWatcherHandle, EventFilter, InlineDispatcher, OwnerId, ProgressRequest, RegisterError,
    RegistryOptions, Target, WatchEvent, WatchEventType, WatchRegistry, WatchResponse, WatchSpec,
    WatcherHandle,
};

/// Keys events are sent on: nested, touching and slash-less, so that every kind matches
/// some and misses some.
pub const KEYS: &[&[u8]] = &[
    b"", b"/", b"/a", b"/a/", b"/a/b", b"/a/b/", b"/a/bc", b"/a/b/c", b"/b", b"/b/a", b"a", b"ab",
    b"/a//", b"/ab/c", b"/b/a/c",
];

/// Bytes a target is made of.
pub const PIECES: &[&[u8]] = &[
    b"", b"/", b"/a", b"/a/", b"/a/b", b"/a/b/", b"/b", b"/b/", b"a", b"/*/", b"/a/*", b"/*/b",
    b"/*", b"*", b"/a/*/", b"/*/*",
];

/// One wildcard more than the default allows: refused. Not in [`PIECES`], whose length
/// the saved proptest and fuzz cases depend on (pieces are picked modulo it).
const TOO_MANY_WILDCARDS: &[u8] = b"/*/*/*/*/*";

/// Whether `target` matches `key`, from the definitions alone.
pub fn matches(target: &Target, key: &[u8]) -> bool {
    match target {
        Target::Exact(k) => &k[..] == key,
        Target::Prefix(p) | Target::BytePrefix(p) => key.starts_with(p),
        Target::Range { start, end } => {
            &start[..] <= key && end.as_ref().is_none_or(|end| key < &end[..])
        }
        Target::Pattern(pattern) => pattern_matches(pattern, key),
        _ => unreachable!("every target kind is modelled"),
    }
}

/// Pieces split at `/`; `*` is any one piece; a trailing `/` lets the key go on.
pub fn pattern_matches(pattern: &[u8], key: &[u8]) -> bool {
    let p: Vec<&[u8]> = pattern.split(|&b| b == b'/').collect();
    let k: Vec<&[u8]> = key.split(|&b| b == b'/').collect();
    let prefix = pattern.ends_with(b"/");
    let fixed = if prefix { &p[..p.len() - 1] } else { &p[..] };
    let long_enough = if prefix {
        k.len() > fixed.len()
    } else {
        k.len() == fixed.len()
    };
    long_enough && fixed.iter().zip(&k).all(|(p, k)| *p == b"*" || p == k)
}

/// The most wildcards a pattern may hold by default (`RegistryOptions::with_max_wildcards`).
const DEFAULT_MAX_WILDCARDS: usize = 4;

/// The event filter of `bits`: 1 no Put, 2 no Delete, 4 no Progress (the other bits are
/// ignored). The models' one reading of a drawn filter.
pub fn filter_of(bits: u8) -> EventFilter {
    let mut filter = EventFilter::default();
    if bits & 1 != 0 {
        filter = filter.no_put();
    }
    if bits & 2 != 0 {
        filter = filter.no_delete();
    }
    if bits & 4 != 0 {
        filter = filter.no_progress();
    }
    filter
}

/// How an operation names a target: a kind and indexes into [`PIECES`].
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSpec {
    kind: u8,
    a: u8,
    b: u8,
}

impl TargetSpec {
    /// The target of kind `kind` made of pieces `a` and `b` (each taken modulo its table).
    pub fn new(kind: u8, a: u8, b: u8) -> Self {
        Self { kind, a, b }
    }

    /// The target named (possibly malformed: refusals are compared too).
    pub fn target(&self) -> Target {
        let piece = |i: u8| Bytes::from_static(PIECES[usize::from(i) % PIECES.len()]);
        match self.kind % 6 {
            0 => Target::Exact(piece(self.a)),
            1 => Target::Prefix(piece(self.a)),
            2 => Target::BytePrefix(piece(self.a)),
            3 => Target::Range {
                start: piece(self.a),
                end: Some(piece(self.b)),
            },
            4 => Target::Range {
                start: piece(self.a),
                end: None,
            },
            // A pattern has no second piece: `b` picks, one time in eight, the pattern
            // with too many wildcards.
            _ if self.b % 8 == 7 => Target::Pattern(Bytes::from_static(TOO_MANY_WILDCARDS)),
            _ => Target::Pattern(piece(self.a)),
        }
    }
}

/// One step of a case.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `watch(spec)`.
    Register {
        target: TargetSpec,
        prev_kv: bool,
        /// Bits: no put, no delete, no progress.
        filter: u8,
        keys_only: bool,
        owner: Option<u8>,
        compact: bool,
    },
    /// Drop a handle.
    Drop { slot: u8 },
    /// Read up to `max` events from a watcher.
    Read { slot: u8, max: u8 },
    /// Dispatch one event (revisions count up: `gap` is added to the last).
    Event { key: u8, delete: bool, gap: u8 },
    /// Request Progress to every watcher (`slot: None`) or to one.
    Progress { slot: Option<u8> },
    /// Set an owner's cap (`None` clears it).
    OwnerLimit { owner: u8, limit: Option<u8> },
    /// Set the registry's default owner cap at run time (`None`: no cap).
    DefaultOwnerLimit { limit: Option<u8> },
}

/// A case: the buffer size, the global limit, the default owner cap, how drops release,
/// and the steps.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub buffer: u8,
    pub limit: Option<u8>,
    pub owner_limit: Option<u8>,
    /// `RegistryOptions::with_release_at_drop`: a dropped watcher stops counting at once.
    pub release_at_drop: bool,
    /// The driver leaves unregistrations to the dispatcher's next event or Progress
    /// instead of processing them after every step: registrations then meet dropped
    /// watchers that still count (by default) or no longer do (`release_at_drop`).
    pub lazy: bool,
    pub ops: Vec<Op>,
}

/// A proptest strategy for [`Case`].
pub fn case() -> impl Strategy<Value = Case> {
    let target =
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(kind, a, b)| TargetSpec { kind, a, b });
    let op = prop_oneof![
        5 => (target, any::<bool>(), any::<u8>(), any::<bool>(), proptest::option::weighted(0.4, 0u8..3), any::<bool>())
            .prop_map(|(target, prev_kv, filter, keys_only, owner, compact)| Op::Register { target, prev_kv, filter, keys_only, owner, compact }),
        2 => any::<u8>().prop_map(|slot| Op::Drop { slot }),
        3 => (any::<u8>(), 0u8..5).prop_map(|(slot, max)| Op::Read { slot, max }),
        6 => (any::<u8>(), any::<bool>(), 0u8..3).prop_map(|(key, delete, gap)| Op::Event { key, delete, gap }),
        1 => proptest::option::of(any::<u8>()).prop_map(|slot| Op::Progress { slot }),
        1 => (0u8..3, proptest::option::of(0u8..3)).prop_map(|(owner, limit)| Op::OwnerLimit { owner, limit }),
        1 => proptest::option::of(0u8..3).prop_map(|limit| Op::DefaultOwnerLimit { limit }),
    ];
    (
        0u8..4,
        proptest::option::weighted(0.3, 0u8..8),
        proptest::option::weighted(0.3, 0u8..4),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(op, 0..60),
    )
        .prop_map(
            |(buffer, limit, owner_limit, release_at_drop, lazy, ops)| Case {
                buffer,
                limit,
                owner_limit,
                release_at_drop,
                lazy,
                ops,
            },
        )
}

/// One modelled watcher.
struct Watcher {
    id: u64,
    target: Target,
    prev_kv: bool,
    filter: u8,
    keys_only: bool,
    owner: Option<OwnerId>,
    /// Events sent and not read yet.
    queue: VecDeque<WatchEvent>,
    /// It got the cancel sentinel: nothing more comes.
    cancelled: bool,
    /// Its handle was dropped and the dispatcher has not processed the unregistration: it
    /// still counts (rule 3 of the contract), and gets nothing.
    dropped: bool,
}

impl Watcher {
    fn wants(&self, event_type: WatchEventType) -> bool {
        let bit = match event_type {
            WatchEventType::Put => 1,
            WatchEventType::Delete => 2,
            WatchEventType::Progress => 4,
            WatchEventType::Canceled => return true,
        };
        self.filter & bit == 0
    }
}

/// The modelled registry.
struct Model {
    buffer: usize,
    limit: usize,
    owner_default: usize,
    owner_limits: BTreeMap<OwnerId, usize>,
    /// Refusals per owner while its entry lives (it has watchers or a cap of its own).
    refused: BTreeMap<OwnerId, u64>,
    /// Registered watchers, by id (dropped ones leave when the dispatcher processes their
    /// unregistration, or at the drop with `release_at_drop`).
    watchers: BTreeMap<u64, Watcher>,
    next_id: u64,
    highest: u64,
}

impl Model {
    /// Watchers that count: registered and not cancelled (a cancelled watcher is removed
    /// from the index after its event, though its handle may still hold its queue).
    fn live(&self) -> impl Iterator<Item = &Watcher> {
        self.watchers.values().filter(|w| !w.cancelled)
    }

    fn owned(&self, owner: OwnerId) -> usize {
        self.live().filter(|w| w.owner == Some(owner)).count()
    }

    /// Whether `owner` has an entry: watchers, or a cap of its own (`owners.rs`).
    fn has_entry(&self, owner: OwnerId) -> bool {
        self.owned(owner) > 0 || self.owner_limits.contains_key(&owner)
    }

    /// The owners' gauges as `MetricsHandle::owners` documents them: every owner with an
    /// entry, its watchers, its cap (its own, else the default) and its refusals. An owner
    /// whose entry went starts again from no refusals.
    fn owner_gauges(&mut self) -> Vec<(OwnerId, usize, usize, u64)> {
        // Every owner named by a watcher or a cap (the fuzz target draws any of 256).
        let named: std::collections::BTreeSet<OwnerId> = self
            .watchers
            .values()
            .filter_map(|w| w.owner)
            .chain(self.owner_limits.keys().copied())
            .collect();
        let with_entry: Vec<OwnerId> = named.into_iter().filter(|&o| self.has_entry(o)).collect();
        self.refused.retain(|o, _| with_entry.contains(o));
        with_entry
            .into_iter()
            .map(|o| {
                let limit = self
                    .owner_limits
                    .get(&o)
                    .copied()
                    .unwrap_or(self.owner_default);
                let refused = self.refused.get(&o).copied().unwrap_or(0);
                (o, self.owned(o), limit, refused)
            })
            .collect()
    }

    /// The dispatcher processes the unregistrations queued: dropped watchers leave.
    fn process(&mut self) {
        self.watchers.retain(|_, w| !w.dropped);
    }

    fn register(&mut self, op: &Op, max_wildcards: usize) -> Result<u64, RegisterError> {
        let Op::Register {
            target,
            prev_kv,
            filter,
            keys_only,
            owner,
            ..
        } = op
        else {
            unreachable!()
        };
        let target = target.target();
        match &target {
            Target::Prefix(p) if !(p.starts_with(b"/") && p.ends_with(b"/")) => {
                return Err(RegisterError::InvalidPrefix)
            }
            Target::Range {
                start,
                end: Some(end),
            } if end <= start => return Err(RegisterError::EmptyRange),
            Target::Pattern(p) => {
                let pieces = p.split(|&b| b == b'/');
                if pieces.clone().any(|x| x != b"*" && x.contains(&b'*')) {
                    return Err(RegisterError::InvalidPattern {
                        reason: "a wildcard must be a whole piece: `*` between two `/`",
                    });
                }
                let wildcards = pieces.filter(|x| *x == b"*").count();
                if wildcards > max_wildcards {
                    return Err(RegisterError::TooManyWildcards {
                        wildcards,
                        max: max_wildcards,
                    });
                }
            }
            _ => {}
        }
        // The owner's cap before the global limit (docs/ARCHITECTURE.md, "One watch
        // description"): an owner's refusal never holds a unit of the global limit.
        let owner = owner.map(|o| OwnerId(u64::from(o)));
        if let Some(owner) = owner {
            let max = self
                .owner_limits
                .get(&owner)
                .copied()
                .unwrap_or(self.owner_default);
            if self.owned(owner) >= max {
                // Counted by its entry, if it has one (a refusal allocates none).
                if self.has_entry(owner) {
                    *self.refused.entry(owner).or_default() += 1;
                }
                return Err(RegisterError::OwnerLimitExceeded { owner, max });
            }
        }
        if self.live().count() >= self.limit {
            return Err(RegisterError::LimitExceeded { max: self.limit });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.watchers.insert(
            id,
            Watcher {
                id,
                target,
                prev_kv: *prev_kv,
                filter: *filter & 7,
                keys_only: *keys_only,
                owner,
                queue: VecDeque::new(),
                cancelled: false,
                dropped: false,
            },
        );
        Ok(id)
    }

    /// Delivers `event` to `w` as the dispatcher would; false if it overflowed.
    fn deliver(buffer: usize, w: &mut Watcher, event: &WatchEvent) -> bool {
        if w.cancelled || w.dropped || !w.wants(event.event_type) {
            return true;
        }
        if w.queue.len() >= buffer {
            w.queue.push_back(WatchEvent {
                event_type: WatchEventType::Canceled,
                key: event.key.clone(),
                value: Bytes::new(),
                prev_value: None,
                revision: 0,
            });
            w.cancelled = true;
            return false;
        }
        let value_of = |v: &Bytes| if w.keys_only { Bytes::new() } else { v.clone() };
        w.queue.push_back(WatchEvent {
            event_type: event.event_type,
            key: event.key.clone(),
            value: value_of(&event.value),
            prev_value: w
                .prev_kv
                .then(|| value_of(event.prev_value.as_ref().unwrap())),
            revision: event.revision,
        });
        true
    }

    fn event(&mut self, key: &[u8], event: &WatchEvent) {
        self.highest = self.highest.max(event.revision);
        for w in self.watchers.values_mut() {
            if matches(&w.target, key) {
                Self::deliver(self.buffer, w, event);
            }
        }
    }

    fn progress(&mut self, only: Option<u64>) {
        let event = WatchEvent {
            event_type: WatchEventType::Progress,
            key: Bytes::new(),
            value: Bytes::new(),
            prev_value: Some(Bytes::new()),
            revision: self.highest,
        };
        for w in self.watchers.values_mut() {
            if only.is_none_or(|id| id == w.id) {
                Self::deliver(self.buffer, w, &event);
            }
        }
    }
}

/// A handle of either kind.
enum Handle {
    DropIn(WatcherHandle),
    Compact(CompactWatcherHandle),
}

impl Handle {
    fn id(&self) -> u64 {
        match self {
            Handle::DropIn(h) => h.id(),
            Handle::Compact(h) => h.id(),
        }
    }

    fn try_recv(&mut self) -> Option<WatchEvent> {
        match self {
            Handle::DropIn(h) => h.receiver_mut().try_recv().ok(),
            Handle::Compact(h) => h.receiver_mut().try_recv().ok(),
        }
    }

    fn progress_request(&self) -> ProgressRequest {
        match self {
            Handle::DropIn(h) => h.progress_request(),
            Handle::Compact(h) => h.progress_request(),
        }
    }
}

/// Runs `case` on watchtrie and on the model; `Err` describes the first divergence.
pub fn run(case: &Case) -> Result<(), String> {
    let buffer = usize::from(case.buffer % 4);
    let limit = case.limit.map_or(usize::MAX, usize::from);
    let owner_default = case.owner_limit.map_or(usize::MAX, usize::from);
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new_with_limits(buffer, limit, tx));
    registry.set_options(
        RegistryOptions::default()
            .with_owner_limit(owner_default)
            .with_release_at_drop(case.release_at_drop),
    );
    // The documented default, not read from the registry: a changed default must show.
    let max_wildcards = DEFAULT_MAX_WILDCARDS;
    let mut inline = InlineDispatcher::new(registry.clone(), rx);
    let mut model = Model {
        buffer,
        limit,
        owner_default,
        owner_limits: BTreeMap::new(),
        refused: BTreeMap::new(),
        watchers: BTreeMap::new(),
        next_id: 1,
        highest: 0,
    };
    let mut handles: Vec<Handle> = Vec::new();
    let mut revision = 0u64;
    for (step, op) in case.ops.iter().enumerate() {
        let at = |what: String| format!("step {step} ({op:?}): {what}");
        match op {
            Op::Register {
                target,
                prev_kv,
                filter,
                keys_only,
                owner,
                compact,
            } => {
                let mut spec = WatchSpec::new(target.target())
                    .prev_kv(*prev_kv)
                    .keys_only(*keys_only);
                spec = spec.filter(filter_of(*filter));
                if let Some(o) = owner {
                    spec = spec.owner(OwnerId(u64::from(*o)));
                }
                let got = if *compact {
                    registry.watch(spec.compact()).map(Handle::Compact)
                } else {
                    registry.watch(spec).map(Handle::DropIn)
                };
                let want = model.register(op, max_wildcards);
                match (got, want) {
                    (Ok(handle), Ok(id)) if handle.id() == id => handles.push(handle),
                    (Err(got), Err(want)) if got == want => {}
                    (got, want) => {
                        return Err(at(format!(
                            "watchtrie {:?}, model {want:?}",
                            got.map(|h| h.id())
                        )))
                    }
                }
            }
            Op::Drop { slot } if !handles.is_empty() => {
                let handle = handles.remove(usize::from(*slot) % handles.len());
                let id = handle.id();
                drop(handle);
                if case.release_at_drop {
                    // No other writer holds the lock here: the drop removes it itself.
                    model.watchers.remove(&id);
                } else if let Some(w) = model.watchers.get_mut(&id) {
                    w.dropped = true;
                }
            }
            Op::Read { slot, max } if !handles.is_empty() => {
                let n = handles.len();
                let handle = &mut handles[usize::from(*slot) % n];
                let w = model.watchers.get_mut(&handle.id()).expect("held");
                for _ in 0..*max {
                    let got = handle.try_recv();
                    let want = w.queue.pop_front();
                    if got != want {
                        return Err(at(format!("watcher {}: got {got:?}, model {want:?}", w.id)));
                    }
                }
            }
            Op::Event { key, delete, gap } => {
                revision += u64::from(*gap);
                let key = KEYS[usize::from(*key) % KEYS.len()];
                let event = WatchResponse {
                    key: Bytes::from_static(key),
                    value: Bytes::from_static(b"v"),
                    prev_value: Bytes::from_static(b"p"),
                    event_type: i32::from(*delete),
                    error: 0,
                    revision,
                };
                inline.dispatch(&event);
                model.process();
                let modelled = WatchEvent {
                    event_type: if *delete {
                        WatchEventType::Delete
                    } else {
                        WatchEventType::Put
                    },
                    key: event.key.clone(),
                    value: event.value.clone(),
                    prev_value: Some(event.prev_value.clone()),
                    revision,
                };
                model.event(key, &modelled);
            }
            Op::Progress { slot } => match slot {
                None => {
                    inline.request_progress(ProgressRequest::All);
                    while inline.continue_progress() {}
                    model.process();
                    model.progress(None);
                }
                Some(_) if handles.is_empty() => {}
                Some(slot) => {
                    let handle = &handles[usize::from(*slot) % handles.len()];
                    let id = handle.id();
                    let found = inline.request_progress(handle.progress_request());
                    model.process();
                    let registered = model.watchers.get(&id).is_some_and(|w| !w.cancelled);
                    if found != registered {
                        return Err(at(format!(
                            "request for {id}: found {found}, model {registered}"
                        )));
                    }
                    model.progress(Some(id));
                }
            },
            Op::OwnerLimit { owner, limit } => {
                let owner = OwnerId(u64::from(*owner));
                let limit = limit.map(usize::from);
                registry.set_owner_limit(owner, limit);
                match limit {
                    Some(limit) => model.owner_limits.insert(owner, limit),
                    None => model.owner_limits.remove(&owner),
                };
            }
            Op::DefaultOwnerLimit { limit } => {
                let limit = limit.map_or(usize::MAX, usize::from);
                registry.set_options(registry.options().with_owner_limit(limit));
                model.owner_default = limit;
            }
            _ => {}
        }
        // Unregistrations land before the next step, unless the case leaves them to the
        // dispatcher's own calls; removals of cancelled watchers land at their event.
        if !case.lazy {
            inline.process_unregistrations();
            model.process();
        }
        model
            .watchers
            .retain(|_, w| !w.cancelled || handles.iter().any(|h| h.id() == w.id));
        let live = model.live().count();
        if registry.active_watcher_count() != live {
            return Err(at(format!(
                "active watchers: watchtrie {}, model {live}",
                registry.active_watcher_count()
            )));
        }
        let want: Vec<_> = model.owner_gauges();
        let got: Vec<_> = registry
            .metrics()
            .owners()
            .into_iter()
            .map(|(o, m)| (o, m.watchers, m.limit, m.refused))
            .collect();
        if got != want {
            return Err(at(format!(
                "owners (id, watchers, cap, refused): watchtrie {got:?}, model {want:?}"
            )));
        }
        for owner in (0..3).map(OwnerId) {
            let want = model.owned(owner);
            let got = registry.metrics().owner(owner).watchers;
            if got != want {
                return Err(at(format!(
                    "owner {owner:?}: watchtrie {got}, model {want}"
                )));
            }
        }
        registry.check_invariants();
    }
    Ok(())
}
