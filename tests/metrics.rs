//! The metrics handle counts what the dispatcher and the writers did, and its gauges follow
//! the index.
mod common;
use common::*;

use watchtrie::Metrics;

#[tokio::test]
async fn counters_and_gauges_follow_what_happened() {
    let mut bed = Bed::new(Mode::Inline, 1, usize::MAX);
    let metrics = bed.registry.metrics();
    assert_eq!(metrics.read(), Metrics::default());

    let _a = bed.registry.register(b("/a"), false).unwrap();
    let _root = bed.registry.register_prefix(b("/"), false).unwrap();
    let (_, _, closed) = bed
        .registry
        .register(b("/c"), false)
        .unwrap()
        .into_receiver();
    drop(closed);
    let m = metrics.read();
    assert_eq!((m.watchers, m.exact_keys, m.prefixes), (3, 2, 1));
    assert_eq!(m.snapshots_published, 3);

    bed.send(put("/a", "v", 1)); // to /a and /: 2 deliveries
    bed.send(put("/c", "v", 2)); // to /: buffer of 1 full, overflow; /c closed
    bed.send(put("/a", "v", 3)); // /a overflows
    let m = metrics.read();
    assert_eq!(m.events_dispatched, 3);
    assert_eq!(m.deliveries, 2);
    assert_eq!(m.overflow_cancels, 2);
    assert_eq!(m.closed_receiver_removals, 1);
    assert_eq!((m.watchers, m.exact_keys, m.prefixes), (0, 0, 0));
    // Three registrations, then one removal transaction after each of the last two events.
    assert_eq!(m.snapshots_published, 5);

    let mut c = bed.registry.register(b("/x"), false).unwrap();
    bed.inline().broadcast_progress(7);
    let m = metrics.read();
    assert_eq!(
        (m.progress_sent, m.heartbeat_sweeps, m.deliveries),
        (1, 1, 3)
    );
    assert_eq!(revisions(c.receiver_mut()), vec![7]);
}
