//! Scenario runners. Each run builds one engine from nothing, measures it, and tears it down
//! completely (dispatcher stopped and awaited, every handle and channel dropped) before it
//! returns, so that no engine's leftovers run inside another's measurement.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

use crate::alloc;
use crate::engines::{Engine, Event};
use crate::workload::Workload;

/// The key only the probe watcher watches; no workload key or prefix covers it.
pub const PROBE_KEY: &[u8] = b"/__probe__";
/// Revision of the event that marks the end of a preloaded stream.
const END_MARK: u64 = u64::MAX;

/// How a dispatch run is measured.
#[derive(Clone, Debug)]
pub struct DispatchOptions {
    /// Buffer of every watcher: large enough that nobody overflows.
    pub buffer: usize,
    /// Paced events in the latency phase (0 skips it).
    pub latency_events: usize,
    /// Events per second in the latency phase.
    pub latency_rate: u64,
    /// Count heap bytes during registration (needs [`alloc::CountingAlloc`] installed).
    pub measure_memory: bool,
    /// Show registration progress on stderr (a percentage, rewritten in place).
    pub progress: bool,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        Self {
            buffer: 1 << 20,
            latency_events: 20_000,
            latency_rate: 50_000,
            measure_memory: true,
            progress: false,
        }
    }
}

/// Latency percentiles in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (sorted in place); zeros when empty.
    pub fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at =
            |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64;
        Self {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

/// What one dispatch run measured.
#[derive(Clone, Debug, Default)]
pub struct DispatchRun {
    /// Watchers registered.
    pub watchers: usize,
    /// Events dispatched in the throughput phase.
    pub events: usize,
    /// Registration cost, ns per watcher.
    pub register_ns: f64,
    /// Dispatch cost through `run()`, ns per event.
    pub dispatch_ns: f64,
    /// Dispatch cost through the synchronous path, ns per event (watchtrie only).
    pub inline_ns: Option<f64>,
    /// Broadcast-send-to-receive latency under paced load.
    pub latency: Option<Percentiles>,
    /// Heap bytes per watcher after registration, handles included.
    pub bytes_per_watcher: Option<f64>,
    /// Events queued in all receivers after the throughput phase (must match across engines).
    pub deliveries: u64,
}

/// A Put of `key` with `value` at `revision`.
pub(crate) fn event(key: Bytes, revision: u64, value: Bytes) -> Event {
    Event {
        key,
        value,
        prev_value: Bytes::new(),
        event_type: 0,
        error: 0,
        revision,
    }
}

/// A multi-threaded runtime with two workers: one for the dispatcher, one spare.
/// `WATCHBENCH_WORKERS` sets another count (at least 1), to see what a second core's
/// contention costs.
pub fn runtime() -> Runtime {
    let workers = std::env::var("WATCHBENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(2)
        .max(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Registers every watcher of `workload` on a fresh `E`, dispatches its events through `run()`
/// (preloaded, so the producer is out of the measurement), then measures paced latency.
pub fn dispatch_run<E: Engine>(
    rt: &Runtime,
    workload: &Workload,
    opts: &DispatchOptions,
) -> DispatchRun {
    rt.block_on(async {
        let (registry, unregister_rx) = E::registry(opts.buffer, usize::MAX);

        let counting = opts.measure_memory && alloc::installed();
        if counting {
            alloc::start();
        }
        // Counted: the handles are part of what a watcher costs its caller.
        let mut handles = Vec::with_capacity(workload.watcher_count());
        let started = Instant::now();
        register_all::<E>(&registry, workload, opts.progress, &mut handles);
        let register_time = started.elapsed();
        let bytes = counting.then(|| alloc::stop() as f64 / handles.len().max(1) as f64);

        let mut probe = E::into_receiver(E::watch(&registry, Bytes::from_static(PROBE_KEY)));
        let events: Vec<Event> = workload
            .events
            .iter()
            .enumerate()
            .map(|(i, key)| event(key.clone(), i as u64, Bytes::from_static(b"v")))
            .collect();
        // Room for the throughput events and, after them, the paced latency probes.
        let room = events.len().max(opts.latency_events) + 2;
        let (tx, rx) = broadcast::channel(room.next_power_of_two());
        for e in &events {
            tx.send(e.clone()).expect("receiver alive");
        }
        send_end_mark(&tx);

        let started = Instant::now();
        let task = tokio::spawn(E::run_quiet(registry.clone(), rx, unregister_rx));
        await_end_mark::<E>(&mut probe).await;
        let dispatch_time = started.elapsed();
        let deliveries = handles
            .iter_mut()
            .map(|h| E::queued(E::receiver(h)) as u64)
            .sum();

        let latency = if opts.latency_events > 0 {
            Some(paced_latency::<E>(&tx, probe, workload, opts).await)
        } else {
            None
        };

        drop(tx);
        task.await.expect("dispatcher task");
        let inline_ns = E::inline_pass(&registry, &events).map(|t| per(t, events.len()));
        drop(handles);
        drop(registry);
        DispatchRun {
            watchers: workload.watcher_count(),
            events: events.len(),
            register_ns: per(register_time, workload.watcher_count()),
            dispatch_ns: per(dispatch_time, events.len()),
            inline_ns,
            latency,
            bytes_per_watcher: bytes,
            deliveries,
        }
    })
}

/// A percentage on stderr, rewritten in place (backspaces), every 1% of `total`.
struct Progress {
    every: usize,
    total: usize,
    shown: bool,
}

impl Progress {
    fn new(enabled: bool, total: usize) -> Self {
        Self {
            every: if enabled && total >= 100_000 {
                total / 100
            } else {
                usize::MAX
            },
            total,
            shown: false,
        }
    }

    #[inline]
    fn tick(&mut self, done: usize) {
        if done.is_multiple_of(self.every) {
            eprint!("{:>3}%\x08\x08\x08\x08", done * 100 / self.total);
            self.shown = true;
        }
    }

    fn clear(&self) {
        if self.shown {
            eprint!("    \x08\x08\x08\x08");
        }
    }
}

/// Registers every watcher of `workload` (exact keys first) into `handles`, with a progress
/// percentage on stderr when `progress` is set.
fn register_all<E: Engine>(
    registry: &E::Registry,
    workload: &Workload,
    progress: bool,
    handles: &mut Vec<E::Handle>,
) {
    let mut bar = Progress::new(progress, workload.watcher_count());
    for key in &workload.exact {
        handles.push(E::watch(registry, key.clone()));
        bar.tick(handles.len());
    }
    for prefix in &workload.prefixes {
        handles.push(E::watch_prefix(registry, prefix.clone()));
        bar.tick(handles.len());
    }
    bar.clear();
}

/// Sends the event that marks the end of a stream, to the probe watcher.
fn send_end_mark(tx: &broadcast::Sender<Event>) {
    tx.send(event(Bytes::from_static(PROBE_KEY), END_MARK, Bytes::new()))
        .expect("receiver alive");
}

/// Returns once the probe watcher has received the end mark: the dispatcher has handled
/// everything broadcast before it (and, first, every pending unregistration).
async fn await_end_mark<E: Engine>(probe: &mut E::Receiver) {
    while let Some(delivered) = E::recv(probe).await {
        if E::stamp(&delivered).0 == END_MARK {
            return;
        }
    }
}

fn per(time: Duration, n: usize) -> f64 {
    time.as_nanos() as f64 / n.max(1) as f64
}

/// Reads the probe watcher until the end mark; returns, for each event carrying a
/// timestamp (nanoseconds since `base`, 8 bytes little-endian), how long it took to arrive.
/// Events without one (a heartbeat's Progress) are skipped.
fn spawn_probe_reader<E: Engine>(
    mut probe: E::Receiver,
    base: Instant,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while let Some(delivered) = E::recv(&mut probe).await {
            let (revision, value) = E::stamp(&delivered);
            if revision == END_MARK {
                break;
            }
            if let Ok(stamp) = <[u8; 8]>::try_from(value) {
                samples.push(base.elapsed().as_nanos() as u64 - u64::from_le_bytes(stamp));
            }
        }
        samples
    })
}

/// Sends workload events at a fixed rate, every eighth one a timestamped probe event, and
/// returns the probes' send-to-receive latency.
async fn paced_latency<E: Engine>(
    tx: &broadcast::Sender<Event>,
    probe: E::Receiver,
    workload: &Workload,
    opts: &DispatchOptions,
) -> Percentiles {
    let base = Instant::now();
    let reader = spawn_probe_reader::<E>(probe, base);
    let gap = Duration::from_nanos(1_000_000_000 / opts.latency_rate.max(1));
    let keys = &workload.events;
    for i in 0..opts.latency_events {
        let due = base + gap * i as u32;
        while Instant::now() < due {
            std::thread::yield_now();
        }
        let e = if i % 8 == 0 {
            let stamp = base.elapsed().as_nanos() as u64;
            event(
                Bytes::from_static(PROBE_KEY),
                i as u64,
                Bytes::copy_from_slice(&stamp.to_le_bytes()),
            )
        } else {
            event(
                keys[i % keys.len()].clone(),
                i as u64,
                Bytes::from_static(b"v"),
            )
        };
        tx.send(e).expect("receiver alive");
    }
    send_end_mark(tx);
    let mut samples = reader.await.expect("latency reader");
    Percentiles::of(&mut samples)
}

/// The four shapes that registration must stay sub-linear in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Every watcher on its own exact key.
    DistinctKeys,
    /// Every watcher on its own prefix, all siblings under one parent (`/users/<id>/`).
    SiblingPrefixes,
    /// Every watcher on one exact key.
    OneKey,
    /// Every watcher on one prefix.
    OnePrefix,
}

impl Shape {
    /// All four, in report order.
    pub const ALL: [Shape; 4] = [
        Shape::DistinctKeys,
        Shape::SiblingPrefixes,
        Shape::OneKey,
        Shape::OnePrefix,
    ];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Shape::DistinctKeys => "distinct exact keys",
            Shape::SiblingPrefixes => "sibling prefixes",
            Shape::OneKey => "one key",
            Shape::OnePrefix => "one prefix",
        }
    }

    /// The `i`-th watcher's key, and whether it is a prefix.
    pub fn key(self, i: usize) -> (Bytes, bool) {
        match self {
            Shape::DistinctKeys => (Bytes::from(format!("/keys/{i}")), false),
            Shape::SiblingPrefixes => (Bytes::from(format!("/users/{i}/")), true),
            Shape::OneKey => (Bytes::from_static(b"/hot"), false),
            Shape::OnePrefix => (Bytes::from_static(b"/hot/"), true),
        }
    }
}

