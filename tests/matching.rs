//! Rule 5 of docs/CONTRACT.md: an event on K reaches the exact watchers of K, then the prefix
//! watchers of each of K's slash-terminated leading parts, shortest first; nothing else.
mod common;
use common::*;
use std::collections::BTreeSet;
use watchtrie::prefix_segments;

/// Watched keys: exact ones plain, prefixes with a trailing `*` marker stripped.
const WATCHES: &[&str] = &[
    "/a/b/c", "/a/b", "/a/", "/a", "a/b", "", "/", "//", "a", "/*", "/a/*", "/a/b/*", "/a/b/c/*",
    "//*", "/b/*", "/a/bc/*",
];

/// (event key, the watches it must reach)
const CASES: &[(&str, &[&str])] = &[
    ("/a/b/c", &["/a/b/c", "/*", "/a/*", "/a/b/*"]),
    ("/a/", &["/a/", "/*", "/a/*"]),
    ("/a", &["/a", "/*"]),
    ("/a/b", &["/a/b", "/*", "/a/*"]),
    ("/a/bc/d", &["/*", "/a/*", "/a/bc/*"]),
    ("/a/b/c/", &["/*", "/a/*", "/a/b/*", "/a/b/c/*"]),
    ("a/b", &["a/b"]),
    ("a", &["a"]),
    ("", &[""]),
    ("/", &["/", "/*"]),
    ("//", &["//", "/*", "//*"]),
    ("/b", &["/*"]),
    ("/x/y", &["/*"]),
    ("x", &[]),
];

in_both_modes! {
    async fn each_event_reaches_exactly_its_exact_and_prefix_watchers(mode) {
        let mut bed = Bed::new(mode, 64, usize::MAX);
        let mut handles: Vec<_> = WATCHES
            .iter()
            .map(|w| match w.strip_suffix('*') {
                Some(prefix) => bed.registry.register_prefix(b(prefix), false).unwrap(),
                None => bed.registry.register(b(w), false).unwrap(),
            })
            .collect();
        for (rev, (key, _)) in CASES.iter().enumerate() {
            bed.send(put(key, "v", rev as u64 + 1));
        }
        bed.settle().await;
        let mut got: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); WATCHES.len()];
        for (i, h) in handles.iter_mut().enumerate() {
            for e in drain(h.receiver_mut()) {
                assert_eq!(e.key, b(CASES[e.revision as usize - 1].0), "event carries its own key");
                assert!(got[i].insert(e.revision), "delivered twice");
            }
        }
        for (rev, (key, want)) in CASES.iter().enumerate() {
            for (i, w) in WATCHES.iter().enumerate() {
                let expected = want.contains(w);
                assert_eq!(got[i].contains(&(rev as u64 + 1)), expected, "event {key:?} at watch {w:?}");
            }
        }
    }

    async fn exact_and_prefix_watchers_on_the_same_bytes_both_match(mode) {
        let mut bed = Bed::new(mode, 4, usize::MAX);
        let mut exact = bed.registry.register(b("/a/"), false).unwrap();
        let mut prefix = bed.registry.register_prefix(b("/a/"), false).unwrap();
        bed.send(put("/a/", "v", 1));
        bed.settle().await;
        assert_eq!(revisions(exact.receiver_mut()), vec![1]);
        assert_eq!(revisions(prefix.receiver_mut()), vec![1]);
    }

    async fn many_watchers_on_one_key_each_get_one_copy(mode) {
        let mut bed = Bed::new(mode, 4, usize::MAX);
        let mut hs: Vec<_> = (0..300).map(|i| if i % 2 == 0 {
            bed.registry.register(b("/k/x"), false).unwrap()
        } else {
            bed.registry.register_prefix(b("/k/"), false).unwrap()
        }).collect();
        assert_eq!(bed.registry.watcher_count(&b("/k/x")), 150);
        assert_eq!(bed.registry.prefix_watcher_count(&b("/k/")), 150);
        bed.send(put("/k/x", "v", 9));
        bed.settle().await;
        for h in &mut hs {
            assert_eq!(revisions(h.receiver_mut()), vec![9]);
        }
    }
}

#[test]
fn prefix_segments_lists_slash_terminated_leading_parts() {
    let cases: &[(&str, &[&str])] = &[
        ("/config/db/host", &["/", "/config/", "/config/db/"]),
        ("/", &["/"]),
        ("/config", &["/"]),
        ("/config/", &["/", "/config/"]),
        ("config", &[]),
        ("a/b", &["a/"]),
        ("", &[]),
        ("//", &["/", "//"]),
    ];
    for (key, want) in cases {
        let got = prefix_segments(&b(key));
        let want: Vec<_> = want.iter().map(|s| b(s)).collect();
        assert_eq!(got, want, "{key:?}");
    }
}

#[test]
fn counts_report_watchers_per_key_and_prefix() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = watchtrie::WatchRegistry::new(4, tx);
    let _h = [
        registry.register(b("/a"), false).unwrap(),
        registry.register(b("/a"), false).unwrap(),
        registry.register(b("/b"), false).unwrap(),
        registry.register_prefix(b("/a/"), false).unwrap(),
    ];
    assert_eq!(registry.watcher_count(&b("/a")), 2);
    assert_eq!(registry.watcher_count(&b("/a/")), 0);
    assert_eq!(registry.watched_key_count(), 2);
    assert_eq!(registry.prefix_watcher_count(&b("/a/")), 1);
    assert_eq!(registry.prefix_watcher_count(&b("/")), 0);
    assert_eq!(registry.watched_prefix_count(), 1);
}
