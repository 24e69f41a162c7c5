//! Cache-aside over the KV store, with stampede control, refresh-ahead, stale-while-
//! revalidate and negative caching.
//!
//! The pattern: the application reads the shared cache (the KV store, minikv or Redis);
//! on a miss it loads the row from the origin (the database), writes it to the cache with
//! a TTL, and returns it. The cache never talks to the origin itself; the reader does,
//! which is the "aside".
//!
//! ```text
//!  get(k) ── MULTI GET PTTL EXEC ──► fresh ─────────────────────► value
//!                 │                  refresh due / stale ─► value, and one background refresh
//!                 │                  negative entry ──────► "not found"
//!                 ▼ miss
//!  SingleFlight::claim(k)   (one caller per key per process; the rest wait for it)
//!        │leader
//!        ├─ look again (another leader may have just stored it)
//!        ├─ [SingleFlightAndKvLock] SET lock:k token NX PX  (one process; the rest poll the KV)
//!        ├─ origin.load(k)
//!        └─ SET k envelope PX ttl+grace  (or a negative entry, PX negative_ttl)
//! ```
//!
//! **What single-flight protects, and what it does not.** [`minicache::SingleFlight`]
//! makes 1,000 concurrent misses of one key in *one process* cost one origin load: the
//! first caller leads, the others sleep on its flight and share its answer. It cannot see
//! other processes: N application servers missing the same key at once make N loads.
//! [`Protection::SingleFlightAndKvLock`] adds a lease in the KV store
//! ([`super::kv_lock`]): the one leader per process that wins `SET NX` loads, the others
//! poll the KV store for the value, so N processes make one load. This module
//! implements both; the scenario measures both.
//!
//! **Time lives in the KV store.** An entry is written with `PX = ttl + grace`, and a
//! read gets the remaining time with the value in one transaction; the envelope
//! ([`super::envelope`]) says where on its timeline the entry is. So every process
//! agrees on an entry's age, and refresh-ahead, stale-while-revalidate and negative
//! caching work across processes, not only inside one:
//!
//! - **Refresh-ahead** ([`Config::refresh_ahead`]): a read within that long of the soft
//!   expiry serves the value and starts one refresh in the background, so a hot key is
//!   renewed before it expires and no reader waits for the origin.
//! - **Stale-while-revalidate** ([`Config::stale_grace`]): past the soft expiry and
//!   inside the grace, a read serves the stale value at once and starts one refresh.
//!   Past the grace the store has dropped the key: a miss.
//! - **Negative caching** ([`Config::negative_ttl`]): "not found" is stored as a small
//!   negative entry for that long, so a missing key costs one origin load per negative
//!   TTL instead of one per read. Origin *failures* are not cached: every waiting caller
//!   gets the error, and the next read tries again.
//!
//! "One refresh" uses the same flight as "one load" (a refresh claims the key's flight,
//! as in minicache's loading cache), so per process a key has at most one origin query
//! in flight, whatever triggered it. A failed refresh leaves the stale value in place,
//! which then keeps being served until its grace ends (stale-if-error).
//!
//! [`Protection::None`] is the naive pattern, **deliberately unprotected**: no
//! single-flight, no second look, no lock; every miss and every stale read goes to the
//! origin. The scenario and the tests run it to show the stampede the others prevent.
//!
//! Left out: an in-process L1 in front of the KV store (minicache's `TieredCache` is
//! that), writes through the cache (the write path is: update the origin, then
//! [`CacheAside::invalidate`]), and fencing for the lease (see `kv_lock.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minicache::{Claim, LoadError, SingleFlight, Wait};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::envelope::{self, Cached, Envelope, Freshness, Remaining, MAX_WINDOW_MS};
use super::kv_lock::{KvLock, Lease};
use super::origin::{Origin, OriginError};

/// How long a KV command may take before the read fails. A cache that hangs is worse
/// than one that fails: the caller can still go to the origin or shed the request.
pub const KV_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to the KV store may take.
pub const KV_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest key accepted. Redis takes 512 MB keys; a cache key is a name, and a
/// kilobyte is far more than any sensible one.
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest key prefix accepted.
pub const MAX_PREFIX_BYTES: usize = 256;

