//! The two engines behind one trait, so every scenario drives both the same way.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

/// The event both engines consume: d-engine's own protobuf type.
pub type Event = d_engine_proto::client::WatchResponse;

/// An unregistration channel's receiving end, as both engines take it.
pub type UnregisterRx = mpsc::UnboundedReceiver<(u64, Bytes)>;

/// A watch engine with the d-engine-core 0.2.4 API.
pub trait Engine: 'static {
    /// Name in reports.
    const NAME: &'static str;
    /// The registry type.
    type Registry: Send + Sync + 'static;
    /// What a registration returns.
    type Handle: Send + 'static;
    /// What a watcher receives.
    type Delivered: Send + 'static;

    /// A registry with an unbounded watcher count, and its unregistration receiver.
    fn registry(buffer: usize) -> (Arc<Self::Registry>, UnregisterRx);
    /// Registers an exact watcher (panics on refusal: workloads stay within limits).
    fn register(registry: &Self::Registry, key: Bytes) -> Self::Handle;
    /// Registers a prefix watcher.
    fn register_prefix(registry: &Self::Registry, prefix: Bytes) -> Self::Handle;
    /// The dispatcher's `run()` future (heartbeat off).
    fn run(
        registry: Arc<Self::Registry>,
        events: broadcast::Receiver<Event>,
        unregister: UnregisterRx,
    ) -> impl Future<Output = ()> + Send + 'static;
    /// The dispatcher's `run()` future with a heartbeat every `interval_ms`; `incremental`
    /// selects watchtrie's opt-in sliced sweep (the reference has only the blocking one).
    fn run_heartbeat(
        registry: Arc<Self::Registry>,
        events: broadcast::Receiver<Event>,
        unregister: UnregisterRx,
        interval_ms: u64,
        incremental: bool,
    ) -> impl Future<Output = ()> + Send + 'static;
    /// The handle's receiver, the watcher staying registered.
    fn into_receiver(handle: Self::Handle) -> mpsc::Receiver<Self::Delivered>;
    /// Revision and value of a delivered event.
    fn stamp(event: &Self::Delivered) -> (u64, &[u8]);
    /// Events waiting in a handle's receiver.
    fn queued(handle: &mut Self::Handle) -> usize;
    /// Empties a handle's receiver; returns how many events it held.
    fn drain(handle: &mut Self::Handle) -> usize;
    /// Dispatches `events` synchronously on this thread, if the engine can; the time taken.
    fn inline_pass(
        _registry: &Arc<Self::Registry>,
        _events: &[Event],
    ) -> Option<std::time::Duration> {
        None
    }
}

/// Implements [`Engine`] for `$engine` over a module with the d-engine-core 0.2.4 watch API
/// (both engines have the same names and signatures: that is the point of a drop-in).
/// `heartbeat:` turns the dispatcher `run_heartbeat` builds (bound to the first name) into
/// the one to run, given the second name (`incremental`). Extra trait items, such as an
/// `inline_pass`, follow.
macro_rules! drop_in_engine {
    (
        $(#[$doc:meta])* $engine:ident, $name:literal, $($module:ident)::+,
        heartbeat: |$dispatcher:ident, $incremental:ident| $configure:expr
        $(, $extra:item)*
    ) => {
        $(#[$doc])*
        pub struct $engine;

        impl Engine for $engine {
            const NAME: &'static str = $name;
            type Registry = $($module)::+::WatchRegistry;
            type Handle = $($module)::+::WatcherHandle;
            type Delivered = $($module)::+::WatchEvent;

            fn registry(buffer: usize) -> (Arc<Self::Registry>, UnregisterRx) {
                let (tx, rx) = mpsc::unbounded_channel();
                (Arc::new(Self::Registry::new(buffer, tx)), rx)
            }
            fn register(registry: &Self::Registry, key: Bytes) -> Self::Handle {
                registry.register(key, false).expect("no limit")
            }
            fn register_prefix(registry: &Self::Registry, prefix: Bytes) -> Self::Handle {
                registry.register_prefix(prefix, false).expect("valid prefix")
            }
            fn run(
                registry: Arc<Self::Registry>,
                events: broadcast::Receiver<Event>,
                unregister: UnregisterRx,
            ) -> impl Future<Output = ()> + Send + 'static {
                let last_applied = Arc::new(AtomicU64::new(0));
                $($module)::+::WatchDispatcher::new(registry, events, unregister, last_applied, 0).run()
            }
            fn run_heartbeat(
                registry: Arc<Self::Registry>,
                events: broadcast::Receiver<Event>,
                unregister: UnregisterRx,
                interval_ms: u64,
                $incremental: bool,
            ) -> impl Future<Output = ()> + Send + 'static {
                let last_applied = Arc::new(AtomicU64::new(1));
                let $dispatcher = $($module)::+::WatchDispatcher::new(
                    registry, events, unregister, last_applied, interval_ms,
                );
                $configure.run()
            }
            fn into_receiver(handle: Self::Handle) -> mpsc::Receiver<Self::Delivered> {
                handle.into_receiver().2
            }
            fn stamp(event: &Self::Delivered) -> (u64, &[u8]) {
                (event.revision, &event.value)
            }
            fn queued(handle: &mut Self::Handle) -> usize {
                handle.receiver_mut().len()
            }
            fn drain(handle: &mut Self::Handle) -> usize {
                let receiver = handle.receiver_mut();
                std::iter::from_fn(|| receiver.try_recv().ok()).count()
            }
            $($extra)*
        }
    };
}

drop_in_engine!(
    /// `d_engine_core::watch` 0.2.4, the reference.
    Reference,
    "reference",
    d_engine_core::watch,
    heartbeat: |dispatcher, incremental| {
        assert!(!incremental, "the reference has no incremental heartbeat");
        dispatcher
    }
);

drop_in_engine!(
    /// watchtrie, through its async `WatchDispatcher`.
    Watchtrie,
    "watchtrie",
    watchtrie,
    heartbeat: |dispatcher, incremental| {
        let mode = if incremental {
            watchtrie::HeartbeatMode::Incremental
        } else {
            watchtrie::HeartbeatMode::Blocking
        };
        dispatcher.with_options(watchtrie::DispatchOptions::default().with_heartbeat_mode(mode))
    },
    fn inline_pass(
        registry: &Arc<Self::Registry>,
        events: &[Event],
    ) -> Option<std::time::Duration> {
        // A fresh unregistration channel: this pass only delivers.
        let (_tx, rx) = mpsc::unbounded_channel();
        let mut inline = watchtrie::InlineDispatcher::new(registry.clone(), rx);
        let start = std::time::Instant::now();
        for event in events {
            inline.dispatch(event);
        }
        Some(start.elapsed())
    }
);
