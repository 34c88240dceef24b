//! Owners: per-tenant counts and caps beside the registry's global limit.
//!
//! A watch may name an [`OwnerId`] (a tenant, a client connection). Each owner counts its
//! active watchers against its own cap, set at run time
//! ([`WatchRegistry::set_owner_limit`](crate::WatchRegistry::set_owner_limit)), or the
//! registry's default cap ([`RegistryOptions::with_owner_limit`](crate::RegistryOptions::with_owner_limit)),
//! so that one tenant's watch storm is refused without refusing anyone else.
//!
//! The book is one mutex, taken only by registrations and removals of owned watchers. A
//! refusal finds the owner's entry (or its absence under a default cap of 0) and returns:
//! it allocates nothing. An owned watcher's count is released wherever its unit of the
//! global limit is (the swap that takes it out of the published snapshot, a publish that
//! unwound before its swap, or a group member's release), found by its id.
//!
//! An owner's entry, with its `refused` count, lives while it has watchers or a cap of its
//! own: an owner without either starts again from 0, and one refused under a default cap
//! of 0 is counted only in the registry's `owner_refusals` (an entry would allocate).

use std::collections::HashMap;

use crate::spec::RegisterError;

/// Who a watch belongs to, for per-owner caps and gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(pub u64);

/// One owner's gauges (see [`MetricsHandle::owner`](crate::MetricsHandle::owner)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnerMetrics {
    /// Active watchers of this owner.
    pub watchers: usize,
    /// Its cap: its own if set, else the registry's default (`usize::MAX`: none).
    pub limit: usize,
    /// Registrations refused because the owner was at its cap, since its entry last began
    /// (an owner with no watcher and no cap of its own has none and starts again from 0; a
    /// refusal of an owner without an entry, which only a default cap of 0 makes, is
    /// counted only in `Metrics::owner_refusals`).
    pub refused: u64,
}

#[derive(Default)]
struct Entry {
    watchers: usize,
    /// The owner's own cap, if one was set.
    limit: Option<usize>,
    refused: u64,
}

/// Gives back most of a table that emptied to an eighth of its room (a burst of many owners,
/// or of owned watchers, must not keep its memory for good): amortised O(1), as the
/// shrink halves the room at most once per that many removals.
fn shrink_if_sparse<K, V>(map: &mut HashMap<K, V, ahash::RandomState>)
where
    K: std::hash::Hash + Eq,
{
    if map.capacity() > 64 && map.len() * 8 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// Per-owner counts and caps, and which owner each owned watcher belongs to.
pub(crate) struct OwnerBook {
    owners: HashMap<OwnerId, Entry, ahash::RandomState>,
    of_watcher: HashMap<u64, OwnerId, ahash::RandomState>,
}

impl OwnerBook {
    pub(crate) fn new() -> Self {
        Self {
            owners: HashMap::default(),
            of_watcher: HashMap::default(),
        }
    }

    /// Sets (`Some`) or clears (`None`) `owner`'s own cap. Watchers already registered stay.
    pub(crate) fn set_limit(&mut self, owner: OwnerId, limit: Option<usize>) {
        match (self.owners.get_mut(&owner), limit) {
            (Some(entry), limit) => {
                entry.limit = limit;
                if entry.watchers == 0 && entry.limit.is_none() {
                    self.owners.remove(&owner);
                    shrink_if_sparse(&mut self.owners);
                }
            }
            (None, Some(limit)) => {
                self.owners.insert(
                    owner,
                    Entry {
                        limit: Some(limit),
                        ..Entry::default()
                    },
                );
            }
            (None, None) => {}
        }
    }

    /// Counts one more watcher for `owner`, or refuses without allocating if it is at its
    /// cap (its own, else `default`; the refusal is counted when the owner has an entry).
    pub(crate) fn reserve(&mut self, owner: OwnerId, default: usize) -> Result<(), RegisterError> {
        match self.owners.get_mut(&owner) {
            Some(entry) => {
                let max = entry.limit.unwrap_or(default);
                if entry.watchers >= max {
                    entry.refused += 1;
                    return Err(RegisterError::OwnerLimitExceeded { owner, max });
                }
                entry.watchers += 1;
            }
            None if default == 0 => {
                return Err(RegisterError::OwnerLimitExceeded { owner, max: 0 });
            }
            None => {
                self.owners.insert(
                    owner,
                    Entry {
                        watchers: 1,
                        ..Entry::default()
                    },
                );
            }
        }
        Ok(())
    }

    /// Gives back a unit taken by [`Self::reserve`] for a registration refused afterwards.
    pub(crate) fn unreserve(&mut self, owner: OwnerId) {
        self.release(owner);
    }

    /// Records that watcher `id` belongs to `owner` (after a successful reserve).
    pub(crate) fn bind(&mut self, id: u64, owner: OwnerId) {
        self.of_watcher.insert(id, owner);
    }

    /// Releases the count of owned watcher `id`, removed from the index.
    pub(crate) fn released(&mut self, id: u64) {
        if let Some(owner) = self.of_watcher.remove(&id) {
            self.release(owner);
        }
    }

    fn release(&mut self, owner: OwnerId) {
        if let Some(entry) = self.owners.get_mut(&owner) {
            entry.watchers -= 1;
            if entry.watchers == 0 && entry.limit.is_none() {
                self.owners.remove(&owner);
                shrink_if_sparse(&mut self.owners);
            }
        }
        shrink_if_sparse(&mut self.of_watcher);
    }

    /// `owner`'s gauges, `default` being the registry's default cap.
    pub(crate) fn metrics(&self, owner: OwnerId, default: usize) -> OwnerMetrics {
        let entry = self.owners.get(&owner);
        OwnerMetrics {
            watchers: entry.map_or(0, |e| e.watchers),
            limit: entry.and_then(|e| e.limit).unwrap_or(default),
            refused: entry.map_or(0, |e| e.refused),
        }
    }

    /// Every owner with watchers or a cap of its own, and its gauges.
    pub(crate) fn all(&self, default: usize) -> Vec<(OwnerId, OwnerMetrics)> {
        let mut all: Vec<_> = self
            .owners
            .keys()
            .map(|&o| (o, self.metrics(o, default)))
            .collect();
        all.sort_unstable_by_key(|&(o, _)| o);
        all
    }

    /// The owned watchers bound, by id, ascending.
    pub(crate) fn bound_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.of_watcher.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Panics if the counts disagree with the bindings.
    pub(crate) fn check_invariants(&self) {
        let mut counted: HashMap<OwnerId, usize> = HashMap::new();
        for owner in self.of_watcher.values() {
            *counted.entry(*owner).or_default() += 1;
        }
        for (owner, entry) in &self.owners {
            assert_eq!(
                counted.get(owner).copied().unwrap_or(0),
                entry.watchers,
                "owner {owner:?}'s count out of step with its watchers"
            );
        }
        for owner in counted.keys() {
            assert!(
                self.owners.contains_key(owner),
                "a bound owner has an entry"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_owners_gives_its_memory_back_when_they_leave() {
        let mut book = OwnerBook::new();
        let n = 100_000u64;
        for id in 0..n {
            book.reserve(OwnerId(id), usize::MAX).unwrap();
            book.bind(id, OwnerId(id));
        }
        book.check_invariants();
        for id in 0..n {
            book.released(id);
        }
        book.check_invariants();
        assert!(book.all(usize::MAX).is_empty());
        assert!(
            book.owners.capacity() <= 64 && book.of_watcher.capacity() <= 64,
            "room for {} owners and {} bindings kept",
            book.owners.capacity(),
            book.of_watcher.capacity()
        );
    }
}
