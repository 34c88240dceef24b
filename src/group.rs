//! Shared fan-out groups: watchers registered with the same target and the same options
//! share one bounded ring, so the dispatcher pushes each event once per group instead of
//! once per watcher, and wakes only the members waiting for it.
//!
//! ```text
//!  dispatcher ── push(event) ──► Ring { events: the last `capacity` events, base seq }
//!                                  │  members: a slab of cursors (one per member)
//!                                  │  waiters: the wakers of members that found nothing
//!  member.try_recv ◄── clone of events[cursor - base], cursor += 1
//!                      cursor < base: it is more than its buffer behind → lag sentinel
//! ```
//!
//! The group is one watcher in the index (flag `GROUP`, a [`GroupSender`] as its sink); it
//! holds no unit of the registry's limit itself. Each member holds one, and its owner's:
//!
//! - **Joining** a group that exists takes the registry's group map lock and the ring's
//!   lock, and nothing else: no publish. The first member of a group publishes its watcher
//!   like any registration, and the group enters the map only once that publish returned,
//!   so a member that joins (and returns) is always behind a published watcher: every event
//!   dispatched after its registration returned reaches the ring, after its cursor.
//! - **Lag** is seen on the receiving side: the ring keeps at most the newest `capacity`
//!   events (the registry's buffer size), so a member whose cursor fell below the oldest one
//!   missed an event. It then gets one Canceled sentinel ([`WatchEvent::overflow_sentinel_at`],
//!   `BufferOverflowAt`, its key the group's target: a range's start) carrying the revision
//!   to resume from, one past the last Put,
//!   Delete or Progress it received (or, if none, the last the ring held when it joined):
//!   no event after it has reached that member, and every earlier one matching has.
//! - **What is held**: once every member still reading is at the head, the next push drops
//!   the events held first (none of them will be read), so members that keep up cost one
//!   held event, not a buffer's worth; the only member still reading moves each event out
//!   instead of cloning it.
//! - **Batches**: a member that finds several events waiting takes up to [`BATCH_MAX`]
//!   under one lock and reads them without it (readers on two cores otherwise take the
//!   ring's lock in turn for every event). Its lag test while reading them is the ring's,
//!   made on the head the last push stored (`head_seen`): the event it would read now is
//!   one the ring would have dropped. The closed-receiver sweep sees the cursor past the
//!   batch, so it finds such a member lagged up to a batch later.
//! - **Progress for one member** waits in a map by slot, each with the head when it was
//!   asked; the member reads it when its cursor gets there (after the group's events up to
//!   the request, before any later one). Its lag sentinel and its leaving drop it.
//!
//! **When a member's units are released** (the limit, the prev_kv count, its owner's
//! count), exactly once, by whichever comes first (a flag in its slab entry, under the
//! ring's lock): its receiver is dropped; it reads its lag sentinel; the closed-receiver
//! sweep finds it lagged; or the group's watcher leaves the index (cancelled by the lag
//! policy, or the registry's teardown), which releases every member still holding units.
//! The last member leaving takes the group out of the map and unregisters its watcher.
//!
//! **A cancel of the group's watcher** (a lag, under `LagPolicy::CancelWatchers`) is kept
//! beside the ring, not in it: each member reads it after everything it has not read (an
//! entry in the ring could push out an event a member exactly its buffer behind still had
//! room for), and its stream then ends. From the cancel on the ring takes no member, so a
//! registration meanwhile starts a new group instead of joining one that gets nothing more.
//!
//! **The sweep's scan** holds the ring's lock, which the dispatcher's push waits for, so one
//! visit looks at no more than [`LAG_SCAN_STEP`] member slots and the next visit goes on from
//! there: a group of N members is scanned once every ⌈N / step⌉ sweeps. A visit costs O(1)
//! when no member still holding its units can be behind the oldest event (`held_low`).
//!
//! Lock order: the registry's writer lock, then the group map, then a ring. A member's drop
//! takes the map and its ring, lets go of both, then unregisters.
//!
//! | operation | cost |
//! |---|---|
//! | push (dispatcher, per event per group) | O(1) + O(members waiting) wake-ups |
//! | join, leave | a map probe + O(1) amortised (slab); a leave of a waiting member takes its waker by its place, O(1) |
//! | receive | O(1): from a batch, an atomic load; else a lock and a clone of each event taken (up to [`BATCH_MAX`]; a move for the only reader), and a probe of the requested Progress when some is pending |
//! | Progress requested for one member | O(1) amortised under the ring's lock |
//! | closed-receiver sweep of a group | O(1) while no member holding units can be lagged; else at most [`LAG_SCAN_STEP`] slots |

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::channel::TryRecvError;
use crate::dispatch::{MemberProgress, ProgressRequest};
use crate::event::{WatchEvent, WatchEventType};
use crate::meta::{Flags, TargetKind};
use crate::publish::Shared;
use crate::spec::Target;
use crate::sync::{AtomicU32, AtomicU64, ChannelArc as Arc, Mutex, MutexGuard, Ordering};

/// Member slots one visit of the closed-receiver sweep looks at in a ring (32 bytes each,
/// 128 KiB in all): it holds the ring's lock, which the dispatcher's push waits for.
pub(crate) const LAG_SCAN_STEP: usize = 4096;

/// Groups by what their members share: the registry's map of published groups, and a
/// `watch_many` batch's groups not yet published.
pub(crate) type GroupMap = hashbrown::HashMap<GroupKey, Arc<Ring>, ahash::RandomState>;

/// What makes two watches share a group: the same stored target and the same delivery
/// options. (The buffer size is the registry's, the same for all.)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey {
    pub(crate) kind: TargetKind,
    pub(crate) pattern: Bytes,
    /// Only the flags that change what a member receives (prev_kv, filters, keys-only).
    pub(crate) flags: Flags,
}

impl GroupKey {
    /// The key a member's lag sentinel carries: the group's target as the user gave it (a
    /// range's start bound; the stored form of a range is internal). The event a lagging
    /// member missed is gone from the ring, so its key is not known.
    fn sentinel_key(&self) -> Bytes {
        match self.kind {
            TargetKind::Range => match crate::index::decode_range(&self.pattern) {
                Some((start, _)) => self.pattern.slice_ref(start),
                None => Bytes::new(),
            },
            _ => self.pattern.clone(),
        }
    }

    /// The flags that decide what a member receives.
    pub(crate) fn delivery_flags(flags: Flags) -> Flags {
        Flags::default()
            .with(flags)
            .without(Flags::OWNED)
            .without(Flags::RESUMED)
            .without(Flags::GROUP)
    }
}

/// What a member's release gives back (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemberRelease {
    pub(crate) id: u64,
    pub(crate) owned: bool,
}

