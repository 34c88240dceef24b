//! Rule 8 of docs/CONTRACT.md: a watcher whose receiver is gone is removed silently at the next
//! delivery attempt.
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

/// Opt-in: the closed-receiver sweep removes watchers whose receiver was dropped after
/// `into_receiver()` without any event for their key, so they stop counting against the
/// limit. By default (as in the reference) they count until an event reaches them.
mod sweep {
    use super::*;
    use std::time::Duration;
    use watchtrie::{DispatchOptions, WatchError};

    fn sweeping() -> DispatchOptions {
        DispatchOptions::default().with_closed_receiver_sweep(Duration::from_millis(10), 1_000)
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_sweep_a_dropped_receiver_keeps_counting_against_the_limit() {
        let mut bed = Bed::new(Mode::Task, 4, 1);
        drop(
            bed.registry
                .register(b("/k"), false)
                .unwrap()
                .into_receiver(),
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        bed.settle().await;
        assert!(matches!(
            bed.registry.register(b("/j"), false),
            Err(WatchError::LimitExceeded(1))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_frees_the_limit_without_an_event() {
        let mut bed = Bed::with_options(Mode::Task, 4, 2, 0, sweeping());
        drop(
            bed.registry
                .register(b("/k"), false)
                .unwrap()
                .into_receiver(),
        );
        drop(
            bed.registry
                .register_prefix(b("/p/"), true)
                .unwrap()
                .into_receiver(),
        );
        assert!(bed.registry.register(b("/j"), false).is_err());
        tokio::time::sleep(Duration::from_millis(25)).await;
        bed.settle().await;
        assert_eq!(bed.registry.active_watcher_count(), 0);
        assert_eq!(bed.registry.prev_kv_watcher_count(), 0);
        let m = bed.registry.metrics().read();
        assert_eq!(m.closed_receiver_removals, 2);
        assert!(bed.registry.register(b("/j"), false).is_ok());
        bed.registry.check_invariants();
    }

    #[tokio::test]
    async fn the_sweep_leaves_live_watchers_alone_and_each_call_is_bounded() {
        let mut bed = Bed::new(Mode::Inline, 4, usize::MAX);
        let mut live: Vec<_> = (0..50)
            .map(|i| {
                bed.registry
                    .register(b(&format!("/live/{i}")), false)
                    .unwrap()
            })
            .collect();
        for i in 0..200 {
            let h = bed
                .registry
                .register(b(&format!("/gone/{i}")), false)
                .unwrap();
            drop(h.into_receiver());
        }
        let mut calls = 0;
        while bed.registry.active_watcher_count() > 50 {
            let found = bed.inline().sweep_closed_receivers(8);
            assert!(found <= 8, "one call looked past its budget: {found}");
            calls += 1;
            assert!(calls < 10_000, "the sweep never finishes");
        }
        assert!(calls > 200 / 8, "bounded calls cannot do it in fewer");
        bed.send(put("/live/3", "v", 1));
        assert_eq!(revisions(live[3].receiver_mut()), vec![1]);
        assert_eq!(bed.inline().sweep_closed_receivers(1_000_000), 0);
        assert_eq!(bed.registry.active_watcher_count(), 50);
        live.clear();
        bed.registry.check_invariants();
    }
}
