//! Scenarios of what the reference cannot do, so watchtrie alone: the extra target kinds
//! beside plain `mixed`, a wildcard frontier at its worst, owner refusals under load, and
//! what one very deep key costs. Each times the inline dispatcher over preloaded events
//! (the index and delivery, without the broadcast hop) or the registry calls themselves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use watchtrie::{
    GroupedWatcherHandle, InlineDispatcher, OwnerId, RegistryOptions, Target, WatchRegistry,
    WatchSpec, WatcherHandle,
};

use crate::engines::Event;
use crate::workload::{self, random_key, Rng, Workload};

/// Buffer of every watcher: large, so that nobody overflows and both sides deliver all.
const BUFFER: usize = 1 << 16;

fn event(key: Bytes, revision: u64) -> Event {
    Event {
        key,
        value: Bytes::from_static(b"v"),
        prev_value: Bytes::new(),
        event_type: 0,
        error: 0,
        revision,
    }
}

fn registry() -> (Arc<WatchRegistry>, InlineDispatcher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(BUFFER, tx));
    let inline = InlineDispatcher::new(registry.clone(), rx);
    (registry, inline)
}

/// Nanoseconds per event of one inline pass over `events`.
fn pass(inline: &mut InlineDispatcher, events: &[Event]) -> f64 {
    let start = Instant::now();
    for e in events {
        inline.dispatch(e);
    }
    start.elapsed().as_nanos() as f64 / events.len() as f64
}

/// The watchers of `kinds`, by kind: `mixed`'s exact keys and slash prefixes (10 : 1, `n`
/// of them), and 10% of `n` byte prefixes, 5% key ranges and 5% wildcard patterns drawn
/// from the same hierarchy. Each new target is about as selective as one of `mixed`'s
/// prefixes (it covers a few depth-3 or depth-4 subtrees), so that the comparison is of
/// the index, not of how many channels each event fills: a sibling span over half the key
/// space, or a pattern of two stars under one service, would multiply the deliveries per
/// event by thousands.
pub struct KindsTargets {
    exact: Vec<Target>,
    prefixes: Vec<Target>,
    byte_prefixes: Vec<Target>,
    ranges: Vec<Target>,
    patterns: Vec<Target>,
}

impl KindsTargets {
    /// Draws the targets for `n` watchers from `plain` (a `mixed` workload of `n`).
    pub fn new(plain: &Workload, n: usize, seed: u64) -> KindsTargets {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mut byte_prefixes = Vec::with_capacity(n / 10);
        let mut ranges = Vec::with_capacity(n / 20);
        let mut patterns = Vec::with_capacity(n / 20);
        for _ in 0..n / 10 {
            // Cut inside the last segment's number, keeping at least one digit:
            // `/svc3/node12/part5` matches part5 and part50..part59 and all below them.
            let depth = 3 + rng.below(3) as usize;
            let key = random_key(&mut rng, depth, "svc");
            let last = key.rfind('/').expect("a slash") + 1;
            let digits_at = last
                + key[last..]
                    .find(|c: char| c.is_ascii_digit())
                    .expect("a digit");
            let cut = digits_at + 1 + rng.below((key.len() - digits_at) as u64) as usize;
            byte_prefixes.push(Target::BytePrefix(Bytes::from(key[..cut].to_string())));
        }
        for i in 0..n / 20 {
            let (start, end) = if i % 2 == 0 {
                // A depth-3 subtree and its root: [k, k + "/~").
                let start = random_key(&mut rng, 3, "svc");
                let end = format!("{start}/~");
                (start, end)
            } else {
                // A span of up to four depth-4 siblings, [.../k15, .../k19): two-digit
                // numbers, so that byte order is numeric order.
                let parent = random_key(&mut rng, 3, "svc");
                let first = 10 + rng.below(50);
                let last = first + 1 + rng.below(4);
                (format!("{parent}/k{first}"), format!("{parent}/k{last}"))
            };
            ranges.push(Target::Range {
                start: Bytes::from(start),
                end: Some(Bytes::from(end)),
            });
        }
        for _ in 0..n / 20 {
            // Four to six segments with one star (two from five segments on), never on the
            // service: `/svc3/*/part5/k7`, `/svc3/*/part5/*/x2/`.
            let depth = 4 + rng.below(3) as usize;
            let key = random_key(&mut rng, depth, "svc");
            let mut pieces: Vec<String> = key.split('/').map(str::to_string).collect();
            let stars = if depth >= 5 { 1 + rng.below(2) } else { 1 };
            let mut starred = 0;
            while starred < stars {
                let at = 2 + rng.below(pieces.len() as u64 - 2) as usize;
                if pieces[at] != "*" {
                    pieces[at] = "*".into();
                    starred += 1;
                }
            }
            let mut pattern = pieces.join("/");
            if rng.below(2) == 0 {
                pattern.push('/');
            }
            patterns.push(Target::Pattern(Bytes::from(pattern)));
        }
        KindsTargets {
            exact: plain.exact.iter().cloned().map(Target::Exact).collect(),
            prefixes: plain.prefixes.iter().cloned().map(Target::Prefix).collect(),
            byte_prefixes,
            ranges,
            patterns,
        }
    }

