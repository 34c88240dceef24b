//! Owners: a per-owner cap beside the global limit, set at run time; refusals typed and
//! non-allocating; counts released where the global count is; per-owner gauges.
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use watchtrie::{
    InlineDispatcher, OwnerId, RegisterError, RegistryOptions, WatchRegistry, WatchResponse,
    WatchSpec,
};

const A: OwnerId = OwnerId(1);
const B: OwnerId = OwnerId(2);

fn setup(buffer: usize, max: usize) -> (Arc<WatchRegistry>, InlineDispatcher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new_with_limits(buffer, max, tx));
    let inline = InlineDispatcher::new(registry.clone(), rx);
    (registry, inline)
}

fn spec(owner: OwnerId) -> WatchSpec {
    WatchSpec::exact(Bytes::from_static(b"/k")).owner(owner)
}

#[test]
fn an_owner_at_its_cap_is_refused_and_nobody_else_is() {
    let (registry, _inline) = setup(4, 10);
    registry.set_owner_limit(A, Some(2));
    let a1 = registry.watch(spec(A)).unwrap();
    let _a2 = registry.watch(spec(A).compact()).unwrap();
    assert_eq!(
        registry.watch(spec(A)).unwrap_err(),
        RegisterError::OwnerLimitExceeded { owner: A, max: 2 }
    );
    let b: Vec<_> = (0..5).map(|_| registry.watch(spec(B)).unwrap()).collect();
    let unowned = registry.watch(WatchSpec::prefix("/")).unwrap();
    assert_eq!(registry.active_watcher_count(), 8);
    let metrics = registry.metrics();
    let m = metrics.owner(A);
    assert_eq!((m.watchers, m.limit, m.refused), (2, 2, 1));
    assert_eq!(metrics.owner(B).watchers, 5);
    assert_eq!(
        metrics
            .owners()
            .iter()
            .map(|(o, m)| (*o, m.watchers))
            .collect::<Vec<_>>(),
        vec![(A, 2), (B, 5)]
    );
    assert_eq!(metrics.read().owner_refusals, 1);
    // No id was taken by the refusal: ids count successes.
    assert_eq!(unowned.id(), a1.id() + 7);
    drop(b);
    registry.check_invariants();
}

#[test]
fn an_owner_s_count_is_released_where_the_global_count_is() {
    let (registry, mut inline) = setup(0, usize::MAX);
    registry.set_owner_limit(A, Some(1));
    let handle = registry.watch(spec(A)).unwrap();
    drop(handle);
    // As the global count: held until the dispatcher processes the unregistration.
    assert!(registry.watch(spec(A)).is_err());
    inline.process_unregistrations();
    let mut overflowing = registry.watch(spec(A)).unwrap();
    // Buffer 0: the first event overflows it; its removal releases the owner too.
    inline.dispatch(&WatchResponse {
        key: Bytes::from_static(b"/k"),
        revision: 1,
        ..Default::default()
    });
    assert!(
        overflowing.receiver_mut().try_recv().is_ok(),
        "the cancel sentinel"
    );
    assert_eq!(registry.metrics().owner(A).watchers, 0);
    assert!(registry.watch(spec(A)).is_ok());
    registry.check_invariants();
}

#[test]
fn caps_are_set_at_run_time_and_a_default_covers_owners_without_one() {
    let (registry, _inline) = setup(4, usize::MAX);
    let held: Vec<_> = (0..3).map(|_| registry.watch(spec(A)).unwrap()).collect();
    registry.set_owner_limit(A, Some(1));
    assert!(
        registry.watch(spec(A)).is_err(),
        "below its count: new ones refused"
    );
    assert_eq!(
        registry.metrics().owner(A).watchers,
        3,
        "the held ones stay"
    );
    registry.set_owner_limit(A, None);
    assert!(registry.watch(spec(A)).is_ok(), "no cap again");
    registry.set_options(RegistryOptions::default().with_owner_limit(0));
    assert_eq!(
        registry.watch(spec(B)).unwrap_err(),
        RegisterError::OwnerLimitExceeded { owner: B, max: 0 }
    );
    assert!(
        registry.watch(WatchSpec::exact("/k")).is_ok(),
        "unowned watches are not capped"
    );
    registry.set_owner_limit(B, Some(1));
    assert!(
        registry.watch(spec(B)).is_ok(),
        "its own cap overrides the default"
    );
    drop(held);
}

#[test]
fn the_global_limit_still_binds_owned_watchers_and_a_global_refusal_takes_no_owner_count() {
    let (registry, _inline) = setup(4, 1);
    let _a = registry.watch(spec(A)).unwrap();
    assert_eq!(
        registry.watch(spec(B)).unwrap_err(),
        RegisterError::LimitExceeded { max: 1 }
    );
    assert_eq!(registry.metrics().owner(B).watchers, 0);
    registry.check_invariants();
}

#[test]
fn an_owner_s_refusals_allocate_nothing() {
    let (registry, _inline) = setup(4, usize::MAX);
    registry.set_owner_limit(A, Some(1));
    let _held = registry.watch(spec(A)).unwrap();
    assert!(registry.watch(spec(A)).is_err()); // warm up
    let before = counting_alloc::thread_allocations();
    for _ in 0..100_000 {
        assert!(registry.watch(spec(A)).is_err());
    }
    assert_eq!(
        counting_alloc::thread_allocations(),
        before,
        "no allocation per refusal"
    );
    assert_eq!(registry.metrics().owner(A).refused, 100_001);
}

#[test]
fn a_registration_its_owner_refuses_never_holds_a_unit_of_the_global_limit() {
    // Global limit 1 and no watcher: an unowned registration must always be accepted,
    // however many registrations owner A (cap 0) has refused meanwhile on another thread.
    let (registry, _inline) = setup(4, 1);
    registry.set_options(RegistryOptions::default().with_release_at_drop(true));
    registry.set_owner_limit(A, Some(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = std::thread::spawn({
        let (registry, stop) = (registry.clone(), stop.clone());
        move || {
            let mut refused = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let err = registry.watch(spec(A)).unwrap_err();
                assert_eq!(err, RegisterError::OwnerLimitExceeded { owner: A, max: 0 });
                refused += 1;
            }
            refused
        }
    });
    for _ in 0..20_000 {
        let watch = registry.watch(WatchSpec::exact("/unowned"));
        // A drop with release_at_drop and no other writer releases its unit at once.
        drop(watch.expect("refused although no watcher was active"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(refused.join().unwrap() > 0);
    assert_eq!(registry.active_watcher_count(), 0);
    registry.check_invariants();
}
