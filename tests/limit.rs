//! Rule 3 of docs/CONTRACT.md: a registration fails with `LimitExceeded(max)` while `max` watchers
//! are active; concurrent registrations never overshoot; a watcher stops counting once its removal
//! is applied.
mod common;
use common::*;
use std::sync::Arc;
use watchtrie::WatchError;

in_both_modes! {
    async fn registration_fails_at_the_limit_and_succeeds_after_a_release(mode) {
        let mut bed = Bed::new(mode, 4, 2);
        let a = bed.registry.register(b("/a"), false).unwrap();
        let _p = bed.registry.register_prefix(b("/"), false).unwrap();
        assert_eq!(bed.registry.register(b("/b"), false).unwrap_err(), WatchError::LimitExceeded(2));
        assert_eq!(bed.registry.register_prefix(b("/b/"), false).unwrap_err(), WatchError::LimitExceeded(2));
        drop(a);
        bed.settle().await;
        assert_eq!(bed.registry.active_watcher_count(), 1);
        assert!(bed.registry.register(b("/b"), false).is_ok());
    }

    async fn overflowed_and_closed_watchers_release_their_slot(mode) {
        let mut bed = Bed::new(mode, 0, 2);
        let _overflows = bed.registry.register(b("/k"), false).unwrap();
        let (_, _, closed) = bed.registry.register(b("/k"), false).unwrap().into_receiver();
        drop(closed);
        assert!(bed.registry.register(b("/x"), false).is_err());
        bed.send(put("/k", "v", 1));
        bed.settle().await;
        assert_eq!(bed.registry.active_watcher_count(), 0);
        bed.registry.check_invariants();
    }

    async fn every_unregistration_queued_before_an_event_is_applied_before_it(mode) {
        // More drops than one round of removals: all of them stop counting before the
        // event is delivered (they were capped at 4,096 per event).
        const N: usize = 10_000;
        let mut bed = Bed::new(mode, 4, N + 1);
        let handles: Vec<_> = (0..N)
            .map(|i| bed.registry.register(b(&format!("/a/{i}")), false).unwrap())
            .collect();
        let mut live = bed.registry.register(b("/live"), false).unwrap();
        drop(handles);
        assert_eq!(bed.registry.active_watcher_count(), N + 1, "held until processed");
        bed.send(put("/live", "v", 1));
        let event = live.receiver_mut().recv().await.expect("delivered");
        assert_eq!(event.revision, 1);
        assert_eq!(bed.registry.active_watcher_count(), 1);
        bed.registry.check_invariants();
    }
}

#[test]
fn zero_limit_refuses_everything() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = watchtrie::WatchRegistry::new_with_limits(4, 0, tx);
    assert_eq!(
        registry.register(b("/a"), true).unwrap_err(),
        WatchError::LimitExceeded(0)
    );
    assert_eq!(registry.prev_kv_watcher_count(), 0);
    assert_eq!(registry.active_watcher_count(), 0);
}

#[test]
fn concurrent_registrations_never_overshoot() {
    const MAX: usize = 100;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = Arc::new(watchtrie::WatchRegistry::new_with_limits(1, MAX, tx));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let registry = registry.clone();
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0..50 {
                    let key = b(&format!("/t{t}/{i}"));
                    match if i % 2 == 0 {
                        registry.register(key, false)
                    } else {
                        registry.register_prefix(b(&format!("/t{t}/{i}/")), false)
                    } {
                        Ok(h) => kept.push(h),
                        Err(e) => assert_eq!(e, WatchError::LimitExceeded(MAX)),
                    }
                }
                kept
            })
        })
        .collect();
    let handles: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(handles.len(), MAX, "exactly the limit is admitted");
    assert_eq!(registry.active_watcher_count(), MAX);
    let mut ids: Vec<u64> = handles.iter().map(|h| h.id()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=MAX as u64).collect::<Vec<_>>(),
        "failures took no id"
    );
    registry.check_invariants();
}
