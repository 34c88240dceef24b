//! Loom models of the publish protocol, the cleanup paths, the compact channel and the
//! group ring: every interleaving (up to a preemption bound) of writers serialising, the
//! snapshot swap, readers loading and letting go, a writer waiting for the last reader of a
//! snapshot before it changes it, a compact channel's senders, receiver, wake-ups and shared
//! events, and a group ring's push, reads, lag, cancel, close and wake-ups.
//!
//! Built only under the model's cfg, in a target directory of its own (the flag changes
//! every crate's fingerprint):
//!
//! ```sh
//! RUSTFLAGS="--cfg watchtrie_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p watchtrie --test loom --release
//! ```
//!
//! `LOOM_MAX_PREEMPTIONS` (default 4 here) sets the bound; `.ci/run` runs the default
//! (seconds). At 5 the two-writer model explores about 6,000 interleavings, under a second.
#![cfg(watchtrie_loom)]

use std::sync::Arc;

use bytes::Bytes;
use loom::thread;
use tokio::sync::mpsc;
use watchtrie::{
    CompactReceiver, InlineDispatcher, WatchEventType, WatchRegistry, WatchResponse, WatcherHandle,
};

/// Runs `f` under every interleaving loom explores (a model that explores only a handful is
/// not testing anything, so that count has a floor).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(4);
    }
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{runs} interleavings");
    assert!(runs >= 5, "the model explored only {runs} interleavings");
}

fn event(key: &'static [u8], revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::from_static(key),
        revision,
        ..Default::default()
    }
}

fn revisions(handle: &mut WatcherHandle) -> Vec<u64> {
    let receiver = handle.receiver_mut();
    std::iter::from_fn(|| receiver.try_recv().ok())
        .map(|e| e.revision)
        .collect()
}

fn setup(buffer: usize) -> (Arc<WatchRegistry>, InlineDispatcher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(buffer, tx));
    let inline = InlineDispatcher::new(registry.clone(), rx);
    (registry, inline)
}

/// Applies every queued unregistration and pending removal.
fn settle(inline: &mut InlineDispatcher) {
    while inline.process_unregistrations() > 0 || inline.has_pending_removals() {
        thread::yield_now();
    }
}

#[test]
fn a_registration_racing_a_dispatch_sees_every_later_event() {
    model(|| {
        let (registry, mut inline) = setup(4);
        let writer = {
            let registry = registry.clone();
            thread::spawn(move || registry.register(Bytes::from_static(b"/k"), false).unwrap())
        };
        // Racing the registration: the watcher may or may not see this one.
        inline.dispatch(&event(b"/k", 1));
        let mut handle = writer.join().unwrap();
        // Broadcast after `register` returned: must be seen.
        inline.dispatch(&event(b"/k", 2));
        let seen = revisions(&mut handle);
        assert!(seen == [2] || seen == [1, 2], "saw {seen:?}");
        registry.check_invariants();
        drop(handle);
        settle(&mut inline);
        assert_eq!(registry.active_watcher_count(), 0);
        registry.check_invariants();
    });
}

#[test]
fn two_writers_and_a_reader_leave_both_snapshots_equal() {
    model(|| {
        let (registry, mut inline) = setup(4);
        let spawn = |key: &'static [u8], prefix: bool| {
            let registry = registry.clone();
            thread::spawn(move || match prefix {
                true => registry.register_prefix(Bytes::from_static(key), false),
                false => registry.register(Bytes::from_static(key), false),
            })
        };
        let a = spawn(b"/a/", true);
        let b = spawn(b"/a/b", false);
        inline.dispatch(&event(b"/a/b", 1));
        let (mut a, mut b) = (a.join().unwrap().unwrap(), b.join().unwrap().unwrap());
        registry.check_invariants();
        assert_eq!(registry.active_watcher_count(), 2);
        inline.dispatch(&event(b"/a/b", 2));
        assert_eq!(revisions(&mut a).last(), Some(&2));
        assert_eq!(revisions(&mut b).last(), Some(&2));
        drop((a, b));
        settle(&mut inline);
        assert_eq!(registry.active_watcher_count(), 0);
        registry.check_invariants();
    });
}

/// Registers an exact watcher on `key` and checks that it is published when the call
/// returns.
fn register_and_see(registry: &WatchRegistry, key: &'static [u8]) -> watchtrie::WatcherHandle {
    let handle = registry.register(Bytes::from_static(key), false).unwrap();
    assert_eq!(registry.watcher_count(&Bytes::from_static(key)), 1);
    handle
}

