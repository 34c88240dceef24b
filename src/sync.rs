//! The one place the crate takes its synchronisation primitives from.
//!
//! Under `--cfg watchtrie_loom` the same names come from `loom`, so that model tests can
//! explore every interleaving of the publish protocol. (Not the customary `--cfg loom`: tokio
//! and bytes read that flag too and then expect loom among their own dependencies, so a whole
//! build under it fails.) `arc-swap` has no loom support, so there the snapshot cell becomes a
//! loom mutex around an `Arc`: slower, but with the same load/swap contract.

#[cfg(not(watchtrie_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(watchtrie_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(watchtrie_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(watchtrie_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(watchtrie_loom)]
pub(crate) use loom::sync::Arc as SnapshotArc;
/// The reference count that snapshots are shared through: loom's under the model, so that
/// a reader letting go of a snapshot is a point where it explores other interleavings.
#[cfg(not(watchtrie_loom))]
pub(crate) use std::sync::Arc as SnapshotArc;

#[cfg(watchtrie_loom)]
pub(crate) use loom::sync::Arc as ChannelArc;
/// The reference count of a compact channel's shared state: loom's under the model, so that
/// the last end letting go is a modelled step and a state left alive fails as a leak.
#[cfg(not(watchtrie_loom))]
pub(crate) use std::sync::Arc as ChannelArc;

use SnapshotArc as Arc;

/// Holds the current snapshot. Readers load it without locking; writers replace it whole.
pub(crate) struct SnapshotCell<T> {
    #[cfg(not(watchtrie_loom))]
    current: arc_swap::ArcSwap<T>,
    #[cfg(watchtrie_loom)]
    current: loom::sync::Mutex<Arc<T>>,
}

/// A loaded snapshot; keeps it alive while held.
#[cfg(not(watchtrie_loom))]
pub(crate) type SnapshotGuard<T> = arc_swap::Guard<Arc<T>>;
/// A loaded snapshot; keeps it alive while held.
#[cfg(watchtrie_loom)]
pub(crate) type SnapshotGuard<T> = Arc<T>;

impl<T> SnapshotCell<T> {
    /// A cell holding `value`.
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self {
            #[cfg(not(watchtrie_loom))]
            current: arc_swap::ArcSwap::new(value),
            #[cfg(watchtrie_loom)]
            current: loom::sync::Mutex::new(value),
        }
    }

    /// The current snapshot. Lock-free: arc-swap pays for a load with a thread-local debt
    /// slot, and a writer that replaces the snapshot meanwhile settles that debt itself.
    #[inline]
    pub(crate) fn load(&self) -> SnapshotGuard<T> {
        #[cfg(not(watchtrie_loom))]
        return self.current.load();
        #[cfg(watchtrie_loom)]
        return Arc::clone(&self.current.lock().unwrap());
    }

    /// Publishes `value` and returns the snapshot it replaces. arc-swap's swap is
    /// sequentially consistent, so a reader that synchronises with the writer afterwards (for
    /// instance by receiving an event the writer's thread broadcast later) loads `value` or
    /// something newer. Before it returns, every reader still holding the old snapshot holds
    /// a counted reference to it (arc-swap settles readers' debts), so `Arc::get_mut` on the
    /// returned value succeeds only when no reader is left.
    pub(crate) fn swap(&self, value: Arc<T>) -> Arc<T> {
        #[cfg(not(watchtrie_loom))]
        return self.current.swap(value);
        #[cfg(watchtrie_loom)]
        return std::mem::replace(&mut *self.current.lock().unwrap(), value);
    }
}

/// Waits until `arc` is the only reference to its snapshot, then lends it mutably.
///
/// The other references are readers that loaded the snapshot before it was replaced: each
/// holds it for one event, a batch of eight or one sweep slice (~0.5 ms at most), so this
/// spins briefly, then yields, then sleeps in short naps. `Arc::get_mut` reads the count with
/// `Acquire`, pairing with the `Release` of each reader's drop: their reads happen before
/// our writes.
pub(crate) fn exclusive<T>(arc: &mut Arc<T>) -> &mut T {
    let mut attempts = 0u32;
    while Arc::get_mut(arc).is_none() {
        backoff(attempts);
        attempts = attempts.saturating_add(1);
    }
    Arc::get_mut(arc).expect("checked unique above")
}

/// One step of waiting: spins first, then yields, then sleeps (20 µs).
#[cfg(not(watchtrie_loom))]
pub(crate) fn backoff(attempts: u32) {
    if attempts < 64 {
        std::hint::spin_loop();
    } else if attempts < 1024 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}

/// One step of waiting: a yield to loom's scheduler.
#[cfg(watchtrie_loom)]
pub(crate) fn backoff(_attempts: u32) {
    loom::thread::yield_now();
}
