//! Opt-in heartbeats: the incremental sweep serves events between its slices without
//! breaking any watcher's order, and monotone Progress never goes below a delivered revision.
mod common;
use common::*;

use std::sync::atomic::Ordering;
use std::time::Duration;

use watchtrie::{DispatchOptions, HeartbeatMode, WatchEvent, WatchEventType};

fn incremental() -> DispatchOptions {
    DispatchOptions::default().with_heartbeat_mode(HeartbeatMode::Incremental)
}

/// Checks one watcher's stream: one Progress, carrying a revision at least `tick` and at
/// least that of every event before it; events in increasing revision order.
fn check_stream(events: &[WatchEvent], tick: u64) {
    let progress: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].event_type == WatchEventType::Progress)
        .collect();
    assert_eq!(progress.len(), 1, "one Progress per tick: {events:?}");
    let at = progress[0];
    let revision = events[at].revision;
    assert!(revision >= tick);
    assert!(
        events[..at].iter().all(|e| e.revision <= revision),
        "a Progress older than an event already delivered: {events:?}"
    );
    let puts: Vec<u64> = events
        .iter()
        .filter(|e| e.event_type == WatchEventType::Put)
        .map(|e| e.revision)
        .collect();
    assert!(puts.windows(2).all(|w| w[0] < w[1]), "events out of order");
}

#[tokio::test]
async fn an_incremental_heartbeat_serves_events_between_slices_and_keeps_each_watchers_order() {
    const WATCHERS: usize = 50_000;
    let mut bed = Bed::with_options(Mode::Inline, 8, usize::MAX, 0, incremental());
    let mut handles: Vec<_> = (0..WATCHERS)
        .map(|i| bed.registry.register(b(&format!("/k/{i}")), false).unwrap())
        .collect();
    assert!(bed.inline().start_progress(5));
    assert!(!bed.inline().start_progress(6), "one sweep at a time");
    let (mut revision, mut slices) = (5, 0);
    while bed.inline().continue_progress() {
        slices += 1;
        // Events on watchers both already swept and not yet swept.
        for i in [slices * 7919 % WATCHERS, slices * 104_729 % WATCHERS] {
            revision += 1;
            bed.send(put(&format!("/k/{i}"), "v", revision));
        }
    }
    assert!(
        slices >= 2,
        "{WATCHERS} deliveries take more than one slice, so events ran in between"
    );
    assert!(!bed.inline().progress_in_flight());
    for h in &mut handles {
        check_stream(&drain(h.receiver_mut()), 5);
    }
    assert_eq!(bed.registry.metrics().read().heartbeat_sweeps, 1);
    bed.registry.check_invariants();
}

#[tokio::test]
async fn watchers_registered_or_dropped_between_slices_are_served_at_most_once() {
    let mut bed = Bed::with_options(Mode::Inline, 8, usize::MAX, 0, incremental());
    let mut handles: Vec<_> = (0..28_000)
        .map(|i| bed.registry.register(b(&format!("/k/{i}")), false).unwrap())
        .collect();
    assert!(bed.inline().start_progress(1));
    let mut added = Vec::new();
    let mut n = 0;
    while bed.inline().continue_progress() {
        // 28,000 keys nearly fill a table of 32,768 buckets: these grow it under the sweep.
        // Bounded, so that a slow machine (slices visiting few watchers) still finishes.
        if n >= 3_000 {
            continue;
        }
        // The first batch alone crosses the growth threshold (28,672 entries).
        let batch = if n == 0 { 700 } else { 300 };
        for _ in 0..batch {
            added.push(
                bed.registry
                    .register(b(&format!("/new/{n}")), false)
                    .unwrap(),
            );
            n += 1;
        }
        handles.swap_remove(n % handles.len());
    }
    assert!(n >= 700, "the table grew under the sweep ({n} added)");
    for h in &mut handles {
        let got = drain(h.receiver_mut());
        assert!(!got.is_empty(), "a watcher present throughout was skipped");
        assert!(got.iter().all(|e| e.event_type == WatchEventType::Progress));
        assert!(got.len() <= 2, "served again only after a rebuild");
    }
    for h in &mut added {
        assert!(drain(h.receiver_mut()).len() <= 2);
    }
    bed.registry.check_invariants();
}

#[tokio::test(start_paused = true)]
async fn the_task_runs_an_incremental_heartbeat_to_every_watcher() {
    let mut bed = Bed::with_options(Mode::Task, 8, usize::MAX, 100, incremental());
    let mut exact = bed.registry.register(b("/k"), true).unwrap();
    let mut prefix = bed.registry.register_prefix(b("/p/"), false).unwrap();
    bed.last_applied.store(42, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(111)).await;
    bed.settle().await;
    for (h, prev) in [(&mut exact, Some(b(""))), (&mut prefix, None)] {
        let got = drain(h.receiver_mut());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event_type, WatchEventType::Progress);
        assert_eq!(got[0].revision, 42);
        assert_eq!(got[0].prev_value, prev);
    }
    bed.shutdown().await;
}

#[tokio::test]
async fn progress_goes_below_a_delivered_revision_by_default_as_in_the_reference() {
    let mut bed = Bed::new(Mode::Inline, 8, usize::MAX);
    let mut h = bed.registry.register(b("/k"), false).unwrap();
    bed.send(put("/k", "v", 9));
    bed.inline().broadcast_progress(3);
    assert_eq!(revisions(h.receiver_mut()), vec![9, 3]);
}

#[tokio::test]
async fn monotone_progress_never_goes_below_a_delivered_revision() {
    let options = DispatchOptions::default().with_monotone_progress(true);
    let mut bed = Bed::with_options(Mode::Inline, 8, usize::MAX, 0, options);
    let mut h = bed.registry.register(b("/k"), false).unwrap();
    bed.send(put("/k", "v", 9));
    bed.inline().broadcast_progress(3);
    bed.inline().broadcast_progress(12);
    assert_eq!(revisions(h.receiver_mut()), vec![9, 9, 12]);
}

#[tokio::test(start_paused = true)]
async fn an_incremental_sweep_finishes_without_events_to_drive_it() {
    // Enough watchers for many slices, and no event after the tick: the task must keep
    // sweeping on its own.
    let mut bed = Bed::with_options(Mode::Task, 8, usize::MAX, 100, incremental());
    let mut handles: Vec<_> = (0..50_000)
        .map(|i| bed.registry.register(b(&format!("/k/{i}")), false).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(111)).await;
    for _ in 0..1_000 {
        if bed.registry.metrics().read().heartbeat_sweeps == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    bed.settle().await;
    assert_eq!(bed.registry.metrics().read().heartbeat_sweeps, 1);
    for h in &mut handles {
        assert_eq!(drain(h.receiver_mut()).len(), 1);
    }
    bed.shutdown().await;
}