#[test]
fn racing_registrations_are_each_published_when_they_return() {
    // Two registrations alone: the first to take the writer lock publishes its own at once
    // (nothing queued yet), the other after it, or with it if it queued meanwhile; each must
    // find its own in the published snapshot the moment its call returns.
    model(|| {
        let (registry, mut inline) = setup(4);
        let other = {
            let registry = registry.clone();
            thread::spawn(move || register_and_see(&registry, b"/a"))
        };
        let main = register_and_see(&registry, b"/b");
        let other = other.join().unwrap();
        registry.check_invariants();
        assert_eq!(registry.active_watcher_count(), 2);
        drop((other, main));
        settle(&mut inline);
        registry.check_invariants();
    });
}

#[test]
fn registrations_queued_behind_a_writer_are_published_by_one_of_them() {
    // A drop that removes its watcher itself holds the writer lock while two registrations
    // arrive: both queue, and whichever gets the lock next publishes the other's with its
    // own (the combining path), or each its own. Either way each is published when it
    // returns, and none is lost or counted twice.
    model(|| {
        let (registry, mut inline) = setup(4);
        registry.set_options(watchtrie::RegistryOptions::default().with_release_at_drop(true));
        let leaving = registry
            .register(Bytes::from_static(b"/gone"), false)
            .unwrap();
        let dropper = thread::spawn(move || drop(leaving));
        let other = {
            let registry = registry.clone();
            thread::spawn(move || register_and_see(&registry, b"/a"))
        };
        let main = register_and_see(&registry, b"/b");
        let other = other.join().unwrap();
        dropper.join().unwrap();
        settle(&mut inline);
        registry.check_invariants();
        assert_eq!(registry.active_watcher_count(), 2);
        drop((other, main));
        settle(&mut inline);
        assert_eq!(registry.active_watcher_count(), 0);
        registry.check_invariants();
    });
}

#[test]
fn a_drop_racing_a_dispatch_is_applied_exactly_once() {
    model(|| {
        let (registry, mut inline) = setup(4);
        // The drop that removes its watcher itself, racing the reader (by default a drop only
        // sends its unregistration down a channel, which loom does not model).
        registry.set_options(watchtrie::RegistryOptions::default().with_release_at_drop(true));
        let handle = registry.register(Bytes::from_static(b"/k"), true).unwrap();
        let keeper = registry.register(Bytes::from_static(b"/k"), false).unwrap();
        let dropper = thread::spawn(move || drop(handle));
        inline.dispatch(&event(b"/k", 1));
        dropper.join().unwrap();
        settle(&mut inline);
        assert_eq!(registry.active_watcher_count(), 1);
        assert_eq!(registry.prev_kv_watcher_count(), 0);
        assert_eq!(registry.watcher_count(&Bytes::from_static(b"/k")), 1);
        registry.check_invariants();
        drop(keeper);
        settle(&mut inline);
        assert_eq!(registry.active_watcher_count(), 0);
    });
}

#[test]
fn an_overflowed_watcher_is_removed_even_when_a_writer_holds_the_lock() {
    model(|| {
        let (registry, mut inline) = setup(1);
        let (_, _, mut receiver) = registry
            .register(Bytes::from_static(b"/k"), false)
            .unwrap()
            .into_receiver();
        let writer = {
            let registry = registry.clone();
            thread::spawn(move || {
                registry
                    .register(Bytes::from_static(b"/other"), false)
                    .unwrap()
            })
        };
        // Buffer 1: the first event fills it, the second finds only the reserved slot.
        inline.dispatch(&event(b"/k", 1));
        inline.dispatch(&event(b"/k", 2));
        inline.dispatch(&event(b"/k", 3));
        let other = writer.join().unwrap();
        settle(&mut inline);
        assert_eq!(registry.active_watcher_count(), 1);
        registry.check_invariants();
        let first = receiver.try_recv().unwrap();
        assert_eq!(first.revision, 1);
        let sentinel = receiver.try_recv().unwrap();
        assert_eq!(
            sentinel.event_type,
            WatchEventType::Canceled,
            "the sentinel comes last"
        );
        assert!(matches!(
            receiver.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        drop(other);
        settle(&mut inline);
    });
}

/// Wakes a thread parked in [`block_on`] (loom's own `block_on` needs its `futures`
/// feature, which this crate's build does not turn on).
struct Unpark(loom::sync::Notify);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.notify();
    }
}

/// Polls `future` to completion, parking between polls: a wake-up that never comes leaves
/// the thread parked for good, which loom reports as a deadlock.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let unpark = Arc::new(Unpark(loom::sync::Notify::new()));
    let waker = std::task::Waker::from(unpark.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        unpark.0.wait();
    }
}

