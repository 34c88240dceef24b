//! [`WatchSpec`]: one description of a watch (what it targets, which events, how much of
//! each, whose it is, which channel), and [`RegisterError`], why one was refused.
//!
//! `WatchRegistry::watch` takes a spec; the drop-in `register*` methods are thin wrappers
//! over it. The channel kind is a type parameter, so that `watch` returns the handle of that
//! kind: `WatchSpec::exact(key)` gives a [`WatcherHandle`], `.compact()` turns the spec into
//! one that gives a [`CompactWatcherHandle`].

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;

use crate::handle::{CompactWatcherHandle, WatcherHandle};
use crate::meta::{Flags, TargetKind};
use crate::options::RegistryOptions;
use crate::owners::OwnerId;

/// What a watch matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// One exact key (any bytes, the empty key included).
    Exact(Bytes),
    /// Every key that starts with this prefix, which must start and end with `/` (the
    /// reference's prefix watch; `/` alone watches every key that starts with `/`).
    Prefix(Bytes),
    /// Every key that starts with these bytes, whatever they are (`/svc/pay` matches
    /// `/svc/payment/leader`; the empty byte prefix matches every key).
    BytePrefix(Bytes),
    /// Every key `k` with `start <= k < end`, keys ordered as bytes (etcd's key ranges);
    /// `end: None` is unbounded. The range must not be empty.
    Range {
        /// The first key in the range.
        start: Bytes,
        /// The first key past the range, or `None` for no end.
        end: Option<Bytes>,
    },
    /// Every key matching a pattern of pieces split at `/`, where a piece `*` matches any
    /// one piece (the empty one included): `/svc/*/health` matches `/svc/a/health`, not
    /// `/svc/a/b/health`. A pattern ending with `/` is a prefix pattern: `/svc/*/` matches
    /// every key under `/svc/<any piece>/`. `*` must be a whole piece, and a pattern may
    /// hold at most [`RegistryOptions::max_wildcards`](crate::RegistryOptions::max_wildcards)
    /// of them (4 by default): that bounds what one event can cost.
    Pattern(Bytes),
}

