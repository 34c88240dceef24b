//! Concurrent soak with a delivery checker: client threads register (drop-in, compact and
//! grouped watchers, a third each), drop, convert with
//! `into_receiver` and drop receivers at random while a producer streams events through
//! `WatchDispatcher::run` (in a second pass through `InlineDispatcher`, in a third through
//! `run` with every opt-in on: incremental heartbeats every 20 ms, the closed-receiver sweep,
//! lag cancellation). Every watcher's
//! log is then checked against the producer's: each event it got matches it, arrives in
//! order and once; nothing matching is missing between its first event (or its
//! registration) and its last; a watcher kept to the end has every matching event broadcast
//! after its registration returned, or, if it fell behind, a cancel sentinel last and then
//! the end of its stream. At the end every count is zero and the heap is back at its level
//! from before the first registration. With heartbeats on, every Progress a watcher gets
//! carries a revision at least that of the last event before it.
//!
//! `SOAK_SECONDS` sets each pass's length (default 6).

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use watchtrie::{
    CancelReason, CompactReceiver, CompactWatcherHandle, DispatchOptions, GroupReceiver,
    GroupedWatcherHandle, HeartbeatMode, InlineDispatcher, LagPolicy, TryRecvError,
    WatchDispatcher, WatchEvent, WatchEventType, WatchRegistry, WatchResponse, WatchSpec,
    WatcherHandle,
};

/// Events each watcher's channel holds: small enough that sleepers overflow on purpose.
const BUFFER: usize = 32;
const DIRS: u64 = 8;
const LEAVES: u64 = 4;
const CLIENTS: usize = 2;
const PROBE: &[u8] = b"/probe";

fn seconds() -> u64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// SplitMix64, seeded per thread: reproducible choices without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key_of(dir: u64, leaf: u64) -> String {
    format!("/s{dir}/k{leaf}")
}

/// Where events go: the async dispatcher's broadcast channel, or the inline dispatcher.
enum Sink {
    Broadcast(broadcast::Sender<WatchResponse>),
    Inline(Box<InlineDispatcher>),
}

impl Sink {
    fn send(&mut self, event: WatchResponse) {
        match self {
            Sink::Broadcast(tx) => {
                // Never let the dispatcher lag: a lagged broadcast loses events by design.
                while tx.len() > 512 {
                    std::thread::yield_now();
                }
                tx.send(event).expect("dispatcher alive");
            }
            Sink::Inline(inline) => inline.dispatch(&event),
        }
    }
}

/// How a client treats one of its watchers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Habit {
    /// Reads whatever is queued at every step.
    Reader,
    /// Reads nothing until it is checked: falls behind and is cancelled on purpose.
    Sleeper,
}

/// A drop-in, compact or grouped watcher, held by its handle or by its bare receiver.
enum Receiving {
    Handle(WatcherHandle),
    Receiver(mpsc::Receiver<WatchEvent>),
    CompactHandle(CompactWatcherHandle),
    CompactReceiver(CompactReceiver),
    GroupHandle(GroupedWatcherHandle),
    GroupReceiver(GroupReceiver),
}

/// What a receiver had.
enum Next {
    Event(WatchEvent),
    Empty,
    Ended,
}

struct Watch {
    watched: Vec<u8>,
    is_prefix: bool,
    /// Revisions above this were broadcast after `register` returned.
    lo: u64,
    habit: Habit,
    receiving: Receiving,
    got: Vec<u64>,
    cancelled: bool,
    /// Why, when `cancelled`.
    reason: Option<CancelReason>,
}

impl Watch {
    fn matches(&self, key: &[u8]) -> bool {
        if self.is_prefix {
            key.starts_with(&self.watched)
        } else {
            key == self.watched
        }
    }

