//! maxmemory: the access clock every entry carries, and eviction.
//!
//! Like Redis, we do not keep an exact LRU list (it would cost two pointers per key
//! and a list update on every read). Each entry has a 32-bit `lru` field:
//!
//! - LRU policies store the time of the last access, in seconds (Redis's 24-bit
//!   `LRU_CLOCK` with 1 s resolution); idle time is `now - lru`.
//! - LFU policies store `minutes << 8 | counter`: an 8-bit logarithmic access counter
//!   and the time it was last decremented. The counter grows with probability
//!   `1 / ((counter - 5) * lfu-log-factor + 1)` and loses one per `lfu-decay-time`
//!   minutes without access (Redis's `LFULogIncr` / `LFUDecrAndReturn`).
//!
//! Eviction samples a few keys and evicts the best candidate among them; see
//! [`crate::eviction`]'s `evict` functions.

/// Redis's initial LFU counter for new keys, so they are not evicted at once.
pub const LFU_INIT_VAL: u32 = 5;

/// How accesses update an entry's `lru` field. Copied into every command's context,
/// so it is a small `Copy` value read from the live configuration once per batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessClock {
    pub lfu: bool,
    /// Seconds (LRU) since the Unix epoch, truncated to 24 bits like Redis.
    pub now_secs: u32,
    pub now_minutes: u32,
    pub lfu_log_factor: u32,
    pub lfu_decay_time: u32,
}

impl Default for AccessClock {
    fn default() -> Self {
        AccessClock { lfu: false, now_secs: 0, now_minutes: 0, lfu_log_factor: 10, lfu_decay_time: 1 }
    }
}

const LRU_MASK: u32 = (1 << 24) - 1;

impl AccessClock {
    pub fn at(now_ms: u64, lfu: bool, lfu_log_factor: u32, lfu_decay_time: u32) -> Self {
        AccessClock {
            lfu,
            now_secs: ((now_ms / 1000) as u32) & LRU_MASK,
            now_minutes: ((now_ms / 60_000) as u32) & 0xffff,
            lfu_log_factor,
            lfu_decay_time,
        }
    }

    /// The `lru` field of a new entry.
    #[inline]
    pub fn new_entry(&self) -> u32 {
        if self.lfu {
            (self.now_minutes << 8) | LFU_INIT_VAL
        } else {
            self.now_secs
        }
    }

    /// The `lru` field after an access.
    #[inline]
    pub fn touch(&self, lru: u32) -> u32 {
        if self.lfu {
            let counter = self.lfu_decayed_counter(lru);
            let counter = lfu_log_incr(counter, self.lfu_log_factor);
            (self.now_minutes << 8) | counter
        } else {
            self.now_secs
        }
    }

    /// Seconds since the last access (OBJECT IDLETIME, LRU policies).
    pub fn idle_secs(&self, lru: u32) -> u64 {
        let lru = lru & LRU_MASK;
        if self.now_secs >= lru {
            (self.now_secs - lru) as u64
        } else {
            (self.now_secs + (LRU_MASK - lru)) as u64
        }
    }

    /// The LFU counter after decay for the minutes elapsed (OBJECT FREQ).
    pub fn lfu_decayed_counter(&self, lru: u32) -> u32 {
        let last = lru >> 8;
        let counter = lru & 0xff;
        let elapsed = if self.now_minutes >= last { self.now_minutes - last } else { 65535 - last + self.now_minutes };
        let periods = elapsed.checked_div(self.lfu_decay_time).unwrap_or(0);
        counter.saturating_sub(periods)
    }
}

fn lfu_log_incr(counter: u32, log_factor: u32) -> u32 {
    if counter >= 255 {
        return 255;
    }
    let r = fastrand::f64();
    let base = counter.saturating_sub(LFU_INIT_VAL) as f64;
    let p = 1.0 / (base * log_factor as f64 + 1.0);
    if r < p {
        counter + 1
    } else {
        counter
    }
}

// ----- eviction -----

use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::cmd::Batch;
use crate::config::EvictionPolicy;
use crate::keyspace::{hash_bytes, shard_of, CompactBytes, SHARDS};
use crate::server::Server;
use crate::tracking::Pending;

pub const OOM_ERROR: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Redis's EVPOOL_SIZE: the best candidates seen across samples.
const POOL_SIZE: usize = 16;
/// Evictions one command may perform before it is allowed to run anyway (Redis bounds
/// this by time; a command that frees memory a little at a time still makes progress).
const MAX_EVICTIONS_PER_CALL: usize = 1024;

/// A key that could be evicted, and how good a choice it is (higher is better: longer
/// idle, lower frequency, or sooner deadline).
#[derive(Clone, Debug)]
struct Candidate {
    score: u64,
    db: usize,
    key: CompactBytes,
}

/// The pool of candidates kept between eviction rounds, as in Redis's `evictionPoolPopulate`.
static POOL: Mutex<Vec<Candidate>> = Mutex::new(Vec::new());