fn register_shaped<E: Engine>(registry: &E::Registry, shape: Shape, i: usize) -> E::Handle {
    match shape.key(i) {
        (key, false) => E::watch(registry, key),
        (prefix, true) => E::watch_prefix(registry, prefix),
    }
}

/// Cost of one registration plus the drop of its handle (unregistration included: the run
/// ends when the dispatcher has applied them all), with `size` watchers of `shape` already
/// registered. Nanoseconds per operation.
pub fn register_run<E: Engine>(rt: &Runtime, shape: Shape, size: usize, ops: usize) -> f64 {
    rt.block_on(async {
        let (registry, unregister_rx) = E::registry(4, usize::MAX);
        let held: Vec<E::Handle> = (0..size)
            .map(|i| register_shaped::<E>(&registry, shape, i))
            .collect();
        let mut probe = E::into_receiver(E::watch(&registry, Bytes::from_static(PROBE_KEY)));
        let (tx, rx) = broadcast::channel(16);
        let task = tokio::spawn(E::run_quiet(registry.clone(), rx, unregister_rx));
        let started = Instant::now();
        for i in 0..ops {
            drop(register_shaped::<E>(&registry, shape, size + i));
        }
        // The dispatcher applies every pending unregistration before this event.
        send_end_mark(&tx);
        await_end_mark::<E>(&mut probe).await;
        let elapsed = started.elapsed();
        drop(tx);
        task.await.expect("dispatcher task");
        drop(held);
        per(elapsed, ops)
    })
}

