//! Rule 13 of docs/CONTRACT.md: a watcher whose `register` returned before an event was broadcast
//! receives it, even with the dispatcher running on another thread.
mod common;
use common::*;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use watchtrie::{WatchDispatcher, WatchRegistry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_that_returned_sees_the_next_broadcast() {
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(4, unregister_tx));
    let (tx, rx) = broadcast::channel(4096);
    let task = tokio::spawn(
        WatchDispatcher::new(
            registry.clone(),
            rx,
            unregister_rx,
            Arc::new(AtomicU64::new(0)),
            0,
        )
        .run(),
    );
    // Background traffic keeps the dispatcher busy on its own thread meanwhile.
    for round in 0..3000u64 {
        let key = format!("/v/{}", round % 97);
        let mut handle = if round % 2 == 0 {
            registry.register(b(&key), false).unwrap()
        } else {
            registry.register_prefix(b("/v/"), false).unwrap()
        };
        tx.send(put(&key, "v", round)).unwrap();
        // A guard against a hang, not a timing assertion.
        let event = tokio::time::timeout(Duration::from_secs(30), handle.receiver_mut().recv())
            .await
            .expect("event never arrived")
            .expect("channel open");
        assert_eq!(event.revision, round);
    }
    drop(tx);
    task.await.unwrap();
}

#[test]
fn an_inline_dispatch_after_register_on_another_thread_delivers() {
    let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(4, unregister_tx));
    let mut inline = watchtrie::InlineDispatcher::new(registry.clone(), unregister_rx);
    for round in 0..2000u64 {
        let r = registry.clone();
        let mut handle = std::thread::spawn(move || r.register(b("/k"), false).unwrap())
            .join()
            .unwrap();
        inline.dispatch(&put("/k", "v", round));
        assert_eq!(revisions(handle.receiver_mut()), vec![round]);
    }
}
