//! [`start`]: one d-engine node on file storage, its state-machine handler's broadcast
//! sender feeding a watch engine, and [`WatchNode::shutdown`] that stops it all in order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use d_engine_core::{
    DefaultStateMachineHandler, LogSizePolicy, RaftNodeConfig, StateMachine, StateMachineHandler,
};
use d_engine_proto::common::LeaderInfo;
use d_engine_server::node::RaftTypeConfig;
use d_engine_server::storage::DefaultLease;
use d_engine_server::{FileStateMachine, FileStorageEngine, Node, NodeBuilder};

use crate::gaps::GapReporting;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::config::DataLayout;
use crate::engine::{EngineParts, WatchEngine, Watchtrie};
use crate::NodeError;

/// The d-engine type configuration of a node on file storage.
pub type FileTypes = RaftTypeConfig<FileStorageEngine, GapReporting<FileStateMachine>>;

/// A d-engine node on file storage.
pub type FileNode = Node<FileTypes>;

type Handler = DefaultStateMachineHandler<FileTypes>;

/// How long a started node's gRPC server has to accept its first connection.
const RPC_LISTEN_DEADLINE: Duration = Duration::from_secs(10);

/// How long each part of a node has to stop before [`WatchNode::shutdown`] gives up on it.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// The largest `raft.watch.event_queue_size` a node accepts: about 16M slots of tokio's
/// broadcast channel, each allocated when the node starts (a few GB).
pub const MAX_EVENT_QUEUE_SIZE: usize = 1 << 24;

/// A running d-engine node whose watch events go to a watch engine (watchtrie unless
/// [`start_with`] chose another).
///
/// Dropping it without [`shutdown`](Self::shutdown) drops the shutdown sender, which d-engine
/// reads as a shutdown signal too: the node stops in the background, unawaited.
pub struct WatchNode<E: WatchEngine = Watchtrie> {
    node: Arc<FileNode>,
    registry: Arc<E::Registry>,
    listen_address: SocketAddr,
    data_dir: PathBuf,
    shutdown_tx: watch::Sender<()>,
    run: JoinHandle<d_engine_core::Result<()>>,
    revision_tracker: JoinHandle<()>,
    dispatcher: Dispatcher,
}

impl<E: WatchEngine> std::fmt::Debug for WatchNode<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchNode")
            .field("node_id", &self.node.node_id())
            .field("listen_address", &self.listen_address)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// Starts a node with watchtrie as its watch engine, d-engine-core's behaviour by default.
///
/// `config` is used as given, except that every directory in it is pointed under `data_dir`
/// (see [`DataLayout`]); then d-engine validates it. Returns once the node's gRPC server
/// accepts connections; the node may not have a leader yet (see
/// [`WatchNode::wait_for_leader`]).
///
/// Errors, each before anything is left running: `raft.watch.event_queue_size` above
/// [`MAX_EVENT_QUEUE_SIZE`] ([`NodeError::OutOfRange`], before any directory is made),
/// `data_dir` cannot be written ([`NodeError::DataDir`]), the listen address is taken
/// ([`NodeError::PortInUse`]), d-engine refuses the configuration or cannot open its files
/// ([`NodeError::DEngine`]), the gRPC server does not come up
/// ([`NodeError::RpcNotListening`]).
pub async fn start(
    config: RaftNodeConfig,
    data_dir: impl AsRef<Path>,
) -> Result<WatchNode, NodeError> {
    start_with(config, data_dir, Watchtrie::default()).await
}

