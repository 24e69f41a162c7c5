//! The rows of `mini bench cache`: every cache replayed, and how each is set up.
//!
//! Every contender replays the same trace the same way, single-threaded and
//! read-through: `get` each key; a miss counts and inserts it (the value is the key, so a
//! hit that returns anything else is a bug in that cache and stops the run). What differs
//! is only how each is built, and each is built to be exact where it can be:
//!
//! - **minicache** (`Cache::builder().max_capacity(N).shards(1)`, its default policy)
//!   and **minicache-wtinylfu / -s3fifo / -lru** (the same, with `.policy(..)`): one
//!   shard, so the capacity is one budget rather than N/shards per shard.
//! - **moka** (`moka::sync::Cache::builder().max_capacity(N)`): moka applies reads and
//!   writes to its policy lazily, from buffers drained every 64 operations or so; until
//!   then the cache may hold more than N entries and its policy has not seen the latest
//!   accesses. The replay calls `run_pending_tasks()` after every request, so each
//!   decision is made with everything before it applied: the hit ratio of moka's policy,
//!   not of its batching. minicache gets the same call after every request, for the
//!   same reason.
//! - **quick_cache** (`quick_cache::sync::Cache` with its default options): it shards
//!   itself by the core count (4 x cores, at least 32 entries a shard), so on a 2-core
//!   machine a capacity of 1000 is 8 shards of 125. That is quick_cache as people use
//!   it (its unsharded `unsync::Cache` differs by a few tenths of a point).
//! - **lru**: the exact LRU of [`super::lru`].
//! - **optimal**: Bélády's, offline ([`super::optimal`]).
//!
//! # Seeds
//!
//! moka and quick_cache hash keys with a random seed per cache (SipHash with fresh keys,
//! foldhash with a fresh seed), and the seed decides which keys collide in moka's
//! frequency sketch and which quick_cache shard a key lands in. On glimpse at 1000 entries
//! that alone moves moka's hit ratio anywhere from 37 to 49 percent (31 caches, one
//! process). One cache's figure is a draw, not a measurement. So these two are built
//! with a seeded hasher (foldhash's quality `FixedState::with_seed`, through
//! `build_with_hasher` and `Cache::with`), the replay runs once per seed 1..=R, and the
//! report takes the median: the same figures on every run, and representative ones.
//! minicache takes no hasher, so it runs R times too with whatever its caches draw.
//!
//! Left out: weights (every entry weighs 1) and concurrency (the criterion benchmark
//! in benches/benches/cache.rs measures that).

use serde::Serialize;

use super::{lru, optimal};

/// A cache the replayer runs, in the order the report shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    Minicache,
    MinicacheWTinyLfu,
    MinicacheS3Fifo,
    MinicacheLru,
    Moka,
    QuickCache,
    Lru,
    Optimal,
}

impl Contender {
    pub const ALL: [Contender; 8] = [
        Contender::Minicache,
        Contender::MinicacheWTinyLfu,
        Contender::MinicacheS3Fifo,
        Contender::MinicacheLru,
        Contender::Moka,
        Contender::QuickCache,
        Contender::Lru,
        Contender::Optimal,
    ];

    /// The name in the report's tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Minicache => "minicache",
            Contender::MinicacheWTinyLfu => "minicache-wtinylfu",
            Contender::MinicacheS3Fifo => "minicache-s3fifo",
            Contender::MinicacheLru => "minicache-lru",
            Contender::Moka => "moka",
            Contender::QuickCache => "quick_cache",
            Contender::Lru => "lru",
            Contender::Optimal => "optimal",
        }
    }

    /// Whether two caches built the same way may score differently (a hash seed), so
    /// that the replay runs once per seed and reports the median. The exact LRU and the
    /// optimum are functions of the trace alone.
    pub fn varies(self) -> bool {
        !matches!(self, Contender::Lru | Contender::Optimal)
    }

    /// Hits of this contender, `capacity` entries, replaying `keys`; `seed` seeds the
    /// hasher of moka and quick_cache and is ignored by the others.
    pub fn hits(self, keys: &[u64], capacity: u64, seed: u64) -> u64 {
        use minicache::Policy;
        match self {
            Contender::Minicache => replay(&mut Minicache::new(capacity, None), keys),
            Contender::MinicacheWTinyLfu => replay(&mut Minicache::new(capacity, Some(Policy::WTinyLfu)), keys),
            Contender::MinicacheS3Fifo => replay(&mut Minicache::new(capacity, Some(Policy::S3Fifo)), keys),
            Contender::MinicacheLru => replay(&mut Minicache::new(capacity, Some(Policy::Lru)), keys),
            Contender::Moka => replay(&mut Moka::new(capacity, seed), keys),
            Contender::QuickCache => replay(&mut QuickCache::new(capacity, seed), keys),
            Contender::Lru => lru::hits(keys, capacity),
            Contender::Optimal => optimal::hits(keys, capacity),
        }
    }
}

