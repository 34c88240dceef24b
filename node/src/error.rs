//! Errors of starting, running and stopping a node, and of the client.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Why a node could not be started, made ready, or stopped cleanly.
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeError {
    /// A directory the node keeps files in cannot be created or written.
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A setting is beyond what the node can honour (checked before anything is created).
    OutOfRange {
        /// The setting, as its path in the configuration.
        setting: &'static str,
        /// The value given.
        value: usize,
        /// The largest accepted.
        max: usize,
    },
    /// Another socket already listens on the node's address.
    PortInUse {
        /// The node's `cluster.listen_address`.
        address: SocketAddr,
    },
    /// The node's address cannot be listened on for another reason (not a local address,
    /// a privileged port, …).
    Unbindable {
        /// The node's `cluster.listen_address`.
        address: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// d-engine refused the configuration (its `validate()`), or the state machine or log
    /// could not be opened, or the node could not be built.
    DEngine {
        /// What was being done.
        during: &'static str,
        /// d-engine's error.
        source: d_engine_core::Error,
    },
    /// The node started but its gRPC server never accepted a connection.
    RpcNotListening {
        /// The node's `cluster.listen_address`.
        address: SocketAddr,
        /// How long it was given.
        waited: Duration,
    },
    /// No leader was elected in time: a majority of the cluster is not reachable.
    NoLeader {
        /// How long it was given.
        waited: Duration,
    },
    /// The node's main loop ended with an error (reported by `shutdown`).
    Run(d_engine_core::Error),
    /// Some part of the node did not stop in time; it was abandoned.
    StopTimedOut {
        /// Which part.
        part: &'static str,
        /// How long it was given.
        waited: Duration,
    },
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::DataDir { path, source } => {
                write!(
                    f,
                    "data directory {} is not writable: {source}",
                    path.display()
                )
            }
            NodeError::OutOfRange {
                setting,
                value,
                max,
            } => write!(f, "{setting} is {value}, above the largest accepted, {max}"),
            NodeError::PortInUse { address } => {
                write!(f, "address {address} is already in use by another socket")
            }
            NodeError::Unbindable { address, source } => {
                write!(f, "cannot listen on {address}: {source}")
            }
            NodeError::DEngine { during, source } => {
                write!(f, "d-engine failed {during}: {source}")
            }
            NodeError::RpcNotListening { address, waited } => write!(
                f,
                "the node's gRPC server did not accept connections on {address} within {waited:?}"
            ),
            NodeError::NoLeader { waited } => write!(
                f,
                "no leader elected within {waited:?}: is a majority of the cluster reachable?"
            ),
            NodeError::Run(source) => write!(f, "the node stopped with an error: {source}"),
            NodeError::StopTimedOut { part, waited } => {
                write!(f, "{part} did not stop within {waited:?}")
            }
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::DataDir { source, .. } | NodeError::Unbindable { source, .. } => {
                Some(source)
            }
            NodeError::DEngine { source, .. } | NodeError::Run(source) => Some(source),
            _ => None,
        }
    }
}

/// Why a client request failed after its retries.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The client was given no address to connect to.
    NoEndpoints,
    /// No node answered, or none knew a leader, or the leader kept failing, until the
    /// request's deadline.
    Unavailable {
        /// How long the request was tried.
        waited: Duration,
        /// The last failure seen.
        last: String,
    },
    /// The cluster refused the request for a reason a retry cannot fix.
    Rejected {
        /// d-engine's error code (`d_engine_proto::error::ErrorCode`).
        code: i32,
        /// What the server said.
        message: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoEndpoints => f.write_str("no node address given"),
            ClientError::Unavailable { waited, last } => {
                write!(
                    f,
                    "no leader served the request within {waited:?}; last: {last}"
                )
            }
            ClientError::Rejected { code, message } => {
                write!(f, "request rejected (error code {code}): {message}")
            }
        }
    }
}

impl std::error::Error for ClientError {}
