//! `watchbench`: watchtrie against d-engine-core 0.2.4's watch module, side by side, in one
//! process. Run `watchbench --help` for the options.

use std::process::ExitCode;

use watchbench::alloc::CountingAlloc;
use watchbench::engines::{
    Engine, Reference, Watchtrie, WatchtrieCompact, WatchtrieGrouped, WatchtrieHistory,
};
use watchbench::measure::{self, DispatchOptions, DispatchRun};
use watchbench::workload::{self, Workload};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const HELP: &str = "\
watchbench: watchtrie vs d-engine-core 0.2.4 (the reference), same process, same events

USAGE: cargo run --release --bin watchbench -- [OPTIONS]

OPTIONS:
  --scenario NAME   mixed (default) | miss | deep | register | fill | fanout | churn | memory |
                    heartbeat | scale; watchtrie alone: kinds | wildcards | owners | key-cost |
                    resume-storm (--watchers resume at once, default 100000) | group-sweep
                    (a closed-receiver sweep call against one group of 1K, 10K, 100K
                    members, or --watchers) | group-leave (N waiting members of one
                    group dropped: 10K, 50K, or --watchers) | lag-stall (two
                    lagging watchers, each dispatch timed; --watchers events,
                    default 2000000)
  --watchers N      watchers to register (default: mixed 500000, memory 1100000; miss, register, fill,
                    heartbeat 1000000 (heartbeat: mixed keys); deep, fanout, churn 100000
                    (churn: mixed keys); scale 10000000 compact watchers, mixed keys
                    with 1% prefixes, next to 1000000 compact and 1000000 drop-in)
  --events N        events per throughput run (default 200000)
  --seed N          workload seed (default 42)
  --latency N       paced events in the latency phase, 0 to skip (default 20000)
  --only ENGINE     run one engine alone, once, for profiling: reference | watchtrie |
                    watchtrie-history (its dispatcher keeping a history) |
                    watchtrie-compact | watchtrie-grouped; fanout: that engine's CPU
                    per delivery with every receiver reading, K = --watchers, three runs;
                    kinds: one mix alone, twice (plain | all | byte-prefixes | ranges |
                    patterns)
  --json            print the results as one JSON object instead of a table
  --history         mixed, miss, deep: watchtrie with its dispatcher keeping a history
                    (100K events, 64 MiB) against watchtrie without, alternated, instead
                    of against the reference; then the history's heap bytes against the
                    bytes of the events it holds
  --compact         mixed, miss, deep, fanout: watchtrie's compact and grouped watchers too,
                    beside its drop-in ones and the reference (alternated runs), so that
                    the floor each kind pays shows
  --svg FILE        mixed, miss, deep: also run at 1K, 10K, 100K watchers (up to --watchers)
                    and plot events/s against watcher count (log axis) to FILE;
                    fanout: plot the dispatcher's µs per event against watchers per key
                    (with --compact: compact and grouped watchers too);
                    scale: plot heap bytes per watcher against watcher count (10K, 100K,
                    1M, --watchers) for compact, drop-in and the reference
  -h, --help        this text

WATCHBENCH_WORKERS=N sets the runtime's worker threads (default 2).

Each engine is run twice after a discarded warm-up, in the order reference, watchtrie,
watchtrie, reference; the best figure of each is kept. Ratios are reference / watchtrie
costs: above 1 means watchtrie is faster or smaller.";

struct Options {
    scenario: String,
    watchers: Option<usize>,
    events: usize,
    seed: u64,
    latency: usize,
    json: bool,
    only: Option<String>,
    svg: Option<String>,
    history: bool,
    compact: bool,
}

fn parse() -> Result<Options, String> {
    let mut opts = Options {
        scenario: "mixed".into(),
        watchers: None,
        events: 200_000,
        seed: 42,
        latency: 20_000,
        json: false,
        only: None,
        svg: None,
        history: false,
        compact: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{name}: '{v}' is not a whole number"))
        };
        match arg.as_str() {
            "--scenario" => opts.scenario = value("--scenario")?,
            "--watchers" => {
                opts.watchers = Some(number("--watchers", value("--watchers")?)? as usize)
            }
            "--events" => opts.events = number("--events", value("--events")?)? as usize,
            "--seed" => opts.seed = number("--seed", value("--seed")?)?,
            "--latency" => opts.latency = number("--latency", value("--latency")?)? as usize,
            "--json" => opts.json = true,
            "--only" => opts.only = Some(value("--only")?),
            "--svg" => opts.svg = Some(value("--svg")?),
            "--history" => opts.history = true,
            "--compact" => opts.compact = true,
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option '{other}' (see --help)")),
        }
    }
    if opts.events == 0 {
        return Err("--events must be at least 1".into());
    }
    if opts.watchers == Some(0) {
        return Err("--watchers must be at least 1".into());
    }
    Ok(opts)
}

/// Heap the reference needs per watcher, measured (about 4.6 KB: a tokio channel's first
/// block of 32 events), with a margin for the index and the events.
const ESTIMATED_BYTES_PER_WATCHER: u64 = 6_000;
/// The same for a compact watcher with its workload key (measured about 400, all-in).
const ESTIMATED_BYTES_PER_COMPACT_WATCHER: u64 = 700;

fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Watchers a scenario registers by default.
fn default_watchers(scenario: &str) -> usize {
    match scenario {
        // Half a million: a laptop with 8 GB runs it comfortably (each engine's drop-in
        // watchers hold a 4.3 KB tokio channel each); `--watchers 1100000` for the million.
        "mixed" => 500_000,
        "memory" => 1_100_000,
        "scale" => 10_000_000,
        "deep" | "fanout" | "churn" => 100_000,
        _ => 1_000_000,
    }
}

/// The workload of `scenario` with `n` watchers.
fn workload_of(scenario: &str, n: usize, opts: &Options) -> Result<Workload, String> {
    let w = match scenario {
        "mixed" | "churn" | "memory" | "heartbeat" | "fill" => workload::mixed(n - n / 11, n / 11, opts.events, opts.seed),
        "miss" => workload::miss(n, opts.events, opts.seed),
        "deep" => workload::deep(n, opts.events, opts.seed),
        "register" | "fanout" | "scale" | "kinds" | "wildcards" | "owners" | "key-cost"
        | "lag-stall" | "resume-storm" | "group-sweep" | "group-leave" => {
            Workload::default()
        }
        other => {
            return Err(format!(
                "unknown scenario '{other}' (mixed, miss, deep, register, fill, fanout, churn, memory, heartbeat, scale, kinds, wildcards, owners, key-cost, lag-stall, resume-storm)"
            ))
        }
    };
    Ok(w)
}

