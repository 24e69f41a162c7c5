//! The cache core: a sharded map, an eviction policy per shard, expiry and statistics.
//!
//! # How a shard is built
//!
//! A key's hash picks one of a power-of-two number of shards (its top bits; the map inside
//! uses the low bits). Each shard has:
//!
//! - a **map** (`hashbrown::HashTable`) under a `parking_lot::RwLock`. Lookups take only the
//!   *read* lock, so readers never block each other.
//! - a **read buffer**: a small, bounded, *lossy* array of access tokens. A hit writes its
//!   token there with one atomic add and no lock; when the buffer is half full the reader
//!   tries (`try_lock`, never waits) to drain it into the policy. Under contention some
//!   accesses are dropped: the policy then sees a sample of the reads, which is all LRU
//!   order and a frequency sketch need (Caffeine and moka do the same).
//! - a **core** under a `Mutex`: the eviction policy, the slot table that links policy nodes
//!   to entries, and the expiry index. Every write takes it, drains the read buffer first
//!   (so, single-threaded, the policy sees every read in order), applies the write, evicts,
//!   and expires what is due, all before it returns.
//!
//! Lock order is always core, then map. A reader holds the map read lock only while it looks
//! up and clones the value; it touches the core only through `try_lock` after letting go.
//!
//! # Capacity: the bound
//!
//! Each shard gets `max_capacity / shards` (the remainder spread over the first shards), and
//! evicts synchronously inside the write that overflowed it, before the map's write lock is
//! released and before [`Cache::entry_count`] and [`Cache::weighted_size`] are updated. So the
//! **slack is zero**: no reader, and no call to `weighted_size()`, can ever see more than
//! `max_capacity`. (Reads never add weight; only writes do, and they evict in place.) The
//! cost is that with several shards a skewed key set fills one shard's share while another
//! has room: use `shards(1)` where the exact capacity matters more than write concurrency.
//! Entries past their expiry but kept for the loading layer's stale grace count against
//! capacity until they are removed.
//!
//! # Expiry
//!
//! An entry's deadline is the earliest of its TTL (from the last write), its TTI (from the
//! last read or write) and its per-entry [`Expiry`]. Time comes from the injected
//! [`Clock`], never from `Instant::now()`. `get` never returns an entry at or past its
//! deadline. Removal happens lazily: on the access that finds it expired, and in every
//! maintenance pass (each write, each read-buffer drain, [`Cache::run_pending_tasks`]),
//! from a **deadline-ordered index** (a `BTreeSet` of `(deadline, slot)`), not a timer wheel:
//! O(log n) per entry instead of O(1), but exact and short to read. Reads that extend a TTI
//! do not touch the index (they have no lock for it); the index may then hold a deadline
//! *earlier* than the truth, and maintenance re-checks each due entry and re-files it if it
//! was extended. A read that *shortens* a deadline (a custom `expire_after_read`) re-files the
//! entry when its token is drained. There is no background thread: a cache nobody touches
//! keeps its expired entries (invisible to `get`) until the next access or
//! `run_pending_tasks`.
//!
//! Left out: moka's and Caffeine's write buffer (writes here apply under the shard lock
//! instead of being queued), their hierarchical timer wheel, and a background maintenance
//! thread.

use crate::clock::{Clock, Nanos, SystemClock};
use crate::loading::LoadingOptions;
use crate::policy::{EvictionPolicy, PolicyConfig};
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::policy::Policy;

/// The deadline of an entry that never expires.
const NEVER: Nanos = Nanos::MAX;

/// Slots in each shard's read buffer. Bigger drops fewer reads under contention but costs a
/// longer drain; 128 is moka's and Caffeine's per-stripe figure.
const READ_BUFFER_SLOTS: usize = 128;

/// A reader tries to drain the read buffer once it holds this many tokens.
const READ_BUFFER_DRAIN_AT: usize = READ_BUFFER_SLOTS / 2;

/// The most shards a cache has (a request for more is clamped).
const MAX_SHARDS: usize = 1 << 10;

/// With the default shard count, each shard keeps at least this much capacity: smaller
/// shards would cost hit ratio (each shard ranks only its own keys) for little concurrency.
const MIN_DEFAULT_SHARD_CAPACITY: u64 = 256;

/// Up to this many entries per shard the sketch is sized at build time; above, it starts
/// small and grows with the shard (so that `Cache::new(u64::MAX)` does not allocate a
/// sketch for a billion keys up front).
const EAGER_SKETCH_ENTRIES: u64 = 1 << 20;

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    /// Its TTL, TTI or per-entry expiry passed (and its stale grace, if any).
    Expired,
    /// `invalidate`, `invalidate_all` or `invalidate_if` removed it.
    Explicit,
    /// An `insert` of the same key replaced its value.
    Replaced,
    /// The eviction policy chose it to make room (or refused to admit it).
    Size,
}

impl RemovalCause {
    /// Whether the cache removed the entry on its own (expiry or size), rather than the user.
    pub fn was_evicted(&self) -> bool {
        matches!(self, RemovalCause::Expired | RemovalCause::Size)
    }
}

/// Counters since the cache was built. They add up: `hits + misses` is the number of
/// lookups, and `inserts - evictions_size - evictions_expired - invalidations` is the number
/// of entries (once pending work has run; see [`Cache::run_pending_tasks`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups (`get`, and the loading layer's reads) that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing, or only an expired entry.
    pub misses: u64,
    /// Entries the eviction policy removed for room (including rejected newcomers).
    pub evictions_size: u64,
    /// Entries removed because they expired.
    pub evictions_expired: u64,
    /// Live entries removed by `invalidate`, `invalidate_all` or `invalidate_if`.
    pub invalidations: u64,
    /// Loads (by the loading layer) that produced a value.
    pub load_successes: u64,
    /// Loads that failed or panicked.
    pub load_failures: u64,
    /// Time spent in loads, successful or not.
    pub total_load_nanos: u64,
    /// Inserts of a key that was not in the cache (new entries).
    pub inserts: u64,
    /// Inserts that replaced the value of a key already there.
    pub replacements: u64,
}

