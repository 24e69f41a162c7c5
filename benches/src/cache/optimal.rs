//! Bélády's optimal policy, computed offline: the ceiling every row of `mini bench
//! cache` is held under.
//!
//! Knowing the whole trace, the best a cache of c entries can do is to keep, after each
//! request, the c keys whose next use comes soonest. The replay does that in two passes:
//!
//! 1. Backwards, `next_use[i]`: the index of the next request for the key requested at
//!    i, or [`NEVER`]. One hash map from key to the last index seen, O(n).
//! 2. Forwards, the cached keys in a `BTreeSet` ordered by (next use, key). A key
//!    cached when request i comes is in the set as exactly `(i, key)`, so a hit is one
//!    removal, with no second index; the key goes back in under its next use, and when
//!    the set holds c + 1 keys the one used farthest in the future leaves. O(n log c).
//!
//! The missed key competes with the cached ones: when its own next use is the farthest
//! (or never comes), it is the one that leaves, so it is served without being cached.
//! That is the optimum *with bypass*, and it has to be: Bélády's MIN as usually stated
//! must cache every missed key, and a cache with an admission filter (W-TinyLFU, moka)
//! may decline one, which on `A B A` with one entry beats MIN's 0 hits with 1. With
//! bypass the rule is optimal over every policy, admitting or not, for entries of one
//! size (the exchange argument of Bélády 1966 / Mattson et al. 1970 carries over
//! unchanged); the tests check it against an exhaustive search on small traces.
//!
//! Left out: entries of different sizes, where the optimum is NP-hard and only bounds
//! (Berger et al.'s FOO) are practical.

use std::collections::{BTreeSet, HashMap};

/// The next use of a key that is never requested again.
pub const NEVER: usize = usize::MAX;

/// For each request, the index of the next request for the same key, or [`NEVER`].
pub fn next_uses(keys: &[u64]) -> Vec<usize> {
    let mut next = vec![NEVER; keys.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (i, &key) in keys.iter().enumerate().rev() {
        if let Some(later) = seen.insert(key, i) {
            next[i] = later;
        }
    }
    next
}

/// Hits of the optimal cache of `capacity` entries on `keys`.
pub fn hits(keys: &[u64], capacity: u64) -> u64 {
    assert!(capacity >= 1, "a cache holds at least one entry");
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
    let next = next_uses(keys);
    let mut cached: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut hits = 0;
    for (i, &key) in keys.iter().enumerate() {
        if cached.remove(&(i, key)) {
            hits += 1;
        }
        cached.insert((next[i], key));
        if cached.len() > capacity {
            cached.pop_last();
        }
        debug_assert!(cached.len() <= capacity);
        // Every cached key is next wanted after now: nothing stale stays in the set.
        debug_assert!(cached.first().is_none_or(|&(at, _)| at > i));
    }
    hits
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn next_uses_point_at_the_next_request_for_the_same_key() {
        assert_eq!(next_uses(&[7, 8, 7, 7, 9]), [2, NEVER, 3, NEVER, NEVER]);
    }

    #[test]
    fn hand_computed_replays() {
        // 1 2 1 3 2 1 4 1 with two entries: hits at the 3rd (1), 5th (2), 6th (1) and
        // 8th (1) requests; 3 and 4 are never asked for again, so they are served and
        // not cached, where LRU would let them push out 2 and 1 (and hit twice).
        assert_eq!(hits(&[1, 2, 1, 3, 2, 1, 4, 1], 2), 4);
        // A loop of 10 keys through 9 entries: LRU never hits; the optimum loses one
        // key a round, so it hits 8 of every 9 requests after the first round, roughly.
        let looped: Vec<u64> = (0..10).cycle().take(1000).collect();
        let optimal = hits(&looped, 9);
        assert!(optimal > 850 && optimal < 990, "{optimal}");
        assert_eq!(hits(&looped, 10), 990, "everything fits: only the first round misses");
        assert_eq!(hits(&[], 3), 0);
    }

    /// The most hits any policy can get, by trying every choice: after each request the
    /// cache may become any subset of (what it held + the requested key) of at most
    /// `capacity` keys. Keys are 0..8, so a cache is a bit mask.
    fn exhaustive_hits(keys: &[u64], capacity: u32) -> u64 {
        // best[mask]: the most hits so far ending with the cache holding `mask`.
        let mut best = vec![None::<u64>; 256];
        best[0] = Some(0);
        for &key in keys {
            let bit = 1u32 << key;
            let mut next = vec![None::<u64>; 256];
            for (mask, hits) in best.iter().enumerate().filter_map(|(m, h)| Some((m as u32, (*h)?))) {
                let hits = hits + u64::from(mask & bit != 0);
                let pool = mask | bit;
                // Every subset of the pool, by the standard sub-mask walk.
                let mut sub = pool;
                loop {
                    if sub.count_ones() <= capacity {
                        let slot = &mut next[sub as usize];
                        *slot = Some(slot.map_or(hits, |h| h.max(hits)));
                    }
                    if sub == 0 {
                        break;
                    }
                    sub = (sub - 1) & pool;
                }
            }
            best = next;
        }
        best.into_iter().flatten().max().unwrap_or(0)
    }

    /// Bélády as often written, which must cache every missed key: evict the cached key
    /// used farthest in the future, never the new one.
    fn without_bypass(keys: &[u64], capacity: usize) -> u64 {
        let next = next_uses(keys);
        let mut cached: BTreeSet<(usize, u64)> = BTreeSet::new();
        let mut hits = 0;
        for (i, &key) in keys.iter().enumerate() {
            if cached.remove(&(i, key)) {
                hits += 1;
            } else if cached.len() == capacity {
                cached.pop_last();
            }
            cached.insert((next[i], key));
        }
        hits
    }

    #[test]
    fn without_bypass_is_beaten_and_the_exhaustive_search_catches_it() {
        assert_eq!(exhaustive_hits(&[0, 1, 0], 1), 1, "serve 1 without caching it");
        assert_eq!(hits(&[0, 1, 0], 1), 1);
        assert_eq!(without_bypass(&[0, 1, 0], 1), 0, "the broken variant is caught");
    }

    proptest! {
        #[test]
        fn is_the_optimum(keys in proptest::collection::vec(0u64..8, 0..40), capacity in 1u32..5) {
            prop_assert_eq!(hits(&keys, u64::from(capacity)), exhaustive_hits(&keys, capacity));
        }

        #[test]
        fn is_at_least_lru(keys in proptest::collection::vec(0u64..30, 0..400), capacity in 1u64..20) {
            prop_assert!(hits(&keys, capacity) >= super::super::lru::hits(&keys, capacity));
        }
    }
}
