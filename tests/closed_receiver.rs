//! Rule 8: a watcher whose receiver is gone is removed silently at the next delivery attempt.
mod common;
use common::*;

in_both_modes! {
    async fn a_closed_receiver_is_removed_at_the_next_matching_event(mode) {
        let mut bed = Bed::new(mode, 4, usize::MAX);
        let (_, _, rx) = bed.registry.register(b("/k"), false).unwrap().into_receiver();
        let (_, _, prx) = bed.registry.register_prefix(b("/p/"), false).unwrap().into_receiver();
        drop(rx);
        drop(prx);
        bed.send(put("/other", "v", 1));
        bed.settle().await;
        assert_eq!(bed.registry.active_watcher_count(), 2, "only a delivery attempt finds it");
        bed.send(put("/k", "v", 2));
        bed.send(put("/p/x", "v", 3));
        bed.settle().await;
        assert_eq!(bed.registry.active_watcher_count(), 0);
        assert_eq!(bed.registry.watched_key_count(), 0);
        assert_eq!(bed.registry.watched_prefix_count(), 0);
        bed.registry.check_invariants();
    }

    async fn a_closed_receiver_with_a_full_buffer_is_removed_too(mode) {
        let mut bed = Bed::new(mode, 2, usize::MAX);
        let (_, _, mut rx) = bed.registry.register(b("/k"), false).unwrap().into_receiver();
        bed.send(put("/k", "v", 1));
        bed.send(put("/k", "v", 2));
        bed.settle().await;
        assert_eq!(revisions(&mut rx), vec![1, 2]);
        drop(rx);
        bed.send(put("/k", "v", 3));
        bed.settle().await;
        assert_eq!(bed.registry.active_watcher_count(), 0);
    }
}
