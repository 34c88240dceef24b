//! `nodebench`: write→receive latency and writes/s through a real single d-engine node, with
//! d-engine-core's own watch module and watchtrie as its engine, alternated in one process.
//! Run `nodebench --help` for the options.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use watchtrie_node::{
    cluster_config, free_loopback_addresses, start_with, KvClient, Reference, WatchEngine,
    WatchNode, Watchtrie,
};

const HELP: &str = "\
nodebench: write→receive latency and writes/s through one real d-engine 0.2.4 node (file
storage, gRPC client on loopback), with d-engine-core's watch module and with watchtrie

USAGE: cargo run --release -p watchtrie-node --bin nodebench -- [OPTIONS]

OPTIONS:
  --watchers LIST   idle watchers registered beside the probe, comma-separated
                    (default 0,100000,1000000; half exact keys, half prefixes)
  --duration SECS   writing time per run (default 40: d-engine's default heartbeat, 30 s
                    with its first tick at 27-33 s, falls inside every run)
  --writers N       concurrent clients, each writing one after another (default 4)
  --rounds N        runs of each engine per watcher count, alternated (default 2)
  --heartbeat MS    heartbeat interval (default 30000, d-engine's default)
  --buffer N        watcher_buffer_size (default 100000; d-engine's is 256, with which the
                    probe is cancelled for overflow by the burst after a long sweep; the
                    run then reports it)
  -h, --help        this text

Per run: a fresh node, N idle watchers, one probe watcher on the written prefix; writers
put the send time in each value and the probe reads it back. A warm-up run is discarded;
then, for each watcher count, the engines alternate: reference; watchtrie with
d-engine-core's blocking heartbeat (replayed revisions skipped); watchtrie as `start` sets
it up (incremental heartbeat, replays skipped); the next round backwards. Each figure is the median over a
configuration's runs.";

#[derive(Clone)]
struct Options {
    watchers: Vec<usize>,
    duration: Duration,
    writers: usize,
    rounds: usize,
    heartbeat_ms: u64,
    buffer: usize,
}

fn parse() -> Result<Options, String> {
    let mut opts = Options {
        watchers: vec![0, 100_000, 1_000_000],
        duration: Duration::from_secs(40),
        writers: 4,
        rounds: 2,
        heartbeat_ms: 30_000,
        buffer: 100_000,
    };
    let mut args = std::env::args().skip(1);
    let number = |name: &str, v: &str| {
        v.replace('_', "")
            .parse::<u64>()
            .map_err(|_| format!("{name}: '{v}' is not a whole number"))
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--watchers" => {
                opts.watchers = value("--watchers")?
                    .split(',')
                    .map(|v| number("--watchers", v).map(|n| n as usize))
                    .collect::<Result<_, _>>()?
            }
            "--duration" => {
                opts.duration = Duration::from_secs(number("--duration", &value("--duration")?)?)
            }
            "--writers" => opts.writers = number("--writers", &value("--writers")?)? as usize,
            "--rounds" => opts.rounds = number("--rounds", &value("--rounds")?)? as usize,
            "--heartbeat" => opts.heartbeat_ms = number("--heartbeat", &value("--heartbeat")?)?,
            "--buffer" => opts.buffer = number("--buffer", &value("--buffer")?)? as usize,
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option '{other}' (see --help)")),
        }
    }
    if opts.writers == 0 || opts.rounds == 0 || opts.duration.is_zero() {
        return Err("--writers, --rounds and --duration must be at least 1".into());
    }
    if opts.watchers.iter().any(|&n| n > 20_000_000) {
        return Err("--watchers: at most 20000000".into());
    }
    Ok(opts)
}

/// What a benchmark needs of an engine's registry: idle watchers, and a probe receiver.
trait Bench: WatchEngine + Sized + Copy {
    type Handle: Send + 'static;
    type Probe: Send + 'static;
    fn idle(registry: &Self::Registry, key: Bytes, prefix: bool) -> Self::Handle;
    fn probe(registry: &Self::Registry, prefix: Bytes) -> Self::Probe;
    /// The next event: its kind and value.
    fn next(
        probe: &mut Self::Probe,
    ) -> impl std::future::Future<Output = Option<(Kind, Bytes)>> + Send;
}