/// What one `fill` run measured, in nanoseconds per watcher (wall time over all of them).
#[derive(Clone, Copy, Debug, Default)]
pub struct FillRun {
    /// Registering every watcher of the workload into an empty registry.
    pub register_ns: f64,
    /// Dropping every handle, until the dispatcher has applied every unregistration.
    pub drop_ns: f64,
}

/// `fill`: registers every watcher of `workload` into an empty registry from `threads` OS
/// threads at once (watcher `i` on thread `i % threads`), with the dispatcher running idle;
/// then drops every handle from one thread and waits until the dispatcher has applied the
/// unregistrations (it applies every pending one before the end mark).
pub fn fill_run<E: Engine>(rt: &Runtime, workload: &Workload, threads: usize) -> FillRun {
    rt.block_on(async {
        let (registry, unregister_rx) = E::registry(4, usize::MAX);
        let mut probe = E::into_receiver(E::watch(&registry, Bytes::from_static(PROBE_KEY)));
        let (tx, rx) = broadcast::channel(16);
        let task = tokio::spawn(E::run_quiet(registry.clone(), rx, unregister_rx));
        let targets = fill_targets(workload);
        let started = Instant::now();
        let handles = on_threads(threads, targets.len(), |i| match targets[i] {
            (key, false) => E::watch(&registry, key.clone()),
            (prefix, true) => E::watch_prefix(&registry, prefix.clone()),
        });
        let register_time = started.elapsed();
        let started = Instant::now();
        drop(handles);
        send_end_mark(&tx);
        await_end_mark::<E>(&mut probe).await;
        let drop_time = started.elapsed();
        drop(tx);
        task.await.expect("dispatcher task");
        FillRun {
            register_ns: per(register_time, targets.len()),
            drop_ns: per(drop_time, targets.len()),
        }
    })
}

/// `fill` paired: the watchers of `workload` registered from one thread into an empty
/// registry of each engine at once, both dispatchers running idle, in blocks of `block`
/// watchers, the engine going first alternating from block to block (as [`paired_passes`]
/// does for dispatch), so that the machine's noise falls on both alike. Registration only:
/// `first_ns` and `second_ns` are nanoseconds per watcher, `median_ratio` the median of
/// the blocks' second/first ratios.
pub fn fill_paired<A: Engine, B: Engine>(
    rt: &Runtime,
    workload: &Workload,
    block: usize,
) -> Paired {
    rt.block_on(async {
        let (registry_a, unregister_a) = A::registry(4, usize::MAX);
        let (registry_b, unregister_b) = B::registry(4, usize::MAX);
        let mut probe_a = A::into_receiver(A::watch(&registry_a, Bytes::from_static(PROBE_KEY)));
        let mut probe_b = B::into_receiver(B::watch(&registry_b, Bytes::from_static(PROBE_KEY)));
        let (tx_a, rx_a) = broadcast::channel(16);
        let (tx_b, rx_b) = broadcast::channel(16);
        let task_a = tokio::spawn(A::run_quiet(registry_a.clone(), rx_a, unregister_a));
        let task_b = tokio::spawn(B::run_quiet(registry_b.clone(), rx_b, unregister_b));
        let targets = fill_targets(workload);
        let (handles, paired) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut handles_a = Vec::with_capacity(targets.len());
                    let mut handles_b = Vec::with_capacity(targets.len());
                    let (mut time_a, mut time_b) = (Duration::ZERO, Duration::ZERO);
                    let mut ratios = Vec::new();
                    for (i, chunk) in targets.chunks(block.max(1)).enumerate() {
                        let (a, b) = if i % 2 == 0 {
                            let a = fill_block::<A>(&registry_a, chunk, &mut handles_a);
                            (a, fill_block::<B>(&registry_b, chunk, &mut handles_b))
                        } else {
                            let b = fill_block::<B>(&registry_b, chunk, &mut handles_b);
                            (fill_block::<A>(&registry_a, chunk, &mut handles_a), b)
                        };
                        time_a += a;
                        time_b += b;
                        ratios.push(b.as_secs_f64() / a.as_secs_f64().max(1e-12));
                    }
                    ratios.sort_by(f64::total_cmp);
                    let paired = Paired {
                        first_ns: per(time_a, targets.len()),
                        second_ns: per(time_b, targets.len()),
                        median_ratio: ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN),
                    };
                    ((handles_a, handles_b), paired)
                })
                .join()
                .expect("registering thread")
        });
        drop(handles);
        send_end_mark(&tx_a);
        send_end_mark(&tx_b);
        await_end_mark::<A>(&mut probe_a).await;
        await_end_mark::<B>(&mut probe_b).await;
        drop((tx_a, tx_b));
        task_a.await.expect("dispatcher task");
        task_b.await.expect("dispatcher task");
        paired
    })
}

/// Registers `targets` into `registry`, appending the handles; how long it took.
fn fill_block<E: Engine>(
    registry: &E::Registry,
    targets: &[(&Bytes, bool)],
    handles: &mut Vec<E::Handle>,
) -> Duration {
    let started = Instant::now();
    handles.extend(targets.iter().map(|&(target, prefix)| match prefix {
        false => E::watch(registry, target.clone()),
        true => E::watch_prefix(registry, target.clone()),
    }));
    started.elapsed()
}

/// Every target of `workload`, exact keys first, each with whether it is a prefix.
fn fill_targets(workload: &Workload) -> Vec<(&Bytes, bool)> {
    workload
        .exact
        .iter()
        .map(|k| (k, false))
        .chain(workload.prefixes.iter().map(|p| (p, true)))
        .collect()
}

/// Makes items `0..n` on `threads` OS threads at once, item `i` on thread `i % threads`;
/// each thread's items, in order.
fn on_threads<T: Send>(threads: usize, n: usize, make: impl Fn(usize) -> T + Sync) -> Vec<Vec<T>> {
    let threads = threads.max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let make = &make;
                scope.spawn(move || (t..n).step_by(threads).map(make).collect::<Vec<_>>())
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker thread"))
            .collect()
    })
}

