//! Rule 12 of docs/CONTRACT.md: when the broadcast receiver lags, the lost events are skipped and
//! no watcher is told; when the broadcast sender is gone, `run()` returns.
mod common;
use common::*;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use watchtrie::{WatchDispatcher, WatchRegistry};

/// Far beyond any real shutdown; under paused time it elapses as soon as every task is idle,
/// so a `run()` that never returns fails at once instead of hanging the suite.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `shutdown`, failing if `run()` has not returned by the deadline.
async fn returns_in_time<T>(shutdown: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(SHUTDOWN_DEADLINE, shutdown)
        .await
        .expect("run() did not return within 20 s of the broadcast sender going")
}

#[tokio::test(start_paused = true)]
async fn lagged_events_are_skipped_silently_and_later_ones_delivered() {
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(100, unregister_tx));
    let (tx, rx) = broadcast::channel(4);
    let mut h = registry.register(b("/k"), false).unwrap();
    let task = tokio::spawn(
        WatchDispatcher::new(
            registry.clone(),
            rx,
            unregister_rx,
            Arc::new(AtomicU64::new(0)),
            0,
        )
        .run(),
    );
    // The current-thread runtime has not polled the task yet: the receiver falls 6 behind.
    for rev in 1..=10 {
        tx.send(put("/k", "v", rev)).unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_micros(1)).await;
    assert_eq!(revisions(h.receiver_mut()), vec![7, 8, 9, 10]);
    tx.send(put("/k", "v", 11)).unwrap();
    tokio::time::sleep(std::time::Duration::from_micros(1)).await;
    assert_eq!(revisions(h.receiver_mut()), vec![11]);
    assert_eq!(registry.active_watcher_count(), 1);
    drop(tx);
    returns_in_time(task).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn run_returns_when_the_broadcast_sender_is_gone() {
    let bed = Bed::new(Mode::Task, 4, usize::MAX);
    let _h = bed.registry.register(b("/k"), false).unwrap();
    returns_in_time(bed.shutdown()).await;
}
