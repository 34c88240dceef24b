//! Rule 4 of docs/CONTRACT.md: the prev_kv counter goes up at registration with `prev_kv = true`
//! and down when that watcher's removal is applied (drop, overflow or closed receiver).
mod common;
use common::*;
use std::sync::atomic::Ordering;

in_both_modes! {
    async fn counter_follows_prev_kv_watchers_through_every_removal(mode) {
        let mut bed = Bed::new(mode, 0, usize::MAX);
        let shared = bed.registry.prev_kv_watcher_count_arc();
        let dropped = bed.registry.register(b("/d"), true).unwrap();
        let _plain = bed.registry.register(b("/d"), false).unwrap();
        let _overflows = bed.registry.register_prefix(b("/o/"), true).unwrap();
        let (_, _, closed) = bed.registry.register(b("/c"), true).unwrap().into_receiver();
        assert_eq!(bed.registry.prev_kv_watcher_count(), 3);
        assert_eq!(shared.load(Ordering::Relaxed), 3);

        drop(dropped);
        bed.settle().await;
        assert_eq!(bed.registry.prev_kv_watcher_count(), 2);

        bed.send(put("/o/x", "v", 1));
        bed.settle().await;
        assert_eq!(bed.registry.prev_kv_watcher_count(), 1);

        drop(closed);
        bed.send(put("/c", "v", 2));
        bed.settle().await;
        assert_eq!(bed.registry.prev_kv_watcher_count(), 0);
        assert_eq!(shared.load(Ordering::Relaxed), 0);
        assert_eq!(bed.registry.active_watcher_count(), 1);
    }
}
