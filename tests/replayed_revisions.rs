//! `DispatchOptions::with_skip_replayed_revisions`: a source that emits one log entry twice
//! (d-engine 0.2.4 under load or across a leader change) reaches each watcher once. Off by
//! default: the reference passes every event through.
mod common;
use common::*;

use watchtrie::{DispatchOptions, WatchEventType, WatchResponse};

fn event(kind: i32, revision: u64) -> WatchResponse {
    WatchResponse {
        event_type: kind,
        ..put("/k", "v", revision)
    }
}
const PUT: i32 = 0;
const DELETE: i32 = 1;
const PROGRESS: i32 = 3;

/// (event type code, revision) of one event.
type Event = (i32, u64);

/// (what the source sends, what a watcher of `/k` receives with the option on).
const CASES: &[(&[Event], &[Event])] = &[
    // An entry applied twice in a row, and one re-sent after later ones.
    (
        &[
            (PUT, 1),
            (PUT, 2),
            (PUT, 2),
            (DELETE, 3),
            (PUT, 1),
            (PUT, 4),
        ],
        &[(PUT, 1), (PUT, 2), (DELETE, 3), (PUT, 4)],
    ),
    // Gaps are not replays: revisions only have to grow.
    (
        &[(PUT, 5), (DELETE, 9), (PUT, 30)],
        &[(PUT, 5), (DELETE, 9), (PUT, 30)],
    ),
    // A store's own Progress passes through, whatever its revision.
    (
        &[(PUT, 7), (PROGRESS, 3), (PUT, 7)],
        &[(PUT, 7), (PROGRESS, 3)],
    ),
];

in_both_modes! {
    async fn replays_are_skipped_once_the_option_is_on(mode) {
        for (sent, want) in CASES {
            let options = DispatchOptions::default().with_skip_replayed_revisions(true);
            let mut bed = Bed::with_options(mode, 64, usize::MAX, 0, options);
            let mut watcher = bed.registry.register(b("/k"), false).unwrap();
            let metrics = bed.registry.metrics();
            for &(kind, revision) in *sent {
                bed.send(event(kind, revision));
            }
            bed.settle().await;
            let got: Vec<_> = drain(watcher.receiver_mut())
                .into_iter()
                .map(|e| (e.event_type.code(), e.revision))
                .collect();
            assert_eq!(&got, want, "sent {sent:?}");
            let m = metrics.read();
            assert_eq!(m.replayed_events_skipped as usize, sent.len() - want.len());
            assert_eq!(m.events_dispatched as usize, sent.len());
        }
    }

    async fn by_default_every_event_passes_through_as_in_the_reference(mode) {
        for (sent, _) in CASES {
            let mut bed = Bed::new(mode, 64, usize::MAX);
            let mut watcher = bed.registry.register(b("/k"), false).unwrap();
            for &(kind, revision) in *sent {
                bed.send(event(kind, revision));
            }
            bed.settle().await;
            let got = drain(watcher.receiver_mut());
            assert_eq!(got.len(), sent.len());
            assert!(got.iter().all(|e| e.event_type != WatchEventType::Canceled));
            assert_eq!(bed.registry.metrics().read().replayed_events_skipped, 0);
        }
    }
}
