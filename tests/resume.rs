//! Watches from a revision (`WatchSpec::from_revision`): history first, then live events,
//! with no gap and no duplicate at the seam; a start the history no longer holds gets a typed
//! Compacted cancel; a replay longer than the buffer is fed as the receiver drains; every
//! cancel says where to resume. The rules: docs/ARCHITECTURE.md, "History and catch-up".
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use watchtrie::{
    CancelReason, DispatchOptions, HistoryOptions, InlineDispatcher, LagPolicy, WatchDispatcher,
    WatchEvent, WatchEventType, WatchRegistry, WatchResponse, WatchSpec, WatcherHandle,
};

fn put(key: &str, revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from(format!("v{revision}")),
        revision,
        ..Default::default()
    }
}

fn with_history(events: usize) -> DispatchOptions {
    DispatchOptions::default().with_history(HistoryOptions::new(events, 1 << 20))
}

fn bed(buffer: usize, options: DispatchOptions) -> (Arc<WatchRegistry>, InlineDispatcher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(buffer, tx));
    let inline = InlineDispatcher::new(registry.clone(), rx).with_options(options);
    (registry, inline)
}

fn drain(handle: &mut WatcherHandle) -> Vec<WatchEvent> {
    std::iter::from_fn(|| handle.receiver_mut().try_recv().ok()).collect()
}