impl CacheStats {
    /// `hits + misses`.
    pub fn lookups(&self) -> u64 {
        self.hits + self.misses
    }

    /// Hits per lookup, 0.0 when there were none.
    pub fn hit_ratio(&self) -> f64 {
        match self.lookups() {
            0 => 0.0,
            lookups => self.hits as f64 / lookups as f64,
        }
    }
}

/// Per-entry expiry, in the style of moka's `Expiry`: the cache asks after each create,
/// read and update how long the entry should live from now (`None`: no per-entry limit).
/// The result combines with TTL and TTI: the earliest deadline wins.
///
/// The callbacks run while the cache holds a shard lock: they must be quick and must not
/// call back into the cache.
pub trait Expiry<K, V>: Send + Sync {
    /// How long a new entry lives.
    fn expire_after_create(&self, key: &K, value: &V, now: Nanos) -> Option<Duration>;

    /// How long an entry lives after a read; `remaining` is what was left of its per-entry
    /// expiry. The default keeps it.
    fn expire_after_read(&self, key: &K, value: &V, now: Nanos, remaining: Option<Duration>) -> Option<Duration> {
        let _ = (key, value, now);
        remaining
    }

    /// How long an entry lives after its value is replaced; the default starts over as if
    /// it were created.
    fn expire_after_update(&self, key: &K, value: &V, now: Nanos, remaining: Option<Duration>) -> Option<Duration> {
        let _ = remaining;
        self.expire_after_create(key, value, now)
    }
}

type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;
type Listener<K, V> = Arc<dyn Fn(K, V, RemovalCause) + Send + Sync>;
type Table<K, V> = HashTable<(K, Arc<Entry<V>>)>;

/// Builds a [`Cache`]. Every setting has a default: W-TinyLFU, unbounded, no expiry,
/// shards by the machine's parallelism, the system clock.
pub struct CacheBuilder<K, V> {
    max_capacity: Option<u64>,
    weigher: Option<Weigher<K, V>>,
    policy: Policy,
    shards: Option<usize>,
    time_to_live: Option<Duration>,
    time_to_idle: Option<Duration>,
    expiry: Option<Arc<dyn Expiry<K, V>>>,
    listener: Option<Listener<K, V>>,
    clock: Option<Arc<dyn Clock>>,
    /// Set by the loading layer's builder methods (in `loading.rs`); the core honours its
    /// `stale_grace`.
    pub(crate) loading: LoadingOptions,
    /// `false` only in the deliberately broken variant that shows frequency aging matters.
    sketch_halving: bool,
}

impl<K, V> fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_capacity", &self.max_capacity)
            .field("weigher", &self.weigher.is_some())
            .field("policy", &self.policy)
            .field("shards", &self.shards)
            .field("time_to_live", &self.time_to_live)
            .field("time_to_idle", &self.time_to_idle)
            .field("expiry", &self.expiry.is_some())
            .field("listener", &self.listener.is_some())
            .field("loading", &self.loading)
            .finish()
    }
}

impl<K, V> Default for CacheBuilder<K, V> {
    fn default() -> Self {
        CacheBuilder {
            max_capacity: None,
            weigher: None,
            policy: Policy::default(),
            shards: None,
            time_to_live: None,
            time_to_idle: None,
            expiry: None,
            listener: None,
            clock: None,
            loading: LoadingOptions::default(),
            sketch_halving: true,
        }
    }
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The most the cache holds: entries, or total weight with a [`weigher`](Self::weigher).
    /// Without it the cache is unbounded.
    pub fn max_capacity(mut self, n: u64) -> Self {
        self.max_capacity = Some(n);
        self
    }

    /// Weighs each entry (e.g. its size in bytes); capacity is then a total weight. The
    /// weigher runs once per insert, outside the shard lock.
    pub fn weigher(mut self, f: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(f));
        self
    }

    /// The eviction policy (default [`Policy::WTinyLfu`]).
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }

    /// The number of shards, rounded up to a power of two and clamped to `[1, 1024]`.
    /// `shards(1)` gives exact, unsharded behaviour: one policy sees every key.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Entries expire this long after they were written.
    pub fn time_to_live(mut self, d: Duration) -> Self {
        self.time_to_live = Some(d);
        self
    }

    /// Entries expire this long after they were last read or written.
    pub fn time_to_idle(mut self, d: Duration) -> Self {
        self.time_to_idle = Some(d);
        self
    }

    /// Per-entry expiry (combined with TTL and TTI: the earliest deadline wins).
    pub fn expire_after(mut self, e: impl Expiry<K, V> + 'static) -> Self {
        self.expiry = Some(Arc::new(e));
        self
    }

    /// Called once for every entry that leaves the cache, with why. It runs on the thread
    /// that caused the removal, after the cache's locks are released, so it may call the
    /// cache.
    pub fn eviction_listener(mut self, f: impl Fn(K, V, RemovalCause) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(f));
        self
    }

    /// The clock that expiry is measured against (default [`SystemClock`]).
    pub fn clock(mut self, c: Arc<dyn Clock>) -> Self {
        self.clock = Some(c);
        self
    }

    /// The broken variant for tests: the frequency sketch never halves, so popularity never
    /// fades. Exists only so that a test can show the aging test catches it.
    #[doc(hidden)]
    pub fn broken_sketch_without_halving(mut self) -> Self {
        self.sketch_halving = false;
        self
    }

    pub fn build(self) -> Cache<K, V> {
        let max_capacity = self.max_capacity.unwrap_or(u64::MAX);
        let shard_count = match self.shards {
            Some(n) => n.clamp(1, MAX_SHARDS).next_power_of_two(),
            None => default_shard_count(max_capacity),
        };
        let shard_bits = shard_count.trailing_zeros();
        let base = max_capacity / shard_count as u64;
        let remainder = max_capacity % shard_count as u64;
        let shards = (0..shard_count as u64)
            .map(|index| {
                let capacity = base + u64::from(index < remainder);
                let entries_hint = (self.weigher.is_none() && capacity <= EAGER_SKETCH_ENTRIES).then_some(capacity);
                Shard::new(PolicyConfig {
                    policy: self.policy,
                    capacity,
                    entries_hint,
                    sketch_halving: self.sketch_halving,
                })
            })
            .collect();
        let time_to_live = self.time_to_live.map(duration_nanos);
        let time_to_idle = self.time_to_idle.map(duration_nanos);
        let expiring = time_to_live.is_some() || time_to_idle.is_some() || self.expiry.is_some();
        Cache {
            inner: Arc::new(Inner {
                shards,
                shard_bits,
                hasher: foldhash::fast::RandomState::default(),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock::new())),
                weigher: self.weigher,
                listener: self.listener,
                time_to_live,
                time_to_idle,
                expiry: self.expiry,
                expiring,
                stale_grace: duration_nanos(self.loading.stale_grace),
                loading: self.loading,
                max_capacity,
                policy: self.policy,
                loads: LoadCounters::default(),
            }),
        }
    }
}

