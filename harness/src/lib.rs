//! The watch engines behind one trait, used only through their public APIs: d-engine-core
//! 0.2.4's `watch` module (the reference), watchtrie through its drop-in API, and watchtrie
//! through its compact registration path. The benchmarks (`watchbench`) and the
//! differential tests (`conformance`) both drive them through [`Engine`], so that one piece
//! of code runs on every engine, and there is one place that says how.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

/// The event every engine consumes: d-engine's own protobuf type.
pub type Event = d_engine_proto::client::WatchResponse;

/// An unregistration channel's receiving end, as every engine takes it.
pub type UnregisterRx = mpsc::UnboundedReceiver<(u64, Bytes)>;

/// An event as an engine delivered it, in one comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// 0 Put, 1 Delete, 2 Canceled, 3 Progress.
    pub event_type: u8,
    /// Key.
    pub key: Bytes,
    /// Value.
    pub value: Bytes,
    /// Previous value, if the watcher asked for it.
    pub prev_value: Option<Bytes>,
    /// Revision.
    pub revision: u64,
}

/// A registration's outcome, in one comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// `Ok(handle)`: its id, key and kind.
    Ok {
        /// The watcher's id.
        id: u64,
        /// Its key or prefix.
        key: Bytes,
        /// Whether it watches a prefix.
        is_prefix: bool,
    },
    /// `Err(LimitExceeded(max))`.
    LimitExceeded(usize),
    /// `Err(InvalidPrefix)`.
    InvalidPrefix,
}

/// What a receiver had, in one comparable form.
#[derive(Debug)]
pub enum Received<T> {
    /// An event.
    Event(T),
    /// Nothing now; more may come.
    Empty,
    /// Nothing, and nothing will come.
    Closed,
}

/// A watch engine with the d-engine-core 0.2.4 API.
pub trait Engine: 'static {
    /// Name in reports.
    const NAME: &'static str;
    /// The registry type.
    type Registry: Send + Sync + 'static;
    /// What a registration returns.
    type Handle: Send + 'static;
    /// What a watcher receives.
    type Event: Send + 'static;
    /// A watcher's receiver.
    type Receiver: Send + 'static;

    /// A registry and its unregistration receiver.
    fn registry(buffer: usize, limit: usize) -> (Arc<Self::Registry>, UnregisterRx);
    /// `register`.
    fn register(r: &Self::Registry, key: Bytes, prev_kv: bool) -> Result<Self::Handle, Registered>;
    /// `register_prefix`.
    fn register_prefix(
        r: &Self::Registry,
        prefix: Bytes,
        prev_kv: bool,
    ) -> Result<Self::Handle, Registered>;
    /// What a successful registration returned.
    fn describe(handle: &Self::Handle) -> Registered;
    /// `receiver_mut`.
    fn receiver(handle: &mut Self::Handle) -> &mut Self::Receiver;
    /// `into_receiver`: the receiver, the watcher staying registered.
    fn into_receiver(handle: Self::Handle) -> Self::Receiver;
    /// `try_recv` on a receiver.
    fn try_recv(receiver: &mut Self::Receiver) -> Received<Self::Event>;
    /// `recv` on a receiver.
    fn recv(receiver: &mut Self::Receiver)
        -> impl Future<Output = Option<Self::Event>> + Send + '_;
    /// Events waiting in a receiver.
    fn queued(receiver: &Self::Receiver) -> usize;
    /// The comparable form of a delivered event.
    fn seen(event: &Self::Event) -> Seen;
    /// Revision and value of a delivered event (what the benchmarks' probes read).
    fn stamp(event: &Self::Event) -> (u64, &[u8]);
    /// `prev_kv_watcher_count`.
    fn prev_kv_count(r: &Self::Registry) -> usize;
    /// The dispatcher's `run()`, with a heartbeat every `heartbeat_ms` (0: none);
    /// `incremental` selects watchtrie's opt-in sliced heartbeat (the reference has only
    /// the blocking one, and panics if asked for the other).
    fn run(
        r: Arc<Self::Registry>,
        events: broadcast::Receiver<Event>,
        unregister: UnregisterRx,
        last_applied: Arc<AtomicU64>,
        heartbeat_ms: u64,
        incremental: bool,
    ) -> impl Future<Output = ()> + Send + 'static;
    /// Structural self-check, where the engine has one.
    fn check(_r: &Self::Registry) {}
    /// Dispatches `events` synchronously on this thread, if the engine can; the time taken.
    fn inline_pass(_r: &Arc<Self::Registry>, _events: &[Event]) -> Option<Duration> {
        None
    }

    /// An exact watcher without prev_kv, for workloads that stay within every limit.
    fn watch(r: &Self::Registry, key: Bytes) -> Self::Handle {
        Self::register(r, key, false).expect("no limit")
    }
    /// A prefix watcher without prev_kv (the prefix must be valid).
    fn watch_prefix(r: &Self::Registry, prefix: Bytes) -> Self::Handle {
        Self::register_prefix(r, prefix, false).expect("a valid prefix")
    }
    /// The dispatcher's `run()` with no heartbeat and `last_applied` at 0.
    fn run_quiet(
        r: Arc<Self::Registry>,
        events: broadcast::Receiver<Event>,
        unregister: UnregisterRx,
    ) -> impl Future<Output = ()> + Send + 'static {
        Self::run(r, events, unregister, Arc::new(AtomicU64::new(0)), 0, false)
    }
    /// Empties a handle's receiver; returns how many events it held.
    fn drain(handle: &mut Self::Handle) -> usize {
        let receiver = Self::receiver(handle);
        std::iter::from_fn(|| match Self::try_recv(receiver) {
            Received::Event(_) => Some(()),
            _ => None,
        })
        .count()
    }
}

