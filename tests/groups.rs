//! Shared fan-out groups (`WatchSpec::grouped`): members receive what a lone compact watcher
//! of the same spec receives, share one watcher in the index, see their own lag, and give
//! back their units exactly once.
mod common;

use common::*;
use watchtrie::{
    CancelReason, DispatchOptions, GroupReceiver, LagPolicy, OwnerId, RegisterError, TryRecvError,
    WatchEvent, WatchSpec,
};

fn take_all(rx: &mut GroupReceiver) -> Vec<WatchEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

in_both_modes! {
    async fn a_member_gets_what_a_lone_compact_watcher_of_the_same_spec_gets(mode) {
        let mut bed = Bed::new(mode, 8, usize::MAX);
        let specs = [
            WatchSpec::exact("/a/k").prev_kv(true),
            WatchSpec::prefix("/a/"),
            WatchSpec::byte_prefix("/a/k").keys_only(true),
            WatchSpec::pattern("/a/*"),
        ];
        let mut pairs: Vec<_> = specs
            .iter()
            .map(|spec| {
                let compact = bed.registry.watch(spec.clone().compact()).unwrap();
                let grouped = bed.registry.watch(spec.clone().grouped()).unwrap();
                (compact, grouped)
            })
            .collect();
        let mut e = put("/a/k", "v2", 1);
        e.prev_value = b("v1");
        bed.send(e);
        bed.send(put("/a/other", "x", 2));
        bed.send(put("/b/k", "y", 3));
        bed.settle().await;
        for (compact, grouped) in &mut pairs {
            let lone: Vec<WatchEvent> =
                std::iter::from_fn(|| compact.receiver_mut().try_recv().ok()).collect();
            assert!(!lone.is_empty());
            assert_eq!(take_all(grouped.receiver_mut()), lone, "{:?}", grouped.target());
        }
        bed.registry.check_invariants();
    }

    async fn with_a_buffer_of_zero_a_member_is_cancelled_by_the_first_event_as_a_lone_watcher_is(mode) {
        let mut bed = Bed::new(mode, 0, usize::MAX);
        let mut lone = bed.registry.watch(WatchSpec::exact("/k").compact()).unwrap();
        let mut member = bed.registry.watch(WatchSpec::exact("/k").grouped()).unwrap();
        bed.send(put("/k", "v", 1));
        bed.settle().await;
        let lone: Vec<WatchEvent> =
            std::iter::from_fn(|| lone.receiver_mut().try_recv().ok()).collect();
        assert_eq!(lone.len(), 1);
        assert_eq!(lone[0].event_type, watchtrie::WatchEventType::Canceled);
        let got = take_all(member.receiver_mut());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].event_type, watchtrie::WatchEventType::Canceled);
        assert_eq!(got[0].cancel_reason(), Some(CancelReason::BufferOverflowAt { resume_from: 1 }));
        bed.registry.check_invariants();
    }

    async fn a_lagging_member_of_a_range_group_is_told_with_the_range_start_as_key(mode) {
        let mut bed = Bed::new(mode, 1, usize::MAX);
        let spec = WatchSpec::range("/k/b", "/k/d").grouped();
        let mut reading = bed.registry.watch(spec.clone()).unwrap();
        let mut lagging = bed.registry.watch(spec).unwrap();
        for revision in 1..=2 {
            bed.send(put("/k/c", "v", revision));
            bed.settle().await;
            assert_eq!(take_all(reading.receiver_mut()).len(), 1);
        }
        let got = take_all(lagging.receiver_mut());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].cancel_reason(), Some(CancelReason::BufferOverflowAt { resume_from: 1 }));
        assert_eq!(got[0].key, b("/k/b"));
        bed.registry.check_invariants();
    }

    async fn a_watch_many_batch_of_one_new_key_creates_one_group_in_one_publish(mode) {
        let mut bed = Bed::new(mode, 8, usize::MAX);
        let published = bed.registry.metrics().read().snapshots_published;
        let specs = [
            WatchSpec::exact("/new"),
            WatchSpec::exact("/new"),
            WatchSpec::exact("/new").prev_kv(true),
            WatchSpec::exact("/new"),
        ];
        let mut members: Vec<_> = bed
            .registry
            .watch_many(specs.map(WatchSpec::grouped))
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let m = bed.registry.metrics().read();
        assert_eq!(m.snapshots_published - published, 1, "one publish");
        assert_eq!(m.group_joins, 2, "the later plain specs join the batch's group");
        assert_eq!(
            bed.registry.watcher_count(&b("/new")),
            2,
            "one group per options: plain and prev_kv"
        );
        assert_eq!(bed.registry.active_watcher_count(), 4);
        let late = bed.registry.watch(WatchSpec::exact("/new").grouped()).unwrap();
        assert_eq!(bed.registry.metrics().read().group_joins, 3, "the batch's group is mapped");
        members.push(late);
        bed.send(put("/new", "v", 1));
        bed.settle().await;
        for member in &mut members {
            assert_eq!(take_all(member.receiver_mut()).len(), 1);
        }
        bed.registry.check_invariants();
    }

    async fn members_of_one_spec_share_one_watcher_and_joining_publishes_nothing(mode) {
        let mut bed = Bed::new(mode, 8, usize::MAX);
        let first = bed.registry.watch(WatchSpec::exact("/cfg").grouped()).unwrap();
        let published = bed.registry.metrics().read().snapshots_published;
        let mut members: Vec<_> = (0..100)
            .map(|_| bed.registry.watch(WatchSpec::exact("/cfg").grouped()).unwrap())
            .collect();
        let m = bed.registry.metrics().read();
        assert_eq!(m.snapshots_published, published, "joins publish nothing");
        assert_eq!(m.group_joins, 100);
        assert_eq!(bed.registry.watcher_count(&b("/cfg")), 1, "one watcher in the index");
        assert_eq!(bed.registry.active_watcher_count(), 101, "every member counts");
        assert_eq!(first.target(), watchtrie::Target::Exact(b("/cfg")));
        // Another option is another group.
        let _other = bed.registry.watch(WatchSpec::exact("/cfg").keys_only(true).grouped()).unwrap();
        assert_eq!(bed.registry.watcher_count(&b("/cfg")), 2);
        bed.send(put("/cfg", "v", 1));
        bed.settle().await;
        for member in &mut members {
            assert_eq!(take_all(member.receiver_mut()).len(), 1);
        }
        assert_eq!(members[0].receiver_mut().group_size(), 101);
        bed.registry.check_invariants();
    }

    async fn a_lagging_member_is_cancelled_with_where_to_resume_and_the_others_go_on(mode) {
        let mut bed = Bed::new(mode, 2, usize::MAX);
        let mut slow = bed.registry.watch(WatchSpec::exact("/k").grouped()).unwrap();
        let mut fast = bed.registry.watch(WatchSpec::exact("/k").grouped()).unwrap();
        bed.send(put("/k", "v", 10));
        bed.settle().await;
        assert_eq!(take_all(slow.receiver_mut()).len(), 1);
        for revision in 11..=13 {
            bed.send(put("/k", "v", revision));
            bed.settle().await;
            assert_eq!(take_all(fast.receiver_mut()).len(), 1 + usize::from(revision == 11));
        }
        let cancel = slow.receiver_mut().try_recv().unwrap();
        assert_eq!(
            cancel.cancel_reason(),
            Some(CancelReason::BufferOverflowAt { resume_from: 11 }),
            "one past the last event it read"
        );
        assert_eq!(slow.receiver_mut().try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(bed.registry.active_watcher_count(), 1, "released when it read its cancel");
        bed.send(put("/k", "v", 14));
        bed.settle().await;
        assert_eq!(take_all(fast.receiver_mut()).len(), 1);
        bed.registry.check_invariants();
    }

    async fn the_last_member_leaving_unregisters_the_group(mode) {
        let mut bed = Bed::new(mode, 8, usize::MAX);
        let a = bed.registry.watch(WatchSpec::prefix("/p/").grouped()).unwrap();
        let (_, key, receiver) = bed
            .registry
            .watch(WatchSpec::prefix("/p/").grouped())
            .unwrap()
            .into_receiver();
        assert_eq!(key, b("/p/"));
        drop(a);
        bed.settle().await;
        assert_eq!(bed.registry.prefix_watcher_count(&b("/p/")), 1, "one member left");
        assert_eq!(bed.registry.active_watcher_count(), 1, "a member's units go at its drop");
        drop(receiver);
        bed.settle().await;
        assert_eq!(bed.registry.prefix_watcher_count(&b("/p/")), 0);
        assert_eq!(bed.registry.active_watcher_count(), 0);
        // A new member of the same spec starts a new group.
        let mut again = bed.registry.watch(WatchSpec::prefix("/p/").grouped()).unwrap();
        bed.send(put("/p/x", "v", 1));
        bed.settle().await;
        assert_eq!(take_all(again.receiver_mut()).len(), 1);
        bed.registry.check_invariants();
    }
}

