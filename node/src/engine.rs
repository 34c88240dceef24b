//! Which watch engine a node feeds: watchtrie (the point of this crate) or d-engine-core's
//! own `watch` module, wired the same way so that the two can be measured on one node
//! configuration (`nodebench`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use d_engine_core::WatchConfig;
use d_engine_proto::client::WatchResponse;
use tokio::sync::{broadcast, mpsc};
use watchtrie::{DispatchOptions, HistoryOptions};

/// An engine's dispatcher, as a future the node runs on its runtime.
pub type DispatchTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a started engine hands to the node.
pub struct EngineParts<R> {
    /// Where watchers register.
    pub registry: Arc<R>,
    /// The live count of watchers that asked for previous values: the state-machine handler
    /// reads previous values only while it is above 0 (watchtrie with a history holds it at 1).
    pub prev_kv_watchers: Arc<AtomicUsize>,
    /// The dispatcher loop; it returns once the broadcast sender is gone.
    pub dispatcher: DispatchTask,
    /// Where the node reports the snapshots it installs: the events they cover will never
    /// come (`None` for an engine that has no use for it).
    pub gaps: Option<watchtrie::GapReporter>,
}

/// A watch engine the node can feed: its registry and dispatcher, built from the node's
/// `[raft.watch]` configuration.
pub trait WatchEngine: Send + 'static {
    /// The registry watchers register with.
    type Registry: Send + Sync + 'static;

    /// Builds the registry and the dispatcher reading `events`. `last_applied` is kept equal
    /// to the node's last applied log index; heartbeats (`Progress`) carry it.
    fn build(
        self,
        config: &WatchConfig,
        events: broadcast::Receiver<WatchResponse>,
        last_applied: Arc<AtomicU64>,
    ) -> EngineParts<Self::Registry>;
}

/// watchtrie, with [`DispatchOptions`].
///
/// The default is d-engine-core's behaviour with two opt-ins that a node needs:
/// - [`with_skip_replayed_revisions`](DispatchOptions::with_skip_replayed_revisions), for
///   exactly-once delivery: d-engine 0.2.4 can apply one log entry twice (its commit handler
///   re-sends entries the state-machine worker has not applied yet), and each application
///   broadcasts the entry's event again;
/// - [`HeartbeatMode::Incremental`](watchtrie::HeartbeatMode::Incremental), so that a
///   heartbeat never holds up writes' events: at d-engine's 30 s default with a million
///   watchers, the blocking sweep held events for about a second at every tick
///   (`nodebench`, docs/BENCHMARKS.md); incremental slices kept the tick's p99.9 at a few
///   milliseconds. Each slice's Progress carries the higher of the node's last applied
///   index and every revision dispatched so far.
///
/// [`Watchtrie::with_options`] takes the options exactly as given
/// (`DispatchOptions::default()` is d-engine-core's behaviour, replays and all);
/// [`Watchtrie::with_history`] adds a history to whichever options are set.
///
/// With a history, the state-machine handler reads every write's previous value, whether or
/// not a prev_kv watcher is registered at that moment: a prev_kv watcher that resumes later
/// from an earlier revision must get the same previous values as one that was there live.
#[derive(Debug, Clone)]
pub struct Watchtrie {
    options: DispatchOptions,
}

impl Default for Watchtrie {
    fn default() -> Self {
        Self::with_options(
            DispatchOptions::default()
                .with_skip_replayed_revisions(true)
                .with_heartbeat_mode(watchtrie::HeartbeatMode::Incremental),
        )
    }
}

impl Watchtrie {
    /// watchtrie with exactly the given opt-ins (see [`DispatchOptions`]).
    pub fn with_options(options: DispatchOptions) -> Self {
        Self { options }
    }

    /// The same engine with a bounded history, so that watchers can resume from a revision
    /// (`WatchSpec::from_revision`); see [`DispatchOptions::with_history`].
    #[must_use]
    pub fn with_history(mut self, history: HistoryOptions) -> Self {
        self.options = self.options.with_history(history);
        self
    }

    /// The options the dispatcher will run with.
    pub fn options(&self) -> &DispatchOptions {
        &self.options
    }
}

impl WatchEngine for Watchtrie {
    type Registry = watchtrie::WatchRegistry;

    fn build(
        self,
        config: &WatchConfig,
        events: broadcast::Receiver<WatchResponse>,
        last_applied: Arc<AtomicU64>,
    ) -> EngineParts<Self::Registry> {
        let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
        let registry = Arc::new(watchtrie::WatchRegistry::new_with_limits(
            config.watcher_buffer_size,
            config.max_watcher_count,
            unregister_tx,
        ));
        let dispatcher = watchtrie::WatchDispatcher::new(
            Arc::clone(&registry),
            events,
            unregister_rx,
            last_applied,
            config.heartbeat_interval_ms,
        )
        .with_options(self.options);
        let prev_kv_watchers = if self.options.history().is_some() {
            // Held above 0 for good: the history records previous values for resumes to come.
            Arc::new(AtomicUsize::new(1))
        } else {
            registry.prev_kv_watcher_count_arc()
        };
        EngineParts {
            prev_kv_watchers,
            registry,
            gaps: Some(dispatcher.gap_reporter()),
            dispatcher: Box::pin(dispatcher.run()),
        }
    }
}

/// d-engine-core 0.2.4's own `watch` module: the engine watchtrie replaces, for side-by-side
/// measurement on the same node.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reference;

impl WatchEngine for Reference {
    type Registry = d_engine_core::watch::WatchRegistry;

    fn build(
        self,
        config: &WatchConfig,
        events: broadcast::Receiver<WatchResponse>,
        last_applied: Arc<AtomicU64>,
    ) -> EngineParts<Self::Registry> {
        let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
        let registry = Arc::new(d_engine_core::watch::WatchRegistry::new_with_limits(
            config.watcher_buffer_size,
            config.max_watcher_count,
            unregister_tx,
        ));
        let dispatcher = d_engine_core::watch::WatchDispatcher::new(
            Arc::clone(&registry),
            events,
            unregister_rx,
            last_applied,
            config.heartbeat_interval_ms,
        );
        EngineParts {
            prev_kv_watchers: registry.prev_kv_watcher_count_arc(),
            registry,
            dispatcher: Box::pin(dispatcher.run()),
            // It keeps no history: a gap changes nothing for it.
            gaps: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchtrie::HeartbeatMode;

    #[test]
    fn the_node_default_skips_replays_and_never_holds_events_for_a_heartbeat() {
        let options = *Watchtrie::default().options();
        assert!(options.skip_replayed_revisions());
        assert_eq!(options.heartbeat_mode(), HeartbeatMode::Incremental);
        // Everything else is d-engine-core's behaviour.
        let reference = DispatchOptions::default()
            .with_skip_replayed_revisions(true)
            .with_heartbeat_mode(HeartbeatMode::Incremental);
        assert_eq!(options, reference);
        assert_eq!(
            *Watchtrie::with_options(DispatchOptions::default()).options(),
            DispatchOptions::default()
        );
    }
}