    fn next(&mut self) -> Next {
        let tokio = |r: Result<WatchEvent, mpsc::error::TryRecvError>| match r {
            Ok(event) => Next::Event(event),
            Err(mpsc::error::TryRecvError::Empty) => Next::Empty,
            Err(mpsc::error::TryRecvError::Disconnected) => Next::Ended,
        };
        let compact = |r: Result<WatchEvent, TryRecvError>| match r {
            Ok(event) => Next::Event(event),
            Err(TryRecvError::Empty) => Next::Empty,
            Err(TryRecvError::Disconnected) => Next::Ended,
        };
        match &mut self.receiving {
            Receiving::Handle(h) => tokio(h.receiver_mut().try_recv()),
            Receiving::Receiver(r) => tokio(r.try_recv()),
            Receiving::CompactHandle(h) => compact(h.receiver_mut().try_recv()),
            Receiving::CompactReceiver(r) => compact(r.try_recv()),
            Receiving::GroupHandle(h) => compact(h.receiver_mut().try_recv()),
            Receiving::GroupReceiver(r) => compact(r.try_recv()),
        }
    }

    /// Keeps only the receiver: the watcher stays registered until the receiver is dropped
    /// and an event finds its channel closed.
    fn convert(&mut self) {
        let placeholder = Receiving::Receiver(mpsc::channel(1).1);
        self.receiving = match std::mem::replace(&mut self.receiving, placeholder) {
            Receiving::Handle(handle) => Receiving::Receiver(handle.into_receiver().2),
            Receiving::CompactHandle(handle) => {
                Receiving::CompactReceiver(handle.into_receiver().2)
            }
            Receiving::GroupHandle(handle) => Receiving::GroupReceiver(handle.into_receiver().2),
            converted => converted,
        };
    }

