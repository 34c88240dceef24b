//! Events: what the store broadcasts ([`ChangeEvent`], [`WatchResponse`]) and what a watcher
//! receives ([`WatchEvent`]).

use bytes::Bytes;

/// Kind of a delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchEventType {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
    /// The watch ended; see [`WatchEvent::cancel_reason`] for why.
    Canceled,
    /// A heartbeat carrying the last applied revision; `key` and `value` are empty.
    Progress,
}

impl WatchEventType {
    /// Maps the wire code (`0` Put, `1` Delete, `2` Canceled, `3` Progress). Any other code
    /// maps to `Canceled`, as in the reference.
    #[inline]
    pub fn from_code(code: i32) -> Self {
        match code {
            0 => WatchEventType::Put,
            1 => WatchEventType::Delete,
            3 => WatchEventType::Progress,
            _ => WatchEventType::Canceled,
        }
    }

    /// The wire code of this type.
    #[inline]
    pub fn code(self) -> i32 {
        match self {
            WatchEventType::Put => 0,
            WatchEventType::Delete => 1,
            WatchEventType::Canceled => 2,
            WatchEventType::Progress => 3,
        }
    }
}

/// An event as a watcher receives it.
///
/// `prev_value` is `Some` exactly when the watcher registered with `prev_kv = true`, whatever
/// the event type (`Some(empty)` when the key had no previous value, and on Progress);
/// `None` otherwise, and on the cancel sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Kind of event.
    pub event_type: WatchEventType,
    /// The key written; empty on Progress.
    pub key: Bytes,
    /// The new value; empty on Delete and Progress, and on the reference's cancel sentinel
    /// (watchtrie's overflow-at and compacted sentinels carry a tag here: see
    /// [`Self::cancel_reason`]).
    pub value: Bytes,
    /// The previous value, for watchers registered with `prev_kv = true`.
    pub prev_value: Option<Bytes>,
    /// Revision of the write (the last applied index on Progress, 0 on the cancel sentinel).
    pub revision: u64,
}

/// Why a watch was cancelled: see [`WatchEvent::cancel_reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelReason {
    /// The watcher's buffer was full (the reference's only reason).
    BufferOverflow,
    /// The dispatcher lost events to broadcast lag under
    /// [`LagPolicy::CancelWatchers`](crate::LagPolicy::CancelWatchers). Every event up to
    /// `resume_from - 1` that matched was delivered; watch again from `resume_from`.
    Lagged {
        /// The first revision the watcher may have missed.
        resume_from: u64,
    },
    /// The watcher's buffer was full, under a dispatcher keeping history
    /// ([`DispatchOptions::with_history`](crate::DispatchOptions::with_history)): every
    /// matching event below `resume_from` was delivered; watch again from `resume_from`.
    BufferOverflowAt {
        /// The revision of the first event the watcher did not get.
        resume_from: u64,
    },
    /// The watch asked for a revision the history no longer holds (or dropped an event it
    /// had not delivered yet, while the watcher was catching up): `oldest` is the lowest
    /// revision a watch may start from now. Below it, read the current state instead and
    /// watch from the revision that state was read at.
    Compacted {
        /// The lowest revision a watch may start from.
        oldest: u64,
    },
}

/// What a Canceled event's `value` says for the reasons the reference does not have (the
/// reference's own sentinel has an empty value).
const OVERFLOW_AT_TAG: &[u8] = b"watchtrie:overflow";
const COMPACTED_TAG: &[u8] = b"watchtrie:compacted";

impl WatchEvent {
    /// The sentinel a watcher receives when its buffer overflows: it is the last event.
    pub(crate) fn cancel_sentinel(key: Bytes) -> Self {
        WatchEvent {
            event_type: WatchEventType::Canceled,
            key,
            value: Bytes::new(),
            prev_value: None,
            revision: 0,
        }
    }

    /// The sentinel of a watch cancelled for broadcast lag. Told apart from the overflow
    /// sentinel by its revision, never 0 here.
    pub(crate) fn lag_sentinel(resume_from: u64) -> Self {
        WatchEvent {
            revision: resume_from.max(1),
            ..Self::cancel_sentinel(Bytes::new())
        }
    }

    /// The sentinel of an overflow under a dispatcher keeping history: it says where to
    /// resume (`key` is the key of the event that did not fit, as in the reference's).
    pub(crate) fn overflow_sentinel_at(key: Bytes, resume_from: u64) -> Self {
        WatchEvent {
            value: Bytes::from_static(OVERFLOW_AT_TAG),
            revision: resume_from,
            ..Self::cancel_sentinel(key)
        }
    }

