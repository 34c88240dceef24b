//! A persistent (copy-on-write) hash array mapped trie.
//!
//! Each node covers 5 bits of a 64-bit hash, lowest bits first, and stores only its occupied
//! slots, in one shared allocation (`Arc<[Slot]>`). The 32-bit occupancy bitmap that locates a
//! slot lives beside the pointer, in the parent, so that descending one level costs one
//! memory access, not two:
//!
//! ```text
//!   Node { bitmap: 0b0100_0010, slots ─► [ Leaf(e1), Branch(Node { bitmap, slots ─► [e2, e3] }) ] }
//! ```
//!
//! Writers mutate through [`Arc::make_mut`]: a slot array shared with a published snapshot is
//! copied (path copying), one already private to the writer is changed in place, so a batch
//! of writes between two publications copies each touched path once.
//!
//! # Invariants (checked by [`Hamt::check_invariants`])
//! - `bitmap.count_ones() == slots.len()`, and slots are in bit order.
//! - Every entry sits at the path spelled by its hash's 5-bit fragments.
//! - A `Collision` holds at least two entries, all with the same full hash, distinct keys.
//! - No node but the root is empty, and no node but the root holds a single leaf or
//!   collision (it would have been lifted into its parent): the shape is canonical.
//! - `len` is the number of entries; `root` is `None` exactly when `len == 0`.
//!
//! # Complexity (n entries, hashes uniform)
//! | operation | cost |
//! |---|---|
//! | `get` | O(log₃₂ n) node visits, at most 13 |
//! | `insert` / `remove` | O(32 · log₃₂ n) slot copies when the path is shared, O(log₃₂ n) when private |
//! | `for_each` | O(n) |
//!
//! Depth is bounded by the hash width (13 levels), so the recursive helpers cannot overflow
//! the stack whatever the input.

use std::iter;
use std::mem;
use std::sync::Arc;

use super::{array_of, check_array, splice, Vacancy};

const BITS: u32 = 4;
const MASK: u64 = (1 << BITS) - 1;

/// What a HAMT stores: an entry that knows its key and its 64-bit hash.
pub(crate) trait HamtEntry: Clone {
    /// The key compared on lookup; two entries with equal keys must have equal hashes.
    type Key: ?Sized + Eq;
    /// The key of this entry.
    fn key(&self) -> &Self::Key;
    /// The hash of this entry's key.
    fn hash(&self) -> u64;
}

/// A persistent hash map; cloning it is O(1) and shares every node.
pub(crate) struct Hamt<E> {
    root: Option<Node<E>>,
    len: usize,
}

/// One level: the occupancy bitmap and the shared array of occupied slots.
struct Node<E> {
    bitmap: u32,
    slots: Arc<[Slot<E>]>,
}

enum Slot<E> {
    Leaf(E),
    /// Entries whose full 64-bit hashes are equal.
    Collision(u64, Arc<[E]>),
    Branch(Node<E>),
    /// Left behind for an instant while a private slot array is rebuilt; never observed.
    Vacant,
}

impl<E> Clone for Hamt<E> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<E> Clone for Node<E> {
    fn clone(&self) -> Self {
        Self {
            bitmap: self.bitmap,
            slots: Arc::clone(&self.slots),
        }
    }
}

impl<E: Clone> Clone for Slot<E> {
    fn clone(&self) -> Self {
        match self {
            Slot::Leaf(e) => Slot::Leaf(e.clone()),
            Slot::Collision(h, es) => Slot::Collision(*h, Arc::clone(es)),
            Slot::Branch(n) => Slot::Branch(n.clone()),
            Slot::Vacant => Slot::Vacant,
        }
    }
}

impl<E: Clone> Vacancy for Slot<E> {
    fn vacant() -> Self {
        Slot::Vacant
    }
    fn is_vacant(&self) -> bool {
        matches!(self, Slot::Vacant)
    }
}

impl<E> Default for Hamt<E> {
    fn default() -> Self {
        Self { root: None, len: 0 }
    }
}

