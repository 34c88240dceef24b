//! Three d-engine nodes on 127.0.0.1, watchtrie on each: exact and prefix watchers of both
//! channel kinds on every node, writes through the leader over gRPC, and what each node's
//! watchers received. Ends on its own, in a few seconds.
//!
//! ```text
//! cargo run -p watchtrie-node --example cluster
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use watchtrie::{CompactWatcherHandle, WatchEvent, WatchEventType, WatcherHandle};
use watchtrie_node::{cluster_config, free_loopback_addresses, start, KvClient, WatchNode};

const NODES: u32 = 3;
const WRITES: usize = 30;
/// Everything below is bounded; this is the bound of the whole run.
const RUN_LIMIT: Duration = Duration::from_secs(50);

/// One watcher of either kind, and a label saying what it watches.
enum Watcher {
    DropIn(WatcherHandle),
    Compact(CompactWatcherHandle),
}

impl Watcher {
    fn try_recv(&mut self) -> Option<WatchEvent> {
        match self {
            Watcher::DropIn(h) => h.receiver_mut().try_recv().ok(),
            Watcher::Compact(h) => h.receiver_mut().try_recv().ok(),
        }
    }

    async fn recv(&mut self) -> Option<WatchEvent> {
        match self {
            Watcher::DropIn(h) => h.receiver_mut().recv().await,
            Watcher::Compact(h) => h.receiver_mut().recv().await,
        }
    }
}

/// Registers the example's watchers on `node`; the last one sees every key.
fn register(node: &WatchNode) -> Result<Vec<(&'static str, Watcher)>, watchtrie::WatchError> {
    let registry = node.registry();
    Ok(vec![
        (
            "exact   /config/timeout  drop-in  prev_kv",
            Watcher::DropIn(registry.register(Bytes::from("/config/timeout"), true)?),
        ),
        (
            "prefix  /services/       compact",
            Watcher::Compact(registry.register_prefix_compact(Bytes::from("/services/"), false)?),
        ),
        (
            "exact   /locks/leader    compact",
            Watcher::Compact(registry.register_compact(Bytes::from("/locks/leader"), false)?),
        ),
        (
            "prefix  /                drop-in",
            Watcher::DropIn(registry.register_prefix(Bytes::from("/"), false)?),
        ),
    ])
}

fn show(event: &WatchEvent) -> String {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    match event.event_type {
        WatchEventType::Put => match &event.prev_value {
            Some(prev) => format!(
                "@{} put {}={} (was {:?})",
                event.revision,
                text(&event.key),
                text(&event.value),
                text(prev)
            ),
            None => format!(
                "@{} put {}={}",
                event.revision,
                text(&event.key),
                text(&event.value)
            ),
        },
        WatchEventType::Delete => format!("@{} delete {}", event.revision, text(&event.key)),
        other => format!("@{} {other:?}", event.revision),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let began = Instant::now();
    tokio::time::timeout(RUN_LIMIT, run())
        .await
        .map_err(|_| format!("the example did not finish within {RUN_LIMIT:?}"))??;
    println!("done in {:.1} s", began.elapsed().as_secs_f64());
    Ok(())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let data = tempfile::tempdir()?;
    let addresses = free_loopback_addresses(NODES as usize)?;
    println!(
        "starting {NODES} nodes on {addresses:?}, data under {}",
        data.path().display()
    );
    let mut nodes = Vec::new();
    for id in 1..=NODES {
        let config = cluster_config(id, &addresses).expect("id within the cluster");
        let node = start(config, data.path().join(format!("node-{id}"))).await?;
        println!("  node {id} listening on {}", node.listen_address());
        nodes.push(node);
    }
    for node in &nodes {
        node.wait_for_leader(Duration::from_secs(20)).await?;
    }
    let leader = nodes[0].wait_for_leader(Duration::ZERO).await?;
    println!("leader: node {} (term {})", leader.leader_id, leader.term);

    let mut watchers = Vec::new();
    for node in &nodes {
        watchers.push(register(node)?);
    }
    println!("on every node:");
    for (label, _) in &watchers[0] {
        println!("  {label}");
    }

    let mut client = KvClient::new(addresses.clone())?;
    print!("writing {WRITES} changes through the leader:");
    for i in 0..WRITES {
        match i % 6 {
            0 => {
                client
                    .put("/config/timeout", format!("{}s", 10 + i))
                    .await?
            }
            1 => {
                client
                    .put(
                        format!("/services/payment/{}", i % 4),
                        format!("node-{}", i % 3),
                    )
                    .await?
            }
            2 => {
                client
                    .put(format!("/services/search/{}", i % 4), "up")
                    .await?
            }
            3 => {
                client
                    .compare_and_swap("/locks/leader", None, format!("client-{i}"))
                    .await?;
            }
            4 => client.delete("/locks/leader").await?,
            _ => {
                client
                    .delete(format!("/services/payment/{}", i % 4))
                    .await?
            }
        }
        if (i + 1) % 10 == 0 {
            print!(" {}", i + 1);
            use std::io::Write;
            std::io::stdout().flush()?;
        }
    }
    client.put("/done", "").await?;
    println!();

    // The catch-all watcher gets "/done" last: then every watcher of that node holds all.
    let mut received = Vec::new();
    for node_watchers in &mut watchers {
        let mut got: Vec<Vec<WatchEvent>> = Vec::new();
        let (_, catch_all) = node_watchers.last_mut().expect("four watchers");
        let mut all = Vec::new();
        while let Some(event) = catch_all.recv().await {
            let done = event.key == "/done";
            all.push(event);
            if done {
                break;
            }
        }
        let last = node_watchers.len() - 1;
        for (_, watcher) in &mut node_watchers[..last] {
            got.push(std::iter::from_fn(|| watcher.try_recv()).collect());
        }
        got.push(all);
        received.push(got);
    }

    for ((node, got), id) in nodes.iter().zip(&received).zip(1..) {
        let role = if node.is_leader() {
            "leader"
        } else {
            "follower"
        };
        println!("node {id} ({role}):");
        for ((label, _), events) in watchers[0].iter().zip(got) {
            let shown: Vec<String> = events.iter().take(3).map(show).collect();
            let more = events.len().saturating_sub(shown.len());
            let tail = if more > 0 {
                format!(", … {more} more")
            } else {
                String::new()
            };
            println!(
                "  {label}: {} events: {}{tail}",
                events.len(),
                shown.join(", ")
            );
        }
    }
    let identical = received.iter().all(|got| got == &received[0]);
    println!(
        "the {NODES} nodes' watchers received {} sequences",
        if identical { "identical" } else { "DIFFERENT" }
    );

    print!("stopping the nodes:");
    drop(watchers);
    for node in nodes {
        let id = node.node_id();
        node.shutdown().await?;
        print!(" {id}");
    }
    println!();
    if !identical {
        return Err("nodes disagree".into());
    }
    Ok(())
}
