//! Rule 9 of docs/CONTRACT.md: dropping a handle unregisters its watcher; `into_receiver` keeps it
//! registered until its receiver is found closed, or it overflows.
mod common;
use common::*;

in_both_modes! {
    async fn dropping_a_handle_unregisters_before_the_next_event(mode) {
        let mut bed = Bed::new(mode, 4, usize::MAX);
        let exact = bed.registry.register(b("/k"), true).unwrap();
        let prefix = bed.registry.register_prefix(b("/k/"), false).unwrap();
        let mut other = bed.registry.register(b("/k"), false).unwrap();
        drop(exact);
        drop(prefix);
        bed.send(put("/k", "v", 1));
        bed.settle().await;
        assert_eq!(bed.registry.watcher_count(&b("/k")), 1);
        assert_eq!(bed.registry.prefix_watcher_count(&b("/k/")), 0);
        assert_eq!(bed.registry.active_watcher_count(), 1);
        assert_eq!(revisions(other.receiver_mut()), vec![1]);
        bed.registry.check_invariants();
    }

    async fn into_receiver_keeps_the_watcher_and_returns_id_and_key(mode) {
        let mut bed = Bed::new(mode, 4, usize::MAX);
        let handle = bed.registry.register_prefix(b("/p/"), false).unwrap();
        let id = handle.id();
        let (got_id, key, mut rx) = handle.into_receiver();
        assert_eq!((got_id, key), (id, b("/p/")));
        bed.settle().await;
        assert_eq!(bed.registry.prefix_watcher_count(&b("/p/")), 1);
        bed.send(put("/p/x", "v", 1));
        bed.settle().await;
        assert_eq!(revisions(&mut rx), vec![1]);
        assert_eq!(bed.registry.active_watcher_count(), 1);
    }

    async fn into_receiver_watchers_leave_by_overflow(mode) {
        let mut bed = Bed::new(mode, 1, usize::MAX);
        let (_, _, mut rx) = bed.registry.register(b("/k"), false).unwrap().into_receiver();
        for rev in 1..=3 {
            bed.send(put("/k", "v", rev));
        }
        bed.settle().await;
        assert_eq!(revisions(&mut rx), vec![1, 0]);
        assert_eq!(bed.registry.active_watcher_count(), 0);
    }

    async fn dropping_after_removal_does_not_count_twice(mode) {
        let mut bed = Bed::new(mode, 0, usize::MAX);
        let overflowed = bed.registry.register(b("/k"), true).unwrap();
        let _kept = bed.registry.register(b("/other"), true).unwrap();
        bed.send(put("/k", "v", 1));
        bed.settle().await;
        assert_eq!(bed.registry.prev_kv_watcher_count(), 1);
        drop(overflowed);
        bed.settle().await;
        assert_eq!(bed.registry.prev_kv_watcher_count(), 1);
        assert_eq!(bed.registry.active_watcher_count(), 1);
    }
}

/// Rule 3's default, the reference's: a dropped watcher counts against the limit until the
/// dispatcher has processed its unregistration; with no dispatcher running, it keeps counting.
#[test]
fn by_default_a_dropped_watcher_counts_until_the_dispatcher_processes_it() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = std::sync::Arc::new(watchtrie::WatchRegistry::new_with_limits(4, 1, tx));
    let handle = registry.register(b("/k"), true).unwrap();
    drop(handle);
    assert_eq!(registry.active_watcher_count(), 1);
    assert_eq!(registry.prev_kv_watcher_count(), 1);
    assert!(registry.register(b("/k"), false).is_err(), "still counted");
    let mut inline = watchtrie::InlineDispatcher::new(registry.clone(), rx);
    inline.process_unregistrations();
    assert_eq!(registry.active_watcher_count(), 0);
    assert_eq!(registry.prev_kv_watcher_count(), 0);
    assert!(registry.register(b("/k"), false).is_ok());
    registry.check_invariants();
}

/// The opt-in: with no other writer busy, the drop removes its watcher at once, dispatcher
/// or not (sooner than the reference, never later).
#[test]
fn with_release_at_drop_a_drop_with_no_writer_busy_unregisters_at_once() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = watchtrie::WatchRegistry::new_with_limits(4, 1, tx);
    registry.set_options(watchtrie::RegistryOptions::default().with_release_at_drop(true));
    let handle = registry.register(b("/k"), true).unwrap();
    assert!(registry.register(b("/k"), false).is_err());
    drop(handle);
    assert_eq!(registry.active_watcher_count(), 0);
    assert_eq!(registry.prev_kv_watcher_count(), 0);
    assert_eq!(registry.watcher_count(&b("/k")), 0);
    assert!(registry.register(b("/k"), false).is_ok());
    registry.check_invariants();
}