impl Target {
    /// Whether an event on `key` reaches a watcher of this target, from the definitions
    /// above (what the index answers for all watchers at once, for one). Allocates nothing;
    /// O(key length).
    ///
    /// ```
    /// use watchtrie::Target;
    ///
    /// let health = Target::Pattern("/svc/*/health".into());
    /// assert!(health.matches(b"/svc/a/health") && !health.matches(b"/svc/a/b/health"));
    /// ```
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Target::Exact(exact) => exact[..] == *key,
            Target::Prefix(prefix) | Target::BytePrefix(prefix) => key.starts_with(prefix),
            Target::Range { start, end } => {
                start[..] <= *key && end.as_ref().is_none_or(|end| *key < end[..])
            }
            Target::Pattern(pattern) => pattern_matches(pattern, key),
        }
    }

    pub(crate) fn kind(&self) -> TargetKind {
        match self {
            Target::Exact(_) => TargetKind::Exact,
            Target::Prefix(_) => TargetKind::Prefix,
            Target::BytePrefix(_) => TargetKind::BytePrefix,
            Target::Range { .. } => TargetKind::Range,
            Target::Pattern(_) => TargetKind::Pattern,
        }
    }

    /// The bytes the index files the watcher under (and the handle's `key()`): the key or
    /// prefix itself; a range's bounds encoded in one pattern.
    pub(crate) fn stored(&self) -> Bytes {
        match self {
            Target::Exact(key)
            | Target::Prefix(key)
            | Target::BytePrefix(key)
            | Target::Pattern(key) => key.clone(),
            Target::Range { start, end } => crate::index::encode_range(start, end.as_deref()),
        }
    }

    /// The target a watcher filed as `kind` under `stored` watches.
    pub(crate) fn from_stored(kind: TargetKind, stored: &Bytes) -> Target {
        match kind {
            TargetKind::Exact => Target::Exact(stored.clone()),
            TargetKind::Prefix => Target::Prefix(stored.clone()),
            TargetKind::BytePrefix => Target::BytePrefix(stored.clone()),
            TargetKind::Pattern => Target::Pattern(stored.clone()),
            TargetKind::Range => {
                let (start, end) = crate::index::decode_range(stored).expect("stored by encode");
                Target::Range {
                    start: stored.slice_ref(start),
                    end: end.map(|end| stored.slice_ref(end)),
                }
            }
        }
    }

    /// Refuses a malformed target, or one beyond the registry's limits; allocates nothing.
    /// The form is checked first, then the sizes.
    pub(crate) fn check(&self, limits: &RegistryOptions) -> Result<(), RegisterError> {
        let wildcards = match self {
            Target::Prefix(prefix) if !(prefix.starts_with(b"/") && prefix.ends_with(b"/")) => {
                return Err(RegisterError::InvalidPrefix)
            }
            Target::Range {
                start,
                end: Some(end),
            } if end <= start => return Err(RegisterError::EmptyRange),
            Target::Pattern(pattern) => crate::index::wildcards(pattern)
                .map_err(|reason| RegisterError::InvalidPattern { reason })?,
            _ => 0,
        };
        let bytes: [&[u8]; 2] = match self {
            Target::Range { start, end } => [start, end.as_deref().unwrap_or_default()],
            Target::Exact(key)
            | Target::Prefix(key)
            | Target::BytePrefix(key)
            | Target::Pattern(key) => [key, &[]],
        };
        let max = limits.max_key_bytes();
        if let Some(&len) = bytes
            .iter()
            .map(|b| b.len())
            .max()
            .iter()
            .find(|&&l| l > max)
        {
            return Err(RegisterError::KeyTooLong { len, max });
        }
        // Depth is what a walk pays for: slash and byte prefixes, patterns.
        if matches!(
            self,
            Target::Prefix(_) | Target::BytePrefix(_) | Target::Pattern(_)
        ) {
            let max = limits.max_segments();
            let segments = bytes[0].iter().filter(|&&b| b == b'/').count();
            if segments > max {
                return Err(RegisterError::TooManySegments { segments, max });
            }
        }
        let max = limits.max_wildcards();
        if wildcards > max {
            return Err(RegisterError::TooManyWildcards { wildcards, max });
        }
        Ok(())
    }
}

/// Pieces split at `/`, `*` any one piece; a trailing `/` lets the key go on (one piece or
/// more). Walks both in step, without collecting either.
fn pattern_matches(pattern: &[u8], key: &[u8]) -> bool {
    let prefix = pattern.ends_with(b"/");
    let fixed = if prefix {
        &pattern[..pattern.len() - 1]
    } else {
        pattern
    };
    let mut pieces = key.split(|&b| b == b'/');
    for wanted in fixed.split(|&b| b == b'/') {
        match pieces.next() {
            Some(piece) if wanted == b"*" || wanted == piece => {}
            _ => return false,
        }
    }
    pieces.next().is_some() == prefix
}

/// Which event types a watcher receives. The default passes every type; each `no_*` drops
/// one (etcd's `NOPUT` / `NODELETE` filters, and heartbeats). A filtered-out event costs the
/// watcher nothing: no channel is touched, nothing is allocated. The cancel sentinel is
/// never filtered.
///
/// ```
/// use watchtrie::EventFilter;
///
/// let deletes_only = EventFilter::default().no_put().no_progress();
/// assert!(!deletes_only.passes_put() && deletes_only.passes_delete());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventFilter {
    flags: Flags,
}

impl EventFilter {
    /// Drops Put events.
    #[must_use]
    pub fn no_put(self) -> Self {
        Self {
            flags: self.flags.with(Flags::NO_PUT),
        }
    }

