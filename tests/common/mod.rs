//! A test bed that drives a registry through either dispatch path with the same calls.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use watchtrie::{
    DispatchOptions, InlineDispatcher, WatchDispatcher, WatchEvent, WatchRegistry, WatchResponse,
};

/// Which dispatch path a test runs through.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `InlineDispatcher::dispatch` called directly.
    Inline,
    /// `WatchDispatcher::run` as a task, fed by a broadcast channel.
    Task,
}

pub struct Bed {
    pub registry: Arc<WatchRegistry>,
    pub last_applied: Arc<AtomicU64>,
    inline: Option<InlineDispatcher>,
    events: Option<broadcast::Sender<WatchResponse>>,
    task: Option<JoinHandle<()>>,
}

impl Bed {
    pub fn new(mode: Mode, buffer: usize, max: usize) -> Self {
        Self::with_heartbeat(mode, buffer, max, 0)
    }

    /// `Task` mode needs a tokio runtime; tests use paused time so that `settle` is exact.
    pub fn with_heartbeat(mode: Mode, buffer: usize, max: usize, heartbeat_ms: u64) -> Self {
        Self::with_options(mode, buffer, max, heartbeat_ms, DispatchOptions::default())
    }

    /// A bed whose dispatcher runs with `options`.
    pub fn with_options(
        mode: Mode,
        buffer: usize,
        max: usize,
        heartbeat_ms: u64,
        options: DispatchOptions,
    ) -> Self {
        let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
        let registry = Arc::new(WatchRegistry::new_with_limits(buffer, max, unregister_tx));
        let last_applied = Arc::new(AtomicU64::new(0));
        match mode {
            Mode::Inline => Self {
                inline: Some(
                    InlineDispatcher::new(registry.clone(), unregister_rx).with_options(options),
                ),
                registry,
                last_applied,
                events: None,
                task: None,
            },
            Mode::Task => {
                let (tx, rx) = broadcast::channel(1024);
                let dispatcher = WatchDispatcher::new(
                    registry.clone(),
                    rx,
                    unregister_rx,
                    last_applied.clone(),
                    heartbeat_ms,
                )
                .with_options(options);
                Self {
                    registry,
                    last_applied,
                    inline: None,
                    events: Some(tx),
                    task: Some(tokio::spawn(dispatcher.run())),
                }
            }
        }
    }

    /// Broadcasts one event.
    pub fn send(&mut self, event: WatchResponse) {
        match (&mut self.inline, &self.events) {
            (Some(inline), _) => inline.dispatch(&event),
            (None, Some(tx)) => {
                tx.send(event).expect("dispatcher alive");
            }
            _ => unreachable!(),
        }
    }

    /// Returns once everything sent so far is delivered and every unregistration applied.
    /// Under paused time a sleep completes only when every other task is idle.
    pub async fn settle(&mut self) {
        match &mut self.inline {
            Some(inline) => {
                inline.process_unregistrations();
            }
            None => tokio::time::sleep(Duration::from_micros(1)).await,
        }
    }

    /// The inline dispatcher (`Inline` mode only).
    pub fn inline(&mut self) -> &mut InlineDispatcher {
        self.inline.as_mut().expect("an Inline bed")
    }

    /// Ends the broadcast stream and waits for the dispatcher task to stop.
    pub async fn shutdown(mut self) {
        self.events.take();
        if let Some(task) = self.task.take() {
            task.await.expect("dispatcher task panicked");
        }
    }
}

pub fn put(key: &str, value: &str, revision: u64) -> WatchResponse {
    WatchResponse {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        prev_value: Bytes::new(),
        event_type: 0,
        error: 0,
        revision,
    }
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Everything a receiver holds right now.
pub fn drain(rx: &mut mpsc::Receiver<WatchEvent>) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        out.push(event);
    }
    out
}

/// Revisions of everything a receiver holds right now.
pub fn revisions(rx: &mut mpsc::Receiver<WatchEvent>) -> Vec<u64> {
    drain(rx).into_iter().map(|e| e.revision).collect()
}

/// Declares each test once per dispatch path, in modules `inline` and `task`.
#[macro_export]
macro_rules! in_both_modes {
    ($(async fn $name:ident($mode:ident) $body:block)*) => {
        mod inline {
            use super::*;
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    let $mode = $crate::common::Mode::Inline;
                    $body
                }
            )*
        }
        mod task {
            use super::*;
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    let $mode = $crate::common::Mode::Task;
                    $body
                }
            )*
        }
    };
}