/// `fill` through [`watchtrie::WatchRegistry::watch_many`] from one thread, `batch` specs a
/// call (drop-in channels): registration only, nanoseconds per watcher.
pub fn fill_many(workload: &Workload, batch: usize) -> f64 {
    use watchtrie::WatchSpec;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = watchtrie::WatchRegistry::new(4, tx);
    let specs: Vec<WatchSpec> = workload.specs().collect();
    let n = specs.len();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    let mut specs = specs.into_iter().peekable();
    while specs.peek().is_some() {
        let results = registry.watch_many(specs.by_ref().take(batch.max(1)));
        handles.extend(results.into_iter().map(|r| r.expect("no limit")));
    }
    let elapsed = started.elapsed();
    drop(handles);
    per(elapsed, n)
}

/// The floor under any engine's `fill`: creating `n` plain tokio channels of the same
/// capacity from `threads` threads at once and holding them (registration without an
/// index), then dropping them. Nanoseconds per channel, wall time.
pub fn fill_floor(n: usize, threads: usize) -> FillRun {
    let started = Instant::now();
    let channels = on_threads(threads, n, |_| tokio::sync::mpsc::channel::<Event>(5));
    let register_time = started.elapsed();
    let started = Instant::now();
    drop(channels);
    let drop_time = started.elapsed();
    FillRun {
        register_ns: per(register_time, n),
        drop_ns: per(drop_time, n),
    }
}

/// Deliveries per `fanout` run, spread over as many events as it takes.
const FANOUT_DELIVERIES: usize = 2_000_000;

/// `fanout`: `k` watchers on one key (or one prefix), every event delivered to all of them.
/// Nanoseconds per delivery through `run()`.
pub fn fanout_run<E: Engine>(rt: &Runtime, k: usize, prefix: bool) -> f64 {
    fanout_run_of::<E>(rt, k, prefix, (FANOUT_DELIVERIES / k).max(2))
}

/// Events in a fan-out run of grouped watchers: their cost is per group, not per watcher,
/// so a run sized by deliveries (20 events at K = 100,000) would time mostly its start.
pub const GROUPED_FANOUT_EVENTS: usize = 20_000;

/// [`fanout_run`] with `events` events.
pub fn fanout_run_of<E: Engine>(rt: &Runtime, k: usize, prefix: bool, events: usize) -> f64 {
    rt.block_on(async {
        let (registry, unregister_rx) = E::registry(events + 1, usize::MAX);
        let handles: Vec<E::Handle> = (0..k)
            .map(|_| match prefix {
                true => E::watch_prefix(&registry, Bytes::from_static(b"/fan/")),
                false => E::watch(&registry, Bytes::from_static(b"/fan/out")),
            })
            .collect();
        let mut probe = E::into_receiver(E::watch(&registry, Bytes::from_static(PROBE_KEY)));
        let (tx, rx) = broadcast::channel((events + 2).next_power_of_two());
        for i in 0..events {
            let e = event(
                Bytes::from_static(b"/fan/out"),
                i as u64,
                Bytes::from_static(b"v"),
            );
            tx.send(e).expect("receiver alive");
        }
        send_end_mark(&tx);
        let started = Instant::now();
        let task = tokio::spawn(E::run_quiet(registry.clone(), rx, unregister_rx));
        await_end_mark::<E>(&mut probe).await;
        let elapsed = started.elapsed();
        drop(tx);
        task.await.expect("dispatcher task");
        drop(handles);
        per(elapsed, events * k)
    })
}

/// CPU time this process has used, user and system, from `/proc/self/stat` (in clock ticks
/// of 10 ms: runs are sized to seconds); `None` where it cannot be read.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Deliveries per fan-out run with every receiver reading.
const FANOUT_CPU_DELIVERIES: usize = 4_000_000;

/// `k` watchers of one key, each read by its own task on the runtime while the dispatcher
/// delivers (buffers large enough that none overflows): the process's CPU time, dispatcher
/// and receivers together, per delivered event, in nanoseconds. `None` without
/// `/proc/self/stat`.
pub fn fanout_cpu_run<E: Engine>(rt: &Runtime, k: usize) -> Option<f64> {
    let events = (FANOUT_CPU_DELIVERIES / k).max(2);
    rt.block_on(async {
        let (registry, unregister_rx) = E::registry(events + 1, usize::MAX);
        let receivers: Vec<E::Receiver> = (0..k)
            .map(|_| E::into_receiver(E::watch(&registry, Bytes::from_static(b"/fan/out"))))
            .collect();
        let (tx, rx) = broadcast::channel((events + 2).next_power_of_two());
        for i in 0..events {
            let e = event(
                Bytes::from_static(b"/fan/out"),
                i as u64 + 1,
                Bytes::from_static(b"v"),
            );
            tx.send(e).expect("receiver alive");
        }
        let before = process_cpu();
        let readers: Vec<_> = receivers
            .into_iter()
            .map(|mut receiver| {
                tokio::spawn(async move {
                    let mut received = 0;
                    while received < events && E::recv(&mut receiver).await.is_some() {
                        received += 1;
                    }
                    received
                })
            })
            .collect();
        let task = tokio::spawn(E::run_quiet(registry.clone(), rx, unregister_rx));
        let mut received = 0;
        for reader in readers {
            received += reader.await.expect("reader task");
        }
        let after = process_cpu();
        drop(tx);
        task.await.expect("dispatcher task");
        assert_eq!(received, events * k, "every receiver got every event");
        Some(per(after? - before?, events * k))
    })
}