/// A Put of `/k` at revision 1 whose value has a buffer of its own (a static one is never
/// unique), so that a copy of the event still held anywhere shows.
fn put_with_own_value() -> WatchResponse {
    WatchResponse {
        key: Bytes::from_static(b"/k"),
        value: Bytes::from(vec![7; 8]),
        revision: 1,
        ..Default::default()
    }
}

/// A compact watcher of `/k` whose receiver outlives its handle (so that dropping it does
/// not unregister: only a delivery or the registry's end removes the watcher).
fn compact(registry: &WatchRegistry) -> CompactReceiver {
    let handle = registry
        .register_compact(Bytes::from_static(b"/k"), false)
        .unwrap();
    handle.into_receiver().2
}

#[test]
fn an_offer_racing_the_receivers_drop_is_never_queued_behind_it() {
    model(|| {
        let (registry, mut inline) = setup(4);
        let receiver = compact(&registry);
        let dropper = thread::spawn(move || drop(receiver));
        let put = put_with_own_value();
        inline.dispatch(&put);
        dropper.join().unwrap();
        // Delivered and cleared by the drop, or refused as closed: no copy left queued.
        assert!(
            put.value.is_unique(),
            "an event is queued behind a gone receiver"
        );
        let metrics = registry.metrics().read();
        assert_eq!(metrics.deliveries + metrics.closed_receiver_removals, 1);
        // Whichever way the race went, the next event finds the receiver gone.
        inline.dispatch(&event(b"/k", 2));
        settle(&mut inline);
        assert_eq!(registry.active_watcher_count(), 0);
        assert_eq!(registry.metrics().read().closed_receiver_removals, 1);
        registry.check_invariants();
    });
}

#[test]
fn the_last_sender_leaving_wakes_a_waiting_receiver() {
    model(|| {
        let (registry, mut inline) = setup(4);
        let mut receiver = compact(&registry);
        let reader = thread::spawn(move || {
            let mut seen = Vec::new();
            // Parks between polls: a lost wake-up is a deadlock, which loom reports.
            while let Some(event) = block_on(receiver.recv()) {
                seen.push(event.revision);
            }
            seen
        });
        inline.dispatch(&event(b"/k", 1));
        // The registry holds the watcher's two senders (one per snapshot): both go here.
        drop((inline, registry));
        assert_eq!(reader.join().unwrap(), [1]);
    });
}

#[test]
fn an_offer_racing_a_draining_receiver_is_received_exactly_once() {
    model(|| {
        let (registry, mut inline) = setup(4);
        let mut receiver = compact(&registry);
        inline.dispatch(&event(b"/k", 1));
        let reader = thread::spawn(move || {
            // The first takes the one queued event (freeing the queue); the others race the
            // offers below, and may park for them.
            let first = receiver.try_recv().unwrap().revision;
            let second = block_on(receiver.recv()).unwrap().revision;
            let third = block_on(receiver.recv()).unwrap().revision;
            ([first, second, third], receiver)
        });
        inline.dispatch(&event(b"/k", 2));
        inline.dispatch(&event(b"/k", 3));
        let (seen, mut receiver) = reader.join().unwrap();
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(
            receiver.try_recv().unwrap_err(),
            watchtrie::TryRecvError::Empty
        );
        assert!(receiver.is_empty());
        assert_eq!(registry.metrics().read().deliveries, 3);
        registry.check_invariants();
    });
}

#[test]
fn receivers_racing_for_one_shared_event_each_get_it_whole_and_it_is_freed_once() {
    model(|| {
        let (registry, mut inline) = setup(4);
        // Three compact watchers of one key: the first delivery takes its own copy, the
        // other two share one, which their receivers race to take (each may find the other
        // still holding it, or be the last and move it out).
        let mut first = compact(&registry);
        let shared: Vec<CompactReceiver> = (0..2).map(|_| compact(&registry)).collect();
        let put = put_with_own_value();
        inline.dispatch(&put);
        let readers: Vec<_> = shared
            .into_iter()
            .map(|mut receiver| {
                thread::spawn(move || {
                    let event = receiver.try_recv().unwrap();
                    (event.revision, event.value)
                })
            })
            .collect();
        let own = first.try_recv().unwrap();
        assert_eq!((own.revision, &own.value[..]), (1, &[7u8; 8][..]));
        drop(own);
        for reader in readers {
            let (revision, value) = reader.join().unwrap();
            assert_eq!((revision, &value[..]), (1, &[7u8; 8][..]));
        }
        // Every copy and share is gone: the value has one owner again.
        assert!(
            put.value.is_unique(),
            "a copy of the event outlived its receivers"
        );
    });
}

