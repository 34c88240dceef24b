//! [`WatchConfig`]: the reference's watch settings, under the name its `watch` module
//! exports, so that code naming it keeps compiling when its `use` line points here.

use std::fmt;

use tracing::warn;

/// The settings a d-engine node reads for its watch system (`[raft.watch]`), with the
/// reference's fields and defaults. watchtrie reads none of them itself: pass them where
/// they go (`watcher_buffer_size` and `max_watcher_count` to
/// [`WatchRegistry::new_with_limits`](crate::WatchRegistry::new_with_limits),
/// `event_queue_size` to the broadcast channel, `heartbeat_interval_ms` to
/// [`WatchDispatcher::new`](crate::WatchDispatcher::new)).
///
/// With the `serde` feature it is `Serialize` and `Deserialize`, a missing field taking its
/// default, as the reference's. One difference: [`Self::validate`] returns watchtrie's
/// [`WatchConfigError`], not d-engine's error type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct WatchConfig {
    /// Slots of the broadcast queue between the write path and the dispatcher (10,240).
    pub event_queue_size: usize,
    /// Events each watcher's channel holds before it is cancelled for overflow (256).
    pub watcher_buffer_size: usize,
    /// Whether the node records watch metrics (false).
    pub enable_metrics: bool,
    /// The most active watchers (`i64::MAX`: the reference's configuration loader keeps
    /// integers signed, so this is its "unlimited").
    pub max_watcher_count: usize,
    /// Milliseconds between heartbeats, 0 for none (30,000).
    pub heartbeat_interval_ms: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            event_queue_size: 10_240,
            watcher_buffer_size: 256,
            enable_metrics: false,
            max_watcher_count: i64::MAX as usize,
            heartbeat_interval_ms: 30_000,
        }
    }
}

/// Above these the reference warns (and so does [`WatchConfig::validate`]) of the memory.
const LARGE_EVENT_QUEUE: usize = 100_000;
const LARGE_WATCHER_BUFFER: usize = 1_000;

impl WatchConfig {
    /// Refuses the settings the reference refuses (a zero queue or buffer size), and warns
    /// through `tracing` where it warns (a queue above 100,000 slots, a buffer above 1,000).
    pub fn validate(&self) -> Result<(), WatchConfigError> {
        if self.event_queue_size == 0 {
            return Err(WatchConfigError::ZeroEventQueueSize);
        }
        if self.event_queue_size > LARGE_EVENT_QUEUE {
            warn!(
                event_queue_size = self.event_queue_size,
                "watch.event_queue_size is very large: every slot holds an event"
            );
        }
        if self.watcher_buffer_size == 0 {
            return Err(WatchConfigError::ZeroWatcherBufferSize);
        }
        if self.watcher_buffer_size > LARGE_WATCHER_BUFFER {
            warn!(
                watcher_buffer_size = self.watcher_buffer_size,
                "watch.watcher_buffer_size is very large: each watcher may hold that many events"
            );
        }
        Ok(())
    }
}

/// Why [`WatchConfig::validate`] refused the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchConfigError {
    /// `event_queue_size` is 0.
    ZeroEventQueueSize,
    /// `watcher_buffer_size` is 0.
    ZeroWatcherBufferSize,
}

impl fmt::Display for WatchConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The reference's messages, word for word: logs and alerts may match on them.
        f.write_str(match self {
            WatchConfigError::ZeroEventQueueSize => "watch.event_queue_size must be greater than 0",
            WatchConfigError::ZeroWatcherBufferSize => {
                "watch.watcher_buffer_size must be greater than 0"
            }
        })
    }
}

impl std::error::Error for WatchConfigError {}
