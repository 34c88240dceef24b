//! The per-segment work of a trie walk, made cheap: finding the separators eight bytes at a
//! time, summarising a segment in two words (which a probe compares instead of the bytes),
//! and chaining its hash onto its parent's in two multiplications.
//!
//! A walk over a key of depth 8 does each of these eight times per event; with a general
//! purpose byte iterator, hasher and `memcmp` they cost about 150 instructions per segment
//! (callgrind, `deep`), more than the table probes themselves.
//!
//! The hash is seeded per registry (the seeds come from `ahash`'s random source), so that
//! keys chosen by a client cannot be aimed at one bucket. Its quality matters only for
//! speed: every probe confirms the parent id and the segment bytes.

/// What ends every segment.
pub(crate) const SEPARATOR: u8 = b'/';

const LOW_BITS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const SEPARATORS: u64 = u64::from_ne_bytes([SEPARATOR; 8]);

/// The eight bytes at `at` (which must all be in `bytes`), little-endian: the byte at
/// offset `i` is bits `8i..8i + 8`.
#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    let eight: [u8; 8] = bytes[at..at + 8].try_into().expect("eight bytes");
    u64::from_le_bytes(eight)
}

/// Up to eight bytes at `at`, those past the end read as zero.
#[inline]
fn word_or_tail(bytes: &[u8], at: usize) -> u64 {
    if bytes.len() - at >= 8 {
        return word(bytes, at);
    }
    let mut buf = [0u8; 8];
    for (to, &from) in buf.iter_mut().zip(&bytes[at..]) {
        *to = from;
    }
    u64::from_le_bytes(buf)
}

/// A mask with the high bit of every byte of `w` that is the separator, and no other bit.
/// Exact per byte (no borrow crosses bytes, unlike the `x - 0x01..` trick).
#[inline]
fn separator_bits(w: u64) -> u64 {
    let x = w ^ SEPARATORS;
    // High bit of each byte of `t`: set iff that byte of `x` is non-zero.
    let t = ((x & LOW_BITS) + LOW_BITS) | x;
    !(t | LOW_BITS)
}

/// The end offsets (one past the separator) of the segments of a key, in order.
pub(crate) struct SegmentEnds<'a> {
    key: &'a [u8],
    /// Offset of the word `bits` was read from.
    base: usize,
    /// Separators of that word not yet returned.
    bits: u64,
}

impl<'a> SegmentEnds<'a> {
    /// The segment ends of `key`; a last piece without a separator is not a segment.
    #[inline]
    pub(crate) fn new(key: &'a [u8]) -> Self {
        Self {
            key,
            base: 0,
            bits: if key.is_empty() {
                0
            } else {
                separator_bits(word_or_tail(key, 0))
            },
        }
    }
}

impl Iterator for SegmentEnds<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            self.base += 8;
            if self.base >= self.key.len() {
                return None;
            }
            // Bytes past the end read as zero, which is not the separator.
            self.bits = separator_bits(word_or_tail(self.key, self.base));
        }
        let at = self.base + (self.bits.trailing_zeros() / 8) as usize;
        self.bits &= self.bits - 1;
        Some(at + 1)
    }
}

/// Longest segment that [`Segment`] identifies by itself.
const EXACT_SUMMARY: usize = 16;

/// A segment as a probe compares it: its length and two words that between them hold every
/// byte of a segment of up to 16 bytes (they overlap, or hold the first, middle and last
/// bytes). Equal segments give equal summaries; for segments of up to 16 bytes distinct
/// segments give distinct summaries, so comparing summaries is comparing bytes. Longer
/// segments must also be compared byte by byte ([`Segment::is_exact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    words: [u64; 2],
    len: usize,
}

impl Segment {
    /// The summary of `segment`.
    #[inline]
    pub(crate) fn of(segment: &[u8]) -> Self {
        let len = segment.len();
        let words = if len >= 8 {
            [word(segment, 0), word(segment, len - 8)]
        } else if len >= 4 {
            let low = |at: usize| {
                u64::from(u32::from_le_bytes([
                    segment[at],
                    segment[at + 1],
                    segment[at + 2],
                    segment[at + 3],
                ]))
            };
            [low(0), low(len - 4)]
        } else if len > 0 {
            let (a, b, c) = (segment[0], segment[len / 2], segment[len - 1]);
            [u64::from(a) << 16 | u64::from(b) << 8 | u64::from(c), 0]
        } else {
            [0, 0]
        };
        Self { words, len }
    }

    /// The segment's length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The segment's bytes, if the summary identifies them (`is_exact`).
    pub(crate) fn bytes(&self) -> Option<Vec<u8>> {
        let ([a, b], len) = (self.words, self.len);
        let mut bytes = vec![0; len];
        match len {
            0 => {}
            1..=3 => {
                let [last, middle, first, ..] = a.to_le_bytes();
                bytes[0] = first;
                bytes[len / 2] = middle;
                bytes[len - 1] = last;
            }
            4..=7 => {
                bytes[..4].copy_from_slice(&a.to_le_bytes()[..4]);
                bytes[len - 4..].copy_from_slice(&b.to_le_bytes()[..4]);
            }
            8..=EXACT_SUMMARY => {
                bytes[..8].copy_from_slice(&a.to_le_bytes());
                bytes[len - 8..].copy_from_slice(&b.to_le_bytes());
            }
            _ => return None,
        }
        Some(bytes)
    }

