//! Criterion benches: every `watchbench` dispatch scenario, the two engines side by side in
//! one group each, so that criterion's reports put them next to each other.
//!
//! Sizes default small enough for `cargo bench -p watchbench` to finish in about ten
//! minutes on two cores; `WATCHBENCH_WATCHERS=1000000` raises the registered watcher count
//! of `mixed`, `miss` and `deep` (and the `register` background) to millions.
//! `watchbench` remains the tool for the full report (latency, memory, ratios).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use watchbench::engines::{Engine, Event, Reference, Watchtrie};
use watchbench::measure::{self, Shape, PROBE_KEY};
use watchbench::workload::{self, Workload};

/// Events sent per round trip to the probe: the broadcast channel holds them all.
const CHUNK: usize = 4096;

fn watchers() -> usize {
    std::env::var("WATCHBENCH_WATCHERS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(20_000)
}

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

/// One engine with its watchers registered and its dispatcher running.
struct Running<E: Engine> {
    registry: Arc<E::Registry>,
    handles: Vec<E::Handle>,
    probe: E::Receiver,
    tx: broadcast::Sender<Event>,
    task: JoinHandle<()>,
}

impl<E: Engine> Running<E> {
    fn start(rt: &Runtime, exact: &[Bytes], prefixes: &[Bytes]) -> Self {
        let _guard = rt.enter();
        let (registry, unregister_rx) = E::registry(1 << 16, usize::MAX);
        let handles = exact
            .iter()
            .map(|k| E::watch(&registry, k.clone()))
            .chain(
                prefixes
                    .iter()
                    .map(|p| E::watch_prefix(&registry, p.clone())),
            )
            .collect();
        let probe = E::into_receiver(E::watch(&registry, Bytes::from_static(PROBE_KEY)));
        let (tx, rx) = broadcast::channel(2 * CHUNK);
        let task = rt.spawn(E::run_quiet(registry.clone(), rx, unregister_rx));
        Self {
            registry,
            handles,
            probe,
            tx,
            task,
        }
    }

    /// Sends an end mark and waits for the probe to receive it: the dispatcher has then
    /// handled every event and unregistration queued before it.
    fn round_trip(&mut self, rt: &Runtime) {
        self.tx
            .send(event(Bytes::from_static(PROBE_KEY), u64::MAX))
            .expect("dispatcher alive");
        rt.block_on(async {
            while let Some(e) = E::recv(&mut self.probe).await {
                if E::stamp(&e).0 == u64::MAX {
                    break;
                }
            }
        });
    }

    /// Sends `n` events with keys from `keys` (cycled), each chunk followed by an end mark,
    /// and returns the time until the dispatcher has handled them all. Receivers are drained
    /// afterwards, outside the measurement, so that nobody overflows.
    fn dispatch(&mut self, rt: &Runtime, keys: &[Bytes], n: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut sent = 0u64;
        while sent < n {
            let chunk = (n - sent).min(CHUNK as u64);
            let started = Instant::now();
            for i in 0..chunk {
                let key = keys[((sent + i) % keys.len() as u64) as usize].clone();
                self.tx
                    .send(event(key, sent + i))
                    .expect("dispatcher alive");
            }
            self.round_trip(rt);
            elapsed += started.elapsed();
            sent += chunk;
            self.handles.iter_mut().for_each(|h| {
                E::drain(h);
            });
        }
        elapsed
    }

    fn stop(self, rt: &Runtime) {
        drop(self.tx);
        rt.block_on(self.task).expect("dispatcher task");
        drop(self.handles);
        drop(self.registry);
    }
}

fn dispatch_group(c: &mut Criterion, rt: &Runtime, name: &str, w: &Workload) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    let n = w.watcher_count();
    bench_dispatch::<Reference>(&mut group, rt, w, n);
    bench_dispatch::<Watchtrie>(&mut group, rt, w, n);
    group.finish();
}

fn bench_dispatch<E: Engine>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    w: &Workload,
    n: usize,
) {
    let mut running = Running::<E>::start(rt, &w.exact, &w.prefixes);
    group.bench_function(BenchmarkId::new(E::NAME, n), |b| {
        b.iter_custom(|iters| running.dispatch(rt, &w.events, iters))
    });
    running.stop(rt);
}

fn mixed(c: &mut Criterion) {
    let rt = measure::runtime();
    let n = watchers();
    dispatch_group(
        c,
        &rt,
        "mixed",
        &workload::mixed(n - n / 11, n / 11, 50_000, 42),
    );
}

fn miss(c: &mut Criterion) {
    let rt = measure::runtime();
    dispatch_group(c, &rt, "miss", &workload::miss(watchers(), 50_000, 42));
}

fn deep(c: &mut Criterion) {
    let rt = measure::runtime();
    dispatch_group(c, &rt, "deep", &workload::deep(watchers(), 50_000, 42));
}

/// K watchers on one key, every event delivered to all: time per delivery.
fn fanout(c: &mut Criterion) {
    let rt = measure::runtime();
    let mut group = c.benchmark_group("fanout");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let key = Bytes::from_static(b"/fan/out");
    for k in [1usize, 100, 10_000] {
        group.throughput(Throughput::Elements(k as u64));
        let keys = vec![key.clone(); k];
        let mut reference = Running::<Reference>::start(&rt, &keys, &[]);
        group.bench_function(BenchmarkId::new("reference", k), |b| {
            b.iter_custom(|iters| reference.dispatch(&rt, std::slice::from_ref(&key), iters))
        });
        reference.stop(&rt);
        let mut ours = Running::<Watchtrie>::start(&rt, &keys, &[]);
        group.bench_function(BenchmarkId::new("watchtrie", k), |b| {
            b.iter_custom(|iters| ours.dispatch(&rt, std::slice::from_ref(&key), iters))
        });
        ours.stop(&rt);
    }
    group.finish();
}

/// Register + drop on a registry holding N watchers of the shape, unregistration included
/// (the dispatcher has applied them all when the time is taken).
fn register(c: &mut Criterion) {
    let rt = measure::runtime();
    let mut group = c.benchmark_group("register");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    let n = watchers();
    for shape in Shape::ALL {
        let background: Vec<(Bytes, bool)> = (0..n).map(|i| shape.key(i)).collect();
        bench_register::<Reference>(&mut group, &rt, shape, &background);
        bench_register::<Watchtrie>(&mut group, &rt, shape, &background);
    }
    group.finish();
}

fn bench_register<E: Engine>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    shape: Shape,
    background: &[(Bytes, bool)],
) {
    let exact: Vec<Bytes> = background
        .iter()
        .filter(|k| !k.1)
        .map(|k| k.0.clone())
        .collect();
    let prefixes: Vec<Bytes> = background
        .iter()
        .filter(|k| k.1)
        .map(|k| k.0.clone())
        .collect();
    let mut running = Running::<E>::start(rt, &exact, &prefixes);
    let mut next = background.len();
    let id = BenchmarkId::new(format!("{}/{}", shape.name(), E::NAME), background.len());
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let handle = match shape.key(next) {
                    (key, false) => E::watch(&running.registry, key),
                    (prefix, true) => E::watch_prefix(&running.registry, prefix),
                };
                drop(black_box(handle));
                next += 1;
            }
            // The end mark reaches the probe after every queued unregistration is applied.
            running.round_trip(rt);
            started.elapsed()
        })
    });
    running.stop(rt);
}

criterion_group!(benches, mixed, miss, deep, fanout, register);
criterion_main!(benches);
