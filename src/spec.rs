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

/// What a watch matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// One exact key (any bytes, the empty key included).
    Exact(Bytes),
    /// Every key that starts with this prefix, which must start and end with `/` (the
    /// reference's prefix watch; `/` alone watches every key that starts with `/`).
    Prefix(Bytes),
}

impl Target {
    pub(crate) fn kind(&self) -> TargetKind {
        match self {
            Target::Exact(_) => TargetKind::Exact,
            Target::Prefix(_) => TargetKind::Prefix,
        }
    }

    /// The bytes the index files the watcher under.
    pub(crate) fn pattern(&self) -> &Bytes {
        match self {
            Target::Exact(key) | Target::Prefix(key) => key,
        }
    }
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
}

/// The kind of channel a watch delivers through: [`DropIn`] (a tokio `mpsc` channel, as in
/// the reference) or [`Compact`] (a [`CompactReceiver`](crate::CompactReceiver) whose queue
/// exists only while events wait). Sealed: these two are all there are.
pub trait ChannelKind: sealed::Sealed {
    /// The handle `WatchRegistry::watch` returns for this kind.
    type Handle;
    #[doc(hidden)]
    const COMPACT: bool;
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
}

/// A drop-in watcher: a tokio `mpsc` channel, a [`WatcherHandle`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropIn;

/// A compact watcher: a [`CompactWatcherHandle`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compact;

impl ChannelKind for DropIn {
    type Handle = WatcherHandle;
    const COMPACT: bool = false;
    fn from_any(handle: AnyHandle) -> WatcherHandle {
        match handle {
            AnyHandle::DropIn(handle) => handle,
            AnyHandle::Compact(_) => unreachable!("built by the kind's own constant"),
        }
    }
}

impl ChannelKind for Compact {
    type Handle = CompactWatcherHandle;
    const COMPACT: bool = true;
    fn from_any(handle: AnyHandle) -> CompactWatcherHandle {
        match handle {
            AnyHandle::Compact(handle) => handle,
            AnyHandle::DropIn(_) => unreachable!("built by the kind's own constant"),
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
    kind: PhantomData<K>,
}

impl<K: ChannelKind> fmt::Debug for WatchSpec<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchSpec")
            .field("target", &self.target)
            .field("flags", &self.flags)
            .field("compact", &K::COMPACT)
            .finish()
    }
}

impl WatchSpec<DropIn> {
    /// A drop-in watch of `target`, with every option off.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            flags: Flags::default(),
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

    /// The same watch through a compact channel.
    pub fn compact(self) -> WatchSpec<Compact> {
        WatchSpec {
            target: self.target,
            flags: self.flags,
            kind: PhantomData,
        }
    }

    /// The same watch through a drop-in channel.
    pub fn drop_in(self) -> WatchSpec<DropIn> {
        WatchSpec {
            target: self.target,
            flags: self.flags,
            kind: PhantomData,
        }
    }

    /// What the watch matches.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// Why [`WatchRegistry::watch`](crate::WatchRegistry::watch) refused a registration. A
/// refusal allocates nothing and takes no id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// The registry already holds `max` active watchers.
    LimitExceeded {
        /// The registry's limit.
        max: usize,
    },
    /// A [`Target::Prefix`] must start and end with `/`.
    InvalidPrefix,
    /// Every watcher id has been used (2^48 registrations).
    IdsExhausted,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::LimitExceeded { max } => write!(f, "watcher limit ({max}) exceeded"),
            RegisterError::InvalidPrefix => {
                f.write_str("prefix must start with '/' and end with '/'")
            }
            RegisterError::IdsExhausted => f.write_str("every watcher id has been used"),
        }
    }
}

impl std::error::Error for RegisterError {}

impl From<RegisterError> for crate::WatchError {
    /// The drop-in error: what the reference's two variants can say.
    fn from(error: RegisterError) -> Self {
        match error {
            RegisterError::LimitExceeded { max } => crate::WatchError::LimitExceeded(max),
            RegisterError::InvalidPrefix => crate::WatchError::InvalidPrefix,
            RegisterError::IdsExhausted => {
                crate::WatchError::LimitExceeded(crate::meta::Meta::MAX_ID as usize)
            }
        }
    }
}
