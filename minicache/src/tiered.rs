//! The near cache: an in-process [`Cache`] (L1) in front of a RESP server (L2), kept
//! coherent by the server itself through Redis 6+ client-side caching.
//!
//! L2 is minikv or a real Redis 6/7: the code is the same, it only speaks RESP3 through
//! the `redis` crate. On connecting, the cache turns on `CLIENT TRACKING` for its
//! connection. From then on the server remembers which keys this connection read (or, in
//! broadcast mode, which prefixes it cares about) and pushes an `invalidate` message on
//! the same connection when one of them changes: a write from any client, an expiry, an
//! eviction, or a null "everything" on FLUSHALL/FLUSHDB.
//!
//! ```text
//!   get(k) ──► L1 hit? ──yes──► value
//!                 │no
//!                 ▼
//!        GET k on the tracked connection ──► server remembers "this client has k"
//!                 │
//!                 ▼
//!   insert into L1, unless an invalidation for k arrived while the GET was in flight
//!
//!   another client: SET k ──► server pushes `invalidate [k]` ──► L1 drops k
//! ```
//!
//! **Coherence promise.** Once a write to L2 has completed, the L1 entry it makes stale
//! is gone within one round trip on the cache's connection: the server queues the push
//! before the reply to any later command of ours, and the connection's reader hands the
//! push to [`TieredCache`] synchronously, before it delivers that later reply. So after
//! any `get` that went to L2, or a [`TieredCache::ping`], every earlier write is seen.
//!
//! Two races need care:
//! - **An invalidation that overtakes a fetch.** The reply to our `GET k` and a push for
//!   `k` (somebody wrote it just after our read) can arrive back to back; the push may be
//!   applied before the task that sent the `GET` inserts its (now stale) value. So every
//!   fetch is registered while in flight, the push marks it, and a marked fetch does not
//!   insert. Both sides take the same lock, so a push cannot fall between the check and
//!   the insert.
//! - **A dropped connection.** The server forgets our tracking state when the connection
//!   goes, so nothing would tell us about later writes. When the connection's reader sees
//!   it close, the whole of L1 is flushed, in-flight fetches are marked, and the next call
//!   connects again (and turns tracking on again) before it serves anything.
//!
//! Absent keys are cached too (as `None`): the server tracks a read of a missing key
//! like any other read, so its later creation invalidates the negative entry.
//!
//! Left out: the RESP2 form (tracking with `REDIRECT` to a second connection subscribed to
//! `__redis__:invalidate`), which needs two connections and a way to order their
//! messages; OPTIN/OPTOUT (every read here is meant to be cached); and write-through into
//! L1 (a write drops the local entry and the next read fetches it, which is simpler to
//! prove coherent).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, ProtocolVersion, PushInfo, PushKind, ToRedisArgs, Value};

use crate::Cache;

/// Why a tiered operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TieredError {
    /// The URL could not be parsed.
    #[error("bad L2 address {url:?}: {source} (expected redis://HOST:PORT[/DB])")]
    Address { url: String, source: redis::RedisError },
    /// Connecting, or turning tracking on, failed.
    #[error("can't connect to L2 at {url}: {source}")]
    Connect { url: String, source: redis::RedisError },
    /// The server refused `CLIENT TRACKING` (a Redis older than 6, or a server without
    /// client-side caching): without it L1 could serve stale data forever, so we stop.
    #[error("L2 at {url} refused CLIENT TRACKING ({source}); a near cache needs Redis 6+ or minikv")]
    Tracking { url: String, source: redis::RedisError },
    /// A command to L2 failed.
    #[error("L2 command failed: {0}")]
    Command(#[from] redis::RedisError),
}

/// How the server decides what to tell us about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingMode {
    /// The server remembers each key this connection read and invalidates it once, on its
    /// next change. Costs server memory per key read; sends only what we hold.
    Default,
    /// `BCAST`: the server sends every change of a key under one of these prefixes (of any
    /// key when empty), remembering nothing per key. Cheap for the server; we receive
    /// invalidations for keys we never cached.
    Broadcast { prefixes: Vec<String> },
}