#[inline]
fn fragment(hash: u64, shift: u32) -> u32 {
    ((hash >> shift) & MASK) as u32
}

impl<E> Node<E> {
    #[inline]
    fn has(&self, bit: u32) -> bool {
        self.bitmap & (1 << bit) != 0
    }

    #[inline]
    fn position(&self, bit: u32) -> usize {
        (self.bitmap & ((1u32 << bit) - 1)).count_ones() as usize
    }

    /// Number of occupied slots (the array may hold spare capacity after them).
    #[inline]
    fn live(&self) -> usize {
        self.bitmap.count_ones() as usize
    }

    /// The occupied slots.
    #[inline]
    fn slots(&self) -> &[Slot<E>] {
        &self.slots[..self.live()]
    }
}

impl<E: Clone> Node<E> {
    /// A node holding `slots`, given in bit order with their bits.
    fn with<const N: usize>(slots: [(u32, Slot<E>); N]) -> Self {
        let bitmap = slots.iter().fold(0, |map, (bit, _)| map | (1 << bit));
        Self {
            bitmap,
            slots: array_of(slots.into_iter().map(|(_, slot)| slot)),
        }
    }

    /// Adds `slot` at `bit` (absent).
    fn insert_slot(&mut self, bit: u32, slot: Slot<E>) {
        let (live, pos) = (self.live(), self.position(bit));
        splice(&mut self.slots, live, pos, Some(slot));
        self.bitmap |= 1 << bit;
    }

    /// Removes the slot at `bit` (present).
    fn remove_slot(&mut self, bit: u32) -> Slot<E> {
        let (live, pos) = (self.live(), self.position(bit));
        let removed = splice(&mut self.slots, live, pos, None).expect("slot present");
        self.bitmap &= !(1 << bit);
        removed
    }
}

impl<E: HamtEntry> Slot<E> {
    fn hash(&self) -> u64 {
        match self {
            Slot::Leaf(e) => e.hash(),
            Slot::Collision(h, _) => *h,
            Slot::Branch(_) | Slot::Vacant => {
                unreachable!("only leaves and collisions have one hash")
            }
        }
    }
}

impl<E: HamtEntry> Hamt<E> {
    /// Number of entries.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The entry with this key, if any. `hash` must be the key's hash.
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &E::Key) -> Option<&E> {
        let mut node = self.root.as_ref()?;
        let mut shift = 0;
        loop {
            let bit = fragment(hash, shift);
            if !node.has(bit) {
                return None;
            }
            match &node.slots[node.position(bit)] {
                Slot::Leaf(e) => return (e.hash() == hash && e.key() == key).then_some(e),
                Slot::Collision(h, es) => {
                    return if *h == hash {
                        es.iter().find(|e| e.key() == key)
                    } else {
                        None
                    };
                }
                Slot::Branch(child) => {
                    node = child;
                    shift += BITS;
                }
                Slot::Vacant => unreachable!("vacant slots never outlive a rebuild"),
            }
        }
    }

    /// Inserts `entry`, returning the entry it replaced (same key), if any.
    pub(crate) fn insert(&mut self, entry: E) -> Option<E>
    where
        E::Key: Copy,
    {
        let (hash, key) = (entry.hash(), *entry.key());
        let pending = std::cell::Cell::new(Some(entry));
        let mut replaced = None;
        let take = || pending.take().expect("used once");
        self.upsert(
            hash,
            &key,
            |old| replaced = Some(mem::replace(old, take())),
            take,
        );
        replaced
    }

    /// Updates the entry with this key through `update`, or inserts `create()` if there is
    /// none: one walk down either way, copying the shared part of the path.
    pub(crate) fn upsert(
        &mut self,
        hash: u64,
        key: &E::Key,
        update: impl FnOnce(&mut E),
        create: impl FnOnce() -> E,
    ) {
        let inserted = match &mut self.root {
            Some(root) => upsert_into(root, hash, key, update, create, 0),
            None => {
                self.root = Some(Node::with([(fragment(hash, 0), Slot::Leaf(create()))]));
                true
            }
        };
        if inserted {
            self.len += 1;
        }
    }

    /// Removes and returns the entry with this key. Nothing is copied when the key is absent.
    pub(crate) fn remove(&mut self, hash: u64, key: &E::Key) -> Option<E> {
        self.get(hash, key)?;
        let root = self.root.as_mut()?;
        let removed = remove_from(root, hash, key, 0);
        if removed.is_some() {
            self.len -= 1;
            if self.len == 0 {
                self.root = None;
            }
        }
        removed
    }

    /// Some entry of the map (the first in hash order).
    pub(crate) fn first(&self) -> Option<&E> {
        let mut node = self.root.as_ref()?;
        loop {
            match node.slots().first()? {
                Slot::Leaf(e) => return Some(e),
                Slot::Collision(_, es) => return es.first(),
                Slot::Branch(child) => node = child,
                Slot::Vacant => unreachable!("vacant slots never outlive a rebuild"),
            }
        }
    }

    /// Calls `f` on every entry, in hash order.
    #[inline]
    pub(crate) fn for_each<F: FnMut(&E)>(&self, f: &mut F) {
        if let Some(root) = &self.root {
            for_each_in(root, f);
        }
    }

    /// Panics with a description if any invariant in the module docs is broken.
    pub(crate) fn check_invariants(&self) {
        match &self.root {
            None => assert_eq!(self.len, 0, "an empty root must mean len 0"),
            Some(root) => {
                assert!(root.live() > 0, "a non-empty map has a non-empty root");
                let mut count = 0;
                check_node(root, 0, 0, true, &mut count);
                assert_eq!(count, self.len, "len must count every entry");
            }
        }
    }
}