/// Heap bytes per watcher, all-in (handles kept in a `Vec`, rings, the index), of
/// `watchers` grouped watchers spread evenly over `keys` exact keys; `None` without the
/// counting allocator.
pub fn grouped_memory(watchers: usize, keys: usize) -> Option<f64> {
    if !alloc::installed() {
        return None;
    }
    let names: Vec<Bytes> = (0..keys.max(1))
        .map(|i| Bytes::from(format!("/config/key-{i:06}")))
        .collect();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = Arc::new(watchtrie::WatchRegistry::new(16, tx));
    alloc::start();
    let handles: Vec<watchtrie::GroupedWatcherHandle> = (0..watchers)
        .map(|i| {
            let spec = watchtrie::WatchSpec::exact(names[i % names.len()].clone()).grouped();
            registry.watch(spec).expect("under the limit")
        })
        .collect();
    let bytes = alloc::stop();
    drop(handles);
    Some(bytes as f64 / watchers.max(1) as f64)
}

/// The floor under any engine's fan-out: a bare loop of `capacity()`, an event clone and
/// `try_send` into `k` plain tokio channels, the same number of deliveries as
/// [`fanout_run`]. Nanoseconds per delivery.
pub fn fanout_floor(k: usize) -> f64 {
    let events = (FANOUT_DELIVERIES / k).max(2);
    let channels: Vec<_> = (0..k)
        .map(|_| tokio::sync::mpsc::channel::<Event>(events + 1))
        .collect();
    let e = event(Bytes::from_static(b"/fan/out"), 1, Bytes::from_static(b"v"));
    let started = Instant::now();
    for _ in 0..events {
        for (sender, _) in &channels {
            if std::hint::black_box(sender.capacity()) > 1 {
                let _ = sender.try_send(e.clone());
            }
        }
    }
    let elapsed = started.elapsed();
    drop(channels);
    per(elapsed, events * k)
}

/// Dropped watchers the `churn` phase lets wait for their unregistration before it pauses
/// (see [`churn_run`]): about 0.9 GB of drop-in channels.
pub const CHURN_BACKLOG: usize = 200_000;

/// What one `churn` run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChurnRun {
    /// Paced latency with the registry otherwise idle.
    pub quiet: Percentiles,
    /// The same, while a second thread only burns CPU (no registry work): the share of the
    /// churn figure that is the machine's, not the engine's.
    pub busy: Percentiles,
    /// The same, while another thread registers and drops watchers as fast as it can.
    pub churned: Percentiles,
    /// Register + drop operations per second achieved by the churning thread.
    pub churn_ops_per_s: f64,
}

/// `churn`: registers `workload`, then measures paced latency three times: quiet; while a
/// second thread burns CPU; and while a second thread registers and drops watchers (three
/// exact, one prefix, in turn, on keys no event touches) in a loop. The churned watchers
/// ask for prev_kv, which no other watcher here does, so the prev_kv count is the number
/// of dropped watchers whose unregistration the dispatcher has not applied yet (both
/// engines count one until then). Past [`CHURN_BACKLOG`] of them the churner pauses until
/// the dispatcher has applied them all, rather than let their channels (4.3 KB each) pile
/// up until the machine runs out of memory (the reference's did, at 24 GB): its dispatcher
/// takes unregistrations before events, so the pause also lets its events through.
pub fn churn_run<E: Engine>(rt: &Runtime, workload: &Workload, opts: &DispatchOptions) -> ChurnRun {
    rt.block_on(async {
        let (registry, unregister_rx) = E::registry(opts.buffer, usize::MAX);
        let mut handles = Vec::with_capacity(workload.watcher_count());
        register_all::<E>(&registry, workload, false, &mut handles);
        // Room for every paced event: the broadcast channel never lags, so no probe is lost.
        let (tx, rx) = broadcast::channel((opts.latency_events + 2).next_power_of_two());
        let task = tokio::spawn(E::run_quiet(registry.clone(), rx, unregister_rx));
        let probe = E::into_receiver(E::watch(&registry, Bytes::from_static(PROBE_KEY)));
        let quiet = paced_latency::<E>(&tx, probe, workload, opts).await;

        let stop = Arc::new(AtomicBool::new(false));
        let burner = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
            })
        };
        let probe = E::into_receiver(E::watch(&registry, Bytes::from_static(PROBE_KEY)));
        let busy = paced_latency::<E>(&tx, probe, workload, opts).await;
        stop.store(true, Ordering::Relaxed);
        burner.join().expect("burning thread");

        let stop = Arc::new(AtomicBool::new(false));
        let churner = {
            let (registry, stop) = (Arc::clone(&registry), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if n.is_multiple_of(256) && E::prev_kv_count(&registry) >= CHURN_BACKLOG {
                        while E::prev_kv_count(&registry) > 0 && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    let handle = if n % 4 == 3 {
                        E::register_prefix(&registry, Bytes::from(format!("/churn/{n}/")), true)
                    } else {
                        E::register(&registry, Bytes::from(format!("/churn/{n}")), true)
                    };
                    drop(handle.expect("no limit, valid prefixes"));
                    n += 1;
                }
                n
            })
        };
        let started = Instant::now();
        let probe = E::into_receiver(E::watch(&registry, Bytes::from_static(PROBE_KEY)));
        let churned = paced_latency::<E>(&tx, probe, workload, opts).await;
        stop.store(true, Ordering::Relaxed);
        let ops = churner.join().expect("churning thread");
        let elapsed = started.elapsed();
        drop(tx);
        task.await.expect("dispatcher task");
        drop(handles);
        ChurnRun {
            quiet,
            busy,
            churned,
            churn_ops_per_s: ops as f64 / elapsed.as_secs_f64(),
        }
    })
}

/// What one `heartbeat` run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeartbeatRun {
    /// Latency of paced probe events over a window that holds one heartbeat sweep.
    pub events: Percentiles,
    /// The worst of those.
    pub event_max_ns: u64,
    /// Time of each paced registration (register, then drop) over the same window.
    pub registrations: Percentiles,
    /// The worst of those.
    pub registration_max_ns: u64,
    /// Watchers that received a Progress event in the window: all of them, or the window
    /// missed the sweep.
    pub swept: usize,
}

/// Heartbeat period of the `heartbeat` scenario. The first tick comes 90–110% of it after
/// the dispatcher starts; the window ends before the second.
pub const HEARTBEAT_MS: u64 = 2_000;