    /// `n` targets: the kinds chosen (byte prefixes, ranges, patterns), then plain exact
    /// keys and slash prefixes, 10 : 1, for the rest.
    pub fn mix(&self, n: usize, byte_prefixes: bool, ranges: bool, patterns: bool) -> Vec<Target> {
        let mut targets = Vec::with_capacity(n);
        for (chosen, kind) in [
            (byte_prefixes, &self.byte_prefixes),
            (ranges, &self.ranges),
            (patterns, &self.patterns),
        ] {
            if chosen {
                targets.extend(kind.iter().cloned());
            }
        }
        let rest = n.saturating_sub(targets.len());
        let prefixes = (rest / 11).min(self.prefixes.len());
        let exact = (rest - prefixes).min(self.exact.len());
        targets.extend(self.exact[..exact].iter().cloned());
        targets.extend(self.prefixes[..prefixes].iter().cloned());
        targets
    }
}

/// One row of `kinds`: a mix of watchers, its ns/event (best of two passes) and the
/// deliveries of one pass.
#[derive(Clone, Debug)]
pub struct KindsRow {
    pub label: &'static str,
    pub watchers: usize,
    pub ns: f64,
    pub deliveries: u64,
}

fn register_targets(registry: &WatchRegistry, targets: &[Target]) -> Vec<WatcherHandle> {
    targets
        .iter()
        .map(|t| {
            registry
                .watch(WatchSpec::new(t.clone()))
                .expect("a valid target")
        })
        .collect()
}

fn one_pass(targets: &[Target], events: &[Event]) -> (f64, u64) {
    let (registry, mut inline) = registry();
    let handles = register_targets(&registry, targets);
    let ns = pass(&mut inline, events);
    let deliveries = registry.metrics().read().deliveries;
    drop(handles);
    inline.process_unregistrations();
    (ns, deliveries)
}

/// `kinds`' targets for `n` watchers and `events` events of `mixed` (revisions from 1).
fn kinds_workload(n: usize, events: usize, seed: u64) -> (KindsTargets, Vec<Event>) {
    let plain = workload::mixed(n - n / 11, n / 11, events, seed);
    let kinds = KindsTargets::new(&plain, n, seed);
    let evs = plain
        .events
        .iter()
        .enumerate()
        .map(|(i, k)| event(k.clone(), i as u64 + 1))
        .collect();
    (kinds, evs)
}

/// The names `kinds`' rows answer to in `--only`, in their order.
pub const KINDS_MIXES: [&str; 5] = ["plain", "all", "byte-prefixes", "ranges", "patterns"];

