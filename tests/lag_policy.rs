//! Opt-in lag policy: when the dispatcher's broadcast receiver lags, every watcher is
//! cancelled with a sentinel a caller can tell apart from buffer overflow, instead of
//! silently missing the lost events (the default, as in the reference: see `lag.rs`).
mod common;
use common::*;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use watchtrie::{
    CancelReason, DispatchOptions, LagPolicy, WatchDispatcher, WatchEventType, WatchRegistry,
};

fn cancel_on_lag() -> DispatchOptions {
    DispatchOptions::default().with_lag_policy(LagPolicy::CancelWatchers)
}

#[tokio::test(start_paused = true)]
async fn under_cancel_watchers_lag_cancels_every_watcher_with_a_lag_sentinel() {
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(100, unregister_tx));
    let (tx, rx) = broadcast::channel(4);
    let dispatcher = WatchDispatcher::new(
        registry.clone(),
        rx,
        unregister_rx,
        Arc::new(AtomicU64::new(0)),
        0,
    )
    .with_options(cancel_on_lag());
    let task = tokio::spawn(dispatcher.run());
    let mut exact = registry.register(b("/k"), true).unwrap();
    let mut prefix = registry.register_prefix(b("/p/"), false).unwrap();
    let mut elsewhere = registry.register(b("/unrelated"), false).unwrap();
    tx.send(put("/k", "v", 1)).unwrap();
    tokio::time::sleep(Duration::from_micros(1)).await;
    // The task is not polled while these go out: the receiver falls 6 behind.
    for rev in 2..=11 {
        tx.send(put("/k", "v", rev)).unwrap();
    }
    tokio::time::sleep(Duration::from_micros(1)).await;

    let got = drain(exact.receiver_mut());
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].revision, 1);
    assert_eq!(
        got[1].cancel_reason(),
        Some(CancelReason::Lagged { resume_from: 2 })
    );
    for h in [&mut prefix, &mut elsewhere] {
        let got = drain(h.receiver_mut());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event_type, WatchEventType::Canceled);
        assert_eq!(got[0].prev_value, None);
        assert_eq!(
            got[0].cancel_reason(),
            Some(CancelReason::Lagged { resume_from: 2 })
        );
    }
    assert_eq!(registry.active_watcher_count(), 0);
    let m = registry.metrics().read();
    assert_eq!((m.lagged_events, m.lag_cancels), (6, 3));

    // The watch is over: nothing more arrives, the channel reports closed.
    for h in [exact, prefix, elsewhere] {
        let (_, _, mut rx) = h.into_receiver();
        assert!(rx.recv().await.is_none());
    }
    // New watchers get later events.
    let mut again = registry.register(b("/k"), false).unwrap();
    tx.send(put("/k", "v", 12)).unwrap();
    tokio::time::sleep(Duration::from_micros(1)).await;
    assert_eq!(revisions(again.receiver_mut()), vec![12]);
    registry.check_invariants();
    drop(tx);
    task.await.unwrap();
}

#[tokio::test]
async fn the_overflow_sentinel_reports_buffer_overflow() {
    let mut bed = Bed::new(Mode::Inline, 1, usize::MAX);
    let mut h = bed.registry.register(b("/k"), false).unwrap();
    bed.send(put("/k", "v", 1));
    bed.send(put("/k", "v", 2));
    let got = drain(h.receiver_mut());
    assert_eq!(got[0].cancel_reason(), None);
    assert_eq!(got[1].cancel_reason(), Some(CancelReason::BufferOverflow));
    assert_eq!(bed.registry.metrics().read().overflow_cancels, 1);
}

#[tokio::test]
async fn a_reported_lag_only_warns_and_counts_by_default() {
    let mut bed = Bed::new(Mode::Inline, 4, usize::MAX);
    let mut h = bed.registry.register(b("/k"), false).unwrap();
    bed.inline().report_lag(5);
    bed.send(put("/k", "v", 9));
    assert_eq!(revisions(h.receiver_mut()), vec![9]);
    assert_eq!(bed.registry.active_watcher_count(), 1);
    assert_eq!(bed.registry.metrics().read().lagged_events, 5);
}

#[tokio::test]
async fn a_watcher_cancelled_for_overflow_gets_no_second_sentinel() {
    let mut bed = Bed::with_options(Mode::Inline, 1, usize::MAX, 0, cancel_on_lag());
    let mut h = bed.registry.register(b("/k"), false).unwrap();
    bed.send(put("/k", "v", 1));
    bed.send(put("/k", "v", 2)); // overflow
    bed.inline().report_lag(3);
    let got = drain(h.receiver_mut());
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].cancel_reason(), Some(CancelReason::BufferOverflow));
    assert_eq!(bed.registry.active_watcher_count(), 0);
    bed.registry.check_invariants();
}