/// What the replay needs of a cache.
trait ReadThrough {
    /// The cached value of `key`, if any.
    fn get(&mut self, key: u64) -> Option<u64>;
    fn insert(&mut self, key: u64, value: u64);
    /// Applies whatever the cache has buffered; called after every request.
    fn settle(&mut self) {}
}

/// The read-through replay: hits of `cache` on `keys`.
fn replay(cache: &mut impl ReadThrough, keys: &[u64]) -> u64 {
    let mut hits = 0;
    for &key in keys {
        match cache.get(key) {
            Some(value) => {
                assert_eq!(value, key, "a cache returned another key's value");
                hits += 1;
            }
            None => cache.insert(key, key),
        }
        cache.settle();
    }
    hits
}

/// The seeded hasher of the caches that take one.
fn hasher(seed: u64) -> foldhash::quality::FixedState {
    foldhash::quality::FixedState::with_seed(seed)
}

struct Minicache(minicache::Cache<u64, u64>);

impl Minicache {
    /// One shard; `policy` `None` leaves the builder's default.
    fn new(capacity: u64, policy: Option<minicache::Policy>) -> Minicache {
        let builder = minicache::Cache::builder().max_capacity(capacity).shards(1);
        let builder = match policy {
            Some(p) => builder.policy(p),
            None => builder,
        };
        Minicache(builder.build())
    }
}

impl ReadThrough for Minicache {
    fn get(&mut self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    fn insert(&mut self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
    fn settle(&mut self) {
        self.0.run_pending_tasks();
    }
}

struct Moka(moka::sync::Cache<u64, u64, foldhash::quality::FixedState>);

impl Moka {
    fn new(capacity: u64, seed: u64) -> Moka {
        Moka(moka::sync::Cache::builder().max_capacity(capacity).build_with_hasher(hasher(seed)))
    }
}

impl ReadThrough for Moka {
    fn get(&mut self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    fn insert(&mut self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
    fn settle(&mut self) {
        self.0.run_pending_tasks();
    }
}

type QuickCacheOf = quick_cache::sync::Cache<
    u64,
    u64,
    quick_cache::UnitWeighter,
    foldhash::quality::FixedState,
    quick_cache::sync::DefaultLifecycle<u64, u64>,
>;

struct QuickCache(QuickCacheOf);

impl QuickCache {
    /// What `quick_cache::sync::Cache::new(capacity)` builds, with a seeded hasher.
    fn new(capacity: u64, seed: u64) -> QuickCache {
        let items = usize::try_from(capacity).unwrap_or(usize::MAX);
        QuickCache(QuickCacheOf::with(items, capacity, quick_cache::UnitWeighter, hasher(seed), Default::default()))
    }
}

impl ReadThrough for QuickCache {
    fn get(&mut self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    fn insert(&mut self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache that forgets nothing: no contender can do better, so it is above the
    /// optimum whenever the trace has more keys than the capacity, which is the bug
    /// the report's ceiling check exists to catch.
    struct Unbounded(std::collections::HashMap<u64, u64>);

    impl ReadThrough for Unbounded {
        fn get(&mut self, key: u64) -> Option<u64> {
            self.0.get(&key).copied()
        }
        fn insert(&mut self, key: u64, value: u64) {
            self.0.insert(key, value);
        }
    }

    fn looped(keys: u64, requests: usize) -> Vec<u64> {
        (0..keys).cycle().take(requests).collect()
    }

    #[test]
    fn every_contender_stays_under_the_optimum_and_an_unbounded_cache_does_not() {
        let keys = crate::cache::zipf::Zipf::new(2000, 0.8).expect("valid").trace(20_000, 3);
        for capacity in [1, 50, 400] {
            let optimal = Contender::Optimal.hits(&keys, capacity, 0);
            for contender in Contender::ALL {
                let hits = contender.hits(&keys, capacity, 1);
                assert!(hits <= optimal, "{} {hits} > optimal {optimal} at {capacity}", contender.name());
            }
            let unbounded = replay(&mut Unbounded(Default::default()), &keys);
            assert!(unbounded > optimal, "the check can fail: {unbounded} vs {optimal}");
        }
    }

    #[test]
    fn everything_fits_means_only_first_requests_miss() {
        let keys = looped(100, 1000);
        for contender in Contender::ALL {
            assert_eq!(contender.hits(&keys, 1000, 1), 900, "{}", contender.name());
        }
    }

    #[test]
    fn a_loop_one_larger_than_the_cache_defeats_lru_only() {
        let keys = looped(101, 101 * 50);
        assert_eq!(Contender::Lru.hits(&keys, 100, 0), 0);
        assert_eq!(Contender::MinicacheLru.hits(&keys, 100, 0), 0, "minicache's LRU is an LRU");
        assert!(Contender::Optimal.hits(&keys, 100, 0) > 4000);
    }

    #[test]
    fn a_seed_fixes_moka_and_quick_cache() {
        let keys = crate::cache::zipf::Zipf::new(3000, 0.9).expect("valid").trace(10_000, 5);
        for contender in [Contender::Moka, Contender::QuickCache] {
            assert_eq!(contender.hits(&keys, 300, 7), contender.hits(&keys, 300, 7), "{}", contender.name());
        }
    }
}
