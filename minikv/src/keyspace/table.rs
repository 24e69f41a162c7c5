//! `Table`: one database's keys inside one shard, with the index of keys that expire.
//!
//! Redis keeps two dicts per database: `dict` (key to value) and `expires` (key to
//! deadline). We keep one [`Dict`] of entries plus a dense vector `volatile` of the
//! entries that have a deadline. Each entry remembers its slot in `volatile`, and each
//! `volatile` slot remembers the entry's position in the dict, so every operation stays
//! O(1) and the active expiry cycle can sample keys with a TTL uniformly at random.
//!
//! ```text
//!  dict entries:  [ a (no ttl) | b (vol=1) | c (no ttl) | d (vol=0) ]
//!  volatile:      [ (pos 3, t=1700..) , (pos 1, t=1650..) ]
//! ```
//!
//! Both sides move when the dict swap-removes an entry or `volatile` swap-removes a
//! slot; [`Table::check_invariants`] asserts they still point at each other.
//!
//! Deadlines are absolute Unix times in milliseconds, as Redis stores them and as the
//! AOF records them, so a restart does not extend anyone's TTL.

use super::compact::CompactBytes;
use super::dict::Dict;
use super::value::Value;

/// No slot in `volatile`: the key does not expire.
const NO_TTL: u32 = u32::MAX;

/// One key's value plus its bookkeeping. 32 bytes.
#[derive(Clone, Debug)]
pub struct Entry {
    pub value: Value,
    /// Last access time (LRU policies) or the logarithmic access counter and its
    /// decay time (LFU policies), packed the way Redis packs its 24-bit `lru` field.
    /// See [`crate::eviction`].
    pub lru: u32,
    /// Slot in `Table::volatile`, or `NO_TTL`.
    vol: u32,
}

impl Entry {
    pub fn has_ttl(&self) -> bool {
        self.vol != NO_TTL
    }
}

const _: () = assert!(std::mem::size_of::<Entry>() == 32);

#[derive(Default)]
pub struct Table {
    dict: Dict<CompactBytes, Entry>,
    /// `(position in dict, deadline in Unix ms)` of every entry that has a TTL.
    volatile: Vec<(u32, u64)>,
}

impl Table {
    #[inline]
    pub fn len(&self) -> usize {
        self.dict.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.dict.is_empty()
    }

    /// How many keys have a TTL (INFO's `expires=`).
    pub fn volatile_len(&self) -> usize {
        self.volatile.len()
    }

