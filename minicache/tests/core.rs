//! Behaviour of the cache core through its public API: removal causes, weights,
//! `invalidate_if`, expiry against a mock clock, a concurrency smoke test, and frequency
//! aging, with the broken variant (a sketch that never halves) shown to fail the aging test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minicache::{Cache, CacheBuilder, Expiry, MockClock, Nanos, Policy, RemovalCause};

const POLICIES: [Policy; 3] = [Policy::WTinyLfu, Policy::S3Fifo, Policy::Lru];

type Removed = Arc<Mutex<Vec<(u64, u64, RemovalCause)>>>;

fn recording(builder: CacheBuilder<u64, u64>) -> (CacheBuilder<u64, u64>, Removed) {
    let removed: Removed = Arc::default();
    let sink = Arc::clone(&removed);
    let builder = builder.eviction_listener(move |k, v, cause| sink.lock().expect("listener lock").push((k, v, cause)));
    (builder, removed)
}

fn causes(removed: &Removed) -> Vec<(u64, u64, RemovalCause)> {
    removed.lock().expect("listener lock").clone()
}

#[test]
fn the_listener_hears_every_removal_with_its_cause() {
    for policy in POLICIES {
        let clock = MockClock::new();
        let (builder, removed) = recording(
            Cache::builder()
                .policy(policy)
                .max_capacity(3)
                .shards(1)
                .time_to_live(Duration::from_secs(10))
                .clock(Arc::new(clock.clone())),
        );
        let cache = builder.build();

        cache.insert(1, 10);
        cache.insert(1, 11);
        assert_eq!(causes(&removed), vec![(1, 10, RemovalCause::Replaced)], "{policy:?}");

        assert_eq!(cache.invalidate(&1), Some(11));
        assert_eq!(causes(&removed).last(), Some(&(1, 11, RemovalCause::Explicit)), "{policy:?}");
        assert_eq!(cache.invalidate(&1), None, "a second invalidate finds nothing");

        for key in 2..=6 {
            cache.insert(key, key * 10);
        }
        let size_evictions = causes(&removed).iter().filter(|(_, _, c)| *c == RemovalCause::Size).count();
        assert_eq!(size_evictions, 2, "{policy:?}: five inserts into three slots evict two");
        assert_eq!(cache.entry_count(), 3);

        clock.advance(Duration::from_secs(10));
        cache.run_pending_tasks();
        let expired = causes(&removed).iter().filter(|(_, _, c)| *c == RemovalCause::Expired).count();
        assert_eq!(expired, 3, "{policy:?}: maintenance expires the rest without any access");
        assert_eq!(cache.entry_count(), 0);

        let stats = cache.stats();
        assert_eq!(
            (stats.evictions_size, stats.evictions_expired, stats.invalidations, stats.replacements),
            (2, 3, 1, 1)
        );
        assert!(RemovalCause::Size.was_evicted() && RemovalCause::Expired.was_evicted());
        assert!(!RemovalCause::Explicit.was_evicted() && !RemovalCause::Replaced.was_evicted());
    }
}

#[test]
fn invalidate_all_and_invalidate_if_report_explicit_removals() {
    let (builder, removed) = recording(Cache::builder().max_capacity(100).shards(4));
    let cache = builder.build();
    for key in 0..20 {
        cache.insert(key, key);
    }
    cache.invalidate_if(|k, v| k % 2 == 0 && *v < 10);
    let mut gone: Vec<u64> = causes(&removed).iter().map(|(k, _, _)| *k).collect();
    gone.sort_unstable();
    assert_eq!(gone, vec![0, 2, 4, 6, 8]);
    assert!(causes(&removed).iter().all(|(_, _, c)| *c == RemovalCause::Explicit));
    assert!((0..20).all(|k| cache.contains_key(&k) == (k % 2 == 1 || k >= 10)));
    assert_eq!(cache.entry_count(), 15);

    cache.invalidate_all();
    assert_eq!(cache.entry_count(), 0);
    assert_eq!(causes(&removed).len(), 20);
    assert_eq!(cache.stats().invalidations, 20);
    assert_eq!(cache.get(&11), None);
}

