//! Rule 7 of docs/CONTRACT.md: a channel holds buffer + 1 events, one slot kept for the cancel
//! sentinel. A watcher that never reads gets exactly `buffer` events, then the sentinel (carrying
//! the event's key), then nothing; buffer 0 cancels on the first event.
mod common;
use common::*;
use tokio::sync::mpsc::error::TryRecvError;
use watchtrie::{WatchEvent, WatchEventType};

fn sentinel(key: &str) -> WatchEvent {
    WatchEvent {
        event_type: WatchEventType::Canceled,
        key: b(key),
        value: b(""),
        prev_value: None,
        revision: 0,
    }
}

in_both_modes! {
    async fn a_silent_watcher_gets_buffer_events_then_the_sentinel(mode) {
        for buffer in [0usize, 1, 2, 5] {
            let mut bed = Bed::new(mode, buffer, usize::MAX);
            let mut exact = bed.registry.register(b("/p/k"), true).unwrap();
            let mut prefix = bed.registry.register_prefix(b("/p/"), true).unwrap();
            for rev in 1..=(buffer as u64 + 3) {
                bed.send(put("/p/k", "v", rev));
            }
            bed.settle().await;
            for h in [&mut exact, &mut prefix] {
                let got = drain(h.receiver_mut());
                assert_eq!(got.len(), buffer + 1, "buffer {buffer}");
                assert!(got[..buffer].iter().all(|e| e.event_type == WatchEventType::Put));
                assert_eq!(got[buffer], sentinel("/p/k"));
                // Removed from the index, the watcher's channel is closed: recv() ends.
                assert_eq!(h.receiver_mut().try_recv(), Err(TryRecvError::Disconnected));
            }
            assert_eq!(bed.registry.active_watcher_count(), 0);
            assert_eq!(bed.registry.prev_kv_watcher_count(), 0);
            bed.registry.check_invariants();
        }
    }

    async fn the_sentinel_carries_the_event_key_not_the_watched_prefix(mode) {
        let mut bed = Bed::new(mode, 1, usize::MAX);
        let mut h = bed.registry.register_prefix(b("/p/"), false).unwrap();
        bed.send(put("/p/first", "v", 1));
        bed.send(put("/p/second/deeper", "v", 2));
        bed.send(put("/p/third", "v", 3));
        bed.settle().await;
        let got = drain(h.receiver_mut());
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], sentinel("/p/second/deeper"));
    }

    async fn a_reader_that_keeps_up_is_never_cancelled(mode) {
        let mut bed = Bed::new(mode, 2, usize::MAX);
        let mut h = bed.registry.register(b("/k"), false).unwrap();
        for rev in 1..=50 {
            bed.send(put("/k", "v", rev));
            bed.settle().await;
            assert_eq!(revisions(h.receiver_mut()), vec![rev]);
        }
        assert_eq!(bed.registry.active_watcher_count(), 1);
    }

    async fn one_overflow_leaves_other_watchers_of_the_key_alone(mode) {
        let mut bed = Bed::new(mode, 1, usize::MAX);
        let mut slow = bed.registry.register(b("/k"), false).unwrap();
        let mut fast = bed.registry.register(b("/k"), false).unwrap();
        for rev in 1..=4 {
            bed.send(put("/k", "v", rev));
            bed.settle().await;
            assert_eq!(revisions(fast.receiver_mut()), vec![rev]);
        }
        let got = drain(slow.receiver_mut());
        assert_eq!(got.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(bed.registry.watcher_count(&b("/k")), 1);
    }
}
