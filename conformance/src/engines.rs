//! Both engines behind one trait, used only through their public APIs.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use d_engine_proto::client::WatchResponse;
use tokio::sync::{broadcast, mpsc};

/// An event as either engine delivered it, in one comparable form.
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
        id: u64,
        key: Bytes,
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
    /// Registry type.
    type Registry: Send + Sync + 'static;
    /// Handle type.
    type Handle: 'static;
    /// Delivered event type.
    type Event: Send + 'static;
    /// A watcher's receiver.
    type Receiver: Send + 'static;

    /// A registry and its unregistration receiver.
    fn registry(
        buffer: usize,
        limit: usize,
    ) -> (Arc<Self::Registry>, mpsc::UnboundedReceiver<(u64, Bytes)>);
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
    /// `into_receiver`.
    fn into_receiver(handle: Self::Handle) -> Self::Receiver;
    /// `try_recv` on a receiver.
    fn try_recv(receiver: &mut Self::Receiver) -> Received<Self::Event>;
    /// The comparable form of a delivered event.
    fn seen(event: &Self::Event) -> Seen;
    /// `prev_kv_watcher_count`.
    fn prev_kv_count(r: &Self::Registry) -> usize;
    /// The dispatcher's `run()`.
    fn run(
        r: Arc<Self::Registry>,
        events: broadcast::Receiver<WatchResponse>,
        unregister: mpsc::UnboundedReceiver<(u64, Bytes)>,
        last_applied: Arc<AtomicU64>,
        heartbeat_ms: u64,
    ) -> impl Future<Output = ()> + Send + 'static;
    /// Structural self-check, where the engine has one.
    fn check(_r: &Self::Registry) {}
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

/// Implements [`Engine`] for `$engine` over a module with the d-engine-core 0.2.4 watch API:
/// both engines are driven by literally the same code. Extra trait items follow the path.
macro_rules! drop_in_engine {
    ($(#[$doc:meta])* $engine:ident, $name:literal, $($module:ident)::+ $(, $extra:item)*) => {
        $(#[$doc])*
        pub struct $engine;

        impl $engine {
            fn refused(e: $($module)::+::WatchError) -> Registered {
                match e {
                    $($module)::+::WatchError::LimitExceeded(n) => Registered::LimitExceeded(n),
                    $($module)::+::WatchError::InvalidPrefix => Registered::InvalidPrefix,
                }
            }
        }

        impl Engine for $engine {
            const NAME: &'static str = $name;
            type Registry = $($module)::+::WatchRegistry;
            type Handle = $($module)::+::WatcherHandle;
            type Event = $($module)::+::WatchEvent;
            type Receiver = mpsc::Receiver<Self::Event>;

            fn registry(
                buffer: usize,
                limit: usize,
            ) -> (Arc<Self::Registry>, mpsc::UnboundedReceiver<(u64, Bytes)>) {
                let (tx, rx) = mpsc::unbounded_channel();
                (Arc::new(Self::Registry::new_with_limits(buffer, limit, tx)), rx)
            }
            fn register(r: &Self::Registry, key: Bytes, prev_kv: bool) -> Result<Self::Handle, Registered> {
                r.register(key, prev_kv).map_err(Self::refused)
            }
            fn register_prefix(
                r: &Self::Registry,
                prefix: Bytes,
                prev_kv: bool,
            ) -> Result<Self::Handle, Registered> {
                r.register_prefix(prefix, prev_kv).map_err(Self::refused)
            }
            fn describe(h: &Self::Handle) -> Registered {
                Registered::Ok { id: h.id(), key: h.key().clone(), is_prefix: h.is_prefix() }
            }
            fn receiver(h: &mut Self::Handle) -> &mut mpsc::Receiver<Self::Event> {
                h.receiver_mut()
            }
            fn into_receiver(h: Self::Handle) -> mpsc::Receiver<Self::Event> {
                h.into_receiver().2
            }
            fn try_recv(rx: &mut Self::Receiver) -> Received<Self::Event> {
                match rx.try_recv() {
                    Ok(event) => Received::Event(event),
                    Err(mpsc::error::TryRecvError::Empty) => Received::Empty,
                    Err(mpsc::error::TryRecvError::Disconnected) => Received::Closed,
                }
            }
            fn seen(e: &Self::Event) -> Seen {
                seen!(e, $($module)::+)
            }
            fn prev_kv_count(r: &Self::Registry) -> usize {
                r.prev_kv_watcher_count()
            }
            fn run(
                r: Arc<Self::Registry>,
                events: broadcast::Receiver<WatchResponse>,
                unregister: mpsc::UnboundedReceiver<(u64, Bytes)>,
                last_applied: Arc<AtomicU64>,
                heartbeat_ms: u64,
            ) -> impl Future<Output = ()> + Send + 'static {
                $($module)::+::WatchDispatcher::new(r, events, unregister, last_applied, heartbeat_ms).run()
            }
            $($extra)*
        }
    };
}

drop_in_engine!(
    /// `d_engine_core::watch`, the oracle.
    Reference,
    "reference",
    d_engine_core::watch
);

drop_in_engine!(
    /// watchtrie, through its drop-in API.
    Watchtrie,
    "watchtrie",
    watchtrie,
    fn check(r: &Self::Registry) {
        r.check_invariants();
    }
);

/// watchtrie through its compact registration path (`register_compact`, `CompactReceiver`):
/// every observation must still be the reference's.
pub struct WatchtrieCompact;

impl Engine for WatchtrieCompact {
    const NAME: &'static str = "watchtrie (compact)";
    type Registry = watchtrie::WatchRegistry;
    type Handle = watchtrie::CompactWatcherHandle;
    type Event = watchtrie::WatchEvent;
    type Receiver = watchtrie::CompactReceiver;

    fn registry(
        buffer: usize,
        limit: usize,
    ) -> (Arc<Self::Registry>, mpsc::UnboundedReceiver<(u64, Bytes)>) {
        Watchtrie::registry(buffer, limit)
    }
    fn register(r: &Self::Registry, key: Bytes, prev_kv: bool) -> Result<Self::Handle, Registered> {
        r.register_compact(key, prev_kv).map_err(Watchtrie::refused)
    }
    fn register_prefix(
        r: &Self::Registry,
        prefix: Bytes,
        prev_kv: bool,
    ) -> Result<Self::Handle, Registered> {
        r.register_prefix_compact(prefix, prev_kv)
            .map_err(Watchtrie::refused)
    }
    fn describe(h: &Self::Handle) -> Registered {
        Registered::Ok {
            id: h.id(),
            key: h.key().clone(),
            is_prefix: h.is_prefix(),
        }
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
            Err(watchtrie::TryRecvError::Empty) => Received::Empty,
            Err(watchtrie::TryRecvError::Disconnected) => Received::Closed,
        }
    }
    fn seen(e: &Self::Event) -> Seen {
        seen!(e, watchtrie)
    }
    fn prev_kv_count(r: &Self::Registry) -> usize {
        r.prev_kv_watcher_count()
    }
    fn run(
        r: Arc<Self::Registry>,
        events: broadcast::Receiver<WatchResponse>,
        unregister: mpsc::UnboundedReceiver<(u64, Bytes)>,
        last_applied: Arc<AtomicU64>,
        heartbeat_ms: u64,
    ) -> impl Future<Output = ()> + Send + 'static {
        Watchtrie::run(r, events, unregister, last_applied, heartbeat_ms)
    }
    fn check(r: &Self::Registry) {
        r.check_invariants();
    }
}