/// The default shard count: four per core (so that threads rarely meet on one lock), as a
/// power of two, at most 64, and fewer when that would leave shards smaller than
/// [`MIN_DEFAULT_SHARD_CAPACITY`].
fn default_shard_count(max_capacity: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    let mut shards = (cores * 4).next_power_of_two().min(64);
    while shards > 1 && max_capacity / (shards as u64) < MIN_DEFAULT_SHARD_CAPACITY {
        shards /= 2;
    }
    shards
}

/// A duration in nanoseconds, saturating (a TTL of 600 years is "never").
fn duration_nanos(d: Duration) -> Nanos {
    Nanos::try_from(d.as_nanos()).unwrap_or(NEVER)
}

/// The absolute deadline `d` from `now`; `None` is never.
fn deadline_after(now: Nanos, d: Option<Duration>) -> Nanos {
    d.map_or(NEVER, |d| now.saturating_add(duration_nanos(d)))
}

/// What is left until `deadline`, `None` for never.
fn remaining_until(deadline: Nanos, now: Nanos) -> Option<Duration> {
    (deadline != NEVER).then(|| Duration::from_nanos(deadline.saturating_sub(now)))
}

/// A concurrent cache with a bounded size; cheap to clone (an `Arc` inside).
///
/// ```
/// use minicache::Cache;
///
/// let cache: Cache<String, u32> = Cache::new(10_000);
/// cache.insert("answer".to_string(), 42);
/// assert_eq!(cache.get("answer"), Some(42));
/// assert_eq!(cache.stats().hits, 1);
/// ```
pub struct Cache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache { inner: Arc::clone(&self.inner) }
    }
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: u64 = self.inner.shards.iter().map(|s| s.counters.entries.load(Ordering::Relaxed)).sum();
        f.debug_struct("Cache")
            .field("policy", &self.inner.policy)
            .field("shards", &self.inner.shards.len())
            .field("max_capacity", &self.inner.max_capacity)
            .field("entries", &entries)
            .finish()
    }
}

/// What the cache shares between its clones.
struct Inner<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// log2 of the shard count; the top `shard_bits` of a hash pick the shard.
    shard_bits: u32,
    /// foldhash, randomly seeded per cache: fast, and a different seed per process makes
    /// hash flooding harder (it is not a keyed PRF like SipHash; see Caffeine's admission
    /// jitter for the other half of that defence).
    hasher: foldhash::fast::RandomState,
    clock: Arc<dyn Clock>,
    weigher: Option<Weigher<K, V>>,
    listener: Option<Listener<K, V>>,
    time_to_live: Option<Nanos>,
    time_to_idle: Option<Nanos>,
    expiry: Option<Arc<dyn Expiry<K, V>>>,
    /// Any of TTL, TTI or `expiry`: only then do reads ask the clock.
    expiring: bool,
    /// `loading.stale_grace` in nanoseconds: how long past its deadline an entry is kept
    /// for `lookup_with_meta`.
    stale_grace: Nanos,
    loading: LoadingOptions,
    max_capacity: u64,
    policy: Policy,
    loads: LoadCounters,
}

/// The loading layer's counters (cache-wide: loads are rare next to lookups).
#[derive(Debug, Default)]
struct LoadCounters {
    successes: AtomicU64,
    failures: AtomicU64,
    total_nanos: AtomicU64,
}

/// One entry's value and metadata. Immutable but for its deadlines, which reads move.
struct Entry<V> {
    value: V,
    hash: u64,
    /// (slot << 32) | generation: names the entry's slot in the shard core without a lock;
    /// the generation tells a reused slot from the one a stale token meant.
    token: u64,
    inserted_at: Nanos,
    /// How long the load that produced the value took (XFetch's delta); 0 for plain inserts.
    load_nanos: u64,
    /// Written-at + TTL; fixed for the entry's life (an update makes a new `Entry`).
    ttl_deadline: Nanos,
    /// The per-entry `Expiry` deadline; moved by reads.
    custom_deadline: AtomicU64,
    /// The earliest of TTL, TTI and custom deadlines: what `get` checks.
    expires_at: AtomicU64,
}

impl<V> Entry<V> {
    fn slot(&self) -> u32 {
        (self.token >> 32) as u32
    }

    fn expires_at(&self) -> Nanos {
        self.expires_at.load(Ordering::Acquire)
    }

    /// When maintenance may drop the entry: its deadline plus the stale grace.
    fn removal_deadline(&self, stale_grace: Nanos) -> Nanos {
        self.expires_at().saturating_add(stale_grace)
    }
}

/// An entry as the loading layer sees it.
#[derive(Debug, Clone)]
#[allow(dead_code)] // read by loading.rs
pub(crate) struct Peek<V> {
    pub(crate) value: V,
    pub(crate) inserted_at: Nanos,
    /// Absolute; `<= now` means stale (and within the grace, or it would not be returned).
    pub(crate) expires_at: Option<Nanos>,
    /// How long the load that produced it took (XFetch's delta).
    pub(crate) load_nanos: u64,
}