/// [`start`], with the watch engine given: watchtrie with opt-ins
/// ([`Watchtrie::with_options`]), or d-engine-core's own ([`crate::Reference`]).
pub async fn start_with<E: WatchEngine>(
    mut config: RaftNodeConfig,
    data_dir: impl AsRef<Path>,
    engine: E,
) -> Result<WatchNode<E>, NodeError> {
    // Before anything is created: tokio's broadcast channel allocates every slot up front
    // (and panics above `usize::MAX / 2`); d-engine only warns above 100,000.
    let event_queue_size = config.raft.watch.event_queue_size;
    if event_queue_size > MAX_EVENT_QUEUE_SIZE {
        return Err(NodeError::OutOfRange {
            setting: "raft.watch.event_queue_size",
            value: event_queue_size,
            max: MAX_EVENT_QUEUE_SIZE,
        });
    }
    let layout = DataLayout::new(data_dir.as_ref());
    layout.prepare()?;
    layout.apply(&mut config);
    let config = config
        .validate()
        .map_err(|source| d_engine("validating the configuration", source))?;
    let listen_address = config.cluster.listen_address;
    ensure_free(listen_address)?;

    let storage = FileStorageEngine::new(layout.storage())
        .map_err(|source| d_engine("opening the Raft log", source))?;
    let mut state_machine = FileStateMachine::new(layout.state_machine())
        .await
        .map_err(|source| d_engine("opening the state machine", source))?;
    let lease = &config.raft.state_machine.lease;
    if lease.enabled {
        // As d-engine's own servers do: the lease goes in before the state machine is shared.
        state_machine.set_lease(Arc::new(DefaultLease::new(lease.clone())));
    }
    let applied = state_machine.last_applied().index;

    // The handler broadcasts one event per applied write; the engine's dispatcher reads them.
    let (events_tx, events_rx) = broadcast::channel(config.raft.watch.event_queue_size);
    let last_applied = Arc::new(AtomicU64::new(applied));
    let EngineParts {
        registry,
        prev_kv_watchers,
        dispatcher,
        gaps,
    } = engine.build(&config.raft.watch, events_rx, Arc::clone(&last_applied));
    let state_machine = Arc::new(GapReporting::new(state_machine, gaps));
    let dispatcher = Dispatcher::spawn(dispatcher);
    let snapshot = &config.raft.snapshot;
    let handler = Arc::new(Handler::new(
        config.cluster.node_id,
        applied,
        Arc::clone(&state_machine),
        snapshot.clone(),
        LogSizePolicy::new(
            snapshot.max_log_entries_before_snapshot,
            snapshot.snapshot_cool_down_since_last_check,
        ),
        Some(events_tx),
        prev_kv_watchers,
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let revision_tracker = tokio::spawn(track_last_applied(
        Arc::clone(&handler),
        last_applied,
        shutdown_rx.clone(),
    ));
    let built = NodeBuilder::from_node_config(config, shutdown_rx)
        .storage_engine(Arc::new(storage))
        .state_machine(state_machine)
        .with_custom_state_machine_handler(handler)
        .start()
        .await;
    let node = match built {
        Ok(node) => node,
        Err(source) => {
            // Nothing of d-engine runs; stop what was started for it.
            drop(shutdown_tx);
            let _ = revision_tracker.await;
            dispatcher.stop().await;
            return Err(d_engine("starting the node", source));
        }
    };
    let run = tokio::spawn({
        let node = Arc::clone(&node);
        async move { node.run().await }
    });
    let started = WatchNode {
        node,
        registry,
        listen_address,
        data_dir: layout.root().to_path_buf(),
        shutdown_tx,
        run,
        revision_tracker,
        dispatcher,
    };
    if !accepts_connections(listen_address, RPC_LISTEN_DEADLINE).await {
        if let Err(error) = started.shutdown().await {
            warn!(%error, "stopping a node whose gRPC server never came up");
        }
        return Err(NodeError::RpcNotListening {
            address: listen_address,
            waited: RPC_LISTEN_DEADLINE,
        });
    }
    Ok(started)
}

fn d_engine(during: &'static str, source: d_engine_core::Error) -> NodeError {
    NodeError::DEngine { during, source }
}

/// Fails with [`NodeError::PortInUse`] if something listens on `address` already: d-engine
/// would only log that its gRPC server could not bind, and run without one.
fn ensure_free(address: SocketAddr) -> Result<(), NodeError> {
    match std::net::TcpListener::bind(address) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(NodeError::PortInUse { address })
        }
        Err(source) => Err(NodeError::Unbindable { address, source }),
    }
}

/// True once a TCP connection to `address` succeeds, false if none does within `deadline`.
async fn accepts_connections(address: SocketAddr, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Keeps `last_applied` equal to the handler's last applied index until shutdown, so that
/// Progress events carry the node's real position. (d-engine's own builder sets its copy
/// once, at start, and never again.) The handler stores its index after broadcasting the
/// chunk's events, so an index read here never runs ahead of the events it covers.
async fn track_last_applied(
    handler: Arc<Handler>,
    last_applied: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let applied = handler.last_applied();
        // Release: the handler broadcast the events this index covers before it stored the
        // index (read with Acquire), so a dispatcher answering a progress request, which
        // loads this with Acquire and then counts its queue, finds them queued.
        last_applied.store(applied, Ordering::Release);
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            // Wakes on the next applied chunk; the timeout only bounds a wait, it is no error.
            _ = handler.wait_applied(applied + 1, Duration::from_secs(1)) => {}
        }
    }
}

