//! [`read_log`]: a stopped node's Raft log, decoded, to check what watchers received against
//! what the cluster committed.

use std::path::Path;

use d_engine_core::{decode_entries, ApplyEntry, LogStore, StorageEngine};
use d_engine_server::FileStorageEngine;

use crate::config::DataLayout;
use crate::NodeError;

/// Every entry in the Raft log of the node whose data directory is `data_dir`, in index
/// order, decoded as the state machine receives it (a membership change reads as
/// `Command::Noop`). Read it only while no node runs on that directory. Entries at the tail
/// may not be committed: a caller compares up to an index it knows is.
pub fn read_log(data_dir: impl AsRef<Path>) -> Result<Vec<ApplyEntry>, NodeError> {
    let layout = DataLayout::new(data_dir.as_ref());
    if !layout.storage().is_dir() {
        // Opening would create an empty log: say instead that there is none.
        return Err(NodeError::DataDir {
            path: layout.storage(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no Raft log here"),
        });
    }
    let storage =
        FileStorageEngine::new(layout.storage()).map_err(|source| NodeError::DEngine {
            during: "opening the Raft log",
            source,
        })?;
    let entries = storage
        .log_store()
        .get_entries(1..=u64::MAX)
        .map_err(|source| NodeError::DEngine {
            during: "reading the Raft log",
            source,
        })?;
    decode_entries(entries).map_err(|source| NodeError::DEngine {
        during: "decoding the Raft log",
        source,
    })
}
