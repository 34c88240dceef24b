//! The resume storm (watchtrie alone: the reference has no history). A node whose peer
//! failed receives that peer's watchers all at once, each resuming from about `back` events
//! ago, while writes keep arriving at a steady rate: how long until every one of them is
//! live again, and what the storm does to the latency of live events meanwhile.
//!
//! The dispatcher is the real `WatchDispatcher`, fed through a broadcast channel as a node
//! feeds it: a task on the two-thread runtime the clients' tasks run on, or (`own_thread`)
//! a current-thread runtime on a thread of its own. The latency probe is read by a thread
//! of its own. The node's own watchers (a `mixed` set) are
//! registered first; the resuming watchers are a second copy of the same targets, half
//! drop-in and half compact. Every watcher is read by a task of its own, as a client's
//! stream is, so that a replay longer than a buffer is fed as it drains.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Runtime;
use tokio::sync::{broadcast, mpsc};
use watchtrie::{
    CompactWatcherHandle, DispatchOptions, HistoryOptions, Metrics, WatchDispatcher, WatchRegistry,
    WatcherHandle,
};

use crate::engines::Event;
use crate::measure::{event, Percentiles, PROBE_KEY};
use crate::workload::Workload;

/// What the storm is run with.
#[derive(Clone, Copy, Debug)]
pub struct StormOptions {
    /// Each resuming watcher starts this many revisions behind the head.
    pub back: u64,
    /// Live events per second, before, during and after the storm.
    pub rate: u64,
    /// Events dispatched before the storm (the history holds them).
    pub warm_up: u64,
    /// Every watcher's buffer.
    pub buffer: usize,
    /// The dispatcher's history bounds.
    pub history: HistoryOptions,
    /// The longest wait for the storm to settle before it is reported as not caught up.
    pub give_up: Duration,
    /// Runs the dispatcher on a thread of its own (a current-thread runtime) instead of as
    /// a task on the runtime the clients' tasks run on.
    pub own_thread: bool,
}

impl Default for StormOptions {
    fn default() -> Self {
        Self {
            back: 100,
            rate: 10_000,
            warm_up: 20_000,
            buffer: 256,
            history: HistoryOptions::new(100_000, 64 << 20),
            give_up: Duration::from_secs(30),
            own_thread: false,
        }
    }
}

/// What one storm measured.
#[derive(Clone, Debug)]
pub struct StormRun {
    /// Watchers that resumed.
    pub resumes: usize,
    /// How long registering them took (the calls alone).
    pub register: Duration,
    /// From the first registration until the dispatcher had admitted every one.
    pub admitted: Option<Duration>,
    /// From the first registration until none was catching up any more.
    pub caught_up: Option<Duration>,
    /// Events every client read from the start of the storm until the end of the run
    /// (replayed and live, the node's own watchers included).
    pub drained: u64,
    /// Latency of live probe events sent while the storm was settling.
    pub during: Percentiles,
    /// Probes in `during`.
    pub during_samples: usize,
    /// The worst latency among them, nanoseconds.
    pub during_max: u64,
    /// Latency of live probe events over the whole run.
    pub overall: Percentiles,
    /// The registry's counters at the end.
    pub metrics: Metrics,
}

/// The two channel kinds' handles, so that one drain loop reads both.
enum Resumed {
    DropIn(WatcherHandle),
    Compact(CompactWatcherHandle),
}

impl Resumed {
    async fn recv(&mut self) -> Option<()> {
        match self {
            Resumed::DropIn(h) => h.receiver_mut().recv().await.map(drop),
            Resumed::Compact(h) => h.receiver_mut().recv().await.map(drop),
        }
    }
}

