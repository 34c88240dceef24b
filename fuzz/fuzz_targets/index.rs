//! The index target: watchtrie's private index (exact hash map + prefix hash trie) alone
//! against a naive model (a `BTreeMap` of watcher sets), with `check_invariants()` after
//! every operation, sweeps that alternate between the twin snapshots, and older versions
//! (copies) kept and re-checked to prove that writes never reach them. Far higher exec
//! rates than the differential target.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use watchtrie::internals::{Match, TestIndex};

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
    Keep,
    Release,
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

/// (is_prefix, key) → ids.
type Model = BTreeMap<(bool, Vec<u8>), BTreeSet<u64>>;

fn expected(model: &Model, key: &[u8]) -> Vec<Match> {
    let mut out: Vec<Match> = model
        .get(&(false, key.to_vec()))
        .into_iter()
        .flatten()
        .map(|&id| (false, key.len(), id))
        .collect();
    let mut prefixes: Vec<Match> = model
        .iter()
        .filter(|((is_prefix, p), _)| *is_prefix && key.starts_with(p))
        .flat_map(|((_, p), ids)| ids.iter().map(move |&id| (true, p.len(), id)))
        .collect();
    prefixes.sort_unstable();
    out.extend(prefixes);
    out
}

fuzz_target!(|ops: Vec<Op>| {
    let mut index = TestIndex::new();
    let mut model = Model::new();
    let mut kept: Vec<Model> = Vec::new();
    for op in ops {
        match op.stored_form() {
            Op::Insert { prefix, key, id } => {
                // Ids are unique within a list: the registry guarantees it.
                if model
                    .entry((prefix, key.0.clone()))
                    .or_default()
                    .insert(u64::from(id))
                {
                    if prefix {
                        index.insert_prefix(&key.0, u64::from(id));
                    } else {
                        index.insert_exact(&key.0, u64::from(id));
                    }
                }
            }
            Op::Remove { prefix, key, id } => {
                let entry = (prefix, key.0.clone());
                let had = model
                    .get_mut(&entry)
                    .is_some_and(|ids| ids.remove(&u64::from(id)));
                if model.get(&entry).is_some_and(BTreeSet::is_empty) {
                    model.remove(&entry);
                }
                let removed = if prefix {
                    index.remove_prefix(&key.0, u64::from(id))
                } else {
                    index.remove_exact(&key.0, u64::from(id))
                };
                assert_eq!(removed, had, "removal of {id} at {entry:?}");
            }
            Op::Probe { key } => {
                assert_eq!(
                    index.matches(&key.0),
                    expected(&model, &key.0),
                    "matches of {key:?}"
                );
                index.check_kept_invariants();
                for (n, old) in kept.iter().enumerate() {
                    assert_eq!(
                        index.kept_matches(n, &key.0),
                        expected(old, &key.0),
                        "kept version {n}"
                    );
                }
            }
            Op::Keep => {
                if index.kept_versions() < 8 {
                    index.keep_version();
                    kept.push(model.clone());
                }
            }
            Op::Release => {
                index.release_versions();
                kept.clear();
            }
            Op::SweepStep { budget, on_twin } => {
                if index.sweep_done() {
                    index.start_sweep();
                }
                for (is_prefix, id) in index.sweep_step(usize::from(budget), on_twin) {
                    assert!(
                        model
                            .iter()
                            .any(|((p, _), ids)| *p == is_prefix && ids.contains(&id)),
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
                let mut want: Vec<(bool, u64)> = model
                    .iter()
                    .flat_map(|((p, _), ids)| ids.iter().map(move |&id| (*p, id)))
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
