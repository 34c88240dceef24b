//! Rule 2 of docs/CONTRACT.md: a prefix starts and ends with `/` (`/` alone is valid); the form is
//! checked before the limit.
mod common;
use common::*;
use watchtrie::WatchError;

#[test]
fn prefix_must_start_and_end_with_a_slash() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = watchtrie::WatchRegistry::new(4, tx);
    let cases: &[(&[u8], bool)] = &[
        (b"/", true),
        (b"/a/", true),
        (b"//", true),
        (b"/a/b/", true),
        (b"/\xff\x00/", true),
        (b"", false),
        (b"a/", false),
        (b"/a", false),
        (b"a", false),
        (b"a/b/", false),
    ];
    for &(prefix, valid) in cases {
        let result = registry.register_prefix(bytes::Bytes::copy_from_slice(prefix), false);
        match result {
            Ok(handle) => {
                assert!(valid, "{prefix:?} accepted");
                assert!(handle.is_prefix());
                assert_eq!(handle.key().as_ref(), prefix);
            }
            Err(e) => {
                assert!(!valid, "{prefix:?} refused");
                assert_eq!(e, WatchError::InvalidPrefix);
            }
        }
    }
}

#[test]
fn prefix_form_is_checked_before_the_limit() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let registry = watchtrie::WatchRegistry::new_with_limits(4, 0, tx);
    assert_eq!(
        registry.register_prefix(b("nope"), false).unwrap_err(),
        WatchError::InvalidPrefix
    );
    assert_eq!(
        registry.register_prefix(b("/ok/"), false).unwrap_err(),
        WatchError::LimitExceeded(0)
    );
}

#[test]
fn errors_display_the_reference_messages() {
    assert_eq!(
        WatchError::LimitExceeded(5).to_string(),
        "watcher limit (5) exceeded"
    );
    assert_eq!(
        WatchError::InvalidPrefix.to_string(),
        "prefix must start with '/' and end with '/'"
    );
    let boxed: Box<dyn std::error::Error> = Box::new(WatchError::InvalidPrefix);
    assert!(boxed.source().is_none());
}