/// `heartbeat`: registers `workload`, starts the dispatcher with a heartbeat, and over a
/// window holding its first sweep sends a probe event every 250 µs and registers (then
/// drops) a watcher every millisecond on another thread, timing both. Paced with sleeps, so
/// that the two threads do not compete with the dispatcher for the two cores.
pub fn heartbeat_run<E: Engine>(
    rt: &Runtime,
    workload: &Workload,
    incremental: bool,
    progress: bool,
) -> HeartbeatRun {
    rt.block_on(async {
        // Room for every probe event in the window, queued behind a stall: the probe watcher
        // must not overflow (a channel allocates its slots as they fill, not up front).
        let (registry, unregister_rx) = E::registry(1 << 14, usize::MAX);
        let mut handles = Vec::with_capacity(workload.watcher_count());
        register_all::<E>(&registry, workload, progress, &mut handles);
        let probe = E::into_receiver(E::watch(&registry, Bytes::from_static(PROBE_KEY)));
        let (tx, rx) = broadcast::channel(1 << 16);
        let task = tokio::spawn(E::run(
            registry.clone(),
            rx,
            unregister_rx,
            Arc::new(AtomicU64::new(1)),
            HEARTBEAT_MS,
            incremental,
        ));
        let base = Instant::now();
        let window = Duration::from_millis(HEARTBEAT_MS * 8 / 5);
        let reader = spawn_probe_reader::<E>(probe, base);
        let registrar = {
            let registry = Arc::clone(&registry);
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                let mut n = 0u64;
                while base.elapsed() < window {
                    let started = Instant::now();
                    drop(E::watch(&registry, Bytes::from(format!("/heartbeat/{n}"))));
                    samples.push(started.elapsed().as_nanos() as u64);
                    n += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                samples
            })
        };
        let producer = {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut revision = 2;
                while base.elapsed() < window {
                    let stamp = base.elapsed().as_nanos() as u64;
                    let e = event(
                        Bytes::from_static(PROBE_KEY),
                        revision,
                        Bytes::copy_from_slice(&stamp.to_le_bytes()),
                    );
                    tx.send(e).expect("receiver alive");
                    revision += 1;
                    std::thread::sleep(Duration::from_micros(250));
                }
            })
        };
        producer.join().expect("producer thread");
        let mut registrations = registrar.join().expect("registering thread");
        send_end_mark(&tx);
        let mut events = reader.await.expect("latency reader");
        drop(tx);
        task.await.expect("dispatcher task");
        let swept = handles
            .iter_mut()
            .map(|h| E::drain(h))
            .filter(|&n| n > 0)
            .count();
        drop(handles);
        HeartbeatRun {
            swept,
            event_max_ns: events.iter().copied().max().unwrap_or(0),
            events: Percentiles::of(&mut events),
            registration_max_ns: registrations.iter().copied().max().unwrap_or(0),
            registrations: Percentiles::of(&mut registrations),
        }
    })
}

/// What one `scale` run measured: watchtrie alone, one channel kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScaleRun {
    /// Watchers registered.
    pub watchers: usize,
    /// Registration cost per watcher.
    pub register_ns: f64,
    /// Heap growth per watcher while registering: index, channels and the caller's handles
    /// (the vector holding them included). `None` without the counting allocator.
    pub heap_per_watcher: Option<f64>,
    /// Resident-set growth per watcher over the same span.
    pub resident_per_watcher: f64,
    /// Dispatch cost per event through `WatchDispatcher::run` (events preloaded).
    pub dispatch_ns: f64,
    /// Events delivered.
    pub deliveries: u64,
}

/// `scale`: registers `workload` on watchtrie with compact channels (`compact`) or drop-in
/// ones, measuring registration time and memory all-in, then dispatches its events through
/// `run()` as `dispatch_run` does. Receivers are not read (the buffer holds every event a
/// watcher can get).
pub fn scale_run(rt: &Runtime, workload: &Workload, compact: bool, progress: bool) -> ScaleRun {
    use watchtrie::{CompactWatcherHandle, WatchRegistry, WatcherHandle};
    rt.block_on(async {
        let (tx, unregister_rx) = tokio::sync::mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(1024, tx));
        let n = workload.watcher_count();
        let counting = alloc::installed();
        let before = resident_bytes().unwrap_or(0);
        if counting {
            alloc::start();
        }
        let started = Instant::now();
        let mut bar = Progress::new(progress, n);
        let keys = workload.exact.iter().map(|k| (k, false));
        let keys = keys.chain(workload.prefixes.iter().map(|p| (p, true)));
        let (mut compact_handles, mut handles): (Vec<CompactWatcherHandle>, Vec<WatcherHandle>) =
            if compact {
                (Vec::with_capacity(n), Vec::new())
            } else {
                (Vec::new(), Vec::with_capacity(n))
            };
        for (i, (key, is_prefix)) in keys.enumerate() {
            let key = key.clone();
            match (compact, is_prefix) {
                (true, false) => {
                    compact_handles.push(registry.register_compact(key, false).unwrap())
                }
                (true, true) => {
                    compact_handles.push(registry.register_prefix_compact(key, false).unwrap())
                }
                (false, false) => handles.push(registry.register(key, false).unwrap()),
                (false, true) => handles.push(registry.register_prefix(key, false).unwrap()),
            }
            bar.tick(i + 1);
        }
        bar.clear();
        let register_time = started.elapsed();
        let heap = counting.then(|| alloc::stop() as f64 / n.max(1) as f64);
        let after = resident_bytes().unwrap_or(0);

        let mut probe = registry
            .register(Bytes::from_static(PROBE_KEY), false)
            .unwrap()
            .into_receiver()
            .2;
        let (tx, rx) = broadcast::channel((workload.events.len() + 2).next_power_of_two());
        for (i, key) in workload.events.iter().enumerate() {
            tx.send(event(key.clone(), i as u64, Bytes::from_static(b"v")))
                .expect("receiver alive");
        }
        send_end_mark(&tx);
        let started = Instant::now();
        let task = tokio::spawn(
            watchtrie::WatchDispatcher::new(
                registry.clone(),
                rx,
                unregister_rx,
                Arc::new(AtomicU64::new(0)),
                0,
            )
            .run(),
        );
        while let Some(delivered) = probe.recv().await {
            if delivered.revision == END_MARK {
                break;
            }
        }
        let dispatch_time = started.elapsed();
        let deliveries = compact_handles
            .iter_mut()
            .map(|h| h.receiver_mut().len() as u64)
            .chain(handles.iter_mut().map(|h| h.receiver_mut().len() as u64))
            .sum();
        drop(tx);
        task.await.expect("dispatcher task");
        drop((handles, compact_handles, registry));
        ScaleRun {
            watchers: n,
            register_ns: per(register_time, n),
            heap_per_watcher: heap,
            resident_per_watcher: after.saturating_sub(before) as f64 / n.max(1) as f64,
            dispatch_ns: per(dispatch_time, workload.events.len()),
            deliveries,
        }
    })
}