fn workload(opts: &Options) -> Result<Workload, String> {
    let n = opts
        .watchers
        .unwrap_or_else(|| default_watchers(&opts.scenario));
    workload_of(&opts.scenario, n, opts)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Keeps the better of two runs, figure by figure.
fn best(a: DispatchRun, b: DispatchRun) -> DispatchRun {
    let min = |x: f64, y: f64| x.min(y);
    let opt_min = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    DispatchRun {
        register_ns: min(a.register_ns, b.register_ns),
        dispatch_ns: min(a.dispatch_ns, b.dispatch_ns),
        inline_ns: opt_min(a.inline_ns, b.inline_ns),
        latency: match (a.latency, b.latency) {
            (Some(x), Some(y)) => Some(if x.p99 <= y.p99 { x } else { y }),
            (x, y) => x.or(y),
        },
        bytes_per_watcher: opt_min(a.bytes_per_watcher, b.bytes_per_watcher),
        ..a
    }
}

fn run<E: Engine>(
    rt: &tokio::runtime::Runtime,
    w: &Workload,
    opts: &DispatchOptions,
    label: &str,
) -> DispatchRun {
    eprint!(
        "  {label:<9} {:<10} registering {:>7} watchers… ",
        E::NAME,
        w.watcher_count()
    );
    let r = measure::dispatch_run::<E>(rt, w, opts);
    eprintln!(
        "{:.0} ns/registration, {:.0} ns/event",
        r.register_ns, r.dispatch_ns
    );
    r
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("watchbench: {e}");
            return ExitCode::from(2);
        }
    };
    // Refuse impossible sizes before generating anything.
    let watchers = opts
        .watchers
        .unwrap_or_else(|| default_watchers(&opts.scenario));
    if opts.svg.is_some()
        && !matches!(
            opts.scenario.as_str(),
            "mixed" | "miss" | "deep" | "scale" | "fanout"
        )
    {
        eprintln!(
            "watchbench: --svg plots the dispatch scenarios (mixed, miss, deep), fanout and scale"
        );
        return ExitCode::from(2);
    }
    let need = if opts.scenario == "scale" {
        // Compact watchers at full size, drop-in ones at 1M at most.
        watchers as u64 * ESTIMATED_BYTES_PER_COMPACT_WATCHER
            + watchers.min(1_000_000) as u64 * ESTIMATED_BYTES_PER_WATCHER
    } else {
        watchers as u64 * ESTIMATED_BYTES_PER_WATCHER
    } + opts.events as u64 * 400;
    if let Some(avail) = available_memory() {
        if need > avail / 10 * 8 {
            eprintln!(
                "watchbench: {} watchers need about {} MB, but only {} MB are available; lower --watchers",
                watchers,
                need >> 20,
                avail >> 20
            );
            return ExitCode::from(2);
        }
    }
    let w = match workload(&opts) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("watchbench: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = measure::runtime();
    if opts.scenario == "register" {
        return register_report(&rt, &opts);
    }
    if opts.scenario == "fill" {
        return fill_report(&rt, &w, &opts);
    }
    if opts.scenario == "fanout" {
        return fanout_report(&rt, &opts);
    }
    if opts.scenario == "memory" {
        return memory_report(&rt, &opts, &w);
    }
    if opts.scenario == "heartbeat" {
        return heartbeat_report(&rt, &opts, &w);
    }
    if opts.scenario == "scale" {
        return scale_report(&rt, &opts, watchers);
    }
    if let Some(code) = extended_report(&opts) {
        return code;
    }
    let dopts = DispatchOptions {
        latency_events: opts.latency,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..Default::default()
    };
    if opts.scenario == "churn" {
        return churn_report(&rt, &opts, &w, &dopts);
    }
    if opts.history {
        return history_report(&rt, &w, &dopts);
    }
    if opts.compact {
        return compact_report(&rt, &opts, &w, &dopts);
    }
    eprintln!(
        "watchbench: scenario {}, {} watchers, {} events, seed {}",
        opts.scenario,
        w.watcher_count(),
        opts.events,
        opts.seed
    );
    match opts.only.as_deref() {
        None => {}
        Some("reference") => {
            run::<Reference>(&rt, &w, &dopts, "alone");
            return ExitCode::SUCCESS;
        }
        Some("watchtrie") => {
            run::<Watchtrie>(&rt, &w, &dopts, "alone");
            return ExitCode::SUCCESS;
        }
        Some("watchtrie-history") => {
            run::<WatchtrieHistory>(&rt, &w, &dopts, "alone");
            return ExitCode::SUCCESS;
        }
        Some("watchtrie-compact") => {
            run::<WatchtrieCompact>(&rt, &w, &dopts, "alone");
            return ExitCode::SUCCESS;
        }
        Some("watchtrie-grouped") => {
            run::<WatchtrieGrouped>(&rt, &w, &dopts, "alone");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "watchbench: unknown engine '{other}' (reference, watchtrie, watchtrie-history, \
                 watchtrie-compact, watchtrie-grouped)"
            );
            return ExitCode::from(2);
        }
    }
    let _ = run::<Reference>(&rt, &w, &dopts, "warm-up");
    let r1 = run::<Reference>(&rt, &w, &dopts, "run 1");
    let t1 = run::<Watchtrie>(&rt, &w, &dopts, "run 2");
    let t2 = run::<Watchtrie>(&rt, &w, &dopts, "run 3");
    let r2 = run::<Reference>(&rt, &w, &dopts, "run 4");
    if r1.deliveries != t1.deliveries {
        eprintln!(
            "watchbench: engines disagree: reference delivered {}, watchtrie {}",
            r1.deliveries, t1.deliveries
        );
        return ExitCode::FAILURE;
    }
    eprint!("  floor     (receive + deliver, lookups precomputed)… ");
    let floor =
        measure::dispatch_floor(&rt, &w, &dopts).min(measure::dispatch_floor(&rt, &w, &dopts));
    eprintln!("{floor:.0} ns/event");
    let (reference, ours) = (best(r1, r2), best(t1, t2));
    if opts.json {
        print_json(&opts, &w, &reference, &ours, floor);
    } else {
        print_table(&opts, &w, &reference, &ours, floor);
    }
    if let Some(path) = &opts.svg {
        drop(w);
        return sweep_report(&rt, &opts, path);
    }
    ExitCode::SUCCESS
}

/// `--history`: what keeping a history costs dispatch (alternated runs, best of two each),
/// and what it holds in memory against the events' own bytes.
fn history_report(rt: &tokio::runtime::Runtime, w: &Workload, dopts: &DispatchOptions) -> ExitCode {
    eprintln!(
        "watchbench: history on vs off, {} watchers",
        w.watcher_count()
    );
    let _ = run::<Watchtrie>(rt, w, dopts, "warm-up");
    let off1 = run::<Watchtrie>(rt, w, dopts, "off 1");
    let on1 = run::<WatchtrieHistory>(rt, w, dopts, "on 1");
    let on2 = run::<WatchtrieHistory>(rt, w, dopts, "on 2");
    let off2 = run::<Watchtrie>(rt, w, dopts, "off 2");
    if off1.deliveries != on1.deliveries {
        eprintln!("watchbench: history changed the deliveries");
        return ExitCode::FAILURE;
    }
    let (off, on) = (
        off1.dispatch_ns.min(off2.dispatch_ns),
        on1.dispatch_ns.min(on2.dispatch_ns),
    );
    println!(
        "history off: {off:.0} ns/event; on: {on:.0} ns/event; on / off = {:.3}",
        on / off
    );
    // The same comparison with both in one pass, block by block (noise on both alike).
    const BLOCK: usize = 1_000;
    let (off, on, median, same) = measure::history_paired(w, dopts.buffer, BLOCK);
    if !same {
        eprintln!("watchbench: history changed the deliveries (paired)");
        return ExitCode::FAILURE;
    }
    println!(
        "history paired (inline, blocks of {BLOCK} alternated): off {off:.0} ns/event; on \
         {on:.0} ns/event; on / off = {:.3} (median of the blocks' ratios {median:.3})",
        on / off
    );
    for value_len in [1usize, 100, 1000] {
        let (payload, heap, counted) = measure::history_memory(&w.events, value_len);
        println!(
            "history memory, {value_len}-byte values, {payload} bytes of events: {heap} heap \
             bytes by its own count ({:.3}x), {counted} by the allocator ({:.3}x)",
            heap as f64 / payload as f64,
            counted as f64 / payload as f64
        );
    }
    ExitCode::SUCCESS
}

