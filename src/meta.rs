//! [`Meta`]: one word per watcher, shared by the index entry and the caller's handle: the
//! watcher's id, the kind of target it watches, and what it asked for.
//!
//! ```text
//!  63                                   16 15        11 10      8 7             0
//!  ┌──────────────────────────────────────┬────────────┬─────────┬───────────────┐
//!  │ id (48 bits, from 1)                 │ (spare)    │ kind    │ flags         │
//!  └──────────────────────────────────────┴────────────┴─────────┴───────────────┘
//! ```
//!
//! Millions of watchers are stored twice in the index and once in the caller's handles, so
//! the word replaces what were two bit-packings (prev_kv in the entry's id, the kind in the
//! handle's) and leaves room for flags.

use crate::event::WatchEventType;

/// What a watcher watches, as the index files it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum TargetKind {
    /// One exact key.
    Exact = 0,
    /// Every key starting with a prefix that starts and ends with `/` (the reference's).
    Prefix = 1,
    /// Every key starting with any bytes.
    BytePrefix = 2,
    /// Every key in `[start, end)`.
    Range = 3,
    /// Every key a wildcard pattern matches.
    Pattern = 4,
}

impl TargetKind {
    /// Every kind, in the order a removal that does not know its kind tries them.
    pub(crate) const ALL: [TargetKind; 5] = [
        TargetKind::Exact,
        TargetKind::Prefix,
        TargetKind::BytePrefix,
        TargetKind::Range,
        TargetKind::Pattern,
    ];

    fn from_bits(bits: u64) -> Self {
        match bits {
            0 => TargetKind::Exact,
            1 => TargetKind::Prefix,
            2 => TargetKind::BytePrefix,
            3 => TargetKind::Range,
            _ => TargetKind::Pattern,
        }
    }
}

/// Per-watcher flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Flags(u8);

impl Flags {
    /// Wants each event's previous value.
    pub(crate) const PREV_KV: Flags = Flags(1);
    /// Put events are filtered out.
    pub(crate) const NO_PUT: Flags = Flags(1 << 1);
    /// Delete events are filtered out.
    pub(crate) const NO_DELETE: Flags = Flags(1 << 2);
    /// Progress events are filtered out.
    pub(crate) const NO_PROGRESS: Flags = Flags(1 << 3);
    /// Events carry no value.
    pub(crate) const KEYS_ONLY: Flags = Flags(1 << 4);
    /// Counted against an owner's cap (`owners`).
    pub(crate) const OWNED: Flags = Flags(1 << 5);
    /// Registered from a revision: the dispatcher adds it to the index and feeds it history
    /// first (`dispatch::catch_up`).
    pub(crate) const RESUMED: Flags = Flags(1 << 6);
    /// A shared fan-out group's watcher (`group`): it holds no unit of the limits itself,
    /// its members do.
    pub(crate) const GROUP: Flags = Flags(1 << 7);
    /// Every event filter.
    pub(crate) const FILTERS: Flags =
        Flags(Self::NO_PUT.0 | Self::NO_DELETE.0 | Self::NO_PROGRESS.0);

    /// The union of two sets of flags.
    pub(crate) const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// `self` without `other`.
    pub(crate) const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// `self`, with `other` too when `on`.
    pub(crate) const fn with_if(self, other: Flags, on: bool) -> Flags {
        if on {
            self.with(other)
        } else {
            self
        }
    }

    pub(crate) const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A watcher's id, target kind and flags in one word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta(u64);

/// Bits below the id.
const ID_SHIFT: u32 = 16;
const KIND_SHIFT: u32 = 8;
const KIND_MASK: u64 = 0b111;
const FLAGS_MASK: u64 = 0xff;

impl Meta {
    /// The largest id a word holds: ids count registrations from 1, and at a million
    /// registrations a second 2^48 of them take nine years.
    pub(crate) const MAX_ID: u64 = (1 << (64 - ID_SHIFT)) - 1;