/// One shard: a map readers share, a lossy read buffer, and the core writers lock.
struct Shard<K, V> {
    map: RwLock<Table<K, V>>,
    core: Mutex<ShardCore<V>>,
    reads: ReadBuffer,
    counters: ShardCounters,
}

/// Statistics per shard (so that threads on different shards do not share a cache line).
#[derive(Debug, Default)]
struct ShardCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    replacements: AtomicU64,
    evictions_size: AtomicU64,
    evictions_expired: AtomicU64,
    invalidations: AtomicU64,
    /// Entries in the map, stored at the end of every write (under the map lock).
    entries: AtomicU64,
    /// Total weight, stored at the end of every write.
    weight: AtomicU64,
}

impl ShardCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What writers lock: the policy, the slots that tie policy nodes to entries, the expiry
/// index.
struct ShardCore<V> {
    policy: EvictionPolicy,
    slots: Vec<SlotState<V>>,
    /// Free slot numbers, reused before the table grows.
    free: Vec<u32>,
    /// Entries with a deadline, by (removal deadline, slot). A filed deadline is never later
    /// than the entry's true one, except briefly after a read shortened it (re-filed when
    /// that read's token is drained).
    deadlines: BTreeSet<(Nanos, u32)>,
    /// Scratch space for the policy's victims, kept to avoid an allocation per write.
    victims: Vec<u32>,
}

struct SlotState<V> {
    /// Bumped at each reuse; starts at 1 so that a token is never 0 (an empty buffer slot).
    generation: u32,
    occupant: Option<Occupant<V>>,
}

struct Occupant<V> {
    entry: Arc<Entry<V>>,
    /// The deadline under which the slot is filed in `deadlines`, if any.
    filed_deadline: Option<Nanos>,
}

/// Removed entries, handed to the listener once the locks are released (dropping them
/// there too, so that an expensive `V::drop` never runs under a lock).
struct Removals<K, V> {
    removed: Vec<(K, Arc<Entry<V>>, RemovalCause)>,
}

impl<K, V> Removals<K, V> {
    fn new() -> Self {
        Removals { removed: Vec::new() }
    }
}

/// The lossy, lock-free buffer of read tokens.
struct ReadBuffer {
    tokens: Box<[AtomicU64]>,
    /// Claims handed out since the last drain; past `READ_BUFFER_SLOTS` reads are dropped.
    claimed: AtomicUsize,
}

impl ReadBuffer {
    fn new() -> Self {
        ReadBuffer { tokens: (0..READ_BUFFER_SLOTS).map(|_| AtomicU64::new(0)).collect(), claimed: AtomicUsize::new(0) }
    }

    /// Records a read; `true` when it is time to try a drain.
    fn record(&self, token: u64) -> bool {
        let index = self.claimed.fetch_add(1, Ordering::AcqRel);
        if let Some(slot) = self.tokens.get(index) {
            slot.store(token, Ordering::Release);
        }
        index + 1 >= READ_BUFFER_DRAIN_AT
    }

    /// Hands every recorded token to `f`, oldest first, and empties the buffer. A reader
    /// racing with the drain may lose its token (the buffer is lossy by design).
    fn drain(&self, mut f: impl FnMut(u64)) {
        let claimed = self.claimed.load(Ordering::Acquire).min(READ_BUFFER_SLOTS);
        for slot in &self.tokens[..claimed] {
            let token = slot.swap(0, Ordering::AcqRel);
            if token != 0 {
                f(token);
            }
        }
        self.claimed.store(0, Ordering::Release);
    }
}

impl<K, V> Shard<K, V> {
    fn new(config: PolicyConfig) -> Self {
        Shard {
            map: RwLock::new(HashTable::new()),
            core: Mutex::new(ShardCore {
                policy: EvictionPolicy::new(config),
                slots: Vec::new(),
                free: Vec::new(),
                deadlines: BTreeSet::new(),
                victims: Vec::new(),
            }),
            reads: ReadBuffer::new(),
            counters: ShardCounters::default(),
        }
    }

    /// Publishes the entry count and weight; called at the end of every write, map locked.
    fn publish_size(&self, map: &Table<K, V>, core: &ShardCore<V>) {
        assert_eq!(map.len() as u64, core.policy.len(), "the map and the policy disagree on the entry count");
        self.counters.entries.store(map.len() as u64, Ordering::Release);
        self.counters.weight.store(core.policy.weighted_size(), Ordering::Release);
    }
}

impl<V> ShardCore<V> {
    /// Applies the buffered reads to the policy.
    fn drain_reads(&mut self, reads: &ReadBuffer, stale_grace: Nanos) {
        reads.drain(|token| {
            let slot = (token >> 32) as u32;
            let generation = token as u32;
            let Some(state) = self.slots.get_mut(slot as usize) else { return };
            let Some(occupant) = state.occupant.as_mut() else { return };
            if state.generation != generation {
                return;
            }
            self.policy.access(slot);
            // A read may have shortened the deadline (a custom `expire_after_read`): re-file
            // it so maintenance does not find it late. Extensions need nothing (see docs).
            let truth = occupant.entry.removal_deadline(stale_grace);
            if let Some(filed) = occupant.filed_deadline {
                if truth < filed {
                    self.deadlines.remove(&(filed, slot));
                    self.deadlines.insert((truth, slot));
                    occupant.filed_deadline = Some(truth);
                }
            }
        });
    }

