//! Clusters of real d-engine nodes on loopback, and the model every watcher's sequence is
//! checked against: the committed log, replayed through a plain map.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use watchtrie::{CompactWatcherHandle, WatchEvent, WatchEventType, WatchSpec, WatcherHandle};
use watchtrie_node::{
    cluster_config, free_loopback_addresses, read_log, start_with, ApplyEntry, Command, KvClient,
    RaftNodeConfig, WatchNode, Watchtrie,
};

/// Generous for a loaded 2-core machine; a test that needs more has hung.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Fails the test instead of hanging it.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {DEADLINE:?}"))
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `n` nodes on loopback, each with its own data directory; nodes can be stopped and
/// started again from their files.
pub struct Cluster {
    pub addresses: Vec<SocketAddr>,
    pub nodes: Vec<Option<WatchNode>>,
    dirs: tempfile::TempDir,
    heartbeat_ms: u64,
    engine: Watchtrie,
    /// Applied to every node's configuration, at every start.
    tweak: fn(&mut RaftNodeConfig),
}

impl Cluster {
    /// Starts `n` nodes (d-engine's defaults, heartbeat at `heartbeat_ms`) and waits until
    /// every one knows the leader.
    pub async fn start(n: usize, heartbeat_ms: u64) -> Self {
        Self::start_with(n, heartbeat_ms, Watchtrie::default()).await
    }

    /// [`Cluster::start`] with every node (and every restart) running `engine`.
    pub async fn start_with(n: usize, heartbeat_ms: u64, engine: Watchtrie) -> Self {
        Self::start_configured(n, heartbeat_ms, engine, |_| {}).await
    }

    /// [`Cluster::start_with`], every node's configuration passed through `tweak` first.
    pub async fn start_configured(
        n: usize,
        heartbeat_ms: u64,
        engine: Watchtrie,
        tweak: fn(&mut RaftNodeConfig),
    ) -> Self {
        let mut cluster = Cluster {
            addresses: free_loopback_addresses(n).unwrap(),
            nodes: (0..n).map(|_| None).collect(),
            dirs: tempfile::tempdir().unwrap(),
            heartbeat_ms,
            engine,
            tweak,
        };
        for id in 1..=n as u32 {
            cluster.start_node(id).await;
        }
        cluster.wait_for_leader().await;
        cluster
    }