/// `kinds`: plain `mixed` at `n` watchers, the same count with 10% byte prefixes, 5% ranges
/// and 5% patterns (the first row after plain, the target's), and each of those kinds alone
/// beside plain watchers (where the cost comes from). Every mix is run twice, in the order
/// given and then reversed, and keeps its best. With `only` (an index into
/// [`KINDS_MIXES`]), that mix alone, for a profiler.
pub fn kinds_run(n: usize, events: usize, seed: u64, only: Option<usize>) -> Vec<KindsRow> {
    let (kinds, evs) = kinds_workload(n, events, seed);
    let mixes: [(&'static str, [bool; 3]); 5] = [
        ("mixed (exact 10 : prefix 1)", [false; 3]),
        (
            "80% mixed, 10% byte prefixes, 5% ranges, 5% patterns",
            [true; 3],
        ),
        ("90% mixed, 10% byte prefixes", [true, false, false]),
        ("95% mixed, 5% ranges", [false, true, false]),
        ("95% mixed, 5% patterns", [false, false, true]),
    ];
    let mut rows: Vec<KindsRow> = Vec::with_capacity(mixes.len());
    let order: Vec<usize> = (0..mixes.len())
        .chain((0..mixes.len()).rev())
        .filter(|&i| only.is_none_or(|only| only == i))
        .collect();
    for i in order {
        let (label, [b, r, p]) = mixes[i];
        let targets = kinds.mix(n, b, r, p);
        let (ns, deliveries) = one_pass(&targets, &evs);
        match rows.iter_mut().find(|row| row.label == label) {
            Some(row) => row.ns = row.ns.min(ns),
            None => rows.push(KindsRow {
                label,
                watchers: targets.len(),
                ns,
                deliveries,
            }),
        }
    }
    rows
}

/// `kinds`' target row against plain `mixed`, paired: both registries of `n` watchers live
/// at once (registered alternately), their inline dispatchers given the same events in
/// blocks of `block` ([`crate::measure::paired_passes`]).
pub fn kinds_paired(n: usize, events: usize, seed: u64, block: usize) -> crate::measure::Paired {
    let (kinds, evs) = kinds_workload(n, events, seed);
    let (plain_registry, mut plain_inline) = registry();
    let (kinds_registry, mut kinds_inline) = registry();
    let (plain_targets, kinds_targets) = (
        kinds.mix(n, false, false, false),
        kinds.mix(n, true, true, true),
    );
    let mut handles = Vec::with_capacity(2 * n);
    for (a, b) in plain_targets.iter().zip(&kinds_targets) {
        handles.extend(register_targets(&plain_registry, std::slice::from_ref(a)));
        handles.extend(register_targets(&kinds_registry, std::slice::from_ref(b)));
    }
    let paired = crate::measure::paired_passes(&mut plain_inline, &mut kinds_inline, &evs, block);
    drop(handles);
    plain_inline.process_unregistrations();
    kinds_inline.process_unregistrations();
    paired
}

/// One row of `wildcards`: every pattern of `depth` pieces, each `a` or `*`, with at most
/// `wildcards` stars, all matching the one event key `/a/a/…/a`.
#[derive(Clone, Copy, Debug)]
pub struct WildcardRow {
    pub wildcards: usize,
    pub patterns: usize,
    pub ns_per_event: f64,
    pub ns_per_match: f64,
}

/// `wildcards`: the frontier at its worst for each limit on wildcards.
pub fn wildcards_run(depth: usize, limits: &[usize], events: usize) -> Vec<WildcardRow> {
    let key = Bytes::from("/a".repeat(depth));
    limits
        .iter()
        .map(|&limit| {
            let (registry, mut inline) = registry();
            registry.set_options(RegistryOptions::default().with_max_wildcards(limit));
            let mut handles = Vec::new();
            for mask in 0u32..(1 << depth) {
                if mask.count_ones() as usize > limit {
                    continue;
                }
                let pattern: String = (0..depth)
                    .map(|i| if mask >> i & 1 == 1 { "/*" } else { "/a" })
                    .collect();
                handles.push(
                    registry
                        .watch(WatchSpec::pattern(pattern))
                        .expect("within the limit"),
                );
            }
            let evs: Vec<Event> = (0..events)
                .map(|i| event(key.clone(), i as u64 + 1))
                .collect();
            let ns = pass(&mut inline, &evs[..events / 10]).min(pass(&mut inline, &evs));
            let row = WildcardRow {
                wildcards: limit,
                patterns: handles.len(),
                ns_per_event: ns,
                ns_per_match: ns / handles.len() as f64,
            };
            drop(handles);
            row
        })
        .collect()
}

/// What `owners` measured.
#[derive(Clone, Copy, Debug)]
pub struct OwnersRun {
    pub refusals: u64,
    pub ns_per_refusal: f64,
    /// Net heap bytes from before the refusals to after them (the other owners' watchers
    /// all dropped by then).
    pub heap_growth: isize,
    pub others_registered: u64,
    pub others_refused: u64,
}

/// `owners`: owner A, at its cap of 1, tries `refusals` registrations on one thread while
/// another thread registers and drops watchers of 100 other owners (cap 1,000 each).
pub fn owners_run(refusals: u64) -> OwnersRun {
    let (tx, _rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(16, tx));
    registry.set_options(
        RegistryOptions::default()
            .with_release_at_drop(true)
            .with_owner_limit(1_000),
    );
    let a = OwnerId(0);
    registry.set_owner_limit(a, Some(1));
    let held = registry
        .watch(WatchSpec::exact("/a").owner(a))
        .expect("below the cap");
    assert!(registry.watch(WatchSpec::exact("/a").owner(a)).is_err());
    let counting = crate::alloc::installed();
    crate::alloc::start();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let others = {
        let registry = registry.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut refused, mut i) = (0u64, 0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let owner = OwnerId(1 + i % 100);
                match registry.watch(WatchSpec::exact(format!("/b/{}", i % 4096)).owner(owner)) {
                    Ok(handle) => {
                        ok += 1;
                        drop(handle);
                    }
                    Err(_) => refused += 1,
                }
                i += 1;
            }
            (ok, refused)
        })
    };
    let start = Instant::now();
    let spec = WatchSpec::exact(Bytes::from_static(b"/a")).owner(a);
    for _ in 0..refusals {
        assert!(registry.watch(spec.clone()).is_err());
    }
    let elapsed = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (others_registered, others_refused) = others.join().expect("the other owners' thread");
    let heap_growth = crate::alloc::stop();
    drop(held);
    OwnersRun {
        refusals,
        ns_per_refusal: elapsed.as_nanos() as f64 / refusals as f64,
        heap_growth: if counting { heap_growth } else { isize::MIN },
        others_registered,
        others_refused,
    }
}

