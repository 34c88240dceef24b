//! # watchtrie
//!
//! Watch dispatch for a replicated key-value store: every write becomes one change event, and
//! each event must reach every watcher of its key, and every watcher of a slash-bounded prefix
//! of its key, through that watcher's bounded channel, without ever stalling the writer.
//!
//! watchtrie is a drop-in replacement for the `watch` module of `d-engine-core` 0.2.4: the
//! same names, signatures and observable behaviour ([`WatchRegistry`], [`WatcherHandle`],
//! [`WatchDispatcher`], [`WatchEvent`], …), so a caller changes one `use` line. Underneath,
//! it keeps watchers in flat, cache-friendly indexes that the dispatcher reads without a lock.
//!
//! ```
//! use std::sync::{atomic::AtomicU64, Arc};
//! use bytes::Bytes;
//! use tokio::sync::{broadcast, mpsc};
//! use watchtrie::{WatchDispatcher, WatchEventType, WatchRegistry, WatchResponse};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
//! let registry = Arc::new(WatchRegistry::new(16, unregister_tx));
//! let (events_tx, events_rx) = broadcast::channel(1024);
//! let dispatcher = WatchDispatcher::new(
//!     registry.clone(), events_rx, unregister_rx, Arc::new(AtomicU64::new(0)), 0);
//! tokio::spawn(dispatcher.run());
//!
//! let mut watch = registry.register_prefix(Bytes::from("/services/"), false).unwrap();
//! events_tx.send(WatchResponse {
//!     key: Bytes::from("/services/payment/leader"),
//!     value: Bytes::from("node-2"),
//!     revision: 7,
//!     ..Default::default()
//! }).unwrap();
//!
//! let event = watch.receiver_mut().recv().await.unwrap();
//! assert_eq!(event.event_type, WatchEventType::Put);
//! assert_eq!(event.revision, 7);
//! # }
//! ```
//!
//! # How it works
//!
//! ```text
//!  register / drop ──► writer mutex ──► change the spare snapshot in place ──► publish
//!                                       (once its last reader has left)       (arc-swap)
//!                                                                                 │
//!                             ┌──────────── Snapshot ◄────────────────────────────┘
//!                             │   ExactIndex: ahash map   key ─► WatcherList
//!                             │   PrefixTrie: hash trie   (parent node, segment) ─► node,
//!                             │               byte prefixes as tails on its nodes
//!                             │   RangeIndex: interval tree;  PatternIndex: `*` trie
//!                             ▼
//!  event ──► dispatcher: load snapshot (no lock) ─► 1 probe for the key + 1 per segment
//!                        ─► try_send into each matching watcher's bounded channel
//! ```
//!
//! - **Readers never lock.** The dispatcher loads the current snapshot with `arc-swap` (a
//!   thread-local debt slot, no shared write), probes the exact index once and walks the
//!   prefix trie once, one probe per slash segment: the key's bytes are hashed twice in
//!   all, whole for the exact index and segment by segment for the trie.
//! - **Writers change what no reader sees.** Registration and unregistration serialise on
//!   one mutex. The registry keeps two snapshots: the published one, and a spare that
//!   readers have left. A write changes the spare in place, publishes it, then replays the
//!   change on the other once its last reader has left (a reader holds a snapshot for one
//!   event, a batch of up to eight queued events, or one sweep slice of about 0.5 ms).
//! - **Cleanup stays off the hot path.** Watchers found overflowed or closed during an event
//!   are removed after it, without waiting for the writer lock.
//! - **One description of a watch.** [`WatchRegistry::watch`] takes a [`WatchSpec`]: the
//!   target (exact key, slash prefix, byte prefix, key range, wildcard pattern), the event
//!   filter, keys-only, the owner, the channel kind. The drop-in `register*` methods are
//!   wrappers over it. The kinds the reference lacks are looked at only while some are
//!   registered.
//!
//! The [`architecture`] module holds the full design (`docs/ARCHITECTURE.md` in the
//! repository): structures and invariants, the publish protocol, complexity.
//!
//! # Features
//! - `d-engine`: the dispatcher also accepts `d_engine_proto::client::WatchResponse` (=0.2.4),
//!   and [`WatchEvent`] converts into it. Building it needs `protoc` (see the README).

#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

/// The design notes (`docs/ARCHITECTURE.md`), here so that they are one click away on
/// docs.rs too. No code.
#[doc = include_str!("../docs/ARCHITECTURE.md")]
pub mod architecture {}

mod channel;
mod config;
mod dispatch;
mod error;
mod event;
mod group;
mod handle;
mod history;
mod index;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;
mod meta;
mod metrics;
mod options;
mod owners;
mod publish;
mod registry;
mod sink;
mod spec;
mod sync;

pub use channel::{CompactReceiver, TryRecvError};
pub use config::{WatchConfig, WatchConfigError};
pub use dispatch::{
    DispatcherStopped, GapReporter, InlineDispatcher, MemberProgress, ProgressRequest,
    ProgressRequester, WatchDispatcher,
};
pub use error::WatchError;
pub use event::{
    prefix_segments, CancelReason, ChangeEvent, WatchEvent, WatchEventType, WatchResponse,
};
pub use group::{GroupReceiver, GroupedWatcherHandle};
pub use handle::{CompactWatcherHandle, WatcherHandle};
pub use metrics::{Metrics, MetricsHandle};
pub use options::{
    DispatchOptions, HeartbeatMode, HistoryOptions, LagPolicy, RegistryOptions,
    DEFAULT_MAX_WILDCARDS, MIN_CLOSED_SWEEP_INTERVAL,
};
pub use owners::{OwnerId, OwnerMetrics};
pub use registry::{WatchRegistry, MAX_WATCHER_BUFFER_SIZE};
pub use spec::{
    AnyHandle, ChannelKind, Compact, DropIn, EventFilter, Grouped, RegisterError, Target, WatchSpec,
};
