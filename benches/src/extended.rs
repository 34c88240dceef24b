//! Scenarios of what the reference cannot do, so watchtrie alone: the extra target kinds
//! beside plain `mixed`, a wildcard frontier at its worst, owner refusals under load, and
//! what one very deep key costs. Each times the inline dispatcher over preloaded events
//! (the index and delivery, without the broadcast hop) or the registry calls themselves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use watchtrie::{
    InlineDispatcher, OwnerId, RegistryOptions, Target, WatchRegistry, WatchSpec, WatcherHandle,
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

/// The targets of `kinds`: `mixed`'s exact keys and prefixes for 80% of `n`, then 10%
/// byte prefixes, 5% key ranges and 5% wildcard patterns drawn from the same hierarchy,
/// so that they match some of the events.
pub fn kinds_targets(plain: &Workload, n: usize, seed: u64) -> Vec<Target> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let kept = n * 8 / 10;
    let exact = kept - kept / 11;
    let mut targets: Vec<Target> = plain.exact[..exact.min(plain.exact.len())]
        .iter()
        .cloned()
        .map(Target::Exact)
        .collect();
    targets.extend(
        plain.prefixes[..(kept / 11).min(plain.prefixes.len())]
            .iter()
            .cloned()
            .map(Target::Prefix),
    );
    for _ in 0..n / 10 {
        // Cut inside the last segment: `/svc3/node12/pa`.
        let depth = 3 + rng.below(3) as usize;
        let key = random_key(&mut rng, depth, "svc");
        let last = key.rfind('/').expect("a slash") + 1;
        let cut = last + 1 + rng.below((key.len() - last) as u64) as usize;
        targets.push(Target::BytePrefix(Bytes::from(
            key[..cut.min(key.len())].to_string(),
        )));
    }
    for i in 0..n / 20 {
        let start = random_key(&mut rng, 3, "svc");
        let end = if i % 2 == 0 {
            // A subtree and its root: [k, k + "/~").
            format!("{start}/~")
        } else {
            // A span of siblings.
            let other = random_key(&mut rng, 3, "svc");
            if other > start {
                other
            } else {
                format!("{start}~")
            }
        };
        targets.push(Target::Range {
            start: Bytes::from(start),
            end: Some(Bytes::from(end)),
        });
    }
    for _ in 0..n / 20 {
        let depth = 3 + rng.below(3) as usize;
        let key = random_key(&mut rng, depth, "svc");
        let mut pieces: Vec<String> = key.split('/').map(str::to_string).collect();
        for _ in 0..1 + rng.below(2) {
            let at = 2 + rng.below(pieces.len() as u64 - 2) as usize;
            pieces[at] = "*".into();
        }
        let mut pattern = pieces.join("/");
        if rng.below(2) == 0 {
            pattern.push('/');
        }
        targets.push(Target::Pattern(Bytes::from(pattern)));
    }
    targets
}

/// What `kinds` measured: ns/event of plain `mixed` and of the mix with every kind, best
/// of two alternated passes each, with the deliveries of each.
#[derive(Clone, Copy, Debug)]
pub struct KindsRun {
    pub plain_ns: f64,
    pub kinds_ns: f64,
    pub plain_deliveries: u64,
    pub kinds_deliveries: u64,
    pub watchers: usize,
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

/// `kinds`: plain `mixed` at `n` watchers against the same count with 20% of them byte
/// prefixes, ranges and patterns; the order plain, kinds, kinds, plain.
pub fn kinds_run(n: usize, events: usize, seed: u64) -> KindsRun {
    let plain = workload::mixed(n - n / 11, n / 11, events, seed);
    let plain_targets: Vec<Target> = plain
        .exact
        .iter()
        .cloned()
        .map(Target::Exact)
        .chain(plain.prefixes.iter().cloned().map(Target::Prefix))
        .collect();
    let kinds = kinds_targets(&plain, n, seed);
    let evs: Vec<Event> = plain
        .events
        .iter()
        .enumerate()
        .map(|(i, k)| event(k.clone(), i as u64 + 1))
        .collect();
    let p1 = one_pass(&plain_targets, &evs);
    let k1 = one_pass(&kinds, &evs);
    let k2 = one_pass(&kinds, &evs);
    let p2 = one_pass(&plain_targets, &evs);
    KindsRun {
        plain_ns: p1.0.min(p2.0),
        kinds_ns: k1.0.min(k2.0),
        plain_deliveries: p1.1,
        kinds_deliveries: k1.1,
        watchers: kinds.len(),
    }
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