    pub fn config(&self, id: u32) -> RaftNodeConfig {
        let mut config = cluster_config(id, &self.addresses).unwrap();
        config.raft.watch.heartbeat_interval_ms = self.heartbeat_ms;
        (self.tweak)(&mut config);
        config
    }

    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.dirs.path().join(format!("node-{id}"))
    }

    pub async fn start_node(&mut self, id: u32) {
        let started = start_with(self.config(id), self.data_dir(id), self.engine.clone());
        let node = within("start a node", started)
            .await
            .unwrap_or_else(|e| panic!("node {id} did not start: {e}"));
        self.nodes[id as usize - 1] = Some(node);
    }

    pub async fn stop_node(&mut self, id: u32) {
        let node = self.nodes[id as usize - 1].take().expect("running");
        within("stop a node", node.shutdown())
            .await
            .unwrap_or_else(|e| panic!("node {id} did not stop cleanly: {e}"));
    }

    pub fn node(&self, id: u32) -> &WatchNode {
        self.nodes[id as usize - 1].as_ref().expect("running")
    }

    pub fn running(&self) -> impl Iterator<Item = &WatchNode> {
        self.nodes.iter().flatten()
    }

    pub async fn wait_for_leader(&self) -> u32 {
        let mut leader = None;
        for node in self.running() {
            let info = node.wait_for_leader(DEADLINE).await.unwrap();
            leader = Some(info.leader_id);
        }
        leader.expect("a running node")
    }

    /// The id of the node that believes it leads, once exactly one does.
    pub async fn leader_id(&self) -> u32 {
        within("find the leader", async {
            loop {
                let leaders: Vec<u32> = self
                    .running()
                    .filter(|n| n.is_leader())
                    .map(|n| n.node_id())
                    .collect();
                if let [one] = leaders[..] {
                    return one;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    pub fn client(&self) -> KvClient {
        KvClient::new(self.addresses.clone())
            .unwrap()
            .with_request_deadline(DEADLINE)
    }

    /// Stops every node and returns each one's log.
    pub async fn stop_all(mut self) -> Vec<Vec<ApplyEntry>> {
        for id in 1..=self.nodes.len() as u32 {
            if self.nodes[id as usize - 1].is_some() {
                self.stop_node(id).await;
            }
        }
        (1..=self.nodes.len() as u32)
            .map(|id| read_log(self.data_dir(id)).unwrap())
            .collect()
    }
}

/// The `i`-th write of the tests' mix, with `value`: puts and deletes of `/config/a`, puts
/// of `/stream/0..4`, compare-and-swaps (from absent) and deletes of `/locks/x`. Every six
/// writes touch each of these.
pub async fn write_one(client: &mut KvClient, i: u64, value: String) {
    match i % 6 {
        0 | 1 => client.put("/config/a", value).await.unwrap(),
        2 => client
            .put(format!("/stream/{}", i % 5), value)
            .await
            .unwrap(),
        3 => client.delete("/config/a").await.unwrap(),
        4 => {
            client
                .compare_and_swap("/locks/x", None, value)
                .await
                .unwrap();
        }
        _ => client.delete("/locks/x").await.unwrap(),
    }
}

/// What a watcher watches.
#[derive(Clone, Debug)]
pub struct Watch {
    pub key: Bytes,
    pub prefix: bool,
    pub prev_kv: bool,
}

impl Watch {
    pub fn exact(key: &str, prev_kv: bool) -> Self {
        Watch {
            key: b(key),
            prefix: false,
            prev_kv,
        }
    }

    pub fn prefix(prefix: &str, prev_kv: bool) -> Self {
        Watch {
            key: b(prefix),
            prefix: true,
            prev_kv,
        }
    }

    pub fn matches(&self, key: &[u8]) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key
        }
    }
}

/// A watcher of either channel kind.
pub enum Watcher {
    DropIn(WatcherHandle),
    Compact(CompactWatcherHandle),
}

impl Watcher {
    pub fn register(node: &WatchNode, watch: &Watch, compact: bool) -> Self {
        let registry = node.registry();
        let key = watch.key.clone();
        match (watch.prefix, compact) {
            (false, false) => Watcher::DropIn(registry.register(key, watch.prev_kv).unwrap()),
            (true, false) => Watcher::DropIn(registry.register_prefix(key, watch.prev_kv).unwrap()),
            (false, true) => {
                Watcher::Compact(registry.register_compact(key, watch.prev_kv).unwrap())
            }
            (true, true) => Watcher::Compact(
                registry
                    .register_prefix_compact(key, watch.prev_kv)
                    .unwrap(),
            ),
        }
    }

    /// Registers `watch` on `node` from revision `from` (the node's engine keeps a history).
    pub fn resume(node: &WatchNode, watch: &Watch, compact: bool, from: u64) -> Self {
        let key = watch.key.clone();
        let spec = if watch.prefix {
            WatchSpec::prefix(key)
        } else {
            WatchSpec::exact(key)
        };
        let spec = spec.prev_kv(watch.prev_kv).from_revision(from);
        let registry = node.registry();
        if compact {
            Watcher::Compact(registry.watch(spec.compact()).unwrap())
        } else {
            Watcher::DropIn(registry.watch(spec).unwrap())
        }
    }

    pub async fn recv(&mut self) -> Option<WatchEvent> {
        match self {
            Watcher::DropIn(h) => h.receiver_mut().recv().await,
            Watcher::Compact(h) => h.receiver_mut().recv().await,
        }
    }

    /// Every event already in the channel, without waiting.
    pub fn drain(&mut self) -> Vec<WatchEvent> {
        std::iter::from_fn(|| match self {
            Watcher::DropIn(h) => h.receiver_mut().try_recv().ok(),
            Watcher::Compact(h) => h.receiver_mut().try_recv().ok(),
        })
        .collect()
    }

    /// Receives until an event on `key` arrived; returns every event received, that one
    /// included.
    pub async fn recv_until_key(&mut self, key: &str) -> Vec<WatchEvent> {
        let mut got = Vec::new();
        within("receive an event on a key", async {
            while let Some(event) = self.recv().await {
                let done = event.key == key.as_bytes();
                got.push(event);
                if done {
                    return;
                }
            }
            panic!("the stream ended before an event on {key}: {got:?}");
        })
        .await;
        got
    }

    /// Receives until an event with `revision` or higher arrived (Progress skipped); returns
    /// every non-Progress event received.
    pub async fn recv_through(&mut self, revision: u64) -> Vec<WatchEvent> {
        let mut got = Vec::new();
        within("receive through a revision", async {
            while let Some(event) = self.recv().await {
                if event.event_type == WatchEventType::Progress {
                    continue;
                }
                let done = event.revision >= revision;
                got.push(event);
                if done {
                    return;
                }
            }
            panic!("the stream ended before revision {revision}: {got:?}");
        })
        .await;
        got
    }
}

/// The events a watcher of `watch` must receive for the log `log`, up to and including
/// index `through`: the committed entries replayed through a map, as the state machine
/// applies them (a Delete is reported even for a missing key; a CAS only when it swapped).
///
/// `prev_value` is what the key held before the write. d-engine reads it before applying a
/// chunk and does not carry a successful CAS forward within the chunk, so the tests give
/// prev_kv watchers only keys that see puts and deletes.
pub fn expected(log: &[ApplyEntry], through: u64, watch: &Watch) -> Vec<WatchEvent> {
    let mut state: HashMap<Bytes, Bytes> = HashMap::new();
    let mut events = Vec::new();
    for entry in log.iter().take_while(|e| e.index <= through) {
        let (key, event_type, value) = match &entry.command {
            Command::Noop => continue,
            Command::Insert { key, value, .. } => (key, WatchEventType::Put, value.clone()),
            Command::Delete { key } => (key, WatchEventType::Delete, Bytes::new()),
            Command::CompareAndSwap {
                key,
                expected,
                value,
            } => {
                if state.get(key) != expected.as_ref() {
                    continue;
                }
                (key, WatchEventType::Put, value.clone())
            }
        };
        let prev = match event_type {
            WatchEventType::Delete => state.remove(key),
            _ => state.insert(key.clone(), value.clone()),
        };
        if watch.matches(key) {
            events.push(WatchEvent {
                event_type,
                key: key.clone(),
                value,
                prev_value: watch.prev_kv.then(|| prev.unwrap_or_default()),
                revision: entry.index,
            });
        }
    }
    events
}

/// The log's entries up to `through`, as (index, kind) for messages.
pub fn describe(log: &[ApplyEntry], through: u64) -> String {
    log.iter()
        .take_while(|e| e.index <= through)
        .map(|e| format!("{}:{:?}", e.index, std::mem::discriminant(&e.command)))
        .collect::<Vec<_>>()
        .join(" ")
}
