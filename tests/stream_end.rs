//! Streams end when the engine stops: once the dispatcher has returned and the registry is
//! dropped, every watcher's receiver yields what is still queued, then `None` (as with the
//! reference). Neither a live handle nor a metrics handle may keep a watcher's channel open.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use watchtrie::{WatchDispatcher, WatchEventType, WatchRegistry, WatchResponse};

/// Long enough for any machine, short enough that a regression fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(20);

fn put(key: &str, revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::copy_from_slice(key.as_bytes()),
        revision,
        ..Default::default()
    }
}

/// Runs a dispatcher over `registry` until its broadcast sender is dropped, delivering
/// `events` first; returns once `run` has returned.
async fn run_then_stop(
    registry: Arc<WatchRegistry>,
    unregister_rx: mpsc::UnboundedReceiver<(u64, Bytes)>,
    events: &[WatchResponse],
) {
    let (events_tx, events_rx) = broadcast::channel(64);
    let dispatcher = WatchDispatcher::new(
        registry,
        events_rx,
        unregister_rx,
        Arc::new(AtomicU64::new(0)),
        0,
    );
    let task = tokio::spawn(dispatcher.run());
    for event in events {
        events_tx.send(event.clone()).unwrap();
    }
    drop(events_tx);
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("run() returns once the broadcast sender is gone")
        .unwrap();
}

#[tokio::test]
async fn every_kind_of_receiver_ends_once_the_dispatcher_returned_and_the_registry_is_dropped() {
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(8, unregister_tx));
    let metrics = registry.metrics();
    let mut exact = registry.register(Bytes::from("/a/k"), false).unwrap();
    let mut prefix = registry.register_prefix(Bytes::from("/a/"), true).unwrap();
    let mut compact = registry
        .register_compact(Bytes::from("/a/k"), false)
        .unwrap();
    let mut compact_prefix = registry
        .register_prefix_compact(Bytes::from("/"), false)
        .unwrap();
    let (_, _, mut kept) = registry
        .register(Bytes::from("/a/k"), false)
        .unwrap()
        .into_receiver();
    let (_, _, mut kept_compact) = registry
        .register_compact(Bytes::from("/a/k"), false)
        .unwrap()
        .into_receiver();

    run_then_stop(Arc::clone(&registry), unregister_rx, &[put("/a/k", 5)]).await;
    assert_eq!(
        metrics.read().watchers,
        6,
        "the registry is still alive here"
    );
    drop(registry);

    tokio::time::timeout(DEADLINE, async {
        for rx in [exact.receiver_mut(), prefix.receiver_mut(), &mut kept] {
            let event = rx.recv().await.expect("the queued event comes first");
            assert_eq!((event.event_type, event.revision), (WatchEventType::Put, 5));
            assert!(rx.recv().await.is_none(), "then the stream ends");
        }
        for rx in [
            compact.receiver_mut(),
            compact_prefix.receiver_mut(),
            &mut kept_compact,
        ] {
            let event = rx.recv().await.expect("the queued event comes first");
            assert_eq!((event.event_type, event.revision), (WatchEventType::Put, 5));
            assert!(rx.recv().await.is_none(), "then the stream ends");
        }
    })
    .await
    .expect("a receiver waited forever: something still holds the registry's senders");

    let after = metrics.read();
    assert_eq!(
        (after.watchers, after.exact_keys, after.prefixes),
        (0, 0, 0)
    );
    assert_eq!(
        after.events_dispatched, 1,
        "counters keep their last values"
    );
    // Dropping handles whose registry is gone is a no-op, not a panic.
    drop((exact, prefix, compact, compact_prefix));
}

#[tokio::test]
async fn a_receiver_waiting_in_recv_wakes_with_none_when_the_registry_goes() {
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(8, unregister_tx));
    let mut drop_in = registry.register(Bytes::from("/k"), false).unwrap();
    let mut compact = registry.register_compact(Bytes::from("/k"), false).unwrap();
    let waiting = tokio::spawn(async move {
        let a = drop_in.receiver_mut().recv().await;
        let b = compact.receiver_mut().recv().await;
        (a, b)
    });
    // Let the task start waiting before the engine stops.
    tokio::task::yield_now().await;
    run_then_stop(Arc::clone(&registry), unregister_rx, &[]).await;
    drop(registry);
    let (a, b) = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("the waiting receivers were never woken")
        .unwrap();
    assert!(a.is_none() && b.is_none());
}
