//! Compact watchers (`register_compact`, `register_prefix_compact`): the drop-in semantics
//! with a channel that holds no buffer while idle.
mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use std::pin::Pin;
use std::time::Duration;

use common::*;
use futures_core::Stream;
use watchtrie::{
    CompactReceiver, TryRecvError, WatchError, WatchEvent, WatchEventType, WatchRegistry,
};

fn take_all(rx: &mut CompactReceiver) -> Vec<WatchEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

in_both_modes! {
    async fn compact_watchers_get_what_drop_in_watchers_get(mode) {
        let mut bed = Bed::new(mode, 8, usize::MAX);
        let mut exact = bed.registry.register(b("/a/k"), true).unwrap();
        let mut prefix = bed.registry.register_prefix(b("/a/"), false).unwrap();
        let mut c_exact = bed.registry.register_compact(b("/a/k"), true).unwrap();
        let mut c_prefix = bed.registry.register_prefix_compact(b("/a/"), false).unwrap();
        assert_eq!((c_exact.id(), c_prefix.id()), (3, 4), "one id sequence");
        assert!(c_prefix.is_prefix() && !c_exact.is_prefix());
        let mut e = put("/a/k", "v2", 1);
        e.prev_value = b("v1");
        bed.send(e);
        bed.send(put("/a/other", "x", 2));
        bed.send(put("/b/k", "y", 3));
        bed.settle().await;
        assert_eq!(drain(exact.receiver_mut()), take_all(c_exact.receiver_mut()));
        assert_eq!(drain(prefix.receiver_mut()), take_all(c_prefix.receiver_mut()));
        assert_eq!(bed.registry.watcher_count(&b("/a/k")), 2);
        assert_eq!(bed.registry.prefix_watcher_count(&b("/a/")), 2);
        bed.registry.check_invariants();
    }

    async fn a_compact_watcher_that_falls_behind_gets_the_sentinel_last_then_the_end(mode) {
        let mut bed = Bed::new(mode, 2, usize::MAX);
        let mut h = bed.registry.register_compact(b("/k"), false).unwrap();
        assert_eq!(h.receiver_mut().max_capacity(), 3);
        for rev in 1..=5 {
            bed.send(put("/k", "v", rev));
        }
        bed.settle().await;
        let (_, _, mut rx) = h.into_receiver();
        let got = take_all(&mut rx);
        let revisions: Vec<u64> = got.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, vec![1, 2, 0]);
        assert_eq!(got[2].event_type, WatchEventType::Canceled);
        assert_eq!(got[2].key, b("/k"));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv().await, None);
        assert_eq!(bed.registry.active_watcher_count(), 0);
    }

    async fn dropping_a_compact_handle_unregisters_and_a_dropped_receiver_is_found_closed(mode) {
        let mut bed = Bed::new(mode, 4, 2);
        let h = bed.registry.register_compact(b("/k"), true).unwrap();
        let (_, _, rx) = bed.registry.register_prefix_compact(b("/p/"), false).unwrap().into_receiver();
        assert!(matches!(bed.registry.register_compact(b("/x"), false), Err(WatchError::LimitExceeded(2))));
        assert_eq!(bed.registry.prev_kv_watcher_count(), 1);
        drop(h);
        bed.settle().await;
        assert_eq!(bed.registry.active_watcher_count(), 1);
        assert_eq!(bed.registry.prev_kv_watcher_count(), 0);
        drop(rx);
        bed.send(put("/p/q", "v", 1));
        bed.settle().await;
        assert_eq!(bed.registry.active_watcher_count(), 0);
        bed.registry.check_invariants();
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_and_the_stream_interface_reach_compact_watchers() {
    let bed = Bed::with_heartbeat(Mode::Task, 4, usize::MAX, 100);
    let h = bed.registry.register_compact(b("/k"), false).unwrap();
    let (_, _, mut rx) = h.into_receiver();
    bed.last_applied
        .store(9, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(111)).await;
    let next = std::future::poll_fn(|cx| Pin::new(&mut rx).poll_next(cx)).await;
    let next = next.expect("a Progress event");
    assert_eq!(
        (next.event_type, next.revision),
        (WatchEventType::Progress, 9)
    );
    bed.shutdown().await;
}

#[test]
fn an_idle_compact_watcher_costs_a_fraction_of_a_drop_in_one() {
    const N: usize = 20_000;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = WatchRegistry::new(64, tx);
    let keys: Vec<_> = (0..N).map(|i| b(&format!("/compact/key/{i:08}"))).collect();
    // Handles are kept the way a caller keeps them: in a vector, inline.
    let per_watcher = |compact: bool| {
        let before = counting_alloc::thread_net();
        let grown = if compact {
            let _handles: Vec<_> = keys
                .iter()
                .map(|k| registry.register_compact(k.clone(), false).unwrap())
                .collect();
            counting_alloc::thread_net() - before
        } else {
            let _handles: Vec<_> = keys
                .iter()
                .map(|k| registry.register(k.clone(), false).unwrap())
                .collect();
            counting_alloc::thread_net() - before
        };
        grown as f64 / N as f64
    };
    let drop_in = per_watcher(false);
    let compact = per_watcher(true);
    eprintln!("heap per idle watcher, all-in: drop-in {drop_in:.0} B, compact {compact:.0} B");
    assert!(compact < 400.0, "compact watcher costs {compact:.0} B");
    assert!(compact * 10.0 < drop_in);
}

#[test]
fn a_delivery_to_a_lagging_compact_watcher_never_copies_its_backlog() {
    // A backlog grown by doubling would copy every waiting event in the delivery that
    // crosses a power of two, under the channel's lock: a dispatcher stall as long as the
    // lag. Kept in bounded chunks, a delivery allocates one chunk, or grows the list of
    // chunks (32 bytes for every 36 events): never a block near the backlog's own size.
    const N: u64 = 60_000;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = std::sync::Arc::new(WatchRegistry::new(N as usize, tx));
    let mut inline = watchtrie::InlineDispatcher::new(registry.clone(), rx);
    // Two on one key: the first delivery of an event is a copy of its own, the second a
    // shared one, so both kinds of backlog grow.
    let mut first = registry.register_compact(b("/lag/k"), false).unwrap();
    let mut second = registry.register_prefix_compact(b("/lag/"), false).unwrap();
    let events: Vec<_> = (1..=N).map(|r| put("/lag/k", "v", r)).collect();
    inline.dispatch(&events[0]);
    counting_alloc::reset_thread_largest();
    for e in &events[1..] {
        inline.dispatch(e);
    }
    let largest = counting_alloc::thread_largest();
    let backlog_bytes = N as usize * std::mem::size_of::<WatchEvent>();
    assert!(
        largest * 64 <= backlog_bytes,
        "a delivery allocated {largest} bytes at once for a backlog of {backlog_bytes}"
    );
    for rx in [first.receiver_mut(), second.receiver_mut()] {
        let got = take_all(rx);
        assert_eq!(got.len() as u64, N, "every event waited");
        assert!(
            got.iter()
                .zip(1..)
                .all(|(e, r)| e.revision == r && e.key == b("/lag/k")),
            "in order, whole"
        );
    }
    registry.check_invariants();
}