/// The comparable form of a `WatchEvent` of either crate.
macro_rules! seen {
    ($e:expr, $($module:ident)::+) => {{
        use $($module)::+::WatchEventType as T;
        let e = $e;
        let event_type = match e.event_type {
            T::Put => 0,
            T::Delete => 1,
            T::Canceled => 2,
            T::Progress => 3,
        };
        Seen {
            event_type,
            key: e.key.clone(),
            value: e.value.clone(),
            prev_value: e.prev_value.clone(),
            revision: e.revision,
        }
    }};
}

/// Implements [`Engine`] for `$engine` over a module with the d-engine-core 0.2.4 watch API
/// (both crates have the same names and signatures: that is the point of a drop-in), with
/// its register calls and receiver type given. `heartbeat:` turns the dispatcher (bound to
/// the first name) into the one to run, given the second name (`incremental`). Extra trait
/// items follow.
macro_rules! engine {
    (
        $(#[$doc:meta])* $engine:ident, $name:literal, $($module:ident)::+,
        handle: $handle:ty, receiver: $receiver:ty, try_recv: $empty:path, $closed:path,
        register: $register:ident, $register_prefix:ident,
        heartbeat: |$dispatcher:ident, $incremental:ident| $configure:expr
        $(, $extra:item)*
    ) => {
        $(#[$doc])*
        pub struct $engine;

        impl Engine for $engine {
            const NAME: &'static str = $name;
            type Registry = $($module)::+::WatchRegistry;
            type Handle = $handle;
            type Event = $($module)::+::WatchEvent;
            type Receiver = $receiver;

            fn registry(buffer: usize, limit: usize) -> (Arc<Self::Registry>, UnregisterRx) {
                let (tx, rx) = mpsc::unbounded_channel();
                (Arc::new(Self::Registry::new_with_limits(buffer, limit, tx)), rx)
            }
            fn register(r: &Self::Registry, key: Bytes, prev_kv: bool) -> Result<Self::Handle, Registered> {
                r.$register(key, prev_kv).map_err(refused!($($module)::+))
            }
            fn register_prefix(
                r: &Self::Registry,
                prefix: Bytes,
                prev_kv: bool,
            ) -> Result<Self::Handle, Registered> {
                r.$register_prefix(prefix, prev_kv).map_err(refused!($($module)::+))
            }
            fn describe(h: &Self::Handle) -> Registered {
                Registered::Ok { id: h.id(), key: h.key().clone(), is_prefix: h.is_prefix() }
            }
            fn receiver(h: &mut Self::Handle) -> &mut Self::Receiver {
                h.receiver_mut()
            }
            fn into_receiver(h: Self::Handle) -> Self::Receiver {
                h.into_receiver().2
            }
            fn try_recv(rx: &mut Self::Receiver) -> Received<Self::Event> {
                match rx.try_recv() {
                    Ok(event) => Received::Event(event),
                    Err($empty) => Received::Empty,
                    Err($closed) => Received::Closed,
                }
            }
            fn recv(rx: &mut Self::Receiver) -> impl Future<Output = Option<Self::Event>> + Send + '_ {
                rx.recv()
            }
            fn queued(rx: &Self::Receiver) -> usize {
                rx.len()
            }
            fn seen(e: &Self::Event) -> Seen {
                seen!(e, $($module)::+)
            }
            fn stamp(e: &Self::Event) -> (u64, &[u8]) {
                (e.revision, &e.value)
            }
            fn prev_kv_count(r: &Self::Registry) -> usize {
                r.prev_kv_watcher_count()
            }
            fn run(
                r: Arc<Self::Registry>,
                events: broadcast::Receiver<Event>,
                unregister: UnregisterRx,
                last_applied: Arc<AtomicU64>,
                heartbeat_ms: u64,
                $incremental: bool,
            ) -> impl Future<Output = ()> + Send + 'static {
                let $dispatcher = $($module)::+::WatchDispatcher::new(
                    r, events, unregister, last_applied, heartbeat_ms,
                );
                $configure.run()
            }
            $($extra)*
        }
    };
}