/// One row of `key-cost`: a slash prefix of `segments` segments (`/x/x/…/`).
#[derive(Clone, Copy, Debug)]
pub struct KeyCostRow {
    pub segments: usize,
    pub register: Duration,
    pub event: Duration,
    pub unregister: Duration,
}

/// `key-cost`: registering one prefix of each depth, one event on a key under it, and the
/// drop with its unregistration applied by the dispatcher.
pub fn key_cost_run(depths: &[usize]) -> Vec<KeyCostRow> {
    depths
        .iter()
        .map(|&segments| {
            let (registry, mut inline) = registry();
            let prefix = Bytes::from("/x".repeat(segments) + "/");
            let start = Instant::now();
            let handle = registry
                .register_prefix(prefix.clone(), false)
                .expect("a valid prefix");
            let register = start.elapsed();
            let key = Bytes::from([&prefix[..], b"k"].concat());
            let e = event(key, 1);
            let start = Instant::now();
            inline.dispatch(&e);
            let event = start.elapsed();
            drop(handle);
            let start = Instant::now();
            inline.process_unregistrations();
            let unregister = start.elapsed();
            assert_eq!(registry.active_watcher_count(), 0);
            KeyCostRow {
                // `/x` times `segments`, then the final `/`: one more segment, the root's.
                segments: segments + 1,
                register,
                event,
                unregister,
            }
        })
        .collect()
}

/// One row of `lag-stall`: the time of each single dispatch while two watchers lag.
#[derive(Clone, Copy, Debug)]
pub struct LagStallRow {
    pub mean_ns: f64,
    pub p9999: Duration,
    pub worst: Duration,
}