/// Before a command that may grow memory: evicts keys until `used_memory` is under
/// `maxmemory`. Returns false when it cannot (noeviction, or nothing evictable): the
/// command is then refused with [`OOM_ERROR`].
pub fn make_room(server: &Server, batch: &mut Batch) -> bool {
    let max = server.config.live.maxmemory.load(Ordering::Relaxed);
    if max == 0 || batch.loading || !crate::memory::is_counting() {
        return true;
    }
    if crate::memory::used_memory() <= max {
        return true;
    }
    let policy = server.config.live.policy();
    if policy == EvictionPolicy::NoEviction {
        return false;
    }
    let samples = server.config.live.maxmemory_samples.load(Ordering::Relaxed) as usize;
    for _ in 0..MAX_EVICTIONS_PER_CALL {
        if crate::memory::used_memory() <= max {
            return true;
        }
        if !evict_one(server, policy, samples, batch) {
            return false;
        }
    }
    true
}

/// Evicts one key chosen by `policy`. Returns false if there was nothing to evict.
fn evict_one(server: &Server, policy: EvictionPolicy, samples: usize, batch: &mut Batch) -> bool {
    let random = matches!(policy, EvictionPolicy::AllKeysRandom | EvictionPolicy::VolatileRandom);
    // A few attempts: a candidate may have been deleted since it was sampled.
    for _ in 0..SHARDS {
        let victim = if random { random_victim(server, policy) } else { pooled_victim(server, policy, samples, batch) };
        let Some(c) = victim else { return false };
        let hash = hash_bytes(&c.key);
        let mut shard = server.keyspace.lock_shard(shard_of(hash));
        let table = &mut shard.dbs[c.db];
        let Some(pos) = table.find(hash, &c.key) else {
            continue;
        };
        if policy.volatile_only() && table.expire_at(pos).is_none() {
            continue;
        }
        table.remove_at(pos);
        shard.stats.evicted_keys += 1;
        let mut changes = Pending::default();
        shard.key_changed(c.db, &c.key, &server.keyspace.tracking, &mut changes, 0);
        if let Some(mut evicted) = changes.take() {
            crate::tracking::deliver(server, &mut evicted.invalidated, 0);
            batch.bcast.append(&mut evicted.broadcast);
        }
        if let Some(aof) = &batch.aof {
            let mut record = (c.db as u16).to_le_bytes().to_vec();
            crate::resp::encode_command([&b"DEL"[..], &c.key].into_iter(), &mut record);
            if let Err(e) = aof.append(&record) {
                aof.mark_failed(&e);
            }
        }
        return true;
    }
    false
}

fn random_victim(server: &Server, policy: EvictionPolicy) -> Option<Candidate> {
    let start = fastrand::usize(..SHARDS);
    for i in 0..SHARDS {
        let shard = server.keyspace.lock_shard((start + i) % SHARDS);
        let dbs = shard.dbs.len();
        let db_start = fastrand::usize(..dbs);
        for j in 0..dbs {
            let db = (db_start + j) % dbs;
            let table = &shard.dbs[db];
            let pos = if policy.volatile_only() {
                table.random_volatile(fastrand::u64(..)).map(|(p, _)| p)
            } else {
                table.random_pos(fastrand::u64(..))
            };
            if let Some(pos) = pos {
                return Some(Candidate { score: 0, db, key: table.key_at(pos).clone() });
            }
        }
    }
    None
}

/// Samples `samples` keys from a few shards into the pool and takes the best one.
fn pooled_victim(server: &Server, policy: EvictionPolicy, samples: usize, batch: &Batch) -> Option<Candidate> {
    let clock = batch.clock;
    let mut pool = POOL.lock();
    let start = fastrand::usize(..SHARDS);
    let mut sampled_any = false;
    // Sample a handful of shards per eviction; together with the pool kept across
    // calls this approximates Redis's per-database sampling.
    for i in 0..4.min(SHARDS) {
        let shard = server.keyspace.lock_shard((start + i * 17) % SHARDS);
        for (db, table) in shard.dbs.iter().enumerate() {
            let n = if policy.volatile_only() { table.volatile_len() } else { table.len() };
            if n == 0 {
                continue;
            }
            for _ in 0..samples.min(n) {
                let (pos, deadline) = if policy.volatile_only() {
                    match table.random_volatile(fastrand::u64(..)) {
                        Some(x) => x,
                        None => break,
                    }
                } else {
                    match table.random_pos(fastrand::u64(..)) {
                        Some(p) => (p, 0),
                        None => break,
                    }
                };
                sampled_any = true;
                let lru = table.entry(pos).lru;
                let score = match policy {
                    EvictionPolicy::VolatileTtl => u64::MAX - deadline,
                    EvictionPolicy::AllKeysLfu | EvictionPolicy::VolatileLfu => {
                        255 - clock.lfu_decayed_counter(lru) as u64
                    }
                    _ => clock.idle_secs(lru),
                };
                let key = table.key_at(pos);
                if pool.iter().any(|c| c.db == db && c.key == *key) {
                    continue;
                }
                if pool.len() < POOL_SIZE || pool.first().is_some_and(|worst| worst.score < score) {
                    pool.push(Candidate { score, db, key: key.clone() });
                    pool.sort_by_key(|c| c.score);
                    if pool.len() > POOL_SIZE {
                        pool.remove(0);
                    }
                }
            }
        }
    }
    if !sampled_any && pool.is_empty() {
        return None;
    }
    pool.pop()
}
