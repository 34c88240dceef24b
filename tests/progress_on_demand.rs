//! Progress on demand: to every watcher or to one, ordered with events (never below an event
//! already delivered), through the inline dispatcher and the async one.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use watchtrie::{
    DispatchOptions, EventFilter, HeartbeatMode, InlineDispatcher, ProgressRequest,
    WatchDispatcher, WatchEvent, WatchEventType, WatchRegistry, WatchResponse, WatchSpec,
};

fn put(key: &str, revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::copy_from_slice(key.as_bytes()),
        revision,
        ..Default::default()
    }
}

fn drain(rx: &mut mpsc::Receiver<WatchEvent>) -> Vec<(WatchEventType, u64)> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| (e.event_type, e.revision))
        .collect()
}

use WatchEventType::{Progress, Put};

#[test]
fn a_requested_progress_reaches_everyone_or_one_and_carries_the_highest_revision_dispatched() {
    for mode in [HeartbeatMode::Blocking, HeartbeatMode::Incremental] {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(16, tx));
        let options = DispatchOptions::default().with_heartbeat_mode(mode);
        let mut inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
        let mut a = registry.watch(WatchSpec::exact("/a")).unwrap();
        let mut b = registry.watch(WatchSpec::prefix("/")).unwrap();
        let mut quiet = registry
            .watch(WatchSpec::prefix("/").filter(EventFilter::default().no_progress()))
            .unwrap();
        inline.dispatch(&put("/a", 5));
        inline.dispatch(&put("/b", 9));
        assert!(inline.request_progress(a.progress_request()));
        assert_eq!(
            drain(a.receiver_mut()),
            [(Put, 5), (Progress, 9)],
            "{mode:?}"
        );
        assert_eq!(
            drain(b.receiver_mut()),
            [(Put, 5), (Put, 9)],
            "only the one asked for"
        );
        assert!(inline.request_progress(ProgressRequest::All));
        while inline.continue_progress() {}
        assert_eq!(drain(a.receiver_mut()), [(Progress, 9)]);
        assert_eq!(drain(b.receiver_mut()), [(Progress, 9)]);
        assert_eq!(
            drain(quiet.receiver_mut()),
            [(Put, 5), (Put, 9)],
            "filtered out"
        );
        let metrics = registry.metrics().read();
        assert_eq!(metrics.progress_requests, 2);
        // A watcher that is gone is not found.
        let gone = a.progress_request();
        drop(a);
        inline.process_unregistrations();
        assert!(!inline.request_progress(gone));
    }
}

#[test]
fn a_requested_sweep_during_an_incremental_heartbeat_follows_it() {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(16, tx));
    let options = DispatchOptions::default().with_heartbeat_mode(HeartbeatMode::Incremental);
    let mut inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
    let mut w = registry.watch(WatchSpec::exact("/k")).unwrap();
    assert!(inline.start_progress(3)); // a heartbeat under way
    inline.dispatch(&put("/k", 7));
    assert!(inline.request_progress(ProgressRequest::All));
    while inline.continue_progress() {}
    // The heartbeat (raised to 7, the highest dispatched), then the requested sweep.
    assert_eq!(
        drain(w.receiver_mut()),
        [(Put, 7), (Progress, 7), (Progress, 7)]
    );
    assert!(!inline.progress_in_flight());
}

#[tokio::test]
async fn the_async_dispatcher_answers_after_every_event_queued_before_the_request() {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(64, tx));
    let (events_tx, events_rx) = broadcast::channel(64);
    let last_applied = Arc::new(AtomicU64::new(0));
    let dispatcher = WatchDispatcher::new(registry.clone(), events_rx, rx, last_applied.clone(), 0);
    let requester = dispatcher.progress_requester();
    let mut w = registry.watch(WatchSpec::prefix("/")).unwrap();
    let task = tokio::spawn(dispatcher.run());
    for revision in 1..=20 {
        events_tx.send(put("/k", revision)).unwrap();
    }
    // The store applied a no-op at 21 after its last write.
    last_applied.store(21, Ordering::Release);
    requester.request(w.progress_request()).unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = w.receiver_mut().recv().await {
            got.push((event.event_type, event.revision));
            if event.event_type == Progress {
                break;
            }
        }
    })
    .await
    .expect("the progress came");
    let mut want: Vec<_> = (1..=20).map(|r| (Put, r)).collect();
    want.push((Progress, 21));
    assert_eq!(
        got, want,
        "every queued event first, then progress at last_applied"
    );
    drop(events_tx);
    task.await.unwrap();
    assert!(
        requester.request(ProgressRequest::All).is_err(),
        "the dispatcher is gone"
    );
}