/// ns per delivery with `k` watchers on one key, compact or drop-in channels: bursts of 8
/// events through `InlineDispatcher` (timed), each followed by draining every receiver (not
/// timed), as consumers that keep up would. A compact queue is allocated for each burst
/// and given back at each drain: its real cost.
pub fn delivery_cost(compact: bool, k: usize, bursts: usize) -> f64 {
    use watchtrie::{InlineDispatcher, WatchRegistry};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(64, tx));
    let mut inline = InlineDispatcher::new(registry.clone(), rx);
    let key = Bytes::from_static(b"/fanout/key");
    let mut compact_handles = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..k {
        if compact {
            compact_handles.push(registry.register_compact(key.clone(), false).unwrap());
        } else {
            handles.push(registry.register(key.clone(), false).unwrap());
        }
    }
    let mut timed = Duration::ZERO;
    let mut revision = 0;
    for _ in 0..bursts {
        let started = Instant::now();
        for _ in 0..8 {
            revision += 1;
            inline.dispatch(&event(key.clone(), revision, Bytes::from_static(b"v")));
        }
        timed += started.elapsed();
        for h in &mut compact_handles {
            while h.receiver_mut().try_recv().is_ok() {}
        }
        for h in &mut handles {
            while h.receiver_mut().try_recv().is_ok() {}
        }
    }
    timed.as_nanos() as f64 / (bursts * 8 * k) as f64
}

/// Resident memory of this process in bytes (`/proc/self/statm`), if readable.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // x86-64 and aarch64 Linux defaults; statm counts pages of this size.
    Some(pages * 4096)
}

/// What one `memory` run measured, per registered watcher.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryRun {
    /// Growth of the resident set.
    pub resident_per_watcher: f64,
    /// Growth of live heap bytes (counting allocator), if installed.
    pub heap_per_watcher: Option<f64>,
}

/// `memory`: registers `workload` on a fresh `E` (channels, index and handles: all-in) and
/// reports how much the process grew. Meant to run alone in its own process.
pub fn memory_run<E: Engine>(rt: &Runtime, workload: &Workload, progress: bool) -> MemoryRun {
    rt.block_on(async {
        let (registry, _unregister_rx) = E::registry(16, usize::MAX);
        let counting = alloc::installed();
        let before = resident_bytes().unwrap_or(0);
        if counting {
            alloc::start();
        }
        let mut handles = Vec::with_capacity(workload.watcher_count());
        register_all::<E>(&registry, workload, progress, &mut handles);
        let heap = counting.then(|| alloc::stop() as f64 / handles.len().max(1) as f64);
        let after = resident_bytes().unwrap_or(0);
        let run = MemoryRun {
            resident_per_watcher: after.saturating_sub(before) as f64 / handles.len().max(1) as f64,
            heap_per_watcher: heap,
        };
        drop(handles);
        drop(registry);
        run
    })
}

/// The floor under any engine's dispatch of `workload`: the same broadcast channel and the
/// same `run()`-style loop, but each event's receivers are known in advance (computed
/// outside the measurement), so what remains is receiving the event and delivering it
/// (`capacity()`, an event clone and `try_send` per receiver) into plain tokio channels.
/// Nanoseconds per event.
pub fn dispatch_floor(rt: &Runtime, workload: &Workload, opts: &DispatchOptions) -> f64 {
    use std::collections::HashMap;
    let mut exact: HashMap<&[u8], Vec<u32>> = HashMap::new();
    let mut prefixes: HashMap<&[u8], Vec<u32>> = HashMap::new();
    let watched = workload.exact.iter().map(|k| (k, false));
    let watched = watched.chain(workload.prefixes.iter().map(|p| (p, true)));
    for (i, (key, is_prefix)) in watched.enumerate() {
        let map = if is_prefix { &mut prefixes } else { &mut exact };
        map.entry(&key[..]).or_default().push(i as u32);
    }
    let targets: Vec<Vec<u32>> = workload
        .events
        .iter()
        .map(|key| {
            let mut t = exact.get(&key[..]).cloned().unwrap_or_default();
            for (end, _) in key.iter().enumerate().filter(|(_, &b)| b == b'/') {
                t.extend(prefixes.get(&key[..=end]).into_iter().flatten());
            }
            t
        })
        .collect();
    drop((exact, prefixes));
    rt.block_on(async {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workload.watcher_count())
            .map(|_| tokio::sync::mpsc::channel::<Event>(opts.buffer + 1))
            .unzip();
        let (tx, mut rx) = broadcast::channel((workload.events.len() + 2).next_power_of_two());
        for (i, key) in workload.events.iter().enumerate() {
            tx.send(event(key.clone(), i as u64, Bytes::from_static(b"v")))
                .expect("receiver alive");
        }
        send_end_mark(&tx);
        let started = Instant::now();
        // The task hands its channels and tables back: dropping a million senders is
        // teardown, not dispatch, and must stay outside the measurement.
        let task = tokio::spawn(async move {
            loop {
                let e = match rx.try_recv() {
                    Ok(e) => e,
                    Err(broadcast::error::TryRecvError::Empty) => match rx.recv().await {
                        Ok(e) => e,
                        Err(_) => break,
                    },
                    Err(_) => break,
                };
                if e.revision == END_MARK {
                    break;
                }
                for &t in &targets[e.revision as usize] {
                    let sender = &senders[t as usize];
                    if sender.capacity() > 1 {
                        let _ = sender.try_send(e.clone());
                    }
                }
            }
            (senders, targets)
        });
        let kept = task.await.expect("floor task");
        let elapsed = started.elapsed();
        drop(kept);
        drop(tx);
        drop(receivers);
        per(elapsed, workload.events.len())
    })
}