/// Settings of a [`TieredCache`]; see [`TieredCache::builder`]. `V` is the value type
/// of the cache it builds.
pub struct TieredBuilder<V> {
    url: String,
    l1_capacity: u64,
    l1_time_to_live: Option<Duration>,
    mode: TrackingMode,
    noloop: bool,
    value: PhantomData<fn() -> V>,
}

impl<V> TieredBuilder<V>
where
    V: FromRedisValue + ToRedisArgs + Clone + Send + Sync + 'static,
{
    /// Entries L1 holds at most (default 10,000).
    pub fn l1_capacity(mut self, entries: u64) -> Self {
        self.l1_capacity = entries;
        self
    }

    /// A TTL on L1 entries, as a safety net on top of invalidation (default: none; an
    /// entry lives until it is invalidated or evicted).
    pub fn l1_time_to_live(mut self, ttl: Duration) -> Self {
        self.l1_time_to_live = Some(ttl);
        self
    }

    /// The tracking mode (default [`TrackingMode::Default`]).
    pub fn mode(mut self, mode: TrackingMode) -> Self {
        self.mode = mode;
        self
    }

    /// `NOLOOP`: the server does not tell us about our own writes. Safe here because a
    /// write through this cache drops the local entry itself.
    pub fn noloop(mut self, noloop: bool) -> Self {
        self.noloop = noloop;
        self
    }

    /// Connects (with RESP3) and turns tracking on. Must run inside a tokio runtime.
    pub async fn connect(self) -> Result<TieredCache<V>, TieredError> {
        let mut info: redis::ConnectionInfo =
            self.url.parse().map_err(|source| TieredError::Address { url: self.url.clone(), source })?;
        // Pushes exist only in RESP3; on RESP2 tracking needs REDIRECT (left out, above).
        info.redis.protocol = ProtocolVersion::RESP3;
        let client =
            redis::Client::open(info).map_err(|source| TieredError::Address { url: self.url.clone(), source })?;
        let mut l1 = Cache::builder().max_capacity(self.l1_capacity);
        if let Some(ttl) = self.l1_time_to_live {
            l1 = l1.time_to_live(ttl);
        }
        let inner = Arc::new(Inner {
            l1: l1.build(),
            client,
            settings: Settings { url: self.url, mode: self.mode, noloop: self.noloop },
            state: Mutex::new(LinkState { generation: 0, conn: None, inflight: HashMap::new() }),
            reconnect: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
        });
        inner.connection().await?;
        Ok(TieredCache { inner })
    }
}

/// An L1 [`Cache`] over an L2 RESP server, coherent through server-assisted invalidation.
/// Keys are strings (Redis keys); values are anything the `redis` crate converts.
/// Cheap to clone.
pub struct TieredCache<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for TieredCache<V> {
    fn clone(&self) -> Self {
        TieredCache { inner: self.inner.clone() }
    }
}

/// Counters of a [`TieredCache`], for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TieredStats {
    /// Reads answered from L1.
    pub l1_hits: u64,
    /// Reads that went to L2.
    pub l2_reads: u64,
    /// Keys named in invalidation pushes.
    pub invalidated_keys: u64,
    /// Whole-L1 flushes: a null invalidation (FLUSHALL/FLUSHDB) or a lost connection.
    pub flushes: u64,
    /// Fetches whose value was not cached because an invalidation overtook them.
    pub discarded_fetches: u64,
    /// Connections made (the first one included).
    pub connects: u64,
}

#[derive(Default)]
struct Counters {
    l1_hits: AtomicU64,
    l2_reads: AtomicU64,
    invalidated_keys: AtomicU64,
    flushes: AtomicU64,
    discarded_fetches: AtomicU64,
    connects: AtomicU64,
}

struct Inner<V> {
    /// `None` caches "L2 has no such key"; see the module docs.
    l1: Cache<String, Option<V>>,
    client: redis::Client,
    settings: Settings,
    /// The connection and the fetches in flight on it, under one lock so that a push and
    /// a fetch's insert are ordered (see the module docs). Held only for map operations,
    /// never across an await.
    state: Mutex<LinkState>,
    /// One reconnect at a time; the others wait for it and reuse its connection.
    reconnect: tokio::sync::Mutex<()>,
    counters: Counters,
}

/// What the connection needs from the builder.
struct Settings {
    url: String,
    mode: TrackingMode,
    noloop: bool,
}

