//! Rule 6 of docs/CONTRACT.md: event types map 0..=3 and anything else to Canceled; value, key and
//! revision pass through, error is dropped; prev_value is Some for prev_kv watchers (even on
//! Progress), None otherwise.
mod common;
use common::*;
use watchtrie::{WatchEvent, WatchEventType, WatchResponse};

in_both_modes! {
    async fn event_types_and_fields_convert_like_the_reference(mode) {
        let mut bed = Bed::new(mode, 64, usize::MAX);
        let mut plain = bed.registry.register(b("/k"), false).unwrap();
        let mut with_prev = bed.registry.register_prefix(b("/"), true).unwrap();
        let codes = [(0, WatchEventType::Put), (1, WatchEventType::Delete), (2, WatchEventType::Canceled),
                     (3, WatchEventType::Progress), (4, WatchEventType::Canceled), (-1, WatchEventType::Canceled),
                     (i32::MAX, WatchEventType::Canceled), (i32::MIN, WatchEventType::Canceled)];
        for (i, (code, _)) in codes.iter().enumerate() {
            bed.send(WatchResponse {
                key: b("/k"),
                value: b(&format!("v{i}")),
                prev_value: if i % 2 == 0 { b("old") } else { b("") },
                event_type: *code,
                error: 7,
                revision: 100 + i as u64,
            });
        }
        bed.settle().await;
        let plain = drain(plain.receiver_mut());
        let with_prev = drain(with_prev.receiver_mut());
        assert_eq!(plain.len(), codes.len());
        for (i, (_, ty)) in codes.iter().enumerate() {
            let want = WatchEvent { event_type: *ty, key: b("/k"), value: b(&format!("v{i}")), prev_value: None, revision: 100 + i as u64 };
            assert_eq!(plain[i], want);
            let prev = if i % 2 == 0 { b("old") } else { b("") };
            assert_eq!(with_prev[i], WatchEvent { prev_value: Some(prev), ..want });
        }
    }
}

#[test]
fn watch_event_converts_back_to_the_wire_form() {
    let event = WatchEvent {
        event_type: WatchEventType::Delete,
        key: b("/k"),
        value: b(""),
        prev_value: Some(b("p")),
        revision: 3,
    };
    let wire = WatchResponse::from(&event);
    assert_eq!(
        wire,
        WatchResponse {
            key: b("/k"),
            value: b(""),
            prev_value: b("p"),
            event_type: 1,
            error: 0,
            revision: 3
        }
    );
    let none = WatchEvent {
        prev_value: None,
        event_type: WatchEventType::Progress,
        ..event
    };
    assert_eq!(WatchResponse::from(&none).prev_value, b(""));
    assert_eq!(WatchResponse::from(&none).event_type, 3);
    for ty in [
        WatchEventType::Put,
        WatchEventType::Delete,
        WatchEventType::Canceled,
        WatchEventType::Progress,
    ] {
        assert_eq!(WatchEventType::from_code(ty.code()), ty);
    }
}
