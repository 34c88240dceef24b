//! Where a node keeps its files, and configurations for clusters on one machine.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use d_engine_core::RaftNodeConfig;
use d_engine_proto::common::{NodeRole, NodeStatus};
use d_engine_proto::server::cluster::NodeMeta;

use crate::NodeError;

/// The directories of one node under its data directory. Each node needs its own: two nodes
/// sharing a snapshot, log or db directory overwrite each other's files.
///
/// ```text
/// <data_dir>/storage         the Raft log and hard state (FileStorageEngine)
///            state_machine   the key-value data (FileStateMachine)
///            snapshots       cluster.raft.snapshot.snapshots_dir
///            db              cluster.db_root_dir
///            logs            cluster.log_dir
/// ```
#[derive(Debug, Clone)]
pub struct DataLayout {
    root: PathBuf,
}

impl DataLayout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Raft log and hard state.
    pub fn storage(&self) -> PathBuf {
        self.root.join("storage")
    }

    /// The state machine's files.
    pub fn state_machine(&self) -> PathBuf {
        self.root.join("state_machine")
    }

    fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Creates every directory and proves each writable, so that a bad data directory is a
    /// typed error here rather than a failure deep inside d-engine.
    pub(crate) fn prepare(&self) -> Result<(), NodeError> {
        let dirs = [
            self.root.clone(),
            self.storage(),
            self.state_machine(),
            self.snapshots(),
            self.db(),
            self.logs(),
        ];
        for dir in dirs {
            let fail = |source| NodeError::DataDir {
                path: dir.clone(),
                source,
            };
            std::fs::create_dir_all(&dir).map_err(fail)?;
            let probe = dir.join(".watchtrie-write-probe");
            std::fs::write(&probe, b"probe").map_err(fail)?;
            std::fs::remove_file(&probe).map_err(fail)?;
        }
        Ok(())
    }

    /// Points every directory setting of `config` into this layout.
    pub(crate) fn apply(&self, config: &mut RaftNodeConfig) {
        config.cluster.db_root_dir = self.db();
        config.cluster.log_dir = self.logs();
        config.raft.snapshot.snapshots_dir = self.snapshots();
    }
}

/// The configuration of node `node_id` in a cluster whose members listen on `members`
/// (node `i` on `members[i - 1]`), starting from d-engine's defaults without reading files or
/// environment variables. Returns `None` if `node_id` is not in `1..=members.len()`.
pub fn cluster_config(node_id: u32, members: &[SocketAddr]) -> Option<RaftNodeConfig> {
    let index = usize::try_from(node_id).ok()?.checked_sub(1)?;
    let listen_address = *members.get(index)?;
    let mut config = RaftNodeConfig::default();
    config.cluster.node_id = node_id;
    config.cluster.listen_address = listen_address;
    config.cluster.initial_cluster = members
        .iter()
        .zip(1..)
        .map(|(address, id)| NodeMeta {
            id,
            address: address.to_string(),
            role: NodeRole::Follower as i32,
            status: NodeStatus::Active as i32,
        })
        .collect();
    Some(config)
}

/// `count` loopback addresses with ports that were free a moment ago (each bound, read and
/// released together, so they are distinct). Another process may take one meanwhile; a node
/// started on it then fails with [`NodeError::PortInUse`].
pub fn free_loopback_addresses(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(TcpListener::local_addr).collect()
}
