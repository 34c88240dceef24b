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

/// A registry of `buffer` events per watcher and an inline dispatcher keeping 100 events.
fn with_history(buffer: usize) -> (Arc<WatchRegistry>, InlineDispatcher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(buffer, tx));
    let options =
        DispatchOptions::default().with_history(watchtrie::HistoryOptions::new(100, 1 << 20));
    let inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
    (registry, inline)
}

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

fn drain_member(rx: &mut watchtrie::GroupReceiver) -> Vec<(WatchEventType, u64)> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| (e.event_type, e.revision))
        .collect()
}

#[test]
fn a_group_member_reads_its_own_requested_progress_after_what_its_group_had_before() {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(16, tx));
    let mut inline = InlineDispatcher::new(registry.clone(), rx);
    let mut a = registry.watch(WatchSpec::exact("/a").grouped()).unwrap();
    let mut b = registry.watch(WatchSpec::exact("/a").grouped()).unwrap();
    let quiet_spec = WatchSpec::exact("/a").filter(EventFilter::default().no_progress());
    let mut quiet = registry.watch(quiet_spec.grouped()).unwrap();
    inline.dispatch(&put("/a", 5));
    inline.dispatch(&put("/b", 9));
    assert!(inline.request_progress(a.progress_request()));
    assert!(
        inline.request_progress(quiet.progress_request()),
        "found, filtered"
    );
    inline.dispatch(&put("/a", 11));
    registry.check_invariants();
    assert_eq!(a.receiver_mut().len(), 3, "two events and its Progress");
    assert_eq!(
        drain_member(a.receiver_mut()),
        [(Put, 5), (Progress, 9), (Put, 11)],
        "after the group's events before it, before those after"
    );
    assert_eq!(
        drain_member(b.receiver_mut()),
        [(Put, 5), (Put, 11)],
        "only the member asked for"
    );
    assert_eq!(drain_member(quiet.receiver_mut()), [(Put, 5), (Put, 11)]);
    let metrics = registry.metrics().read();
    assert_eq!((metrics.progress_requests, metrics.progress_sent), (2, 1));
    // Asked for while caught up: read next.
    assert!(inline.request_progress(b.progress_request()));
    assert_eq!(drain_member(b.receiver_mut()), [(Progress, 11)]);
    // A member that left is not found, and its slot's next owner gets nothing meant for it.
    let gone = a.progress_request();
    drop(a);
    let mut next = registry.watch(WatchSpec::exact("/a").grouped()).unwrap();
    assert!(!inline.request_progress(gone));
    assert_eq!(drain_member(next.receiver_mut()), []);
    registry.check_invariants();
}

#[test]
fn a_requested_progress_for_a_member_that_lags_goes_with_its_stream() {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(2, tx));
    let mut inline = InlineDispatcher::new(registry.clone(), rx);
    let mut slow = registry.watch(WatchSpec::exact("/a").grouped()).unwrap();
    inline.dispatch(&put("/a", 1));
    assert!(inline.request_progress(slow.progress_request()));
    for revision in 2..=4 {
        inline.dispatch(&put("/a", revision));
    }
    registry.check_invariants();
    let got: Vec<_> = std::iter::from_fn(|| slow.receiver_mut().try_recv().ok()).collect();
    assert_eq!(got.len(), 1, "the lag sentinel alone: {got:?}");
    assert_eq!(got[0].event_type, WatchEventType::Canceled);
    assert!(
        !inline.request_progress(slow.progress_request()),
        "it reads nothing more"
    );
    registry.check_invariants();
}

#[tokio::test]
async fn a_waiting_member_wakes_for_its_requested_progress() {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(16, tx));
    let mut inline = InlineDispatcher::new(registry.clone(), rx);
    let member = registry.watch(WatchSpec::exact("/a").grouped()).unwrap();
    let request = member.progress_request();
    let (_, _, mut receiver) = member.into_receiver();
    let reader =
        tokio::spawn(async move { receiver.recv().await.map(|e| (e.event_type, e.revision)) });
    tokio::task::yield_now().await;
    inline.dispatch(&put("/b", 4));
    assert!(inline.request_progress(request));
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(got, Some((Progress, 4)));
}

