//! Sweeps: one walk over every watcher, in slices, for three jobs (heartbeat Progress,
//! cancelling for lag, the watchers waiting for their start included, finding closed
//! receivers). One primitive, [`run_slice`], so that all
//! three share the snapshot handling, the retired rule and the counting.
//!
//! A slice holds one snapshot for about [`SWEEP_SLICE`] (or a fixed amount of work) and lets
//! go of it before the removals it found are applied: a writer waits for readers, and a
//! reader must not wait for itself. The cursor holds no reference into a snapshot, so the
//! next slice may read the other twin (`index::SweepCursor`).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::delivery::{deliver_list, removal_of, Retirements, Tally};
use crate::event::{WatchEvent, WatchEventType};
use crate::index::{Snapshot, SweepCursor, WatcherEntry};
use crate::metrics::Counters;
use crate::registry::WatchRegistry;
use crate::sink::{EventView, Watcher};

/// How long a sweep holds one snapshot (and, in incremental mode, holds up events). Writers
/// wait at most this long for a sweep.
pub(super) const SWEEP_SLICE: Duration = Duration::from_micros(500);

/// Sweep work between two looks at the clock (units of `Snapshot::sweep`: buckets looked
/// at plus watchers visited, a few microseconds' worth).
const SWEEP_STEP: usize = 128;

/// What a sweep does to each watcher it visits (retired ones are skipped).
#[derive(Clone, Copy, Debug)]
pub(super) enum SweepAction {
    /// Deliver Progress carrying `revision`, with the usual overflow and closed handling
    /// (an overflow sentinel carries `resume_from`, 0 for the reference's).
    Progress { revision: u64, resume_from: u64 },
    /// Send the lag sentinel (resume from `resume_from`) and retire the watcher, unless it
    /// waits for its start.
    CancelLagged { resume_from: u64 },
    /// For a watcher from a revision still waiting for a start at or below `through`: send
    /// the lag sentinel, resuming from that start, and retire it (events it wants may be
    /// among those lost).
    CancelWaiting { through: u64 },
    /// Retire the watcher if its receiver is gone.
    DropClosed,
}

/// How much one slice does.
#[derive(Clone, Copy, Debug)]
pub(super) enum SliceSize {
    /// About [`SWEEP_SLICE`] of work, or to the end.
    Timed,
    /// About this many units of work, or to the end.
    Work(usize),
}

/// Runs one slice of a sweep from `cursor`; returns how many watchers the action took
/// effect on (Progress delivered, watchers cancelled, closed receivers found).
pub(super) fn run_slice(
    registry: &WatchRegistry,
    retirements: &mut Retirements,
    cursor: &mut SweepCursor,
    action: SweepAction,
    size: SliceSize,
) -> u64 {
    let empty = Bytes::new();
    let (revision, resume_from) = match action {
        SweepAction::Progress {
            revision,
            resume_from,
        } => (revision, resume_from),
        _ => (0, 0),
    };
    let progress = EventView::new(
        WatchEventType::Progress,
        &empty,
        &empty,
        &empty,
        revision,
        resume_from,
    );
    let snapshot = registry.snapshot();
    let mark = retirements.mark();
    let mut tally = Tally::default();
    let mut affected = 0u64;
    let mut lagged_members = 0u64;
    walk(&snapshot, cursor, size, &mut |at, list| match action {
        SweepAction::Progress { .. } => deliver_list(list, at, &progress, retirements, &mut tally),
        // A watcher still waiting for its start lost nothing below it (a gap's waiting
        // watchers with a start inside it were cancelled at that start already).
        SweepAction::CancelLagged { resume_from } => list.for_each(&mut |watcher| {
            if !retirements.is_retired(watcher.id()) && !retirements.held.waits(watcher.id()) {
                watcher.cancel(WatchEvent::lag_sentinel(resume_from));
                retirements.record(removal_of(watcher.id(), at, None));
                affected += 1;
            }
        }),
        SweepAction::CancelWaiting { through } => list.for_each(&mut |watcher| {
            if let Some(start) = retirements.held.stop_waiting(watcher.id(), through) {
                if !retirements.is_retired(watcher.id()) {
                    watcher.cancel(WatchEvent::lag_sentinel(start));
                    retirements.record(removal_of(watcher.id(), at, None));
                    affected += 1;
                }
            }
        }),
        SweepAction::DropClosed => list.for_each(&mut |watcher| {
            if watcher.is_closed() && !retirements.is_retired(watcher.id()) {
                retirements.record(removal_of(watcher.id(), at, None));
                affected += 1;
            } else if let Some(ring) = watcher.group() {
                // Members lagged, whose receivers have not read since: their units go now.
                lagged_members += registry.shared().release_lagged(ring);
            }
        }),
    });
    drop(snapshot);
    let counters = registry.counters();
    match action {
        SweepAction::Progress { .. } => {
            affected = tally.sent;
            tally.record_progress(counters);
        }
        SweepAction::CancelLagged { .. } | SweepAction::CancelWaiting { .. } => {
            Counters::add(&counters.lag_cancels, affected)
        }
        SweepAction::DropClosed => {
            Counters::add(&counters.closed_receiver_removals, affected);
            Counters::add(&counters.lagged_members_released, lagged_members);
        }
    }
    if retirements.mark() > mark {
        retirements.retire_since(mark, registry);
    }
    affected
}

/// Advances `cursor` over `snapshot` by one slice of `size`.
fn walk<F: FnMut(crate::index::Location<'_>, &crate::index::WatcherList<Watcher>)>(
    snapshot: &Snapshot<Watcher>,
    cursor: &mut SweepCursor,
    size: SliceSize,
    f: &mut F,
) {
    match size {
        SliceSize::Work(budget) => snapshot.sweep(cursor, budget, f),
        SliceSize::Timed => {
            let start = Instant::now();
            loop {
                snapshot.sweep(cursor, SWEEP_STEP, f);
                if cursor.is_done() || start.elapsed() >= SWEEP_SLICE {
                    return;
                }
            }
        }
    }
}