    /// A free slot and the token its entry will carry.
    fn allocate_slot(&mut self) -> (u32, u64) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|slot| *slot != crate::policy::NIL)
                    .expect("a shard holds at most 2^32 - 1 entries; use more shards");
                self.slots.push(SlotState { generation: 0, occupant: None });
                slot
            }
        };
        let state = &mut self.slots[slot as usize];
        assert!(state.occupant.is_none(), "slot {slot} was free but occupied");
        state.generation = state.generation.wrapping_add(1).max(1);
        (slot, (u64::from(slot) << 32) | u64::from(state.generation))
    }

    /// Puts `entry` in its slot (replacing what was there) and files its deadline.
    fn occupy(&mut self, entry: Arc<Entry<V>>, stale_grace: Nanos) {
        let slot = entry.slot();
        let state = &mut self.slots[slot as usize];
        // Unfile the previous occupant first: a replacement written at the same instant has
        // the same (deadline, slot) key, and unfiling after filing would drop the new one
        // (the model test found exactly that).
        if let Some(previous) = state.occupant.take() {
            if let Some(filed) = previous.filed_deadline {
                self.deadlines.remove(&(filed, slot));
            }
        }
        let deadline = entry.removal_deadline(stale_grace);
        let filed_deadline = (deadline != NEVER).then_some(deadline);
        if let Some(deadline) = filed_deadline {
            self.deadlines.insert((deadline, slot));
        }
        state.occupant = Some(Occupant { entry, filed_deadline });
    }

    /// Removes the entry in `slot` from the slot table, the expiry index and the map, and
    /// from the policy unless the policy evicted it itself (`RemovalCause::Size`).
    fn remove_slot<K>(
        &mut self,
        map: &mut Table<K, V>,
        slot: u32,
        cause: RemovalCause,
        counters: &ShardCounters,
        removals: &mut Removals<K, V>,
    ) {
        let state = &mut self.slots[slot as usize];
        let occupant = state.occupant.take().expect("removing an empty slot (a policy or index mix-up)");
        if let Some(filed) = occupant.filed_deadline {
            self.deadlines.remove(&(filed, slot));
        }
        if cause != RemovalCause::Size {
            self.policy.remove(slot);
        }
        self.free.push(slot);
        let found = map.find_entry(occupant.entry.hash, |(_, entry)| Arc::ptr_eq(entry, &occupant.entry));
        let Ok(found) = found else { panic!("slot {slot} names an entry the map does not hold") };
        let ((key, entry), _) = found.remove();
        let counter = match cause {
            RemovalCause::Size => &counters.evictions_size,
            RemovalCause::Expired => &counters.evictions_expired,
            RemovalCause::Explicit => &counters.invalidations,
            RemovalCause::Replaced => unreachable!("a replaced entry keeps its slot"),
        };
        ShardCounters::add(counter, 1);
        removals.removed.push((key, entry, cause));
    }

    /// Whether some filed deadline is due at `now`.
    fn has_due(&self, now: Nanos) -> bool {
        self.deadlines.first().is_some_and(|(deadline, _)| *deadline <= now)
    }

    /// Removes every entry whose removal deadline is due; re-files those a read extended.
    fn expire<K>(
        &mut self,
        map: &mut Table<K, V>,
        now: Nanos,
        stale_grace: Nanos,
        counters: &ShardCounters,
        removals: &mut Removals<K, V>,
    ) {
        while let Some(&(filed, slot)) = self.deadlines.first() {
            if filed > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(occupant) = self.slots[slot as usize].occupant.as_mut() else {
                panic!("the expiry index names empty slot {slot}");
            };
            assert_eq!(occupant.filed_deadline, Some(filed), "slot {slot} filed under two deadlines");
            let truth = occupant.entry.removal_deadline(stale_grace);
            if truth > now {
                // A read extended it (TTI): file it under its real deadline.
                occupant.filed_deadline = (truth != NEVER).then_some(truth);
                if truth != NEVER {
                    self.deadlines.insert((truth, slot));
                }
                continue;
            }
            occupant.filed_deadline = None;
            self.remove_slot(map, slot, RemovalCause::Expired, counters, removals);
        }
    }
}

/// What a read found.
enum Found<R> {
    Live(R, u64),
    /// Present but expired (and past the grace, or the caller does not take stale entries).
    Expired,
    Absent,
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A W-TinyLFU cache of at most `max_capacity` entries.
    pub fn new(max_capacity: u64) -> Self {
        Self::builder().max_capacity(max_capacity).build()
    }

    pub fn builder() -> CacheBuilder<K, V> {
        CacheBuilder::default()
    }

