//! A model test: random operations on a [`Cache`] and on a plain `HashMap` reference that
//! knows TTL, TTI and per-entry expiry, checked against each other after every step, for all
//! three policies, with and without a weigher.
//!
//! What "agree" means depends on whether the cache may evict by size, because an admission
//! policy decides *which* entries go and the model does not try to predict that:
//!
//! - **Roomy** (capacity at least the weight of every key the test can insert: 16 keys, up to
//!   weight 4 each): no policy may ever evict by size, so the cache must hold exactly the
//!   model's live entries. A `get` of a key the model holds live (inserted, not invalidated,
//!   not past its TTL, TTI or per-entry expiry) must return its latest value: **no entry is
//!   lost while it is within both capacity and its expiry**. No listener call has cause
//!   `Size`.
//! - **Tight** (capacity 1 to 12): the cache may evict anything, any time a write happens.
//!   It must still never return a value the model does not hold live (an expired,
//!   invalidated, or stale value), and a key it evicted stays gone until inserted again.
//!
//! In both: the weighted size never exceeds capacity after any call (the bound the docs
//! state is zero slack), `hits + misses` equals the lookups made, and
//! `inserts - evictions_size - evictions_expired - invalidations` equals `entry_count()`.
//! proptest prints the failing operations (shrunk) and keeps them in
//! `tests/model.proptest-regressions` so that they replay first next time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minicache::{Cache, Expiry, MockClock, Nanos, Policy, RemovalCause};
use proptest::prelude::*;

/// Keys are drawn from `0..KEYS`.
const KEYS: u64 = 16;
/// The heaviest entry with the test weigher (`value % 4 + 1`).
const MAX_WEIGHT: u64 = 4;

#[derive(Debug, Clone)]
enum Op {
    Get(u64),
    Insert(u64, u16),
    Invalidate(u64),
    /// Removes keys with `key % modulus == 0`.
    InvalidateIf(u64),
    InvalidateAll,
    Advance(u64),
    RunPending,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS).prop_map(Op::Get),
        4 => (0..KEYS, any::<u16>()).prop_map(|(k, v)| Op::Insert(k, v)),
        1 => (0..KEYS).prop_map(Op::Invalidate),
        1 => (2..5u64).prop_map(Op::InvalidateIf),
        1 => Just(Op::InvalidateAll),
        2 => (1..200u64).prop_map(Op::Advance),
        1 => Just(Op::RunPending),
    ]
}

#[derive(Debug, Clone)]
struct Config {
    policy: Policy,
    /// Room for every key (see the module docs) or a tight capacity.
    roomy: bool,
    capacity: u64,
    weighted: bool,
    ttl_ms: Option<u64>,
    tti_ms: Option<u64>,
    per_entry: bool,
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![Just(Policy::WTinyLfu), Just(Policy::S3Fifo), Just(Policy::Lru)],
        any::<bool>(),
        1..=12u64,
        any::<bool>(),
        proptest::option::of(50..500u64),
        proptest::option::of(50..500u64),
        any::<bool>(),
    )
        .prop_map(|(policy, roomy, tight, weighted, ttl_ms, tti_ms, per_entry)| {
            let capacity = if roomy { KEYS * if weighted { MAX_WEIGHT } else { 1 } } else { tight };
            Config { policy, roomy, capacity, weighted, ttl_ms, tti_ms, per_entry }
        })
}

fn weight(value: u16) -> u32 {
    u32::from(value % 4) + 1
}

/// The per-entry expiry under test: odd values live `(value % 5 + 1) * 40` ms, even values
/// have no per-entry limit. Reads keep what remains; updates start over (the defaults).
struct ByValue;

fn per_entry_ms(value: u16) -> Option<u64> {
    (value % 2 == 1).then(|| u64::from(value % 5 + 1) * 40)
}

impl Expiry<u64, u16> for ByValue {
    fn expire_after_create(&self, _key: &u64, value: &u16, _now: Nanos) -> Option<Duration> {
        per_entry_ms(*value).map(Duration::from_millis)
    }
}

/// The reference: what should be live, and until when.
#[derive(Debug, Clone)]
struct ModelEntry {
    value: u16,
    /// Written-at + TTL.
    ttl_deadline: Option<u64>,
    /// Last access + TTI.
    tti_deadline: Option<u64>,
    /// Written-at + the per-entry expiry.
    custom_deadline: Option<u64>,
}

impl ModelEntry {
    fn deadline(&self) -> Option<u64> {
        [self.ttl_deadline, self.tti_deadline, self.custom_deadline].into_iter().flatten().min()
    }