/// One member's place in the ring.
#[derive(Clone, Copy, Debug)]
struct Member {
    id: u64,
    /// The sequence number of the next event it reads.
    cursor: u64,
    /// Its place in `waiters` while it is flagged `WAITING`: a leave or a wake-up of one
    /// member finds its waker in O(1), not by a scan of everyone waiting.
    waiting_at: u32,
    /// The revision of the last Put, Delete or Progress it read (or the ring's when it
    /// joined): it resumes from one past it.
    last_revision: u64,
    state: u8,
}

// The padding after `state` holds `waiting_at`: a member slot stays 32 bytes.
const _: () = assert!(std::mem::size_of::<Member>() == 32);

impl Member {
    /// It still holds its units of the limits.
    const HELD: u8 = 1;
    /// Counted against an owner.
    const OWNED: u8 = 1 << 1;
    /// It got its lag sentinel: it reads nothing more.
    const ENDED: u8 = 1 << 2;
    /// Its waker is in `waiters`.
    const WAITING: u8 = 1 << 3;
    /// The slot is in use.
    const LIVE: u8 = 1 << 4;

    fn has(&self, bit: u8) -> bool {
        self.state & bit != 0
    }

    /// Takes its units if it still held them.
    fn release(&mut self) -> Option<MemberRelease> {
        if !self.has(Self::HELD) {
            return None;
        }
        self.state &= !Self::HELD;
        Some(MemberRelease {
            id: self.id,
            owned: self.has(Self::OWNED),
        })
    }
}

/// The ring's state, under its lock.
///
/// Invariants (checked by [`Ring::check_invariants`]): `events.len() <= capacity`; event
/// `i` has sequence number `base + i`; every live member's cursor is at most the head
/// (`base + events.len()`); `live` counts the live slots; `free` lists the others; a member
/// flagged `WAITING` has an entry in `waiters`; every live member holding its units has a
/// cursor of at least `held_low`, and those at slots below `scan_at` of at least `scan_low`;
/// `readers` counts the live members without their lag sentinel, and `caught_up` those of
/// them whose cursor is at the head; every requested Progress in `progress` is for such a
/// reader, at a sequence number between its cursor and the head.
struct RingState {
    events: VecDeque<WatchEvent>,
    base: u64,
    /// The revision of the newest Put, Delete or Progress pushed (0 before the first).
    last_revision: u64,
    members: Vec<Member>,
    free: Vec<u32>,
    live: usize,
    /// (slot, waker) of members that found nothing to read.
    waiters: Vec<(u32, Waker)>,
    /// Every sender is gone: the group's watcher left the index.
    closed: bool,
    /// Its members' units were given back ([`Ring::release_all`]: its watcher is leaving
    /// the index, and a dispatcher may still hold a sender): no one joins it any more.
    released: bool,
    /// The group's watcher was cancelled (a lag): each member reads this sentinel after
    /// every event pushed before it, and its stream ends; no one joins any more (a member
    /// joining at the head would get neither events nor the sentinel). Not an entry of
    /// `events`: pushed there it could push out an event a member still had room for.
    cancelled: Option<Box<WatchEvent>>,
    /// A lower bound on the cursors of live members still holding their units (`u64::MAX`
    /// with none): while `base` is at most this, nobody the sweep would release is lagged.
    held_low: u64,
    /// The slot the sweep's next scan starts at.
    scan_at: usize,
    /// The lowest cursor of a member holding its units that this round of scans has seen
    /// (or that joined during it): `held_low` once the round reaches the last slot.
    scan_low: u64,
    /// Live members that may still read (not `ENDED`).
    readers: usize,
    /// Readers whose cursor is at the head (a Progress one asked for may still wait: it is
    /// kept in `progress`, not in `events`). When it equals `readers`, no one needs the
    /// events held, and the next push drops them: a group whose members keep up holds one
    /// event at a time, as a compact queue does, not its whole buffer.
    caught_up: usize,
    /// Progress requested for one member, by slot, in the order asked: a member reads each
    /// once its cursor reaches the head of the ring at the time of the request.
    progress: hashbrown::HashMap<u32, PendingProgress, ahash::RandomState>,
}

/// The Progress one member asked for and has not read yet (see [`Ring::request_progress`]):
/// (the head when it was asked, the revision), oldest first, at most the ring's capacity
/// (at least one) of them. The member reads every event before that head first.
type PendingProgress = smallvec::SmallVec<[(u64, u64); 1]>;

impl RingState {
    fn head(&self) -> u64 {
        self.base + self.events.len() as u64
    }

    /// Whether a member may still join: neither closed, released nor cancelled.
    fn takes_members(&self) -> bool {
        !self.closed && !self.released && self.cancelled.is_none()
    }

    /// Takes the wakers of every waiting member, to be woken once the lock is let go. The
    /// list keeps its capacity for the next waits, and a few wakers need no allocation.
    fn take_waiters(&mut self) -> Woken {
        let waiters: Woken = self.waiters.drain(..).collect();
        for (slot, _) in &waiters {
            if let Some(member) = self.members.get_mut(*slot as usize) {
                member.state &= !Member::WAITING;
            }
        }
        waiters
    }
}

/// What a slot holds once its only reader took the event out: never read (see
/// [`GroupReceiver::try_recv`]'s reads), and it allocates nothing.
fn taken_slot() -> WatchEvent {
    WatchEvent::cancel_sentinel(Bytes::new())
}

/// The revision of the Progress the member at `slot` reads now, its cursor being `cursor`,
/// if one is due there (taken off the list). Free while nobody asked.
fn take_progress(
    progress: &mut hashbrown::HashMap<u32, PendingProgress, ahash::RandomState>,
    slot: u32,
    cursor: u64,
) -> Option<u64> {
    if progress.is_empty() {
        return None;
    }
    let asked = progress.get_mut(&slot)?;
    let (at, revision) = *asked.first()?;
    if at != cursor {
        return None;
    }
    asked.remove(0);
    if asked.is_empty() {
        progress.remove(&slot);
    }
    Some(revision)
}

/// The Progress a member asked for: what the dispatcher would send a lone watcher of the
/// same spec (empty key and value; an empty previous value with prev_kv).
fn progress_event(revision: u64, prev_kv: bool) -> WatchEvent {
    WatchEvent {
        event_type: WatchEventType::Progress,
        key: Bytes::new(),
        value: Bytes::new(),
        prev_value: prev_kv.then(Bytes::new),
        revision,
    }
}

