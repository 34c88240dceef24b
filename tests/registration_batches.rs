//! Registrations that arrive together share one publish: many threads registering at once
//! (combining) and one `watch_many` call. The rule they keep is the single registration's:
//! a watcher whose registration returned is in the published index, so every event
//! broadcast afterwards reaches it (docs/ARCHITECTURE.md, "Registering many at once").
use std::sync::{Arc, Barrier};

use bytes::Bytes;
use tokio::sync::mpsc;
use watchtrie::{
    Compact, DispatchOptions, HistoryOptions, InlineDispatcher, RegisterError, WatchEvent,
    WatchRegistry, WatchResponse, WatchSpec,
};

fn put(key: &str, revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
        revision,
        ..Default::default()
    }
}

fn bed(buffer: usize, max: usize) -> (Arc<WatchRegistry>, InlineDispatcher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new_with_limits(buffer, max, tx));
    let inline = InlineDispatcher::new(registry.clone(), rx);
    (registry, inline)
}

fn revisions(receiver: &mut watchtrie::CompactReceiver) -> Vec<u64> {
    std::iter::from_fn(|| receiver.try_recv().ok())
        .map(|e: WatchEvent| e.revision)
        .collect()
}

#[test]
fn registrations_racing_from_many_threads_are_each_published_when_they_return() {
    const THREADS: usize = 4;
    const EACH: usize = 2_000;
    let (registry, mut inline) = bed(4, usize::MAX);
    let start = Barrier::new(THREADS);
    let handles: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (registry, start) = (&registry, &start);
                scope.spawn(move || {
                    start.wait();
                    (0..EACH)
                        .map(|i| {
                            let key = Bytes::from(format!("/t{t}/{i}"));
                            let handle = registry.watch(WatchSpec::exact(key.clone())).unwrap();
                            // Returned, so in the published snapshot, whoever published it.
                            assert_eq!(registry.watcher_count(&key), 1);
                            handle
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    registry.check_invariants();
    let metrics = registry.metrics().read();
    // Every call either published a snapshot or found its watcher published by another's.
    assert_eq!(
        metrics.snapshots_published + metrics.registrations_combined,
        (THREADS * EACH) as u64
    );
    inline.dispatch(&put("/t3/1999", 7));
    let mut last: Vec<_> = handles.into_iter().flatten().collect();
    let mut receiver = last.pop().unwrap().into_receiver().2;
    assert_eq!(receiver.try_recv().unwrap().revision, 7);
}

#[test]
fn watch_many_publishes_one_snapshot_for_the_whole_batch() {
    let (registry, mut inline) = bed(4, usize::MAX);
    let before = registry.metrics().read().snapshots_published;
    let results =
        registry.watch_many((0..100).map(|i| WatchSpec::exact(format!("/k/{i}")).compact()));
    assert_eq!(registry.metrics().read().snapshots_published, before + 1);
    assert_eq!(registry.active_watcher_count(), 100);
    registry.check_invariants();
    let mut receivers: Vec<_> = results
        .into_iter()
        .map(|r| r.unwrap().into_receiver().2)
        .collect();
    for i in 0..100u64 {
        inline.dispatch(&put(&format!("/k/{i}"), i + 1));
    }
    for (i, receiver) in receivers.iter_mut().enumerate() {
        assert_eq!(revisions(receiver), vec![i as u64 + 1]);
    }
}

#[test]
fn watch_many_refuses_each_spec_on_its_own_and_in_order() {
    let (registry, _inline) = bed(4, 3);
    let specs: Vec<WatchSpec<Compact>> = vec![
        WatchSpec::exact("/a").compact(),
        WatchSpec::prefix("no-slash").compact(),
        WatchSpec::prefix("/b/").compact(),
        WatchSpec::range("/z", "/a").compact(),
        WatchSpec::exact("/c").compact(),
        WatchSpec::exact("/d").compact(),
    ];
    let outcomes: Vec<Result<(), RegisterError>> = registry
        .watch_many(specs)
        .into_iter()
        .map(|r| r.map(drop))
        .collect();
    // The handles were dropped just above: under the default, the dispatcher applies those
    // unregistrations, so the three slots are still taken here.
    assert_eq!(
        outcomes,
        vec![
            Ok(()),
            Err(RegisterError::InvalidPrefix),
            Ok(()),
            Err(RegisterError::EmptyRange),
            Ok(()),
            Err(RegisterError::LimitExceeded { max: 3 }),
        ]
    );
    registry.check_invariants();
}

#[test]
fn watch_many_delivers_what_one_watch_call_per_spec_delivers() {
    let specs = || -> Vec<WatchSpec<Compact>> {
        vec![
            WatchSpec::exact("/svc/a/health").compact(),
            WatchSpec::prefix("/svc/").prev_kv(true).compact(),
            WatchSpec::byte_prefix("/svc/a").compact(),
            WatchSpec::range("/svc/a", "/svc/b").compact(),
            WatchSpec::pattern("/svc/*/health").compact(),
            WatchSpec::exact("/svc/a/health").keys_only(true).compact(),
        ]
    };
    let events = [
        "/svc/a/health",
        "/svc/b/health",
        "/svc/a",
        "/other",
        "/svc/ab/x",
    ];
    let run = |batched: bool| -> Vec<Vec<(u64, Bytes, Option<Bytes>)>> {
        let (registry, mut inline) = bed(16, usize::MAX);
        let handles: Vec<_> = if batched {
            registry
                .watch_many(specs())
                .into_iter()
                .map(Result::unwrap)
                .collect()
        } else {
            specs()
                .into_iter()
                .map(|s| registry.watch(s).unwrap())
                .collect()
        };
        for (i, key) in events.iter().enumerate() {
            let mut event = put(key, i as u64 + 1);
            event.prev_value = Bytes::from_static(b"before");
            inline.dispatch(&event);
        }
        registry.check_invariants();
        handles
            .into_iter()
            .map(|h| {
                let mut receiver = h.into_receiver().2;
                std::iter::from_fn(|| receiver.try_recv().ok())
                    .map(|e| (e.revision, e.value, e.prev_value))
                    .collect()
            })
            .collect()
    };
    let (one_by_one, batched) = (run(false), run(true));
    assert_eq!(batched, one_by_one);
    assert!(
        batched.iter().all(|got| !got.is_empty()),
        "every spec matched something"
    );
}

#[test]
fn watch_many_mixes_live_watches_and_watches_from_a_revision() {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(8, tx));
    let mut inline = InlineDispatcher::new(registry.clone(), rx)
        .with_options(DispatchOptions::default().with_history(HistoryOptions::new(100, 1 << 20)));
    for revision in 1..=3 {
        inline.dispatch(&put("/k", revision));
    }
    let mut handles: Vec<_> = registry
        .watch_many([
            WatchSpec::exact("/k").compact(),
            WatchSpec::exact("/k").from_revision(2).compact(),
        ])
        .into_iter()
        .map(|r| r.unwrap().into_receiver().2)
        .collect();
    inline.dispatch(&put("/k", 4));
    assert_eq!(revisions(&mut handles[0]), vec![4]);
    assert_eq!(revisions(&mut handles[1]), vec![2, 3, 4]);
    inline.check_invariants();
}

#[test]
fn a_panicking_spec_iterator_leaves_no_slot_taken() {
    let (registry, _inline) = bed(4, 2);
    let r = registry.clone();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        r.watch_many((0..3).map(|i| {
            assert!(i < 2, "the caller's iterator fails");
            WatchSpec::exact(format!("/k/{i}")).compact()
        }))
    }));
    assert!(panicked.is_err());
    assert_eq!(registry.active_watcher_count(), 0);
    registry.check_invariants();
    // Both slots are still there to take.
    let kept = registry.watch_many([
        WatchSpec::exact("/a").compact(),
        WatchSpec::exact("/b").compact(),
    ]);
    assert!(kept.iter().all(Result::is_ok));
}

#[test]
fn an_empty_batch_publishes_nothing() {
    let (registry, _inline) = bed(4, usize::MAX);
    let before = registry.metrics().read().snapshots_published;
    assert!(registry
        .watch_many(Vec::<WatchSpec<Compact>>::new())
        .is_empty());
    assert_eq!(registry.metrics().read().snapshots_published, before);
}