    /// Whether equal summaries mean equal segments (up to 16 bytes).
    #[inline]
    pub(crate) fn is_exact(&self) -> bool {
        self.len <= EXACT_SUMMARY
    }
}

/// 64 × 64 → 128-bit product, halves xored: the mixing step of the hash.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The seeded hash of a path, chained segment by segment: `chain(h(P), s) = h(P + s)`.
#[derive(Clone, Debug)]
pub(crate) struct PathHasher {
    seeds: [u64; 4],
}

impl PathHasher {
    /// A hasher with fresh random seeds.
    pub(crate) fn new() -> Self {
        let source = ahash::RandomState::new();
        // Odd seeds, never zero: the root's children fold with `ROOT_HASH ^ k3` = `k3` as a
        // multiplier, and a zero multiplier would give every one of them the same hash.
        Self {
            seeds: [0u64, 1, 2, 3].map(|i| source.hash_one(i) | 1),
        }
    }

    /// The hash of the path `P + segment`, given `parent` = the hash of `P` and `summary`
    /// = `Segment::of(segment)`.
    #[inline]
    pub(crate) fn chain(&self, parent: u64, summary: Segment, segment: &[u8]) -> u64 {
        let [k0, k1, k2, k3] = self.seeds;
        let [a, b] = if summary.is_exact() {
            summary.words
        } else {
            // Longer segments (rare): fold 16 bytes at a time, then the last 16.
            let mut acc = k2;
            let mut at = 0;
            while segment.len() - at > 16 {
                acc = fold(word(segment, at) ^ k0 ^ acc, word(segment, at + 8) ^ k1);
                at += 16;
            }
            let end = segment.len();
            [word(segment, end - 16) ^ acc, word(segment, end - 8)]
        };
        let len = summary.len as u64;
        let mixed = fold(a ^ k0, b ^ k1 ^ len.rotate_right(8));
        fold(mixed ^ k2, parent ^ k3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_ends(key: &[u8]) -> Vec<usize> {
        (0..key.len())
            .filter(|&i| key[i] == SEPARATOR)
            .map(|i| i + 1)
            .collect()
    }

    #[test]
    fn every_separator_is_found_once_at_any_offset() {
        let cases: [&[u8]; 9] = [
            b"",
            b"/",
            b"abc",
            b"/a/bc/",
            b"////////////////////",
            b"/svc12/node200/part3/k5/x1/y2/z3/w4",
            b"\x2f\xaf\x2e\x30\xff\x00/\x01\x2f",
            b"1234567/12345678/",
            b"\x00\x00\x00\x00\x00\x00\x00\x00/",
        ];
        for key in cases {
            assert_eq!(
                SegmentEnds::new(key).collect::<Vec<_>>(),
                naive_ends(key),
                "{key:?}"
            );
        }
    }

    #[test]
    fn short_segments_that_differ_hash_and_compare_differently() {
        // Every segment of up to 3 bytes over a small alphabet, plus longer variants: the
        // summaries must be distinct, so the hashes under one parent collide only by chance.
        let alphabet = [b'a', b'b', b'/', 0, 0xff];
        let mut segments: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=3 {
            let mut next = Vec::new();
            for s in segments.iter().filter(|s| s.len() == len - 1) {
                for &c in &alphabet {
                    let mut t = s.clone();
                    t.push(c);
                    next.push(t);
                }
            }
            segments.extend(next);
        }
        for len in [4, 5, 7, 8, 9, 15, 16, 17, 40] {
            for i in 0..len {
                let mut s = vec![b'x'; len];
                s[i] = b'y';
                segments.push(s);
            }
        }
        let hasher = PathHasher::new();
        let mut seen = std::collections::HashMap::new();
        for s in &segments {
            let h = hasher.chain(7, Segment::of(s), s);
            if let Some(other) = seen.insert(h, s.clone()) {
                panic!("{other:?} and {s:?} hash alike");
            }
            for t in segments.iter().filter(|t| t.len() <= 16) {
                if s.len() <= 16 {
                    assert_eq!(Segment::of(s) == Segment::of(t), s == t, "{s:?} vs {t:?}");
                }
            }
        }
    }

    #[test]
    fn the_parent_hash_changes_the_result() {
        let hasher = PathHasher::new();
        let under: std::collections::HashSet<u64> = (0..10_000u64)
            .map(|p| hasher.chain(p, Segment::of(b"node7/"), b"node7/"))
            .collect();
        assert_eq!(under.len(), 10_000);
    }

    proptest! {
        #[test]
        fn segment_ends_agree_with_a_byte_scan(key in proptest::collection::vec(
            prop_oneof![Just(SEPARATOR), any::<u8>()], 0..80)
        ) {
            prop_assert_eq!(SegmentEnds::new(&key).collect::<Vec<_>>(), naive_ends(&key));
        }

        #[test]
        fn short_summaries_are_equal_exactly_when_the_bytes_are(
            a in proptest::collection::vec(0u8..4, 0..=16),
            b in proptest::collection::vec(0u8..4, 0..=16),
        ) {
            prop_assert_eq!(Segment::of(&a) == Segment::of(&b), a == b);
        }

        #[test]
        fn a_short_summary_gives_its_bytes_back(
            a in proptest::collection::vec(any::<u8>(), 0..=16),
            long in proptest::collection::vec(any::<u8>(), 17..40),
        ) {
            prop_assert_eq!(Segment::of(&a).bytes(), Some(a));
            prop_assert_eq!(Segment::of(&long).bytes(), None);
        }
    }
}