/// Takes the waker of the member at `slot` out of `waiters` if it is waiting: O(1), the
/// entry moved into its place is told its new position.
fn unwait(members: &mut [Member], waiters: &mut Vec<(u32, Waker)>, slot: u32) -> Option<Waker> {
    let member = members.get_mut(slot as usize)?;
    if !member.has(Member::WAITING) {
        return None;
    }
    member.state &= !Member::WAITING;
    let at = member.waiting_at as usize;
    let (_, waker) = waiters.swap_remove(at);
    if let Some((moved, _)) = waiters.get(at) {
        if let Some(moved) = members.get_mut(*moved as usize) {
            moved.waiting_at = at as u32;
        }
    }
    Some(waker)
}

/// Wakers taken from a ring, woken outside its lock.
type Woken = smallvec::SmallVec<[(u32, Waker); 4]>;

/// A group's ring, shared by its senders (the index's copies of the group's watcher) and
/// its members' receivers.
pub(crate) struct Ring {
    state: Mutex<RingState>,
    /// Events kept: the registry's buffer size (a member that far behind still gets all).
    capacity: usize,
    /// What the group watches, as stored.
    pub(crate) key: GroupKey,
    /// The id of the group's watcher in the index.
    pub(crate) watcher_id: u64,
    /// The registry, for releases and the last member's unregistration.
    registry: Weak<Shared>,
    /// Live senders.
    senders: AtomicU32,
    /// The head (the sequence number of the next event pushed), stored under the lock
    /// after each push: a member reading a batch it took sees from it whether it lagged,
    /// without the lock.
    head_seen: AtomicU64,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("key", &self.key)
            .field("watcher_id", &self.watcher_id)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A ring keeping `capacity` events and its one sender (with 0 it keeps none: every
    /// member not at the head is lagged, as a buffer of 0 overflows a lone watcher at once).
    pub(crate) fn new(
        key: GroupKey,
        watcher_id: u64,
        capacity: usize,
        registry: Weak<Shared>,
    ) -> (Arc<Ring>, GroupSender) {
        let ring = Arc::new(Ring {
            state: Mutex::new(RingState {
                events: VecDeque::new(),
                base: 0,
                last_revision: 0,
                members: Vec::new(),
                free: Vec::new(),
                live: 0,
                waiters: Vec::new(),
                closed: false,
                released: false,
                cancelled: None,
                held_low: u64::MAX,
                scan_at: 0,
                scan_low: u64::MAX,
                readers: 0,
                caught_up: 0,
                progress: Default::default(),
            }),
            capacity,
            key,
            watcher_id,
            registry,
            senders: AtomicU32::new(1),
            head_seen: AtomicU64::new(0),
        });
        let sender = GroupSender {
            ring: Arc::clone(&ring),
        };
        (ring, sender)
    }

    fn lock(&self) -> MutexGuard<'_, RingState> {
        // Every operation under the lock leaves the state consistent: carry on after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a member (its units already reserved) at the head; returns its slot. Refused
    /// (`None`) once the ring takes no member (closed, released or cancelled: its watcher
    /// left or is leaving the index, so it would get nothing).
    pub(crate) fn join(&self, id: u64, owned: bool) -> Option<u32> {
        let mut state = self.lock();
        if !state.takes_members() {
            return None;
        }
        let member = Member {
            id,
            cursor: state.head(),
            waiting_at: 0,
            last_revision: state.last_revision,
            state: Member::LIVE | Member::HELD | if owned { Member::OWNED } else { 0 },
        };
        state.live += 1;
        state.readers += 1;
        state.caught_up += 1;
        // Both bounds must cover it, wherever its slot is against the scan.
        state.held_low = state.held_low.min(member.cursor);
        state.scan_low = state.scan_low.min(member.cursor);
        let slot = match state.free.pop() {
            Some(slot) => {
                state.members[slot as usize] = member;
                slot
            }
            None => {
                state.members.push(member);
                (state.members.len() - 1) as u32
            }
        };
        Some(slot)
    }

    /// Events the ring holds now.
    #[cfg(all(test, not(watchtrie_loom)))]
    fn held(&self) -> usize {
        self.lock().events.len()
    }

    /// Members in the group.
    pub(crate) fn members(&self) -> usize {
        self.lock().live
    }

    /// Takes a member out; returns its release (if it still held its units) and whether it
    /// was the last.
    fn leave(&self, slot: u32) -> (Option<MemberRelease>, bool) {
        let mut state = self.lock();
        let head = state.head();
        let Some(member) = state.members.get_mut(slot as usize) else {
            return (None, false);
        };
        if !member.has(Member::LIVE) {
            return (None, false);
        }
        let release = member.release();
        let reader = !member.has(Member::ENDED);
        let caught_up = reader && member.cursor == head;
        let RingState {
            members, waiters, ..
        } = &mut *state;
        drop(unwait(members, waiters, slot));
        members[slot as usize].state = 0;
        state.free.push(slot);
        state.live -= 1;
        state.readers -= usize::from(reader);
        state.caught_up -= usize::from(caught_up);
        // The slot may be reused: its requests go with it.
        state.progress.remove(&slot);
        (release, state.live == 0)
    }

    /// Queues a Progress carrying `revision` for the member `id` at `slot`, after every event
    /// pushed so far, and wakes it if it waits (not with a buffer's worth already waiting:
    /// `Some(false)`). `None` if no such member can read any more
    /// (gone, its lag sentinel read, the group's watcher cancelled or gone from the index:
    /// a Progress after the cancel would claim events the member never got);
    /// `Some(false)` if the group's filter drops Progress or it was not queued.
    pub(crate) fn request_progress(&self, slot: u32, id: u64, revision: u64) -> Option<bool> {
        let waker = {
            let mut state = self.lock();
            let head = state.head();
            let RingState {
                members,
                waiters,
                progress,
                closed,
                cancelled,
                ..
            } = &mut *state;
            let member = members.get_mut(slot as usize)?;
            if *closed
                || cancelled.is_some()
                || !member.has(Member::LIVE)
                || member.has(Member::ENDED)
                || member.id != id
            {
                return None;
            }
            if self.key.flags.contains(Flags::NO_PROGRESS) {
                return Some(false);
            }
            // At most a buffer's worth wait: a lone watcher asked more often than it reads
            // overflows, and a member must not grow a list without bound instead. Past
            // that a request is not queued (the member has older ones to read first);
            // folding it into the last would change what the member reads there, and
            // moving that one past later events would reorder it.
            let asked = progress.entry(slot).or_default();
            if asked.len() >= self.capacity.max(1) {
                return Some(false);
            }
            asked.push((head, revision));
            unwait(members, waiters, slot)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Some(true)
    }

    /// Releases the members more than the buffer behind that still hold their units, among
    /// the next [`LAG_SCAN_STEP`] slots of the closed-receiver sweep's round (see the module
    /// docs); nothing is scanned while `held_low` says nobody can be lagged.
    pub(crate) fn release_lagged(&self) -> Vec<MemberRelease> {
        let mut state = self.lock();
        let base = state.base;
        if base <= state.held_low {
            return Vec::new();
        }
        let start = state.scan_at.min(state.members.len());
        let end = (start + LAG_SCAN_STEP).min(state.members.len());
        let mut low = state.scan_low;
        let mut released = Vec::new();
        for member in &mut state.members[start..end] {
            if !member.has(Member::LIVE) || !member.has(Member::HELD) {
                continue;
            }
            if member.cursor < base {
                released.extend(member.release());
            } else {
                low = low.min(member.cursor);
            }
        }
        if end == state.members.len() {
            // A round is over: every member holding units was seen (or joined, lowering
            // `scan_low`), and cursors only move forward.
            state.held_low = low;
            state.scan_at = 0;
            state.scan_low = u64::MAX;
        } else {
            state.scan_at = end;
            state.scan_low = low;
        }
        released
    }

    /// Releases every member that still holds its units (the group's watcher is leaving).
    pub(crate) fn release_all(&self) -> Vec<MemberRelease> {
        let mut state = self.lock();
        state.released = true;
        state
            .members
            .iter_mut()
            .filter(|m| m.has(Member::LIVE))
            .filter_map(Member::release)
            .collect()
    }

    /// Whether the ring is closed: its watcher left both snapshots.
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether a member may still join: neither closed, released nor cancelled (its
    /// watcher leaving).
    pub(crate) fn takes_members(&self) -> bool {
        self.lock().takes_members()
    }

    fn close(&self) {
        let waiters = {
            let mut state = self.lock();
            state.closed = true;
            state.take_waiters()
        };
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// The ids of the members that still hold units and are counted against an owner.
    pub(crate) fn held_owned_members(&self) -> Vec<u64> {
        let state = self.lock();
        state
            .members
            .iter()
            .filter(|m| m.has(Member::HELD) && m.has(Member::OWNED))
            .map(|m| m.id)
            .collect()
    }

    /// Checks the invariants of [`RingState`]; panics with a description otherwise.
    pub(crate) fn check_invariants(&self) {
        let state = self.lock();
        assert!(state.events.len() <= self.capacity, "ring over capacity");
        let head = state.head();
        let live = state.members.iter().filter(|m| m.has(Member::LIVE)).count();
        assert_eq!(live, state.live, "live member count");
        assert_eq!(
            live + state.free.len(),
            state.members.len(),
            "every slot is live or free"
        );
        assert!(state.scan_at <= state.members.len(), "scan past the slab");
        let reading = |m: &&Member| m.has(Member::LIVE) && !m.has(Member::ENDED);
        assert_eq!(
            state.members.iter().filter(reading).count(),
            state.readers,
            "reader count"
        );
        assert_eq!(
            state
                .members
                .iter()
                .filter(reading)
                .filter(|m| m.cursor == head)
                .count(),
            state.caught_up,
            "caught-up count"
        );
        for (at, (slot, _)) in state.waiters.iter().enumerate() {
            assert!(
                state
                    .members
                    .get(*slot as usize)
                    .is_some_and(|m| m.has(Member::WAITING) && m.waiting_at as usize == at),
                "a waker whose member does not know its place"
            );
        }
        for (slot, asked) in &state.progress {
            let member = state.members.get(*slot as usize);
            assert!(!asked.is_empty(), "an empty list of requested Progress");
            assert!(
                asked.windows(2).all(|w| w[0].0 <= w[1].0),
                "requested Progress out of order"
            );
            assert!(
                asked.len() <= self.capacity.max(1),
                "more requested Progress waiting than the buffer holds"
            );
            for (at, _) in asked {
                assert!(
                    member.is_some_and(|m| reading(&m) && m.cursor <= *at && *at <= head),
                    "a requested Progress for a member that cannot read it"
                );
            }
        }
        for (slot, member) in state.members.iter().enumerate() {
            if member.has(Member::LIVE) {
                assert!(member.cursor <= head, "a cursor past the head");
            }
            if member.has(Member::LIVE) && member.has(Member::HELD) {
                assert!(
                    member.cursor >= state.held_low,
                    "a held cursor below held_low"
                );
                if slot < state.scan_at {
                    assert!(
                        member.cursor >= state.scan_low,
                        "a scanned cursor below scan_low"
                    );
                }
            }
            if member.has(Member::WAITING) {
                assert!(
                    state
                        .waiters
                        .get(member.waiting_at as usize)
                        .is_some_and(|(s, _)| *s as usize == slot),
                    "a waiting member without its waker at its place"
                );
            }
        }
    }
}

/// The index's end of a group: pushes events into its ring.
pub(crate) struct GroupSender {
    ring: Arc<Ring>,
}

impl GroupSender {
    /// Pushes `event` for every member, dropping the oldest past the capacity; wakes the
    /// members waiting. Never refuses: lag is the members' to see.
    pub(crate) fn push(&self, event: WatchEvent) {
        let waiters = {
            let mut state = self.ring.lock();
            if matches!(
                event.event_type,
                WatchEventType::Put | WatchEventType::Delete | WatchEventType::Progress
            ) {
                state.last_revision = state.last_revision.max(event.revision);
            }
            if state.caught_up == state.readers {
                // Nobody will read what is held: every reader is at the head, and a member
                // that joins starts there. Moving `base` up lags no one.
                state.base = state.head();
                state.events.clear();
            }
            // The head moves past everyone who was at it.
            state.caught_up = 0;
            state.events.push_back(event);
            // Release: a member that reads a newer head also sees the lock's writes before it
            // (it takes the lock anyway before reading anything the push stored).
            self.ring.head_seen.store(state.head(), Ordering::Release);
            if state.events.len() > self.ring.capacity {
                state.events.pop_front();
                state.base += 1;
            }
            if state.waiters.is_empty() {
                return;
            }
            state.take_waiters()
        };
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// Cancels the group's watcher: every member reads `sentinel` after what it has not
    /// read yet (the first cancel's, if cancelled twice), then its stream ends.
    pub(crate) fn cancel(&self, sentinel: WatchEvent) {
        let waiters = {
            let mut state = self.ring.lock();
            if state.cancelled.is_none() {
                state.cancelled = Some(Box::new(sentinel));
            }
            state.take_waiters()
        };
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// True once no member is left (the last one's unregistration is on its way).
    pub(crate) fn is_closed(&self) -> bool {
        self.ring.members() == 0
    }

    /// The group's ring.
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }
}

impl Clone for GroupSender {
    fn clone(&self) -> Self {
        // Relaxed: made from a live sender, so the count cannot reach zero meanwhile.
        self.ring.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            ring: Arc::clone(&self.ring),
        }
    }
}

impl Drop for GroupSender {
    fn drop(&mut self) {
        // AcqRel: the last sender's decrement follows every other sender's pushes; the
        // close below takes the lock, which orders it with the members' reads.
        if self.ring.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ring.close();
        }
    }
}

/// The receiving end of one member of a shared fan-out group (see
/// [`WatchSpec::grouped`](crate::WatchSpec::grouped)). Receives what a compact watcher of
/// the same spec would, until it falls more than its buffer behind: then one Canceled event
/// ([`CancelReason::BufferOverflowAt`](crate::CancelReason::BufferOverflowAt), the revision
/// to resume from), then `None`. Dropping it leaves the group.
pub struct GroupReceiver {
    ring: Arc<Ring>,
    slot: u32,
    /// Events taken from the ring under one lock and not read yet: a member that finds
    /// several waiting takes up to [`BATCH_MAX`] at once and reads them without the lock,
    /// which readers on other cores would otherwise take in turn for every event.
    batch: Option<Box<Batch>>,
}

// A member's handle stays at 24 bytes: the 64-byte-per-watcher budget counts it.
#[cfg(not(watchtrie_loom))]
const _: () = assert!(std::mem::size_of::<GroupReceiver>() == 24);

/// The most events a member takes from its ring under one lock.
const BATCH_MAX: usize = 16;

/// What a member took from its ring and has not read yet (never empty).
struct Batch {
    events: VecDeque<WatchEvent>,
    /// The sequence number of the first of `events`.
    next: u64,
    /// The revision of the last Put, Delete or Progress the member read (its slab entry
    /// holds the last it took): where a lag sentinel resumes from, plus one.
    last_read: u64,
}

/// Takes the event at `member`'s cursor (moved out if it is the only reader, else cloned)
/// and moves the cursor past it.
fn take_one(
    events: &mut VecDeque<WatchEvent>,
    base: u64,
    member: &mut Member,
    lone: bool,
) -> WatchEvent {
    let held = &mut events[(member.cursor - base) as usize];
    // The only reader left takes the event itself: no reference counts to touch, and
    // nobody else will read that slot (a member joins at the head).
    let event = if lone {
        std::mem::replace(held, taken_slot())
    } else {
        held.clone()
    };
    member.cursor += 1;
    if stamps_revision(event.event_type) {
        member.last_revision = event.revision;
    }
    event
}

/// The event types a resume point follows.
fn stamps_revision(event_type: WatchEventType) -> bool {
    matches!(
        event_type,
        WatchEventType::Put | WatchEventType::Delete | WatchEventType::Progress
    )
}

impl GroupReceiver {
    pub(crate) fn new(ring: Arc<Ring>, slot: u32) -> Self {
        Self {
            ring,
            slot,
            batch: None,
        }
    }

    /// The member's id (one sequence with every other watcher's).
    pub fn id(&self) -> u64 {
        // Kept in its slab entry, not here: a member is then 24 bytes.
        let state = self.ring.lock();
        state.members.get(self.slot as usize).map_or(0, |m| m.id)
    }

    /// The next event, waiting for one if none is there; `None` once the group's watcher
    /// left the index (after what was still in the ring for it), or after its lag sentinel
    /// or the group's cancel sentinel.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is there.
    pub fn try_recv(&mut self) -> Result<WatchEvent, TryRecvError> {
        let (outcome, release) = self.take();
        self.give_back(release);
        outcome
    }

    /// Polls for the next event (the building block of [`Self::recv`] and `Stream`).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        let (outcome, release) = self.take_or_wait(Some(cx.waker()));
        self.give_back(release);
        match outcome {
            Ok(event) => Poll::Ready(Some(event)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }

    fn take(&mut self) -> (Result<WatchEvent, TryRecvError>, Option<MemberRelease>) {
        self.take_or_wait(None)
    }

    /// The member lagged while reading a batch: its sentinel, resuming after `last_read`,
    /// and its end, as the ring's own lag test gives them.
    fn end_lagged(
        &mut self,
        last_read: u64,
    ) -> (Result<WatchEvent, TryRecvError>, Option<MemberRelease>) {
        let mut state = self.ring.lock();
        let head = state.head();
        let RingState {
            members,
            readers,
            caught_up,
            progress,
            ..
        } = &mut *state;
        let Some(member) = members.get_mut(self.slot as usize) else {
            return (Err(TryRecvError::Disconnected), None);
        };
        if member.has(Member::ENDED) {
            return (Err(TryRecvError::Disconnected), None);
        }
        member.state |= Member::ENDED;
        *readers -= 1;
        *caught_up -= usize::from(member.cursor == head);
        progress.remove(&self.slot);
        let sentinel = WatchEvent::overflow_sentinel_at(
            self.ring.key.sentinel_key(),
            last_read.saturating_add(1),
        );
        (Ok(sentinel), member.release())
    }

    /// One read: from the batch taken if there is one, else under the ring's lock; with
    /// `waker`, registers it if nothing is there.
    fn take_or_wait(
        &mut self,
        waker: Option<&Waker>,
    ) -> (Result<WatchEvent, TryRecvError>, Option<MemberRelease>) {
        if let Some(batch) = self.batch.as_deref_mut() {
            // Acquire: pairs with the push's Release. The same test as the ring's below
            // (`cursor < base`), for the event it would read now: the ring would have
            // dropped it.
            let head = self.ring.head_seen.load(Ordering::Acquire);
            if batch.next < head.saturating_sub(self.ring.capacity as u64) {
                let last_read = batch.last_read;
                self.batch = None;
                return self.end_lagged(last_read);
            }
            // A batch is dropped as soon as it is empty, so one that is there holds one.
            let event = batch
                .events
                .pop_front()
                .expect("a batch is dropped once empty");
            batch.next += 1;
            if stamps_revision(event.event_type) {
                batch.last_read = event.revision;
            }
            if batch.events.is_empty() {
                self.batch = None;
            }
            return (Ok(event), None);
        }
        let mut state = self.ring.lock();
        let base = state.base;
        let head = state.head();
        let closed = state.closed;
        let slot = self.slot;
        let RingState {
            events,
            members,
            waiters,
            readers,
            caught_up,
            progress,
            cancelled,
            ..
        } = &mut *state;
        let Some(member) = members.get_mut(slot as usize) else {
            return (Err(TryRecvError::Disconnected), None);
        };
        if member.has(Member::ENDED) {
            return (Err(TryRecvError::Disconnected), None);
        }
        if member.cursor < base {
            member.state |= Member::ENDED;
            *readers -= 1;
            progress.remove(&slot);
            let sentinel = WatchEvent::overflow_sentinel_at(
                self.ring.key.sentinel_key(),
                member.last_revision.saturating_add(1),
            );
            return (Ok(sentinel), member.release());
        }
        // No batch crosses a requested Progress: the member reads it where it was asked.
        let limit = progress
            .get(&slot)
            .and_then(|asked| asked.first())
            .map_or(head, |(at, _)| (*at).min(head));
        if let Some(revision) = take_progress(progress, slot, member.cursor) {
            member.last_revision = revision;
            let prev_kv = self.ring.key.flags.contains(Flags::PREV_KV);
            return (Ok(progress_event(revision, prev_kv)), None);
        }
        if member.cursor < limit {
            let lone = *readers == 1;
            let first = take_one(events, base, member, lone);
            let more = ((limit - member.cursor) as usize).min(BATCH_MAX - 1);
            if more > 0 {
                let mut batch = Box::new(Batch {
                    events: VecDeque::with_capacity(more),
                    next: member.cursor,
                    last_read: member.last_revision,
                });
                for _ in 0..more {
                    batch.events.push_back(take_one(events, base, member, lone));
                }
                self.batch = Some(batch);
            }
            *caught_up += usize::from(member.cursor == head);
            return (Ok(first), None);
        }
        if let Some(sentinel) = cancelled.as_deref() {
            member.state |= Member::ENDED;
            *readers -= 1;
            *caught_up -= usize::from(member.cursor == head);
            progress.remove(&slot);
            return (Ok(sentinel.clone()), member.release());
        }
        if closed {
            return (Err(TryRecvError::Disconnected), None);
        }
        if let Some(waker) = waker {
            if member.has(Member::WAITING) {
                if let Some(entry) = waiters.get_mut(member.waiting_at as usize) {
                    if !entry.1.will_wake(waker) {
                        entry.1 = waker.clone();
                    }
                }
            } else {
                member.state |= Member::WAITING;
                member.waiting_at = waiters.len() as u32;
                waiters.push((slot, waker.clone()));
            }
        }
        (Err(TryRecvError::Empty), None)
    }

    fn give_back(&self, release: Option<MemberRelease>) {
        // Upgrade only with something to give back: every member's read would otherwise
        // touch the registry's reference count, one cache line for all readers.
        let Some(release) = release else {
            return;
        };
        if let Some(shared) = self.ring.registry.upgrade() {
            shared.release_member(release, self.ring.key.flags.contains(Flags::PREV_KV));
        }
    }

    /// Events waiting for this member: those in the ring it has not read yet (at most the
    /// buffer size), the Progress requested for it, and the group's cancel sentinel; a
    /// lagged member has none left (its next read is its lag sentinel, not counted).
    pub fn len(&self) -> usize {
        let state = self.ring.lock();
        let head = state.head();
        let taken = match self.batch.as_deref() {
            // Its next read is its lag sentinel.
            Some(b) if b.next < head.saturating_sub(self.ring.capacity as u64) => return 0,
            Some(b) => b.events.len(),
            None => 0,
        };
        match state.members.get(self.slot as usize) {
            Some(m) if !m.has(Member::ENDED) && m.cursor >= state.base => {
                let asked = state.progress.get(&self.slot).map_or(0, |a| a.len());
                let sentinel = usize::from(state.cancelled.is_some());
                taken + (head - m.cursor) as usize + asked + sentinel
            }
            _ => 0,
        }
    }

    /// True when nothing is waiting for this member ([`Self::len`] is 0: a lagged member's
    /// next read may still be its lag sentinel).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once no more events can come to it (the group's watcher left the index, or it
    /// got its lag sentinel); some may still be there to read.
    pub fn is_closed(&self) -> bool {
        let state = self.ring.lock();
        state.closed
            || state
                .members
                .get(self.slot as usize)
                .is_none_or(|m| m.has(Member::ENDED))
    }

    /// What to give [`InlineDispatcher::request_progress`](crate::InlineDispatcher::request_progress)
    /// or a [`ProgressRequester`](crate::ProgressRequester) for a Progress to this member
    /// alone, read after every event its group received before the request.
    pub fn progress_request(&self) -> ProgressRequest {
        ProgressRequest::Member(MemberProgress {
            ring: Arc::clone(&self.ring),
            slot: self.slot,
            id: self.id(),
        })
    }

    /// Its group's ring.
    #[cfg(test)]
    pub(crate) fn ring_for_test(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Members of its group, itself included.
    pub fn group_size(&self) -> usize {
        self.ring.members()
    }

    /// What it watches.
    pub fn target(&self) -> Target {
        Target::from_stored(self.ring.key.kind, &self.ring.key.pattern)
    }
}

impl Drop for GroupReceiver {
    fn drop(&mut self) {
        let Some(shared) = self.ring.registry.upgrade() else {
            // The registry is gone, and every unit with it.
            self.ring.leave(self.slot);
            return;
        };
        let last = shared.leave_group(&self.ring, || self.ring.leave(self.slot));
        if let Some(removal) = last {
            shared.unregister(removal);
        }
    }
}

impl futures_core::Stream for GroupReceiver {
    type Item = WatchEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.get_mut().poll_recv(cx)
    }
}

impl fmt::Debug for GroupReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupReceiver")
            .field("id", &self.id())
            .field("group", &self.ring.watcher_id)
            .field("queued", &self.len())
            .finish_non_exhaustive()
    }
}

/// One member of a shared fan-out group, as [`WatchRegistry::watch`](crate::WatchRegistry::watch)
/// returns it for a [`WatchSpec::grouped`](crate::WatchSpec::grouped) spec. Dropping it (or
/// its receiver, after [`Self::into_receiver`]) leaves the group; the last member leaving
/// unregisters the group's watcher.
pub struct GroupedWatcherHandle {
    receiver: GroupReceiver,
}

impl GroupedWatcherHandle {
    pub(crate) fn new(receiver: GroupReceiver) -> Self {
        Self { receiver }
    }

    /// The member's id.
    pub fn id(&self) -> u64 {
        self.receiver.id()
    }

    /// The watched key, or the stored target (see [`WatcherHandle::key`](crate::WatcherHandle::key)).
    pub fn key(&self) -> &Bytes {
        &self.receiver.ring.key.pattern
    }

    /// True for a watcher of a slash prefix.
    pub fn is_prefix(&self) -> bool {
        self.receiver.ring.key.kind == TargetKind::Prefix
    }

    /// What the watcher watches.
    pub fn target(&self) -> Target {
        self.receiver.target()
    }

    /// A Progress to this member alone (see [`GroupReceiver::progress_request`]).
    pub fn progress_request(&self) -> ProgressRequest {
        self.receiver.progress_request()
    }

    /// The receiver of this member's events.
    pub fn receiver_mut(&mut self) -> &mut GroupReceiver {
        &mut self.receiver
    }

    /// Gives up the handle for `(id, key, receiver)`; the member stays in its group until
    /// the receiver is dropped.
    pub fn into_receiver(self) -> (u64, Bytes, GroupReceiver) {
        let key = self.receiver.ring.key.pattern.clone();
        (self.receiver.id(), key, self.receiver)
    }
}

impl fmt::Debug for GroupedWatcherHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupedWatcherHandle")
            .field("id", &self.id())
            .field("key", self.key())
            .field("group", &self.receiver.ring.watcher_id)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(watchtrie_loom)))]