/// `--compact`: the scenario with the reference, watchtrie's drop-in watchers, its compact
/// watchers and its grouped ones (watchers of a repeated target share a group), in the
/// order reference, drop-in, compact, grouped, grouped, compact, drop-in, reference after a
/// warm-up; the best of two of each.
fn compact_report(
    rt: &tokio::runtime::Runtime,
    opts: &Options,
    w: &Workload,
    dopts: &DispatchOptions,
) -> ExitCode {
    if !matches!(opts.scenario.as_str(), "mixed" | "miss" | "deep") {
        eprintln!("watchbench: --compact runs mixed, miss, deep and fanout");
        return ExitCode::from(2);
    }
    eprintln!(
        "watchbench: scenario {}, {} watchers, {} events, seed {}: reference, drop-in, compact",
        opts.scenario,
        w.watcher_count(),
        opts.events,
        opts.seed
    );
    // The warm-up is the engine with the largest heap, so that no measured run grows it.
    let _ = run::<Reference>(rt, w, dopts, "warm-up");
    let r1 = run::<Reference>(rt, w, dopts, "run 1");
    let d1 = run::<Watchtrie>(rt, w, dopts, "run 2");
    let c1 = run::<WatchtrieCompact>(rt, w, dopts, "run 3");
    let g1 = run::<WatchtrieGrouped>(rt, w, dopts, "run 4");
    let g2 = run::<WatchtrieGrouped>(rt, w, dopts, "run 5");
    let c2 = run::<WatchtrieCompact>(rt, w, dopts, "run 6");
    let d2 = run::<Watchtrie>(rt, w, dopts, "run 7");
    let r2 = run::<Reference>(rt, w, dopts, "run 8");
    if r1.deliveries != d1.deliveries || r1.deliveries != c1.deliveries {
        eprintln!(
            "watchbench: engines disagree: reference delivered {}, drop-in {}, compact {}",
            r1.deliveries, d1.deliveries, c1.deliveries
        );
        return ExitCode::FAILURE;
    }
    // Grouped members see lag when they read, so after an overflow their queued counts
    // differ: they are reported, not required to agree.
    let rows = [
        ("reference", best(r1, r2)),
        ("watchtrie drop-in", best(d1, d2)),
        ("watchtrie compact", best(c1, c2)),
        ("watchtrie grouped", best(g1, g2)),
    ];
    let reference_ns = rows[0].1.dispatch_ns;
    if opts.json {
        let items: Vec<String> = rows
            .iter()
            .map(|(name, r)| {
                format!(
                    "{{\"engine\":\"{name}\",\"dispatch_ns\":{:.1},\"register_ns\":{:.1},\"bytes_per_watcher\":{:.1}}}",
                    r.dispatch_ns,
                    r.register_ns,
                    r.bytes_per_watcher.unwrap_or(f64::NAN)
                )
            })
            .collect();
        println!(
            "{{\"scenario\":\"{}\",\"watchers\":{},\"events\":{},\"results\":[{}]}}",
            opts.scenario,
            w.watcher_count(),
            opts.events,
            items.join(",")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "scenario {}: {} watchers, {} events; best of two alternated runs each",
        opts.scenario,
        w.watcher_count(),
        opts.events
    );
    println!("machine: {}", cpu_model());
    println!();
    println!(
        "{:<20} {:>10} {:>14} {:>12} {:>16} {:>12}",
        "engine", "ns/event", "ref/engine", "ns/register", "heap B/watcher", "queued"
    );
    for (name, r) in &rows {
        println!(
            "{name:<20} {:>10.0} {:>13.2}× {:>12.0} {:>16.0} {:>12}",
            r.dispatch_ns,
            reference_ns / r.dispatch_ns,
            r.register_ns,
            r.bytes_per_watcher.unwrap_or(f64::NAN),
            r.deliveries
        );
    }
    ExitCode::SUCCESS
}

/// `--svg`: the scenario at 1K, 10K, 100K and `--watchers`, throughput only, best of two
/// alternated runs per size; prints a table and writes the plot.
fn sweep_report(rt: &tokio::runtime::Runtime, opts: &Options, path: &str) -> ExitCode {
    let top = opts
        .watchers
        .unwrap_or_else(|| default_watchers(&opts.scenario));
    let dopts = DispatchOptions {
        latency_events: 0,
        measure_memory: false,
        ..Default::default()
    };
    let mut points = Vec::new();
    for n in sizes_up_to(&[1_000, 10_000, 100_000], top) {
        let w = match workload_of(&opts.scenario, n, opts) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("watchbench: {e}");
                return ExitCode::from(2);
            }
        };
        let r1 = run::<Reference>(rt, &w, &dopts, "sweep");
        let t1 = run::<Watchtrie>(rt, &w, &dopts, "sweep");
        let t2 = run::<Watchtrie>(rt, &w, &dopts, "sweep");
        let r2 = run::<Reference>(rt, &w, &dopts, "sweep");
        let (r, t) = (
            r1.dispatch_ns.min(r2.dispatch_ns),
            t1.dispatch_ns.min(t2.dispatch_ns),
        );
        let floor =
            measure::dispatch_floor(rt, &w, &dopts).min(measure::dispatch_floor(rt, &w, &dopts));
        points.push((w.watcher_count(), r, t, floor));
    }
    println!();
    println!(
        "scenario {} by watcher count (events/s and floor: best of two runs each)",
        opts.scenario
    );
    println!(
        "{:>10} {:>12} {:>12} {:>14} {:>16} {:>12} {:>18}",
        "watchers",
        "reference",
        "watchtrie",
        "ref/watchtrie",
        "watchtrie ns/1K",
        "floor ns",
        "above floor ns/1K"
    );
    let (base, base_above) = (points[0].2, (points[0].2 - points[0].3).max(1.0));
    for &(n, r, t, floor) in &points {
        println!(
            "{n:>10} {:>12.0} {:>12.0} {:>13.2}× {:>15.2}× {:>12.0} {:>17.2}×",
            1e9 / r,
            1e9 / t,
            r / t,
            t / base,
            floor,
            (t - floor).max(1.0) / base_above
        );
    }
    let title = format!(
        "watchbench {}: events/s against watchers ({})",
        opts.scenario,
        cpu_model()
    );
    let series = [
        (
            "d-engine-core 0.2.4",
            "#d62728",
            points
                .iter()
                .map(|&(n, r, _, _)| (n as f64, 1e9 / r))
                .collect::<Vec<_>>(),
        ),
        (
            "watchtrie",
            "#1f77b4",
            points
                .iter()
                .map(|&(n, _, t, _)| (n as f64, 1e9 / t))
                .collect(),
        ),
    ];
    match std::fs::write(
        path,
        watchbench::svg::log_x_plot(&title, "watchers", "events/s", &series),
    ) {
        Ok(()) => {
            eprintln!("watchbench: plot written to {path}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("watchbench: cannot write {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `churn`: paced latency quiet and under registration churn, both engines, best of two
/// alternated runs (by p99).
fn churn_report(
    rt: &tokio::runtime::Runtime,
    opts: &Options,
    w: &Workload,
    dopts: &DispatchOptions,
) -> ExitCode {
    if dopts.latency_events == 0 {
        eprintln!("watchbench: churn measures latency: --latency must be at least 1");
        return ExitCode::from(2);
    }
    let one = |engine: &str, f: &dyn Fn() -> measure::ChurnRun| {
        eprint!("  churn     {engine:<10} ");
        let r = f();
        eprintln!(
            "p99 quiet {:.0} µs, under churn {:.0} µs, {:.0} churn ops/s",
            r.quiet.p99 / 1e3,
            r.churned.p99 / 1e3,
            r.churn_ops_per_s
        );
        r
    };
    let reference = || measure::churn_run::<Reference>(rt, w, dopts);
    let ours = || measure::churn_run::<Watchtrie>(rt, w, dopts);
    // A discarded warm-up, so that the first measured run does not pay the heap's growth.
    let _ = one("(warm-up)", &reference);
    let r1 = one("reference", &reference);
    let t1 = one("watchtrie", &ours);
    let t2 = one("watchtrie", &ours);
    let r2 = one("reference", &reference);
    let pick = |a: measure::ChurnRun, b: measure::ChurnRun| {
        if a.churned.p99 <= b.churned.p99 {
            a
        } else {
            b
        }
    };
    let (r, t) = (pick(r1, r2), pick(t1, t2));
    if opts.json {
        let p = |x: &measure::Percentiles| {
            format!(
                "{{\"p50\":{:.0},\"p99\":{:.0},\"p999\":{:.0}}}",
                x.p50, x.p99, x.p999
            )
        };
        let e = |x: &measure::ChurnRun| {
            format!(
                "{{\"quiet_ns\":{},\"busy_ns\":{},\"churn_ns\":{},\"churn_ops_per_s\":{:.0}}}",
                p(&x.quiet),
                p(&x.busy),
                p(&x.churned),
                x.churn_ops_per_s
            )
        };
        println!(
            "{{\"scenario\":\"churn\",\"watchers\":{},\"reference\":{},\"watchtrie\":{}}}",
            w.watcher_count(),
            e(&r),
            e(&t)
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "scenario churn: {} watchers (mixed keys), {} paced events at {}/s per phase; a second thread registers and drops watchers in a loop during the churn phase",
        w.watcher_count(), dopts.latency_events, dopts.latency_rate
    );
    println!("machine: {}", cpu_model());
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>14}",
        "metric", "reference", "watchtrie", "ref/watchtrie"
    );
    let rows: [(&str, f64, f64); 10] = [
        ("quiet p50 µs", r.quiet.p50 / 1e3, t.quiet.p50 / 1e3),
        ("quiet p99 µs", r.quiet.p99 / 1e3, t.quiet.p99 / 1e3),
        ("quiet p99.9 µs", r.quiet.p999 / 1e3, t.quiet.p999 / 1e3),
        ("busy CPU p50 µs", r.busy.p50 / 1e3, t.busy.p50 / 1e3),
        ("busy CPU p99 µs", r.busy.p99 / 1e3, t.busy.p99 / 1e3),
        ("busy CPU p99.9 µs", r.busy.p999 / 1e3, t.busy.p999 / 1e3),
        ("churn p50 µs", r.churned.p50 / 1e3, t.churned.p50 / 1e3),
        ("churn p99 µs", r.churned.p99 / 1e3, t.churned.p99 / 1e3),
        ("churn p99.9 µs", r.churned.p999 / 1e3, t.churned.p999 / 1e3),
        (
            "churn ops/s (higher better)",
            r.churn_ops_per_s,
            t.churn_ops_per_s,
        ),
    ];
    for (i, (name, rv, tv)) in rows.iter().enumerate() {
        let ratio = if i == 9 { tv / rv } else { rv / tv };
        println!("{name:<28} {rv:>12.1} {tv:>12.1} {ratio:>13.2}×");
    }
    println!(
        "{:<28} {:>12.2} {:>12.2}",
        "churn p99 / quiet p99",
        r.churned.p99 / r.quiet.p99,
        t.churned.p99 / t.quiet.p99
    );
    println!(
        "{:<28} {:>12.2} {:>12.2}",
        "churn p99 / busy CPU p99",
        r.churned.p99 / r.busy.p99,
        t.churned.p99 / t.busy.p99
    );
    ExitCode::SUCCESS
}

/// `heartbeat`: how long one heartbeat sweep holds up events and registrations, for the
/// reference, watchtrie's default (blocking) sweep and its incremental opt-in.
fn heartbeat_report(rt: &tokio::runtime::Runtime, opts: &Options, w: &Workload) -> ExitCode {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    eprintln!(
        "watchbench: scenario heartbeat, {} watchers, heartbeat every {} ms",
        w.watcher_count(),
        measure::HEARTBEAT_MS
    );
    let one = |name: &str, f: &dyn Fn() -> measure::HeartbeatRun| {
        eprint!("  heartbeat {name:<24} ");
        let r = f();
        eprintln!(
            "event max {:.1} ms, registration max {:.1} ms, {} watchers swept",
            r.event_max_ns as f64 / 1e6,
            r.registration_max_ns as f64 / 1e6,
            r.swept
        );
        r
    };
    let _ = one("(warm-up, discarded)", &|| {
        measure::heartbeat_run::<Reference>(rt, w, false, progress)
    });
    let runs = [
        one("reference", &|| {
            measure::heartbeat_run::<Reference>(rt, w, false, progress)
        }),
        one("watchtrie (default)", &|| {
            measure::heartbeat_run::<Watchtrie>(rt, w, false, progress)
        }),
        one("watchtrie (incremental)", &|| {
            measure::heartbeat_run::<Watchtrie>(rt, w, true, progress)
        }),
    ];
    let names = ["reference", "watchtrie default", "watchtrie incremental"];
    if opts.json {
        let e = |r: &measure::HeartbeatRun| {
            format!(
                "{{\"event_p50_ns\":{:.0},\"event_p99_ns\":{:.0},\"event_p999_ns\":{:.0},\"event_max_ns\":{},\"registration_p50_ns\":{:.0},\"registration_p99_ns\":{:.0},\"registration_max_ns\":{}}}",
                r.events.p50, r.events.p99, r.events.p999, r.event_max_ns,
                r.registrations.p50, r.registrations.p99, r.registration_max_ns
            )
        };
        println!(
            "{{\"scenario\":\"heartbeat\",\"watchers\":{},\"reference\":{},\"watchtrie\":{},\"watchtrie_incremental\":{}}}",
            w.watcher_count(),
            e(&runs[0]),
            e(&runs[1]),
            e(&runs[2])
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "scenario heartbeat: {} watchers (mixed keys), one heartbeat sweep inside a {} ms window; a probe event every 250 µs, a registration every 1 ms (another thread)",
        w.watcher_count(),
        measure::HEARTBEAT_MS * 8 / 5
    );
    println!("machine: {}", cpu_model());
    println!();
    println!(
        "{:<26} {:>12} {:>18} {:>22}",
        "metric (ms)", names[0], names[1], names[2]
    );
    let ms = |ns: f64| ns / 1e6;
    let rows: [(&str, [f64; 3]); 6] = [
        ("event latency p50", runs.map(|r| ms(r.events.p50))),
        ("event latency p99.9", runs.map(|r| ms(r.events.p999))),
        ("event latency max", runs.map(|r| ms(r.event_max_ns as f64))),
        ("registration p50", runs.map(|r| ms(r.registrations.p50))),
        ("registration p99", runs.map(|r| ms(r.registrations.p99))),
        (
            "registration max",
            runs.map(|r| ms(r.registration_max_ns as f64)),
        ),
    ];
    for (name, v) in rows {
        println!("{name:<26} {:>12.3} {:>18.3} {:>22.3}", v[0], v[1], v[2]);
    }
    ExitCode::SUCCESS
}

/// `scale`: compact watchers at `--watchers` (10M by default) next to 1M compact and 1M
/// drop-in ones: registration, memory all-in, dispatch.
fn scale_report(rt: &tokio::runtime::Runtime, opts: &Options, top: usize) -> ExitCode {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // In a child process: one run, printed as key=value for the parent.
    if let Some(kind) = opts.only.as_deref() {
        let compact = match kind {
            "compact" => true,
            "drop-in" => false,
            other => {
                eprintln!("watchbench: unknown channel kind '{other}' (compact, drop-in)");
                return ExitCode::from(2);
            }
        };
        // 1% prefixes: the mixed workload's prefix space holds about half a million.
        let w = workload::mixed(top - top / 100, top / 100, opts.events, opts.seed);
        let r = measure::scale_run(rt, &w, compact, progress);
        println!(
            "watchers={} register_ns={:.1} heap_per_watcher={:.1} resident_per_watcher={:.1} dispatch_ns={:.1} deliveries={}",
            r.watchers,
            r.register_ns,
            r.heap_per_watcher.unwrap_or(f64::NAN),
            r.resident_per_watcher,
            r.dispatch_ns,
            r.deliveries
        );
        return ExitCode::SUCCESS;
    }
    // Each run in a process of its own, so that resident growth is its own.
    let one = |n: usize, kind: &str| -> Result<measure::ScaleRun, String> {
        eprintln!("  scale     {kind:<8} {n:>9} watchers, in a process of its own…");
        let out = run_child(opts, "scale", kind, n, opts.events)?;
        Ok(measure::ScaleRun {
            watchers: out.field("watchers")? as usize,
            register_ns: out.field("register_ns")?,
            heap_per_watcher: Some(out.field("heap_per_watcher")?),
            resident_per_watcher: out.field("resident_per_watcher")?,
            dispatch_ns: out.field("dispatch_ns")?,
            deliveries: out.field("deliveries")? as u64,
        })
    };
    // Per-delivery cost, alternated (compact, drop-in, drop-in, compact, …: neither always
    // first on fresh memory), best of three each.
    eprint!("  scale     ns/delivery, 100K watchers on one key, compact vs drop-in… ");
    let (mut per_compact, mut per_drop_in) = (f64::MAX, f64::MAX);
    for round in 0..3 {
        for compact in [round % 2 == 0, round % 2 != 0] {
            let ns = measure::delivery_cost(compact, 100_000, 10);
            let best = if compact {
                &mut per_compact
            } else {
                &mut per_drop_in
            };
            *best = best.min(ns);
        }
    }
    eprintln!("{per_compact:.1} vs {per_drop_in:.1}");
    let small = top.min(1_000_000);
    let runs = match (
        one(top, "compact"),
        one(small, "compact"),
        one(small, "drop-in"),
    ) {
        (Ok(a), Ok(b), Ok(c)) => [a, b, c],
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("watchbench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if opts.json {
        let e = |r: &measure::ScaleRun| {
            format!(
                "{{\"watchers\":{},\"register_ns\":{:.0},\"heap_per_watcher\":{:.0},\"resident_per_watcher\":{:.0},\"dispatch_ns\":{:.0},\"deliveries\":{}}}",
                r.watchers, r.register_ns, r.heap_per_watcher.unwrap_or(f64::NAN),
                r.resident_per_watcher, r.dispatch_ns, r.deliveries
            )
        };
        println!(
            "{{\"scenario\":\"scale\",\"compact_top\":{},\"compact_1m\":{},\"drop_in_1m\":{},\"delivery_ns\":{{\"compact\":{per_compact:.1},\"drop_in\":{per_drop_in:.1}}}}}",
            e(&runs[0]),
            e(&runs[1]),
            e(&runs[2])
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "scenario scale: watchtrie alone, mixed keys (1% prefixes), {} events per run through run(), each run in its own process",
        opts.events
    );
    println!("machine: {}", cpu_model());
    println!();
    println!(
        "{:<30} {:>16} {:>16} {:>16}",
        "metric",
        format!("compact {}", short(top)),
        format!("compact {}", short(small)),
        format!("drop-in {}", short(small))
    );
    let rows: [(&str, [f64; 3]); 5] = [
        ("register ns/op", runs.map(|r| r.register_ns)),
        (
            "heap bytes/watcher (all-in)",
            runs.map(|r| r.heap_per_watcher.unwrap_or(f64::NAN)),
        ),
        (
            "resident bytes/watcher",
            runs.map(|r| r.resident_per_watcher),
        ),
        ("dispatch ns/event", runs.map(|r| r.dispatch_ns)),
        ("deliveries", runs.map(|r| r.deliveries as f64)),
    ];
    for (name, v) in rows {
        println!("{name:<30} {:>16.0} {:>16.0} {:>16.0}", v[0], v[1], v[2]);
    }
    println!(
        "{:<30} {:>16.2}",
        format!("ns/event {} / {}", short(top), short(small)),
        runs[0].dispatch_ns / runs[1].dispatch_ns
    );
    println!(
        "{:<30} {:>16.2}",
        format!("ns/event compact / drop-in {}", short(small)),
        runs[1].dispatch_ns / runs[2].dispatch_ns
    );
    println!();
    println!("ns per delivery, 100K watchers on one key, bursts of 8 then drained (best of 3):");
    println!(
        "{:<30} {:>16.1} {:>16.1} {:>16.2}",
        "compact / drop-in / ratio",
        per_compact,
        per_drop_in,
        per_compact / per_drop_in
    );
    match &opts.svg {
        Some(path) => memory_plot(opts, top, &runs, path, &one),
        None => ExitCode::SUCCESS,
    }
}

/// `scale --svg`: heap bytes per watcher against watcher count, compact and drop-in
/// watchtrie (scale runs) and the reference (`memory` runs, each in its own process).
fn memory_plot(
    opts: &Options,
    top: usize,
    runs: &[measure::ScaleRun; 3],
    path: &str,
    one: &dyn Fn(usize, &str) -> Result<measure::ScaleRun, String>,
) -> ExitCode {
    let small = top.min(1_000_000);
    let sizes: Vec<usize> = [10_000, 100_000]
        .into_iter()
        .filter(|&n| n < small)
        .collect();
    let mut compact = Vec::new();
    let mut drop_in = Vec::new();
    let mut reference = Vec::new();
    let reference_heap = |n: usize| -> Option<f64> {
        eprintln!("  memory    reference {n:>9} watchers, in a process of its own…");
        let out = run_child(opts, "memory", "reference", n, 1);
        out.and_then(|out| out.field("heap_per_watcher")).ok()
    };
    for &n in sizes.iter().chain([small].iter()) {
        let (c, d) = if n == small {
            (runs[1], runs[2])
        } else {
            match (one(n, "compact"), one(n, "drop-in")) {
                (Ok(c), Ok(d)) => (c, d),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("watchbench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        };
        compact.push((n as f64, c.heap_per_watcher.unwrap_or(f64::NAN)));
        drop_in.push((n as f64, d.heap_per_watcher.unwrap_or(f64::NAN)));
        if let Some(r) = reference_heap(n) {
            reference.push((n as f64, r));
        }
    }
    if top > small {
        compact.push((top as f64, runs[0].heap_per_watcher.unwrap_or(f64::NAN)));
    }
    let series: Vec<watchbench::svg::Series<'_>> = vec![
        ("reference", "#d62728", reference),
        ("watchtrie drop-in", "#1f77b4", drop_in),
        ("watchtrie compact", "#2ca02c", compact),
    ];
    let title = "heap bytes per watcher, all-in (index, channels, handles)";
    match std::fs::write(
        path,
        watchbench::svg::log_x_plot(title, "watchers", "bytes per watcher", &series),
    ) {
        Ok(()) => {
            eprintln!("watchbench: plot written to {path}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("watchbench: cannot write {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a child run (this program again, with `--only`) printed: `key=value` fields.
struct ChildOutput {
    label: String,
    text: String,
    status: std::process::ExitStatus,
}

impl ChildOutput {
    /// The number printed as `name=…`.
    fn field(&self, name: &str) -> Result<f64, String> {
        self.text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .ok_or(format!(
                "{}: no {name} in its output ({})",
                self.label, self.status
            ))
    }
}

/// Runs `--scenario scenario --only only` with `watchers` and `events` in a process of its
/// own (its progress shown on this one's stderr), so that its memory growth is its own.
fn run_child(
    opts: &Options,
    scenario: &str,
    only: &str,
    watchers: usize,
    events: usize,
) -> Result<ChildOutput, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let out = std::process::Command::new(&exe)
        .args(["--scenario", scenario, "--only", only])
        .args(["--watchers", &watchers.to_string()])
        .args(["--seed", &opts.seed.to_string()])
        .args(["--events", &events.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    Ok(ChildOutput {
        label: format!("{only} {watchers}"),
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
        status: out.status,
    })
}

/// 10000000 → "10M", 1000 → "1K".
fn short(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}K", n / 1_000),
        n => n.to_string(),
    }
}

/// `memory`: each engine registers the workload in a process of its own (this program run
/// again with `--only`), and reports resident and heap growth per watcher.
fn memory_report(rt: &tokio::runtime::Runtime, opts: &Options, w: &Workload) -> ExitCode {
    if let Some(engine) = opts.only.as_deref() {
        let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let run = match engine {
            "reference" => measure::memory_run::<Reference>(rt, w, progress),
            "watchtrie" => measure::memory_run::<Watchtrie>(rt, w, progress),
            other => {
                eprintln!("watchbench: unknown engine '{other}' (reference, watchtrie)");
                return ExitCode::from(2);
            }
        };
        println!(
            "resident_per_watcher={:.1} heap_per_watcher={:.1}",
            run.resident_per_watcher,
            run.heap_per_watcher.unwrap_or(f64::NAN)
        );
        return ExitCode::SUCCESS;
    }
    let measure_alone = |engine: &str| -> Result<(f64, f64), String> {
        eprintln!(
            "  memory    {engine:<10} registering {} watchers in a process of its own…",
            w.watcher_count()
        );
        let out = run_child(opts, "memory", engine, w.watcher_count(), 1)?;
        Ok((
            out.field("resident_per_watcher")?,
            out.field("heap_per_watcher")?,
        ))
    };
    let (r, t) = match (measure_alone("reference"), measure_alone("watchtrie")) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("watchbench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if opts.json {
        println!(
            "{{\"scenario\":\"memory\",\"watchers\":{},\"reference\":{{\"resident\":{:.1},\"heap\":{:.1}}},\"watchtrie\":{{\"resident\":{:.1},\"heap\":{:.1}}}}}",
            w.watcher_count(), r.0, r.1, t.0, t.1
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "scenario memory: bytes per watcher, all-in (channels, index, handles), {} watchers ({} exact, {} prefix), each engine in its own process",
        w.watcher_count(), w.exact.len(), w.prefixes.len()
    );
    println!("machine: {}", cpu_model());
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>14}",
        "metric", "reference", "watchtrie", "ref/watchtrie"
    );
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>13.2}×",
        "resident bytes/watcher",
        r.0,
        t.0,
        r.0 / t.0
    );
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>13.2}×",
        "heap bytes/watcher",
        r.1,
        t.1,
        r.1 / t.1
    );
    ExitCode::SUCCESS
}

struct Row {
    name: &'static str,
    reference: Option<f64>,
    watchtrie: Option<f64>,
    /// Higher is better for this metric (the ratio is then inverted).
    higher_better: bool,
}

fn rows(r: &DispatchRun, t: &DispatchRun, floor: f64) -> Vec<Row> {
    let lat = |d: &DispatchRun, f: fn(&measure::Percentiles) -> f64| {
        d.latency.as_ref().map(|p| f(p) / 1000.0)
    };
    vec![
        Row {
            name: "events/s (run)",
            reference: Some(1e9 / r.dispatch_ns),
            watchtrie: Some(1e9 / t.dispatch_ns),
            higher_better: true,
        },
        Row {
            name: "dispatch ns/event (run)",
            reference: Some(r.dispatch_ns),
            watchtrie: Some(t.dispatch_ns),
            higher_better: false,
        },
        Row {
            name: "floor ns/event (no lookup)",
            reference: Some(floor),
            watchtrie: Some(floor),
            higher_better: false,
        },
        Row {
            name: "above floor ns/event (run)",
            reference: Some((r.dispatch_ns - floor).max(1.0)),
            watchtrie: Some((t.dispatch_ns - floor).max(1.0)),
            higher_better: false,
        },
        Row {
            name: "dispatch ns/event (inline)",
            reference: None,
            watchtrie: t.inline_ns,
            higher_better: false,
        },
        Row {
            name: "latency p50 µs",
            reference: lat(r, |p| p.p50),
            watchtrie: lat(t, |p| p.p50),
            higher_better: false,
        },
        Row {
            name: "latency p99 µs",
            reference: lat(r, |p| p.p99),
            watchtrie: lat(t, |p| p.p99),
            higher_better: false,
        },
        Row {
            name: "latency p99.9 µs",
            reference: lat(r, |p| p.p999),
            watchtrie: lat(t, |p| p.p999),
            higher_better: false,
        },
        Row {
            name: "register ns/op",
            reference: Some(r.register_ns),
            watchtrie: Some(t.register_ns),
            higher_better: false,
        },
        Row {
            name: "heap bytes/watcher",
            reference: r.bytes_per_watcher,
            watchtrie: t.bytes_per_watcher,
            higher_better: false,
        },
    ]
}

fn ratio(row: &Row) -> Option<f64> {
    let (r, t) = (row.reference?, row.watchtrie?);
    Some(if row.higher_better { t / r } else { r / t })
}

fn print_table(opts: &Options, w: &Workload, r: &DispatchRun, t: &DispatchRun, floor: f64) {
    println!(
        "scenario {}: {} watchers ({} exact, {} prefix), {} events, seed {}",
        opts.scenario,
        w.watcher_count(),
        w.exact.len(),
        w.prefixes.len(),
        r.events,
        opts.seed
    );
    println!(
        "machine: {}, {} cores; {} deliveries per run",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        r.deliveries
    );
    println!();
    println!(
        "{:<28} {:>14} {:>14} {:>14}",
        "metric", "reference", "watchtrie", "ref/watchtrie"
    );
    let cell = |v: Option<f64>| {
        v.map_or("-".to_string(), |v| {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
    };
    for row in rows(r, t, floor) {
        println!(
            "{:<28} {:>14} {:>14} {:>14}",
            row.name,
            cell(row.reference),
            cell(row.watchtrie),
            ratio(&row).map_or("-".into(), |x| format!("{x:.2}×"))
        );
    }
    println!();
    println!("ratio: reference cost / watchtrie cost (for events/s, watchtrie / reference); above 1 = watchtrie better");
    println!("floor: the same broadcast loop and deliveries into plain channels, with each event's receivers known in advance");
}

fn print_json(opts: &Options, w: &Workload, r: &DispatchRun, t: &DispatchRun, floor: f64) {
    let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
    let metrics: Vec<String> = rows(r, t, floor)
        .iter()
        .map(|row| {
            format!(
                "{{\"metric\":\"{}\",\"reference\":{},\"watchtrie\":{},\"ratio\":{}}}",
                row.name,
                num(row.reference),
                num(row.watchtrie),
                num(ratio(row))
            )
        })
        .collect();
    println!(
        "{{\"scenario\":\"{}\",\"watchers\":{},\"exact\":{},\"prefixes\":{},\"events\":{},\"seed\":{},\"deliveries\":{},\"metrics\":[{}]}}",
        opts.scenario,
        w.watcher_count(),
        w.exact.len(),
        w.prefixes.len(),
        r.events,
        opts.seed,
        r.deliveries,
        metrics.join(",")
    );
}

/// The standard sizes below `top`, then `top` itself.
fn sizes_up_to(standard: &[usize], top: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = standard.iter().copied().filter(|&n| n < top).collect();
    sizes.push(top);
    sizes
}

/// `register`: per-operation cost of register + drop in the four shapes, at 1K, 100K and
/// `--watchers` (default 1M) already registered, both engines, best of two alternated runs.
fn register_report(rt: &tokio::runtime::Runtime, opts: &Options) -> ExitCode {
    const OPS: usize = 20_000;
    let top = opts.watchers.unwrap_or(1_000_000);
    let sizes = sizes_up_to(&[1_000, 100_000], top);
    // A discarded warm-up at the largest size, so that no measured cell pays the heap's
    // first growth.
    let largest = sizes.last().copied().unwrap_or(top);
    eprintln!("  warm-up: reference, {largest} watchers (discarded)");
    let _ = measure::register_run::<Reference>(rt, measure::Shape::ALL[0], largest, OPS);
    let mut rows = Vec::new();
    for shape in measure::Shape::ALL {
        let mut cells = Vec::new();
        for &size in &sizes {
            eprint!("  {:<20} at {:>9}: ", shape.name(), size);
            let r1 = measure::register_run::<Reference>(rt, shape, size, OPS);
            let t1 = measure::register_run::<Watchtrie>(rt, shape, size, OPS);
            let t2 = measure::register_run::<Watchtrie>(rt, shape, size, OPS);
            let r2 = measure::register_run::<Reference>(rt, shape, size, OPS);
            let (r, t) = (r1.min(r2), t1.min(t2));
            eprintln!("reference {r:.0} ns/op, watchtrie {t:.0} ns/op");
            cells.push((size, r, t));
        }
        rows.push((shape, cells));
    }
    if opts.json {
        let items: Vec<String> = rows
            .iter()
            .flat_map(|(shape, cells)| {
                cells.iter().map(move |(size, r, t)| {
                    format!("{{\"shape\":\"{}\",\"size\":{size},\"reference_ns\":{r:.1},\"watchtrie_ns\":{t:.1}}}", shape.name())
                })
            })
            .collect();
        println!(
            "{{\"scenario\":\"register\",\"ops\":{OPS},\"results\":[{}]}}",
            items.join(",")
        );
        return ExitCode::SUCCESS;
    }
    println!("scenario register: ns per register + drop ({OPS} ops), with N watchers of the shape already registered");
    println!("machine: {}", cpu_model());
    println!();
    println!(
        "{:<22} {:>9} {:>12} {:>12} {:>14} {:>16}",
        "shape", "N", "reference", "watchtrie", "ref/watchtrie", "watchtrie N/1K"
    );
    for (shape, cells) in &rows {
        let base = cells[0].2;
        for (size, r, t) in cells {
            println!(
                "{:<22} {:>9} {:>12.0} {:>12.0} {:>13.2}× {:>15.2}×",
                shape.name(),
                size,
                r,
                t,
                r / t,
                t / base
            );
        }
    }
    ExitCode::SUCCESS
}

/// Specs per `watch_many` call in `fill`.
const FILL_BATCH: usize = 1024;

/// Watchers per block in `fill`'s paired run.
const FILL_PAIRED_BLOCK: usize = 1000;

/// `fill`: a million watchers (mixed keys) registered into an empty registry by one thread
/// and by four at once, then dropped. After a discarded warm-up, each engine runs twice in
/// the order reference, watchtrie, watchtrie, reference (then compact watchtrie and the
/// floor, plain channels alone, twice each; then watchtrie through `watch_many`, twice); the
/// best of each is kept. Last, one thread fills a registry of each engine at once, in blocks
/// alternated (`measure::fill_paired`): the noise that moves whole runs falls on both.
/// `--only ENGINE` runs one alone (`FILL_THREADS` threads, default 1).
fn fill_report(rt: &tokio::runtime::Runtime, w: &Workload, opts: &Options) -> ExitCode {
    use measure::FillRun;
    let n = w.watcher_count();
    let threads_env = std::env::var("FILL_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    if let Some(engine) = opts.only.as_deref() {
        let threads = threads_env.unwrap_or(1);
        if engine == "paired" {
            // The paired passes alone (for a profile of the steady figure).
            for pass in ["first", "second"] {
                let run = measure::fill_paired::<Reference, Watchtrie>(rt, w, FILL_PAIRED_BLOCK);
                println!(
                    "paired ({pass} pass): reference {:.0} ns, watchtrie {:.0} ns per watcher; median block {:.2}×",
                    run.first_ns, run.second_ns, run.median_ratio
                );
            }
            return ExitCode::SUCCESS;
        }
        let run = match engine {
            "reference" => measure::fill_run::<Reference>(rt, w, threads),
            "watchtrie" => measure::fill_run::<Watchtrie>(rt, w, threads),
            "watchtrie-compact" => measure::fill_run::<WatchtrieCompact>(rt, w, threads),
            "floor" => measure::fill_floor(n, threads),
            other => {
                eprintln!("watchbench: fill: --only reference | watchtrie | watchtrie-compact | floor | paired, not '{other}'");
                return ExitCode::from(2);
            }
        };
        println!(
            "{engine} alone, {threads} thread(s): register {:.0} ns, drop {:.0} ns per watcher",
            run.register_ns, run.drop_ns
        );
        return ExitCode::SUCCESS;
    }
    let best = |a: FillRun, b: FillRun| FillRun {
        register_ns: a.register_ns.min(b.register_ns),
        drop_ns: a.drop_ns.min(b.drop_ns),
    };
    eprintln!("  warm-up: reference, {n} watchers, 1 thread (discarded)");
    measure::fill_run::<Reference>(rt, w, 1);
    // Per thread count: reference, watchtrie, compact watchtrie, floor.
    let mut rows: Vec<(usize, [FillRun; 4])> = Vec::new();
    for threads in [1, 4] {
        eprint!("  {n} watchers from {threads} thread(s): ");
        let r1 = measure::fill_run::<Reference>(rt, w, threads);
        let t1 = measure::fill_run::<Watchtrie>(rt, w, threads);
        let t2 = measure::fill_run::<Watchtrie>(rt, w, threads);
        let r2 = measure::fill_run::<Reference>(rt, w, threads);
        let c1 = measure::fill_run::<WatchtrieCompact>(rt, w, threads);
        let c2 = measure::fill_run::<WatchtrieCompact>(rt, w, threads);
        let f1 = measure::fill_floor(n, threads);
        let f2 = measure::fill_floor(n, threads);
        let row = [best(r1, r2), best(t1, t2), best(c1, c2), best(f1, f2)];
        eprintln!(
            "register {:.0} / {:.0} ns, drop {:.0} / {:.0} ns (reference / watchtrie)",
            row[0].register_ns, row[1].register_ns, row[0].drop_ns, row[1].drop_ns
        );
        rows.push((threads, row));
    }
    eprint!("  {n} watchers through watch_many, {FILL_BATCH} a call, 1 thread: ");
    let many = measure::fill_many(w, FILL_BATCH).min(measure::fill_many(w, FILL_BATCH));
    eprintln!("{many:.0} ns");
    // Twice, the second kept: the first also pays for the memory of two registries at once,
    // which this process has not touched before (docs/BENCHMARKS.md, "The allocator, held
    // still").
    let mut paired = None;
    for pass in ["first", "second"] {
        eprint!("  {n} watchers into both at once, 1 thread, blocks of {FILL_PAIRED_BLOCK} alternated ({pass}): ");
        let run = measure::fill_paired::<Reference, Watchtrie>(rt, w, FILL_PAIRED_BLOCK);
        eprintln!("{:.0} / {:.0} ns", run.first_ns, run.second_ns);
        paired = Some(run);
    }
    let paired = paired.expect("two passes");
    if opts.json {
        let items: Vec<String> = rows
            .iter()
            .map(|(threads, row)| {
                let names = ["reference", "watchtrie", "watchtrie_compact", "floor"];
                let cells: Vec<String> = names
                    .iter()
                    .zip(row)
                    .map(|(name, r)| {
                        format!(
                            "\"{name}\":{{\"register_ns\":{:.1},\"drop_ns\":{:.1}}}",
                            r.register_ns, r.drop_ns
                        )
                    })
                    .collect();
                format!("{{\"threads\":{threads},{}}}", cells.join(","))
            })
            .collect();
        println!(
            "{{\"scenario\":\"fill\",\"watchers\":{n},\"watch_many_ns\":{many:.1},\"paired\":{{\"reference_ns\":{:.1},\"watchtrie_ns\":{:.1},\"median_block_watchtrie_over_reference\":{:.3}}},\"results\":[{}]}}",
            paired.first_ns,
            paired.second_ns,
            paired.median_ratio,
            items.join(",")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "scenario fill: {n} watchers (mixed keys) registered into an empty registry by N threads at once, then every handle dropped from one thread until the dispatcher has applied the unregistrations; ns per watcher, wall time"
    );
    println!("machine: {}", cpu_model());
    println!();
    println!(
        "{:<8} {:<9} {:>10} {:>10} {:>14} {:>10} {:>8}",
        "threads", "phase", "reference", "watchtrie", "ref/watchtrie", "compact", "floor"
    );
    for (threads, [r, t, c, f]) in &rows {
        for (phase, pick) in [
            (
                "register",
                (|x: &FillRun| x.register_ns) as fn(&FillRun) -> f64,
            ),
            ("drop", |x: &FillRun| x.drop_ns),
        ] {
            println!(
                "{:<8} {:<9} {:>10.0} {:>10.0} {:>13.2}× {:>10.0} {:>8.0}",
                threads,
                phase,
                pick(r),
                pick(t),
                pick(r) / pick(t),
                pick(c),
                pick(f)
            );
        }
    }
    let single = rows[0].1[0].register_ns;
    println!(
        "{:<8} {:<9} {:>10.0} {:>10.0} {:>13.2}×   (watchtrie through watch_many, {FILL_BATCH} specs a call)",
        1,
        "register",
        single,
        many,
        single / many
    );
    println!(
        "{:<8} {:<9} {:>10.0} {:>10.0} {:>13.2}×   (paired: both registries filled at once, blocks of {FILL_PAIRED_BLOCK} alternated; median block {:.2}×)",
        1,
        "register",
        paired.first_ns,
        paired.second_ns,
        paired.first_ns / paired.second_ns,
        1.0 / paired.median_ratio
    );
    println!();
    println!("compact: watchtrie with compact channels (not a like-for-like comparison: its watcher is smaller); floor: plain tokio channels created and held, no index");
    ExitCode::SUCCESS
}

/// `fanout --only ENGINE`: one engine's CPU per delivery with every receiver reading, K =
/// `--watchers` on one key, three runs in a row (for profiling).
fn fanout_cpu_alone(rt: &tokio::runtime::Runtime, engine: &str, k: usize) -> ExitCode {
    let run: fn(&tokio::runtime::Runtime, usize) -> Option<f64> = match engine {
        "reference" => measure::fanout_cpu_run::<Reference>,
        "watchtrie" => measure::fanout_cpu_run::<Watchtrie>,
        "watchtrie-compact" => measure::fanout_cpu_run::<WatchtrieCompact>,
        "watchtrie-grouped" => measure::fanout_cpu_run::<WatchtrieGrouped>,
        other => {
            eprintln!(
                "watchbench: unknown engine '{other}' (reference, watchtrie, watchtrie-compact, \
                 watchtrie-grouped)"
            );
            return ExitCode::from(2);
        }
    };
    for i in 1..=3 {
        match run(rt, k) {
            Some(ns) => println!("{engine}, k = {k}, run {i}: {ns:.0} ns CPU per delivery"),
            None => {
                eprintln!("watchbench: no process CPU time on this system (/proc/self/stat)");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// `fanout`: ns per delivered event with K watchers on one key and on one prefix, next to the
/// floor (a bare capacity + clone + try_send loop over K plain channels), best of two runs.
fn fanout_report(rt: &tokio::runtime::Runtime, opts: &Options) -> ExitCode {
    let top = opts.watchers.unwrap_or(100_000);
    if let Some(engine) = opts.only.as_deref() {
        return fanout_cpu_alone(rt, engine, top);
    }
    let sizes = sizes_up_to(&[1, 100, 10_000], top);
    let largest = sizes.last().copied().unwrap_or(top);
    eprintln!("  warm-up: reference, k = {largest} (discarded)");
    let _ = measure::fanout_run::<Reference>(rt, largest, false);
    let mut rows = Vec::new();
    for prefix in [false, true] {
        for &k in &sizes {
            eprint!(
                "  k = {k:>7} on one {}: ",
                if prefix { "prefix" } else { "key" }
            );
            let floor = measure::fanout_floor(k).min(measure::fanout_floor(k));
            let r1 = measure::fanout_run::<Reference>(rt, k, prefix);
            let t1 = measure::fanout_run::<Watchtrie>(rt, k, prefix);
            let t2 = measure::fanout_run::<Watchtrie>(rt, k, prefix);
            let r2 = measure::fanout_run::<Reference>(rt, k, prefix);
            let (r, t) = (r1.min(r2), t1.min(t2));
            let (c, g) = if opts.compact {
                let c1 = measure::fanout_run::<WatchtrieCompact>(rt, k, prefix);
                let events = measure::GROUPED_FANOUT_EVENTS;
                let g1 = measure::fanout_run_of::<WatchtrieGrouped>(rt, k, prefix, events);
                let g2 = measure::fanout_run_of::<WatchtrieGrouped>(rt, k, prefix, events);
                let c2 = measure::fanout_run::<WatchtrieCompact>(rt, k, prefix);
                (c1.min(c2), g1.min(g2))
            } else {
                (f64::NAN, f64::NAN)
            };
            eprintln!(
                "reference {r:.1}, watchtrie {t:.1}, compact {c:.1}, grouped {g:.2}, floor {floor:.1} ns/delivery"
            );
            rows.push((prefix, k, r, t, c, g, floor));
        }
    }
    if let Some(path) = &opts.svg {
        if let Err(e) = fanout_svg(path, &rows) {
            eprintln!("watchbench: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!("watchbench: plot written to {path}");
    }
    // With every receiver reading: the whole process's CPU per delivery, so that a saving
    // in the dispatcher is not just moved to the readers.
    let mut cpu_rows = Vec::new();
    if opts.compact {
        for &k in &sizes {
            eprint!("  k = {k:>7} on one key, every receiver reading: ");
            let best = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => a.min(b),
                _ => f64::NAN,
            };
            let r1 = measure::fanout_cpu_run::<Reference>(rt, k);
            let d1 = measure::fanout_cpu_run::<Watchtrie>(rt, k);
            let c1 = measure::fanout_cpu_run::<WatchtrieCompact>(rt, k);
            let g1 = measure::fanout_cpu_run::<WatchtrieGrouped>(rt, k);
            let g2 = measure::fanout_cpu_run::<WatchtrieGrouped>(rt, k);
            let c2 = measure::fanout_cpu_run::<WatchtrieCompact>(rt, k);
            let d2 = measure::fanout_cpu_run::<Watchtrie>(rt, k);
            let r2 = measure::fanout_cpu_run::<Reference>(rt, k);
            let (r, d, c, g) = (best(r1, r2), best(d1, d2), best(c1, c2), best(g1, g2));
            eprintln!(
                "reference {r:.0}, drop-in {d:.0}, compact {c:.0}, grouped {g:.0} ns CPU/delivery"
            );
            cpu_rows.push((k, r, d, c, g));
        }
    }
    if opts.json {
        let cpu: Vec<String> = cpu_rows
            .iter()
            .map(|(k, r, d, c, g)| {
                format!("{{\"k\":{k},\"reference_cpu_ns\":{r:.1},\"drop_in_cpu_ns\":{d:.1},\"compact_cpu_ns\":{c:.1},\"grouped_cpu_ns\":{g:.1}}}")
            })
            .collect();
        let items: Vec<String> = rows
            .iter()
            .map(|(prefix, k, r, t, c, g, f)| {
                let opt = |x: &f64| if x.is_nan() { "null".to_string() } else { format!("{x:.3}") };
                format!("{{\"prefix\":{prefix},\"k\":{k},\"reference_ns\":{r:.2},\"watchtrie_ns\":{t:.2},\"compact_ns\":{},\"grouped_ns\":{},\"floor_ns\":{f:.2}}}", opt(c), opt(g))
            })
            .collect();
        println!(
            "{{\"scenario\":\"fanout\",\"results\":[{}],\"cpu_with_readers\":[{}]}}",
            items.join(","),
            cpu.join(",")
        );
        return ExitCode::SUCCESS;
    }
    println!("scenario fanout: ns per delivered event, K watchers on one key or one prefix");
    println!("machine: {}", cpu_model());
    println!(
        "floor: a bare capacity() + clone + try_send loop over K plain tokio channels, what any"
    );
    println!(
        "engine pays per delivery. From K = 10,000 on every delivery is a cache miss into another"
    );
    println!("channel for all three, so they agree within run-to-run noise (about ±10%): a floor");
    println!("slower than an engine there is that noise, not a bound broken.");
    println!();
    println!(
        "{:<8} {:>8} {:>11} {:>11} {:>9} {:>9} {:>8} {:>14} {:>16} {:>12} {:>12}",
        "on one",
        "K",
        "reference",
        "watchtrie",
        "compact",
        "grouped",
        "floor",
        "ref/watchtrie",
        "watchtrie/floor",
        "ref/compact",
        "ref/grouped"
    );
    for (prefix, k, r, t, c, g, f) in rows {
        let on = if prefix { "prefix" } else { "key" };
        println!(
            "{on:<8} {k:>8} {r:>11.1} {t:>11.1} {c:>9.1} {g:>9.3} {f:>8.1} {:>13.2}× {:>15.2}× {:>11.2}× {:>11.0}×",
            r / t,
            t / f,
            r / c,
            r / g
        );
    }
    if !cpu_rows.is_empty() {
        println!();
        println!(
            "with every receiver reading (a task each): CPU time of the whole process, dispatcher"
        );
        println!("and receivers, per delivered event, ns (best of two alternated runs)");
        println!(
            "{:>8} {:>11} {:>9} {:>9} {:>9} {:>16} {:>16}",
            "K", "reference", "drop-in", "compact", "grouped", "compact/drop-in", "grouped/drop-in"
        );
        for (k, r, d, c, g) in cpu_rows {
            println!(
                "{k:>8} {r:>11.0} {d:>9.0} {c:>9.0} {g:>9.0} {:>15.2}× {:>15.2}×",
                c / d,
                g / d
            );
        }
        let (watchers, keys) = (1_000_000, 1_000);
        eprint!("  memory    {watchers} grouped watchers over {keys} keys… ");
        match measure::grouped_memory(watchers, keys) {
            Some(per) => {
                eprintln!("{per:.1} B/watcher");
                println!();
                println!(
                    "memory: {watchers} grouped watchers over {keys} keys, heap bytes per watcher all-in (handles, rings, index): {per:.1}"
                );
            }
            None => eprintln!("(the counting allocator is not installed)"),
        }
    }
    ExitCode::SUCCESS
}

/// One `fanout` row: on a prefix, K, then ns per delivery of the reference, drop-in,
/// compact and grouped watchers (NaN if not run), and the floor.
type FanoutRow = (bool, usize, f64, f64, f64, f64, f64);

/// `fanout --svg`: the dispatcher's µs per event against watchers on one key, one line per
/// engine (compact and grouped only if they ran).
fn fanout_svg(path: &str, rows: &[FanoutRow]) -> std::io::Result<()> {
    let line = |pick: fn(&FanoutRow) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|row| !row.0 && !pick(row).is_nan())
            .map(|row| (row.1 as f64, pick(row) * row.1 as f64 / 1000.0))
            .collect()
    };
    let mut series: Vec<watchbench::svg::Series<'_>> = vec![
        ("reference", "#d62728", line(|r| r.2)),
        ("watchtrie drop-in", "#1f77b4", line(|r| r.3)),
    ];
    for (name, colour, points) in [
        ("watchtrie compact", "#2ca02c", line(|r| r.4)),
        ("watchtrie grouped", "#9467bd", line(|r| r.5)),
    ] {
        if !points.is_empty() {
            series.push((name, colour, points));
        }
    }
    let title = "fanout: the dispatcher's cost per event, K watchers on one key";
    std::fs::write(
        path,
        watchbench::svg::log_x_plot(title, "watchers on the key (K)", "µs per event", &series),
    )
}

/// The scenarios of watchtrie alone (`watchbench::extended`); `None` for the others.
fn extended_report(opts: &Options) -> Option<ExitCode> {
    use watchbench::extended;
    match opts.scenario.as_str() {
        "kinds" => {
            let n = opts.watchers.unwrap_or(1_000_000);
            let only = match opts.only.as_deref() {
                None => None,
                Some(name) => match extended::KINDS_MIXES.iter().position(|&m| m == name) {
                    Some(i) => Some(i),
                    None => {
                        eprintln!(
                            "watchbench: kinds: --only {}, not '{name}'",
                            extended::KINDS_MIXES.join(" | ")
                        );
                        return Some(ExitCode::from(2));
                    }
                },
            };
            eprintln!(
                "watchbench: kinds, {n} watchers, {} events ({}, twice)…",
                opts.events,
                only.map_or("each mix in order, then reversed", |i| {
                    extended::KINDS_MIXES[i]
                })
            );
            let rows = extended::kinds_run(n, opts.events, opts.seed, only);
            println!(
                "scenario kinds: {n} watchers; inline dispatch over {} events, best of two passes (order given, then reversed)",
                opts.events
            );
            println!("machine: {}", cpu_model());
            println!();
            println!(
                "{:<54} {:>10} {:>10} {:>12} {:>10}",
                "watchers", "ns/event", "vs mixed", "deliveries", "per event"
            );
            if only.is_some() {
                // One mix, for a profiler: its row, no ratio and no paired run.
                for row in &rows {
                    println!(
                        "{:<54} {:>10.0} {:>10} {:>12} {:>10.2}",
                        row.label,
                        row.ns,
                        "-",
                        row.deliveries,
                        row.deliveries as f64 / opts.events as f64
                    );
                }
                return Some(ExitCode::SUCCESS);
            }
            let plain_ns = rows[0].ns;
            for row in &rows {
                println!(
                    "{:<54} {:>10.0} {:>9.2}x {:>12} {:>10.2}",
                    row.label,
                    row.ns,
                    row.ns / plain_ns,
                    row.deliveries,
                    row.deliveries as f64 / opts.events as f64
                );
            }
            println!();
            println!(
                "all kinds / mixed: {:.2}x ns per event (target: at most 1.5x)",
                rows[1].ns / plain_ns
            );
            drop(rows);
            // The same two mixes side by side, block by block (noise on both alike).
            const BLOCK: usize = 1_000;
            let paired = extended::kinds_paired(n, opts.events, opts.seed, BLOCK);
            println!(
                "all kinds / mixed, paired (both registered, blocks of {BLOCK} alternated): \
                 {:.0} / {:.0} ns = {:.2}x (median of the blocks' ratios {:.2}x)",
                paired.second_ns,
                paired.first_ns,
                paired.second_ns / paired.first_ns,
                paired.median_ratio
            );
            Some(ExitCode::SUCCESS)
        }
        "wildcards" => {
            let rows = extended::wildcards_run(8, &[0, 1, 2, 4, 8], opts.events.min(20_000));
            println!("scenario wildcards: every pattern of 8 pieces 'a' or '*' with at most w wildcards, all matching the event key /a/a/a/a/a/a/a/a");
            println!("machine: {}", cpu_model());
            println!();
            println!(
                "{:>4} {:>9} {:>12} {:>12}",
                "w", "patterns", "ns/event", "ns/match"
            );
            for r in rows {
                println!(
                    "{:>4} {:>9} {:>12.0} {:>12.1}",
                    r.wildcards, r.patterns, r.ns_per_event, r.ns_per_match
                );
            }
            Some(ExitCode::SUCCESS)
        }
        "owners" => {
            let refusals = opts.watchers.unwrap_or(10_000_000) as u64;
            eprintln!("watchbench: owners, {refusals} refused registrations…");
            let r = extended::owners_run(refusals);
            println!("scenario owners: owner A at its cap of 1 tries {} registrations; meanwhile another thread registers and drops watchers of 100 other owners (cap 1,000 each)", r.refusals);
            println!("machine: {}", cpu_model());
            println!();
            println!("ns per refusal                  {:>12.1}", r.ns_per_refusal);
            if r.heap_growth == isize::MIN {
                println!("heap growth                     (no counting allocator)");
            } else {
                println!(
                    "heap growth over the refusals   {:>12} bytes",
                    r.heap_growth
                );
            }
            println!(
                "other owners' registrations     {:>12}",
                r.others_registered
            );
            println!("other owners refused            {:>12}", r.others_refused);
            Some(ExitCode::SUCCESS)
        }
        "group-sweep" => {
            println!("scenario group-sweep: one group of N members on one key (buffer 8), every member reading every 4th event; one closed-receiver sweep call after each 12 events, timed (50 calls after 10 discarded)");
            println!("machine: {}", cpu_model());
            println!();
            println!(
                "{:>9} {:>12} {:>12} {:>12} {:>10}",
                "members", "median µs", "mean µs", "max µs", "released"
            );
            let sizes = match opts.watchers {
                Some(n) => vec![n],
                None => vec![1_000, 10_000, 100_000],
            };
            for members in sizes {
                let r = extended::group_sweep_run(members);
                println!(
                    "{:>9} {:>12.1} {:>12.1} {:>12.1} {:>10}",
                    r.members, r.median_us, r.mean_us, r.max_us, r.released
                );
            }
            Some(ExitCode::SUCCESS)
        }
        "group-leave" => {
            println!("scenario group-leave: one group of N members on one key, every member waiting (polled once), then every handle dropped, timed; best of three");
            println!("machine: {}", cpu_model());
            println!();
            println!("{:>9} {:>12}", "members", "drop ms");
            let sizes = match opts.watchers {
                Some(n) => vec![n],
                None => vec![10_000, 50_000],
            };
            for members in sizes {
                let best = (0..3)
                    .map(|_| extended::group_leave_run(members))
                    .fold(f64::MAX, f64::min);
                println!("{members:>9} {best:>12.1}");
            }
            Some(ExitCode::SUCCESS)
        }
        "key-cost" => {
            let rows = extended::key_cost_run(&[1_000, 10_000, 100_000, 524_287]);
            println!("scenario key-cost: one slash prefix /x/x/…/ of N segments: register it, one event on a key under it, drop it (unregistration applied by the dispatcher)");
            println!("machine: {}", cpu_model());
            println!();
            println!(
                "{:>9} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
                "segments",
                "register ms",
                "event ms",
                "drop ms",
                "reg ns/seg",
                "evt ns/seg",
                "drop ns/seg"
            );
            for r in rows {
                let per = |d: std::time::Duration| d.as_nanos() as f64 / r.segments as f64;
                let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                println!(
                    "{:>9} {:>12.2} {:>12.2} {:>12.2} {:>10.0} {:>10.0} {:>10.0}",
                    r.segments,
                    ms(r.register),
                    ms(r.event),
                    ms(r.unregister),
                    per(r.register),
                    per(r.event),
                    per(r.unregister)
                );
            }
            Some(ExitCode::SUCCESS)
        }
        "lag-stall" => {
            let events = opts.watchers.unwrap_or(2_000_000) as u64;
            println!("scenario lag-stall: {events} events on /k, each dispatched alone and timed, to an exact and a prefix watcher whose reader takes one event of each every second dispatch (backlogs grow to half the events)");
            println!("machine: {}", cpu_model());
            println!();
            println!(
                "{:>9} {:>10} {:>12} {:>10}",
                "watchers", "mean ns", "p99.99 us", "worst us"
            );
            for (name, compact) in [("drop-in", false), ("compact", true)] {
                let r = extended::lag_stall_run(events, compact);
                let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
                println!(
                    "{name:>9} {:>10.0} {:>12.1} {:>10.1}",
                    r.mean_ns,
                    us(r.p9999),
                    us(r.worst)
                );
            }
            Some(ExitCode::SUCCESS)
        }
        "resume-storm" => Some(storm_report(opts)),
        _ => None,
    }
}

/// The resume storm: see `watchbench::storm`.
fn storm_report(opts: &Options) -> ExitCode {
    use watchbench::storm::{storm_run, StormOptions};
    let n = opts.watchers.unwrap_or(100_000);
    let defaults = StormOptions::default();
    // `STORM_BACK` moves every resume further back (the warm-up bounds it): one slice's
    // pass over the history grows with it (docs/BENCHMARKS.md, "Resume storm").
    let back = std::env::var("STORM_BACK")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(defaults.back, |back: u64| back.min(defaults.warm_up));
    let storm = StormOptions { back, ..defaults };
    let w = workload::mixed(n - n / 11, n / 11, opts.events, opts.seed);
    eprintln!(
        "watchbench: resume-storm, {n} watchers resuming ~{} events back at {} events/s…",
        storm.back, storm.rate
    );
    let rt = measure::runtime();
    for own_thread in [false, true] {
        let storm = StormOptions {
            own_thread,
            ..storm
        };
        let r = storm_run(&rt, &w, storm);
        print_storm(n, storm, &r);
    }
    ExitCode::SUCCESS
}

fn print_storm(n: usize, storm: watchbench::storm::StormOptions, r: &watchbench::storm::StormRun) {
    let ms = |d: Option<std::time::Duration>| {
        d.map_or("not within the limit".to_string(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1e3)
        })
    };
    let us = |ns: f64| ns / 1e3;
    println!(
        "scenario resume-storm: {n} watchers of a mixed set live; the same {n} targets again \
         (half drop-in, half compact) resume from {} revisions back, all at once, while \
         {} events/s flow (WatchDispatcher {}, history {} events / {} MiB, buffer {})",
        storm.back,
        storm.rate,
        if storm.own_thread {
            "on a thread of its own"
        } else {
            "as a task beside the clients'"
        },
        storm.history.max_events(),
        storm.history.max_bytes() >> 20,
        storm.buffer
    );
    println!("machine: {}", cpu_model());
    println!();
    println!(
        "registering {} resumes            {:>10.0} ms",
        r.resumes,
        r.register.as_secs_f64() * 1e3
    );
    println!("all admitted after                {:>13}", ms(r.admitted));
    println!(
        "all caught up after               {:>13}  (target: at most 2 s)",
        ms(r.caught_up)
    );
    println!("events read by clients meanwhile  {:>10}", r.drained);
    println!(
        "live latency while settling (us)  p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  ({} probes; target: p99 at most 10 ms)",
        us(r.during.p50),
        us(r.during.p99),
        us(r.during.p999),
        us(r.during_max as f64),
        r.during_samples
    );
    println!(
        "live latency, whole run (us)      p50 {:.0}  p99 {:.0}  p99.9 {:.0}",
        us(r.overall.p50),
        us(r.overall.p99),
        us(r.overall.p999)
    );
    let m = &r.metrics;
    println!(
        "counters: resumes {}, compacted {}, overflow cancels {}, lag cancels {}, lagged events {}, history {} events",
        m.resumes, m.compacted_cancels, m.overflow_cancels, m.lag_cancels, m.lagged_events, m.history_events
    );
    println!();
}