    /// Drops Delete events.
    #[must_use]
    pub fn no_delete(self) -> Self {
        Self {
            flags: self.flags.with(Flags::NO_DELETE),
        }
    }

    /// Drops Progress events (heartbeats and progress on demand).
    #[must_use]
    pub fn no_progress(self) -> Self {
        Self {
            flags: self.flags.with(Flags::NO_PROGRESS),
        }
    }

    /// Whether Put events pass.
    pub fn passes_put(&self) -> bool {
        !self.flags.contains(Flags::NO_PUT)
    }

    /// Whether Delete events pass.
    pub fn passes_delete(&self) -> bool {
        !self.flags.contains(Flags::NO_DELETE)
    }

    /// Whether Progress events pass.
    pub fn passes_progress(&self) -> bool {
        !self.flags.contains(Flags::NO_PROGRESS)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::DropIn {}
    impl Sealed for super::Compact {}
    impl Sealed for super::Grouped {}
}

/// The kind of channel a watch delivers through: [`DropIn`] (a tokio `mpsc` channel, as in
/// the reference) or [`Compact`] (a [`CompactReceiver`](crate::CompactReceiver) whose queue
/// exists only while events wait), or [`Grouped`] (a member of a shared fan-out group).
/// Sealed: these three are all there are.
pub trait ChannelKind: sealed::Sealed {
    /// The handle `WatchRegistry::watch` returns for this kind.
    type Handle;
    #[doc(hidden)]
    const COMPACT: bool;
    #[doc(hidden)]
    const GROUPED: bool = false;
    #[doc(hidden)]
    fn from_any(handle: AnyHandle) -> Self::Handle;
}

/// A handle of either kind, as `watch` builds it before giving it its type.
#[doc(hidden)]
#[derive(Debug)]
pub enum AnyHandle {
    #[doc(hidden)]
    DropIn(WatcherHandle),
    #[doc(hidden)]
    Compact(CompactWatcherHandle),
    #[doc(hidden)]
    Grouped(crate::group::GroupedWatcherHandle),
}

/// A drop-in watcher: a tokio `mpsc` channel, a [`WatcherHandle`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropIn;

/// A compact watcher: a [`CompactWatcherHandle`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compact;

/// A member of a shared fan-out group: a [`GroupedWatcherHandle`](crate::GroupedWatcherHandle)
/// (see [`WatchSpec::grouped`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grouped;

impl ChannelKind for DropIn {
    type Handle = WatcherHandle;
    const COMPACT: bool = false;
    fn from_any(handle: AnyHandle) -> WatcherHandle {
        match handle {
            AnyHandle::DropIn(handle) => handle,
            _ => unreachable!("built by the kind's own constant"),
        }
    }
}

impl ChannelKind for Grouped {
    type Handle = crate::group::GroupedWatcherHandle;
    const COMPACT: bool = true;
    const GROUPED: bool = true;
    fn from_any(handle: AnyHandle) -> Self::Handle {
        match handle {
            AnyHandle::Grouped(handle) => handle,
            _ => unreachable!("built by the kind's own constant"),
        }
    }
}

impl ChannelKind for Compact {
    type Handle = CompactWatcherHandle;
    const COMPACT: bool = true;
    fn from_any(handle: AnyHandle) -> CompactWatcherHandle {
        match handle {
            AnyHandle::Compact(handle) => handle,
            _ => unreachable!("built by the kind's own constant"),
        }
    }
}

/// One description of a watch: give it to
/// [`WatchRegistry::watch`](crate::WatchRegistry::watch).
///
/// ```
/// use bytes::Bytes;
/// use watchtrie::{EventFilter, WatchSpec};
///
/// // Keys only, no heartbeats, through a compact channel.
/// let spec = WatchSpec::prefix("/services/")
///     .keys_only(true)
///     .filter(EventFilter::default().no_progress())
///     .compact();
/// # let _ = spec;
/// ```
#[derive(Clone)]
pub struct WatchSpec<K: ChannelKind = DropIn> {
    pub(crate) target: Target,
    pub(crate) flags: Flags,
    pub(crate) owner: Option<OwnerId>,
    pub(crate) start: Option<u64>,
    kind: PhantomData<K>,
}

impl<K: ChannelKind> fmt::Debug for WatchSpec<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchSpec")
            .field("target", &self.target)
            .field("flags", &self.flags)
            .field("owner", &self.owner)
            .field("start", &self.start)
            .field("compact", &K::COMPACT)
            .field("grouped", &K::GROUPED)
            .finish()
    }
}

