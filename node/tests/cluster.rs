//! Three real d-engine nodes on loopback, watchtrie on each: every node applies the same log,
//! so watchers anywhere see the same events; losing a node costs the others nothing.
mod common;
use common::*;

use std::time::Duration;

use watchtrie::WatchEvent;

/// The same watches on every node; the last one catches every key, for the fence.
fn watches() -> Vec<(Watch, bool)> {
    vec![
        (Watch::exact("/config/a", true), false),
        (Watch::prefix("/config/", false), true),
        (Watch::prefix("/stream/", true), false),
        (Watch::exact("/locks/x", false), true),
        (Watch::prefix("/", false), false),
    ]
}
const CATCH_ALL: usize = 4;

fn register_all(node: &watchtrie_node::WatchNode) -> Vec<Watcher> {
    watches()
        .iter()
        .map(|(watch, compact)| Watcher::register(node, watch, *compact))
        .collect()
}

/// Waits for the fence on the catch-all watcher, then takes what every other one holds.
async fn collect(watchers: &mut [Watcher], fence: &str) -> Vec<Vec<WatchEvent>> {
    let mut received: Vec<_> = watchers.iter_mut().map(|_| Vec::new()).collect();
    received[CATCH_ALL] = watchers[CATCH_ALL].recv_until_key(fence).await;
    for (i, watcher) in watchers.iter_mut().enumerate() {
        if i != CATCH_ALL {
            received[i] = watcher.drain();
        }
    }
    received
}

/// Writes `n` changes: puts, deletes and compare-and-swaps, `round` keeping values distinct.
async fn write_some(client: &mut watchtrie_node::KvClient, round: u32, n: u32) {
    for i in 0..n {
        write_one(client, u64::from(i), format!("{round}-{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_the_leader_and_both_followers_receive_identical_sequences() {
    let cluster = Cluster::start(3, 0).await;
    let mut watchers: Vec<Vec<Watcher>> = cluster.running().map(register_all).collect();
    let mut client = cluster.client();
    within("write", async {
        write_some(&mut client, 0, 36).await;
        client.put("/fence", "").await.unwrap();
    })
    .await;
    let mut received = Vec::new();
    for node_watchers in &mut watchers {
        received.push(collect(node_watchers, "/fence").await);
    }
    let fence = received[0][CATCH_ALL].last().unwrap().revision;
    drop(client);
    let logs = cluster.stop_all().await;

    for (node, got) in received.iter().enumerate().skip(1) {
        assert_eq!(got, &received[0], "node {} differs from node 1", node + 1);
    }
    for (log, node) in logs.iter().zip(1..) {
        let committed: Vec<_> = log.iter().take_while(|e| e.index <= fence).collect();
        let first: Vec<_> = logs[0].iter().take_while(|e| e.index <= fence).collect();
        assert_eq!(committed, first, "node {node}'s log differs from node 1's");
    }
    for ((watch, _), got) in watches().iter().zip(&received[0]) {
        assert_eq!(got, &expected(&logs[0], fence, watch), "{watch:?}");
    }
    assert!(received[0][3].len() >= 6, "compare-and-swaps succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_costs_the_other_nodes_nothing_and_restarts_from_its_files() {
    let mut cluster = Cluster::start(3, 0).await;
    let mut watchers: Vec<Option<Vec<Watcher>>> =
        cluster.running().map(|n| Some(register_all(n))).collect();
    let mut client = cluster.client();

    within("write before the stop", write_some(&mut client, 0, 24)).await;
    let stopped = cluster.leader_id().await;
    // Writes keep coming while the leader goes: the client rides out the election.
    let writer = tokio::spawn(async move {
        write_some(&mut client, 1, 24).await;
        client
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(watchers[stopped as usize - 1].take());
    cluster.stop_node(stopped).await;
    let mut client = within("write during the stop", writer).await.unwrap();
    assert_ne!(cluster.leader_id().await, stopped, "a survivor leads");

    // Back from its files: it catches up from the leader and serves new watchers.
    cluster.start_node(stopped).await;
    cluster
        .node(stopped)
        .wait_for_leader(DEADLINE)
        .await
        .unwrap();
    let mut rejoined = register_all(cluster.node(stopped));
    client.put("/after-restart", "").await.unwrap();
    within("write after the restart", write_some(&mut client, 2, 12)).await;
    client.put("/fence", "").await.unwrap();

    let mut survivors = Vec::new();
    for node_watchers in watchers.iter_mut().flatten() {
        survivors.push(collect(node_watchers, "/fence").await);
    }
    let on_rejoined = collect(&mut rejoined, "/fence").await;
    let fence = survivors[0][CATCH_ALL].last().unwrap().revision;
    drop(client);
    let logs = cluster.stop_all().await;
    let survivor_log = &logs[if stopped == 1 { 1 } else { 0 }];

    for got in &survivors {
        for ((watch, _), events) in watches().iter().zip(got) {
            assert_eq!(
                events,
                &expected(survivor_log, fence, watch),
                "a survivor's {watch:?}: nothing lost, nothing twice ({})",
                describe(survivor_log, fence)
            );
        }
    }
    // The rejoined node's watchers started mid-log: each got a gapless tail of the log's
    // events that holds everything written after they registered.
    let after = survivors[0][CATCH_ALL]
        .iter()
        .find(|e| e.key == "/after-restart")
        .unwrap()
        .revision;
    for ((watch, _), events) in watches().iter().zip(&on_rejoined) {
        let want = expected(survivor_log, fence, watch);
        let from = events.first().map_or(u64::MAX, |e| e.revision);
        let tail: Vec<_> = want
            .iter()
            .filter(|e| e.revision >= from)
            .cloned()
            .collect();
        assert_eq!(events, &tail, "rejoined node's {watch:?}");
        assert!(
            want.iter()
                .filter(|e| e.revision >= after)
                .all(|e| events.contains(e)),
            "rejoined node's {watch:?} missed a write made after it registered"
        );
    }
}