fn for_each_in<E, F: FnMut(&E)>(node: &Node<E>, f: &mut F) {
    for slot in node.slots() {
        match slot {
            Slot::Leaf(e) => f(e),
            Slot::Collision(_, es) => es.iter().for_each(&mut *f),
            Slot::Branch(child) => for_each_in(child, f),
            Slot::Vacant => unreachable!("vacant slots never outlive a rebuild"),
        }
    }
}

/// Returns true when an entry was created.
fn upsert_into<E: HamtEntry>(
    node: &mut Node<E>,
    hash: u64,
    key: &E::Key,
    update: impl FnOnce(&mut E),
    create: impl FnOnce() -> E,
    shift: u32,
) -> bool {
    let bit = fragment(hash, shift);
    if !node.has(bit) {
        node.insert_slot(bit, Slot::Leaf(create()));
        return true;
    }
    let pos = node.position(bit);
    match &mut Arc::make_mut(&mut node.slots)[pos] {
        Slot::Branch(child) => upsert_into(child, hash, key, update, create, shift + BITS),
        Slot::Leaf(old) if old.hash() == hash && old.key() == key => {
            update(old);
            false
        }
        Slot::Collision(h, es) if *h == hash => {
            if let Some(i) = es.iter().position(|e| e.key() == key) {
                update(&mut Arc::make_mut(es)[i]);
                return false;
            }
            let grown: Arc<[E]> = es.iter().cloned().chain(iter::once(create())).collect();
            *es = grown;
            true
        }
        occupied => {
            // A different key lives here: push both one level down.
            let old = mem::replace(occupied, Slot::Vacant);
            let old_hash = old.hash();
            *occupied = merge(old, old_hash, Slot::Leaf(create()), hash, shift + BITS);
            true
        }
    }
}

