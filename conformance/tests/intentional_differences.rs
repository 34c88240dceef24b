//! Where watchtrie deliberately differs from the reference (inputs on which the reference
//! panics), each shown side by side, and absurd inputs checked on both.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

#[test]
fn an_unbounded_buffer_size_panics_in_the_reference_and_is_clamped_here() {
    let reference = std::panic::catch_unwind(|| {
        let (tx, _rx) = mpsc::unbounded_channel();
        let registry = d_engine_core::watch::WatchRegistry::new(usize::MAX, tx);
        registry
            .register(Bytes::from_static(b"/k"), false)
            .map(|_| ())
    });
    assert!(reference.is_err(), "the reference computes usize::MAX + 1");

    let (tx, _rx) = mpsc::unbounded_channel();
    let registry = watchtrie::WatchRegistry::new(usize::MAX, tx);
    let mut handle = registry.register(Bytes::from_static(b"/k"), false).unwrap();
    assert_eq!(
        handle.receiver_mut().max_capacity(),
        watchtrie::MAX_WATCHER_BUFFER_SIZE + 1
    );
}

/// With a period near `u64::MAX` ms the reference computes its jittered first tick as
/// `period - jitter + offset`, which overflows whenever the random offset exceeds the jitter
/// (a panic with overflow checks, a wrapped, early first tick without). watchtrie saturates
/// to a first tick at the end of time. The reference's outcome is random: only watchtrie's is asserted.
#[test]
fn an_absurd_heartbeat_interval_does_not_panic_here() {
    fn run_with<F: std::future::Future<Output = ()> + Send + 'static>(
        make: impl FnOnce(broadcast::Receiver<d_engine_proto::client::WatchResponse>) -> F,
    ) -> std::thread::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (tx, rx) = broadcast::channel(4);
        let task = runtime.spawn(make(rx));
        let result = runtime.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            drop(tx);
            task.await
        });
        result.map_err(|e| e.into_panic())
    }
    let ours = run_with(|rx| {
        let (utx, urx) = mpsc::unbounded_channel();
        let registry = Arc::new(watchtrie::WatchRegistry::new(4, utx));
        watchtrie::WatchDispatcher::new(registry, rx, urx, Arc::new(AtomicU64::new(0)), u64::MAX)
            .run()
    });
    assert!(ours.is_ok());
}
