//! One description of a watch: `WatchRegistry::watch(WatchSpec)`. The drop-in `register*`
//! methods are thin wrappers over it; event filters and keys-only are options of it; a
//! filtered-out event costs its watcher nothing.
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use watchtrie::{
    EventFilter, InlineDispatcher, RegisterError, Target, WatchError, WatchEvent, WatchEventType,
    WatchRegistry, WatchResponse, WatchSpec,
};

fn setup(buffer: usize) -> (Arc<WatchRegistry>, InlineDispatcher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(buffer, tx));
    let inline = InlineDispatcher::new(registry.clone(), rx);
    (registry, inline)
}

fn event(event_type: i32, key: &str, revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"new"),
        prev_value: Bytes::from_static(b"old"),
        event_type,
        error: 0,
        revision,
    }
}
const PUT: i32 = 0;
const DELETE: i32 = 1;

fn drain(rx: &mut mpsc::Receiver<WatchEvent>) -> Vec<WatchEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[test]
fn the_drop_in_methods_are_the_spec_with_their_arguments() {
    let (registry, _inline) = setup(4);
    let a = registry.register(Bytes::from("/k"), true).unwrap();
    let b = registry
        .watch(WatchSpec::exact("/k").prev_kv(true))
        .unwrap();
    let c = registry.register_prefix(Bytes::from("/p/"), false).unwrap();
    let d = registry.watch(WatchSpec::prefix("/p/")).unwrap();
    let e = registry.register_compact(Bytes::from("/k"), false).unwrap();
    let f = registry.watch(WatchSpec::exact("/k").compact()).unwrap();
    assert_eq!(
        [a.id(), b.id(), c.id(), d.id(), e.id(), f.id()],
        [1, 2, 3, 4, 5, 6],
        "one id sequence"
    );
    assert_eq!((a.key(), a.is_prefix()), (b.key(), b.is_prefix()));
    assert_eq!((c.key(), c.is_prefix()), (d.key(), d.is_prefix()));
    assert_eq!((e.key(), e.is_prefix()), (f.key(), f.is_prefix()));
    assert_eq!(registry.watcher_count(&Bytes::from("/k")), 4);
    assert_eq!(registry.prefix_watcher_count(&Bytes::from("/p/")), 2);
    assert_eq!(registry.prev_kv_watcher_count(), 2);
}

#[test]
fn refusals_are_typed_in_the_spec_api_and_the_reference_s_in_the_drop_in_one() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let registry = WatchRegistry::new_with_limits(4, 1, tx);
    for bad in ["no-slash/", "/no-trailing", ""] {
        assert_eq!(
            registry.watch(WatchSpec::prefix(bad)).unwrap_err(),
            RegisterError::InvalidPrefix
        );
        assert_eq!(
            registry
                .register_prefix(Bytes::from(bad), false)
                .unwrap_err(),
            WatchError::InvalidPrefix
        );
    }
    let _held = registry.watch(WatchSpec::exact("/k")).unwrap();
    assert_eq!(
        registry
            .watch(WatchSpec::exact("/k").compact())
            .unwrap_err(),
        RegisterError::LimitExceeded { max: 1 }
    );
    assert_eq!(
        registry.register(Bytes::from("/k"), false).unwrap_err(),
        WatchError::LimitExceeded(1)
    );
    // The form is checked before the limit, as in the reference.
    assert_eq!(
        registry.watch(WatchSpec::prefix("bad")).unwrap_err(),
        RegisterError::InvalidPrefix
    );
    assert_eq!(
        WatchSpec::prefix("/a/").target(),
        &Target::Prefix(Bytes::from("/a/"))
    );
}

#[test]
fn each_filter_drops_exactly_its_event_types() {
    // (filter, types a watcher receives from Put, Delete and a heartbeat, in order)
    use WatchEventType::{Delete, Progress, Put};
    let cases: [(EventFilter, &[WatchEventType]); 5] = [
        (EventFilter::default(), &[Put, Delete, Progress]),
        (EventFilter::default().no_put(), &[Delete, Progress]),
        (EventFilter::default().no_delete(), &[Put, Progress]),
        (EventFilter::default().no_progress(), &[Put, Delete]),
        (
            EventFilter::default().no_put().no_delete().no_progress(),
            &[],
        ),
    ];
    for (filter, want) in cases {
        let (registry, mut inline) = setup(8);
        let mut exact = registry
            .watch(WatchSpec::exact("/a/k").filter(filter))
            .unwrap();
        let mut prefix = registry
            .watch(WatchSpec::prefix("/a/").filter(filter).compact())
            .unwrap();
        inline.dispatch(&event(PUT, "/a/k", 1));
        inline.dispatch(&event(DELETE, "/a/k", 2));
        inline.broadcast_progress(2);
        let got: Vec<_> = drain(exact.receiver_mut())
            .iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(got, want, "{filter:?}, exact, drop-in");
        let got: Vec<_> = std::iter::from_fn(|| prefix.receiver_mut().try_recv().ok())
            .map(|e| e.event_type)
            .collect();
        assert_eq!(got, want, "{filter:?}, prefix, compact");
    }
}