/// Fills a dispatcher's history ([`crate::engines::BENCH_HISTORY`]'s bounds) with an event
/// per key of `keys` (cycled to 100K events), each with a value of `value_len` bytes; returns
/// (bytes of the events' keys and values, heap bytes the history reports, net heap bytes
/// the counting allocator saw while it filled, 0 if it is not installed).
pub fn history_memory(keys: &[Bytes], value_len: usize) -> (usize, usize, isize) {
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = Arc::new(watchtrie::WatchRegistry::new(16, _tx.clone()));
    let options = watchtrie::DispatchOptions::default().with_history(crate::engines::BENCH_HISTORY);
    let mut inline = watchtrie::InlineDispatcher::new(registry.clone(), rx).with_options(options);
    let value = Bytes::from(vec![b'v'; value_len]);
    let events = crate::engines::BENCH_HISTORY.max_events();
    let counting = alloc::installed();
    alloc::start();
    for (i, key) in keys.iter().cycle().take(events).enumerate() {
        inline.dispatch(&watchtrie::WatchResponse {
            key: key.clone(),
            value: value.clone(),
            revision: i as u64 + 1,
            ..Default::default()
        });
    }
    let counted = if counting { alloc::stop() } else { 0 };
    let m = registry.metrics().read();
    (m.history_bytes, m.history_heap_bytes, counted)
}

/// History on against off, paired so that the machine's noise falls on both alike: two
/// registries with the same watchers (registered alternately, so that their memory is
/// alike), each with an inline dispatcher on this thread, one keeping a history
/// ([`crate::engines::BENCH_HISTORY`]); `workload`'s events in blocks of `block`, each
/// block dispatched to both, the one going first alternating. Returns ns/event off and on
/// (summed over the blocks), the median of the blocks' on/off ratios, and whether both
/// delivered the same number of events.
pub fn history_paired(workload: &Workload, buffer: usize, block: usize) -> (f64, f64, f64, bool) {
    use crate::engines::Watchtrie;
    let (off_registry, off_rx) = Watchtrie::registry(buffer, usize::MAX);
    let (on_registry, on_rx) = Watchtrie::registry(buffer, usize::MAX);
    let mut off_handles = Vec::with_capacity(workload.watcher_count());
    let mut on_handles = Vec::with_capacity(workload.watcher_count());
    for key in &workload.exact {
        off_handles.push(Watchtrie::watch(&off_registry, key.clone()));
        on_handles.push(Watchtrie::watch(&on_registry, key.clone()));
    }
    for prefix in &workload.prefixes {
        off_handles.push(Watchtrie::watch_prefix(&off_registry, prefix.clone()));
        on_handles.push(Watchtrie::watch_prefix(&on_registry, prefix.clone()));
    }
    let history = watchtrie::DispatchOptions::default().with_history(crate::engines::BENCH_HISTORY);
    let mut off = watchtrie::InlineDispatcher::new(off_registry, off_rx);
    let mut on = watchtrie::InlineDispatcher::new(on_registry, on_rx).with_options(history);
    let events: Vec<Event> = workload
        .events
        .iter()
        .enumerate()
        .map(|(i, key)| event(key.clone(), i as u64 + 1, Bytes::from_static(b"v")))
        .collect();
    let paired = paired_passes(&mut off, &mut on, &events, block);
    let delivered = |handles: &mut Vec<watchtrie::WatcherHandle>| -> usize {
        handles
            .iter_mut()
            .map(|h| Watchtrie::queued(Watchtrie::receiver(h)))
            .sum()
    };
    let same = delivered(&mut off_handles) == delivered(&mut on_handles);
    (paired.first_ns, paired.second_ns, paired.median_ratio, same)
}

/// Two inline dispatchers timed over the same events, paired ([`paired_passes`]).
#[derive(Clone, Copy, Debug)]
pub struct Paired {
    /// ns/event of the first, summed over the blocks.
    pub first_ns: f64,
    /// ns/event of the second.
    pub second_ns: f64,
    /// The median of the blocks' second/first ratios.
    pub median_ratio: f64,
}

/// Dispatches `events` in blocks of `block` to both `first` and `second`, the one going
/// first alternating from block to block, so that the machine's noise (which moves whole
/// runs by 20% here) falls on both alike.
pub fn paired_passes(
    first: &mut watchtrie::InlineDispatcher,
    second: &mut watchtrie::InlineDispatcher,
    events: &[Event],
    block: usize,
) -> Paired {
    let time = |dispatcher: &mut watchtrie::InlineDispatcher, events: &[Event]| {
        let started = Instant::now();
        for e in events {
            dispatcher.dispatch(e);
        }
        started.elapsed()
    };
    let (mut first_time, mut second_time) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::new();
    for (i, events) in events.chunks(block.max(1)).enumerate() {
        let (a, b) = if i % 2 == 0 {
            let a = time(first, events);
            (a, time(second, events))
        } else {
            let b = time(second, events);
            (time(first, events), b)
        };
        first_time += a;
        second_time += b;
        ratios.push(b.as_secs_f64() / a.as_secs_f64().max(1e-12));
    }
    ratios.sort_by(f64::total_cmp);
    Paired {
        first_ns: per(first_time, events.len()),
        second_ns: per(second_time, events.len()),
        median_ratio: ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN),
    }
}
