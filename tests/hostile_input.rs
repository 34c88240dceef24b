//! Bad input gets a clear error or plain service, never a panic, an abort or a lost event.
mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use bytes::Bytes;
use common::*;
use watchtrie::{WatchError, WatchResponse, MAX_WATCHER_BUFFER_SIZE};

fn event(key: &[u8], revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::copy_from_slice(key),
        revision,
        ..Default::default()
    }
}

in_both_modes! {
    async fn empty_keys_are_ordinary_exact_keys(mode) {
        let mut bed = Bed::new(mode, 4, usize::MAX);
        let mut h = bed.registry.register(Bytes::new(), false).unwrap();
        let mut root = bed.registry.register_prefix(b("/"), false).unwrap();
        assert_eq!(bed.registry.register_prefix(Bytes::new(), false).unwrap_err(), WatchError::InvalidPrefix);
        bed.send(event(b"", 1));
        bed.settle().await;
        assert_eq!(revisions(h.receiver_mut()), vec![1]);
        assert!(drain(root.receiver_mut()).is_empty());
    }

    async fn megabyte_keys_and_prefixes_work(mode) {
        let mut bed = Bed::new(mode, 4, usize::MAX);
        let mut big = vec![b'x'; 1 << 20];
        big[0] = b'/';
        let mut prefix = big.clone();
        prefix.push(b'/');
        let mut exact = bed.registry.register(Bytes::from(big.clone()), true).unwrap();
        let mut under = bed.registry.register_prefix(Bytes::from(prefix.clone()), false).unwrap();
        bed.send(event(&big, 1));
        let mut child = prefix.clone();
        child.extend_from_slice(b"leaf");
        bed.send(event(&child, 2));
        bed.settle().await;
        assert_eq!(revisions(exact.receiver_mut()), vec![1]);
        assert_eq!(revisions(under.receiver_mut()), vec![2]);
        drop((exact, under));
        bed.settle().await;
        assert_eq!(bed.registry.active_watcher_count(), 0);
        bed.registry.check_invariants();
    }

    async fn a_hundred_thousand_slashes_neither_recurse_nor_lose_events(mode) {
        let mut bed = Bed::new(mode, 4, usize::MAX);
        let key = vec![b'/'; 100_000];
        // Watchers along the path, every 500 slashes, and at the very end.
        let mut handles: Vec<_> = (1..=key.len())
            .step_by(500)
            .chain([key.len()])
            .map(|len| bed.registry.register_prefix(Bytes::copy_from_slice(&key[..len]), false).unwrap())
            .collect();
        bed.send(event(&key, 1));
        bed.settle().await;
        for h in &mut handles {
            assert_eq!(revisions(h.receiver_mut()), vec![1]);
        }
        let segments = watchtrie::prefix_segments(&Bytes::from(key));
        assert_eq!(segments.len(), 100_000);
        drop(handles);
        bed.settle().await;
        // The async dispatcher hands the deepest removals to tokio's blocking pool.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while bed.registry.watched_prefix_count() != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            bed.settle().await;
        }
        assert_eq!(bed.registry.watched_prefix_count(), 0);
        bed.registry.check_invariants();
    }

    async fn non_utf8_bytes_are_plain_bytes(mode) {
        let mut bed = Bed::new(mode, 4, usize::MAX);
        let mut exact = bed.registry.register(Bytes::from_static(b"/\xff\xfe\x00"), false).unwrap();
        let mut prefix = bed.registry.register_prefix(Bytes::from_static(b"/\xc3\x28/"), false).unwrap();
        bed.send(event(b"/\xff\xfe\x00", 1));
        bed.send(event(b"/\xc3\x28/\x80", 2));
        bed.send(event(b"/\xc3\x28", 3));
        bed.settle().await;
        assert_eq!(revisions(exact.receiver_mut()), vec![1]);
        assert_eq!(revisions(prefix.receiver_mut()), vec![2]);
    }

    async fn an_unbounded_buffer_size_is_clamped_not_a_panic(mode) {
        let mut bed = Bed::new(mode, usize::MAX, usize::MAX);
        assert_eq!(bed.registry.watcher_buffer_size(), MAX_WATCHER_BUFFER_SIZE);
        let mut h = bed.registry.register(b("/k"), false).unwrap();
        assert_eq!(h.receiver_mut().max_capacity(), MAX_WATCHER_BUFFER_SIZE + 1);
        for rev in 1..=100 {
            bed.send(event(b"/k", rev));
        }
        bed.settle().await;
        assert_eq!(revisions(h.receiver_mut()), (1..=100).collect::<Vec<_>>());
    }
}

#[test]
fn ten_million_refusals_at_a_small_limit_grow_nothing() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = watchtrie::WatchRegistry::new_with_limits(1, 3, tx);
    let _kept: Vec<_> = (0..3)
        .map(|i| registry.register(b(&format!("/{i}")), true).unwrap())
        .collect();
    let (key, prefix) = (Bytes::from_static(b"/k"), Bytes::from_static(b"/p/"));
    let before = counting_alloc::thread_net();
    for i in 0..10_000_000u32 {
        let refused = if i % 2 == 0 {
            registry.register(key.clone(), true)
        } else {
            registry.register_prefix(prefix.clone(), true)
        };
        assert_eq!(refused.unwrap_err(), WatchError::LimitExceeded(3));
    }
    assert_eq!(
        counting_alloc::thread_net(),
        before,
        "refusals leave nothing allocated"
    );
    assert_eq!(registry.active_watcher_count(), 3);
    assert_eq!(registry.prev_kv_watcher_count(), 3);
    assert_eq!(registry.watched_key_count(), 3);
    assert_eq!(
        registry.register(b("/new"), false).unwrap_err(),
        WatchError::LimitExceeded(3)
    );
}

