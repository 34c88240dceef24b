//! Watchers survive a node's failure: three real d-engine nodes with a watchtrie history on
//! each, a steady stream of writes, and nodes stopped one after another. Every watcher on a
//! stopped node re-registers on a survivor from the revision after the last one it received,
//! and its whole sequence must equal the committed log's matching entries, exactly once.
//!
//! `WATCHTRIE_FAILOVERS` sets the number of failovers (3 by default, as CI runs it); the
//! longer run and its figures are in docs/BENCHMARKS.md.
mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use watchtrie::{HistoryOptions, WatchEvent, WatchEventType};
use watchtrie_node::{KvClient, Watchtrie};

/// The watches a client opens on every node at the start, with the channel kind of each.
/// prev_kv is asked for only on keys that see puts and deletes (see `expected`).
fn watches() -> Vec<(Watch, bool)> {
    vec![
        (Watch::exact("/config/a", true), false),
        (Watch::exact("/config/a", false), true),
        (Watch::prefix("/config/", false), true),
        (Watch::prefix("/stream/", true), false),
        (Watch::prefix("/stream/", true), true),
        (Watch::exact("/locks/x", false), false),
        (Watch::prefix("/", false), false),
        (Watch::prefix("/", false), true),
    ]
}

/// The last writes, one value no other write uses: a watcher has everything once it has
/// received each of these that its watch matches.
const FENCE: [&str; 3] = ["/config/a", "/stream/fence", "/locks/x"];
const FENCE_VALUE: &str = "fence";

/// One write every this long, for as long as the failovers take.
const WRITE_EVERY: Duration = Duration::from_millis(4);

/// Writes applied between two failovers (and after the last), however long the election
/// takes: every watcher's last revision is then well above the floor of any node's history
/// that restarted before, so its resume is never refused as compacted. (A history starts at
/// what its node had applied when it restarted; a client whose last event is older than
/// that is told `Compacted`, even if the entries in between were only elections' no-ops.)
const WRITES_BETWEEN: u64 = 60;

fn failovers() -> usize {
    std::env::var("WATCHTRIE_FAILOVERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

fn engine() -> Watchtrie {
    Watchtrie::default().with_history(HistoryOptions::new(200_000, 256 << 20))
}

/// A remote client's watch: the events it received so far, wherever it was registered.
struct Client {
    watch: Watch,
    compact: bool,
    received: Vec<WatchEvent>,
    node: u32,
    moves: usize,
    /// Where it went, from which revision: for failure messages.
    path: Vec<(u32, u64)>,
    reading: Option<Reading>,
}

impl Client {
    /// The revision to resume from: the one after the last event received.
    fn resume_from(&self) -> u64 {
        self.received.last().map_or(1, |e| e.revision + 1)
    }

    fn fence_due(&self) -> usize {
        FENCE
            .iter()
            .filter(|k| self.watch.matches(k.as_bytes()))
            .count()
    }
}

/// A watcher read by its own task, as a client's stream is read: until told to stop (then
/// it takes what is already in the channel) or until `fence_due` fence events arrived.
struct Reading {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<WatchEvent>>,
}

fn read(mut watcher: Watcher, fence_due: usize, fences_seen: usize) -> Reading {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut fences = fences_seen;
        while fences < fence_due {
            let event = tokio::select! {
                biased;
                _ = &mut stopped => {
                    got.extend(watcher.drain());
                    break;
                }
                event = watcher.recv() => event,
            };
            let Some(event) = event else { break };
            if event.event_type == WatchEventType::Progress {
                continue;
            }
            fences += usize::from(event.value == FENCE_VALUE.as_bytes());
            got.push(event);
        }
        got.retain(|e| e.event_type != WatchEventType::Progress);
        got
    });
    Reading { stop, task }
}

fn fences_in(events: &[WatchEvent]) -> usize {
    events
        .iter()
        .filter(|e| e.value == FENCE_VALUE.as_bytes())
        .count()
}

/// Writes at a steady pace until `stop`: puts, deletes and compare-and-swaps, so that every
/// watch matches a write at least every six.
fn write_steadily(
    mut client: KvClient,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> JoinHandle<KvClient> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WRITE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            write_one(&mut client, i, format!("w{i}")).await;
            i += 1;
            written.store(i, Ordering::Relaxed);
        }
        client
    })
}