impl WatchSpec<DropIn> {
    /// A drop-in watch of `target`, with every option off.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            flags: Flags::default(),
            owner: None,
            start: None,
            kind: PhantomData,
        }
    }

    /// Watches one exact key.
    pub fn exact(key: impl Into<Bytes>) -> Self {
        Self::new(Target::Exact(key.into()))
    }

    /// Watches every key under a slash prefix (it must start and end with `/`).
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        Self::new(Target::Prefix(prefix.into()))
    }

    /// Watches every key that starts with `prefix`, any bytes.
    pub fn byte_prefix(prefix: impl Into<Bytes>) -> Self {
        Self::new(Target::BytePrefix(prefix.into()))
    }

    /// Watches every key in `[start, end)` (it must not be empty).
    pub fn range(start: impl Into<Bytes>, end: impl Into<Bytes>) -> Self {
        Self::new(Target::Range {
            start: start.into(),
            end: Some(end.into()),
        })
    }

    /// Watches every key at or after `start`.
    pub fn range_from(start: impl Into<Bytes>) -> Self {
        Self::new(Target::Range {
            start: start.into(),
            end: None,
        })
    }

    /// Watches every key a wildcard pattern matches (see [`Target::Pattern`]).
    pub fn pattern(pattern: impl Into<Bytes>) -> Self {
        Self::new(Target::Pattern(pattern.into()))
    }
}

impl<K: ChannelKind> WatchSpec<K> {
    /// With `true`, each event carries the key's previous value (see
    /// [`WatchEvent::prev_value`](crate::WatchEvent::prev_value)).
    #[must_use]
    pub fn prev_kv(mut self, on: bool) -> Self {
        self.flags = self
            .flags
            .without(Flags::PREV_KV)
            .with_if(Flags::PREV_KV, on);
        self
    }