/// `lag-stall`: `events` events on `/k`, each dispatched alone and timed, to an exact and a
/// prefix watcher (compact or drop-in) whose reader takes one event of each every second
/// dispatch: their backlogs grow by half the events, and a ring buffer wraps as it grows.
pub fn lag_stall_run(events: u64, compact: bool) -> LagStallRow {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(events as usize + 1, tx));
    let mut inline = InlineDispatcher::new(registry.clone(), rx);
    let (exact, prefix) = (WatchSpec::exact("/k"), WatchSpec::prefix("/"));
    let mut took = 0u64;
    let mut times = Vec::with_capacity(events as usize);
    let key = Bytes::from_static(b"/k");
    // `take` reads one event of each watcher and says how many it got.
    let mut timed = |take: &mut dyn FnMut() -> u64| {
        for r in 1..=events {
            let e = event(key.clone(), r);
            let start = Instant::now();
            inline.dispatch(&e);
            times.push(start.elapsed());
            if r % 2 == 0 {
                took += take();
            }
        }
    };
    if compact {
        let mut a = registry.watch(exact.compact()).expect("no limit");
        let mut b = registry.watch(prefix.compact()).expect("no limit");
        timed(&mut || {
            u64::from(a.receiver_mut().try_recv().is_ok())
                + u64::from(b.receiver_mut().try_recv().is_ok())
        });
    } else {
        let mut a = registry.watch(exact).expect("no limit");
        let mut b = registry.watch(prefix).expect("no limit");
        timed(&mut || {
            u64::from(a.receiver_mut().try_recv().is_ok())
                + u64::from(b.receiver_mut().try_recv().is_ok())
        });
    }
    assert_eq!(
        took,
        events / 2 * 2,
        "every second dispatch, one event of each"
    );
    let mean_ns = times.iter().map(Duration::as_nanos).sum::<u128>() as f64 / events as f64;
    times.sort_unstable();
    LagStallRow {
        mean_ns,
        p9999: times[(times.len() - 1) * 9999 / 10000],
        worst: *times.last().expect("some events"),
    }
}

/// `members` members of one group on `/k`.
fn one_group(registry: &WatchRegistry, members: usize) -> Vec<GroupedWatcherHandle> {
    (0..members)
        .map(|_| {
            registry
                .watch(WatchSpec::exact("/k").grouped())
                .expect("no limit")
        })
        .collect()
}

/// `group-leave`: `members` members of one group on one key, each polled once so that it
/// waits (its waker in the ring's list), then every handle dropped; milliseconds for the
/// drops. Each leave takes the ring's lock, which the dispatcher's push waits for.
pub fn group_leave_run(members: usize) -> f64 {
    let (tx, _rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new_with_limits(8, usize::MAX, tx));
    let mut handles = one_group(&registry, members);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for handle in &mut handles {
        assert!(handle.receiver_mut().poll_recv(&mut cx).is_pending());
    }
    let start = Instant::now();
    drop(handles);
    start.elapsed().as_secs_f64() * 1e3
}

/// What `group-sweep` measured.
pub struct GroupSweepRun {
    /// Members of the one group.
    pub members: usize,
    /// One closed-receiver sweep call, µs: median, mean, the slowest.
    pub median_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
    /// Members the sweeps released (0: every member keeps up).
    pub released: u64,
}

/// `group-sweep`: one group of `members` members on one key (buffer 8), every member
/// reading every fourth event so that none lags while the ring's oldest event moves on;
/// after each 12 events, one closed-receiver sweep call of unbounded budget, timed. The
/// sweep holds the ring's lock, which the dispatcher's push waits for, so its time is how
/// long a write on that key can wait.
pub fn group_sweep_run(members: usize) -> GroupSweepRun {
    const CALLS: usize = 60;
    const WARM_UP: usize = 10;
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new_with_limits(8, usize::MAX, tx));
    let mut dispatcher = InlineDispatcher::new(registry.clone(), rx);
    let mut handles = one_group(&registry, members);
    let mut revision = 0;
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        for _ in 0..12 {
            revision += 1;
            dispatcher.dispatch(&event(Bytes::from_static(b"/k"), revision));
            if revision % 4 == 0 {
                for handle in &mut handles {
                    while handle.receiver_mut().try_recv().is_ok() {}
                }
            }
        }
        let start = Instant::now();
        dispatcher.sweep_closed_receivers(usize::MAX);
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.drain(..WARM_UP);
    times.sort_by(f64::total_cmp);
    GroupSweepRun {
        members,
        median_us: times[times.len() / 2],
        mean_us: times.iter().sum::<f64>() / times.len() as f64,
        max_us: times[times.len() - 1],
        released: registry.metrics().read().lagged_members_released,
    }
}
