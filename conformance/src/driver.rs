//! Runs one [`Case`] on the reference and on watchtrie (drop-in and compact watchers), side
//! by side, and reports the first difference.
//!
//! Determinism: one current-thread runtime with paused time. Both dispatchers are tasks on it;
//! they run only while the driver awaits, and [`settle`] returns only once every task is idle
//! (under paused time a sleep completes when nothing else can run). Heartbeats are placed by
//! advancing the clock into windows that hold exactly one tick of each engine despite the
//! ±10% jitter of the first tick: the first window ends at 1.1 periods, each later one a
//! period after the previous.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use d_engine_proto::client::WatchResponse;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::engines::{Engine, Received, Reference, Registered, Seen, Watchtrie, WatchtrieCompact};
use crate::ops::{self, Case, Op, BROADCAST_CAPACITY, HEARTBEAT_MS, KEYS, PREFIXES};

/// The first point where the engines disagreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the step (`ops.len()` for the final drain).
    pub step: usize,
    /// What differed.
    pub what: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: {}", self.step, self.what)
    }
}

/// What one step showed of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observed {
    Nothing,
    Registered(Registered),
    /// Events read, then whether the channel was found closed (None: stopped at `max`).
    Read(Vec<Seen>, Option<bool>),
}

enum Slot<E: Engine> {
    Handle(E::Handle),
    Receiver(E::Receiver),
}

impl<E: Engine> Slot<E> {
    fn receiver(&mut self) -> &mut E::Receiver {
        match self {
            Slot::Handle(h) => E::receiver(h),
            Slot::Receiver(r) => r,
        }
    }
}

/// One engine under test.
struct Side<E: Engine> {
    registry: Arc<E::Registry>,
    events: broadcast::Sender<WatchResponse>,
    last_applied: Arc<AtomicU64>,
    task: JoinHandle<()>,
    slots: Vec<Slot<E>>,
}

impl<E: Engine> Side<E> {
    fn new(case: &Case) -> Self {
        let config = case.config;
        let (registry, unregister_rx) = E::registry(config.buffer_size(), config.max_watchers());
        let (events, events_rx) = broadcast::channel(BROADCAST_CAPACITY);
        let last_applied = Arc::new(AtomicU64::new(0));
        let heartbeat = if config.heartbeat { HEARTBEAT_MS } else { 0 };
        let task = tokio::spawn(E::run(
            registry.clone(),
            events_rx,
            unregister_rx,
            last_applied.clone(),
            heartbeat,
            false,
        ));
        Self {
            registry,
            events,
            last_applied,
            task,
            slots: Vec::new(),
        }
    }

    fn pick(&self, slot: u8) -> Option<usize> {
        (!self.slots.is_empty()).then(|| usize::from(slot) % self.slots.len())
    }

    /// Applies `op` without waiting for the dispatcher.
    fn apply(&mut self, op: &Op, lag_base: u64) -> Observed {
        match *op {
            Op::Register { key, prev_kv } => {
                let key = Bytes::from_static(KEYS[usize::from(key) % KEYS.len()].as_bytes());
                self.registered(E::register(&self.registry, key, prev_kv))
            }
            Op::RegisterPrefix { prefix, prev_kv } => {
                let prefix =
                    Bytes::from_static(PREFIXES[usize::from(prefix) % PREFIXES.len()].as_bytes());
                self.registered(E::register_prefix(&self.registry, prefix, prev_kv))
            }
            Op::Drop { slot } => {
                if let Some(i) = self.pick(slot) {
                    drop(self.slots.remove(i));
                }
                Observed::Nothing
            }
            Op::IntoReceiver { slot } => {
                if let Some(i) = self.pick(slot) {
                    if matches!(self.slots[i], Slot::Handle(_)) {
                        let Slot::Handle(h) = self.slots.remove(i) else {
                            unreachable!()
                        };
                        self.slots.insert(i, Slot::Receiver(E::into_receiver(h)));
                    }
                }
                Observed::Nothing
            }
            Op::Read { slot, max } => {
                let Some(i) = self.pick(slot) else {
                    return Observed::Nothing;
                };
                read::<E>(self.slots[i].receiver(), usize::from(max))
            }
            Op::Broadcast {
                key,
                event_type,
                value,
                prev_value,
                revision,
            } => {
                let _ = self.events.send(ops::event(
                    key,
                    event_type,
                    value,
                    prev_value,
                    u64::from(revision),
                ));
                Observed::Nothing
            }
            Op::Heartbeat { last_applied } => {
                self.last_applied
                    .store(u64::from(last_applied), Ordering::Relaxed);
                Observed::Nothing
            }
            Op::Lag { key, extra } => {
                for i in 0..(BROADCAST_CAPACITY as u64 + u64::from(extra % 8)) {
                    let _ = self.events.send(ops::event(key, 0, 1, false, lag_base + i));
                }
                Observed::Nothing
            }
        }
    }

