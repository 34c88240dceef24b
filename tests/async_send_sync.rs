//! Public types are `Send`/`Sync` where a caller needs them: a registry shared across threads,
//! handles and dispatchers moved into tasks, `run()` spawnable.
use watchtrie::*;

fn send<T: Send>() {}
fn sync<T: Sync>() {}

/// Both at once, for the long list.
fn both<T: Send + Sync>() {}
fn send_static_future<F: std::future::Future + Send + 'static>(_: F) {}

#[test]
fn public_types_have_the_auto_traits_callers_rely_on() {
    send::<WatchRegistry>();
    sync::<WatchRegistry>();
    send::<WatcherHandle>();
    sync::<WatcherHandle>();
    send::<InlineDispatcher>();
    sync::<InlineDispatcher>();
    send::<WatchDispatcher>();
    sync::<WatchDispatcher>();
    send::<WatchEvent>();
    sync::<WatchEvent>();
    send::<WatchResponse>();
    sync::<WatchResponse>();
    send::<WatchError>();
    sync::<WatchError>();
    send::<watchtrie::MetricsHandle>();
    sync::<watchtrie::MetricsHandle>();
    send::<watchtrie::Metrics>();
    sync::<watchtrie::Metrics>();
    send::<watchtrie::DispatchOptions>();
    sync::<watchtrie::DispatchOptions>();
    send::<watchtrie::CancelReason>();
    sync::<watchtrie::CancelReason>();
    both::<CompactWatcherHandle>();
    both::<CompactReceiver>();
    both::<GroupedWatcherHandle>();
    both::<GroupReceiver>();
    both::<ProgressRequest>();
    both::<MemberProgress>();
    both::<WatchSpec<Grouped>>();
    both::<TryRecvError>();
    both::<RegistryOptions>();
    both::<WatchSpec>();
    both::<WatchSpec<Compact>>();
    both::<Target>();
    both::<EventFilter>();
    both::<RegisterError>();
    both::<WatchConfig>();
    both::<WatchConfigError>();
}

#[test]
fn a_compact_receiver_s_recv_is_a_send_future() {
    let (utx, _urx) = tokio::sync::mpsc::unbounded_channel();
    let registry = WatchRegistry::new(1, utx);
    let (_, _, mut receiver) = registry
        .register_compact(bytes::Bytes::from("/k"), false)
        .unwrap()
        .into_receiver();
    send_static_future(async move { receiver.recv().await });
}

#[test]
fn run_is_a_send_future() {
    let (utx, urx) = tokio::sync::mpsc::unbounded_channel();
    let registry = std::sync::Arc::new(WatchRegistry::new(1, utx));
    let (_tx, rx) = tokio::sync::broadcast::channel::<WatchResponse>(1);
    let dispatcher = WatchDispatcher::new(registry, rx, urx, Default::default(), 0);
    send_static_future(dispatcher.run());
}