fn revisions(events: &[WatchEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

/// Keys `/a/0`, `/b/1`, `/a/2`, … at revisions 1, 2, 3, …: `/a/` matches the odd ones.
fn key_of(revision: u64) -> String {
    format!("/{}/{revision}", if revision % 2 == 1 { "a" } else { "b" })
}

#[test]
fn a_watch_from_a_revision_gets_history_then_live_events_without_gap_or_duplicate() {
    let (registry, mut inline) = bed(64, with_history(100));
    for revision in 1..=10 {
        inline.dispatch(&put(&key_of(revision), revision));
    }
    let mut watch = registry
        .watch(WatchSpec::prefix("/a/").from_revision(4))
        .unwrap();
    for revision in 11..=16 {
        inline.dispatch(&put(&key_of(revision), revision));
    }
    let got = drain(&mut watch);
    assert_eq!(revisions(&got), vec![5, 7, 9, 11, 13, 15]);
    assert_eq!(got[0].value, Bytes::from("v5"));
    assert_eq!(got[0].key, Bytes::from("/a/5"));
    inline.check_invariants();
    assert_eq!(registry.metrics().read().resumes, 1);
}

#[test]
fn every_target_kind_and_both_channels_resume() {
    let specs: [(WatchSpec, &[u64]); 5] = [
        (WatchSpec::exact("/a/3"), &[3]),
        (WatchSpec::prefix("/a/"), &[3, 5, 7]),
        (WatchSpec::byte_prefix("/b/"), &[2, 4, 6]),
        (WatchSpec::range("/a/4", "/b/3"), &[5, 7, 2]),
        (WatchSpec::pattern("/*/6"), &[6]),
    ];
    for (spec, want) in specs {
        let (registry, mut inline) = bed(8, with_history(100));
        for revision in 1..=4 {
            inline.dispatch(&put(&key_of(revision), revision));
        }
        let mut drop_in = registry.watch(spec.clone().from_revision(2)).unwrap();
        let mut compact = registry
            .watch(spec.clone().from_revision(2).compact())
            .unwrap();
        for revision in 5..=7 {
            inline.dispatch(&put(&key_of(revision), revision));
        }
        let mut want = want.to_vec();
        want.sort(); // revision order: history and live events alike
        let got = revisions(&drain(&mut drop_in));
        assert_eq!(got, want, "{spec:?}");
        let compact_got: Vec<u64> =
            std::iter::from_fn(|| compact.receiver_mut().try_recv().ok().map(|e| e.revision))
                .collect();
        assert_eq!(compact_got, want, "{spec:?} compact");
        inline.check_invariants();
    }
}

#[test]
fn a_start_the_history_no_longer_holds_gets_a_compacted_cancel_naming_the_oldest_revision() {
    let (registry, mut inline) = bed(16, with_history(3));
    for revision in 1..=10 {
        inline.dispatch(&put("/k", revision));
    }
    let mut old = registry
        .watch(WatchSpec::exact("/k").from_revision(2))
        .unwrap();
    inline.process_unregistrations();
    let got = drain(&mut old);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event_type, WatchEventType::Canceled);
    assert_eq!(
        got[0].cancel_reason(),
        Some(CancelReason::Compacted { oldest: 8 })
    );
    assert!(old.receiver_mut().try_recv().is_err());
    // Recovery: from the oldest revision named, everything held arrives.
    let mut again = registry
        .watch(WatchSpec::exact("/k").from_revision(8))
        .unwrap();
    inline.dispatch(&put("/k", 11));
    assert_eq!(revisions(&drain(&mut again)), vec![8, 9, 10, 11]);
    inline.check_invariants();
    assert_eq!(registry.metrics().read().compacted_cancels, 1);
    assert_eq!(
        registry.active_watcher_count(),
        1,
        "the compacted one is gone"
    );
}

#[test]
fn without_history_only_a_start_above_every_dispatched_revision_is_served() {
    let (registry, mut inline) = bed(16, DispatchOptions::default());
    for revision in 1..=5 {
        inline.dispatch(&put("/k", revision));
    }
    let mut past = registry
        .watch(WatchSpec::exact("/k").from_revision(5))
        .unwrap();
    let mut next = registry
        .watch(WatchSpec::exact("/k").from_revision(6))
        .unwrap();
    inline.dispatch(&put("/k", 6));
    let got = drain(&mut past);
    assert_eq!(
        got[0].cancel_reason(),
        Some(CancelReason::Compacted { oldest: 6 })
    );
    assert_eq!(revisions(&drain(&mut next)), vec![6]);
    inline.check_invariants();
}

/// After `/k` at revision 1, a watch of `/k` from revision 4 (above the head), with a
/// history of `history` events or none.
fn waiting_for_4(history: Option<usize>) -> (Arc<WatchRegistry>, InlineDispatcher, WatcherHandle) {
    let options = history.map_or(DispatchOptions::default(), with_history);
    let (registry, mut inline) = bed(16, options);
    inline.dispatch(&put("/k", 1));
    let watch = registry
        .watch(WatchSpec::exact("/k").from_revision(4))
        .unwrap();
    (registry, inline, watch)
}

#[test]
fn a_start_above_the_head_waits_for_it_and_gets_no_progress_before_it() {
    for history in [None, Some(100)] {
        let (_registry, mut inline, mut watch) = waiting_for_4(history);
        inline.dispatch(&put("/k", 2));
        inline.request_progress(watch.progress_request());
        inline.dispatch(&put("/k", 3));
        inline.dispatch(&put("/k", 4));
        inline.request_progress(watch.progress_request());
        inline.dispatch(&put("/k", 5));
        let got: Vec<_> = drain(&mut watch)
            .iter()
            .map(|e| (e.event_type, e.revision))
            .collect();
        use WatchEventType::{Progress, Put};
        assert_eq!(got, vec![(Put, 4), (Progress, 4), (Put, 5)], "{history:?}");
        inline.check_invariants();
    }
}

#[test]
fn a_progress_at_or_above_a_waiting_watchers_start_does_not_let_earlier_events_reach_it() {
    for history in [None, Some(100)] {
        let (_registry, mut inline, mut watch) = waiting_for_4(history);
        inline.process_unregistrations();
        // A heartbeat reads `last_applied`, which may be ahead of events still queued.
        inline.broadcast_progress(10);
        inline.dispatch(&put("/k", 2));
        inline.dispatch(&put("/k", 3));
        inline.dispatch(&put("/k", 4));
        let got: Vec<_> = drain(&mut watch)
            .iter()
            .map(|e| (e.event_type, e.revision))
            .collect();
        use WatchEventType::{Progress, Put};
        assert_eq!(got, vec![(Progress, 10), (Put, 4)], "{history:?}");
        inline.check_invariants();
    }
}

#[test]
fn a_waiting_watcher_is_live_once_events_reach_its_start_even_events_it_does_not_match() {
    let (registry, mut inline) = bed(16, with_history(100));
    inline.dispatch(&put("/other", 1));
    let mut watch = registry
        .watch(WatchSpec::exact("/k").from_revision(4))
        .unwrap();
    inline.dispatch(&put("/other", 2));
    assert_eq!(registry.metrics().read().catching_up, 1, "waits for 4");
    inline.check_invariants();
    // Nothing dispatched from now on can be below its start: it leaves the gauge, and a
    // dropped handle leaves nothing behind in the dispatcher.
    inline.dispatch(&put("/other", 3));
    assert_eq!(registry.metrics().read().catching_up, 0);
    inline.dispatch(&put("/other", 4));
    inline.check_invariants();
    inline.dispatch(&put("/k", 5));
    assert_eq!(revisions(&drain(&mut watch)), [5]);
    drop(watch);
    inline.process_unregistrations();
    assert_eq!(registry.active_watcher_count(), 0);
    inline.check_invariants();
}

#[test]
fn a_watcher_that_catches_up_during_an_event_leaves_the_gauge_with_that_event() {
    // Five to replay through a buffer of two: fed as the reader drains, the last of them
    // after an event that it does not match.
    let (registry, mut inline) = bed(2, with_history(100));
    for revision in 1..=5 {
        inline.dispatch(&put("/k", revision));
    }
    let mut watch = registry
        .watch(WatchSpec::exact("/k").from_revision(1))
        .unwrap();
    inline.process_unregistrations();
    assert_eq!(registry.metrics().read().catching_up, 1);
    let mut got = revisions(&drain(&mut watch));
    inline.dispatch(&put("/other", 6));
    got.extend(revisions(&drain(&mut watch)));
    inline.dispatch(&put("/other", 7));
    assert_eq!(
        registry.metrics().read().catching_up,
        0,
        "caught up by the feed after revision 7"
    );
    got.extend(revisions(&drain(&mut watch)));
    assert_eq!(got, [1, 2, 3, 4, 5]);
    inline.check_invariants();
}

#[test]
fn a_watcher_waiting_for_its_start_is_counted_without_a_history_too() {
    // No history: nothing to catch up from, but a start above the head still waits.
    let (registry, mut inline) = bed(16, DispatchOptions::default());
    inline.dispatch(&put("/other", 1));
    let mut watch = registry
        .watch(WatchSpec::exact("/k").from_revision(4))
        .unwrap();
    inline.process_unregistrations();
    assert_eq!(
        registry.metrics().read().catching_up,
        1,
        "taken in, waits for 4"
    );
    inline.dispatch(&put("/other", 2));
    assert_eq!(
        registry.metrics().read().catching_up,
        1,
        "still waits for 4"
    );
    inline.dispatch(&put("/other", 3));
    assert_eq!(
        registry.metrics().read().catching_up,
        0,
        "nothing below 4 can come"
    );
    inline.dispatch(&put("/k", 4));
    assert_eq!(revisions(&drain(&mut watch)), [4]);
    inline.check_invariants();
}

#[test]
fn a_dropped_watcher_waiting_for_a_far_start_leaves_nothing_behind() {
    let (registry, mut inline) = bed(16, with_history(100));
    inline.dispatch(&put("/k", 1));
    let watch = registry
        .watch(WatchSpec::exact("/k").from_revision(1_000_000))
        .unwrap();
    inline.dispatch(&put("/k", 2));
    assert_eq!(registry.metrics().read().catching_up, 1);
    drop(watch);
    inline.process_unregistrations();
    assert_eq!(registry.active_watcher_count(), 0);
    assert_eq!(registry.metrics().read().catching_up, 0, "still held");
    inline.check_invariants();
}

#[test]
fn a_replay_longer_than_the_buffer_is_fed_as_the_receiver_drains_and_never_overflows() {
    let (registry, mut inline) = bed(4, with_history(1000));
    for revision in 1..=100 {
        inline.dispatch(&put("/k", revision));
    }
    let mut watch = registry
        .watch(WatchSpec::exact("/k").from_revision(1))
        .unwrap();
    let mut got = Vec::new();
    let mut live = 101;
    for _ in 0..1000 {
        // Live events keep coming while it catches up: it gets them after the replay.
        if live <= 120 {
            inline.dispatch(&put("/k", live));
            live += 1;
        }
        got.extend(drain(&mut watch));
        inline.continue_catch_up();
        inline.check_invariants();
    }
    got.extend(drain(&mut watch));
    assert!(!inline.catching_up());
    assert_eq!(revisions(&got), (1..=120).collect::<Vec<_>>());
    assert_eq!(registry.metrics().read().overflow_cancels, 0);
}

#[test]
fn a_replay_to_a_buffer_that_holds_no_event_overflows_at_once_naming_where_to_resume() {
    // Buffer size 0: every event overflows, live or replayed; waiting would never end.
    let (registry, mut inline) = bed(0, with_history(100));
    for revision in 1..=5 {
        inline.dispatch(&put(&key_of(revision), revision));
    }
    // Both channel kinds: their specs and handles are different types.
    macro_rules! overflows_at_once {
        ($spec:expr) => {{
            let mut watch = registry.watch($spec.from_revision(2)).unwrap();
            inline.process_unregistrations();
            let got: Vec<WatchEvent> =
                std::iter::from_fn(|| watch.receiver_mut().try_recv().ok()).collect();
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(
                got[0].cancel_reason(),
                Some(CancelReason::BufferOverflowAt { resume_from: 3 })
            );
            assert!(!inline.catching_up());
            inline.process_unregistrations();
            assert_eq!(registry.active_watcher_count(), 0);
            inline.check_invariants();
        }};
    }
    overflows_at_once!(WatchSpec::prefix("/a/"));
    overflows_at_once!(WatchSpec::prefix("/a/").compact());
    assert_eq!(registry.metrics().read().overflow_cancels, 2);
}

#[test]
fn the_history_dropping_an_event_a_catching_up_watcher_still_needs_cancels_it_as_compacted() {
    let (registry, mut inline) = bed(2, with_history(5));
    for revision in 1..=5 {
        inline.dispatch(&put("/k", revision));
    }
    // Room for two events at a time (one slot is the sentinel's): it stops at revision 3.
    let mut watch = registry
        .watch(WatchSpec::exact("/k").from_revision(1))
        .unwrap();
    inline.process_unregistrations();
    // Events on other keys push 2..=5 out of the history.
    for revision in 6..=9 {
        inline.dispatch(&put("/other", revision));
    }
    let mut got = drain(&mut watch);
    inline.continue_catch_up();
    got.extend(drain(&mut watch));
    // Cancelled as the event under its cursor (revision 3) went, with the floor of then.
    let (cancel, delivered) = got.split_last().unwrap();
    assert_eq!(revisions(delivered), vec![1, 2]);
    assert_eq!(
        cancel.cancel_reason(),
        Some(CancelReason::Compacted { oldest: 4 })
    );
    inline.check_invariants();
}

#[test]
fn dropping_only_unrelated_events_does_not_compact_a_catching_up_watcher() {
    let (registry, mut inline) = bed(1, with_history(3));
    inline.dispatch(&put("/k", 1));
    inline.dispatch(&put("/k", 2));
    let mut watch = registry
        .watch(WatchSpec::exact("/k").from_revision(1))
        .unwrap();
    inline.process_unregistrations();
    for revision in 3..=4 {
        inline.dispatch(&put("/other", revision));
    }
    let mut got = drain(&mut watch); // 1; its cursor rests on 2, still held, 1 dropped
    inline.continue_catch_up();
    got.extend(drain(&mut watch));
    for revision in 5..=8 {
        inline.dispatch(&put("/other", revision));
        got.extend(drain(&mut watch));
        inline.continue_catch_up();
    }
    inline.dispatch(&put("/k", 9));
    got.extend(drain(&mut watch));
    assert_eq!(revisions(&got), vec![1, 2, 9]);
    inline.check_invariants();
}

#[test]
fn with_history_every_cancel_says_where_to_resume() {
    // Overflow: the revision of the event that did not fit.
    let (registry, mut inline) = bed(1, with_history(100));
    let mut watch = registry.watch(WatchSpec::exact("/k")).unwrap();
    inline.dispatch(&put("/k", 1));
    inline.dispatch(&put("/k", 2));
    let got = drain(&mut watch);
    assert_eq!(
        got[1].cancel_reason(),
        Some(CancelReason::BufferOverflowAt { resume_from: 2 })
    );
    assert_eq!(got[1].key, Bytes::from("/k"));
    // Without history, the reference's sentinel.
    let (registry, mut inline) = bed(1, DispatchOptions::default());
    let mut watch = registry.watch(WatchSpec::exact("/k")).unwrap();
    inline.dispatch(&put("/k", 1));
    inline.dispatch(&put("/k", 2));
    let got = drain(&mut watch);
    assert_eq!(got[1].cancel_reason(), Some(CancelReason::BufferOverflow));
    assert_eq!((got[1].revision, got[1].value.is_empty()), (0, true));
}

#[test]
fn a_lag_cancels_catching_up_watchers_with_the_first_revision_they_did_not_get() {
    for policy in [LagPolicy::Warn, LagPolicy::CancelWatchers] {
        let (registry, mut inline) = bed(2, with_history(100).with_lag_policy(policy));
        for revision in 1..=5 {
            inline.dispatch(&put("/k", revision));
        }
        let mut watch = registry
            .watch(WatchSpec::exact("/k").from_revision(2))
            .unwrap();
        inline.process_unregistrations();
        inline.report_lag(3);
        let got = drain(&mut watch);
        assert_eq!(revisions(&got[..2]), vec![2, 3]);
        assert_eq!(
            got[2].cancel_reason(),
            Some(CancelReason::Lagged { resume_from: 4 })
        );
        // Until the next event, the floor is unknown: a resume waits for it.
        let mut later = registry
            .watch(WatchSpec::exact("/k").from_revision(3))
            .unwrap();
        inline.process_unregistrations();
        assert!(later.receiver_mut().try_recv().is_err());
        inline.dispatch(&put("/k", 9));
        inline.process_unregistrations();
        let got = drain(&mut later);
        assert_eq!(
            got[0].cancel_reason(),
            Some(CancelReason::Compacted { oldest: 9 })
        );
        inline.check_invariants();
    }
}

#[test]
fn a_lag_cancels_a_catching_up_watcher_whose_next_event_is_gone_as_compacted() {
    // More catching-up watchers than one event's turn visits, so that the history drops
    // the event under some cursors before those watchers are looked at again.
    let (registry, mut inline) = bed(2, with_history(5));
    for revision in 1..=5 {
        inline.dispatch(&put("/k", revision));
    }
    let mut watches: Vec<_> = (0..100)
        .map(|_| {
            registry
                .watch(WatchSpec::exact("/k").from_revision(1))
                .unwrap()
        })
        .collect();
    inline.process_unregistrations();
    for revision in 6..=8 {
        inline.dispatch(&put("/other", revision)); // 1..=3 leave the history
    }
    inline.report_lag(2);
    for watch in &mut watches {
        let got = drain(watch);
        let (cancel, delivered) = got.split_last().unwrap();
        assert_eq!(revisions(delivered), vec![1, 2]);
        // Revision 3 is gone: "resume from 9" would skip it.
        assert_eq!(
            cancel.cancel_reason(),
            Some(CancelReason::Compacted { oldest: 4 })
        );
    }
    inline.check_invariants();
}

#[test]
fn a_lag_cancels_watchers_waiting_for_their_start_with_that_start() {
    // Events lost to lag may be at or above a waiting watcher's start: it must not go on
    // as if it had missed nothing. Resuming from its own start is exact.
    for policy in [LagPolicy::Warn, LagPolicy::CancelWatchers] {
        let (registry, mut inline) = bed(4, with_history(100).with_lag_policy(policy));
        for revision in 1..=5 {
            inline.dispatch(&put("/k", revision));
        }
        let mut ahead = registry
            .watch(WatchSpec::exact("/k").from_revision(8))
            .unwrap();
        let mut live = registry.watch(WatchSpec::exact("/k")).unwrap();
        inline.process_unregistrations();
        assert_eq!(registry.metrics().read().catching_up, 1);
        // Lost: perhaps revisions 6 to 9, the watcher's 8 and 9 among them.
        inline.report_lag(4);
        assert_eq!(
            registry.metrics().read().catching_up,
            0,
            "cancelled by the lag, not waiting any more"
        );
        inline.dispatch(&put("/k", 10));
        let got = drain(&mut ahead);
        assert_eq!(got.len(), 1, "nothing after the cancel: {got:?}");
        assert_eq!(
            got[0].cancel_reason(),
            Some(CancelReason::Lagged { resume_from: 8 })
        );
        // A live watcher is the lag policy's: under Warn it goes on, as in the reference.
        let live_got = drain(&mut live);
        match policy {
            LagPolicy::Warn => assert_eq!(revisions(&live_got), vec![10]),
            _ => assert_eq!(
                live_got[0].cancel_reason(),
                Some(CancelReason::Lagged { resume_from: 6 })
            ),
        }
        inline.process_unregistrations();
        assert_eq!(registry.metrics().read().catching_up, 0);
        inline.check_invariants();
    }
}

#[test]
fn a_handle_dropped_before_the_dispatcher_took_its_watch_leaves_nothing_behind() {
    for release_at_drop in [false, true] {
        let (registry, mut inline) = bed(4, with_history(10));
        registry.set_options(
            watchtrie::RegistryOptions::default().with_release_at_drop(release_at_drop),
        );
        inline.dispatch(&put("/k", 1));
        let watch = registry
            .watch(WatchSpec::exact("/k").from_revision(1))
            .unwrap();
        drop(watch);
        inline.dispatch(&put("/k", 2));
        inline.process_unregistrations();
        inline.continue_catch_up();
        assert_eq!(
            registry.active_watcher_count(),
            0,
            "release_at_drop {release_at_drop}"
        );
        inline.check_invariants();
    }
}

#[test]
fn a_storm_of_resumes_is_admitted_over_several_turns_and_each_still_gets_every_event() {
    // More than one turn admits: the later ones get what came meanwhile from the history.
    let storm = 3_000;
    let (registry, mut inline) = bed(16, with_history(100));
    inline.dispatch(&put("/k", 1));
    let mut watches: Vec<_> = (0..storm)
        .map(|_| {
            registry
                .watch(WatchSpec::exact("/k").from_revision(1))
                .unwrap()
        })
        .collect();
    for revision in 2..=4 {
        inline.dispatch(&put("/k", revision));
        inline.check_invariants();
    }
    while registry.metrics().read().resumes < storm as u64 {
        inline.process_unregistrations();
    }
    for revision in 5..=6 {
        inline.dispatch(&put("/k", revision));
    }
    while inline.catching_up() {
        inline.continue_catch_up();
    }
    for watch in &mut watches {
        assert_eq!(revisions(&drain(watch)), [1, 2, 3, 4, 5, 6]);
    }
    inline.check_invariants();
}

#[test]
fn watchers_admitted_together_each_get_exactly_their_own_events_even_when_buffers_fill() {
    // One admission takes all of them and feeds them as a group, in one pass over the
    // history; those whose buffer fills on the way go on alone as their receivers drain.
    type Matches = fn(&str) -> bool;
    let targets: [(WatchSpec, Matches); 5] = [
        (WatchSpec::exact("/a/9"), |k| k == "/a/9"),
        (WatchSpec::prefix("/a/"), |k| k.starts_with("/a/")),
        (WatchSpec::byte_prefix("/b/1"), |k| k.starts_with("/b/1")),
        (WatchSpec::range("/a/5", "/b/3"), |k| {
            ("/a/5".."/b/3").contains(&k)
        }),
        (WatchSpec::pattern("/*/1"), |k| {
            k.ends_with("/1") && k.matches('/').count() == 2
        }),
    ];
    let (registry, mut inline) = bed(3, with_history(100));
    for revision in 1..=20 {
        inline.dispatch(&put(&key_of(revision), revision));
    }
    let mut watches = Vec::new();
    for (spec, matches) in &targets {
        for start in [1, 4, 11, 20, 21, 23] {
            for compact in [false, true] {
                let spec = spec.clone().from_revision(start);
                let drain: Box<dyn FnMut() -> Vec<u64>> = if compact {
                    let mut watch = registry.watch(spec.compact()).unwrap();
                    Box::new(move || {
                        let rx = watch.receiver_mut();
                        std::iter::from_fn(|| rx.try_recv().ok().map(|e| e.revision)).collect()
                    })
                } else {
                    let mut watch = registry.watch(spec).unwrap();
                    Box::new(move || revisions(&drain(&mut watch)))
                };
                let want: Vec<u64> = (start..=24).filter(|&r| matches(&key_of(r))).collect();
                watches.push((drain, want, Vec::new()));
            }
        }
    }
    for revision in 21..=24 {
        inline.dispatch(&put(&key_of(revision), revision));
        inline.check_invariants();
    }
    // Bounded: a watcher short of its events fails the comparison below, not a hang.
    for _ in 0..1_000 {
        for (drain, _, got) in &mut watches {
            got.extend(drain());
        }
        if !inline.catching_up() && watches.iter().all(|(_, want, got)| got.len() >= want.len()) {
            break;
        }
        inline.continue_catch_up();
        inline.check_invariants();
    }
    for (i, (_, want, got)) in watches.iter().enumerate() {
        assert_eq!(got, want, "watcher {i}: {:?}", targets[i / 12].0);
    }
}

#[test]
fn a_handle_dropped_while_its_resume_waits_behind_a_storm_finds_its_watcher_added() {
    for release_at_drop in [false, true] {
        let (registry, mut inline) = bed(16, with_history(100));
        registry.set_options(
            watchtrie::RegistryOptions::default().with_release_at_drop(release_at_drop),
        );
        inline.dispatch(&put("/k", 1));
        let storm: Vec<_> = (0..3_000)
            .map(|_| {
                registry
                    .watch(WatchSpec::exact("/k").from_revision(1))
                    .unwrap()
            })
            .collect();
        let last = registry
            .watch(WatchSpec::exact("/other").from_revision(1))
            .unwrap();
        inline.dispatch(&put("/k", 2)); // admits the first slice only
        drop(last);
        inline.process_unregistrations();
        inline.check_invariants();
        assert_eq!(registry.metrics().read().resumes, 3_001);
        assert_eq!(registry.active_watcher_count(), 3_000, "{release_at_drop}");
        drop(storm);
        inline.process_unregistrations();
        assert_eq!(registry.active_watcher_count(), 0, "{release_at_drop}");
        inline.check_invariants();
    }
}

#[test]
fn a_handle_dropped_while_its_resume_waits_out_a_lag_leaves_nothing_behind() {
    for release_at_drop in [false, true] {
        let (registry, mut inline) = bed(16, with_history(100));
        registry.set_options(
            watchtrie::RegistryOptions::default().with_release_at_drop(release_at_drop),
        );
        inline.dispatch(&put("/k", 1));
        inline.report_lag(2);
        // The floor is unknown until the next event: the resume stays queued.
        let watch = registry
            .watch(WatchSpec::exact("/k").from_revision(2).prev_kv(true))
            .unwrap();
        inline.process_unregistrations();
        assert_eq!(registry.active_watcher_count(), 1);
        drop(watch);
        inline.process_unregistrations();
        assert_eq!(registry.active_watcher_count(), 0, "{release_at_drop}");
        assert_eq!(registry.prev_kv_watcher_count(), 0);
        inline.check_invariants();
        inline.dispatch(&put("/k", 5));
        inline.process_unregistrations();
        assert_eq!(
            registry.active_watcher_count(),
            0,
            "nothing added after the drop"
        );
        assert_eq!(registry.metrics().read().watchers, 0);
        inline.check_invariants();
    }
}

/// The async dispatcher, with events flowing from another task: watchers registered from
/// revisions at arbitrary moments each get exactly the matching revisions from their start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seam_is_exact_while_events_keep_being_dispatched() {
    const EVENTS: u64 = 3000;
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    // Room for every event: a slow reader must not be cancelled for overflow here (replays
    // never overflow; the inline tests feed a small buffer as it drains).
    let registry = Arc::new(WatchRegistry::new(EVENTS as usize + 1, unregister_tx));
    let (events_tx, events_rx) = broadcast::channel(4096);
    let last_applied = Arc::new(AtomicU64::new(0));
    let dispatcher = WatchDispatcher::new(
        registry.clone(),
        events_rx,
        unregister_rx,
        last_applied.clone(),
        0,
    )
    .with_options(with_history(EVENTS as usize));
    let task = tokio::spawn(dispatcher.run());
    let producer = {
        let last_applied = last_applied.clone();
        tokio::spawn(async move {
            for revision in 1..=EVENTS {
                events_tx.send(put(&key_of(revision), revision)).unwrap();
                last_applied.store(revision, Ordering::Release);
                if revision % 50 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            events_tx
        })
    };
    let mut readers = Vec::new();
    for i in 0..20u64 {
        tokio::time::sleep(Duration::from_micros(300)).await;
        let start = last_applied
            .load(Ordering::Acquire)
            .saturating_sub(i * 7)
            .max(1);
        let spec = if i % 2 == 0 {
            WatchSpec::prefix("/a/")
        } else {
            WatchSpec::byte_prefix("/")
        };
        let mut handle = registry.watch(spec.from_revision(start)).unwrap();
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_secs(10), handle.receiver_mut().recv()).await
            {
                assert_ne!(event.event_type, WatchEventType::Canceled, "{event:?}");
                got.push(event.revision);
                if event.revision == EVENTS || (i % 2 == 0 && event.revision == EVENTS - 1) {
                    break;
                }
            }
            (i, start, got)
        }));
    }
    let events_tx = producer.await.unwrap();
    for reader in readers {
        let (i, start, got) = reader.await.unwrap();
        let want: Vec<u64> = (start..=EVENTS)
            .filter(|r| i % 2 == 1 || r % 2 == 1)
            .collect();
        assert_eq!(got, want, "watcher {i} from {start}");
    }
    drop(events_tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the dispatcher stops")
        .unwrap();
}