/// A grouped member of `/k` (its receiver: dropping it leaves the group).
fn member(registry: &WatchRegistry) -> watchtrie::GroupReceiver {
    let spec = watchtrie::WatchSpec::exact(Bytes::from_static(b"/k")).grouped();
    registry.watch(spec).unwrap().into_receiver().2
}

#[test]
fn a_waiting_member_is_woken_by_the_push_and_reads_each_event_once() {
    model(|| {
        let (registry, mut inline) = setup(4);
        let mut waiting = member(&registry);
        let mut other = member(&registry);
        let reader = thread::spawn(move || {
            // Parks between polls: a lost wake-up is a deadlock, which loom reports.
            let first = block_on(waiting.recv()).unwrap().revision;
            let second = block_on(waiting.recv()).unwrap().revision;
            [first, second]
        });
        inline.dispatch(&event(b"/k", 1));
        inline.dispatch(&event(b"/k", 2));
        assert_eq!(reader.join().unwrap(), [1, 2]);
        let seen: Vec<u64> = std::iter::from_fn(|| other.try_recv().ok())
            .map(|e| e.revision)
            .collect();
        assert_eq!(seen, [1, 2], "a member not waiting reads the same");
        registry.check_invariants();
    });
}

#[test]
fn a_member_lagging_while_it_reads_resumes_exactly_and_its_stream_ends() {
    model(|| {
        let (registry, mut inline) = setup(1);
        let mut reader_side = member(&registry);
        let reader = thread::spawn(move || {
            let mut seen = Vec::new();
            let mut cancel = None;
            while let Some(event) = block_on(reader_side.recv()) {
                assert!(cancel.is_none(), "nothing after the cancel");
                match event.cancel_reason() {
                    Some(watchtrie::CancelReason::BufferOverflowAt { resume_from }) => {
                        cancel = Some(resume_from)
                    }
                    Some(other) => panic!("unexpected cancel {other:?}"),
                    None => seen.push(event.revision),
                }
            }
            (seen, cancel)
        });
        for revision in 1..=3 {
            inline.dispatch(&event(b"/k", revision));
        }
        // The group's watcher leaves with the registry: the stream ends after what is left.
        drop((inline, registry));
        let (seen, cancel) = reader.join().unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
        match cancel {
            // Lagged: it resumes right after what it read, and had read no gap.
            Some(resume_from) => {
                assert_eq!(resume_from, seen.last().map_or(1, |last| last + 1));
                assert_eq!(seen, (1..resume_from).collect::<Vec<_>>());
            }
            // Kept up: it read the last event, and no gap before it.
            None => assert_eq!(seen.last(), Some(&3), "{seen:?}"),
        }
    });
}

#[test]
fn a_members_drop_racing_a_push_releases_it_once_and_keeps_the_group() {
    model(|| {
        let (registry, mut inline) = setup(4);
        let leaving = member(&registry);
        let mut staying = member(&registry);
        let dropper = thread::spawn(move || drop(leaving));
        inline.dispatch(&event(b"/k", 1));
        inline.dispatch(&event(b"/k", 2));
        dropper.join().unwrap();
        settle(&mut inline);
        assert_eq!(registry.active_watcher_count(), 1);
        assert_eq!(registry.watcher_count(&Bytes::from_static(b"/k")), 1);
        let seen: Vec<u64> = std::iter::from_fn(|| staying.try_recv().ok())
            .map(|e| e.revision)
            .collect();
        assert_eq!(seen, [1, 2]);
        registry.check_invariants();
    });
}

#[test]
fn a_waiting_member_is_woken_by_its_groups_cancel_and_reads_it_after_every_event() {
    model(|| {
        let (registry, inline) = setup(4);
        let mut inline = inline.with_options(
            watchtrie::DispatchOptions::default()
                .with_lag_policy(watchtrie::LagPolicy::CancelWatchers),
        );
        let mut waiting = member(&registry);
        let reader = thread::spawn(move || {
            // Parks between polls: a cancel that wakes no one is a deadlock loom reports.
            let mut got = Vec::new();
            while let Some(event) = block_on(waiting.recv()) {
                got.push((event.event_type, event.revision));
            }
            got
        });
        inline.dispatch(&event(b"/k", 1));
        inline.report_lag(1);
        assert_eq!(
            reader.join().unwrap(),
            [(WatchEventType::Put, 1), (WatchEventType::Canceled, 2)]
        );
        settle(&mut inline);
        assert_eq!(registry.active_watcher_count(), 0);
        registry.check_invariants();
    });
}
