//! A gap in the event stream (`GapReporter`): a store that jumps past some revisions (a Raft
//! follower installing a snapshot) broadcasts no event for them. Events sent before the gap
//! are delivered first; then nothing resumes across it without being told, and a watch from
//! a revision inside it is compacted. The rules: `GapReporter`'s docs and
//! docs/ARCHITECTURE.md, "History and catch-up".
mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use watchtrie::{
    CancelReason, DispatchOptions, HistoryOptions, InlineDispatcher, LagPolicy, WatchDispatcher,
    WatchEvent, WatchRegistry, WatchResponse, WatchSpec, WatcherHandle,
};

/// A put of `key` at `revision` (its value is not what these tests look at).
fn put(key: &str, revision: u64) -> WatchResponse {
    common::put(key, "v", revision)
}

fn options(policy: LagPolicy) -> DispatchOptions {
    DispatchOptions::default()
        .with_history(HistoryOptions::new(100, 1 << 20))
        .with_lag_policy(policy)
}

fn bed(policy: LagPolicy) -> (Arc<WatchRegistry>, InlineDispatcher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(16, tx));
    let inline = InlineDispatcher::new(registry.clone(), rx).with_options(options(policy));
    (registry, inline)
}

fn drain(handle: &mut WatcherHandle) -> Vec<WatchEvent> {
    std::iter::from_fn(|| handle.receiver_mut().try_recv().ok()).collect()
}

fn revisions(events: &[WatchEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

fn resume(registry: &WatchRegistry, inline: &mut InlineDispatcher, from: u64) -> WatcherHandle {
    let handle = registry
        .watch(WatchSpec::exact("/k").from_revision(from))
        .unwrap();
    inline.process_unregistrations();
    handle
}

#[test]
fn a_watch_from_inside_a_gap_is_compacted_past_it_and_one_after_it_resumes() {
    let (registry, mut inline) = bed(LagPolicy::Warn);
    for revision in 1..=5 {
        inline.dispatch(&put("/k", revision));
    }
    inline.report_gap(20);
    inline.dispatch(&put("/k", 21));
    inline.dispatch(&put("/k", 22));
    for from in [3, 10, 20] {
        let mut inside = resume(&registry, &mut inline, from);
        let got = drain(&mut inside);
        assert_eq!(
            got[0].cancel_reason(),
            Some(CancelReason::Compacted { oldest: 21 }),
            "from {from}"
        );
    }
    let mut after = resume(&registry, &mut inline, 21);
    assert_eq!(revisions(&drain(&mut after)), vec![21, 22]);
    assert_eq!(registry.metrics().read().gaps, 1);
    inline.check_invariants();
}

#[test]
fn events_sent_before_the_gap_are_delivered_before_it_is_acted_on() {
    let (registry, mut inline) = bed(LagPolicy::CancelWatchers);
    inline.dispatch(&put("/k", 1));
    let mut live = registry.watch(WatchSpec::exact("/k")).unwrap();
    inline.report_gap(9);
    // Broadcast before the store jumped: still delivered, the gap not acted on yet.
    inline.dispatch(&put("/k", 2));
    assert_eq!(registry.metrics().read().gaps, 0);
    inline.dispatch(&put("/k", 10));
    let got = drain(&mut live);
    assert_eq!(revisions(&got[..1]), vec![2]);
    assert_eq!(
        got[1].cancel_reason(),
        Some(CancelReason::Lagged { resume_from: 3 })
    );
    assert_eq!(got.len(), 2, "nothing after the cancel");
    inline.process_unregistrations();
    inline.check_invariants();
}

#[test]
fn watchers_catching_up_or_waiting_inside_the_gap_are_cancelled_where_to_resume() {
    for policy in [LagPolicy::Warn, LagPolicy::CancelWatchers] {
        let (tx, rx) = mpsc::unbounded_channel();
        // A buffer of 2: a resume from 1 is still being fed when the gap comes.
        let registry = Arc::new(WatchRegistry::new(2, tx));
        let mut inline = InlineDispatcher::new(registry.clone(), rx).with_options(options(policy));
        for revision in 1..=6 {
            inline.dispatch(&put("/k", revision));
        }
        let mut feeding = resume(&registry, &mut inline, 1);
        let mut inside = resume(&registry, &mut inline, 8);
        let mut past = resume(&registry, &mut inline, 13);
        let mut live = registry.watch(WatchSpec::exact("/k")).unwrap();
        assert!(inline.catching_up());
        inline.report_gap(12);
        inline.dispatch(&put("/k", 13));

        let got = drain(&mut feeding);
        // Its buffer held 1 and 2 (plus the sentinel's reserved slot): 3 is where to resume.
        assert_eq!(revisions(&got[..2]), vec![1, 2]);
        assert_eq!(
            got[2].cancel_reason(),
            Some(CancelReason::Lagged { resume_from: 3 })
        );
        let got = drain(&mut inside);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].cancel_reason(),
            Some(CancelReason::Lagged { resume_from: 8 })
        );
        // Nothing it wants was in the gap, whatever the policy does to live watchers.
        assert_eq!(revisions(&drain(&mut past)), vec![13], "{policy:?}");
        let got = drain(&mut live);
        match policy {
            // Not told, as with lost broadcasts.
            LagPolicy::Warn => assert_eq!(revisions(&got), vec![13]),
            // Cancelled from the gap's first revision.
            _ => assert_eq!(
                got.iter()
                    .map(WatchEvent::cancel_reason)
                    .collect::<Vec<_>>(),
                [Some(CancelReason::Lagged { resume_from: 7 })]
            ),
        }
        inline.process_unregistrations();
        assert!(!inline.catching_up());
        assert_eq!(registry.metrics().read().catching_up, 0);
        inline.check_invariants();
    }
}

