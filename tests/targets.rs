//! Every kind of target, through the registry and a dispatcher: which keys reach which
//! watch. A table per kind (key → reached?), each watch registered once drop-in and once
//! compact; the property test against a naive model is `conformance/tests/model.rs`.
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use watchtrie::{
    InlineDispatcher, RegisterError, RegistryOptions, Target, WatchError, WatchRegistry,
    WatchResponse, WatchSpec,
};

fn setup() -> (Arc<WatchRegistry>, InlineDispatcher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let registry = Arc::new(WatchRegistry::new(64, tx));
    let inline = InlineDispatcher::new(registry.clone(), rx);
    (registry, inline)
}

fn put(key: &[u8], revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::copy_from_slice(key),
        revision,
        ..Default::default()
    }
}

/// A target and, for each key tried on it, whether an event on that key reaches it.
type Case = (Target, Vec<(&'static [u8], bool)>);

fn table() -> Vec<Case> {
    let b = |s: &'static [u8]| Bytes::from_static(s);
    vec![
        (
            Target::Exact(b(b"/a/b")),
            vec![
                (b"/a/b", true),
                (b"/a/b/", false),
                (b"/a/", false),
                (b"", false),
            ],
        ),
        (
            Target::Prefix(b(b"/a/")),
            vec![
                (b"/a/b", true),
                (b"/a/", true),
                (b"/a", false),
                (b"/ab/", false),
            ],
        ),
        (
            Target::BytePrefix(b(b"/svc/pay")),
            vec![
                (b"/svc/payment/leader", true),
                (b"/svc/pay", true),
                (b"/svc/pa", false),
                (b"/svc/paz", false),
                (b"/svc/pay/x", true),
                (b"/svc/", false),
            ],
        ),
        (
            Target::BytePrefix(b(b"")),
            vec![(b"", true), (b"anything", true), (b"/x/", true)],
        ),
        (
            Target::BytePrefix(b(b"no-slash")),
            vec![
                (b"no-slash-at-all", true),
                (b"no-slas", false),
                (b"/no-slash", false),
            ],
        ),
        (
            Target::Range {
                start: b(b"/k/b"),
                end: Some(b(b"/k/d")),
            },
            vec![
                (b"/k/b", true),
                (b"/k/c/zzz", true),
                (b"/k/d", false),
                (b"/k/a", false),
                (b"/k/cz", true),
            ],
        ),
        (
            Target::Range {
                start: b(b"m"),
                end: None,
            },
            vec![(b"m", true), (b"zzz", true), (b"l", false), (b"/m", false)],
        ),
        (
            Target::Pattern(b(b"/svc/*/health")),
            vec![
                (b"/svc/a/health", true),
                (b"/svc//health", true),
                (b"/svc/a/b/health", false),
                (b"/svc/a/health/x", false),
                (b"/svc/a/healthy", false),
            ],
        ),
        (
            Target::Pattern(b(b"/svc/*/")),
            vec![
                (b"/svc/a/x", true),
                (b"/svc/a/", true),
                (b"/svc/a", false),
                (b"/svc/", false),
            ],
        ),
        (
            Target::Pattern(b(b"/*/*/*")),
            vec![(b"/a/b/c", true), (b"/a/b/c/", false), (b"/a/b", false)],
        ),
    ]
}

#[test]
fn every_target_kind_reaches_exactly_its_keys_in_both_channel_kinds() {
    for (target, keys) in table() {
        let (registry, mut inline) = setup();
        let mut drop_in = registry.watch(WatchSpec::new(target.clone())).unwrap();
        let mut compact = registry
            .watch(WatchSpec::new(target.clone()).compact())
            .unwrap();
        assert_eq!(drop_in.target(), target);
        assert_eq!(compact.target(), target);
        assert_eq!(registry.watchers_of(&target), 2);
        for (revision, (key, reached)) in keys.iter().enumerate() {
            inline.dispatch(&put(key, revision as u64 + 1));
            let got_drop_in = drop_in.receiver_mut().try_recv().is_ok();
            let got_compact = compact.receiver_mut().try_recv().is_ok();
            assert_eq!(
                (got_drop_in, got_compact),
                (*reached, *reached),
                "{target:?} on {:?}",
                String::from_utf8_lossy(key)
            );
        }
        drop((drop_in, compact));
        inline.process_unregistrations();
        assert_eq!(registry.watchers_of(&target), 0);
        assert_eq!(registry.active_watcher_count(), 0);
        registry.check_invariants();
    }
}

#[test]
fn an_overflowed_watcher_of_any_kind_is_cancelled_and_removed() {
    for (target, keys) in table() {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new(0, tx));
        let mut inline = InlineDispatcher::new(registry.clone(), rx);
        let mut watcher = registry.watch(WatchSpec::new(target.clone())).unwrap();
        let (key, _) = keys.iter().find(|(_, reached)| *reached).unwrap();
        inline.dispatch(&put(key, 1));
        assert_eq!(
            watcher.receiver_mut().try_recv().unwrap().event_type,
            watchtrie::WatchEventType::Canceled,
            "{target:?}"
        );
        assert_eq!(
            registry.watchers_of(&target),
            0,
            "{target:?} removed after the event"
        );
        registry.check_invariants();
    }
}

#[test]
fn malformed_targets_and_targets_beyond_the_limits_are_refused_without_an_id() {
    let (registry, _inline) = setup();
    let b = Bytes::from_static;
    let refused: [(Target, RegisterError); 4] = [
        (Target::Prefix(b(b"/no-end")), RegisterError::InvalidPrefix),
        (
            Target::Range {
                start: b(b"b"),
                end: Some(b(b"a")),
            },
            RegisterError::EmptyRange,
        ),
        (
            Target::Range {
                start: b(b"a"),
                end: Some(b(b"a")),
            },
            RegisterError::EmptyRange,
        ),
        (
            Target::Pattern(b(b"/svc/a*/x")),
            RegisterError::InvalidPattern {
                reason: "a wildcard must be a whole piece: `*` between two `/`",
            },
        ),
    ];
    for (target, error) in refused {
        assert_eq!(registry.watch(WatchSpec::new(target)).unwrap_err(), error);
    }
    assert_eq!(
        registry
            .watch(WatchSpec::pattern("/*/*/*/*/*"))
            .unwrap_err(),
        RegisterError::TooManyWildcards {
            wildcards: 5,
            max: 4
        }
    );
    registry.set_options(
        RegistryOptions::default()
            .with_key_limits(8, 2)
            .with_max_wildcards(1),
    );
    let limited: [(Target, RegisterError); 5] = [
        (
            Target::Exact(b(b"123456789")),
            RegisterError::KeyTooLong { len: 9, max: 8 },
        ),
        (
            Target::Range {
                start: b(b"1"),
                end: Some(b(b"123456789")),
            },
            RegisterError::KeyTooLong { len: 9, max: 8 },
        ),
        (
            Target::Prefix(b(b"/a/b/")),
            RegisterError::TooManySegments {
                segments: 3,
                max: 2,
            },
        ),
        (
            Target::BytePrefix(b(b"/a/b/c")),
            RegisterError::TooManySegments {
                segments: 3,
                max: 2,
            },
        ),
        (
            Target::Pattern(b(b"/*/*")),
            RegisterError::TooManyWildcards {
                wildcards: 2,
                max: 1,
            },
        ),
    ];
    for (target, error) in limited {
        assert_eq!(registry.watch(WatchSpec::new(target)).unwrap_err(), error);
    }
    // The drop-in methods report an operator's limit as the reference's limit error.
    assert_eq!(
        registry.register_prefix(b(b"/a/b/"), false).unwrap_err(),
        WatchError::LimitExceeded(2)
    );
    assert_eq!(
        registry.register(b(b"123456789"), false).unwrap_err(),
        WatchError::LimitExceeded(8)
    );
    // Within the limits all is well, and no refusal took an id.
    let ok = registry.watch(WatchSpec::prefix("/a/")).unwrap();
    assert_eq!(ok.id(), 1);
    assert_eq!(registry.active_watcher_count(), 1);
}

#[test]
fn a_range_watcher_s_key_is_its_encoded_bounds_and_its_target_decodes_them() {
    let (registry, _inline) = setup();
    let handle = registry.watch(WatchSpec::range("/a", "/b")).unwrap();
    assert_eq!(
        handle.target(),
        Target::Range {
            start: Bytes::from("/a"),
            end: Some(Bytes::from("/b"))
        }
    );
    assert!(!handle.is_prefix());
    let open = registry
        .watch(WatchSpec::range_from("/z").compact())
        .unwrap();
    assert_eq!(
        open.target(),
        Target::Range {
            start: Bytes::from("/z"),
            end: None
        }
    );
    assert_ne!(handle.key(), open.key());
    let metrics = registry.metrics().read();
    assert_eq!((metrics.ranges, metrics.watchers), (2, 2));
}