/// The longest heartbeat and sweep periods a caller can ask for run (and never fire),
/// instead of overflowing a deadline.
#[tokio::test(start_paused = true)]
async fn extreme_heartbeat_and_sweep_periods_are_served_not_a_panic() {
    use std::time::Duration;
    use watchtrie::{DispatchOptions, HeartbeatMode, LagPolicy};
    for (heartbeat_ms, sweep) in [(u64::MAX, Duration::MAX), (1, Duration::ZERO)] {
        let options = DispatchOptions::default()
            .with_heartbeat_mode(HeartbeatMode::Incremental)
            .with_lag_policy(LagPolicy::CancelWatchers)
            .with_closed_receiver_sweep(sweep, usize::MAX);
        let mut bed = Bed::with_options(Mode::Task, 4, usize::MAX, heartbeat_ms, options);
        let mut h = bed.registry.register(b("/k"), false).unwrap();
        // A client reading every millisecond keeps up with 1 ms heartbeats.
        let mut got = Vec::new();
        for rev in 1..=3 {
            bed.send(event(b"/k", rev));
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                got.extend(
                    drain(h.receiver_mut())
                        .into_iter()
                        .filter(|e| e.event_type == watchtrie::WatchEventType::Put)
                        .map(|e| e.revision),
                );
            }
        }
        assert_eq!(got, vec![1, 2, 3]);
        drop(h);
        bed.shutdown().await;
    }
}

/// A prefix of 20,000 segments: its removal walks every segment (about half a microsecond
/// each, twice), so the async dispatcher hands it to tokio's blocking pool instead of
/// stalling; events keep flowing meanwhile, and the watcher stops counting once it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_very_deep_prefix_is_removed_off_the_dispatcher_and_stops_counting() {
    use std::time::Duration;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = std::sync::Arc::new(watchtrie::WatchRegistry::new(1024, tx));
    let (events_tx, events_rx) = tokio::sync::broadcast::channel(1024);
    let dispatcher = watchtrie::WatchDispatcher::new(
        registry.clone(),
        events_rx,
        rx,
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
        0,
    );
    let task = tokio::spawn(dispatcher.run());
    let deep = bytes::Bytes::from("/x".repeat(20_000) + "/");
    let handle = registry.register_prefix(deep.clone(), false).unwrap();
    let mut other = registry.register(b("/k"), false).unwrap();
    drop(handle);
    for revision in 1..=100 {
        events_tx.send(event(b"/k", revision)).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        for revision in 1..=100 {
            assert_eq!(
                other.receiver_mut().recv().await.unwrap().revision,
                revision
            );
        }
        while registry.active_watcher_count() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the deep watcher is removed and the others served");
    assert_eq!(registry.prefix_watcher_count(&deep), 0);
    registry.check_invariants();
    drop(events_tx);
    task.await.unwrap();
}

/// Without a runtime there is no blocking pool: the inline dispatcher removes a deep
/// prefix itself, like any other.
#[test]
fn without_a_runtime_a_deep_prefix_is_removed_inline() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = std::sync::Arc::new(watchtrie::WatchRegistry::new(4, tx));
    let mut inline = watchtrie::InlineDispatcher::new(registry.clone(), rx);
    let deep = bytes::Bytes::from("/x".repeat(5_000) + "/");
    drop(registry.register_prefix(deep, false).unwrap());
    inline.process_unregistrations();
    assert_eq!(registry.active_watcher_count(), 0);
    registry.check_invariants();
}

/// The largest revision: every "the revision after it" saturates. Registering from a
/// revision, requesting progress and a heartbeat after it, with and without history.
#[test]
fn a_revision_of_u64_max_is_served_not_an_overflow() {
    use std::sync::Arc;
    use tokio::sync::mpsc;
    use watchtrie::{
        DispatchOptions, HistoryOptions, InlineDispatcher, ProgressRequest, WatchEventType,
        WatchRegistry, WatchSpec,
    };
    for history in [false, true] {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(8, tx));
        let options = if history {
            DispatchOptions::default().with_history(HistoryOptions::new(16, 1 << 16))
        } else {
            DispatchOptions::default()
        };
        let mut inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
        let mut live = registry.register(b("/k"), false).unwrap();
        inline.dispatch(&event(b"/k", u64::MAX));
        let mut resumed = registry
            .watch(WatchSpec::exact("/k").from_revision(1))
            .unwrap();
        inline.process_unregistrations();
        assert!(inline.request_progress(ProgressRequest::All));
        inline.broadcast_progress(u64::MAX);
        let got: Vec<_> = drain(live.receiver_mut())
            .into_iter()
            .map(|e| (e.event_type, e.revision))
            .collect();
        assert_eq!(
            got,
            [
                (WatchEventType::Put, u64::MAX),
                (WatchEventType::Progress, u64::MAX),
                (WatchEventType::Progress, u64::MAX)
            ],
            "history {history}"
        );
        // From 1: with history it gets the one event kept; without, it is told it cannot.
        let first = drain(resumed.receiver_mut()).into_iter().next().unwrap();
        if history {
            assert_eq!(
                (first.event_type, first.revision),
                (WatchEventType::Put, u64::MAX)
            );
        } else {
            assert_eq!(first.event_type, WatchEventType::Canceled, "{first:?}");
        }
        inline.check_invariants();
    }
}