#[test]
fn keys_only_events_carry_the_key_and_no_value() {
    let (registry, mut inline) = setup(8);
    let mut plain = registry
        .watch(WatchSpec::exact("/k").keys_only(true))
        .unwrap();
    let mut with_prev = registry
        .watch(WatchSpec::exact("/k").keys_only(true).prev_kv(true))
        .unwrap();
    let mut full = registry
        .watch(WatchSpec::exact("/k").prev_kv(true))
        .unwrap();
    inline.dispatch(&event(PUT, "/k", 3));
    let e = drain(plain.receiver_mut()).remove(0);
    assert_eq!(
        (e.key.as_ref(), e.value.as_ref(), e.prev_value),
        (&b"/k"[..], &b""[..], None)
    );
    let e = drain(with_prev.receiver_mut()).remove(0);
    assert_eq!(
        (e.value.as_ref(), e.prev_value),
        (&b""[..], Some(Bytes::new()))
    );
    let e = drain(full.receiver_mut()).remove(0);
    assert_eq!(
        (e.value.as_ref(), e.prev_value),
        (&b"new"[..], Some(Bytes::from("old")))
    );
    assert_eq!(e.revision, 3);
}

#[test]
fn compact_watchers_of_every_shape_sharing_an_event_each_get_what_a_drop_in_one_gets() {
    // A compact delivery queues one copy of the event shared by every compact watcher;
    // each receiver cuts it to its own options. Some receivers read while others still
    // hold the event (they clone what they keep), the last one alone (it moves it out).
    let (registry, mut inline) = setup(8);
    let shapes = [(false, false), (false, true), (true, false), (true, true)];
    let spec = |keys_only: bool, prev_kv: bool| {
        WatchSpec::prefix("/s/")
            .keys_only(keys_only)
            .prev_kv(prev_kv)
    };
    let mut drop_in: Vec<_> = shapes
        .iter()
        .map(|&(k, p)| registry.watch(spec(k, p)).unwrap())
        .collect();
    let mut compact: Vec<_> = shapes
        .iter()
        .map(|&(k, p)| registry.watch(spec(k, p).compact()).unwrap())
        .collect();
    // Values of their own (a static one is never unique), to see every copy go.
    let events =
        [(PUT, "/s/a", 1), (DELETE, "/s/b", 2), (PUT, "/s/c", 3)].map(|(t, k, r)| WatchResponse {
            value: Bytes::from(format!("value {r}")),
            prev_value: Bytes::from(format!("prev {r}")),
            ..event(t, k, r)
        });
    inline.dispatch(&events[0]);
    let first: Vec<_> = compact
        .iter_mut()
        .map(|h| h.receiver_mut().try_recv().unwrap())
        .collect();
    inline.dispatch(&events[1]);
    inline.dispatch(&events[2]);
    for (i, (mine, theirs)) in compact.iter_mut().zip(&mut drop_in).enumerate() {
        let mut got = vec![first[i].clone()];
        got.extend(std::iter::from_fn(|| mine.receiver_mut().try_recv().ok()));
        assert_eq!(got, drain(theirs.receiver_mut()), "shape {:?}", shapes[i]);
        assert_eq!(got.len(), 3);
    }
    drop(first);
    for e in events {
        assert!(
            e.value.is_unique() && e.prev_value.is_unique(),
            "a copy outlived the takes"
        );
    }
}

#[test]
fn a_filtered_out_event_touches_no_channel_and_allocates_nothing() {
    // Buffer 0: any delivery at all would cancel the watcher (only the sentinel's slot).
    let (registry, mut inline) = setup(0);
    let filter = EventFilter::default().no_put();
    let mut drop_in = registry
        .watch(WatchSpec::exact("/k").filter(filter))
        .unwrap();
    let mut compact = registry
        .watch(WatchSpec::prefix("/").filter(filter).compact())
        .unwrap();
    let events: Vec<_> = (1..=1000).map(|i| event(PUT, "/k", i)).collect();
    inline.dispatch(&events[0]); // warm the dispatcher's own buffers
    let before = counting_alloc::thread_allocations();
    for e in &events[1..] {
        inline.dispatch(e);
    }
    assert_eq!(
        counting_alloc::thread_allocations(),
        before,
        "no allocation"
    );
    assert!(
        drop_in.receiver_mut().try_recv().is_err(),
        "nothing delivered, no sentinel"
    );
    assert!(compact.receiver_mut().try_recv().is_err());
    assert_eq!(registry.active_watcher_count(), 2, "neither was cancelled");
    assert_eq!(registry.metrics().read().deliveries, 0);
    // The first Delete does reach them (and, buffer 0, cancels them: the filter is all
    // that kept them alive).
    inline.dispatch(&event(DELETE, "/k", 2000));
    assert_eq!(
        drop_in.receiver_mut().try_recv().unwrap().event_type,
        WatchEventType::Canceled
    );
}
