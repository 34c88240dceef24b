//! One real d-engine node with watchtrie as its watch engine: every applied write reaches
//! exactly the matching watchers, in log order, with revision = log index.
mod common;
use common::*;

use std::time::Duration;

use watchtrie::WatchEventType;
use watchtrie_node::Command;

/// Exact and prefix watchers, both channel kinds, with and without prev_kv. Keys under
/// `/locks/` see only compare-and-swap (see `common::expected` on prev values).
fn watches() -> Vec<(Watch, bool)> {
    vec![
        (Watch::exact("/config/timeout", true), false),
        (Watch::exact("/config/timeout", false), true),
        (Watch::prefix("/config/", true), true),
        (Watch::prefix("/services/", false), false),
        (Watch::prefix("/services/payment/", true), true),
        (Watch::exact("/locks/leader", false), false),
        (Watch::prefix("/locks/", false), true),
        (Watch::prefix("/", false), false),
        (Watch::exact("/never/written", true), false),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_applied_write_reaches_exactly_its_watchers_in_log_order() {
    let cluster = Cluster::start(1, 0).await;
    let node = cluster.node(1);
    let watches = watches();
    let mut watchers: Vec<Watcher> = watches
        .iter()
        .map(|(watch, compact)| Watcher::register(node, watch, *compact))
        .collect();

    let mut client = cluster.client();
    within("write", async {
        client.put("/config/timeout", "10s").await.unwrap();
        client.put("/config/timeout", "30s").await.unwrap();
        client
            .put("/services/payment/leader", "node-2")
            .await
            .unwrap();
        client
            .put("/services/search/leader", "node-1")
            .await
            .unwrap();
        client.delete("/config/timeout").await.unwrap();
        client.delete("/config/absent").await.unwrap(); // a Delete event all the same
        client.put("no-slash", "x").await.unwrap(); // reaches no prefix watcher
        assert!(client
            .compare_and_swap("/locks/leader", None, "a")
            .await
            .unwrap());
        assert!(!client
            .compare_and_swap("/locks/leader", Some(b("zz")), "b")
            .await
            .unwrap());
        client
            .compare_and_swap("/locks/leader", Some(b("a")), "c")
            .await
            .unwrap();
        client
            .put("/services/payment/leader", "node-3")
            .await
            .unwrap();
        client.put("/config/timeout", "5s").await.unwrap();
        // The fence: once the catch-all watcher has it, every event before it was delivered.
        client.put("/zz/fence", "").await.unwrap();
    })
    .await;
    // The dispatcher hands an event to all its watchers before the next: once the catch-all
    // watcher has the fence, every other watcher holds all it will get before it.
    let mut received: Vec<_> = watchers.iter_mut().map(|_| Vec::new()).collect();
    received[7] = watchers[7].recv_until_key("/zz/fence").await;
    let fence = received[7].last().unwrap().revision;
    for (i, watcher) in watchers.iter_mut().enumerate() {
        if i != 7 {
            received[i] = watcher.drain();
        }
    }
    drop(client);
    let log = cluster.stop_all().await.remove(0);

    assert!(
        log.iter()
            .any(|e| e.index < fence && e.command == Command::Noop),
        "a new leader's no-op takes a log index: revisions have gaps ({})",
        describe(&log, fence)
    );
    for (((watch, compact), got), i) in watches.iter().zip(&received).zip(0..) {
        let want = expected(&log, fence, watch);
        assert_eq!(
            got,
            &want,
            "watcher {i} ({watch:?}, compact: {compact}) against the log {}",
            describe(&log, fence)
        );
    }
    assert!(
        received[0].len() >= 4,
        "the exact prev_kv watcher saw its key's writes"
    );
    assert!(received[8].is_empty());
    assert!(received[7]
        .windows(2)
        .all(|w| w[0].revision < w[1].revision));
    assert!(received[5]
        .iter()
        .all(|e| e.event_type == WatchEventType::Put));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_carries_the_nodes_last_applied_index() {
    // d-engine's own wiring sets the Progress revision once, at start (0 here), and never
    // again; the node keeps watchtrie's current.
    let cluster = Cluster::start(1, 100).await;
    let mut watcher = Watcher::register(cluster.node(1), &Watch::exact("/k", false), false);
    let mut client = cluster.client();
    within("write", async {
        for i in 0..5 {
            client.put("/k", i.to_string()).await.unwrap();
        }
        // Last, an entry that makes no event: only the applied index can tell a Progress
        // about it (the highest revision dispatched stays at the last put's).
        let swapped = client
            .compare_and_swap("/k", Some("not its value".into()), "x")
            .await
            .unwrap();
        assert!(!swapped);
    })
    .await;
    let mut puts = Vec::new();
    let progress = within("a Progress past the last write", async {
        loop {
            let event = watcher.recv().await.expect("stream open");
            match event.event_type {
                // One node, one client writing in turn: the failed swap is the next entry.
                WatchEventType::Progress if puts.len() == 5 => {
                    if event.revision > puts[4] {
                        return event.revision;
                    }
                }
                WatchEventType::Progress => {}
                _ => puts.push(event.revision),
            }
        }
    })
    .await;
    assert_eq!(puts.len(), 5, "the failed swap made no event");
    assert!(progress > puts[4]);
    drop(client);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_node_shuts_down() {
    let mut cluster = Cluster::start(1, 0).await;
    let node = cluster.node(1);
    let mut waiting: Vec<_> = [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .map(|(prefix, compact)| {
            let watch = match prefix {
                true => Watch::prefix("/a/", false),
                false => Watch::exact("/a/k", false),
            };
            let mut watcher = Watcher::register(node, &watch, compact);
            tokio::spawn(async move { watcher.recv().await })
        })
        .collect();
    // A watcher kept past its handle, as a gRPC stream would keep it.
    let (_, _, mut kept) = node
        .registry()
        .register(b("/a/k"), false)
        .unwrap()
        .into_receiver();
    waiting.push(tokio::spawn(async move { kept.recv().await }));
    tokio::time::sleep(Duration::from_millis(50)).await;
    cluster.stop_node(1).await;
    for task in waiting {
        let got = within("a watcher's stream to end", task).await.unwrap();
        assert!(
            got.is_none(),
            "no write was made, so the first thing is the end: {got:?}"
        );
    }
}