/// Builds the smallest subtree holding two slots whose hashes differ, or a collision.
fn merge<E: HamtEntry>(a: Slot<E>, ha: u64, b: Slot<E>, hb: u64, shift: u32) -> Slot<E> {
    if ha == hb {
        let mut entries = Vec::with_capacity(2);
        for slot in [a, b] {
            match slot {
                Slot::Leaf(e) => entries.push(e),
                Slot::Collision(_, es) => entries.extend(es.iter().cloned()),
                Slot::Branch(_) | Slot::Vacant => {
                    unreachable!("only leaves and collisions are merged")
                }
            }
        }
        return Slot::Collision(ha, entries.into());
    }
    // Two different 64-bit hashes differ in some fragment at or below shift 60, so the
    // recursion ends within 13 levels.
    let (fa, fb) = (fragment(ha, shift), fragment(hb, shift));
    let node = if fa == fb {
        Node::with([(fa, merge(a, ha, b, hb, shift + BITS))])
    } else if fa < fb {
        Node::with([(fa, a), (fb, b)])
    } else {
        Node::with([(fb, b), (fa, a)])
    };
    Slot::Branch(node)
}

fn remove_from<E: HamtEntry>(node: &mut Node<E>, hash: u64, key: &E::Key, shift: u32) -> Option<E> {
    let bit = fragment(hash, shift);
    if !node.has(bit) {
        return None;
    }
    let pos = node.position(bit);
    match &node.slots[pos] {
        Slot::Leaf(e) => {
            if e.key() != key {
                return None;
            }
            match node.remove_slot(bit) {
                Slot::Leaf(removed) => Some(removed),
                _ => unreachable!("matched a leaf above"),
            }
        }
        Slot::Collision(h, es) => {
            if *h != hash {
                return None;
            }
            let i = es.iter().position(|e| e.key() == key)?;
            let removed = es[i].clone();
            let rest: Vec<E> = es
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, e)| e.clone())
                .collect();
            let replacement = match <[E; 1]>::try_from(rest) {
                Ok([last]) => Slot::Leaf(last),
                Err(rest) => Slot::Collision(*h, rest.into()),
            };
            Arc::make_mut(&mut node.slots)[pos] = replacement;
            Some(removed)
        }
        Slot::Branch(_) => {
            let slots = Arc::make_mut(&mut node.slots);
            let Slot::Branch(child) = &mut slots[pos] else {
                unreachable!("matched a branch above")
            };
            let removed = remove_from(child, hash, key, shift + BITS)?;
            // Keep the canonical shape: a lone leaf or collision moves up into this slot.
            if child.live() == 1 && !matches!(child.slots[0], Slot::Branch(_)) {
                let lifted = child.slots[0].clone();
                slots[pos] = lifted;
            }
            Some(removed)
        }
        Slot::Vacant => unreachable!("vacant slots never outlive a rebuild"),
    }
}

