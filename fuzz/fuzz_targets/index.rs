//! The index target: watchtrie's private index (exact hash map + prefix hash trie) alone
//! against a naive model (a `BTreeMap` of watcher sets), with `check_invariants()` after
//! every operation and sweeps that alternate between the twin snapshots. Far higher exec
//! rates than the differential target.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use watchtrie::internals::{Kind, Match, TestIndex};

/// A key over a 4-letter alphabet (so keys share prefixes often), at most 12 bytes.
#[derive(Debug, Clone)]
struct Key(Vec<u8>);

impl<'a> Arbitrary<'a> for Key {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.int_in_range(0..=12)?;
        let bytes = (0..len)
            .map(|_| Ok([b'/', b'a', b'b', 0xff][usize::from(u.int_in_range(0..=3u8)?)]))
            .collect::<arbitrary::Result<_>>()?;
        Ok(Key(bytes))
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Insert {
        prefix: bool,
        key: Key,
        id: u8,
    },
    Remove {
        prefix: bool,
        key: Key,
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

impl Op {
    /// Prefixes as the index stores them: empty or ending with `/` (the registry's rule).
    /// Probe keys stay arbitrary.
    fn stored_form(self) -> Op {
        let terminate = |mut key: Key| {
            if key.0.last().is_some_and(|&b| b != b'/') {
                key.0.push(b'/');
            }
            key
        };
        match self {
            Op::Insert {
                prefix: true,
                key,
                id,
            } => Op::Insert {
                prefix: true,
                key: terminate(key),
                id,
            },
            Op::Remove {
                prefix: true,
                key,
                id,
            } => Op::Remove {
                prefix: true,
                key: terminate(key),
                id,
            },
            other => other,
        }
    }
}

/// (kind, stored pattern) → ids.
type Model = BTreeMap<(Kind, Vec<u8>), BTreeSet<u64>>;

fn kind(prefix: bool) -> Kind {
    if prefix {
        Kind::Prefix
    } else {
        Kind::Exact
    }
}

fn expected(model: &Model, key: &[u8]) -> Vec<Match> {
    let mut out: Vec<Match> = model
        .get(&(Kind::Exact, key.to_vec()))
        .into_iter()
        .flatten()
        .map(|&id| (Kind::Exact, key.to_vec(), id))
        .collect();
    // Shortest prefix first, ids sorted within one prefix: the BTreeMap's order already.
    let prefixes = model
        .iter()
        .filter(|((k, p), _)| *k == Kind::Prefix && key.starts_with(p))
        .flat_map(|((k, p), ids)| ids.iter().map(move |&id| (*k, p.clone(), id)));
    out.extend(prefixes);
    out
}

fuzz_target!(|ops: Vec<Op>| {
    let mut index = TestIndex::new();
    let mut model = Model::new();
    for op in ops {
        match op.stored_form() {
            Op::Insert { prefix, key, id } => {
                // Ids are unique within a list: the registry guarantees it.
                if model
                    .entry((kind(prefix), key.0.clone()))
                    .or_default()
                    .insert(u64::from(id))
                {
                    index.insert(kind(prefix), &key.0, u64::from(id));
                }
            }
            Op::Remove { prefix, key, id } => {
                let entry = (kind(prefix), key.0.clone());
                let had = model
                    .get_mut(&entry)
                    .is_some_and(|ids| ids.remove(&u64::from(id)));
                if model.get(&entry).is_some_and(BTreeSet::is_empty) {
                    model.remove(&entry);
                }
                let removed = index.remove(kind(prefix), &key.0, u64::from(id));
                assert_eq!(removed, had, "removal of {id} at {entry:?}");
            }
            Op::Probe { key } => {
                assert_eq!(
                    index.matches(&key.0),
                    expected(&model, &key.0),
                    "matches of {key:?}"
                );
            }
            Op::SweepStep { budget, on_twin } => {
                if index.sweep_done() {
                    index.start_sweep();
                }
                for (filed_as, id) in index.sweep_step(usize::from(budget), on_twin) {
                    assert!(
                        model
                            .iter()
                            .any(|((k, _), ids)| *k == filed_as && ids.contains(&id)),
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
                    .flat_map(|((k, _), ids)| ids.iter().map(move |&id| (*k, id)))
                    .collect();
                want.sort_unstable();
                assert_eq!(seen, want, "a full sweep visits every watcher once");
            }
        }
        index.check_invariants();
        assert_eq!(
            index.watcher_count(),
            model.values().map(BTreeSet::len).sum::<usize>()
        );
    }
});