mod tests {
    use super::*;

    fn put(revision: u64) -> WatchEvent {
        WatchEvent {
            event_type: WatchEventType::Put,
            key: Bytes::from_static(b"/k"),
            value: Bytes::new(),
            prev_value: None,
            revision,
        }
    }

    fn ring(capacity: usize) -> (Arc<Ring>, GroupSender) {
        let key = GroupKey {
            kind: TargetKind::Exact,
            pattern: Bytes::from_static(b"/k"),
            flags: Flags::default(),
        };
        Ring::new(key, 1, capacity, Weak::new())
    }

    fn member(ring: &Arc<Ring>, id: u64) -> GroupReceiver {
        let slot = ring.join(id, false).expect("open ring");
        GroupReceiver::new(Arc::clone(ring), slot)
    }

    fn drain(receiver: &mut GroupReceiver) -> Vec<u64> {
        std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|e| e.revision)
            .collect()
    }

    #[test]
    fn every_member_reads_every_event_pushed_after_it_joined() {
        let (ring, sender) = ring(8);
        let mut early = member(&ring, 10);
        sender.push(put(1));
        let mut late = member(&ring, 11);
        sender.push(put(2));
        ring.check_invariants();
        assert_eq!(drain(&mut early), vec![1, 2]);
        assert_eq!(drain(&mut late), vec![2]);
        assert_eq!(late.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    #[test]
    fn a_cancel_pushes_out_nothing_a_member_had_room_for_and_ends_every_stream() {
        let (ring, sender) = ring(2);
        let mut behind = member(&ring, 10);
        let mut caught_up = member(&ring, 11);
        sender.push(put(1));
        sender.push(put(2));
        assert_eq!(drain(&mut caught_up), vec![1, 2]);
        sender.cancel(WatchEvent::lag_sentinel(3));
        ring.check_invariants();
        assert!(!ring.takes_members());
        for (receiver, events) in [(&mut behind, vec![1, 2]), (&mut caught_up, vec![])] {
            assert_eq!(receiver.len(), events.len() + 1);
            let got: Vec<_> = std::iter::from_fn(|| receiver.try_recv().ok()).collect();
            let (last, read) = got.split_last().expect("the sentinel at least");
            assert_eq!(read.iter().map(|e| e.revision).collect::<Vec<_>>(), events);
            assert_eq!(
                last.cancel_reason(),
                Some(crate::CancelReason::Lagged { resume_from: 3 })
            );
            assert_eq!(receiver.try_recv().unwrap_err(), TryRecvError::Disconnected);
        }
        ring.check_invariants();
    }

    #[test]
    fn a_group_whose_members_keep_up_holds_one_event_not_its_buffer() {
        let (ring, sender) = ring(1_000);
        let mut a = member(&ring, 10);
        let mut b = member(&ring, 11);
        for revision in 1..=100 {
            sender.push(put(revision));
            assert_eq!(ring.held(), 1, "what both read before is dropped");
            assert_eq!(drain(&mut a), vec![revision]);
            assert_eq!(drain(&mut b), vec![revision]);
            ring.check_invariants();
        }
        // One member behind keeps what it has not read, and the other still reads on.
        sender.push(put(101));
        assert_eq!(drain(&mut a), vec![101]);
        sender.push(put(102));
        assert_eq!(ring.held(), 2, "b has read neither");
        assert_eq!(drain(&mut a), vec![102]);
        assert_eq!(drain(&mut b), vec![101, 102]);
        // A member joining after the drop starts at the head: it never reads a dropped slot.
        sender.push(put(103));
        let mut late = member(&ring, 12);
        sender.push(put(104));
        ring.check_invariants();
        assert_eq!(drain(&mut late), vec![104]);
        assert_eq!(drain(&mut a), vec![103, 104]);
        assert_eq!(drain(&mut b), vec![103, 104]);
    }

    #[test]
    fn a_batch_taken_under_one_lock_lags_exactly_where_the_ring_would() {
        for (more, lags) in [(1, false), (2, false), (3, true)] {
            let (ring, sender) = ring(4);
            let mut m = member(&ring, 10);
            let _other = member(&ring, 11); // two readers: events are cloned, not moved
            for revision in 1..=3 {
                sender.push(put(revision));
            }
            assert_eq!(m.try_recv().unwrap().revision, 1, "and 2, 3 taken with it");
            assert_eq!(m.len(), 2);
            for revision in 4..4 + more {
                sender.push(put(revision));
            }
            ring.check_invariants();
            let got: Vec<_> = std::iter::from_fn(|| m.try_recv().ok()).collect();
            if lags {
                // Six events pushed, four kept: event 2 is gone.
                assert_eq!(got.len(), 1, "{got:?}");
                assert_eq!(
                    got[0].cancel_reason(),
                    Some(crate::event::CancelReason::BufferOverflowAt { resume_from: 2 })
                );
                assert_eq!(m.try_recv().unwrap_err(), TryRecvError::Disconnected);
            } else {
                let revisions: Vec<_> = got.iter().map(|e| e.revision).collect();
                assert_eq!(revisions, (2..4 + more).collect::<Vec<_>>());
            }
            ring.check_invariants();
        }
    }

    #[test]
    fn a_lone_reader_takes_its_events_and_lags_exactly_as_before() {
        let (ring, sender) = ring(2);
        let mut lone = member(&ring, 10);
        for revision in 1..=2 {
            sender.push(put(revision));
        }
        assert_eq!(drain(&mut lone), vec![1, 2]);
        // A second member joins after the lone reader took events out: it reads from the
        // head on, the moved-out slots are behind it.
        let mut second = member(&ring, 11);
        sender.push(put(3));
        assert_eq!(drain(&mut second), vec![3]);
        assert_eq!(drain(&mut lone), vec![3]);
        drop(second);
        for revision in 4..=6 {
            sender.push(put(revision));
        }
        ring.check_invariants();
        let sentinel = lone.try_recv().unwrap();
        assert_eq!(
            sentinel.cancel_reason(),
            Some(crate::event::CancelReason::BufferOverflowAt { resume_from: 4 })
        );
        ring.check_invariants();
    }

    #[test]
    fn a_member_more_than_its_buffer_behind_gets_one_sentinel_resuming_after_its_last_read() {
        let (ring, sender) = ring(3);
        let mut slow = member(&ring, 10);
        let mut fast = member(&ring, 11);
        sender.push(put(5));
        assert_eq!(drain(&mut slow), vec![5]);
        assert_eq!(drain(&mut fast), vec![5]);
        for revision in [6, 7, 8] {
            sender.push(put(revision));
            assert_eq!(drain(&mut fast), vec![revision]);
        }
        assert_eq!(slow.len(), 3, "exactly its buffer behind: nothing lost yet");
        sender.push(put(9));
        assert_eq!(drain(&mut fast), vec![9], "a member keeping up never lags");
        ring.check_invariants();
        let sentinel = slow.try_recv().unwrap();
        assert_eq!(sentinel.event_type, WatchEventType::Canceled);
        assert_eq!(
            sentinel.cancel_reason(),
            Some(crate::event::CancelReason::BufferOverflowAt { resume_from: 6 })
        );
        assert_eq!(slow.try_recv().unwrap_err(), TryRecvError::Disconnected);
        assert!(slow.is_closed());
    }

    #[test]
    fn a_member_that_read_nothing_resumes_after_the_ring_as_it_joined() {
        let (ring, sender) = ring(1);
        sender.push(put(4));
        let mut idle = member(&ring, 10);
        sender.push(put(7));
        sender.push(put(8));
        assert_eq!(
            idle.try_recv().unwrap().cancel_reason(),
            Some(crate::event::CancelReason::BufferOverflowAt { resume_from: 5 })
        );
    }

    #[test]
    fn the_stream_ends_when_the_last_sender_goes_after_what_is_left() {
        let (ring, sender) = ring(4);
        let twin = sender.clone();
        let mut m = member(&ring, 10);
        sender.push(put(1));
        drop(sender);
        assert!(!m.is_closed());
        drop(twin);
        assert!(m.is_closed());
        assert_eq!(drain(&mut m), vec![1]);
        assert_eq!(m.try_recv().unwrap_err(), TryRecvError::Disconnected);
        assert!(
            ring.join(11, false).is_none(),
            "a closed ring takes no member"
        );
    }

    #[test]
    fn each_member_is_released_once_whoever_comes_first() {
        let (ring, sender) = ring(1);
        let mut lagged = member(&ring, 10);
        let other = member(&ring, 11);
        sender.push(put(1));
        sender.push(put(2));
        let first = ring.release_lagged();
        assert_eq!(first.len(), 2, "both more than one event behind");
        assert!(ring.release_lagged().is_empty(), "released once");
        assert!(ring.release_all().is_empty());
        let (_, release) = lagged.take();
        assert!(
            release.is_none(),
            "reading the sentinel releases nothing twice"
        );
        assert_eq!(ring.leave(other.slot), (None, false));
        assert_eq!(ring.leave(lagged.slot), (None, true), "the last one out");
        ring.check_invariants();
    }

    #[test]
    fn a_sweep_visit_scans_at_most_one_step_and_the_round_finds_every_lagged_member() {
        let (ring, sender) = ring(1);
        let members: Vec<_> = (0..2 * LAG_SCAN_STEP as u64 + 1)
            .map(|id| member(&ring, id))
            .collect();
        sender.push(put(1));
        sender.push(put(2));
        let visits: Vec<usize> = (0..4).map(|_| ring.release_lagged().len()).collect();
        ring.check_invariants();
        assert_eq!(visits, vec![LAG_SCAN_STEP, LAG_SCAN_STEP, 1, 0]);
        drop(members);
    }

    #[test]
    fn a_member_joining_mid_round_is_still_found_when_it_lags() {
        let (ring, sender) = ring(1);
        let mut early: Vec<_> = (0..LAG_SCAN_STEP as u64 + 1)
            .map(|id| member(&ring, id))
            .collect();
        sender.push(put(1));
        sender.push(put(2));
        assert_eq!(ring.release_lagged().len(), LAG_SCAN_STEP);
        // Reuses slot 0, behind the scan: only `scan_low` and `held_low` cover it now.
        drop(early.remove(0));
        let late = member(&ring, 100);
        ring.check_invariants();
        assert_eq!(
            ring.release_lagged().len(),
            1,
            "the rest of the first round"
        );
        sender.push(put(3));
        sender.push(put(4));
        let released = ring.release_lagged();
        assert_eq!(released.iter().map(|r| r.id).collect::<Vec<_>>(), vec![100]);
        ring.check_invariants();
        drop(late);
    }

    #[test]
    fn a_sweep_visit_releases_nobody_while_every_member_keeps_up() {
        let (ring, sender) = ring(2);
        let mut reader = member(&ring, 10);
        for revision in 1..10 {
            sender.push(put(revision));
            assert_eq!(drain(&mut reader), vec![revision]);
            assert!(ring.release_lagged().is_empty());
            ring.check_invariants();
        }
    }

    #[test]
    fn only_waiting_members_are_woken_and_each_once() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let (ring, sender) = ring(8);
        let mut waiting = member(&ring, 10);
        let _reading = member(&ring, 11);
        let count = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(waiting.poll_recv(&mut cx).is_pending());
        assert!(
            waiting.poll_recv(&mut cx).is_pending(),
            "polled twice, one waker kept"
        );
        ring.check_invariants();
        sender.push(put(1));
        sender.push(put(2));
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(matches!(waiting.poll_recv(&mut cx), Poll::Ready(Some(_))));
    }

    #[test]
    fn members_leaving_while_they_wait_take_only_their_own_wakers() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, Relaxed);
            }
        }
        let (ring, sender) = ring(8);
        let counts: Vec<_> = (0..64)
            .map(|_| std::sync::Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let mut members: Vec<Option<GroupReceiver>> =
            (0..64).map(|id| Some(member(&ring, id))).collect();
        for (m, count) in members.iter_mut().zip(&counts) {
            let waker = Waker::from(count.clone());
            let rx = m.as_mut().unwrap();
            assert!(rx.poll_recv(&mut Context::from_waker(&waker)).is_pending());
        }
        // Leave in a scattered order: each swap-remove moves another member's waker.
        for i in (0..64).filter(|i| i % 3 != 1).map(|i| (i * 37) % 64) {
            members[i] = None;
            ring.check_invariants();
        }
        sender.push(put(1));
        for (i, (m, count)) in members.iter().zip(&counts).enumerate() {
            let woken = count.0.load(Relaxed);
            assert_eq!(woken, usize::from(m.is_some()), "member {i}");
        }
        ring.check_invariants();
    }
}
