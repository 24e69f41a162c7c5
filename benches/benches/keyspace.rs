//! Keyspace micro-benchmarks: GET and SET through the `Keys` access layer (what a
//! command handler pays once the dispatcher has parsed and locked), and the `Dict`
//! hash table alone with a million short keys.
//!
//! The `Keys` path includes everything a real GET/SET does below the command
//! handler: hashing, taking the shard lock, lazy-expiry check, LRU clock update,
//! hit/miss counters, WATCH/blocked-client bookkeeping in `modified`. It leaves out
//! the network, RESP and the AOF (`record_aof` is off).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use minikv::eviction::AccessClock;
use minikv::keyspace::{hash_bytes, shard_of, CompactBytes, Dict, Effects, Keys, Keyspace, Value};

/// Keys preloaded for the GET/SET benchmarks: larger than the caches, like a real
/// keyspace, small enough to set up in a second.
const KEYSPACE_KEYS: u64 = 100_000;

/// Keys in the Dict benchmarks.
const DICT_KEYS: u64 = 1_000_000;

/// Keys visited per measured iteration, so the timer's overhead is amortised.
const BATCH: u64 = 1_000;

const VALUE: [u8; 100] = [b'v'; 100];

fn key(n: u64) -> Vec<u8> {
    format!("key:{n}").into_bytes()
}

/// Runs `f` on a `Keys` view holding the shard lock of `key`, as the dispatcher does
/// for a single-key command.
fn with_keys<T>(space: &Keyspace, key: &[u8], f: impl FnOnce(&mut Keys<'_>) -> T) -> T {
    let guards = space.lock_one(shard_of(hash_bytes(key)));
    let mut keys = Keys::new(space, guards, 0, 1_700_000_000_000, AccessClock::default(), Effects::new(false));
    f(&mut keys)
}

fn set(keys: &mut Keys<'_>, key: &[u8], value: &[u8]) {
    keys.set(key, Value::str(value));
    keys.modified(key);
}

fn keyspace_get_set(c: &mut Criterion) {
    let space = Keyspace::new(16);
    let names: Vec<Vec<u8>> = (0..KEYSPACE_KEYS).map(key).collect();
    for name in &names {
        with_keys(&space, name, |keys| set(keys, name, &VALUE));
    }
    assert_eq!(space.db_len(0), KEYSPACE_KEYS as usize);

    let mut group = c.benchmark_group("keyspace");
    group.throughput(Throughput::Elements(BATCH));
    // Walk the keys with a stride so consecutive lookups hit different shards and
    // cache lines, as independent clients would.
    let stride = 7_919;
    let mut next = 0u64;
    let mut visit = move || {
        next = (next + stride) % KEYSPACE_KEYS;
        next as usize
    };
    group.bench_function("get_hit", |b| {
        b.iter(|| {
            let mut found = 0;
            for _ in 0..BATCH {
                let name = &names[visit()];
                found += with_keys(&space, name, |keys| matches!(keys.get_str(name), Ok(Some(_)))) as u64;
            }
            assert_eq!(found, BATCH);
        })
    });
    group.bench_function("get_miss", |b| {
        let missing: Vec<Vec<u8>> = (0..BATCH).map(|n| format!("missing:{n}").into_bytes()).collect();
        b.iter(|| {
            for name in &missing {
                black_box(with_keys(&space, name, |keys| keys.get_str(name).is_ok()));
            }
        })
    });
    group.bench_function("set_overwrite_100b", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let name = &names[visit()];
                with_keys(&space, name, |keys| set(keys, name, black_box(&VALUE)));
            }
        })
    });
    group.bench_function("set_overwrite_int", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                let name = &names[visit()];
                with_keys(&space, name, |keys| set(keys, name, i.to_string().as_bytes()));
            }
        })
    });
    group.finish();
}

fn dict_insert_lookup(c: &mut Criterion) {
    let names: Vec<CompactBytes> = (0..DICT_KEYS).map(|n| CompactBytes::new(&key(n))).collect();
    let mut group = c.benchmark_group("dict");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DICT_KEYS));
    group.bench_function("insert_1m_short_keys", |b| {
        b.iter_batched(
            || names.clone(),
            |keys| {
                let mut dict: Dict<CompactBytes, u64> = Dict::new();
                for (i, k) in keys.into_iter().enumerate() {
                    dict.insert(k, i as u64);
                }
                assert_eq!(dict.len(), DICT_KEYS as usize);
                dict
            },
            BatchSize::PerIteration,
        )
    });
    let mut dict: Dict<CompactBytes, u64> = Dict::with_capacity(DICT_KEYS as usize);
    for (i, k) in names.iter().enumerate() {
        dict.insert(k.clone(), i as u64);
    }
    group.bench_function("lookup_1m_short_keys", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for k in &names {
                sum = sum.wrapping_add(*dict.get(k).unwrap_or(&0));
            }
            assert_eq!(sum, DICT_KEYS * (DICT_KEYS - 1) / 2);
            sum
        })
    });
    group.finish();
}

criterion_group!(benches, keyspace_get_set, dict_insert_lookup);
criterion_main!(benches);