    fn live(&self, now: u64) -> bool {
        self.deadline().is_none_or(|deadline| now < deadline)
    }
}

fn ms(n: u64) -> u64 {
    n * 1_000_000
}

fn run(config: &Config, ops: &[Op]) -> Result<(), TestCaseError> {
    run_against_model_ttl(config, config.ttl_ms, ops)
}

/// `run`, with the model believing entries live `model_ttl_ms` (the cache uses the config's):
/// a way to show the checks catch a cache whose TTL is off.
fn run_against_model_ttl(config: &Config, model_ttl_ms: Option<u64>, ops: &[Op]) -> Result<(), TestCaseError> {
    let clock = MockClock::new();
    let removed: Arc<Mutex<Vec<(u64, u16, RemovalCause)>>> = Arc::default();
    let mut builder = Cache::builder()
        .policy(config.policy)
        .max_capacity(config.capacity)
        .shards(1)
        .clock(Arc::new(clock.clone()))
        .eviction_listener({
            let removed = Arc::clone(&removed);
            move |k, v, cause| removed.lock().expect("listener lock").push((k, v, cause))
        });
    if config.weighted {
        builder = builder.weigher(|_k: &u64, v: &u16| weight(*v));
    }
    if let Some(ttl) = config.ttl_ms {
        builder = builder.time_to_live(Duration::from_millis(ttl));
    }
    if let Some(tti) = config.tti_ms {
        builder = builder.time_to_idle(Duration::from_millis(tti));
    }
    if config.per_entry {
        builder = builder.expire_after(ByValue);
    }
    let cache: Cache<u64, u16> = builder.build();
    let mut model: HashMap<u64, ModelEntry> = HashMap::new();
    let mut lookups = 0u64;

    for (step, op) in ops.iter().enumerate() {
        let now = clock_now(&clock);
        match op {
            Op::Get(key) => {
                lookups += 1;
                let got = cache.get(key);
                let expected = model.get(key).filter(|e| e.live(now)).map(|e| e.value);
                match (got, expected) {
                    (Some(got), Some(expected)) => {
                        prop_assert_eq!(got, expected, "step {}: get({}) returned a stale value", step, key);
                    }
                    (Some(got), None) => {
                        prop_assert!(
                            false,
                            "step {}: get({}) returned {} for a key the model holds dead",
                            step,
                            key,
                            got
                        );
                    }
                    (None, Some(_)) => {
                        prop_assert!(!config.roomy, "step {}: get({}) lost a live entry with room to spare", step, key);
                        model.remove(key); // evicted by size: gone until inserted again
                    }
                    (None, None) => {
                        model.remove(key);
                    }
                }
                if let Some(entry) = model.get_mut(key) {
                    // A hit restarts TTI.
                    entry.tti_deadline = config.tti_ms.map(|tti| now + ms(tti));
                }
            }
            Op::Insert(key, value) => {
                cache.insert(*key, *value);
                model.insert(
                    *key,
                    ModelEntry {
                        value: *value,
                        ttl_deadline: model_ttl_ms.map(|ttl| now + ms(ttl)),
                        tti_deadline: config.tti_ms.map(|tti| now + ms(tti)),
                        custom_deadline: if config.per_entry {
                            per_entry_ms(*value).map(|d| now + ms(d))
                        } else {
                            None
                        },
                    },
                );
            }
            Op::Invalidate(key) => {
                let got = cache.invalidate(key);
                let expected = model.remove(key).filter(|e| e.live(now)).map(|e| e.value);
                if config.roomy {
                    prop_assert_eq!(got, expected, "step {}: invalidate({})", step, key);
                } else if let Some(got) = got {
                    prop_assert_eq!(Some(got), expected, "step {}: invalidate({}) returned a dead value", step, key);
                }
            }
            Op::InvalidateIf(modulus) => {
                let modulus = *modulus;
                cache.invalidate_if(move |k, _| k % modulus == 0);
                model.retain(|k, _| k % modulus != 0);
            }
            Op::InvalidateAll => {
                cache.invalidate_all();
                model.clear();
            }
            Op::Advance(by) => clock.advance(Duration::from_millis(*by)),
            Op::RunPending => {
                cache.run_pending_tasks();
                let now = clock_now(&clock);
                model.retain(|_, e| e.live(now));
                let live = model.len() as u64;
                if config.roomy {
                    prop_assert_eq!(cache.entry_count(), live, "step {}: entry count after run_pending_tasks", step);
                } else {
                    prop_assert!(cache.entry_count() <= live, "step {}: more entries than the model holds live", step);
                }
            }
        }

        // After every call: the capacity bound, the stats identities, contains_key.
        prop_assert!(
            cache.weighted_size() <= config.capacity,
            "step {}: weighted size {} over capacity {}",
            step,
            cache.weighted_size(),
            config.capacity
        );
        let stats = cache.stats();
        prop_assert_eq!(stats.hits + stats.misses, lookups, "step {}: hits + misses != lookups", step);
        prop_assert_eq!(
            stats.inserts - stats.evictions_size - stats.evictions_expired - stats.invalidations,
            cache.entry_count(),
            "step {}: entry count does not add up from the stats: {:?}",
            step,
            stats
        );
        let now = clock_now(&clock);
        for key in 0..KEYS {
            if cache.contains_key(&key) {
                let live = model.get(&key).is_some_and(|e| e.live(now));
                prop_assert!(live, "step {}: contains_key({}) for a key the model holds dead", step, key);
            }
        }
    }

    let removed = removed.lock().expect("listener lock");
    let stats = cache.stats();
    let count = |cause| removed.iter().filter(|(_, _, c)| *c == cause).count() as u64;
    prop_assert_eq!(count(RemovalCause::Size), stats.evictions_size);
    prop_assert_eq!(count(RemovalCause::Expired), stats.evictions_expired);
    prop_assert_eq!(count(RemovalCause::Explicit), stats.invalidations);
    prop_assert_eq!(count(RemovalCause::Replaced), stats.replacements);
    if config.roomy {
        prop_assert_eq!(stats.evictions_size, 0, "a roomy cache evicted by size");
    }
    Ok(())
}