/// The async loop takes an unregistration as the inline dispatcher does: a watch from a far
/// revision, registered and dropped before the dispatcher woke, leaves nothing waiting.
#[tokio::test]
async fn a_watch_dropped_before_the_async_dispatcher_took_it_leaves_nothing_waiting() {
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(16, unregister_tx));
    let (events_tx, events_rx) = broadcast::channel(16);
    let dispatcher = WatchDispatcher::new(
        registry.clone(),
        events_rx,
        unregister_rx,
        Arc::new(AtomicU64::new(0)),
        0,
    )
    .with_options(with_history(100));
    let task = tokio::spawn(dispatcher.run());
    let mut live = registry.register(Bytes::from("/k"), false).unwrap();
    let settle = || tokio::time::sleep(Duration::from_millis(20));
    events_tx.send(put("/k", 1)).unwrap();
    settle().await;
    // Both on this thread, so the dispatcher wakes to the registration and the drop at once.
    drop(
        registry
            .watch(WatchSpec::exact("/k").from_revision(1_000_000))
            .unwrap(),
    );
    settle().await;
    events_tx.send(put("/k", 2)).unwrap();
    settle().await;
    assert_eq!(revisions(&drain(&mut live)), [1, 2]);
    let metrics = registry.metrics().read();
    assert_eq!((metrics.watchers, metrics.catching_up), (1, 0));
    drop(events_tx);
    task.await.unwrap();
}