/// How misses are coordinated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// **Deliberately unprotected**, the naive pattern: every caller that misses loads
    /// from the origin, and every caller that finds an entry due for refresh starts its
    /// own refresh. Kept to show what the other two prevent.
    None,
    /// One load (or refresh) per key per process at a time, through
    /// [`minicache::SingleFlight`]. Several processes still make one load each.
    SingleFlight,
    /// Single-flight, plus a lease in the KV store so that one process loads and the
    /// others poll the store for its result.
    SingleFlightAndKvLock,
}

impl Protection {
    pub fn name(self) -> &'static str {
        match self {
            Protection::None => "naive (no protection)",
            Protection::SingleFlight => "single-flight",
            Protection::SingleFlightAndKvLock => "single-flight + KV lock",
        }
    }
}

/// How a [`CacheAside`] behaves. [`Config::new`] gives plain cache-aside with
/// single-flight; the `with_` methods turn the rest on.
#[derive(Clone, Debug)]
pub struct Config {
    /// Every KV key this cache writes starts with it, so runs and tenants sharing a
    /// server do not collide (`cache-aside:<seed>:<nonce>:`).
    pub prefix: String,
    /// How long a loaded value is fresh.
    pub ttl: Duration,
    /// Refresh-ahead: a read this long (or less) before the soft expiry starts a
    /// background refresh. Must be below `ttl`.
    pub refresh_ahead: Option<Duration>,
    /// Stale-while-revalidate: how long past the soft expiry a value may still be served
    /// (while one refresh runs). The KV key lives `ttl + grace`.
    pub stale_grace: Option<Duration>,
    /// Negative caching: how long a "not found" is remembered.
    pub negative_ttl: Option<Duration>,
    pub protection: Protection,
    /// How long a lease lasts if its holder never releases it (it crashed). Must exceed
    /// the origin's worst-case latency, or a second process loads while the first still
    /// does.
    pub lock_ttl: Duration,
    /// How often a process that lost the lease polls the KV store for the value.
    pub lock_poll: Duration,
    /// How long a reader waits for another process's load before it gives up with
    /// [`CacheAsideError::LockWait`].
    pub lock_wait: Duration,
}

impl Config {
    /// Cache-aside with single-flight, `ttl`, and nothing else on.
    pub fn new(prefix: impl Into<String>, ttl: Duration) -> Config {
        Config {
            prefix: prefix.into(),
            ttl,
            refresh_ahead: None,
            stale_grace: None,
            negative_ttl: None,
            protection: Protection::SingleFlight,
            lock_ttl: Duration::from_secs(5),
            lock_poll: Duration::from_millis(10),
            lock_wait: Duration::from_secs(10),
        }
    }

    pub fn with_protection(mut self, protection: Protection) -> Config {
        self.protection = protection;
        self
    }

    pub fn with_refresh_ahead(mut self, before_expiry: Duration) -> Config {
        self.refresh_ahead = Some(before_expiry);
        self
    }

    pub fn with_stale_grace(mut self, grace: Duration) -> Config {
        self.stale_grace = Some(grace);
        self
    }

    pub fn with_negative_ttl(mut self, ttl: Duration) -> Config {
        self.negative_ttl = Some(ttl);
        self
    }

    pub fn with_lock(mut self, ttl: Duration, poll: Duration, wait: Duration) -> Config {
        self.lock_ttl = ttl;
        self.lock_poll = poll;
        self.lock_wait = wait;
        self
    }