fn clock_now(clock: &MockClock) -> u64 {
    use minicache::Clock;
    clock.now()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_cache_agrees_with_the_model(config in config(), ops in proptest::collection::vec(op(), 1..200)) {
        run(&config, &ops)?;
    }
}

/// The checks must be able to fail. A cache that serves an entry past its TTL is what the
/// model exists to catch; we cannot break the real cache's clock from here, so we skew the
/// model instead, which is the same comparison from the other side: a cache whose TTL is
/// 100 ms longer than the model's serves a dead entry (caught by "returned a value for a key
/// the model holds dead"), and one whose TTL is 100 ms shorter loses a live entry (caught by
/// "lost a live entry").
#[test]
fn the_model_catches_a_ttl_that_is_off_either_way() {
    let config = Config {
        policy: Policy::WTinyLfu,
        roomy: true,
        capacity: KEYS,
        weighted: false,
        ttl_ms: Some(200),
        tti_ms: None,
        per_entry: false,
    };
    let ops = [Op::Insert(1, 7), Op::Advance(150), Op::Get(1), Op::Advance(100), Op::Get(1)];
    assert!(run(&config, &ops).is_ok(), "the cache agrees with a model of its own TTL");
    let served_past_ttl = run_against_model_ttl(&config, Some(100), &ops);
    assert!(format!("{served_past_ttl:?}").contains("holds dead"), "{served_past_ttl:?}");
    let lost_live = run_against_model_ttl(&config, Some(300), &ops);
    assert!(format!("{lost_live:?}").contains("lost a live entry"), "{lost_live:?}");
}

/// Runs each policy explicitly as well, so that a policy-specific failure shows its name in
/// the test list rather than only in a shrunk proptest case.
#[test]
fn every_policy_survives_a_long_seeded_run() {
    for policy in [Policy::WTinyLfu, Policy::S3Fifo, Policy::Lru] {
        for roomy in [true, false] {
            let config = Config {
                policy,
                roomy,
                capacity: if roomy { KEYS } else { 5 },
                weighted: false,
                ttl_ms: Some(300),
                tti_ms: Some(120),
                per_entry: true,
            };
            let mut rng = fastrand::Rng::with_seed(0x5eed ^ policy as u64);
            let ops: Vec<Op> = (0..5_000)
                .map(|_| match rng.u8(0..10) {
                    0..=3 => Op::Get(rng.u64(0..KEYS)),
                    4..=6 => Op::Insert(rng.u64(0..KEYS), rng.u16(..)),
                    7 => Op::Invalidate(rng.u64(0..KEYS)),
                    8 => Op::Advance(rng.u64(1..60)),
                    _ => Op::RunPending,
                })
                .collect();
            if let Err(failure) = run(&config, &ops) {
                panic!("{policy:?} (roomy: {roomy}), seed 0x5eed: {failure}");
            }
        }
    }
}
