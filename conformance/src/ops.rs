//! The operation language.

use arbitrary::Arbitrary;
use bytes::Bytes;
use proptest::prelude::*;

/// Event and watch keys: a small alphabet so that exact and prefix matches are frequent, plus
/// the edge cases (`/`, empty, no slash, `//`, trailing slash).
pub const KEYS: &[&str] = &[
    "/", "", "a", "//", "/a", "/a/", "/a/b", "/a/b/", "/a/b/c", "/a/bc", "/b", "/b/", "/b/a",
    "a/b", "/a//", "/\u{ff}",
];

/// Prefixes: valid ones first, then invalid ones (each must be refused with `InvalidPrefix`).
pub const PREFIXES: &[&str] = &[
    "/", "/a/", "/a/b/", "//", "/b/", "/a//", "", "a", "/a", "a/", "a/b/",
];

/// Wire event types drawn: the four known codes and unknown ones (mapped to Canceled).
pub const EVENT_TYPES: &[i32] = &[0, 1, 2, 3, 4, -1, 99, i32::MIN];

/// Capacity of each engine's broadcast channel.
pub const BROADCAST_CAPACITY: usize = 16;

/// Heartbeat period when heartbeats are on, in milliseconds. Large, so that the microseconds
/// that settling adds never move a tick out of its window.
pub const HEARTBEAT_MS: u64 = 10_000;

/// The engine configuration of one case.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `watcher_buffer_size`, 0 to 3.
    pub buffer: u8,
    /// `max_watcher_count`, or no limit.
    pub limit: Option<u8>,
    /// Heartbeats every [`HEARTBEAT_MS`], or none.
    pub heartbeat: bool,
}

impl Config {
    /// The watcher buffer size used.
    pub fn buffer_size(&self) -> usize {
        usize::from(self.buffer % 4)
    }
    /// The watcher limit used.
    pub fn max_watchers(&self) -> usize {
        self.limit.map_or(usize::MAX, |l| usize::from(l % 8))
    }
}

/// One step.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `register(KEYS[key], prev_kv)`.
    Register { key: u8, prev_kv: bool },
    /// `register_prefix(PREFIXES[prefix], prev_kv)`.
    RegisterPrefix { prefix: u8, prev_kv: bool },
    /// Drop a handle (or a detached receiver).
    Drop { slot: u8 },
    /// `into_receiver()` on a handle, keeping the receiver.
    IntoReceiver { slot: u8 },
    /// Read up to `max` events from one watcher, and whether its channel is closed.
    Read { slot: u8, max: u8 },
    /// Broadcast one event.
    Broadcast {
        key: u8,
        event_type: u8,
        value: u8,
        prev_value: bool,
        revision: u16,
    },
    /// Set `last_applied` and advance time past exactly one heartbeat tick.
    Heartbeat { last_applied: u16 },
    /// Send `BROADCAST_CAPACITY + extra` events at once, so that the dispatchers lag.
    Lag { key: u8, extra: u8 },
}

/// A whole test case.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Engine configuration.
    pub config: Config,
    /// Steps, in order.
    pub ops: Vec<Op>,
}

/// The event `Op::Broadcast` sends (also used by `Op::Lag`, with revisions counting up).
pub fn event(
    key: u8,
    event_type: u8,
    value: u8,
    prev_value: bool,
    revision: u64,
) -> d_engine_proto::client::WatchResponse {
    d_engine_proto::client::WatchResponse {
        key: Bytes::from_static(KEYS[usize::from(key) % KEYS.len()].as_bytes()),
        value: if value.is_multiple_of(4) {
            Bytes::new()
        } else {
            Bytes::from(vec![value; usize::from(value % 7)])
        },
        event_type: EVENT_TYPES[usize::from(event_type) % EVENT_TYPES.len()],
        error: i32::from(value % 3),
        revision,
        prev_value: if prev_value {
            Bytes::from_static(b"prev")
        } else {
            Bytes::new()
        },
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<bool>()).prop_map(|(key, prev_kv)| Op::Register { key, prev_kv }),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(prefix, prev_kv)| Op::RegisterPrefix { prefix, prev_kv }),
        2 => any::<u8>().prop_map(|slot| Op::Drop { slot }),
        1 => any::<u8>().prop_map(|slot| Op::IntoReceiver { slot }),
        2 => (any::<u8>(), 0u8..6).prop_map(|(slot, max)| Op::Read { slot, max }),
        6 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>(), any::<u16>()).prop_map(
            |(key, event_type, value, prev_value, revision)| Op::Broadcast { key, event_type, value, prev_value, revision }
        ),
        1 => any::<u16>().prop_map(|last_applied| Op::Heartbeat { last_applied }),
        1 => (any::<u8>(), 0u8..6).prop_map(|(key, extra)| Op::Lag { key, extra }),
    ]
}

/// Cases for proptest: small configurations, up to 60 steps; shrinks towards fewer steps.
pub fn case() -> impl Strategy<Value = Case> {
    let config = (
        0u8..4,
        proptest::option::weighted(0.4, 0u8..6),
        any::<bool>(),
    )
        .prop_map(|(buffer, limit, heartbeat)| Config {
            buffer,
            limit,
            heartbeat,
        });
    (config, proptest::collection::vec(op(), 0..60)).prop_map(|(config, ops)| Case { config, ops })
}