    /// Says what is wrong with the settings, in terms of what to change.
    pub fn validate(&self) -> Result<(), CacheAsideError> {
        let bad = |why: String| Err(CacheAsideError::Config(why));
        let max = Duration::from_millis(MAX_WINDOW_MS);
        if self.prefix.is_empty() || self.prefix.len() > MAX_PREFIX_BYTES {
            return bad(format!("the key prefix must be 1 to {MAX_PREFIX_BYTES} bytes, got {}", self.prefix.len()));
        }
        if self.ttl < Duration::from_millis(1) || self.ttl > max {
            return bad(format!("ttl must be between 1 ms and {max:?}, got {:?}", self.ttl));
        }
        if let Some(ahead) = self.refresh_ahead {
            if ahead.is_zero() || ahead >= self.ttl {
                return bad(format!(
                    "refresh_ahead ({ahead:?}) must be above zero and below the ttl ({:?}), or a value would \
                     be refreshed as soon as it is written",
                    self.ttl
                ));
            }
        }
        for (name, window) in [("stale_grace", self.stale_grace), ("negative_ttl", self.negative_ttl)] {
            if let Some(window) = window {
                if window < Duration::from_millis(1) || window > max {
                    return bad(format!("{name} must be between 1 ms and {max:?}, got {window:?} (or leave it off)"));
                }
            }
        }
        if self.lock_ttl < Duration::from_millis(1) || self.lock_poll.is_zero() || self.lock_wait < self.lock_poll {
            return bad(format!(
                "the lock needs ttl ≥ 1 ms, poll > 0 and wait ≥ poll (got ttl {:?}, poll {:?}, wait {:?})",
                self.lock_ttl, self.lock_poll, self.lock_wait
            ));
        }
        Ok(())
    }

    fn grace_ms(&self) -> u64 {
        self.stale_grace.map_or(0, envelope::millis_for_px)
    }

    fn ahead_ms(&self) -> u64 {
        self.refresh_ahead.map_or(0, envelope::millis_for_px)
    }
}

/// Why a read failed. Cheap to clone: one failed load is handed to every caller that
/// waited on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CacheAsideError {
    #[error("bad cache-aside configuration: {0}")]
    Config(String),
    #[error("bad cache key ({0})")]
    BadKey(String),
    #[error("the KV store failed: {0} (check that it is up and reachable at the URL given)")]
    Kv(Arc<redis::RedisError>),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(
        "waited {waited:?} for another process to load {key:?} (its lease {lock_key:?} is still held); \
         the origin may be slower than lock_ttl allows, or raise lock_wait"
    )]
    LockWait { key: String, lock_key: String, waited: Duration },
    #[error("the load this read waited for panicked in another caller ({0}); the next read loads again")]
    LoaderPanicked(String),
}

impl From<redis::RedisError> for CacheAsideError {
    fn from(e: redis::RedisError) -> Self {
        CacheAsideError::Kv(Arc::new(e))
    }
}

impl From<CacheAsideError> for crate::framework::DemoError {
    fn from(e: CacheAsideError) -> Self {
        crate::framework::DemoError::Scenario(format!("cache-aside: {e}"))
    }
}

/// Where a read's answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A fresh entry in the KV store.
    Fresh,
    /// A cached "not found".
    NegativeHit,
    /// A fresh entry within its refresh-ahead window: served, and one refresh started
    /// (or already running).
    RefreshAhead,
    /// An entry past its soft expiry, inside the grace: served stale, and one refresh
    /// started (or already running).
    Stale,
    /// A miss this caller loaded from the origin.
    Loaded,
    /// A miss another caller of this process loaded; this one waited on its flight.
    Waited,
    /// A miss another process loaded; this one polled the KV store until it appeared.
    Polled,
}

impl Source {
    pub const ALL: [Source; 7] = [
        Source::Fresh,
        Source::NegativeHit,
        Source::RefreshAhead,
        Source::Stale,
        Source::Loaded,
        Source::Waited,
        Source::Polled,
    ];

    /// Whether the reader had to wait for an origin load (its own or another's).
    pub fn is_miss(self) -> bool {
        matches!(self, Source::Loaded | Source::Waited | Source::Polled)
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Fresh => "fresh",
            Source::NegativeHit => "negative hit",
            Source::RefreshAhead => "refresh-ahead",
            Source::Stale => "stale",
            Source::Loaded => "loaded",
            Source::Waited => "waited (flight)",
            Source::Polled => "polled (lock)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A read's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The value, or `None` when the origin has no such row.
    pub value: Option<String>,
    pub source: Source,
}

/// What a cache instance counted (each process counts its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Reads by [`Source`], indexed as [`Source::ALL`].
    reads: [u64; 7],
    /// Origin queries this instance made (loads and refreshes).
    pub origin_loads: u64,
    pub refreshes_started: u64,
    /// Reads that wanted a refresh and found one running for the key.
    pub refreshes_joined: u64,
    /// Refreshes that found the entry already renewed, or another process's lease.
    pub refreshes_skipped: u64,
    pub refresh_failures: u64,
    /// Loads that found another process's lease and waited for it.
    pub lock_waits: u64,
    /// Leases that had expired by the time their holder released them, or whose
    /// release failed (the lease then expires by itself).
    pub leases_lost: u64,
    /// Writes to the KV store that failed after a successful load (the value was still
    /// returned).
    pub store_failures: u64,
    /// Looks at the KV store that found a value under this cache's key that was not an
    /// envelope, each treated as a miss (a read that misses looks twice: its first look
    /// and its leader's second).
    pub corrupt_entries: u64,
    /// Origin answers too large to cache (served, not stored).
    pub uncacheable: u64,
}

