//! `Dict`: the hash table behind every keyspace table, hash and set.
//!
//! Redis's `dict` is a chained hash table that it can sample at random (for eviction
//! and active expiry) and walk with a cursor that survives resizes (for SCAN). We get
//! both properties from a different layout, the one `indexmap` popularised:
//!
//! ```text
//!   index: hashbrown::HashTable<u32>      entries: Vec<(K, V)>, dense
//!   +---+---+---+---+---+---+---+---+     +------+------+------+------+
//!   |   | 2 |   | 0 |   | 3 | 1 |   | --> | k0,v | k1,v | k2,v | k3,v |
//!   +---+---+---+---+---+---+---+---+     +------+------+------+------+
//! ```
//!
//! - A random entry is `entries[rand % len]`: O(1), unbiased, no empty buckets to skip.
//! - Removal swaps the last entry into the hole (`swap_remove`) and fixes its index, so
//!   the entries stay dense. [`Dict::swap_remove_index`] reports which entry moved so
//!   that owners of side tables (the TTL index) can follow it.
//! - SCAN walks positions from the end towards the start. An entry that moves does so
//!   from the end (already visited) into a hole (not visited yet or already visited),
//!   so every entry present for a whole scan is returned at least once: the guarantee
//!   Redis documents for SCAN. New entries are appended to the already-visited end.
//!
//! The index stores `u32` positions (4 bytes a slot instead of 8) and no hashes; a
//! resize recomputes hashes from the keys. Hashes come from foldhash with a seed drawn
//! at start-up, so an attacker cannot precompute colliding keys.
//!
//! Left out: incremental rehashing. A resize moves a whole table at once; because the
//! keyspace is split into many shards, one table is a small fraction of all keys and a
//! resize pauses only its own shard.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use hashbrown::HashTable;

fn hasher() -> &'static foldhash::fast::FixedState {
    static STATE: OnceLock<foldhash::fast::FixedState> = OnceLock::new();
    STATE.get_or_init(|| {
        let seed = foldhash::fast::RandomState::default().hash_one(0u64);
        foldhash::fast::FixedState::with_seed(seed)
    })
}

/// The hash of a key, used both to pick its shard and to find it inside the shard.
#[inline]
pub fn hash_bytes(key: &[u8]) -> u64 {
    hasher().hash_one(key)
}

/// A dict keyed by byte strings.
pub struct Dict<K, V> {
    entries: Vec<(K, V)>,
    index: HashTable<u32>,
}

impl<K: AsRef<[u8]>, V> Default for Dict<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: AsRef<[u8]>, V> Dict<K, V> {
    pub fn new() -> Self {
        Dict { entries: Vec::new(), index: HashTable::new() }
    }

    pub fn with_capacity(n: usize) -> Self {
        Dict { entries: Vec::with_capacity(n), index: HashTable::with_capacity(n) }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Position of `key`, given its hash.
    #[inline]
    pub fn find_hashed(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.index.find(hash, |&i| entries[i as usize].0.as_ref() == key).map(|&i| i as usize)
    }

    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        self.find_hashed(hash_bytes(key), key)
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.find(key).map(|i| &self.entries[i].1)
    }

    #[inline]
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.find(key).map(move |i| &mut self.entries[i].1)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    #[inline]
    pub fn at(&self, pos: usize) -> (&K, &V) {
        let (k, v) = &self.entries[pos];
        (k, v)
    }

    #[inline]
    pub fn at_mut(&mut self, pos: usize) -> (&K, &mut V) {
        let (k, v) = &mut self.entries[pos];
        (&*k, v)
    }