/// A Progress asked for a watcher still being fed from the history would come before
/// events below its revision: it is held until the watcher has caught up, then sent.
#[test]
fn a_progress_asked_for_a_watcher_being_fed_comes_once_it_has_caught_up() {
    let (registry, mut inline) = with_history(2);
    for revision in 1..=10 {
        inline.dispatch(&put("/k", revision));
    }
    let mut resumed = registry
        .watch(WatchSpec::exact("/k").from_revision(1))
        .unwrap();
    inline.process_unregistrations();
    assert!(inline.catching_up(), "a buffer of 2 holds 2 of the 10");
    assert!(inline.request_progress(resumed.progress_request()));
    assert!(
        inline.request_progress(resumed.progress_request()),
        "asked twice, sent once"
    );
    let mut got = Vec::new();
    while inline.catching_up() {
        got.extend(drain(resumed.receiver_mut()));
        inline.continue_catch_up();
    }
    got.extend(drain(resumed.receiver_mut()));
    let mut want: Vec<_> = (1..=10).map(|revision| (Put, revision)).collect();
    want.push((Progress, 10));
    assert_eq!(got, want);
    inline.dispatch(&put("/k", 11));
    assert_eq!(drain(resumed.receiver_mut()), [(Put, 11)]);
    assert_eq!(registry.metrics().read().progress_sent, 1);
    inline.check_invariants();
}

/// A registration from a revision still queued behind a storm (admitted a slice at a time,
/// or not at all until the next event after a lag) is registered: a Progress asked for it
/// reaches it once it is taken, after its replay, whether it catches up at once or is fed.
#[test]
fn a_progress_asked_for_a_watch_still_queued_behind_a_storm_reaches_it_after_its_replay() {
    for (buffer, lag) in [(16, false), (2, false), (16, true)] {
        let (registry, mut inline) = with_history(buffer);
        for revision in 1..=5 {
            inline.dispatch(&put("/k", revision));
        }
        let from = if lag { 6 } else { 1 };
        // More than one admission slice.
        let mut storm: Vec<_> = (0..1000)
            .map(|_| {
                registry
                    .watch(WatchSpec::exact("/k").from_revision(from))
                    .unwrap()
            })
            .collect();
        if lag {
            // Nothing can be taken until the next event tells the history's floor.
            inline.report_lag(3);
        }
        let last = storm.len() - 1;
        assert!(inline.request_progress(storm[last].progress_request()));
        if lag {
            inline.dispatch(&put("/k", 6));
        }
        let mut got = Vec::new();
        for _ in 0..10_000 {
            inline.process_unregistrations();
            inline.continue_catch_up();
            for (i, watch) in storm.iter_mut().enumerate() {
                let events = drain(watch.receiver_mut());
                if i == last {
                    got.extend(events);
                }
            }
            if !inline.catching_up() && registry.metrics().read().resumes == 1000 {
                break;
            }
        }
        let want: Vec<_> = if lag {
            vec![(Put, 6), (Progress, 6)]
        } else {
            let mut want: Vec<_> = (1..=5).map(|revision| (Put, revision)).collect();
            want.push((Progress, 5));
            want
        };
        assert_eq!(got, want, "buffer {buffer}, lag {lag}");
        assert_eq!(registry.metrics().read().progress_sent, 1);
        inline.check_invariants();
    }
}

/// A heartbeat's revision (`last_applied`) may be above every event dispatched: a Progress
/// asked for afterwards must not go below the one the watcher already has.
#[test]
fn a_requested_progress_never_goes_below_a_heartbeat_already_sent() {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(16, tx));
    let mut inline = InlineDispatcher::new(registry.clone(), rx);
    let mut w = registry.watch(WatchSpec::exact("/a")).unwrap();
    inline.dispatch(&put("/a", 3));
    inline.broadcast_progress(8);
    assert!(inline.request_progress(w.progress_request()));
    assert_eq!(
        drain(w.receiver_mut()),
        [(Put, 3), (Progress, 8), (Progress, 8)]
    );
}

/// Asked for more often than it reads, a lone watcher overflows; a member must not keep a
/// list that grows with every request instead: at most a buffer's worth waits, and later
/// requests are not queued (it has older ones to read).
#[test]
fn a_member_asked_more_often_than_it_reads_keeps_at_most_a_buffer_of_progress() {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(4, tx));
    let mut inline = InlineDispatcher::new(registry.clone(), rx);
    let mut member = registry.watch(WatchSpec::exact("/a").grouped()).unwrap();
    // Events of other keys: the group's ring does not move.
    for revision in 1..=1_000 {
        inline.dispatch(&put("/b", revision));
        assert!(inline.request_progress(member.progress_request()));
        registry.check_invariants();
    }
    // An event of its own, then more requests: none is queued.
    inline.dispatch(&put("/a", 1_001));
    for _ in 0..1_000 {
        assert!(inline.request_progress(member.progress_request()));
    }
    registry.check_invariants();
    assert_eq!(
        drain_member(member.receiver_mut()),
        [
            (Progress, 1),
            (Progress, 2),
            (Progress, 3),
            (Progress, 4),
            (Put, 1_001)
        ]
    );
    // Read up, it is answered again.
    assert!(inline.request_progress(member.progress_request()));
    assert_eq!(drain_member(member.receiver_mut()), [(Progress, 1_001)]);
}