#[test]
fn a_weigher_bounds_total_weight_and_rejects_what_can_never_fit() {
    for policy in POLICIES {
        let (builder, removed) = recording(
            Cache::builder().policy(policy).max_capacity(100).shards(1).weigher(|_k: &u64, v: &u64| *v as u32),
        );
        let cache = builder.build();
        cache.insert(1, 40);
        cache.insert(2, 50);
        assert_eq!(cache.weighted_size(), 90);
        assert_eq!(cache.entry_count(), 2);

        // 101 can never fit in 100: admitted and evicted by the same write.
        cache.insert(3, 101);
        assert!(!cache.contains_key(&3), "{policy:?}");
        assert!(causes(&removed).contains(&(3, 101, RemovalCause::Size)), "{policy:?}");
        assert!(cache.weighted_size() <= 100);

        // A replacement that grows the entry counts its new weight.
        cache.insert(1, 45);
        assert!(cache.weighted_size() <= 100, "{policy:?}: {}", cache.weighted_size());
        for key in 10..60 {
            cache.insert(key, key % 7 + 1);
            assert!(cache.weighted_size() <= 100, "{policy:?} at {key}");
        }
    }
}

#[test]
fn time_to_idle_keeps_what_is_read_and_drops_what_is_not() {
    let clock = MockClock::new();
    let cache: Cache<u64, u64> =
        Cache::builder().time_to_idle(Duration::from_secs(1)).shards(1).clock(Arc::new(clock.clone())).build();
    cache.insert(1, 1);
    cache.insert(2, 2);
    for _ in 0..5 {
        clock.advance(Duration::from_millis(600));
        assert_eq!(cache.get(&1), Some(1), "read every 600 ms, idle never reaches 1 s");
    }
    assert_eq!(cache.get(&2), None, "idle for 3 s");
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 1);
    clock.advance(Duration::from_secs(1));
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 0, "maintenance re-checks the extended deadline and expires it");
}

/// Per-entry expiry whose reads shorten the remaining life to 100 ms.
struct ShortAfterRead;

impl Expiry<u64, u64> for ShortAfterRead {
    fn expire_after_create(&self, _key: &u64, value: &u64, _now: Nanos) -> Option<Duration> {
        Some(Duration::from_secs(*value))
    }
    fn expire_after_read(&self, _k: &u64, _v: &u64, _now: Nanos, remaining: Option<Duration>) -> Option<Duration> {
        remaining.map(|r| r.min(Duration::from_millis(100)))
    }
}

#[test]
fn per_entry_expiry_is_honoured_on_create_read_and_maintenance() {
    let clock = MockClock::new();
    let (builder, removed) =
        recording(Cache::builder().expire_after(ShortAfterRead).shards(1).clock(Arc::new(clock.clone())));
    let cache = builder.build();
    cache.insert(1, 10); // lives 10 s
    cache.insert(2, 10);
    cache.insert(3, 1); // lives 1 s
    assert_eq!(cache.get(&1), Some(10)); // now only 100 ms left
    clock.advance(Duration::from_millis(100));
    assert_eq!(cache.get(&1), None, "the read shortened its life");
    assert_eq!(cache.get(&2), Some(10));
    clock.advance(Duration::from_millis(900));
    assert_eq!(cache.get(&3), None);
    // Key 2 was read at 100 ms: dead at 200 ms. Maintenance must find it although its first
    // filed deadline was 10 s (the read re-filed it when its token was drained).
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 0);
    assert!(causes(&removed).iter().all(|(_, _, c)| *c == RemovalCause::Expired));
}

