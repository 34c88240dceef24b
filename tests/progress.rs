//! Rule 11 of docs/CONTRACT.md: with a heartbeat interval, every active watcher gets Progress
//! (empty key and value, revision = last_applied) each interval, the first tick jittered by up to
//! ±10%; the same overflow and closed-receiver handling applies; interval 0 sends nothing.
mod common;
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use watchtrie::{WatchEvent, WatchEventType};

async fn advance_to(start: tokio::time::Instant, ms: u64) {
    tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
}

fn progress(revision: u64, prev: bool) -> WatchEvent {
    WatchEvent {
        event_type: WatchEventType::Progress,
        key: b(""),
        value: b(""),
        prev_value: prev.then(|| b("")),
        revision,
    }
}

#[tokio::test(start_paused = true)]
async fn progress_reaches_every_watcher_once_per_interval() {
    let start = tokio::time::Instant::now();
    let bed = Bed::with_heartbeat(Mode::Task, 16, usize::MAX, 1000);
    let mut exact = bed.registry.register(b("/k"), true).unwrap();
    let mut prefix = bed.registry.register_prefix(b("/"), false).unwrap();
    bed.last_applied.store(42, Ordering::Relaxed);
    advance_to(start, 899).await;
    assert!(
        drain(exact.receiver_mut()).is_empty(),
        "no tick before 90% of the interval"
    );
    advance_to(start, 1100).await;
    assert_eq!(drain(exact.receiver_mut()), vec![progress(42, true)]);
    assert_eq!(drain(prefix.receiver_mut()), vec![progress(42, false)]);
    bed.last_applied.store(43, Ordering::Relaxed);
    advance_to(start, 2100).await;
    assert_eq!(drain(exact.receiver_mut()), vec![progress(43, true)]);
    assert_eq!(drain(prefix.receiver_mut()), vec![progress(43, false)]);
    bed.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn first_ticks_are_jittered_within_ten_percent() {
    let start = tokio::time::Instant::now();
    let mut beds: Vec<_> = (0..20)
        .map(|_| Bed::with_heartbeat(Mode::Task, 4, usize::MAX, 1000))
        .collect();
    let mut handles: Vec<_> = beds
        .iter()
        .map(|bed| bed.registry.register(b("/k"), false).unwrap())
        .collect();
    let mut first_tick = vec![None; beds.len()];
    for ms in (0..=1200).step_by(5) {
        advance_to(start, ms).await;
        for (i, h) in handles.iter_mut().enumerate() {
            if !drain(h.receiver_mut()).is_empty() && first_tick[i].is_none() {
                first_tick[i] = Some(ms);
            }
        }
    }
    let ticks: Vec<u64> = first_tick
        .into_iter()
        .map(|t| t.expect("every dispatcher ticked"))
        .collect();
    assert!(
        ticks.iter().all(|&t| (900..=1100).contains(&t)),
        "{ticks:?}"
    );
    assert!(
        ticks.iter().any(|&t| t != ticks[0]),
        "first ticks are spread: {ticks:?}"
    );
    for bed in beds.drain(..) {
        bed.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn zero_interval_never_sends_progress() {
    let start = tokio::time::Instant::now();
    let bed = Bed::with_heartbeat(Mode::Task, 4, usize::MAX, 0);
    let mut h = bed.registry.register(b("/k"), false).unwrap();
    advance_to(start, 3_600_000).await;
    assert!(drain(h.receiver_mut()).is_empty());
    bed.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn absurd_intervals_do_not_panic() {
    for ms in [1, u64::MAX, u64::MAX / 2, 1 << 41] {
        let start = tokio::time::Instant::now();
        let bed = Bed::with_heartbeat(Mode::Task, 4, usize::MAX, ms);
        let _h = bed.registry.register(b("/k"), false).unwrap();
        advance_to(start, 10).await;
        bed.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn progress_overflows_and_closes_like_any_event() {
    let start = tokio::time::Instant::now();
    let bed = Bed::with_heartbeat(Mode::Task, 1, usize::MAX, 100);
    let mut silent = bed.registry.register_prefix(b("/p/"), true).unwrap();
    let (_, _, closed) = bed
        .registry
        .register(b("/c"), false)
        .unwrap()
        .into_receiver();
    drop(closed);
    advance_to(start, 350).await;
    let got = drain(silent.receiver_mut());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].event_type, WatchEventType::Progress);
    assert_eq!(
        got[1],
        WatchEvent {
            event_type: WatchEventType::Canceled,
            key: b(""),
            value: b(""),
            prev_value: None,
            revision: 0
        }
    );
    assert_eq!(bed.registry.active_watcher_count(), 0);
    assert_eq!(bed.registry.prev_kv_watcher_count(), 0);
    bed.shutdown().await;
}

#[test]
fn inline_progress_reaches_every_watcher() {
    let (unregister_tx, unregister_rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = std::sync::Arc::new(watchtrie::WatchRegistry::new(4, unregister_tx));
    let mut hs: Vec<_> = ["/a", "/b", ""]
        .iter()
        .map(|k| registry.register(b(k), false).unwrap())
        .collect();
    hs.push(registry.register_prefix(b("/x/"), true).unwrap());
    let mut inline = watchtrie::InlineDispatcher::new(registry, unregister_rx);
    inline.broadcast_progress(9);
    for (i, h) in hs.iter_mut().enumerate() {
        assert_eq!(drain(h.receiver_mut()), vec![progress(9, i == 3)]);
    }
}
