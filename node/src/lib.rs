//! # watchtrie-node
//!
//! Runs a [d-engine] 0.2.4 Raft node on file storage with [watchtrie] as its watch engine,
//! and gives its users what an embedding needs around it: a start call that fails with a
//! clear error on a bad setup, a clean shutdown, a gRPC client that finds the leader, and the
//! node's log to check watchers against.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use watchtrie_node::{cluster_config, free_loopback_addresses, start, KvClient};
//!
//! let addresses = free_loopback_addresses(1)?;
//! let config = cluster_config(1, &addresses).expect("node 1 of 1");
//! let node = start(config, "./data/node-1").await?;
//! node.wait_for_leader(Duration::from_secs(10)).await?;
//!
//! let mut watcher = node.registry().register_prefix(Bytes::from("/services/"), false)?;
//! let mut client = KvClient::new(addresses)?;
//! client.put("/services/payment/leader", "node-2").await?;
//! let event = watcher.receiver_mut().recv().await.expect("one event per applied write");
//! assert_eq!(event.key, Bytes::from("/services/payment/leader"));
//!
//! node.shutdown().await?; // the watcher's stream ends once the registry is gone
//! # Ok(()) }
//! ```
//!
//! # Where the node ends and watchtrie begins
//!
//! ```text
//!  KvClient ──gRPC──► leader ──Raft log──► every node: commit handler ─► state-machine worker
//!                                                                            │ apply_chunk
//!              d-engine (unchanged)                                         ▼
//!  ──────────────────────────────────────── DefaultStateMachineHandler: one WatchResponse per
//!                                            applied put, delete, successful CAS; revision =
//!                                            log index ─► broadcast::Sender
//!  this crate: the wiring                                                    │
//!  ───────────────────────────────────────────────────────────────────────── ▼
//!  watchtrie:  WatchDispatcher (its own task) ─► WatchRegistry ─► each watcher's channel
//! ```
//!
//! d-engine decides what is committed and applies it; its handler broadcasts the events.
//! This crate builds that handler itself (`NodeBuilder::with_custom_state_machine_handler`),
//! giving it the sender of a broadcast channel whose receiver is watchtrie's dispatcher, and
//! the registry's live prev_kv counter, so that previous values are read only while a watcher
//! wants them. From the broadcast on, everything is watchtrie's. Details d-engine leaves to an
//! embedder, handled here:
//!
//! - d-engine-core's `watch` feature is on: without it the handler silently drops its sender.
//!   d-engine-server's `watch` feature is off: with it, the builder would start a second
//!   engine, unused, whose registry the node's gRPC `Watch` call would serve.
//! - Progress events carry the node's last applied index, kept current by a small task woken
//!   on each applied chunk (d-engine sets its copy once, at start).
//! - Every directory set in the configuration goes under the one data directory given to
//!   [`start`]. One exception is d-engine's own: a follower installing a snapshot unpacks it
//!   in the system's temporary directory (`$TMPDIR`), which must be writable.
//!
//! Across a cluster every node applies the same log, so watchers on any node see the same
//! events with the same revisions; a watcher can move to another node without renumbering.
//! With a history (`start_with(config, dir, Watchtrie::default().with_history(..))`), it
//! misses nothing when it does: it registers on the new node with
//! `WatchSpec::from_revision(last received + 1)` (`tests/failover.rs` checks this across
//! node failures). A node's history starts at what it had applied when it started; a
//! follower that installs a snapshot from the leader gets no events for what the snapshot
//! covers: its state machine ([`GapReporting`] around d-engine's) reports that gap to the
//! dispatcher (`watchtrie::GapReporter`), so a resume into it is told `Compacted` and one
//! after it is exact (`tests/snapshot_gap.rs`).
//!
//! [d-engine]: https://docs.rs/d-engine
//! [watchtrie]: https://docs.rs/watchtrie

#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod client;
mod config;
mod engine;
mod error;
mod gaps;
mod log;
mod node;

pub use client::KvClient;
pub use config::{cluster_config, free_loopback_addresses, DataLayout};
pub use engine::{DispatchTask, EngineParts, Reference, WatchEngine, Watchtrie};
pub use error::{ClientError, NodeError};
pub use gaps::GapReporting;
pub use log::read_log;
pub use node::{start, start_with, FileNode, FileTypes, WatchNode, MAX_EVENT_QUEUE_SIZE};

/// The repository README's examples, compiled and run as doctests here: this crate sees
/// both watchtrie and itself, and the README shows both.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// d-engine's types that appear in this crate's API.
pub use d_engine_core::{ApplyEntry, Command, RaftNodeConfig};
pub use d_engine_proto::common::LeaderInfo;
