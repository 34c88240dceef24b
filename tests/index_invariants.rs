//! Randomised operation sequences keep every index invariant after every step, and the
//! registry's counts agree with a naive model of who is registered where.
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use tokio::sync::mpsc;
use watchtrie::{InlineDispatcher, WatchRegistry, WatchResponse, WatcherHandle};

#[derive(Debug, Clone)]
enum Op {
    Register {
        key: usize,
        prefix: bool,
        prev_kv: bool,
    },
    Drop(usize),
    IntoReceiverAndClose(usize),
    Read(usize),
    Event(usize),
}

/// Keys and prefixes from a small, nested vocabulary so that they collide often.
const KEYS: &[&str] = &[
    "/",
    "/a/",
    "/a/b/",
    "/a/b/c",
    "/a/bc/",
    "/b/",
    "/a",
    "//",
    "/a/b/c/d/",
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS.len(), any::<bool>(), any::<bool>()).prop_map(|(key, prefix, prev_kv)| Op::Register { key, prefix, prev_kv }),
        2 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::IntoReceiverAndClose),
        1 => any::<usize>().prop_map(Op::Read),
        3 => (0..KEYS.len()).prop_map(Op::Event),
    ]
}

/// Drains the receiver; true if the cancel sentinel was among its events.
fn saw_sentinel(h: &mut WatcherHandle) -> bool {
    let mut seen = false;
    while let Ok(e) = h.receiver_mut().try_recv() {
        seen |= e.event_type == watchtrie::WatchEventType::Canceled;
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn invariants_hold_after_every_operation(ops in proptest::collection::vec(op(), 1..120), buffer in 0usize..3) {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(buffer, tx));
        let mut inline = InlineDispatcher::new(registry.clone(), rx);
        // Each handle with whether it has seen its cancel sentinel.
        let mut handles: Vec<(WatcherHandle, bool)> = Vec::new();
        for op in ops {
            match op {
                Op::Register { key, prefix, prev_kv } => {
                    let key = Bytes::from_static(KEYS[key].as_bytes());
                    let handle = if prefix { registry.register_prefix(key, prev_kv) } else { registry.register(key, prev_kv) };
                    if let Ok(h) = handle { handles.push((h, false)); }
                }
                Op::Drop(i) if !handles.is_empty() => drop(handles.swap_remove(i % handles.len())),
                Op::IntoReceiverAndClose(i) if !handles.is_empty() => drop(handles.swap_remove(i % handles.len()).0.into_receiver()),
                Op::Read(i) if !handles.is_empty() => { let n = handles.len(); let (h, cancelled) = &mut handles[i % n]; *cancelled |= saw_sentinel(h); }
                Op::Event(k) => inline.dispatch(&WatchResponse { key: Bytes::from_static(KEYS[k].as_bytes()), ..Default::default() }),
                _ => {}
            }
            inline.process_unregistrations();
            registry.check_invariants();
        }
        // Watchers whose receiver was closed stay registered until an event finds them.
        for key in KEYS {
            inline.dispatch(&WatchResponse { key: Bytes::from_static(key.as_bytes()), ..Default::default() });
        }
        // Handles still held are registered unless their watch overflowed.
        let mut exact: BTreeMap<&[u8], usize> = BTreeMap::new();
        let mut prefixes: BTreeMap<&[u8], usize> = BTreeMap::new();
        let mut live = 0;
        for (h, cancelled) in &mut handles {
            if !(*cancelled || saw_sentinel(h)) {
                live += 1;
                *(if h.is_prefix() { &mut prefixes } else { &mut exact }).entry(h.key().as_ref()).or_default() += 1;
            }
        }
        for key in KEYS {
            let key = Bytes::from_static(key.as_bytes());
            prop_assert_eq!(registry.watcher_count(&key), exact.get(key.as_ref()).copied().unwrap_or(0));
            prop_assert_eq!(registry.prefix_watcher_count(&key), prefixes.get(key.as_ref()).copied().unwrap_or(0));
        }
        prop_assert_eq!(registry.active_watcher_count(), live);
        drop(handles);
        inline.process_unregistrations();
        prop_assert_eq!(registry.active_watcher_count(), 0);
        registry.check_invariants();
    }
}