#[test]
fn limits_and_owners_count_each_member_and_refusals_take_nothing() {
    let mut bed = Bed::new(Mode::Inline, 4, 3);
    bed.registry.set_owner_limit(OwnerId(7), Some(1));
    let owned = bed
        .registry
        .watch(WatchSpec::exact("/k").owner(OwnerId(7)).grouped())
        .unwrap();
    assert_eq!(
        bed.registry
            .watch(WatchSpec::exact("/k").owner(OwnerId(7)).grouped())
            .unwrap_err(),
        RegisterError::OwnerLimitExceeded {
            owner: OwnerId(7),
            max: 1
        }
    );
    let _b = bed
        .registry
        .watch(WatchSpec::exact("/k").grouped())
        .unwrap();
    let _c = bed
        .registry
        .watch(WatchSpec::exact("/k").grouped())
        .unwrap();
    assert_eq!(
        bed.registry
            .watch(WatchSpec::exact("/k").grouped())
            .unwrap_err(),
        RegisterError::LimitExceeded { max: 3 }
    );
    drop(owned);
    bed.inline().process_unregistrations();
    let _d = bed
        .registry
        .watch(WatchSpec::exact("/k").owner(OwnerId(7)).grouped())
        .unwrap();
    bed.registry.check_invariants();
}