impl Stats {
    pub fn reads(&self, source: Source) -> u64 {
        self.reads[source.index()]
    }

    pub fn total_reads(&self) -> u64 {
        self.reads.iter().sum()
    }

    /// Reads that waited for an origin load.
    pub fn misses(&self) -> u64 {
        Source::ALL.iter().filter(|s| s.is_miss()).map(|&s| self.reads(s)).sum()
    }

    /// Both instances' counters added up (a fleet's totals).
    pub fn plus(&self, other: &Stats) -> Stats {
        let mut reads = self.reads;
        for (read, theirs) in reads.iter_mut().zip(other.reads) {
            *read += theirs;
        }
        Stats {
            reads,
            origin_loads: self.origin_loads + other.origin_loads,
            refreshes_started: self.refreshes_started + other.refreshes_started,
            refreshes_joined: self.refreshes_joined + other.refreshes_joined,
            refreshes_skipped: self.refreshes_skipped + other.refreshes_skipped,
            refresh_failures: self.refresh_failures + other.refresh_failures,
            lock_waits: self.lock_waits + other.lock_waits,
            leases_lost: self.leases_lost + other.leases_lost,
            store_failures: self.store_failures + other.store_failures,
            corrupt_entries: self.corrupt_entries + other.corrupt_entries,
            uncacheable: self.uncacheable + other.uncacheable,
        }
    }
}