    /// Appends a key that the caller knows is absent; returns its position.
    pub fn insert_new_hashed(&mut self, hash: u64, key: K, value: V) -> usize {
        debug_assert!(self.find_hashed(hash, key.as_ref()).is_none(), "duplicate key");
        let pos = self.entries.len();
        assert!(pos < u32::MAX as usize, "a dict holds at most 2^32-1 entries");
        let entries = &self.entries;
        self.index.insert_unique(hash, pos as u32, |&i| hash_bytes(entries[i as usize].0.as_ref()));
        self.entries.push((key, value));
        pos
    }

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = hash_bytes(key.as_ref());
        match self.find_hashed(hash, key.as_ref()) {
            Some(pos) => Some(std::mem::replace(&mut self.entries[pos].1, value)),
            None => {
                self.insert_new_hashed(hash, key, value);
                None
            }
        }
    }

    /// Removes the entry at `pos` by moving the last entry into its place.
    /// Returns the removed entry and, if an entry moved, its new position (`pos`).
    pub fn swap_remove_index(&mut self, pos: usize) -> ((K, V), Option<usize>) {
        let last = self.entries.len() - 1;
        let hash = hash_bytes(self.entries[pos].0.as_ref());
        match self.index.find_entry(hash, |&i| i as usize == pos) {
            Ok(slot) => {
                slot.remove();
            }
            Err(_) => unreachable!("dict index lost entry {pos}"),
        }
        let moved = if pos != last {
            let moved_hash = hash_bytes(self.entries[last].0.as_ref());
            let slot =
                self.index.find_mut(moved_hash, |&i| i as usize == last).expect("dict index lost the last entry");
            *slot = pos as u32;
            Some(pos)
        } else {
            None
        };
        let removed = self.entries.swap_remove(pos);
        self.maybe_shrink();
        (removed, moved)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let pos = self.find(key)?;
        Some(self.swap_remove_index(pos).0 .1)
    }

    pub fn clear(&mut self) {
        self.entries = Vec::new();
        self.index = HashTable::new();
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn into_entries(self) -> Vec<(K, V)> {
        self.entries
    }

    /// Bytes of table overhead (entries and index), for memory estimates.
    pub fn table_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(K, V)>() + self.index.capacity() * 5
    }

    /// Gives memory back after mass deletion (expiry of many keys, SPOP of most of a
    /// set). Redis shrinks a dict when it is under 10% full; we do the same, keeping
    /// room to double so that a table hovering at the threshold does not thrash.
    fn maybe_shrink(&mut self) {
        let len = self.entries.len();
        let cap = self.entries.capacity();
        if cap > 64 && len * 10 < cap {
            let target = (len * 2).max(16);
            self.entries.shrink_to(target);
            let entries = &self.entries;
            self.index.shrink_to(target, |&i| hash_bytes(entries[i as usize].0.as_ref()));
        }
    }

    /// Checks that the index and the entries agree. Used by tests and debug assertions.
    pub fn check_invariants(&self) {
        assert_eq!(self.index.len(), self.entries.len());
        for (pos, (k, _)) in self.entries.iter().enumerate() {
            assert_eq!(self.find(k.as_ref()), Some(pos));
        }
    }
}

impl<K: AsRef<[u8]> + Clone, V: Clone> Clone for Dict<K, V> {
    fn clone(&self) -> Self {
        Dict { entries: self.entries.clone(), index: self.index.clone() }
    }
}

/// A SCAN cursor position inside one dict: positions `< remaining` are still to be
/// visited, walking downwards. See the module docs for why downwards.
///
/// Visits up to `count` entries starting below `remaining` (`0` means "start from the
/// end"), calls `visit` on each, and returns the next `remaining`, `0` when done.
pub fn scan_positions<K: AsRef<[u8]>, V>(
    dict: &Dict<K, V>,
    remaining: usize,
    count: usize,
    mut visit: impl FnMut(&K, &V),
) -> usize {
    let mut pos = if remaining == 0 { dict.len() } else { remaining.min(dict.len()) };
    let mut visited = 0;
    while pos > 0 && visited < count.max(1) {
        pos -= 1;
        let (k, v) = dict.at(pos);
        visit(k, v);
        visited += 1;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
    }

    proptest! {
        #[test]
        fn behaves_like_a_hashmap(ops in prop::collection::vec(prop_oneof![
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            any::<u8>().prop_map(Op::Remove),
        ], 0..600)) {
            let mut dict: Dict<Vec<u8>, u32> = Dict::new();
            let mut model: HashMap<Vec<u8>, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let key = vec![k; (k % 30) as usize];
                        prop_assert_eq!(dict.insert(key.clone(), v), model.insert(key, v));
                    }
                    Op::Remove(k) => {
                        let key = vec![k; (k % 30) as usize];
                        prop_assert_eq!(dict.remove(&key), model.remove(&key));
                    }
                }
            }
            dict.check_invariants();
            prop_assert_eq!(dict.len(), model.len());
            for (k, v) in &model {
                prop_assert_eq!(dict.get(k), Some(v));
            }
        }

        /// SCAN's guarantee: an entry present for the whole scan is returned, even when
        /// other entries are removed and added between calls.
        #[test]
        fn scan_returns_every_entry_present_throughout(
            initial in 1usize..200,
            churn in prop::collection::vec((any::<bool>(), any::<u16>()), 0..200),
            count in 1usize..20,
        ) {
            let mut dict: Dict<Vec<u8>, ()> = Dict::new();
            for i in 0..initial {
                dict.insert(format!("k{i}").into_bytes(), ());
            }
            let stable: Vec<Vec<u8>> = (0..initial).step_by(3).map(|i| format!("k{i}").into_bytes()).collect();
            let mut seen = std::collections::HashSet::new();
            let mut cursor = 0;
            let mut churn = churn.into_iter();
            loop {
                cursor = scan_positions(&dict, cursor, count, |k, _| { seen.insert(k.clone()); });
                if cursor == 0 { break; }
                if let Some((add, n)) = churn.next() {
                    if add {
                        dict.insert(format!("new{n}").into_bytes(), ());
                    } else {
                        let victim = format!("k{}", n as usize % initial).into_bytes();
                        if !stable.contains(&victim) { dict.remove(&victim); }
                    }
                }
            }
            for k in &stable {
                prop_assert!(seen.contains(k), "missed {:?}", String::from_utf8_lossy(k));
            }
        }
    }
}