/// A closure mapping the module's `WatchError` to [`Registered`].
macro_rules! refused {
    ($($module:ident)::+) => {
        |e| match e {
            $($module)::+::WatchError::LimitExceeded(n) => Registered::LimitExceeded(n),
            $($module)::+::WatchError::InvalidPrefix => Registered::InvalidPrefix,
        }
    };
}

engine!(
    /// `d_engine_core::watch` 0.2.4, the reference (the oracle).
    Reference,
    "reference",
    d_engine_core::watch,
    handle: d_engine_core::watch::WatcherHandle,
    receiver: mpsc::Receiver<d_engine_core::watch::WatchEvent>,
    try_recv: mpsc::error::TryRecvError::Empty, mpsc::error::TryRecvError::Disconnected,
    register: register, register_prefix,
    heartbeat: |dispatcher, incremental| {
        assert!(!incremental, "the reference has no incremental heartbeat");
        dispatcher
    }
);

/// watchtrie's dispatcher with the heartbeat mode asked for, and a history when `history`.
fn watchtrie_heartbeat<R: watchtrie::ChangeEvent + Clone>(
    dispatcher: watchtrie::WatchDispatcher<R>,
    incremental: bool,
    history: bool,
) -> watchtrie::WatchDispatcher<R> {
    let mode = if incremental {
        watchtrie::HeartbeatMode::Incremental
    } else {
        watchtrie::HeartbeatMode::Blocking
    };
    let options = watchtrie::DispatchOptions::default().with_heartbeat_mode(mode);
    dispatcher.with_options(match history {
        true => options.with_history(BENCH_HISTORY),
        false => options,
    })
}

/// The history [`WatchtrieHistory`] keeps: 100K events, 64 MiB.
pub const BENCH_HISTORY: watchtrie::HistoryOptions =
    watchtrie::HistoryOptions::new(100_000, 64 << 20);

/// Times an inline pass of watchtrie's dispatcher over `events`.
fn watchtrie_inline_pass(
    registry: &Arc<watchtrie::WatchRegistry>,
    events: &[Event],
) -> Option<Duration> {
    // A fresh unregistration channel: this pass only delivers.
    let (_tx, rx) = mpsc::unbounded_channel();
    let mut inline = watchtrie::InlineDispatcher::new(registry.clone(), rx);
    let start = std::time::Instant::now();
    for event in events {
        inline.dispatch(event);
    }
    Some(start.elapsed())
}