    /// The word of watcher `id` (at most [`Self::MAX_ID`]).
    pub(crate) fn new(id: u64, kind: TargetKind, flags: Flags) -> Self {
        debug_assert!(
            (1..=Self::MAX_ID).contains(&id),
            "ids count from 1 and fit 48 bits"
        );
        Meta(id << ID_SHIFT | (kind as u64) << KIND_SHIFT | u64::from(flags.0))
    }

    #[inline]
    pub(crate) fn id(self) -> u64 {
        self.0 >> ID_SHIFT
    }

    #[inline]
    pub(crate) fn kind(self) -> TargetKind {
        TargetKind::from_bits(self.0 >> KIND_SHIFT & KIND_MASK)
    }

    #[inline]
    pub(crate) fn flags(self) -> Flags {
        Flags((self.0 & FLAGS_MASK) as u8)
    }

    /// Whether the watcher asked for previous values.
    #[inline]
    pub(crate) fn prev_kv(self) -> bool {
        self.flags().contains(Flags::PREV_KV)
    }

    /// Whether the watcher counts against an owner's cap.
    #[inline]
    pub(crate) fn owned(self) -> bool {
        self.flags().contains(Flags::OWNED)
    }

    /// Whether the watcher was registered from a revision.
    #[inline]
    pub(crate) fn resumed(self) -> bool {
        self.flags().contains(Flags::RESUMED)
    }

    /// Whether the watcher wants events without values.
    #[inline]
    pub(crate) fn keys_only(self) -> bool {
        self.flags().contains(Flags::KEYS_ONLY)
    }

    /// Whether an event of `event_type` passes the watcher's filter (a Canceled event, sent
    /// by the store itself, always does). One test of a byte: free for watchers without a
    /// filter, and a filtered-out event touches nothing else.
    #[inline]
    pub(crate) fn wants(self, event_type: WatchEventType) -> bool {
        let filtered = match event_type {
            WatchEventType::Put => Flags::NO_PUT,
            WatchEventType::Delete => Flags::NO_DELETE,
            WatchEventType::Progress => Flags::NO_PROGRESS,
            WatchEventType::Canceled => return true,
        };
        self.0 & u64::from(filtered.0) == 0
    }
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta")
            .field("id", &self.id())
            .field("kind", &self.kind())
            .field("flags", &self.flags())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_kind_and_flags_share_the_word_without_mixing() {
        for id in [1, 2, 42, Meta::MAX_ID] {
            for kind in TargetKind::ALL {
                for flags in [
                    Flags::default(),
                    Flags::PREV_KV,
                    Flags::FILTERS.with(Flags::KEYS_ONLY),
                    Flags(0xff),
                ] {
                    let meta = Meta::new(id, kind, flags);
                    assert_eq!((meta.id(), meta.kind(), meta.flags()), (id, kind, flags));
                    assert_eq!(meta.prev_kv(), flags.contains(Flags::PREV_KV));
                    assert_eq!(meta.keys_only(), flags.contains(Flags::KEYS_ONLY));
                }
            }
        }
    }

    #[test]
    fn a_filter_drops_exactly_its_types_and_never_the_cancel_sentinel() {
        use WatchEventType::*;
        let cases = [
            (Flags::default(), [true, true, true]),
            (Flags::NO_PUT, [false, true, true]),
            (Flags::NO_DELETE, [true, false, true]),
            (Flags::NO_PROGRESS, [true, true, false]),
            (Flags::FILTERS, [false, false, false]),
        ];
        for (flags, [put, delete, progress]) in cases {
            let meta = Meta::new(7, TargetKind::Exact, flags.with(Flags::PREV_KV));
            assert_eq!(
                [meta.wants(Put), meta.wants(Delete), meta.wants(Progress)],
                [put, delete, progress],
                "{flags:?}"
            );
            assert!(meta.wants(Canceled));
        }
    }
}