fn check_node<E: HamtEntry>(
    node: &Node<E>,
    shift: u32,
    path: u64,
    is_root: bool,
    count: &mut usize,
) {
    check_array(&node.slots, node.live());
    if !is_root {
        assert!(node.live() > 0, "only the root may be empty");
        if node.live() == 1 {
            assert!(
                matches!(node.slots[0], Slot::Branch(_)),
                "a lone leaf must be lifted into its parent"
            );
        }
    }
    let prefix_mask = if shift == 0 { 0 } else { (1u64 << shift) - 1 };
    let mut bits = node.bitmap;
    for slot in node.slots() {
        let bit = bits.trailing_zeros();
        bits &= bits - 1;
        let here = path | (u64::from(bit) << shift);
        let here_mask = prefix_mask | (MASK << shift);
        match slot {
            Slot::Leaf(e) => {
                assert_eq!(e.hash() & here_mask, here, "entry stored off its hash path");
                *count += 1;
            }
            Slot::Collision(h, es) => {
                assert!(es.len() >= 2, "a collision holds at least two entries");
                assert_eq!(h & here_mask, here, "collision stored off its hash path");
                for (i, e) in es.iter().enumerate() {
                    assert_eq!(e.hash(), *h, "collision entries share one hash");
                    assert!(
                        es[..i].iter().all(|o| o.key() != e.key()),
                        "keys in a collision are distinct"
                    );
                }
                *count += es.len();
            }
            Slot::Branch(child) => {
                assert!(shift + BITS < 64, "branch below the last hash fragment");
                check_node(child, shift + BITS, here, false, count);
            }
            Slot::Vacant => panic!("a vacant slot outlived its rebuild"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An entry whose hash the test chooses, to force collisions and deep paths.
    #[derive(Clone, Debug, PartialEq)]
    struct Item {
        key: u32,
        hash: u64,
        value: u32,
    }

    impl HamtEntry for Item {
        type Key = u32;
        fn key(&self) -> &u32 {
            &self.key
        }
        fn hash(&self) -> u64 {
            self.hash
        }
    }

    fn item(key: u32, hash: u64, value: u32) -> Item {
        Item { key, hash, value }
    }

    #[test]
    fn insert_get_remove_roundtrip_keeps_invariants() {
        let mut map = Hamt::default();
        for k in 0..2000u32 {
            assert!(map
                .insert(item(k, u64::from(k).wrapping_mul(0x9E37_79B9_7F4A_7C15), k))
                .is_none());
            map.check_invariants();
        }
        assert_eq!(map.len(), 2000);
        for k in 0..2000u32 {
            let h = u64::from(k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert_eq!(map.get(h, &k).map(|i| i.value), Some(k));
            assert_eq!(map.remove(h, &k).map(|i| i.key), Some(k));
            map.check_invariants();
        }
        assert_eq!(map.len(), 0);
        assert!(map.root.is_none());
    }

    #[test]
    fn full_hash_collisions_are_kept_apart_by_key() {
        let mut map = Hamt::default();
        for k in 0..5 {
            map.insert(item(k, 42, k));
            map.check_invariants();
        }
        // A neighbour that shares all but the top fragment forces the deepest branch.
        map.insert(item(99, 42 | (1 << 63), 99));
        map.check_invariants();
        for k in 0..5 {
            assert_eq!(map.get(42, &k).unwrap().value, k);
        }
        assert_eq!(map.get(42 | (1 << 63), &99).unwrap().value, 99);
        assert!(map.get(42, &7).is_none());
        for k in 0..5 {
            assert!(map.remove(42, &k).is_some());
            map.check_invariants();
        }
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn replacing_a_key_keeps_len() {
        let mut map = Hamt::default();
        map.insert(item(1, 7, 1));
        assert_eq!(map.insert(item(1, 7, 2)).map(|i| i.value), Some(1));
        assert_eq!(map.len(), 1);
        assert_eq!(map.get(7, &1).unwrap().value, 2);
    }

    #[test]
    fn writes_never_change_an_older_clone() {
        let mut map = Hamt::default();
        for k in 0..100u32 {
            map.insert(item(k, u64::from(k) * 31, k));
        }
        let before = map.clone();
        for k in 0..50u32 {
            map.remove(u64::from(k) * 31, &k);
        }
        map.insert(item(60, 60 * 31, 0));
        assert_eq!(before.len(), 100);
        for k in 0..100u32 {
            assert_eq!(before.get(u64::from(k) * 31, &k).unwrap().value, k);
        }
        before.check_invariants();
        map.check_invariants();
    }

    proptest::proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec((0u32..64, 0u8..4, proptest::bool::ANY), 1..300)) {
            // Hashes from a tiny space so collisions and shared paths are common.
            let hash_of = |k: u32| (u64::from(k % 9) * 0x0101_0101_0101_0101) ^ u64::from(k % 3);
            let mut map = Hamt::default();
            let mut model = BTreeMap::new();
            for (k, _, insert) in ops {
                if insert {
                    proptest::prop_assert_eq!(map.insert(item(k, hash_of(k), k)).is_some(), model.insert(k, k).is_some());
                } else {
                    proptest::prop_assert_eq!(map.remove(hash_of(k), &k).is_some(), model.remove(&k).is_some());
                }
                map.check_invariants();
                proptest::prop_assert_eq!(map.len(), model.len());
            }
            let mut seen = Vec::new();
            map.for_each(&mut |e: &Item| seen.push(e.key));
            seen.sort_unstable();
            proptest::prop_assert_eq!(seen, model.keys().copied().collect::<Vec<_>>());
        }
    }
}
