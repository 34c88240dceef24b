//! With the `d-engine` feature, the dispatcher takes d-engine's own protobuf `WatchResponse`
//! and `WatchEvent` converts into it: code written against `d_engine_core::watch` compiles
//! after changing its `use` lines only.
#![cfg(feature = "d-engine")]

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use d_engine_proto::client::WatchResponse;
use tokio::sync::{broadcast, mpsc};
// The one line a d-engine caller changes: `use d_engine_core::watch::{...}`.
use watchtrie::{WatchDispatcher, WatchEvent, WatchEventType, WatchRegistry};

#[tokio::test(start_paused = true)]
async fn the_dispatcher_accepts_d_engine_watch_responses() {
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(8, unregister_tx));
    let (tx, rx) = broadcast::channel::<WatchResponse>(16);
    let dispatcher = WatchDispatcher::new(
        registry.clone(),
        rx,
        unregister_rx,
        Arc::new(AtomicU64::new(0)),
        0,
    );
    let task = tokio::spawn(dispatcher.run());

    let mut handle = registry
        .register_prefix(Bytes::from_static(b"/cfg/"), true)
        .unwrap();
    tx.send(WatchResponse {
        key: Bytes::from_static(b"/cfg/timeout"),
        value: Bytes::from_static(b"30"),
        prev_value: Bytes::from_static(b"10"),
        event_type: d_engine_proto::client::WatchEventType::Put as i32,
        error: 0,
        revision: 5,
    })
    .unwrap();
    let event = handle.receiver_mut().recv().await.unwrap();
    assert_eq!(event.event_type, WatchEventType::Put);
    assert_eq!(event.prev_value, Some(Bytes::from_static(b"10")));

    let back = WatchResponse::from(&event);
    assert_eq!(back.key, Bytes::from_static(b"/cfg/timeout"));
    assert_eq!(back.revision, 5);
    assert_eq!(back.prev_value, Bytes::from_static(b"10"));

    drop(tx);
    task.await.unwrap();
}

#[test]
fn event_types_match_the_proto_enum() {
    use d_engine_proto::client::WatchEventType as Proto;
    for (ours, theirs) in [
        (WatchEventType::Put, Proto::Put),
        (WatchEventType::Delete, Proto::Delete),
        (WatchEventType::Canceled, Proto::Canceled),
        (WatchEventType::Progress, Proto::Progress),
    ] {
        assert_eq!(ours.code(), theirs as i32);
        let event = WatchEvent {
            event_type: ours,
            key: Bytes::new(),
            value: Bytes::new(),
            prev_value: None,
            revision: 0,
        };
        assert_eq!(WatchResponse::from(&event).event_type, theirs as i32);
    }
}