/// Waits until `n` more writes were answered.
async fn writes_flow(written: &AtomicU64, n: u64) {
    let until = written.load(Ordering::Relaxed) + n;
    within("writes flow", async {
        while written.load(Ordering::Relaxed) < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Moves `client` to `node`: registers there from the revision after its last one.
fn move_to(client: &mut Client, node: &watchtrie_node::WatchNode) {
    let from = client.resume_from();
    let watcher = Watcher::resume(node, &client.watch, client.compact, from);
    client.node = node.node_id();
    client.moves += 1;
    client.path.push((client.node, from));
    let seen = fences_in(&client.received);
    client.reading = Some(read(watcher, client.fence_due(), seen));
}

async fn stop_reading(client: &mut Client) {
    let reading = client.reading.take().expect("reading");
    let _ = reading.stop.send(());
    let got = within("a reader stops", reading.task).await.unwrap();
    client.received.extend(got);
}

/// Snapshots as d-engine's defaults take them (every 1,000 entries), but no log entry purged
/// behind them: every watcher is checked against the committed log from index 1, which some
/// node must still hold. (A follower therefore catches up from the log, never from a
/// snapshot; snapshot installs are `tests/snapshot_gap.rs`'s.)
fn keep_the_whole_log(config: &mut watchtrie_node::RaftNodeConfig) {
    config.raft.snapshot.retained_log_entries = u64::MAX / 2;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_resumed_on_a_survivor_from_their_last_revision_miss_nothing_and_repeat_nothing() {
    let mut cluster = Cluster::start_configured(3, 0, engine(), keep_the_whole_log).await;
    let mut clients: Vec<Client> = Vec::new();
    for node in cluster.running() {
        for (watch, compact) in watches() {
            let watcher = Watcher::register(node, &watch, compact);
            let mut client = Client {
                watch,
                compact,
                received: Vec::new(),
                node: node.node_id(),
                moves: 0,
                path: vec![(node.node_id(), 1)],
                reading: None,
            };
            client.reading = Some(read(watcher, client.fence_due(), 0));
            clients.push(client);
        }
    }

    let stop_writes = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = write_steadily(
        cluster.client(),
        Arc::clone(&stop_writes),
        Arc::clone(&written),
    );
    let failovers = failovers();
    for round in 0..failovers {
        writes_flow(&written, WRITES_BETWEEN).await;
        let leader = cluster.leader_id().await;
        // The leader, then the follower with the most watchers, in turn: both kinds of
        // failure. A restarted node has no watchers until some move to it, so a leader
        // without any is passed over for the node with the most.
        let hosted = |id: u32| clients.iter().filter(|c| c.node == id).count();
        let busiest = |ids: &mut dyn Iterator<Item = u32>| ids.max_by_key(|&id| hosted(id));
        let ids = || cluster.running().map(|n| n.node_id());
        let victim = if round % 2 == 0 && hosted(leader) > 0 {
            leader
        } else if round % 2 == 0 {
            busiest(&mut ids()).unwrap()
        } else {
            busiest(&mut ids().filter(|&id| id != leader)).unwrap()
        };
        cluster.stop_node(victim).await;
        for node in cluster.running() {
            let m = node.registry().metrics().read();
            eprintln!(
                "round {round}: node {} lagged {} replayed {} history {} resumes {} compacted {} dispatched {}",
                node.node_id(), m.lagged_events, m.replayed_events_skipped, m.history_events,
                m.resumes, m.compacted_cancels, m.events_dispatched
            );
        }
        let survivors: Vec<u32> = cluster.running().map(|n| n.node_id()).collect();
        let mut next = round;
        let on_victim = clients.iter().filter(|c| c.node == victim).count();
        assert!(on_victim > 0, "node {victim} had watchers to move");
        for client in clients.iter_mut().filter(|c| c.node == victim) {
            stop_reading(client).await;
            let cancel = client
                .received
                .iter()
                .find(|e| e.event_type == WatchEventType::Canceled);
            assert!(
                cancel.is_none(),
                "{:?} was cancelled: {cancel:?}",
                client.watch
            );
            next += 1;
            move_to(client, cluster.node(survivors[next % survivors.len()]));
        }
        // Back from its files, so that the next failover leaves a majority.
        cluster.start_node(victim).await;
        cluster
            .node(victim)
            .wait_for_leader(DEADLINE)
            .await
            .unwrap();
    }
    writes_flow(&written, WRITES_BETWEEN).await;
    stop_writes.store(true, Ordering::Relaxed);
    let mut client = within("the writer stops", writer).await.unwrap();
    let writes = written.load(Ordering::Relaxed);
    for key in FENCE {
        within("a fence write", client.put(key, FENCE_VALUE))
            .await
            .unwrap();
    }
    for client in &mut clients {
        let reading = client.reading.take().expect("reading");
        let got = within("a watcher receives the fence", reading.task)
            .await
            .unwrap();
        client.received.extend(got);
    }
    drop(client);
    let logs = cluster.stop_all().await;

    let log = &logs[0];
    let fence = clients
        .iter()
        .flat_map(|c| c.received.iter())
        .map(|e| e.revision)
        .max()
        .unwrap();
    for (log, node) in logs.iter().zip(1..) {
        let a: Vec<_> = log.iter().take_while(|e| e.index <= fence).collect();
        let b: Vec<_> = logs[0].iter().take_while(|e| e.index <= fence).collect();
        assert_eq!(a, b, "node {node}'s log differs from node 1's");
    }
    for client in &clients {
        let cancels: Vec<_> = client
            .received
            .iter()
            .filter(|e| e.event_type == WatchEventType::Canceled)
            .map(|e| (e.revision, e.cancel_reason()))
            .collect();
        assert!(
            cancels.is_empty(),
            "{:?} (compact: {}, (node, from revision): {:?}) was cancelled: {cancels:?}",
            client.watch,
            client.compact,
            client.path
        );
    }
    let moved = clients.iter().filter(|c| c.moves > 0).count();
    let moves: usize = clients.iter().map(|c| c.moves).sum();
    for client in &clients {
        let want = expected(log, fence, &client.watch);
        let revisions =
            |events: &[WatchEvent]| -> Vec<u64> { events.iter().map(|e| e.revision).collect() };
        assert_eq!(
            revisions(&client.received),
            revisions(&want),
            "{:?} (compact: {}, (node, from revision): {:?}): received (left) against the log",
            client.watch,
            client.compact,
            client.path
        );

        assert_eq!(
            client.received, want,
            "{:?} (compact: {}, moved {} times): nothing lost, nothing twice",
            client.watch, client.compact, client.moves
        );
    }
    eprintln!(
        "{failovers} failovers, {writes} writes through revision {fence}, {moved} of {} watchers \
         moved, {moves} moves",
        clients.len()
    );
}