/// [`engine!`] for one of watchtrie's registration paths: everything but the handle,
/// receiver and register calls is the same for both.
macro_rules! watchtrie_engine {
    (
        $(#[$doc:meta])* $engine:ident, $name:literal,
        handle: $handle:ty, receiver: $receiver:ty, try_recv: $empty:path, $closed:path,
        register: $register:ident, $register_prefix:ident, history: $history:literal
    ) => {
        engine!(
            $(#[$doc])* $engine,
            $name,
            watchtrie,
            handle: $handle,
            receiver: $receiver,
            try_recv: $empty, $closed,
            register: $register, $register_prefix,
            heartbeat: |dispatcher, incremental| watchtrie_heartbeat(dispatcher, incremental, $history),
            fn check(r: &Self::Registry) {
                r.check_invariants();
            },
            fn inline_pass(r: &Arc<Self::Registry>, events: &[Event]) -> Option<Duration> {
                watchtrie_inline_pass(r, events)
            }
        );
    };
}

watchtrie_engine!(
    /// watchtrie through its drop-in API.
    Watchtrie,
    "watchtrie",
    handle: watchtrie::WatcherHandle,
    receiver: mpsc::Receiver<watchtrie::WatchEvent>,
    try_recv: mpsc::error::TryRecvError::Empty, mpsc::error::TryRecvError::Disconnected,
    register: register, register_prefix, history: false
);

watchtrie_engine!(
    /// watchtrie through its drop-in API, its dispatcher keeping a history
    /// ([`BENCH_HISTORY`]): what recording every event costs.
    WatchtrieHistory,
    "watchtrie (history)",
    handle: watchtrie::WatcherHandle,
    receiver: mpsc::Receiver<watchtrie::WatchEvent>,
    try_recv: mpsc::error::TryRecvError::Empty, mpsc::error::TryRecvError::Disconnected,
    register: register, register_prefix, history: true
);

/// Registration of grouped watchers through the engine macro's `(key, prev_kv)` calls:
/// `watch` with a grouped spec (the library has no method per kind, by design).
pub trait GroupedRegistration {
    /// An exact key, grouped.
    fn register_grouped(
        &self,
        key: Bytes,
        prev_kv: bool,
    ) -> Result<watchtrie::GroupedWatcherHandle, watchtrie::WatchError>;
    /// A slash prefix, grouped.
    fn register_prefix_grouped(
        &self,
        prefix: Bytes,
        prev_kv: bool,
    ) -> Result<watchtrie::GroupedWatcherHandle, watchtrie::WatchError>;
}

impl GroupedRegistration for watchtrie::WatchRegistry {
    fn register_grouped(
        &self,
        key: Bytes,
        prev_kv: bool,
    ) -> Result<watchtrie::GroupedWatcherHandle, watchtrie::WatchError> {
        let spec = watchtrie::WatchSpec::exact(key).prev_kv(prev_kv).grouped();
        Ok(self.watch(spec)?)
    }
    fn register_prefix_grouped(
        &self,
        prefix: Bytes,
        prev_kv: bool,
    ) -> Result<watchtrie::GroupedWatcherHandle, watchtrie::WatchError> {
        let spec = watchtrie::WatchSpec::prefix(prefix)
            .prev_kv(prev_kv)
            .grouped();
        Ok(self.watch(spec)?)
    }
}

watchtrie_engine!(
    /// watchtrie with every watcher a member of a shared fan-out group (one group per
    /// target): what members cost, and what they receive until one lags.
    WatchtrieGrouped,
    "watchtrie (grouped)",
    handle: watchtrie::GroupedWatcherHandle,
    receiver: watchtrie::GroupReceiver,
    try_recv: watchtrie::TryRecvError::Empty, watchtrie::TryRecvError::Disconnected,
    register: register_grouped, register_prefix_grouped, history: false
);

watchtrie_engine!(
    /// watchtrie through its compact registration path (`register_compact`,
    /// `CompactReceiver`): every observation must still be the reference's.
    WatchtrieCompact,
    "watchtrie (compact)",
    handle: watchtrie::CompactWatcherHandle,
    receiver: watchtrie::CompactReceiver,
    try_recv: watchtrie::TryRecvError::Empty, watchtrie::TryRecvError::Disconnected,
    register: register_compact, register_prefix_compact, history: false
);