    /// After the cancel sentinel: waits for the end of the stream (the dispatcher removes the
    /// watcher after the event that overflowed it, or before its next event).
    fn expect_end_of_stream(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.next() {
                Next::Ended => return,
                Next::Event(event) => panic!("an event after the cancel sentinel: {event:?}"),
                Next::Empty => {
                    assert!(
                        Instant::now() < deadline,
                        "a cancelled watcher's stream stays open"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Takes every queued event into the log.
    fn drain(&mut self) {
        while let Next::Event(event) = self.next() {
            assert!(!self.cancelled, "an event after the cancel sentinel");
            if event.event_type == WatchEventType::Canceled {
                self.cancelled = true;
                self.reason = event.cancel_reason();
            } else if event.event_type == WatchEventType::Progress {
                let last = self.got.last().copied().unwrap_or(0);
                assert!(
                    event.revision >= last,
                    "Progress {} after event {last}",
                    event.revision
                );
            } else {
                self.got.push(event.revision);
            }
        }
    }

    /// Checks the log against the producer's `keys` (revision r has key `keys[r - 1]`).
    /// With `complete`, every matching revision up to `last` must be there.
    fn check(&self, keys: &[Vec<u8>], complete: Option<u64>) {
        let what = format!(
            "watcher on {:?} (prefix {}, lo {}, {:?})",
            String::from_utf8_lossy(&self.watched),
            self.is_prefix,
            self.lo,
            self.habit
        );
        for pair in self.got.windows(2) {
            assert!(pair[0] < pair[1], "{what}: out of order or twice: {pair:?}");
        }
        for &r in &self.got {
            assert!(
                self.matches(&keys[r as usize - 1]),
                "{what}: revision {r} does not match"
            );
        }
        let first = self
            .got
            .first()
            .map_or(self.lo + 1, |&f| f.min(self.lo + 1));
        let last = match (complete, self.cancelled) {
            (Some(end), false) => end,
            _ => self.got.last().copied().unwrap_or(0),
        };
        // A lag sentinel, or a group member's cancel, promises every matching event before
        // its resume point.
        let last = match self.reason {
            Some(
                CancelReason::Lagged { resume_from }
                | CancelReason::BufferOverflowAt { resume_from },
            ) => last.max(resume_from - 1),
            _ => last,
        };
        let mut got = self.got.iter().peekable();
        for r in first..=last {
            if self.matches(&keys[r as usize - 1]) {
                while got.next_if(|&&g| g < r).is_some() {}
                assert_eq!(got.peek(), Some(&&r), "{what}: revision {r} missing");
            }
        }
    }
}

struct Shared {
    registry: Arc<WatchRegistry>,
    /// Highest revision the producer has started to send.
    sent: AtomicU64,
    stop: AtomicBool,
    /// Every revision's key, filled by the producer (index = revision - 1).
    keys: Mutex<Vec<Vec<u8>>>,
}

fn keys_snapshot(shared: &Shared) -> Vec<Vec<u8>> {
    shared.keys.lock().unwrap().clone()
}

/// One client: registers, reads, converts and drops at random until told to stop; returns
/// the watchers it still holds and the number it checked on the way.
fn client(shared: Arc<Shared>, seed: u64) -> (Vec<Watch>, usize) {
    let mut rng = Rng(seed);
    let mut live: Vec<Watch> = Vec::new();
    let mut checked = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        match rng.below(10) {
            0..=3 if live.len() < 12 => {
                let (dir, leaf) = (rng.below(DIRS), rng.below(LEAVES));
                let is_prefix = rng.below(3) == 0;
                let watched = match (is_prefix, rng.below(4)) {
                    (true, 0) => b"/".to_vec(),
                    (true, _) => format!("/s{dir}/").into_bytes(),
                    (false, _) => key_of(dir, leaf).into_bytes(),
                };
                let bytes = Bytes::from(watched.clone());
                let registry = &shared.registry;
                let prev_kv = !is_prefix && rng.below(2) == 0;
                // A third of the watchers each drop-in, compact and grouped: every kind
                // under one checker (grouped members of one target share a group).
                let receiving = match (is_prefix, rng.below(3)) {
                    (true, 0) => Receiving::Handle(registry.register_prefix(bytes, false).unwrap()),
                    (false, 0) => Receiving::Handle(registry.register(bytes, prev_kv).unwrap()),
                    (true, 1) => Receiving::CompactHandle(
                        registry.register_prefix_compact(bytes, false).unwrap(),
                    ),
                    (false, 1) => {
                        Receiving::CompactHandle(registry.register_compact(bytes, prev_kv).unwrap())
                    }
                    (true, _) => Receiving::GroupHandle(
                        registry.watch(WatchSpec::prefix(bytes).grouped()).unwrap(),
                    ),
                    (false, _) => Receiving::GroupHandle(
                        registry
                            .watch(WatchSpec::exact(bytes).prev_kv(prev_kv).grouped())
                            .unwrap(),
                    ),
                };
                let lo = shared.sent.load(Ordering::SeqCst);
                let habit = if rng.below(4) == 0 {
                    Habit::Sleeper
                } else {
                    Habit::Reader
                };
                live.push(Watch {
                    watched,
                    is_prefix,
                    lo,
                    habit,
                    receiving,
                    got: Vec::new(),
                    cancelled: false,
                    reason: None,
                });
            }
            4 if !live.is_empty() => {
                // Drop a watcher (handle or bare receiver) after checking what it got.
                let mut w = live.swap_remove(rng.below(live.len() as u64) as usize);
                w.drain();
                // Holding the log's lock pauses the producer for the check; it is a soak test.
                w.check(&shared.keys.lock().unwrap(), None);
                checked += 1;
            }
            5 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                live[i].convert();
            }
            _ => {
                for w in live.iter_mut().filter(|w| w.habit == Habit::Reader) {
                    w.drain();
                }
                std::thread::yield_now();
            }
        }
    }
    (live, checked)
}

fn producer(shared: &Shared, sink: &mut Sink, seed: u64, seconds: u64) -> u64 {
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut revision = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let key = key_of(rng.below(DIRS), rng.below(LEAVES)).into_bytes();
        revision += 1;
        shared.keys.lock().unwrap().push(key.clone());
        shared.sent.store(revision, Ordering::SeqCst);
        sink.send(WatchResponse {
            key: Bytes::from(key),
            value: Bytes::from_static(b"v"),
            revision,
            ..Default::default()
        });
        if revision % 64 == 0 {
            std::thread::yield_now();
        }
    }
    revision
}

/// How a pass dispatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Run,
    Inline,
    RunWithOptIns,
}