#[test]
fn threads_hammering_one_cache_keep_every_invariant() {
    const THREADS: u64 = 4;
    const OPS: u64 = 20_000;
    const CAPACITY: u64 = 200;
    for policy in POLICIES {
        let cache: Cache<u64, u64> = Cache::builder().policy(policy).max_capacity(CAPACITY).shards(4).build();
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (cache, done) = (cache.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while !done.load(Ordering::Acquire) {
                    let size = cache.weighted_size();
                    assert!(size <= CAPACITY, "observed weighted size {size} over {CAPACITY}");
                    checks += 1;
                    std::thread::yield_now();
                }
                checks
            })
        };
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(thread);
                    let mut gets = 0u64;
                    for _ in 0..OPS {
                        // Skewed keys, so that some are hot and shards see contention.
                        let key = if rng.bool() { rng.u64(0..50) } else { rng.u64(0..2_000) };
                        match rng.u8(0..10) {
                            0..=6 => {
                                gets += 1;
                                if let Some(value) = cache.get(&key) {
                                    assert_eq!(value, key * 3, "another key's value");
                                }
                            }
                            7 | 8 => cache.insert(key, key * 3),
                            _ => {
                                cache.invalidate(&key);
                            }
                        }
                    }
                    gets
                })
            })
            .collect();
        let gets: u64 = workers.into_iter().map(|w| w.join().expect("a worker panicked")).sum();
        done.store(true, Ordering::Release);
        assert!(watcher.join().expect("the watcher panicked") > 0);

        cache.run_pending_tasks();
        let stats = cache.stats();
        assert_eq!(stats.hits + stats.misses, gets, "{policy:?}: lookups lost or double counted");
        assert_eq!(
            stats.inserts - stats.evictions_size - stats.evictions_expired - stats.invalidations,
            cache.entry_count(),
            "{policy:?}: {stats:?}"
        );
        assert!(cache.entry_count() <= CAPACITY);
        assert!(stats.hits > 0, "{policy:?}: a skewed workload must hit sometimes");
    }
}

/// What share of a new hot set the cache holds after the old hot set goes cold: phase 1
/// makes keys 0..100 very hot; phase 2 reads keys 1000..1100 (read-through) for `rounds`.
fn new_hot_set_share(cache: &Cache<u64, u64>, rounds: u64) -> f64 {
    for _ in 0..60 {
        for key in 0..100 {
            if cache.get(&key).is_none() {
                cache.insert(key, key);
            }
        }
    }
    for _ in 0..rounds {
        for key in 1_000..1_100 {
            if cache.get(&key).is_none() {
                cache.insert(key, key);
            }
        }
    }
    (1_000..1_100).filter(|key| cache.contains_key(key)).count() as f64 / 100.0
}

#[test]
fn frequency_ages_out_and_a_sketch_without_halving_is_caught() {
    let healthy: Cache<u64, u64> = Cache::builder().max_capacity(100).shards(1).build();
    let share = new_hot_set_share(&healthy, 40);
    eprintln!("new hot set held with halving: {share}");
    assert!(share >= 0.9, "with aging the new hot set takes over: {share}");

    // The broken variant: the once-hot keys keep their counts forever, so every newcomer
    // loses admission to them (ties go to the resident) however hot it becomes.
    let broken: Cache<u64, u64> = Cache::builder().max_capacity(100).shards(1).broken_sketch_without_halving().build();
    let share = new_hot_set_share(&broken, 40);
    eprintln!("new hot set held without halving: {share}");
    assert!(share < 0.5, "the aging test must fail without halving, but the new set holds {share}");
}

#[test]
fn lookups_of_borrowed_keys_work_and_count() {
    let cache: Cache<String, u64> = Cache::new(10);
    cache.insert("a".to_string(), 1);
    assert_eq!(cache.get("a"), Some(1));
    assert_eq!(cache.get("b"), None);
    assert!(cache.contains_key("a"));
    assert_eq!(cache.invalidate("a"), Some(1));
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.lookups()), (1, 1, 2));
    assert!((stats.hit_ratio() - 0.5).abs() < 1e-9);
}

#[test]
fn lru_evicts_the_least_recently_used_exactly() {
    let cache: Cache<u64, u64> = Cache::builder().policy(Policy::Lru).max_capacity(3).shards(1).build();
    for key in 1..=3 {
        cache.insert(key, key);
    }
    cache.get(&1); // order now 2, 3, 1
    cache.insert(4, 4); // evicts 2
    let held: HashMap<u64, bool> = (1..=4).map(|k| (k, cache.contains_key(&k))).collect();
    assert_eq!(held, HashMap::from([(1, true), (2, false), (3, true), (4, true)]));
}