#[derive(Default)]
struct Counters {
    reads: [AtomicU64; 7],
    origin_loads: AtomicU64,
    refreshes_started: AtomicU64,
    refreshes_joined: AtomicU64,
    refreshes_skipped: AtomicU64,
    refresh_failures: AtomicU64,
    lock_waits: AtomicU64,
    leases_lost: AtomicU64,
    store_failures: AtomicU64,
    corrupt_entries: AtomicU64,
    uncacheable: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What a flight hands its followers: the answer, and where the leader got it.
#[derive(Clone, Debug)]
struct Answer {
    value: Option<String>,
    source: Source,
}

/// An entry found in the KV store, servable now.
struct Hit {
    value: Option<String>,
    freshness: Freshness,
}

impl Hit {
    fn source(&self) -> Source {
        match (self.freshness, &self.value) {
            (Freshness::Fresh, Some(_)) => Source::Fresh,
            (Freshness::Fresh, None) => Source::NegativeHit,
            (Freshness::RefreshDue, _) => Source::RefreshAhead,
            (Freshness::Stale, _) => Source::Stale,
        }
    }
}

/// A cache-aside reader: one per process. Cheap to clone (an `Arc` inside); clones share
/// the connection, the flights and the counters, as the tasks of one process would.
#[derive(Clone)]
pub struct CacheAside {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    origin: Origin,
    /// Shared by every read of this process: plain commands and one-request
    /// transactions (`MULTI GET PTTL EXEC` is written as one batch) are safe on a
    /// multiplexed connection. The lease's `WATCH` is not, so it has its own.
    conn: MultiplexedConnection,
    /// One load or refresh per key at a time, in this process. The value is the answer
    /// the leader publishes; the error is shared by every waiting caller.
    flights: SingleFlight<String, Answer, CacheAsideError>,
    /// With [`Protection::SingleFlightAndKvLock`].
    lock: Option<KvLock>,
    counters: Counters,
    /// Background refreshes running now: a watch channel so that a test or a scenario
    /// phase can wait until they are done, without polling.
    refreshes_running: tokio::sync::watch::Sender<usize>,
}

impl CacheAside {
    /// Connects to the KV store at `kv_url` (`redis://host:port`) in front of `origin`.
    pub async fn connect(kv_url: &str, origin: Origin, config: Config) -> Result<CacheAside, CacheAsideError> {
        config.validate()?;
        let client = redis::Client::open(kv_url)?;
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(KV_CONNECT_TIMEOUT)
            .set_response_timeout(KV_RESPONSE_TIMEOUT);
        let conn = client.get_multiplexed_async_connection_with_config(&connection_config).await?;
        let lock = match config.protection {
            Protection::SingleFlightAndKvLock => {
                let release_conn = client.get_multiplexed_async_connection_with_config(&connection_config).await?;
                Some(KvLock::new(release_conn, config.lock_ttl, fastrand::u64(..)))
            }
            Protection::None | Protection::SingleFlight => None,
        };
        let (refreshes_running, _) = tokio::sync::watch::channel(0);
        Ok(CacheAside {
            inner: Arc::new(Inner {
                config,
                origin,
                conn,
                flights: SingleFlight::new(),
                lock,
                counters: Counters::default(),
                refreshes_running,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn origin(&self) -> &Origin {
        &self.inner.origin
    }

    /// The value for `key`: from the KV store when it holds a servable entry, otherwise
    /// loaded from the origin (once per key per process with single-flight, once across
    /// processes with the KV lock) and stored. `Ok(Read { value: None, .. })` is the
    /// origin's "not found".
    pub async fn get(&self, key: &str) -> Result<Read, CacheAsideError> {
        check_key(key)?;
        let read = match self.look(key).await? {
            Some(hit) => self.serve(key, hit),
            None => self.miss(key).await?,
        };
        bump(&self.inner.counters.reads[read.source.index()]);
        Ok(read)
    }

    /// Drops the cached entry for `key` (the cache-aside write path: update the origin,
    /// then invalidate). Returns whether there was one.
    pub async fn invalidate(&self, key: &str) -> Result<bool, CacheAsideError> {
        check_key(key)?;
        let mut conn = self.inner.conn.clone();
        let deleted: i64 = redis::cmd("DEL").arg(self.value_key(key)).query_async(&mut conn).await?;
        Ok(deleted > 0)
    }

    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut reads = [0; 7];
        for (read, counter) in reads.iter_mut().zip(&c.reads) {
            *read = load(counter);
        }
        Stats {
            reads,
            origin_loads: load(&c.origin_loads),
            refreshes_started: load(&c.refreshes_started),
            refreshes_joined: load(&c.refreshes_joined),
            refreshes_skipped: load(&c.refreshes_skipped),
            refresh_failures: load(&c.refresh_failures),
            lock_waits: load(&c.lock_waits),
            leases_lost: load(&c.leases_lost),
            store_failures: load(&c.store_failures),
            corrupt_entries: load(&c.corrupt_entries),
            uncacheable: load(&c.uncacheable),
        }
    }

    /// Background refreshes running now.
    pub fn refreshes_running(&self) -> usize {
        *self.inner.refreshes_running.borrow()
    }

    /// Waits until no background refresh is running; `false` if `timeout` passed first.
    pub async fn wait_for_refreshes(&self, timeout: Duration) -> bool {
        let mut running = self.inner.refreshes_running.subscribe();
        let done = matches!(tokio::time::timeout(timeout, running.wait_for(|&n| n == 0)).await, Ok(Ok(_)));
        done
    }

    /// The KV key holding `key`'s entry.
    pub fn value_key(&self, key: &str) -> String {
        format!("{}val:{key}", self.inner.config.prefix)
    }

    /// The KV key of `key`'s lease.
    pub fn lock_key(&self, key: &str) -> String {
        format!("{}lock:{key}", self.inner.config.prefix)
    }

    // -- the read path --

    /// The entry and its remaining time, in one transaction, placed on its timeline.
    /// `None`: nothing servable (absent, expired for serving, or not an envelope).
    async fn look(&self, key: &str) -> Result<Option<Hit>, CacheAsideError> {
        let value_key = self.value_key(key);
        let mut conn = self.inner.conn.clone();
        let (bytes, pttl): (Option<Vec<u8>>, i64) =
            redis::pipe().atomic().get(&value_key).pttl(&value_key).query_async(&mut conn).await?;
        let Some(bytes) = bytes else { return Ok(None) };
        let envelope = match envelope::decode(&bytes) {
            Ok(envelope) => envelope,
            Err(_) => {
                // A cache is disposable and the origin is the truth: load, and the store
                // overwrites what was there.
                bump(&self.inner.counters.corrupt_entries);
                return Ok(None);
            }
        };
        let Some(freshness) = Freshness::classify(envelope.grace_ms, envelope.ahead_ms, Remaining::from_pttl(pttl))
        else {
            return Ok(None);
        };
        let value = match envelope.cached {
            Cached::Value(value) => Some(value),
            Cached::Missing => None,
        };
        Ok(Some(Hit { value, freshness }))
    }

    /// Serves a hit, starting a refresh when the entry wants one.
    fn serve(&self, key: &str, hit: Hit) -> Read {
        if hit.freshness != Freshness::Fresh {
            self.start_refresh(key);
        }
        let source = hit.source();
        Read { value: hit.value, source }
    }

    async fn miss(&self, key: &str) -> Result<Read, CacheAsideError> {
        if self.inner.config.protection == Protection::None {
            let value = self.load_and_store(key).await?;
            return Ok(Read { value, source: Source::Loaded });
        }
        loop {
            match self.inner.flights.claim(key.to_string()) {
                Claim::Leader(leader) => {
                    // `run_async` publishes the answer (or the error, or the panic) to
                    // the followers; if this future is dropped, one of them takes over.
                    let answer = leader.run_async(self.lead_miss(key)).await.map_err(flight_error)?;
                    if matches!(answer.source, Source::RefreshAhead | Source::Stale) {
                        self.start_refresh(key); // the second look found it aging
                    }
                    return Ok(Read { value: answer.value, source: answer.source });
                }
                Claim::Follower(follower) => match follower.wait_async().await {
                    Wait::Finished(Ok(answer)) => return Ok(Read { value: answer.value, source: Source::Waited }),
                    Wait::Finished(Err(error)) => return Err(flight_error(error)),
                    Wait::Abandoned => continue, // the leader was cancelled: claim again
                },
            }
        }
    }

    /// What a miss's leader does. The second look matters: a caller that missed just
    /// before the previous leader stored the value, and claimed just after it finished,
    /// would otherwise load again.
    async fn lead_miss(&self, key: &str) -> Result<Answer, CacheAsideError> {
        if let Some(hit) = self.look(key).await? {
            return Ok(Answer { source: hit.source(), value: hit.value });
        }
        match &self.inner.lock {
            None => Ok(Answer { value: self.load_and_store(key).await?, source: Source::Loaded }),
            Some(lock) => self.load_under_lease(key, lock).await,
        }
    }

    /// Loads `key` if this process wins its lease; otherwise polls the KV store until
    /// the winner has stored it (or its lease goes, and this one tries to win it).
    async fn load_under_lease(&self, key: &str, lock: &KvLock) -> Result<Answer, CacheAsideError> {
        let lock_key = self.lock_key(key);
        let config = &self.inner.config;
        let started = Instant::now();
        let mut conn = self.inner.conn.clone();
        let mut waited = false;
        loop {
            if let Some(lease) = lock.try_acquire(&mut conn, &lock_key).await? {
                // The previous holder may have stored the value and released just now.
                let answer = match self.look(key).await {
                    Ok(Some(hit)) => {
                        Ok(Answer { source: if waited { Source::Polled } else { hit.source() }, value: hit.value })
                    }
                    Ok(None) => self.load_and_store(key).await.map(|value| Answer { value, source: Source::Loaded }),
                    Err(e) => Err(e),
                };
                self.release(lock, lease).await;
                return answer;
            }
            if !waited {
                waited = true;
                bump(&self.inner.counters.lock_waits);
            }
            if started.elapsed() >= config.lock_wait {
                return Err(CacheAsideError::LockWait { key: key.to_string(), lock_key, waited: started.elapsed() });
            }
            tokio::time::sleep(config.lock_poll).await;
            if let Some(hit) = self.look(key).await? {
                return Ok(Answer { value: hit.value, source: Source::Polled });
            }
        }
    }

    async fn release(&self, lock: &KvLock, lease: Lease) {
        match lock.release(lease).await {
            Ok(true) => {}
            // Expired before we were done (the load outlived lock_ttl), or the release
            // failed: either way the lease expires by itself.
            Ok(false) | Err(_) => bump(&self.inner.counters.leases_lost),
        }
    }

    /// One origin query, and its answer stored. A failure to store is counted, not
    /// returned: the caller has the truth, and the next read loads again.
    async fn load_and_store(&self, key: &str) -> Result<Option<String>, CacheAsideError> {
        bump(&self.inner.counters.origin_loads);
        let value = self.inner.origin.load(key).await?;
        self.store(key, value.as_deref()).await;
        Ok(value)
    }

    async fn store(&self, key: &str, value: Option<&str>) {
        let config = &self.inner.config;
        let (entry, px) = match (value, config.negative_ttl) {
            (Some(value), _) => (
                Envelope {
                    cached: Cached::Value(value.to_string()),
                    grace_ms: config.grace_ms(),
                    ahead_ms: config.ahead_ms(),
                },
                envelope::millis_for_px(config.ttl).saturating_add(config.grace_ms()),
            ),
            (None, Some(negative_ttl)) => {
                (Envelope { cached: Cached::Missing, grace_ms: 0, ahead_ms: 0 }, envelope::millis_for_px(negative_ttl))
            }
            // Not found and not negatively cached: drop whatever was there, so that a
            // stale copy of a row that no longer exists is not served.
            (None, None) => return self.forget(key).await,
        };
        let Some(encoded) = envelope::encode(&entry) else {
            bump(&self.inner.counters.uncacheable);
            return self.forget(key).await;
        };
        let mut conn = self.inner.conn.clone();
        let stored: redis::RedisResult<()> =
            redis::cmd("SET").arg(self.value_key(key)).arg(encoded).arg("PX").arg(px).query_async(&mut conn).await;
        if stored.is_err() {
            bump(&self.inner.counters.store_failures);
        }
    }

    async fn forget(&self, key: &str) {
        let mut conn = self.inner.conn.clone();
        let deleted: redis::RedisResult<i64> = redis::cmd("DEL").arg(self.value_key(key)).query_async(&mut conn).await;
        if deleted.is_err() {
            bump(&self.inner.counters.store_failures);
        }
    }

    // -- background refresh --

    /// Starts one refresh of `key` in the background, unless one is running in this
    /// process (then this read just serves what it has). Naive mode starts one per call.
    fn start_refresh(&self, key: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // not on tokio: no refresh; the entry is reloaded when it expires
        };
        let leader = match self.inner.config.protection {
            Protection::None => None,
            Protection::SingleFlight | Protection::SingleFlightAndKvLock => {
                match self.inner.flights.claim(key.to_string()) {
                    Claim::Leader(leader) => Some(leader),
                    Claim::Follower(_) => {
                        bump(&self.inner.counters.refreshes_joined);
                        return;
                    }
                }
            }
        };
        bump(&self.inner.counters.refreshes_started);
        let running = RefreshRunning::enter(&self.inner.refreshes_running);
        let cache = self.clone();
        let key = key.to_string();
        runtime.spawn(async move {
            let _running = running;
            let outcome = cache.refresh(&key).await;
            if outcome.is_err() {
                bump(&cache.inner.counters.refresh_failures);
            }
            match (leader, outcome) {
                (Some(leader), Ok(Some(answer))) => drop(leader.complete(Ok(answer))),
                (Some(leader), Err(error)) => drop(leader.complete(Err(error))),
                // Skipped: dropping the leader abandons the flight, so a reader that
                // missed meanwhile claims again and takes the miss path.
                (Some(leader), Ok(None)) => drop(leader),
                (None, _) => {}
            }
        });
    }

    /// A refresh: `Ok(None)` when it was not needed after all (renewed meanwhile, or
    /// another process holds the lease and is refreshing it).
    async fn refresh(&self, key: &str) -> Result<Option<Answer>, CacheAsideError> {
        if self.inner.config.protection == Protection::None {
            let value = self.load_and_store(key).await?;
            return Ok(Some(Answer { value, source: Source::Loaded }));
        }
        let lease = match &self.inner.lock {
            None => None,
            Some(lock) => {
                let mut conn = self.inner.conn.clone();
                match lock.try_acquire(&mut conn, &self.lock_key(key)).await? {
                    Some(lease) => Some((lock, lease)),
                    None => {
                        bump(&self.inner.counters.refreshes_skipped);
                        return Ok(None);
                    }
                }
            }
        };
        let outcome = match self.look(key).await {
            // Renewed since the read that asked for this refresh (by another process,
            // or by a refresh here that ended in between): nothing to do.
            Ok(Some(hit)) if hit.freshness == Freshness::Fresh => {
                bump(&self.inner.counters.refreshes_skipped);
                Ok(Some(Answer { source: hit.source(), value: hit.value }))
            }
            Ok(_) => self.load_and_store(key).await.map(|value| Some(Answer { value, source: Source::Loaded })),
            Err(e) => Err(e),
        };
        if let Some((lock, lease)) = lease {
            self.release(lock, lease).await;
        }
        outcome
    }
}

impl std::fmt::Debug for CacheAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheAside")
            .field("config", &self.inner.config)
            .field("refreshes_running", &self.refreshes_running())
            .finish()
    }
}

/// Counts a background refresh in `refreshes_running` while it runs, including when its
/// task is dropped (the runtime shut down) or panics.
struct RefreshRunning(tokio::sync::watch::Sender<usize>);

impl RefreshRunning {
    fn enter(running: &tokio::sync::watch::Sender<usize>) -> Self {
        running.send_modify(|n| *n += 1);
        RefreshRunning(running.clone())
    }
}

impl Drop for RefreshRunning {
    fn drop(&mut self) {
        self.0.send_modify(|n| {
            assert!(*n > 0, "a refresh leaves the gauge once");
            *n -= 1;
        });
    }
}

fn flight_error(error: LoadError<CacheAsideError>) -> CacheAsideError {
    match error {
        LoadError::Failed(error) => CacheAsideError::clone(&error),
        LoadError::Panicked { message } => CacheAsideError::LoaderPanicked(message),
    }
}

fn check_key(key: &str) -> Result<(), CacheAsideError> {
    if key.is_empty() {
        return Err(CacheAsideError::BadKey("the key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CacheAsideError::BadKey(format!("{} bytes, over the {MAX_KEY_BYTES}-byte limit", key.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_that_cannot_work_are_refused_with_the_reason() {
        let ok = Config::new("p:", Duration::from_secs(1));
        assert!(ok.validate().is_ok());
        let cases = [
            (Config::new("", Duration::from_secs(1)), "prefix"),
            (Config::new("p:", Duration::ZERO), "ttl"),
            (ok.clone().with_refresh_ahead(Duration::from_secs(1)), "refresh_ahead"),
            (ok.clone().with_stale_grace(Duration::ZERO), "stale_grace"),
            (ok.clone().with_negative_ttl(Duration::from_micros(10)), "negative_ttl"),
            (ok.clone().with_lock(Duration::from_secs(1), Duration::from_millis(10), Duration::from_millis(1)), "lock"),
        ];
        for (config, word) in cases {
            match config.validate() {
                Err(CacheAsideError::Config(why)) => assert!(why.contains(word), "{why}"),
                other => panic!("{word}: expected a configuration error, got {other:?}"),
            }
        }
    }

    #[test]
    fn keys_are_checked_and_sources_say_what_is_a_miss() {
        assert!(matches!(check_key(""), Err(CacheAsideError::BadKey(_))));
        assert!(matches!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)), Err(CacheAsideError::BadKey(_))));
        assert!(check_key("user:1").is_ok());
        let misses: Vec<_> = Source::ALL.iter().filter(|s| s.is_miss()).collect();
        assert_eq!(misses, [&Source::Loaded, &Source::Waited, &Source::Polled]);
        for (i, source) in Source::ALL.iter().enumerate() {
            assert_eq!(source.index(), i, "Source::ALL is in index order");
        }
    }
}