/// What the probe received.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write,
    Progress,
    Canceled,
}

/// watchtrie as `start` configures it on a node (incremental heartbeat), or with
/// d-engine-core's blocking heartbeat instead.
#[derive(Clone, Copy)]
struct Ours {
    blocking: bool,
}

impl WatchEngine for Ours {
    type Registry = watchtrie::WatchRegistry;
    fn build(
        self,
        config: &d_engine_core::WatchConfig,
        events: tokio::sync::broadcast::Receiver<d_engine_proto::client::WatchResponse>,
        last_applied: Arc<AtomicU64>,
    ) -> watchtrie_node::EngineParts<Self::Registry> {
        let engine = if self.blocking {
            Watchtrie::with_options(
                watchtrie::DispatchOptions::default().with_skip_replayed_revisions(true),
            )
        } else {
            Watchtrie::default()
        };
        engine.build(config, events, last_applied)
    }
}

impl Bench for Ours {
    type Handle = watchtrie::WatcherHandle;
    type Probe = watchtrie::WatcherHandle;
    fn idle(registry: &Self::Registry, key: Bytes, prefix: bool) -> Self::Handle {
        match prefix {
            true => registry.register_prefix(key, false),
            false => registry.register(key, false),
        }
        .expect("registry without limit")
    }
    fn probe(registry: &Self::Registry, prefix: Bytes) -> Self::Probe {
        registry.register_prefix(prefix, false).expect("probe")
    }
    async fn next(probe: &mut Self::Probe) -> Option<(Kind, Bytes)> {
        use watchtrie::WatchEventType as T;
        let e = probe.receiver_mut().recv().await?;
        let kind = match e.event_type {
            T::Progress => Kind::Progress,
            T::Canceled => Kind::Canceled,
            T::Put | T::Delete => Kind::Write,
        };
        Some((kind, e.value))
    }
}

impl Bench for Reference {
    type Handle = d_engine_core::watch::WatcherHandle;
    type Probe = d_engine_core::watch::WatcherHandle;
    fn idle(registry: &Self::Registry, key: Bytes, prefix: bool) -> Self::Handle {
        match prefix {
            true => registry.register_prefix(key, false),
            false => registry.register(key, false),
        }
        .expect("registry without limit")
    }
    fn probe(registry: &Self::Registry, prefix: Bytes) -> Self::Probe {
        registry.register_prefix(prefix, false).expect("probe")
    }
    async fn next(probe: &mut Self::Probe) -> Option<(Kind, Bytes)> {
        use d_engine_core::watch::WatchEventType as T;
        let e = probe.receiver_mut().recv().await?;
        let kind = match e.event_type {
            T::Progress => Kind::Progress,
            T::Canceled => Kind::Canceled,
            T::Put | T::Delete => Kind::Write,
        };
        Some((kind, e.value))
    }
}

/// One run's figures.
#[derive(Clone, Debug, Default)]
struct Run {
    writes_per_s: f64,
    /// Write→receive latencies, microseconds, sorted.
    latencies_us: Vec<u32>,
    /// The same, for writes sent from 3 s before to 3 s after the probe's first Progress.
    tick_latencies_us: Vec<u32>,
    register_s: f64,
    tick_seen: bool,
    /// Acknowledged writes whose event the probe never received.
    missed: u64,
    /// The probe's stream ended with a cancel (overflow).
    cancelled: bool,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)])
}

const PROBE_PREFIX: &str = "/bench/probe/";