#[test]
fn a_grouped_watch_cannot_start_from_a_revision() {
    let bed = Bed::new(Mode::Inline, 4, usize::MAX);
    assert_eq!(
        bed.registry
            .watch(WatchSpec::exact("/k").from_revision(3).grouped())
            .unwrap_err(),
        RegisterError::GroupedFromRevision
    );
    assert_eq!(
        bed.registry.active_watcher_count(),
        0,
        "the refusal took nothing"
    );
    bed.registry.check_invariants();
}

#[test]
fn the_closed_receiver_sweep_releases_members_that_lagged_and_stopped_reading() {
    let mut bed = Bed::new(Mode::Inline, 1, usize::MAX);
    let _idle = bed
        .registry
        .watch(WatchSpec::exact("/k").grouped())
        .unwrap();
    let mut reader = bed
        .registry
        .watch(WatchSpec::exact("/k").grouped())
        .unwrap();
    for revision in 1..=3 {
        bed.send(put("/k", "v", revision));
        let _ = take_all(reader.receiver_mut());
    }
    assert_eq!(bed.registry.active_watcher_count(), 2);
    bed.inline().sweep_closed_receivers(usize::MAX);
    assert_eq!(
        bed.registry.active_watcher_count(),
        1,
        "the idle member is released"
    );
    assert_eq!(bed.registry.metrics().read().lagged_members_released, 1);
    bed.send(put("/k", "v", 4));
    assert_eq!(
        take_all(reader.receiver_mut()).len(),
        1,
        "the reader goes on"
    );
    bed.registry.check_invariants();
}

#[test]
fn the_closed_receiver_sweep_finds_every_lagged_member_of_a_large_group_within_its_rounds() {
    // 10,000 members: more than one sweep visit scans (4,096 slots), so the release takes
    // ⌈10,000 / 4,096⌉ = 3 sweeps (the first visit's slots include the reader's) and the
    // reader is never released.
    const MEMBERS: usize = 10_000;
    let mut bed = Bed::new(Mode::Inline, 1, usize::MAX);
    let mut reader = bed
        .registry
        .watch(WatchSpec::exact("/k").grouped())
        .unwrap();
    let _idle: Vec<_> = (1..MEMBERS)
        .map(|_| {
            bed.registry
                .watch(WatchSpec::exact("/k").grouped())
                .unwrap()
        })
        .collect();
    for revision in 1..=3 {
        bed.send(put("/k", "v", revision));
        let _ = take_all(reader.receiver_mut());
    }
    let mut released = Vec::new();
    for _ in 0..4 {
        bed.inline().sweep_closed_receivers(usize::MAX);
        released.push(bed.registry.metrics().read().lagged_members_released);
        bed.registry.check_invariants();
    }
    assert_eq!(
        released,
        vec![4_095, 8_191, MEMBERS as u64 - 1, MEMBERS as u64 - 1]
    );
    assert_eq!(bed.registry.active_watcher_count(), 1, "the reader stays");
    bed.send(put("/k", "v", 4));
    assert_eq!(take_all(reader.receiver_mut()).len(), 1);
}

#[test]
fn a_lag_cancel_of_the_group_ends_every_member_and_releases_them() {
    let options = DispatchOptions::default().with_lag_policy(LagPolicy::CancelWatchers);
    let mut bed = Bed::with_options(Mode::Inline, 4, usize::MAX, 0, options);
    let mut members: Vec<_> = (0..3)
        .map(|_| {
            bed.registry
                .watch(WatchSpec::exact("/k").grouped())
                .unwrap()
        })
        .collect();
    bed.send(put("/k", "v", 1));
    bed.inline().report_lag(1);
    for member in &mut members {
        let events = take_all(member.receiver_mut());
        assert_eq!(events.len(), 2, "the event, then the cancel");
        assert!(matches!(
            events[1].cancel_reason(),
            Some(CancelReason::Lagged { .. })
        ));
        assert_eq!(
            member.receiver_mut().try_recv(),
            Err(TryRecvError::Disconnected)
        );
    }
    assert_eq!(bed.registry.active_watcher_count(), 0);
    bed.registry.check_invariants();
}

#[tokio::test]
async fn a_waiting_member_wakes_on_the_next_event() {
    let mut bed = Bed::new(Mode::Inline, 4, usize::MAX);
    let (_, _, mut receiver) = bed
        .registry
        .watch(WatchSpec::exact("/k").grouped())
        .unwrap()
        .into_receiver();
    let waiting = tokio::spawn(async move { receiver.recv().await.map(|e| e.revision) });
    tokio::task::yield_now().await;
    bed.send(put("/k", "v", 9));
    assert_eq!(waiting.await.unwrap(), Some(9));
}