/// The engine's dispatcher task, with a way to stop it if the broadcast channel never closes.
struct Dispatcher {
    task: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

impl Dispatcher {
    fn spawn(dispatcher: crate::engine::DispatchTask) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            tokio::select! {
                () = dispatcher => {}
                _ = stopped => {}
            }
        });
        Self { task, stop }
    }

    /// Ends the dispatcher now, dropping it and the registry reference it holds.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl<E: WatchEngine> WatchNode<E> {
    /// The registry to register watchers with. Every applied put, delete and successful
    /// compare-and-swap of this node reaches its matching watchers, with revision = the
    /// entry's log index.
    pub fn registry(&self) -> &Arc<E::Registry> {
        &self.registry
    }

    /// The d-engine node itself.
    pub fn node(&self) -> &Arc<FileNode> {
        &self.node
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.node.node_id()
    }

    /// Where this node's gRPC server (cluster and client services) listens.
    pub fn listen_address(&self) -> SocketAddr {
        self.listen_address
    }

    /// The data directory it was started with.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Waits until this node knows a leader (itself or another), at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<LeaderInfo, NodeError> {
        let mut leader = self.node.leader_change_notifier();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(info) = *leader.borrow_and_update() {
                    return Some(info);
                }
                if leader.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(info)) => Ok(info),
            _ => Err(NodeError::NoLeader { waited: timeout }),
        }
    }

    /// True while this node believes it is the leader.
    pub fn is_leader(&self) -> bool {
        self.node
            .leader_change_notifier()
            .borrow()
            .is_some_and(|info| info.leader_id == self.node_id())
    }

    /// Stops the node and its watch engine, in order: d-engine's main loop; then, once
    /// d-engine's tasks have let go of the node, the state-machine handler and with it the
    /// broadcast sender, so the dispatcher delivers what is still queued and returns; then
    /// this handle's registry reference. A watcher's stream ends (`recv()` gives `None`) once
    /// no other reference to the registry is left.
    ///
    /// Every wait is bounded; a part that does not stop in time is abandoned and reported as
    /// [`NodeError::StopTimedOut`] (after everything else was stopped).
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let WatchNode {
            node,
            registry,
            shutdown_tx,
            run,
            revision_tracker,
            dispatcher,
            ..
        } = self;
        let mut outcome = Ok(());
        let _ = shutdown_tx.send(());
        match tokio::time::timeout(STOP_DEADLINE, run).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => outcome = Err(NodeError::Run(error)),
            Ok(Err(join)) => {
                outcome = Err(NodeError::Run(d_engine_core::Error::Fatal(format!(
                    "the node's main loop panicked: {join}"
                ))))
            }
            Err(_) => {
                outcome = Err(NodeError::StopTimedOut {
                    part: "the node's main loop",
                    waited: STOP_DEADLINE,
                })
            }
        }
        if tokio::time::timeout(STOP_DEADLINE, revision_tracker)
            .await
            .is_err()
            && outcome.is_ok()
        {
            outcome = Err(NodeError::StopTimedOut {
                part: "the revision tracker",
                waited: STOP_DEADLINE,
            });
        }
        // d-engine's gRPC server holds the node until it sees the signal (its commit
        // handler holds the state-machine handler, and with it the broadcast sender).
        let until = Instant::now() + STOP_DEADLINE;
        while Arc::strong_count(&node) > 1 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let released = Arc::strong_count(&node) == 1;
        drop(node);
        let Dispatcher { mut task, stop } = dispatcher;
        let drained = tokio::time::timeout(STOP_DEADLINE, &mut task).await.is_ok();
        if !drained {
            // Something still holds the handler's sender: stop the dispatcher directly, so
            // that watchers' streams can end all the same.
            let _ = stop.send(());
            let _ = task.await;
        }
        drop(registry);
        debug!(released, drained, "node stopped");
        if outcome.is_ok() && !released {
            outcome = Err(NodeError::StopTimedOut {
                part: "d-engine's node tasks",
                waited: STOP_DEADLINE,
            });
        }
        if outcome.is_ok() && !drained {
            // Stopped directly: events still queued behind the held sender were dropped.
            outcome = Err(NodeError::StopTimedOut {
                part: "the watch dispatcher (its queued events were dropped)",
                waited: STOP_DEADLINE,
            });
        }
        outcome
    }
}