    #[inline]
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        self.dict.find_hashed(hash, key)
    }

    #[inline]
    pub fn key_at(&self, pos: usize) -> &CompactBytes {
        self.dict.at(pos).0
    }

    #[inline]
    pub fn entry(&self, pos: usize) -> &Entry {
        self.dict.at(pos).1
    }

    #[inline]
    pub fn entry_mut(&mut self, pos: usize) -> &mut Entry {
        self.dict.at_mut(pos).1
    }

    /// The deadline of the entry at `pos`, if it has one.
    #[inline]
    pub fn expire_at(&self, pos: usize) -> Option<u64> {
        let vol = self.dict.at(pos).1.vol;
        (vol != NO_TTL).then(|| self.volatile[vol as usize].1)
    }

    /// Adds a key the caller knows is absent, without a TTL. Returns its position.
    pub fn insert_new(&mut self, hash: u64, key: &[u8], value: Value, lru: u32) -> usize {
        self.dict.insert_new_hashed(hash, CompactBytes::new(key), Entry { value, lru, vol: NO_TTL })
    }

    /// Sets (`Some`) or clears (`None`) the deadline of the entry at `pos`.
    pub fn set_expire(&mut self, pos: usize, at: Option<u64>) {
        let vol = self.dict.at(pos).1.vol;
        match (at, vol) {
            (Some(at), NO_TTL) => {
                assert!(self.volatile.len() < NO_TTL as usize);
                self.volatile.push((pos as u32, at));
                self.dict.at_mut(pos).1.vol = (self.volatile.len() - 1) as u32;
            }
            (Some(at), vol) => self.volatile[vol as usize].1 = at,
            (None, NO_TTL) => {}
            (None, vol) => {
                self.remove_volatile_slot(vol as usize);
                self.dict.at_mut(pos).1.vol = NO_TTL;
            }
        }
    }

    fn remove_volatile_slot(&mut self, slot: usize) {
        self.volatile.swap_remove(slot);
        if slot < self.volatile.len() {
            let moved_pos = self.volatile[slot].0 as usize;
            self.dict.at_mut(moved_pos).1.vol = slot as u32;
        }
        if self.volatile.capacity() > 64 && self.volatile.len() * 10 < self.volatile.capacity() {
            self.volatile.shrink_to(self.volatile.len() * 2);
        }
    }

    /// Removes the entry at `pos` and returns it. Another entry may move into `pos`.
    pub fn remove_at(&mut self, pos: usize) -> (CompactBytes, Entry) {
        let vol = self.dict.at(pos).1.vol;
        if vol != NO_TTL {
            self.remove_volatile_slot(vol as usize);
        }
        let ((key, entry), moved) = self.dict.swap_remove_index(pos);
        if let Some(new_pos) = moved {
            let moved_vol = self.dict.at(new_pos).1.vol;
            if moved_vol != NO_TTL {
                self.volatile[moved_vol as usize].0 = new_pos as u32;
            }
        }
        (key, Entry { vol: NO_TTL, ..entry })
    }

    /// Replaces the value at `pos`, keeping its TTL.
    pub fn replace_value(&mut self, pos: usize, value: Value) -> Value {
        std::mem::replace(&mut self.dict.at_mut(pos).1.value, value)
    }

    /// A uniformly random key with a TTL: `(position, deadline)`.
    #[inline]
    pub fn random_volatile(&self, rand: u64) -> Option<(usize, u64)> {
        if self.volatile.is_empty() {
            return None;
        }
        let (pos, at) = self.volatile[(rand % self.volatile.len() as u64) as usize];
        Some((pos as usize, at))
    }

    /// A uniformly random position.
    #[inline]
    pub fn random_pos(&self, rand: u64) -> Option<usize> {
        if self.dict.is_empty() {
            None
        } else {
            Some((rand % self.dict.len() as u64) as usize)
        }
    }

    pub fn clear(&mut self) {
        self.dict.clear();
        self.volatile = Vec::new();
    }

    pub fn dict(&self) -> &Dict<CompactBytes, Entry> {
        &self.dict
    }

    /// Asserts that `volatile` and the entries point at each other.
    pub fn check_invariants(&self) {
        self.dict.check_invariants();
        let mut with_ttl = 0;
        for (pos, (_, e)) in self.dict.iter().enumerate() {
            if e.vol != NO_TTL {
                with_ttl += 1;
                assert_eq!(self.volatile[e.vol as usize].0 as usize, pos);
            }
        }
        assert_eq!(with_ttl, self.volatile.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::dict::hash_bytes;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8),
        Expire(u8, u64),
        Persist(u8),
        Del(u8),
    }

    proptest! {
        #[test]
        fn ttl_index_stays_consistent(ops in prop::collection::vec(prop_oneof![
            any::<u8>().prop_map(Op::Set),
            (any::<u8>(), 1u64..1000).prop_map(|(k, t)| Op::Expire(k, t)),
            any::<u8>().prop_map(Op::Persist),
            any::<u8>().prop_map(Op::Del),
        ], 0..400)) {
            let mut t = Table::default();
            let mut model: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
            for op in ops {
                let (k, key) = match &op { Op::Set(k) | Op::Expire(k, _) | Op::Persist(k) | Op::Del(k) => (*k, vec![*k % 64]) };
                let _ = k;
                let h = hash_bytes(&key);
                let pos = t.find(h, &key);
                match op {
                    Op::Set(_) => if pos.is_none() {
                        t.insert_new(h, &key, Value::str(b"v"), 0);
                        model.insert(key, None);
                    },
                    Op::Expire(_, at) => if let Some(p) = pos { t.set_expire(p, Some(at)); model.insert(key, Some(at)); },
                    Op::Persist(_) => if let Some(p) = pos { t.set_expire(p, None); model.insert(key, None); },
                    Op::Del(_) => if let Some(p) = pos { t.remove_at(p); model.remove(&key); },
                }
                t.check_invariants();
            }
            prop_assert_eq!(t.len(), model.len());
            for (key, ttl) in &model {
                let p = t.find(hash_bytes(key), key).unwrap();
                prop_assert_eq!(t.expire_at(p), *ttl);
            }
            prop_assert_eq!(t.volatile_len(), model.values().filter(|v| v.is_some()).count());
        }
    }
}
