//! An exact LRU cache of integer keys: the baseline row of `mini bench cache`.
//!
//! Exact means what the textbook means: every hit moves its key to the front, and a
//! miss in a full cache evicts the key touched longest ago, always. Real LRU caches
//! bend this for speed (Redis samples five keys, Linux keeps two approximate lists,
//! minicache's own LRU may batch its reorderings); this one is the definition they are
//! measured against, and it is single-threaded because a replay is.
//!
//! The recency list is a doubly-linked list threaded through a `Vec` (slot indices, not
//! pointers), with a `HashMap` from key to slot: O(1) a request, no `unsafe`, and the
//! slot of an evicted key is reused by the key that replaces it.
//!
//! Left out: values (a replay only needs to know whether a key was there) and weights.

use std::collections::HashMap;

/// The end of the list.
const NIL: u32 = u32::MAX;

/// Entries an `ExactLru` can hold: slots are `u32`, and `NIL` is taken.
pub const MAX_CAPACITY: u64 = u32::MAX as u64 - 1;

#[derive(Debug, Clone)]
struct Slot {
    key: u64,
    /// Toward the most recently used end.
    newer: u32,
    /// Toward the least recently used end.
    older: u32,
}

/// An LRU cache of at most `capacity` keys.
#[derive(Debug, Clone)]
pub struct ExactLru {
    capacity: usize,
    slots: Vec<Slot>,
    index: HashMap<u64, u32>,
    /// The most recently used slot, or NIL when empty.
    newest: u32,
    /// The least recently used slot: the next to go.
    oldest: u32,
}

impl ExactLru {
    /// # Panics
    /// When `capacity` is 0 or above [`MAX_CAPACITY`]; the replayer checks capacities
    /// before it builds a cache.
    pub fn new(capacity: u64) -> ExactLru {
        assert!((1..=MAX_CAPACITY).contains(&capacity), "capacity {capacity} out of 1..={MAX_CAPACITY}");
        let capacity = capacity as usize;
        // Reserve for the keys a trace is likely to have, not for a capacity of billions.
        let reserve = capacity.min(1 << 20);
        ExactLru {
            capacity,
            slots: Vec::with_capacity(reserve),
            index: HashMap::with_capacity(reserve),
            newest: NIL,
            oldest: NIL,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `key` is cached; a hit makes it the most recently used.
    pub fn get(&mut self, key: u64) -> bool {
        match self.index.get(&key) {
            Some(&slot) => {
                self.unlink(slot);
                self.push_newest(slot);
                true
            }
            None => false,
        }
    }

    /// Caches `key` as the most recently used, evicting the least recently used key
    /// when full; returns the evicted key. Inserting a cached key only refreshes it.
    pub fn insert(&mut self, key: u64) -> Option<u64> {
        if self.get(key) {
            return None;
        }
        let mut evicted = None;
        let slot = if self.index.len() == self.capacity {
            let victim = self.oldest;
            assert_ne!(victim, NIL, "a full cache of capacity >= 1 has an oldest entry");
            self.unlink(victim);
            let old_key = self.slots[victim as usize].key;
            self.index.remove(&old_key);
            evicted = Some(old_key);
            self.slots[victim as usize].key = key;
            victim
        } else {
            self.slots.push(Slot { key, newer: NIL, older: NIL });
            (self.slots.len() - 1) as u32
        };
        self.push_newest(slot);
        self.index.insert(key, slot);
        assert!(self.index.len() <= self.capacity, "never more than capacity entries");
        evicted
    }

    /// Takes `slot` out of the list.
    fn unlink(&mut self, slot: u32) {
        let Slot { newer, older, .. } = self.slots[slot as usize];
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    /// Puts an unlinked `slot` at the most recently used end.
    fn push_newest(&mut self, slot: u32) {
        let old_newest = self.newest;
        self.slots[slot as usize].newer = NIL;
        self.slots[slot as usize].older = old_newest;
        match old_newest {
            NIL => self.oldest = slot,
            n => self.slots[n as usize].newer = slot,
        }
        self.newest = slot;
    }

    /// The cached keys from most to least recently used (for tests).
    pub fn keys_newest_first(&self) -> Vec<u64> {
        let mut keys = Vec::with_capacity(self.len());
        let mut at = self.newest;
        while at != NIL {
            keys.push(self.slots[at as usize].key);
            at = self.slots[at as usize].older;
        }
        keys
    }
}

/// Hits of an exact LRU of `capacity` entries replaying `keys` read-through.
pub fn hits(keys: &[u64], capacity: u64) -> u64 {
    let mut lru = ExactLru::new(capacity);
    let mut hits = 0;
    for &key in keys {
        if lru.get(key) {
            hits += 1;
        } else {
            lru.insert(key);
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = ExactLru::new(2);
        assert_eq!(lru.insert(1), None);
        assert_eq!(lru.insert(2), None);
        assert!(lru.get(1), "1 is now newer than 2");
        assert_eq!(lru.insert(3), Some(2));
        assert_eq!(lru.keys_newest_first(), [3, 1]);
        assert!(!lru.get(2));
        assert_eq!(lru.insert(1), None, "a cached key is refreshed, not duplicated");
        assert_eq!(lru.keys_newest_first(), [1, 3]);
    }

    /// A hand-worked replay, the same one the CLI test checks through `mini bench cache`:
    /// capacity 2, trace 1 2 1 3 2 1 4 1 → hits at the 3rd (1) and the 8th (1) request.
    #[test]
    fn a_hand_computed_replay() {
        assert_eq!(hits(&[1, 2, 1, 3, 2, 1, 4, 1], 2), 2);
        assert_eq!(hits(&[1, 2, 1, 3, 2, 1, 4, 1], 3), 4, "hits at the 3rd, 5th, 6th and 8th requests");
        // A loop one longer than the cache is LRU's worst case: never a hit.
        let looped: Vec<u64> = (0..10).cycle().take(1000).collect();
        assert_eq!(hits(&looped, 9), 0);
        assert_eq!(hits(&looped, 10), 990);
    }

    /// The obvious LRU: a Vec ordered newest first, O(n) a request.
    fn reference_hits(keys: &[u64], capacity: usize) -> u64 {
        let mut order: Vec<u64> = Vec::new();
        let mut hits = 0;
        for &key in keys {
            if let Some(at) = order.iter().position(|&k| k == key) {
                hits += 1;
                order.remove(at);
            } else if order.len() == capacity {
                order.pop();
            }
            order.insert(0, key);
        }
        hits
    }

    proptest! {
        #[test]
        fn matches_the_obvious_lru(keys in proptest::collection::vec(0u64..20, 0..300), capacity in 1usize..12) {
            prop_assert_eq!(hits(&keys, capacity as u64), reference_hits(&keys, capacity));
        }
    }
}