/// One pass: clients and a producer for `SOAK_SECONDS`, then the final checks.
fn soak(pass: Pass) {
    let inline = pass == Pass::Inline;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(BUFFER, unregister_tx));
    let (mut sink, task) = if inline {
        (
            Sink::Inline(Box::new(InlineDispatcher::new(
                registry.clone(),
                unregister_rx,
            ))),
            None,
        )
    } else {
        let (tx, rx) = broadcast::channel(1024);
        let (heartbeat_ms, options) = match pass {
            Pass::RunWithOptIns => (
                20,
                DispatchOptions::default()
                    .with_heartbeat_mode(HeartbeatMode::Incremental)
                    .with_closed_receiver_sweep(Duration::from_millis(2), 64)
                    .with_lag_policy(LagPolicy::CancelWatchers),
            ),
            _ => (0, DispatchOptions::default()),
        };
        let dispatcher = WatchDispatcher::new(
            registry.clone(),
            rx,
            unregister_rx,
            Arc::new(AtomicU64::new(0)),
            heartbeat_ms,
        )
        .with_options(options);
        (Sink::Broadcast(tx), Some(rt.spawn(dispatcher.run())))
    };
    let baseline = counting_alloc::live();

    let shared = Arc::new(Shared {
        registry: registry.clone(),
        sent: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        keys: Mutex::new(Vec::new()),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let shared = shared.clone();
            std::thread::spawn(move || client(shared, 1000 + i as u64))
        })
        .collect();
    let events = producer(&shared, &mut sink, 7, seconds());
    shared.stop.store(true, Ordering::Relaxed);
    let mut kept = Vec::new();
    let mut checked = 0;
    for c in clients {
        let (live, n) = c.join().unwrap();
        kept.extend(live);
        checked += n;
    }

    // Everything sent is dispatched once the probe has its event: it is sent last.
    let mut probe = registry.register(Bytes::from_static(PROBE), false).unwrap();
    sink.send(WatchResponse {
        key: Bytes::from_static(PROBE),
        revision: events + 1,
        ..Default::default()
    });
    rt.block_on(async {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), probe.receiver_mut().recv())
                .await
                .expect("dispatcher keeps up")
                .unwrap();
            if event.event_type != WatchEventType::Progress {
                assert_eq!(event.revision, events + 1);
                break;
            }
        }
    });
    let mut keys = keys_snapshot(&shared);
    keys.push(PROBE.to_vec());
    let (mut complete, mut cancelled, mut lagged) = (0, 0, 0);
    for w in &mut kept {
        w.drain();
        w.check(&keys, Some(events));
        if w.cancelled {
            w.expect_end_of_stream();
            cancelled += 1;
            lagged += usize::from(matches!(w.reason, Some(CancelReason::Lagged { .. })));
        } else {
            complete += 1;
        }
    }
    drop(kept);
    drop(keys);
    drop(probe);

    // One event per key finds every watcher whose bare receiver was dropped (the reference
    // keeps those until an event reaches them), then every count must be zero.
    let mut revision = events + 1;
    for dir in 0..DIRS {
        for leaf in 0..LEAVES {
            revision += 1;
            sink.send(WatchResponse {
                key: Bytes::from(key_of(dir, leaf)),
                revision,
                ..Default::default()
            });
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry.active_watcher_count() != 0 {
        if let Sink::Inline(inline) = &mut sink {
            inline.process_unregistrations();
        }
        assert!(
            Instant::now() < deadline,
            "{} watchers left",
            registry.active_watcher_count()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(registry.watched_key_count(), 0);
    assert_eq!(registry.watched_prefix_count(), 0);
    assert_eq!(registry.prev_kv_watcher_count(), 0);
    registry.check_invariants();
    drop(shared);
    let growth = counting_alloc::live() - baseline;
    eprintln!(
        "soak ({:?}): {events} events, {checked} watchers checked at drop, {complete} complete \
         and {cancelled} cancelled ({lagged} for lag) at the end; heap growth {growth} bytes",
        pass,
    );
    assert!(growth < 256 * 1024, "{growth} bytes not returned");
    drop(sink);
    if let Some(task) = task {
        rt.block_on(task).unwrap();
    }
}

/// Every pass in one test: the heap counter is global to the test binary, so the passes
/// must not overlap.
#[test]
fn every_watcher_gets_exactly_its_events_through_run_and_inline() {
    soak(Pass::Run);
    soak(Pass::Inline);
    soak(Pass::RunWithOptIns);
}