/// Without history a watch from a revision above the head waits for it; a gap or a lag
/// that may have taken its start's events cancels it there as well.
#[test]
fn without_history_a_watcher_waiting_inside_a_gap_or_across_a_lag_is_cancelled_at_its_start() {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(4, tx));
    let mut inline = InlineDispatcher::new(registry.clone(), rx);
    inline.dispatch(&put("/k", 1));
    let mut inside = resume(&registry, &mut inline, 5);
    let mut past = resume(&registry, &mut inline, 11);
    inline.report_gap(9);
    inline.dispatch(&put("/k", 10));
    assert_eq!(
        drain(&mut inside)
            .iter()
            .map(WatchEvent::cancel_reason)
            .collect::<Vec<_>>(),
        [Some(CancelReason::Lagged { resume_from: 5 })]
    );
    inline.dispatch(&put("/k", 11));
    assert_eq!(revisions(&drain(&mut past)), vec![11]);
    let mut far = resume(&registry, &mut inline, 20);
    inline.report_lag(3);
    inline.dispatch(&put("/k", 20));
    assert_eq!(
        drain(&mut far)
            .iter()
            .map(WatchEvent::cancel_reason)
            .collect::<Vec<_>>(),
        [Some(CancelReason::Lagged { resume_from: 20 })]
    );
    inline.process_unregistrations();
    assert_eq!(registry.metrics().read().catching_up, 0);
    inline.check_invariants();
}

#[test]
fn a_gap_at_or_below_what_was_dispatched_changes_nothing() {
    let (registry, mut inline) = bed(LagPolicy::CancelWatchers);
    for revision in 1..=10 {
        inline.dispatch(&put("/k", revision));
    }
    let mut live = registry.watch(WatchSpec::exact("/k")).unwrap();
    inline.report_gap(7);
    inline.dispatch(&put("/k", 11));
    assert_eq!(revisions(&drain(&mut live)), vec![11]);
    let mut from_history = resume(&registry, &mut inline, 9);
    assert_eq!(revisions(&drain(&mut from_history)), vec![9, 10, 11]);
    assert_eq!(registry.metrics().read().gaps, 0);
    inline.check_invariants();
}

#[tokio::test]
async fn the_async_dispatcher_acts_on_a_gap_between_events_of_one_batch() {
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(16, unregister_tx));
    let mut live = registry.watch(WatchSpec::exact("/k")).unwrap();
    let (events_tx, events_rx) = broadcast::channel(64);
    let dispatcher = WatchDispatcher::new(
        registry.clone(),
        events_rx,
        unregister_rx,
        Arc::new(AtomicU64::new(0)),
        0,
    )
    .with_options(options(LagPolicy::CancelWatchers));
    let gaps = dispatcher.gap_reporter();
    // All queued before the dispatcher runs: it takes them as one batch.
    events_tx.send(put("/k", 1)).unwrap();
    events_tx.send(put("/k", 2)).unwrap();
    gaps.report(9);
    events_tx.send(put("/k", 10)).unwrap();
    let task = tokio::spawn(dispatcher.run());
    let mut got = Vec::new();
    while got.len() < 3 {
        // A guard against a hang, not a timing assertion.
        let event = tokio::time::timeout(Duration::from_secs(30), live.receiver_mut().recv())
            .await
            .expect("events never arrived")
            .expect("channel open");
        got.push(event);
    }
    assert_eq!(revisions(&got[..2]), vec![1, 2]);
    assert_eq!(
        got[2].cancel_reason(),
        Some(CancelReason::Lagged { resume_from: 3 })
    );
    drop(events_tx);
    task.await.unwrap();
    assert_eq!(registry.metrics().read().gaps, 1);
}