async fn run_once<E: Bench>(engine: E, watchers: usize, opts: &Options) -> Result<Run, String> {
    let dir = ScratchDir::new()?;
    let addresses = free_loopback_addresses(1).map_err(|e| e.to_string())?;
    let mut config = cluster_config(1, &addresses).expect("node 1 of 1");
    config.raft.watch.heartbeat_interval_ms = opts.heartbeat_ms;
    config.raft.watch.watcher_buffer_size = opts.buffer;
    let node: WatchNode<E> = start_with(config, &dir.0, engine)
        .await
        .map_err(|e| e.to_string())?;
    node.wait_for_leader(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;

    let registering = Instant::now();
    let registry = node.registry();
    let idle: Vec<E::Handle> = (0..watchers)
        .map(|i| {
            let prefix = i % 2 == 1;
            let key = if prefix {
                format!("/bench/idle/{i}/")
            } else {
                format!("/bench/idle/{i}")
            };
            E::idle(registry, Bytes::from(key), prefix)
        })
        .collect();
    let register_s = registering.elapsed().as_secs_f64();
    let mut probe = E::probe(registry, Bytes::from_static(PROBE_PREFIX.as_bytes()));

    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..opts.writers {
        let mut client = KvClient::new(addresses.clone()).map_err(|e| e.to_string())?;
        let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
        writers.push(tokio::spawn(async move {
            let key = format!("{PROBE_PREFIX}{w}");
            while !stop.load(Ordering::Relaxed) {
                let sent = origin.elapsed().as_nanos() as u64;
                client
                    .put(key.clone(), Bytes::copy_from_slice(&sent.to_le_bytes()))
                    .await
                    .map_err(|e| e.to_string())?;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    let reader = tokio::spawn(async move {
        let mut samples: Vec<(u64, u32)> = Vec::new();
        let mut first_tick = None;
        let mut cancelled = false;
        while let Some((kind, value)) = E::next(&mut probe).await {
            let now = origin.elapsed().as_nanos() as u64;
            match kind {
                Kind::Write => {}
                Kind::Progress => {
                    first_tick.get_or_insert(now);
                    continue;
                }
                Kind::Canceled => {
                    cancelled = true;
                    continue;
                }
            }
            let Ok(sent) = <[u8; 8]>::try_from(&value[..]) else {
                continue;
            };
            let sent = u64::from_le_bytes(sent);
            samples.push((sent, ((now.saturating_sub(sent)) / 1_000) as u32));
        }
        (samples, first_tick, cancelled)
    });
    tokio::time::sleep(opts.duration).await;
    stop.store(true, Ordering::Relaxed);
    let written = origin.elapsed();
    for writer in writers {
        writer.await.map_err(|e| e.to_string())??;
    }
    let writes = acked.load(Ordering::Relaxed);
    node.shutdown().await.map_err(|e| e.to_string())?;
    let (samples, first_tick, cancelled) = reader.await.map_err(|e| e.to_string())?;
    drop(idle);

    let mut latencies_us: Vec<u32> = samples.iter().map(|s| s.1).collect();
    latencies_us.sort_unstable();
    let mut tick_latencies_us: Vec<u32> = first_tick
        .map(|t| {
            let (from, to) = (t.saturating_sub(3_000_000_000), t + 3_000_000_000);
            samples
                .iter()
                .filter(|s| (from..to).contains(&s.0))
                .map(|s| s.1)
                .collect()
        })
        .unwrap_or_default();
    tick_latencies_us.sort_unstable();
    Ok(Run {
        writes_per_s: writes as f64 / written.as_secs_f64(),
        latencies_us,
        tick_latencies_us,
        register_s,
        tick_seen: first_tick.is_some(),
        missed: writes.saturating_sub(samples.len() as u64),
        cancelled,
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median of each figure over a configuration's runs.
struct Summary {
    writes_per_s: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    tick_p999: f64,
    register_s: f64,
    ticks: usize,
    runs: usize,
    missed: u64,
    cancelled: usize,
}

fn summarise(runs: &[Run]) -> Summary {
    let of = |f: &dyn Fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    Summary {
        writes_per_s: of(&|r| r.writes_per_s),
        p50: of(&|r| percentile(&r.latencies_us, 50.0)),
        p99: of(&|r| percentile(&r.latencies_us, 99.0)),
        p999: of(&|r| percentile(&r.latencies_us, 99.9)),
        tick_p999: of(&|r| percentile(&r.tick_latencies_us, 99.9)),
        register_s: of(&|r| r.register_s),
        ticks: runs.iter().filter(|r| r.tick_seen).count(),
        runs: runs.len(),
        missed: runs.iter().map(|r| r.missed).sum(),
        cancelled: runs.iter().filter(|r| r.cancelled).count(),
    }
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nodebench: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(bench(&opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodebench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(opts: &Options) -> Result<(), String> {
    eprintln!(
        "nodebench: {} writers, {:?} per run, heartbeat {} ms, {} round(s)",
        opts.writers, opts.duration, opts.heartbeat_ms, opts.rounds
    );
    let warm_up = Options {
        duration: Duration::from_secs(3),
        ..opts.clone()
    };
    eprintln!("  warm-up (discarded)…");
    run_once(Ours { blocking: false }, 0, &warm_up).await?;

    // The engines in the order of even rounds; odd rounds run them backwards (A B C C B A).
    const ENGINES: [&str; 3] = ["reference", "watchtrie, blocking heartbeat", "watchtrie"];
    let mut results: Vec<(usize, Vec<Vec<Run>>)> = Vec::new();
    for &watchers in &opts.watchers {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); ENGINES.len()];
        for round in 0..opts.rounds {
            let mut order: Vec<usize> = (0..ENGINES.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for engine in order {
                let run = match engine {
                    0 => run_once(Reference, watchers, opts).await?,
                    1 => run_once(Ours { blocking: true }, watchers, opts).await?,
                    _ => run_once(Ours { blocking: false }, watchers, opts).await?,
                };
                eprintln!(
                    "  {:<33} {:>8} watchers: {:>7.0} writes/s, p99 {:>7.0} µs, around a tick p99.9 {:>7.0} µs (registered in {:.1} s){}{}",
                    ENGINES[engine],
                    watchers,
                    run.writes_per_s,
                    percentile(&run.latencies_us, 99.0),
                    percentile(&run.tick_latencies_us, 99.9),
                    run.register_s,
                    if run.missed > 0 { format!(", {} writes never reached the probe", run.missed) } else { String::new() },
                    if run.cancelled { ", the probe was cancelled" } else { "" },
                );
                runs[engine].push(run);
            }
        }
        results.push((watchers, runs));
    }

    println!();
    println!("| engine | watchers | writes/s | p50 µs | p99 µs | p99.9 µs | p99.9 µs around a tick | register s | runs with a tick | writes the probe missed | probe cancelled |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut summaries = Vec::new();
    for (watchers, runs) in &results {
        for (name, runs) in ENGINES.iter().zip(runs) {
            let s = summarise(runs);
            println!(
                "| {name} | {watchers} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {}/{} | {} | {}/{} |",
                s.writes_per_s, s.p50, s.p99, s.p999, s.tick_p999, s.register_s, s.ticks, s.runs,
                s.missed, s.cancelled, s.runs
            );
            summaries.push((*name, *watchers, s));
        }
    }
    let find = |name: &str, n: usize| {
        summaries
            .iter()
            .find(|s| s.0 == name && s.1 == n)
            .map(|s| &s.2)
    };
    let (Some(&lo), Some(&hi)) = (opts.watchers.iter().min(), opts.watchers.iter().max()) else {
        return Ok(());
    };
    if lo != hi {
        println!();
        println!("What {hi} watchers add to a node with {lo} (medians):");
        for name in ENGINES {
            let (a, b) = (find(name, lo).unwrap(), find(name, hi).unwrap());
            println!(
                "  {name:<33} writes/s {:+.1}%, p99 {:+.0} µs, p99.9 around a tick {:+.0} µs",
                (b.writes_per_s / a.writes_per_s - 1.0) * 100.0,
                b.p99 - a.p99,
                b.tick_p999 - a.tick_p999,
            );
        }
    }
    Ok(())
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> Result<Self, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "nodebench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
