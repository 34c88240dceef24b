//! Under writes that never pause, the async dispatcher's queue is never empty: what it
//! serves besides events (a heartbeat, a requested Progress, the closed-receiver sweep)
//! must still come, after the events queued when it came up (a watcher of the written key
//! never reads a Put at or below a Progress it has read), not once the stream ends
//! (Kubernetes' consistent reads wait on a requested Progress while writes go on, and a
//! watcher of a quiet key learns that its stream is alive only from heartbeats).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use watchtrie::{
    DispatchOptions, EventFilter, WatchDispatcher, WatchEventType, WatchRegistry, WatchResponse,
    WatchSpec,
};

/// What the dispatcher must serve while the store writes.
#[derive(Clone, Copy, Debug)]
enum Served {
    Heartbeat,
    RequestedProgress,
    ClosedReceiverSweep,
}

/// How long the test waits before it calls the dispatcher stuck (no timing is asserted).
const STUCK: Duration = Duration::from_secs(60);

#[test]
fn heartbeats_requests_and_sweeps_are_served_while_writes_never_pause() {
    let failures: Vec<String> = [
        Served::Heartbeat,
        Served::RequestedProgress,
        Served::ClosedReceiverSweep,
    ]
    .into_iter()
    .filter_map(|served| serve_under_unpaused_writes(served).err())
    .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

fn serve_under_unpaused_writes(served: Served) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    // Room for what the checker below is sent between two of this thread's reads, with
    // seconds to spare: it must not overflow on a loaded machine.
    let registry = Arc::new(WatchRegistry::new(1 << 20, tx));
    let (events_tx, events_rx) = broadcast::channel(1024);
    let last_applied = Arc::new(AtomicU64::new(0));
    let heartbeat_ms = match served {
        Served::Heartbeat => 20,
        _ => 0,
    };
    let options = match served {
        Served::ClosedReceiverSweep => DispatchOptions::default()
            .with_closed_receiver_sweep(Duration::from_millis(20), usize::MAX),
        _ => DispatchOptions::default(),
    };
    let dispatcher = WatchDispatcher::new(
        registry.clone(),
        events_rx,
        rx,
        last_applied.clone(),
        heartbeat_ms,
    )
    .with_options(options);
    let requester = dispatcher.progress_requester();
    // Watches a key nobody writes: only a Progress reaches it.
    let mut quiet = registry.watch(WatchSpec::exact("/quiet")).unwrap();
    // Watchers of the written key that let no event through: each event costs the
    // dispatcher a walk over them, so it falls behind the writer and its queue stays full.
    let nothing = EventFilter::default().no_put().no_delete().no_progress();
    let _slowing: Vec<_> = (0..2_000)
        .map(|_| {
            registry
                .watch(WatchSpec::exact("/busy").filter(nothing))
                .unwrap()
        })
        .collect();
    // Reads the written key: no Put may come at or below a Progress it has read.
    let mut checker = registry.watch(WatchSpec::exact("/busy")).unwrap();
    // On a key nobody writes: once its receiver is dropped, only a sweep finds it.
    let (_, _, gone) = registry
        .watch(WatchSpec::exact("/gone"))
        .unwrap()
        .into_receiver();
    let task = runtime.spawn(dispatcher.run());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let last_applied = last_applied.clone();
        std::thread::spawn(move || {
            let mut revision = 0u64;
            while !stop.load(Ordering::Relaxed) {
                revision += 1;
                let _ = events_tx.send(WatchResponse {
                    key: Bytes::from_static(b"/busy"),
                    revision,
                    ..Default::default()
                });
                last_applied.store(revision, Ordering::Release);
            }
        })
    };
    // The stream is under way before anything is asked.
    while last_applied.load(Ordering::Acquire) < 10_000 {
        std::thread::yield_now();
    }
    // Not before: the first sweep runs as the dispatcher starts.
    drop(gone);
    if let Served::RequestedProgress = served {
        requester.request(quiet.progress_request()).unwrap();
    }
    let started = Instant::now();
    let mut quiet_progress = 0;
    let mut checker_progress = 0;
    let outcome = 'poll: loop {
        while let Ok(event) = checker.receiver_mut().try_recv() {
            match event.event_type {
                WatchEventType::Progress => checker_progress = event.revision.max(checker_progress),
                WatchEventType::Put if event.revision <= checker_progress => {
                    break 'poll Err(format!(
                        "{served:?}: Put {} after Progress {checker_progress}",
                        event.revision
                    ));
                }
                WatchEventType::Put => {}
                other => {
                    break 'poll Err(format!("{served:?}: the checker read {other:?}"));
                }
            }
        }
        while let Ok(event) = quiet.receiver_mut().try_recv() {
            if event.event_type != WatchEventType::Progress {
                break 'poll Err(format!("{served:?}: the quiet watcher read {event:?}"));
            }
            quiet_progress += 1;
        }
        let done = match served {
            // A few ticks, so that the checker sees Progress amid the stream.
            Served::Heartbeat => quiet_progress >= 3,
            Served::RequestedProgress => quiet_progress == 1,
            Served::ClosedReceiverSweep => registry.metrics().read().closed_receiver_removals == 1,
        };
        if done {
            break Ok(());
        }
        if started.elapsed() > STUCK {
            break Err(format!(
                "{served:?}: not served in {STUCK:?} of writes ({} written)",
                last_applied.load(Ordering::Acquire)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    // Served while the writer still ran: it stops only now.
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    runtime.block_on(task).unwrap();
    outcome
}