    /// The value for `key` if it is present and not expired. Counts a hit or a miss and
    /// records the access for the eviction policy (and TTI).
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read(key, false, |entry| entry.value.clone())
    }

    /// Inserts or replaces the value for `key`. The write evicts what it must before it
    /// returns, so the cache is within capacity again.
    pub fn insert(&self, key: K, value: V) {
        self.write(key, value, 0);
    }

    /// Removes `key`; returns its value if it was present and not expired.
    pub fn invalidate<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let shard = inner.shard(hash);
        let now = inner.clock.now();
        let mut removals = Removals::new();
        let mut value = None;
        {
            let mut core = shard.core.lock();
            core.drain_reads(&shard.reads, inner.stale_grace);
            let mut map = shard.map.write();
            let found =
                map.find(hash, |(k, _)| k.borrow() == key).map(|(_, entry)| (entry.slot(), now >= entry.expires_at()));
            if let Some((slot, expired)) = found {
                let cause = if expired { RemovalCause::Expired } else { RemovalCause::Explicit };
                core.remove_slot(&mut map, slot, cause, &shard.counters, &mut removals);
                if !expired {
                    value = removals.removed.last().map(|(_, entry, _)| entry.value.clone());
                }
            }
            core.expire(&mut map, now, inner.stale_grace, &shard.counters, &mut removals);
            shard.publish_size(&map, &core);
        }
        inner.notify(removals);
        value
    }

    /// Removes every entry.
    pub fn invalidate_all(&self) {
        self.sweep_shards(|core, map, now, counters, removals| {
            let slots: Vec<(u32, bool)> =
                map.iter().map(|(_, entry)| (entry.slot(), now >= entry.expires_at())).collect();
            for (slot, expired) in slots {
                let cause = if expired { RemovalCause::Expired } else { RemovalCause::Explicit };
                core.remove_slot(map, slot, cause, counters, removals);
            }
        });
    }

    /// Removes every live entry for which `predicate` holds. The predicate runs under the
    /// shard's locks: it must not call the cache.
    pub fn invalidate_if(&self, predicate: impl Fn(&K, &V) -> bool) {
        let stale_grace = self.inner.stale_grace;
        self.sweep_shards(|core, map, now, counters, removals| {
            core.expire(map, now, stale_grace, counters, removals);
            let slots: Vec<u32> = map
                .iter()
                .filter(|(key, entry)| now < entry.expires_at() && predicate(key, &entry.value))
                .map(|(_, entry)| entry.slot())
                .collect();
            for slot in slots {
                core.remove_slot(map, slot, RemovalCause::Explicit, counters, removals);
            }
        });
    }

    /// Whether `key` is present and not expired. Records no access and counts nothing.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let now = if inner.expiring { inner.clock.now() } else { 0 };
        let map = inner.shard(hash).map.read();
        map.find(hash, |(k, _)| k.borrow() == key).is_some_and(|(_, entry)| now < entry.expires_at())
    }

    /// Entries held, including expired ones not yet removed (run
    /// [`run_pending_tasks`](Self::run_pending_tasks) first for an exact live count).
    pub fn entry_count(&self) -> u64 {
        self.inner.shards.iter().map(|s| s.counters.entries.load(Ordering::Acquire)).sum()
    }

    /// Total weight held (the entry count without a weigher); never above `max_capacity`.
    pub fn weighted_size(&self) -> u64 {
        self.inner.shards.iter().map(|s| s.counters.weight.load(Ordering::Acquire)).sum()
    }

    pub fn stats(&self) -> CacheStats {
        let inner = &*self.inner;
        let mut stats = CacheStats {
            load_successes: inner.loads.successes.load(Ordering::Relaxed),
            load_failures: inner.loads.failures.load(Ordering::Relaxed),
            total_load_nanos: inner.loads.total_nanos.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for shard in inner.shards.iter() {
            let c = &shard.counters;
            stats.hits += c.hits.load(Ordering::Relaxed);
            stats.misses += c.misses.load(Ordering::Relaxed);
            stats.inserts += c.inserts.load(Ordering::Relaxed);
            stats.replacements += c.replacements.load(Ordering::Relaxed);
            stats.evictions_size += c.evictions_size.load(Ordering::Relaxed);
            stats.evictions_expired += c.evictions_expired.load(Ordering::Relaxed);
            stats.invalidations += c.invalidations.load(Ordering::Relaxed);
        }
        stats
    }

    /// Applies buffered work now: drains every shard's read buffer into its policy and
    /// removes every expired entry. For tests and benchmarks; the cache does this on its
    /// own as it is used.
    pub fn run_pending_tasks(&self) {
        let stale_grace = self.inner.stale_grace;
        self.sweep_shards(|core, map, now, counters, removals| {
            core.expire(map, now, stale_grace, counters, removals);
        });
    }

    /// Runs `work` on every shard in turn with both of its locks held (core, then map, the
    /// one lock order), after draining its read buffer so the policy is up to date; then
    /// publishes the shard's size and, with the locks released, tells the listener what
    /// `work` removed. The frame of every whole-cache operation.
    fn sweep_shards(
        &self,
        mut work: impl FnMut(&mut ShardCore<V>, &mut Table<K, V>, Nanos, &ShardCounters, &mut Removals<K, V>),
    ) {
        let inner = &*self.inner;
        let now = inner.clock.now();
        for shard in inner.shards.iter() {
            let mut removals = Removals::new();
            {
                let mut core = shard.core.lock();
                core.drain_reads(&shard.reads, inner.stale_grace);
                let mut map = shard.map.write();
                work(&mut core, &mut map, now, &shard.counters, &mut removals);
                shard.publish_size(&map, &core);
            }
            inner.notify(removals);
        }
    }

    /// The eviction policy this cache runs.
    pub fn policy(&self) -> Policy {
        self.inner.policy
    }

    /// Like `get` (records the access, counts a hit or a miss), but also returns an entry
    /// that is past its expiry and still within `loading_options().stale_grace` of it. A
    /// stale entry returned counts as a hit (the caller serves it); it does not extend TTI.
    #[allow(dead_code)] // used by loading.rs
    pub(crate) fn lookup_with_meta<Q>(&self, key: &Q) -> Option<Peek<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read(key, true, |entry| {
            let expires_at = entry.expires_at();
            Peek {
                value: entry.value.clone(),
                inserted_at: entry.inserted_at,
                expires_at: (expires_at != NEVER).then_some(expires_at),
                load_nanos: entry.load_nanos,
            }
        })
    }

    /// `insert`, remembering how long the load took.
    #[allow(dead_code)] // used by loading.rs
    pub(crate) fn insert_loaded(&self, key: K, value: V, load_nanos: u64) {
        self.write(key, value, load_nanos);
    }

    /// The cache's clock.
    #[allow(dead_code)] // used by loading.rs
    pub(crate) fn now(&self) -> Nanos {
        self.inner.clock.now()
    }

    #[allow(dead_code)] // used by loading.rs
    pub(crate) fn record_load(&self, success: bool, nanos: u64) {
        let loads = &self.inner.loads;
        let counter = if success { &loads.successes } else { &loads.failures };
        counter.fetch_add(1, Ordering::Relaxed);
        loads.total_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    #[allow(dead_code)] // used by loading.rs
    pub(crate) fn loading_options(&self) -> &LoadingOptions {
        &self.inner.loading
    }

    /// W-TinyLFU's current window capacity per shard (the hill climber's output), for the
    /// replay's report; `None` under other policies.
    #[doc(hidden)]
    pub fn debug_window_capacity(&self) -> Vec<Option<u64>> {
        self.inner.shards.iter().map(|shard| shard.core.lock().policy.window_capacity()).collect()
    }

    /// The read path shared by `get` and `lookup_with_meta`: `f` sees the live (or, with
    /// `accept_stale`, stale-within-grace) entry under the map's read lock.
    fn read<Q, R>(&self, key: &Q, accept_stale: bool, f: impl FnOnce(&Entry<V>) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let shard = inner.shard(hash);
        let now = if inner.expiring { inner.clock.now() } else { 0 };
        let found = {
            let map = shard.map.read();
            match map.find(hash, |(k, _)| k.borrow() == key) {
                None => Found::Absent,
                Some((k, entry)) => {
                    let expires_at = entry.expires_at();
                    if now < expires_at {
                        inner.extend_on_read(k, entry, now);
                        Found::Live(f(entry), entry.token)
                    } else if accept_stale && now < expires_at.saturating_add(inner.stale_grace) {
                        Found::Live(f(entry), entry.token)
                    } else {
                        Found::Expired
                    }
                }
            }
        };
        match found {
            Found::Live(result, token) => {
                ShardCounters::add(&shard.counters.hits, 1);
                if shard.reads.record(token) {
                    inner.try_maintain(shard, now);
                }
                Some(result)
            }
            Found::Expired => {
                ShardCounters::add(&shard.counters.misses, 1);
                if inner.stale_grace == 0 {
                    inner.remove_expired(shard, hash, key, now);
                }
                None
            }
            Found::Absent => {
                ShardCounters::add(&shard.counters.misses, 1);
                None
            }
        }
    }

    /// The write path shared by `insert` and `insert_loaded`.
    fn write(&self, key: K, value: V, load_nanos: u64) {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(&key);
        let shard = inner.shard(hash);
        let now = inner.clock.now();
        let weight = inner.weigher.as_ref().map_or(1, |weigher| weigher(&key, &value));
        let mut removals = Removals::new();
        {
            let mut core = shard.core.lock();
            core.drain_reads(&shard.reads, inner.stale_grace);
            let mut map = shard.map.write();
            let mut victims = std::mem::take(&mut core.victims);
            match map.find_mut(hash, |(k, _)| *k == key) {
                Some((_, current)) => {
                    let custom = match &inner.expiry {
                        Some(expiry) => {
                            let remaining = remaining_until(current.custom_deadline.load(Ordering::Acquire), now);
                            deadline_after(now, expiry.expire_after_update(&key, &value, now, remaining))
                        }
                        None => NEVER,
                    };
                    let entry = Arc::new(inner.new_entry(value, hash, current.token, now, load_nanos, custom));
                    let previous = std::mem::replace(current, Arc::clone(&entry));
                    let slot = entry.slot();
                    core.occupy(entry, inner.stale_grace);
                    core.policy.update(slot, weight, &mut victims);
                    ShardCounters::add(&shard.counters.replacements, 1);
                    removals.removed.push((key, previous, RemovalCause::Replaced));
                }
                None => {
                    let custom = match &inner.expiry {
                        Some(expiry) => deadline_after(now, expiry.expire_after_create(&key, &value, now)),
                        None => NEVER,
                    };
                    let (slot, token) = core.allocate_slot();
                    let entry = Arc::new(inner.new_entry(value, hash, token, now, load_nanos, custom));
                    map.insert_unique(hash, (key, Arc::clone(&entry)), |(_, entry)| entry.hash);
                    core.occupy(entry, inner.stale_grace);
                    core.policy.insert(slot, hash, weight, &mut victims);
                    ShardCounters::add(&shard.counters.inserts, 1);
                }
            }
            for victim in victims.drain(..) {
                core.remove_slot(&mut map, victim, RemovalCause::Size, &shard.counters, &mut removals);
            }
            core.victims = victims;
            core.expire(&mut map, now, inner.stale_grace, &shard.counters, &mut removals);
            shard.publish_size(&map, &core);
        }
        inner.notify(removals);
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn shard(&self, hash: u64) -> &Shard<K, V> {
        let index = if self.shard_bits == 0 { 0 } else { (hash >> (64 - self.shard_bits)) as usize };
        &self.shards[index]
    }

    fn new_entry(
        &self,
        value: V,
        hash: u64,
        token: u64,
        now: Nanos,
        load_nanos: u64,
        custom_deadline: Nanos,
    ) -> Entry<V> {
        let ttl_deadline = self.time_to_live.map_or(NEVER, |ttl| now.saturating_add(ttl));
        let tti_deadline = self.time_to_idle.map_or(NEVER, |tti| now.saturating_add(tti));
        Entry {
            value,
            hash,
            token,
            inserted_at: now,
            load_nanos,
            ttl_deadline,
            custom_deadline: AtomicU64::new(custom_deadline),
            expires_at: AtomicU64::new(ttl_deadline.min(tti_deadline).min(custom_deadline)),
        }
    }

    /// Moves a live entry's deadline after a read: TTI restarts, a custom expiry is asked.
    /// Runs under the map's read lock; the stores race only with other readers doing the
    /// same, and any of their answers is a valid deadline.
    fn extend_on_read(&self, key: &K, entry: &Entry<V>, now: Nanos) {
        if self.time_to_idle.is_none() && self.expiry.is_none() {
            return;
        }
        let mut custom = entry.custom_deadline.load(Ordering::Acquire);
        if let Some(expiry) = &self.expiry {
            let remaining = remaining_until(custom, now);
            custom = deadline_after(now, expiry.expire_after_read(key, &entry.value, now, remaining));
            entry.custom_deadline.store(custom, Ordering::Release);
        }
        let tti_deadline = self.time_to_idle.map_or(NEVER, |tti| now.saturating_add(tti));
        entry.expires_at.store(entry.ttl_deadline.min(tti_deadline).min(custom), Ordering::Release);
    }

    /// Drains the read buffer and expires what is due, if no writer holds the core now.
    fn try_maintain(&self, shard: &Shard<K, V>, now: Nanos) {
        let mut removals = Removals::new();
        {
            let Some(mut core) = shard.core.try_lock() else { return };
            core.drain_reads(&shard.reads, self.stale_grace);
            let now = if self.expiring { now } else { 0 };
            if core.has_due(now) {
                let mut map = shard.map.write();
                core.expire(&mut map, now, self.stale_grace, &shard.counters, &mut removals);
                shard.publish_size(&map, &core);
            }
        }
        self.notify(removals);
    }

    /// Removes `key` if it is still expired (a reader found it so, with no stale grace).
    fn remove_expired<Q>(&self, shard: &Shard<K, V>, hash: u64, key: &Q, now: Nanos)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut removals = Removals::new();
        {
            let mut core = shard.core.lock();
            core.drain_reads(&shard.reads, self.stale_grace);
            let mut map = shard.map.write();
            let expired = map
                .find(hash, |(k, _)| k.borrow() == key)
                .filter(|(_, entry)| now >= entry.removal_deadline(self.stale_grace))
                .map(|(_, entry)| entry.slot());
            if let Some(slot) = expired {
                core.remove_slot(&mut map, slot, RemovalCause::Expired, &shard.counters, &mut removals);
            }
            core.expire(&mut map, now, self.stale_grace, &shard.counters, &mut removals);
            shard.publish_size(&map, &core);
        }
        self.notify(removals);
    }

    /// Tells the listener about removed entries; no lock is held here.
    fn notify(&self, removals: Removals<K, V>) {
        let Some(listener) = &self.listener else { return };
        for (key, entry, cause) in removals.removed {
            let value = Arc::try_unwrap(entry).map_or_else(|shared| shared.value.clone(), |entry| entry.value);
            listener(key, value, cause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::MockClock;

    fn exact<V: Clone + Send + Sync + 'static>(policy: Policy, capacity: u64) -> Cache<u64, V> {
        Cache::builder().policy(policy).max_capacity(capacity).shards(1).build()
    }

    #[test]
    fn get_after_insert_and_stats_count_hits_and_misses() {
        for policy in [Policy::WTinyLfu, Policy::S3Fifo, Policy::Lru] {
            let cache = exact::<&str>(policy, 10);
            assert_eq!(cache.get(&1), None);
            cache.insert(1, "one");
            assert_eq!(cache.get(&1), Some("one"));
            let stats = cache.stats();
            assert_eq!((stats.hits, stats.misses, stats.inserts), (1, 1, 1), "{policy:?}");
        }
    }

    #[test]
    fn capacity_is_never_exceeded_under_any_policy() {
        for policy in [Policy::WTinyLfu, Policy::S3Fifo, Policy::Lru] {
            let cache = exact::<u64>(policy, 50);
            for key in 0..1_000u64 {
                cache.insert(key % 137, key);
                cache.get(&(key % 11));
                assert!(cache.weighted_size() <= 50, "{policy:?} at {key}: {}", cache.weighted_size());
            }
            assert_eq!(cache.entry_count(), 50);
        }
    }

    #[test]
    fn shards_split_capacity_exactly() {
        let cache: Cache<u64, u64> = Cache::builder().max_capacity(1_003).shards(8).build();
        for key in 0..10_000 {
            cache.insert(key, key);
        }
        assert!(cache.entry_count() <= 1_003);
        assert_eq!(cache.inner.shards.len(), 8);
    }

    #[test]
    fn shard_counts_are_normalised() {
        let zero: Cache<u64, u64> = Cache::builder().shards(0).build();
        assert_eq!(zero.inner.shards.len(), 1);
        let odd: Cache<u64, u64> = Cache::builder().shards(5).build();
        assert_eq!(odd.inner.shards.len(), 8);
        let huge: Cache<u64, u64> = Cache::builder().shards(usize::MAX).build();
        assert_eq!(huge.inner.shards.len(), MAX_SHARDS);
    }

    #[test]
    fn ttl_hides_then_removes_an_entry() {
        let clock = MockClock::new();
        let cache: Cache<u64, u64> =
            Cache::builder().time_to_live(Duration::from_secs(1)).clock(Arc::new(clock.clone())).shards(1).build();
        cache.insert(1, 1);
        clock.advance(Duration::from_millis(999));
        assert_eq!(cache.get(&1), Some(1));
        clock.advance(Duration::from_millis(1));
        assert_eq!(cache.get(&1), None, "expired at exactly its deadline");
        assert_eq!(cache.entry_count(), 0, "removed on the access that found it expired");
        assert_eq!(cache.stats().evictions_expired, 1);
    }

    #[test]
    fn stale_grace_keeps_an_expired_entry_for_lookup_with_meta_only() {
        let clock = MockClock::new();
        let mut builder: CacheBuilder<u64, u64> =
            Cache::builder().time_to_live(Duration::from_secs(1)).clock(Arc::new(clock.clone())).shards(1);
        builder.loading.stale_grace = Duration::from_secs(1);
        let cache = builder.build();
        cache.insert_loaded(1, 10, 5_000);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(cache.get(&1), None, "get never returns an expired entry");
        let peek = cache.lookup_with_meta(&1).expect("stale within grace");
        assert_eq!(
            (peek.value, peek.inserted_at, peek.expires_at, peek.load_nanos),
            (10, 0, Some(1_000_000_000), 5_000)
        );
        clock.advance(Duration::from_millis(500));
        assert!(cache.lookup_with_meta(&1).is_none(), "past the grace");
        cache.run_pending_tasks();
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn read_tokens_of_a_reused_slot_are_ignored() {
        let cache = exact::<u64>(Policy::Lru, 2);
        cache.insert(1, 1);
        cache.get(&1); // token for slot 0, generation 1, left in the buffer
        cache.invalidate(&1);
        cache.insert(2, 2); // reuses slot 0 with generation 2
        cache.insert(3, 3);
        cache.insert(4, 4); // LRU evicts 2: the stale token must not have refreshed it
        assert!(!cache.contains_key(&2));
        assert!(cache.contains_key(&3) && cache.contains_key(&4));
    }
}