    /// Which event types reach the watcher (default: all).
    #[must_use]
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.flags = self.flags.without(Flags::FILTERS).with(filter.flags);
        self
    }

    /// With `true`, events carry the key but no value: `value` is empty, and `prev_value`
    /// (if asked for) is `Some(empty)`. Values and previous values are most of an event's
    /// size.
    #[must_use]
    pub fn keys_only(mut self, on: bool) -> Self {
        self.flags = self
            .flags
            .without(Flags::KEYS_ONLY)
            .with_if(Flags::KEYS_ONLY, on);
        self
    }

    /// Counts the watcher against `owner`'s cap (see [`OwnerId`]).
    #[must_use]
    pub fn owner(mut self, owner: OwnerId) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Starts the watch at `revision`: every event with revision `revision` or later that
    /// the dispatcher's history still holds and the target matches is delivered first, in
    /// order, then live events, with no gap and no duplicate between the two. The dispatcher
    /// must keep history ([`DispatchOptions::with_history`](crate::DispatchOptions::with_history));
    /// a start below what it holds (or any past revision without history) gets at once a
    /// Canceled event whose [`cancel_reason`](crate::WatchEvent::cancel_reason) is
    /// [`CancelReason::Compacted`](crate::CancelReason::Compacted), with the oldest
    /// revision it may start from. A start above the last dispatched revision waits for it.
    ///
    /// The watcher is added to the index by the dispatcher (not by this call): before its
    /// next event without a history; with one, at its next turn, in slices of up to 256
    /// registrations between live events (paced while events keep coming), what came
    /// meanwhile being replayed. A replay longer than its buffer is fed as its receiver
    /// drains, and it receives no Progress until it has caught up. Revision 0 is read as 1
    /// (revisions start there).
    #[must_use]
    pub fn from_revision(mut self, revision: u64) -> Self {
        self.start = Some(revision);
        self
    }

    /// The same description with another channel kind.
    fn into_kind<K2: ChannelKind>(self) -> WatchSpec<K2> {
        WatchSpec {
            target: self.target,
            flags: self.flags,
            owner: self.owner,
            start: self.start,
            kind: PhantomData,
        }
    }

    /// The same watch through a compact channel.
    pub fn compact(self) -> WatchSpec<Compact> {
        self.into_kind()
    }

    /// The same watch as a member of a shared fan-out group: every watch registered with
    /// the same target and the same options (prev_kv, filter, keys-only) shares one ring of
    /// the registry's buffer size, so the dispatcher pushes each event once for all of them.
    /// A member has a compact watcher's receiver API ([`GroupReceiver`](crate::GroupReceiver)).
    /// How it differs from a drop-in watcher:
    ///
    /// - falling behind is seen when it reads: a member more than its buffer behind gets one
    ///   Canceled event ([`CancelReason::BufferOverflowAt`](crate::CancelReason::BufferOverflowAt),
    ///   the revision to resume from, one past the last event it read), then `None`, while
    ///   the others go on; the dispatcher is never told;
    /// - its units of the limits are released when its receiver is dropped, when it reads
    ///   its lag sentinel, or when the closed-receiver sweep finds it lagged, whichever
    ///   comes first (not when the dispatcher next runs, as a drop-in handle's are);
    /// - it cannot start from a revision ([`RegisterError::GroupedFromRevision`]);
    /// - `WatchRegistry::watcher_count` and friends count the group's one watcher in the
    ///   index, not its members; `active_watcher_count` counts members;
    /// - a Progress requested for one member
    ///   ([`GroupedWatcherHandle::progress_request`](crate::GroupedWatcherHandle::progress_request))
    ///   is read after every event its group received before the request, and takes no slot
    ///   of the ring's buffer: unlike a lone watcher's, it cannot make the member lag (at
    ///   most a buffer's worth waits unread; a request beyond that is not queued);
    /// - two first members of one new key registering at the same instant from two threads
    ///   may create two groups (both correct; later members join the one mapped first).
    ///   Within one `watch_many` batch they share one.
    pub fn grouped(self) -> WatchSpec<Grouped> {
        self.into_kind()
    }

    /// The same watch through a drop-in channel.
    pub fn drop_in(self) -> WatchSpec<DropIn> {
        self.into_kind()
    }

    /// What the watch matches.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// Why [`WatchRegistry::watch`](crate::WatchRegistry::watch) refused a registration. A