struct LinkState {
    /// Which connection `conn` is: pushes from an older one must not clear a newer one.
    generation: u64,
    /// The tracked connection, `None` once it was lost.
    conn: Option<MultiplexedConnection>,
    /// Keys being fetched from L2 right now.
    inflight: HashMap<String, Fetch>,
}

/// Who asked to drop a key from L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An invalidation push.
    Server,
    /// A write through this cache.
    OwnWrite,
}

/// A key's fetches in flight.
struct Fetch {
    /// How many callers are fetching it.
    fetchers: u32,
    /// An invalidation (or a flush) arrived since the first of them started: none of
    /// them may cache what it read.
    invalidated: bool,
}

impl<V> TieredCache<V>
where
    V: FromRedisValue + ToRedisArgs + Clone + Send + Sync + 'static,
{
    /// A builder for a near cache over the RESP server at `url` (`redis://127.0.0.1:6379`).
    pub fn builder(url: impl Into<String>) -> TieredBuilder<V> {
        TieredBuilder {
            url: url.into(),
            l1_capacity: 10_000,
            l1_time_to_live: None,
            mode: TrackingMode::Default,
            noloop: false,
            value: PhantomData,
        }
    }

    /// The value of `key`: from L1 when it holds it, else from L2 (then cached in L1).
    /// `None` when L2 has no such key.
    pub async fn get(&self, key: &str) -> Result<Option<V>, TieredError> {
        if let Some(value) = self.inner.l1.get(key) {
            self.inner.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(value);
        }
        let (generation, mut conn) = self.inner.connection().await?;
        self.inner.begin_fetch(key);
        self.inner.counters.l2_reads.fetch_add(1, Ordering::Relaxed);
        let read: Result<Option<V>, redis::RedisError> = redis::cmd("GET").arg(key).query_async(&mut conn).await;
        let cacheable = read.as_ref().ok().cloned();
        self.inner.end_fetch(key, generation, cacheable);
        Ok(read?)
    }

    /// Sets `key` in L2 and drops it from L1 (the next read fetches it).
    pub async fn set(&self, key: &str, value: V) -> Result<(), TieredError> {
        self.write(redis::cmd("SET").arg(key).arg(value), key).await
    }

    /// Sets `key` in L2 with a TTL (`SET key value PX ms`) and drops it from L1.
    pub async fn set_with_ttl(&self, key: &str, value: V, ttl: Duration) -> Result<(), TieredError> {
        let millis = ttl.as_millis().max(1) as u64;
        self.write(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(millis), key).await
    }

    /// Deletes `key` in L2 and drops it from L1.
    pub async fn delete(&self, key: &str) -> Result<(), TieredError> {
        self.write(redis::cmd("DEL").arg(key), key).await
    }

    /// One round trip to L2. When it returns, every invalidation for writes completed
    /// before it was sent has been applied to L1 (see the coherence promise).
    pub async fn ping(&self) -> Result<(), TieredError> {
        let (_, mut conn) = self.inner.connection().await?;
        let _: Value = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Whether L1 holds `key` right now (an entry for an absent key counts). For tests
    /// and demos: it records no access.
    pub fn in_l1(&self, key: &str) -> bool {
        self.inner.l1.contains_key(key)
    }

    /// The L1 cache itself, for its stats and sizes.
    pub fn l1(&self) -> &Cache<String, Option<V>> {
        &self.inner.l1
    }

    pub fn stats(&self) -> TieredStats {
        let c = &self.inner.counters;
        TieredStats {
            l1_hits: c.l1_hits.load(Ordering::Relaxed),
            l2_reads: c.l2_reads.load(Ordering::Relaxed),
            invalidated_keys: c.invalidated_keys.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            discarded_fetches: c.discarded_fetches.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
        }
    }

    async fn write(&self, cmd: &mut redis::Cmd, key: &str) -> Result<(), TieredError> {
        let (_, mut conn) = self.inner.connection().await?;
        let result: Result<Value, redis::RedisError> = cmd.query_async(&mut conn).await;
        // Drop the local copy whatever the outcome: a failed reply may still have been a
        // completed write.
        self.inner.invalidate_key(key, Source::OwnWrite);
        result?;
        Ok(())
    }
}

impl<V> Inner<V>
where
    V: FromRedisValue + ToRedisArgs + Clone + Send + Sync + 'static,
{
    /// The live tracked connection, connecting (and turning tracking on) if there is none.
    async fn connection(self: &Arc<Self>) -> Result<(u64, MultiplexedConnection), TieredError> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let _one_at_a_time = self.reconnect.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let url = &self.settings.url;
        let generation = self.state.lock().generation + 1;
        let weak: Weak<Self> = Arc::downgrade(self);
        let config = AsyncConnectionConfig::new().set_push_sender(move |push: PushInfo| {
            if let Some(inner) = weak.upgrade() {
                inner.on_push(generation, push);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| TieredError::Connect { url: url.clone(), source })?;
        let mut tracking = redis::cmd("CLIENT");
        tracking.arg("TRACKING").arg("ON");
        if let TrackingMode::Broadcast { prefixes } = &self.settings.mode {
            tracking.arg("BCAST");
            for prefix in prefixes {
                tracking.arg("PREFIX").arg(prefix);
            }
        }
        if self.settings.noloop {
            tracking.arg("NOLOOP");
        }
        let _: Value = tracking
            .query_async(&mut conn)
            .await
            .map_err(|source| TieredError::Tracking { url: url.clone(), source })?;
        let mut state = self.state.lock();
        assert!(state.generation < generation, "connections are made one at a time");
        state.generation = generation;
        state.conn = Some(conn.clone());
        // Nothing cached under an earlier connection is covered by this one's tracking.
        self.flush_locked(&mut state);
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        Ok((generation, conn))
    }

    fn live(&self) -> Option<(u64, MultiplexedConnection)> {
        let state = self.state.lock();
        state.conn.clone().map(|conn| (state.generation, conn))
    }

    fn begin_fetch(&self, key: &str) {
        let mut state = self.state.lock();
        state
            .inflight
            .entry(key.to_owned())
            .and_modify(|fetch| fetch.fetchers += 1)
            .or_insert(Fetch { fetchers: 1, invalidated: false });
    }

    /// Ends a fetch that started on connection `generation`, caching `value` (when the
    /// read succeeded) unless an invalidation or a reconnect came in between.
    fn end_fetch(&self, key: &str, generation: u64, value: Option<Option<V>>) {
        let mut state = self.state.lock();
        let fetch = state.inflight.get_mut(key).expect("a fetch ends only after it began");
        assert!(fetch.fetchers > 0);
        fetch.fetchers -= 1;
        let invalidated = fetch.invalidated;
        if fetch.fetchers == 0 {
            state.inflight.remove(key);
        }
        let same_connection = state.generation == generation && state.conn.is_some();
        match value {
            Some(value) if !invalidated && same_connection => self.l1.insert(key.to_owned(), value),
            Some(_) => {
                self.counters.discarded_fetches.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
    }

    /// Called by the connection's reader, in the order messages arrive.
    fn on_push(&self, generation: u64, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        match key {
                            Value::BulkString(bytes) => {
                                self.invalidate_key(&String::from_utf8_lossy(bytes), Source::Server)
                            }
                            Value::SimpleString(text) => self.invalidate_key(text, Source::Server),
                            // Not a key we could have cached: drop everything to stay safe.
                            _ => self.flush(),
                        }
                    }
                }
                // A null list: FLUSHALL/FLUSHDB, or the server dropped its tracking table.
                _ => self.flush(),
            },
            PushKind::Disconnection => {
                let mut state = self.state.lock();
                if state.generation == generation {
                    state.conn = None;
                }
                self.flush_locked(&mut state);
            }
            _ => {}
        }
    }

    fn invalidate_key(&self, key: &str, source: Source) {
        let mut state = self.state.lock();
        if let Some(fetch) = state.inflight.get_mut(key) {
            fetch.invalidated = true;
        }
        self.l1.invalidate(key);
        if source == Source::Server {
            self.counters.invalidated_keys.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {
        let mut state = self.state.lock();
        self.flush_locked(&mut state);
    }

    fn flush_locked(&self, state: &mut LinkState) {
        for fetch in state.inflight.values_mut() {
            fetch.invalidated = true;
        }
        self.l1.invalidate_all();
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
    }
}