    /// The sentinel of a watch whose start (or next event) the history no longer holds.
    pub(crate) fn compacted_sentinel(oldest: u64) -> Self {
        WatchEvent {
            value: Bytes::from_static(COMPACTED_TAG),
            revision: oldest,
            ..Self::cancel_sentinel(Bytes::new())
        }
    }

    /// For a Canceled event sent by the dispatcher, why the watch ended; `None` for any
    /// other event type. The reference's overflow sentinel has revision 0; a lag sentinel
    /// carries the revision to resume from, at least 1; the two reasons that only a
    /// dispatcher keeping history sends are told apart by a tag in `value`. (A store that
    /// broadcast Canceled events itself would have them passed through and read as lag.)
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        if self.event_type != WatchEventType::Canceled {
            return None;
        }
        let revision = self.revision;
        Some(match (&self.value[..], revision) {
            (COMPACTED_TAG, oldest) => CancelReason::Compacted { oldest },
            (OVERFLOW_AT_TAG, resume_from) => CancelReason::BufferOverflowAt { resume_from },
            (_, 0) => CancelReason::BufferOverflow,
            (_, resume_from) => CancelReason::Lagged { resume_from },
        })
    }
}

/// The change event broadcast by the store, with the fields of d-engine's protobuf
/// `WatchResponse`, so that the default build needs no `protoc`. With the `d-engine` feature
/// the dispatcher also accepts `d_engine_proto::client::WatchResponse` itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct WatchResponse {
    /// The key written.
    pub key: Bytes,
    /// The new value.
    pub value: Bytes,
    /// The previous value (empty when none).
    pub prev_value: Bytes,
    /// Wire code of the event type: 0 Put, 1 Delete, 2 Canceled, 3 Progress.
    pub event_type: i32,
    /// Error code; not passed on to watchers.
    pub error: i32,
    /// Revision of the write.
    pub revision: u64,
}

/// An event the dispatcher can route: anything exposing the fields of a `WatchResponse`.
///
/// Implemented for [`WatchResponse`] and, with the `d-engine` feature, for
/// `d_engine_proto::client::WatchResponse`. Implement it for your own event type to
/// dispatch it without conversion.
pub trait ChangeEvent {
    /// The key written; it selects the watchers.
    fn key(&self) -> &Bytes;
    /// The new value.
    fn value(&self) -> &Bytes;
    /// The previous value (empty when none).
    fn prev_value(&self) -> &Bytes;
    /// Wire code of the event type (see [`WatchEventType::from_code`]).
    fn event_type(&self) -> i32;
    /// Revision of the write.
    fn revision(&self) -> u64;
}

/// Implements [`ChangeEvent`] and `From<&WatchEvent>` for a type with the proto's fields.
macro_rules! proto_shaped_event {
    ($ty:ty) => {
        impl ChangeEvent for $ty {
            #[inline]
            fn key(&self) -> &Bytes {
                &self.key
            }
            #[inline]
            fn value(&self) -> &Bytes {
                &self.value
            }
            #[inline]
            fn prev_value(&self) -> &Bytes {
                &self.prev_value
            }
            #[inline]
            fn event_type(&self) -> i32 {
                self.event_type
            }
            #[inline]
            fn revision(&self) -> u64 {
                self.revision
            }
        }

        /// Back to the wire form (for a gRPC stream): `None` becomes an empty `prev_value`
        /// and `error` is 0.
        impl From<&WatchEvent> for $ty {
            fn from(e: &WatchEvent) -> Self {
                Self {
                    key: e.key.clone(),
                    value: e.value.clone(),
                    prev_value: e.prev_value.clone().unwrap_or_default(),
                    event_type: e.event_type.code(),
                    error: 0,
                    revision: e.revision,
                }
            }
        }
    };
}

proto_shaped_event!(WatchResponse);
#[cfg(feature = "d-engine")]
proto_shaped_event!(d_engine_proto::client::WatchResponse);

/// The slash-terminated leading parts of `key`, shortest first: the prefixes whose watchers an
/// event on `key` reaches.
///
/// `/config/db/host` → `/`, `/config/`, `/config/db/`; `/config/` → `/`, `/config/`;
/// `config` → none. The dispatcher does not call this (it walks the trie instead); it is the
/// reference's definition, kept public for callers and tests.
pub fn prefix_segments(key: &Bytes) -> Vec<Bytes> {
    let mut parts = Vec::new();
    for (end, &byte) in key.iter().enumerate() {
        if byte == b'/' {
            parts.push(key.slice(..=end));
        }
    }
    parts
}