/// refusal of the checks made before a registration is built (every variant but
/// [`Self::IdsExhausted`], which used up the last id, and [`Self::PublishInterrupted`],
/// which came after the channel and handle were made) takes no id and allocates nothing,
/// with one exception: a global [`Self::LimitExceeded`] for an owned watch whose owner had
/// no entry may leave the owner table grown by that entry's room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// The registry already holds `max` active watchers.
    LimitExceeded {
        /// The registry's limit.
        max: usize,
    },
    /// `owner` already holds `max` active watchers (its cap).
    OwnerLimitExceeded {
        /// The owner the spec named.
        owner: OwnerId,
        /// Its cap.
        max: usize,
    },
    /// A [`Target::Prefix`] must start and end with `/`.
    InvalidPrefix,
    /// A [`Target::Range`] must not be empty: its end must come after its start.
    EmptyRange,
    /// A [`Target::Pattern`] is malformed.
    InvalidPattern {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key, prefix, pattern or range bound is longer than the registry allows
    /// ([`RegistryOptions::with_key_limits`](crate::RegistryOptions::with_key_limits)).
    KeyTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A prefix, byte prefix or pattern has more `/` than the registry allows.
    TooManySegments {
        /// Its separators.
        segments: usize,
        /// The limit.
        max: usize,
    },
    /// A pattern has more wildcards than the registry allows.
    TooManyWildcards {
        /// Its wildcards.
        wildcards: usize,
        /// The limit.
        max: usize,
    },
    /// Every watcher id has been used (2^48 registrations).
    IdsExhausted,
    /// A grouped watch cannot start from a revision: its members share one ring of live
    /// events. Register it as a compact watch from the revision instead.
    GroupedFromRevision,
    /// Another thread's publish carrying this registration panicked (a bug in an index:
    /// the panic is reported there). Nothing of it stays: retrying is safe, the next
    /// publish mends the index.
    PublishInterrupted,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::LimitExceeded { max } => write!(f, "watcher limit ({max}) exceeded"),
            RegisterError::OwnerLimitExceeded { owner, max } => {
                write!(f, "owner {}'s watcher limit ({max}) exceeded", owner.0)
            }
            RegisterError::InvalidPrefix => {
                f.write_str("prefix must start with '/' and end with '/'")
            }
            RegisterError::IdsExhausted => f.write_str("every watcher id has been used"),
            RegisterError::GroupedFromRevision => {
                f.write_str("a grouped watch cannot start from a revision")
            }
            RegisterError::PublishInterrupted => {
                f.write_str("the publish carrying this registration panicked; retry")
            }
            RegisterError::EmptyRange => f.write_str("a range's end must come after its start"),
            RegisterError::InvalidPattern { reason } => write!(f, "invalid pattern: {reason}"),
            RegisterError::KeyTooLong { len, max } => {
                write!(f, "{len} bytes, over the registry's limit of {max}")
            }
            RegisterError::TooManySegments { segments, max } => {
                write!(f, "{segments} segments, over the registry's limit of {max}")
            }
            RegisterError::TooManyWildcards { wildcards, max } => {
                write!(
                    f,
                    "{wildcards} wildcards, over the registry's limit of {max}"
                )
            }
        }
    }
}

impl std::error::Error for RegisterError {}

impl From<RegisterError> for crate::WatchError {
    /// The drop-in error: what the reference's two variants can say. Lossy (a key or
    /// wildcard limit reads as "watcher limit (max) exceeded", a malformed range or pattern
    /// as the prefix error): [`WatchRegistry::watch`](crate::WatchRegistry::watch) returns
    /// the precise reason.
    fn from(error: RegisterError) -> Self {
        match error {
            RegisterError::LimitExceeded { max } => crate::WatchError::LimitExceeded(max),
            // An operator's limit, as the reference's one kind of limit: callers that back off
            // on it do the right thing.
            RegisterError::OwnerLimitExceeded { max, .. }
            | RegisterError::KeyTooLong { max, .. }
            | RegisterError::TooManySegments { max, .. }
            | RegisterError::TooManyWildcards { max, .. } => crate::WatchError::LimitExceeded(max),
            // The drop-in methods only make exact and prefix watches, so they never meet the
            // malformed forms of the other kinds; those map to the one form error there is.
            RegisterError::InvalidPrefix
            | RegisterError::EmptyRange
            | RegisterError::InvalidPattern { .. }
            | RegisterError::GroupedFromRevision => crate::WatchError::InvalidPrefix,
            RegisterError::IdsExhausted => {
                crate::WatchError::LimitExceeded(crate::meta::Meta::MAX_ID as usize)
            }
            // Refused for now, as by a limit: a caller that backs off and retries does the
            // right thing (the next publish mends the index).
            RegisterError::PublishInterrupted => crate::WatchError::LimitExceeded(0),
        }
    }
}
