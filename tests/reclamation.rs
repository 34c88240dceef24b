//! Old snapshots are freed as soon as no reader holds them: registering and dropping a million
//! watchers leaves the index empty and the heap where it started.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use watchtrie::{InlineDispatcher, WatchRegistry, WatchResponse};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::live;

const WAVES: usize = 10;
const PER_WAVE: usize = 100_000;

/// One wave: every shape the index has (distinct keys, sibling prefixes, one hot key, one hot
/// prefix), an event through each, then every handle dropped and every removal applied.
fn wave(registry: &WatchRegistry, inline: &mut InlineDispatcher, wave: usize) {
    let mut handles = Vec::with_capacity(PER_WAVE);
    for i in 0..PER_WAVE {
        let n = wave * PER_WAVE + i;
        let handle = match i % 4 {
            0 => registry.register(Bytes::from(format!("/keys/{n}")), i % 3 == 0),
            1 => registry.register_prefix(Bytes::from(format!("/users/{n}/")), false),
            2 => registry.register(Bytes::from_static(b"/hot"), false),
            _ => registry.register_prefix(Bytes::from_static(b"/hot/"), true),
        };
        handles.push(handle.unwrap());
    }
    for key in ["/hot", "/hot/x", "/users/7/a", "/keys/4"] {
        inline.dispatch(&WatchResponse {
            key: Bytes::from_static(key.as_bytes()),
            ..Default::default()
        });
    }
    drop(handles);
    while inline.process_unregistrations() > 0 || inline.has_pending_removals() {}
    assert_eq!(registry.active_watcher_count(), 0);
    assert_eq!(registry.watched_key_count(), 0);
    assert_eq!(registry.watched_prefix_count(), 0);
    assert_eq!(registry.prev_kv_watcher_count(), 0);
    registry.check_invariants();
}

#[test]
fn a_million_registrations_dropped_leave_the_index_empty_and_the_heap_at_baseline() {
    let before = live();
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(4, tx));
        let mut inline = InlineDispatcher::new(registry.clone(), rx);
        // The first wave grows reusable buffers (the unregistration queue's blocks, the
        // dispatcher's scratch vectors); every later wave must come back to the same level.
        wave(&registry, &mut inline, 0);
        let warm = live();
        for w in 1..WAVES {
            wave(&registry, &mut inline, w);
            let growth = live() - warm;
            assert!(growth < 64 * 1024, "wave {w}: {growth} bytes not returned");
        }
    }
    let leaked = live() - before;
    assert!(
        leaked < 4 * 1024,
        "{leaked} bytes still live after dropping the registry"
    );
}
