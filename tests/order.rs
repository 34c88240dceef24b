//! Rule 10 of docs/CONTRACT.md: each watcher sees events in broadcast order, each at most once;
//! pending unregistrations are applied before the next event.
mod common;
use common::*;

in_both_modes! {
    async fn every_watcher_sees_broadcast_order_once(mode) {
        let mut bed = Bed::new(mode, 1000, usize::MAX);
        let mut hs = [
            bed.registry.register(b("/a/b"), false).unwrap(),
            bed.registry.register_prefix(b("/"), false).unwrap(),
            bed.registry.register_prefix(b("/a/"), false).unwrap(),
        ];
        let keys = ["/a/b", "/a/c", "/x", "/a/b", "/a/"];
        for rev in 1..=500u64 {
            bed.send(put(keys[rev as usize % keys.len()], "v", rev));
        }
        bed.settle().await;
        let all: Vec<u64> = (1..=500).collect();
        let under_a: Vec<u64> = all.iter().copied().filter(|r| keys[*r as usize % 5].starts_with("/a/")).collect();
        let exact: Vec<u64> = all.iter().copied().filter(|r| keys[*r as usize % 5] == "/a/b").collect();
        assert_eq!(revisions(hs[0].receiver_mut()), exact);
        assert_eq!(revisions(hs[1].receiver_mut()), all);
        assert_eq!(revisions(hs[2].receiver_mut()), under_a);
    }

    async fn registrations_see_only_later_events(mode) {
        let mut bed = Bed::new(mode, 100, usize::MAX);
        let mut first = bed.registry.register_prefix(b("/"), false).unwrap();
        bed.send(put("/k", "v", 1));
        bed.settle().await;
        let mut second = bed.registry.register(b("/k"), false).unwrap();
        bed.send(put("/k", "v", 2));
        bed.settle().await;
        assert_eq!(revisions(first.receiver_mut()), vec![1, 2]);
        assert_eq!(revisions(second.receiver_mut()), vec![2]);
    }
}
