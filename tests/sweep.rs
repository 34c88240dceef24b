//! A sweep (heartbeats, the closed-receiver scan) lets go of the index between slices and
//! may resume on the other snapshot of the pair, changed meanwhile. Rules it keeps:
//! every watcher present from its start to its end is visited, once unless a table was
//! rebuilt under it; nothing is visited that was not registered at that moment.
#![cfg(feature = "internals")]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use watchtrie::internals::{Kind, TestIndex};

#[derive(Debug, Clone)]
enum Op {
    Insert { prefix: bool, key: u16 },
    Remove(usize),
    Step { budget: u8, on_twin: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<bool>(), 0..600u16).prop_map(|(prefix, key)| Op::Insert { prefix, key }),
        4 => any::<usize>().prop_map(Op::Remove),
        3 => (1..40u8, any::<bool>()).prop_map(|(budget, on_twin)| Op::Step { budget, on_twin }),
    ]
}

fn kind(prefix: bool) -> Kind {
    if prefix {
        Kind::Prefix
    } else {
        Kind::Exact
    }
}

/// Keys spread over two levels so that the trie has inner nodes without watchers.
fn key(prefix: bool, n: u16) -> Vec<u8> {
    let mut k = format!("/g{}/k{}", n % 7, n).into_bytes();
    if prefix {
        k.push(b'/');
    }
    k
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn a_sweep_visits_every_watcher_present_throughout(
        initial in 0usize..3000,
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let mut index = TestIndex::new();
        // id -> (is_prefix, key)
        let mut live: BTreeMap<u64, (bool, Vec<u8>)> = BTreeMap::new();
        let mut next = 1u64;
        for i in 0..initial {
            let (prefix, k) = (i % 3 == 0, key(i % 3 == 0, i as u16));
            index.insert(kind(prefix), &k, next);
            live.insert(next, (prefix, k));
            next += 1;
        }
        index.start_sweep();
        let at_start: BTreeSet<u64> = live.keys().copied().collect();
        let mut removed = BTreeSet::new();
        let mut visits: BTreeMap<u64, usize> = BTreeMap::new();
        let step = |index: &mut TestIndex, live: &BTreeMap<u64, (bool, Vec<u8>)>, budget, on_twin, visits: &mut BTreeMap<u64, usize>| {
            for (filed_as, id) in index.sweep_step(budget, on_twin) {
                let (p, _) = live.get(&id).expect("a visited watcher is registered");
                assert_eq!(kind(*p), filed_as);
                *visits.entry(id).or_default() += 1;
            }
        };
        for op in ops {
            match op {
                Op::Insert { prefix, key: n } => {
                    let k = key(prefix, n);
                    index.insert(kind(prefix), &k, next);
                    live.insert(next, (prefix, k));
                    next += 1;
                }
                Op::Remove(pick) if !live.is_empty() => {
                    // Mostly removals of early watchers: shrinks the tables mid-sweep.
                    let id = *live.keys().nth(pick % live.len().clamp(1, 64)).unwrap();
                    let (prefix, k) = live.remove(&id).unwrap();
                    let gone = index.remove(kind(prefix), &k, id);
                    prop_assert!(gone);
                    removed.insert(id);
                }
                Op::Remove(_) => {}
                Op::Step { budget, on_twin } => {
                    step(&mut index, &live, usize::from(budget), on_twin, &mut visits);
                }
            }
        }
        let mut on_twin = false;
        while !index.sweep_done() {
            step(&mut index, &live, 7, on_twin, &mut visits);
            on_twin = !on_twin;
        }
        index.check_invariants();
        for id in at_start.difference(&removed) {
            prop_assert!(visits.contains_key(id), "watcher {} present throughout was skipped", id);
        }
        if index.sweep_restarts() == 0 {
            for (id, n) in &visits {
                prop_assert_eq!(*n, 1, "watcher {} visited twice without a rebuild", id);
            }
        }
    }
}

/// A removal order: a name, and the key removed at each step.
type RemovalOrder = (&'static str, fn(u64) -> u64);

/// Removals compact the exact index's entries (its holes outnumber the live keys twice
/// over) while a sweep is under way on both twins: compaction moves entries but no slot,
/// so the sweep keeps its place, visits each watcher present throughout exactly once and
/// never restarts.
#[test]
fn a_sweep_keeps_its_place_while_removals_compact_the_exact_entries() {
    const KEYS: u64 = 2_000;
    const REMOVED: u64 = 1_400;
    let orders: [RemovalOrder; 3] = [
        ("oldest first", |i| i),
        ("even positions first", |i| (2 * i) % KEYS + (2 * i) / KEYS),
        ("scattered", |i| (i * 7_919) % KEYS),
    ];
    for (name, order) in orders {
        let mut index = TestIndex::new();
        let key = |i: u64| format!("/c/{i}").into_bytes();
        for i in 0..KEYS {
            index.insert(Kind::Exact, &key(i), i);
        }
        index.start_sweep();
        let removed: BTreeSet<u64> = (0..REMOVED).map(order).collect();
        let mut visits: BTreeMap<u64, usize> = BTreeMap::new();
        let mut on_twin = false;
        let mut step = |index: &mut TestIndex, on_twin: bool| {
            for (filed_as, id) in index.sweep_step(5, on_twin) {
                assert_eq!(filed_as, Kind::Exact);
                *visits.entry(id).or_default() += 1;
            }
        };
        let mut compacted = false;
        for i in 0..REMOVED {
            let id = order(i);
            let before = index.exact_positions();
            assert!(index.remove(Kind::Exact, &key(id), id), "{name}: {id}");
            compacted |= index.exact_positions() + 1 < before;
            if i % 3 == 0 {
                step(&mut index, on_twin);
                on_twin = !on_twin;
            }
        }
        index.check_invariants();
        assert!(
            compacted,
            "{name}: the removals never compacted the entries"
        );
        while !index.sweep_done() {
            step(&mut index, on_twin);
            on_twin = !on_twin;
        }
        assert_eq!(
            index.sweep_restarts(),
            0,
            "{name}: compaction rebuilt a table"
        );
        for id in (0..KEYS).filter(|id| !removed.contains(id)) {
            assert_eq!(
                visits.get(&id),
                Some(&1),
                "{name}: watcher {id} visited wrongly"
            );
        }
        assert!(visits.keys().all(|id| *id < KEYS), "{name}");
    }
}