    fn registered(&mut self, result: Result<E::Handle, Registered>) -> Observed {
        match result {
            Ok(handle) => {
                let described = E::describe(&handle);
                self.slots.push(Slot::Handle(handle));
                Observed::Registered(described)
            }
            Err(e) => Observed::Registered(e),
        }
    }

    /// Everything left in every receiver, in slot order.
    fn drain_all(&mut self) -> Vec<Observed> {
        self.slots
            .iter_mut()
            .map(|s| read::<E>(s.receiver(), usize::MAX))
            .collect()
    }

    async fn shutdown(self) {
        drop(self.events);
        self.task.await.expect("dispatcher task panicked");
    }
}

fn read<E: Engine>(rx: &mut E::Receiver, max: usize) -> Observed {
    let mut seen = Vec::new();
    while seen.len() < max {
        match E::try_recv(rx) {
            Received::Event(event) => seen.push(E::seen(&event)),
            Received::Empty => return Observed::Read(seen, Some(false)),
            Received::Closed => return Observed::Read(seen, Some(true)),
        }
    }
    Observed::Read(seen, None)
}

/// Returns once every task on the runtime is idle.
pub async fn settle() {
    tokio::time::sleep(Duration::from_micros(1)).await;
}

/// Runs `case` on both engines in a fresh paused-time runtime.
pub fn run_case(case: &Case) -> Result<(), Divergence> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(compare(case))
}

/// Runs `case` on the reference and on watchtrie through both registration paths
/// (drop-in and compact) at once, comparing every step.
async fn compare(case: &Case) -> Result<(), Divergence> {
    let start = tokio::time::Instant::now();
    let mut reference = Side::<Reference>::new(case);
    let mut ours = Side::<Watchtrie>::new(case);
    let mut compact = Side::<WatchtrieCompact>::new(case);
    settle().await;
    let mut heartbeats = 0u64;
    let mut lag_base = 1 << 32;
    for (step, op) in case.ops.iter().enumerate() {
        let fail = |what: String| Divergence { step, what };
        if matches!(op, Op::Read { .. }) {
            settle().await;
        }
        let a = reference.apply(op, lag_base);
        let b = ours.apply(op, lag_base);
        let c = compact.apply(op, lag_base);
        lag_base += 64;
        for (name, other) in [(Watchtrie::NAME, &b), (WatchtrieCompact::NAME, &c)] {
            if &a != other {
                return Err(fail(format!("{op:?}: reference {a:?}, {name} {other:?}")));
            }
        }
        if let Op::Heartbeat { .. } = op {
            heartbeats += 1;
            let window_end = HEARTBEAT_MS * 11 / 10 + (heartbeats - 1) * HEARTBEAT_MS;
            tokio::time::sleep_until(start + Duration::from_millis(window_end)).await;
        }
        settle().await;
        Watchtrie::check(&ours.registry);
        WatchtrieCompact::check(&compact.registry);
        let ka = Reference::prev_kv_count(&reference.registry);
        for (name, kb) in [
            (Watchtrie::NAME, Watchtrie::prev_kv_count(&ours.registry)),
            (
                WatchtrieCompact::NAME,
                WatchtrieCompact::prev_kv_count(&compact.registry),
            ),
        ] {
            if ka != kb {
                return Err(fail(format!(
                    "after {op:?}: prev_kv_watcher_count reference {ka}, {name} {kb}"
                )));
            }
        }
    }
    settle().await;
    let a = reference.drain_all();
    for (name, other) in [
        (Watchtrie::NAME, ours.drain_all()),
        (WatchtrieCompact::NAME, compact.drain_all()),
    ] {
        if a != other {
            return Err(Divergence {
                step: case.ops.len(),
                what: format!("final drain: reference {a:?}, {name} {other:?}"),
            });
        }
    }
    reference.shutdown().await;
    ours.shutdown().await;
    compact.shutdown().await;
    Ok(())
}
