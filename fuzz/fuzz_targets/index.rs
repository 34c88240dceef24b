//! The index target: watchtrie's private index alone (exact keys, slash prefixes, byte
//! prefixes, key ranges, wildcard patterns) against a naive model (a `BTreeMap` of watcher
//! sets, matched by `conformance::model::matches`, the definitions), with
//! `check_invariants()` after every operation and sweeps that alternate between the twin
//! snapshots. Far higher exec rates than the differential target.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use watchtrie::internals::{encode_range, Kind, Match, TestIndex};

/// A key over a 5-letter alphabet (so keys share prefixes often; `*` makes patterns), at
/// most 12 bytes.
#[derive(Debug, Clone)]
struct Key(Vec<u8>);

impl<'a> Arbitrary<'a> for Key {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.int_in_range(0..=12)?;
        let bytes = (0..len)
            .map(|_| Ok([b'/', b'a', b'b', 0xff, b'*'][usize::from(u.int_in_range(0..=4u8)?)]))
            .collect::<arbitrary::Result<_>>()?;
        Ok(Key(bytes))
    }
}

/// What an insert or removal targets: a kind, and the bytes (a range's end second).
#[derive(Arbitrary, Debug, Clone)]
struct Target {
    kind: u8,
    key: Key,
    end: Key,
    unbounded: bool,
}

impl Target {
    /// The kind, the stored pattern and the target (for the model), or `None` for what
    /// the registry would refuse (a prefix not ending with `/` is made to; an empty range
    /// and a `*` inside a piece are dropped).
    fn stored(&self) -> Option<(Kind, Vec<u8>, watchtrie::Target)> {
        use watchtrie::Target as T;
        let key = self.key.0.clone();
        let b = |v: &[u8]| Bytes::copy_from_slice(v);
        Some(match self.kind % 5 {
            0 => (Kind::Exact, key.clone(), T::Exact(b(&key))),
            1 => {
                let mut key = key;
                if key.last().is_some_and(|&b| b != b'/') {
                    key.push(b'/');
                }
                (Kind::Prefix, key.clone(), T::Prefix(b(&key)))
            }
            2 => (Kind::BytePrefix, key.clone(), T::BytePrefix(b(&key))),
            3 => {
                let end = (!self.unbounded).then(|| self.end.0.clone());
                if end.as_ref().is_some_and(|end| end <= &key) {
                    return None;
                }
                let target = T::Range {
                    start: b(&key),
                    end: end.as_deref().map(b),
                };
                (Kind::Range, encode_range(&key, end.as_deref()), target)
            }
            _ => {
                let well_formed = key
                    .split(|&b| b == b'/')
                    .all(|piece| piece == b"*" || !piece.contains(&b'*'));
                if !well_formed {
                    return None;
                }
                (Kind::Pattern, key.clone(), T::Pattern(b(&key)))
            }
        })
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Insert {
        target: Target,
        id: u8,
    },
    Remove {
        target: Target,
        id: u8,
    },
    Probe {
        key: Key,
    },
    /// A few units of a sweep, on either twin; every list it visits must be in the model.
    SweepStep {
        budget: u8,
        on_twin: bool,
    },
    /// A whole sweep with no change in between: exactly the model's watchers, once each.
    SweepAll,
}

/// (kind, stored pattern) → (the target, ids).
type Model = BTreeMap<(Kind, Vec<u8>), (watchtrie::Target, BTreeSet<u64>)>;

/// Every match of `key` in the model: (kind, pattern, id).
fn expected(model: &Model, key: &[u8]) -> Vec<Match> {
    model
        .iter()
        .filter(|(_, (target, _))| conformance::model::matches(target, key))
        .flat_map(|((k, p), (_, ids))| ids.iter().map(move |&id| (*k, p.clone(), id)))
        .collect()
}

fuzz_target!(|ops: Vec<Op>| {
    let mut index = TestIndex::new();
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Insert { target, id } => {
                let Some((kind, pattern, target)) = target.stored() else {
                    continue;
                };
                // Ids are unique within a list: the registry guarantees it.
                if model
                    .entry((kind, pattern.clone()))
                    .or_insert_with(|| (target, BTreeSet::new()))
                    .1
                    .insert(u64::from(id))
                {
                    index.insert(kind, &pattern, u64::from(id));
                }
            }
            Op::Remove { target, id } => {
                let Some((kind, pattern, _)) = target.stored() else {
                    continue;
                };
                let entry = (kind, pattern.clone());
                let had = model
                    .get_mut(&entry)
                    .is_some_and(|(_, ids)| ids.remove(&u64::from(id)));
                if model.get(&entry).is_some_and(|(_, ids)| ids.is_empty()) {
                    model.remove(&entry);
                }
                let removed = index.remove(kind, &pattern, u64::from(id));
                assert_eq!(removed, had, "removal of {id} at {entry:?}");
            }
            Op::Probe { key } => {
                let got = index.matches(&key.0);
                // Exact watchers come first, and slash prefixes shortest first (the
                // reference's order); other kinds in any order.
                let slash: Vec<&Match> = got.iter().filter(|m| m.0 == Kind::Prefix).collect();
                assert!(
                    slash.windows(2).all(|w| w[0].1.len() <= w[1].1.len()),
                    "slash prefixes shortest first: {got:?}"
                );
                let exact = got.iter().take_while(|m| m.0 == Kind::Exact).count();
                assert_eq!(
                    exact,
                    got.iter().filter(|m| m.0 == Kind::Exact).count(),
                    "exact first"
                );
                let (mut got, mut want) = (got, expected(&model, &key.0));
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "matches of {key:?}");
            }
            Op::SweepStep { budget, on_twin } => {
                if index.sweep_done() {
                    index.start_sweep();
                }
                for (filed_as, id) in index.sweep_step(usize::from(budget), on_twin) {
                    assert!(
                        model
                            .iter()
                            .any(|((k, _), (_, ids))| *k == filed_as && ids.contains(&id)),
                        "the sweep visited {id}, which is not registered"
                    );
                }
            }
            Op::SweepAll => {
                index.start_sweep();
                let mut seen = Vec::new();
                let mut on_twin = false;
                while !index.sweep_done() {
                    seen.extend(index.sweep_step(3, on_twin));
                    on_twin = !on_twin;
                }
                seen.sort_unstable();
                let mut want: Vec<(Kind, u64)> = model
                    .iter()
                    .flat_map(|((k, _), (_, ids))| ids.iter().map(move |&id| (*k, id)))
                    .collect();
                want.sort_unstable();
                assert_eq!(seen, want, "a full sweep visits every watcher once");
            }
        }
        index.check_invariants();
        assert_eq!(
            index.watcher_count(),
            model.values().map(|(_, ids)| ids.len()).sum::<usize>()
        );
    }
});