/// Where the dispatcher runs.
enum Dispatcher {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

/// A client reading its watcher on a task of its own, woken only when an event arrives,
/// counting what it read into `read`. Aborted at the end of the run.
fn spawn_client(mut watcher: Resumed, read: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while watcher.recv().await.is_some() {
            read.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// The value of the probe event that ends the run.
const END: &[u8] = b"end";

/// Runs one storm: `workload`'s watchers registered live, then the same targets again,
/// resuming, while events from `workload.events` flow at `opts.rate`.
pub fn storm_run(rt: &Runtime, workload: &Workload, opts: StormOptions) -> StormRun {
    rt.block_on(async {
        let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(opts.buffer, unregister_tx));
        let read = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::with_capacity(2 * workload.watcher_count());
        for key in &workload.exact {
            let h = registry.register(key.clone(), false).expect("no limit");
            clients.push(spawn_client(Resumed::DropIn(h), Arc::clone(&read)));
        }
        for prefix in &workload.prefixes {
            let h = registry
                .register_prefix(prefix.clone(), false)
                .expect("no limit");
            clients.push(spawn_client(Resumed::DropIn(h), Arc::clone(&read)));
        }
        let mut probe = registry
            .register(Bytes::from_static(PROBE_KEY), false)
            .expect("no limit");

        let (tx, rx) = broadcast::channel::<Event>(1 << 16);
        let dispatcher = WatchDispatcher::new(
            Arc::clone(&registry),
            rx,
            unregister_rx,
            Arc::new(AtomicU64::new(0)),
            0,
        )
        .with_options(DispatchOptions::default().with_history(opts.history));
        let dispatcher = if opts.own_thread {
            let thread = std::thread::Builder::new()
                .name("dispatcher".into())
                .spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .expect("a current-thread runtime")
                        .block_on(dispatcher.run());
                })
                .expect("a thread for the dispatcher");
            Dispatcher::Thread(thread)
        } else {
            Dispatcher::Task(tokio::spawn(dispatcher.run()))
        };

        // The sender: a thread of its own, pacing by the clock; every eighth event a probe
        // carrying its send time. `head` is the last revision sent.
        let base = Instant::now();
        let head = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (tx, head, stop) = (tx.clone(), Arc::clone(&head), Arc::clone(&stop));
            let keys = workload.events.clone();
            let (rate, warm_up) = (opts.rate.max(1), opts.warm_up);
            std::thread::Builder::new()
                .name("sender".into())
                .spawn(move || {
                    let mut revision = 0u64;
                    // The warm-up at full speed: it only fills the history.
                    while revision < warm_up {
                        revision += 1;
                        let key = keys[revision as usize % keys.len()].clone();
                        tx.send(event(key, revision, Bytes::from_static(b"v")))
                            .expect("dispatcher alive");
                        head.store(revision, Ordering::Release);
                        if revision.is_multiple_of(4096) {
                            // Stay under the broadcast channel's capacity.
                            while tx.len() > 1 << 14 {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                        }
                    }
                    let paced_from = Instant::now();
                    let gap = Duration::from_nanos(1_000_000_000 / rate);
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let due = paced_from + gap * sent as u32;
                        let now = Instant::now();
                        if now < due {
                            std::thread::sleep(due - now);
                        }
                        revision += 1;
                        sent += 1;
                        let e = if sent.is_multiple_of(8) {
                            let stamp = base.elapsed().as_nanos() as u64;
                            event(
                                Bytes::from_static(PROBE_KEY),
                                revision,
                                Bytes::copy_from_slice(&stamp.to_le_bytes()),
                            )
                        } else {
                            let key = keys[revision as usize % keys.len()].clone();
                            event(key, revision, Bytes::from_static(b"v"))
                        };
                        tx.send(e).expect("dispatcher alive");
                        head.store(revision, Ordering::Release);
                    }
                    revision
                })
                .expect("a thread for the sender")
        };

        // The probe's reader: (send time, latency) of each probe, nanoseconds since `base`.
        // A thread of its own, blocked on the channel: what it measures is the dispatcher's
        // delay, not a reader task's wait behind the 100K client tasks the storm spawns.
        let probes = std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || {
                let mut samples = Vec::new();
                while let Some(e) = probe.receiver_mut().blocking_recv() {
                    if e.value == END {
                        break;
                    }
                    if let Ok(stamp) = <[u8; 8]>::try_from(&e.value[..]) {
                        let sent = u64::from_le_bytes(stamp);
                        samples.push((sent, base.elapsed().as_nanos() as u64 - sent));
                    }
                }
                samples
            })
            .expect("a thread for the probe reader");
        // Wait for the warm-up to be dispatched and a second of steady flow.
        while head.load(Ordering::Acquire) < opts.warm_up + opts.rate / 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // The storm.
        let storm_began = Instant::now();
        let storm_at = base.elapsed().as_nanos() as u64;
        let read_before = read.load(Ordering::Relaxed);
        let mut resumes = 0;
        for (i, spec) in workload.specs().enumerate() {
            let from = head
                .load(Ordering::Acquire)
                .saturating_sub(opts.back)
                .max(1);
            let spec = spec.from_revision(from);
            let watcher = if i.is_multiple_of(2) {
                Resumed::DropIn(registry.watch(spec).expect("no limit"))
            } else {
                Resumed::Compact(registry.watch(spec.compact()).expect("no limit"))
            };
            clients.push(spawn_client(watcher, Arc::clone(&read)));
            resumes += 1;
            if i % 16 == 15 {
                // Registering shares the runtime with the dispatcher, as on a node.
                tokio::task::yield_now().await;
            }
        }
        let register = storm_began.elapsed();

        // Watch the counters until every resumed watcher is live.
        let mut admitted = None;
        let mut caught_up = None;
        let settled_at;
        loop {
            let m = registry.metrics().read();
            if admitted.is_none() && m.resumes as usize >= resumes {
                admitted = Some(storm_began.elapsed());
            }
            if admitted.is_some() && m.catching_up == 0 {
                caught_up = Some(storm_began.elapsed());
                settled_at = base.elapsed().as_nanos() as u64;
                break;
            }
            if storm_began.elapsed() > opts.give_up {
                settled_at = base.elapsed().as_nanos() as u64;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Another half second of live flow after the storm.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let drained = read.load(Ordering::Relaxed) - read_before;

        stop.store(true, Ordering::Relaxed);
        let last = sender.join().expect("sender thread");
        tx.send(event(
            Bytes::from_static(PROBE_KEY),
            last + 1,
            Bytes::from_static(END),
        ))
        .expect("dispatcher alive");
        let samples = probes.join().expect("probe reader");
        let metrics = registry.metrics().read();
        for client in &clients {
            client.abort();
        }
        for client in clients {
            let _ = client.await;
        }
        drop(tx);
        match dispatcher {
            Dispatcher::Task(task) => task.await.expect("dispatcher task"),
            // The dispatcher returns at once now that the sender is gone.
            Dispatcher::Thread(thread) => thread.join().expect("dispatcher thread"),
        }

        let mut during: Vec<u64> = samples
            .iter()
            .filter(|(sent, _)| *sent >= storm_at && *sent <= settled_at)
            .map(|(_, latency)| *latency)
            .collect();
        let during_max = during.iter().copied().max().unwrap_or(0);
        let during_samples = during.len();
        let mut overall: Vec<u64> = samples.iter().map(|(_, latency)| *latency).collect();
        StormRun {
            resumes,
            register,
            admitted,
            caught_up,
            drained,
            during: Percentiles::of(&mut during),
            during_samples,
            during_max,
            overall: Percentiles::of(&mut overall),
            metrics,
        }
    })
}
