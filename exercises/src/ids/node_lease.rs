//! Node ids leased from the KV store, with a timestamp ceiling that fences a holder
//! that was paused rather than dead.
//!
//! Two generators with the same node id issue the same IDs, so a node id is a lease:
//!
//! ```text
//!  acquire   SET idgen:node:<n> <owner> NX PX <ttl>          one winner per node id
//!            GET idgen:ceiling:<n>                           the previous holder's ceiling c0
//!  renew     WATCH idgen:node:<n>; GET ... == <owner>?       every ttl/3, on its own connection
//!            MULTI; SET idgen:node:<n> <owner> PX <ttl>
//!                   SET idgen:ceiling:<n> <c1>; EXEC         c1 = max(c0, clock + ttl)
//!  release   WATCH; GET == owner; MULTI; DEL node; SET ceiling <last issued>; EXEC
//! ```
//!
//! (The demo puts a per-run part in the prefix, `idgen:<run>:node:<n>`, so runs against
//! a shared server do not meet.)
//!
//! **A generator that cannot renew stops issuing.** Each renewal, once acknowledged,
//! pushes the lease's local deadline to `(the moment the renewal was sent) + ttl`, less
//! a margin for the two machines' clocks running at slightly different rates. That
//! deadline is measured on the monotonic clock, which a wall-clock step cannot move, and
//! it is conservative: the server's expiry counts from when it *received* the renewal.
//! The generator checks it before every ID ([`LeaseState::check`]).
//!
//! **The deadline alone is not enough**: a process can check it, be paused (a GC pause,
//! SIGSTOP, a VM migration) past its expiry, and then issue the ID it was about to. By
//! then another generator may hold the node id. The fence is the ceiling: the holder
//! publishes, in the same transaction as each renewal, a wall-clock millisecond `c1` it
//! promises never to issue above, and a new holder starts strictly above the ceiling it
//! reads after acquiring. The paused process's ID has a timestamp at or below its
//! ceiling, the new holder's are above it, so they cannot collide, however long the
//! pause. (TiDB's timestamp oracle persists the same kind of upper bound to etcd before
//! it hands out timestamps, for the same reason.) If the new holder's clock is behind
//! that ceiling it waits or refuses exactly as for a clock step (see
//! [`super::snowflake`]). The ceiling keys have no TTL: they must outlive the lease.
//!
//! Left out: fencing tokens checked by a *downstream* store (nothing downstream here
//! sees the IDs); re-acquiring a lost node id automatically (the caller acquires a new
//! one); and auth or TLS to the KV store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::clock::WallClock;
use super::snowflake::{IdError, MAX_NODE};
use crate::framework::DemoError;

/// How often a renewal is sent, as a fraction of the TTL: three tries before it lapses.
const RENEWALS_PER_TTL: u32 = 3;
/// How many times a renewal retries after losing a WATCH race before it gives up.
const MAX_WATCH_RETRIES: usize = 3;

/// Where the leases live and how long they last.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Prepended to every key: `idgen:` in production, `idgen:<run>:` in the demo.
    pub prefix: String,
    /// How long a lease lasts without a renewal.
    pub ttl: Duration,
    /// Node ids `0..node_space` may be leased (at most 1,024, what the layout holds);
    /// fewer keeps a small deployment's ids (and the acquire scan) short.
    pub node_space: u16,
    /// How long one KV round of a lease operation may take before it counts as failed.
    pub request_timeout: Duration,
}

impl LeaseConfig {
    /// Three-second leases over the full node-id space.
    pub fn new(prefix: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            prefix: prefix.into(),
            ttl: Duration::from_secs(3),
            node_space: MAX_NODE + 1,
            request_timeout: Duration::from_secs(1),
        }
    }

    pub fn node_key(&self, node: u16) -> String {
        format!("{}node:{node}", self.prefix)
    }

    pub fn ceiling_key(&self, node: u16) -> String {
        format!("{}ceiling:{node}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// How long before the server's expiry the holder stops trusting its lease: 5 %,
    /// for the difference in rate between the two machines' clocks (real drift is
    /// parts per million; this is generous on purpose).
    fn safety_margin(&self) -> Duration {
        self.ttl / 20
    }
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("KV store: {0}")]
    Kv(#[from] redis::RedisError),
    #[error(
        "node id {node} is now held by {}, not by us: stop issuing and acquire a new node id",
        .owner.as_deref().map_or("nobody (the lease expired)".to_string(), |o| format!("{o:?}"))
    )]
    Lost { node: u16, owner: Option<String> },
    #[error("all {tried} node ids are leased: raise `node_space` or wait for a lease to expire")]
    NoFreeNode { tried: u16 },
    #[error("the KV store did not answer within {0:?}: is it reachable?")]
    Timeout(Duration),
    #[error("{key} holds {value:?}, not a millisecond timestamp; something else wrote it: delete the key")]
    BadCeiling { key: String, value: String },
    #[error("node id {node}: the WATCH on its lease was broken {MAX_WATCH_RETRIES} times in a row; retry later")]
    Contended { node: u16 },
    #[error("node space {0} is outside 1..={max}, the node ids the layout holds", max = MAX_NODE as u32 + 1)]
    NodeSpace(u16),
    #[error("node id {0} is over {MAX_NODE}, the largest the layout holds")]
    NodeOutOfRange(u16),
}

impl From<LeaseError> for DemoError {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::Kv(e) => DemoError::Kv(e),
            other => DemoError::Scenario(format!("node-id lease: {other}")),
        }
    }
}

/// Milliseconds on the monotonic clock since the first call in this process. Lease
/// deadlines use it because the wall clock is exactly what may jump.
fn monotonic_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    u64::try_from(ORIGIN.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a lease's generator reads before every ID: shared, lock-free, between the
/// renewer (which writes it) and the generator thread (which reads it).
#[derive(Debug)]
pub struct LeaseState {
    node: u16,
    /// The monotonic ms ([`monotonic_ms`]) after which the lease is no longer trusted.
    valid_until_ms: AtomicU64,
    /// The wall-clock ms up to which this holder may issue, as last acknowledged by the
    /// KV store. Only rises.
    ceiling_unix_ms: AtomicU64,
    /// Set when a renewal found another owner, or on release: permanent.
    lost: AtomicBool,
}

impl LeaseState {
    pub fn node(&self) -> u16 {
        self.node
    }

    /// The ceiling the generator may issue up to, or why it must stop.
    pub fn check(&self) -> Result<u64, IdError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(IdError::LeaseLost { node: self.node });
        }
        if monotonic_ms() >= self.valid_until_ms.load(Ordering::Acquire) {
            return Err(IdError::LeaseExpired { node: self.node });
        }
        Ok(self.ceiling_unix_ms.load(Ordering::Acquire))
    }

    pub fn ceiling_unix_ms(&self) -> u64 {
        self.ceiling_unix_ms.load(Ordering::Acquire)
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// How long the lease is still trusted for (zero once expired or lost).
    pub fn remaining(&self) -> Duration {
        if self.is_lost() {
            return Duration::ZERO;
        }
        Duration::from_millis(self.valid_until_ms.load(Ordering::Acquire).saturating_sub(monotonic_ms()))
    }
}

/// A held node id. Owns its own KV connection, because a renewal WATCHes a key and a
/// shared (multiplexed) connection would mix its WATCH with other clients' commands.
pub struct NodeLease {
    client: redis::Client,
    /// `None` after a timeout left the connection in an unknown state; the next
    /// operation reconnects.
    conn: Option<MultiplexedConnection>,
    config: LeaseConfig,
    owner: String,
    node: u16,
    /// The previous holder's ceiling: this holder issues only above it.
    floor_unix_ms: u64,
    /// The highest ceiling the KV store has acknowledged for this holder.
    published_ceiling_unix_ms: u64,
    clock: Arc<dyn WallClock>,
    state: Arc<LeaseState>,
}

impl std::fmt::Debug for NodeLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLease").field("node", &self.node).field("owner", &self.owner).finish()
    }
}

impl NodeLease {
    /// Tries to lease `node`; `Ok(None)` when someone else holds it. `clock` is the
    /// wall clock the generator will use: the ceiling is published in its terms.
    pub async fn try_acquire(
        client: &redis::Client,
        config: &LeaseConfig,
        node: u16,
        owner: &str,
        clock: Arc<dyn WallClock>,
    ) -> Result<Option<NodeLease>, LeaseError> {
        let conn = timed(config, client.get_multiplexed_async_connection()).await?;
        Self::try_acquire_on(client, conn, config, node, owner, clock).await.map(|r| r.ok())
    }

    /// Leases the first free node id, scanning from `start` (wrapping around). Several
    /// processes starting together scan the same ids and each ends with a different one.
    pub async fn acquire_any(
        client: &redis::Client,
        config: &LeaseConfig,
        start: u16,
        owner: &str,
        clock: Arc<dyn WallClock>,
    ) -> Result<NodeLease, LeaseError> {
        if config.node_space == 0 || config.node_space > MAX_NODE + 1 {
            return Err(LeaseError::NodeSpace(config.node_space));
        }
        let mut conn = timed(config, client.get_multiplexed_async_connection()).await?;
        for i in 0..config.node_space {
            let node = ((u32::from(start) + u32::from(i)) % u32::from(config.node_space)) as u16;
            match Self::try_acquire_on(client, conn, config, node, owner, clock.clone()).await? {
                Ok(lease) => return Ok(lease),
                Err(returned) => conn = returned,
            }
        }
        Err(LeaseError::NoFreeNode { tried: config.node_space })
    }

    /// One `SET NX PX`; on success reads the previous ceiling and publishes this
    /// holder's first one. Hands the connection back when the node id is taken.
    async fn try_acquire_on(
        client: &redis::Client,
        mut conn: MultiplexedConnection,
        config: &LeaseConfig,
        node: u16,
        owner: &str,
        clock: Arc<dyn WallClock>,
    ) -> Result<Result<NodeLease, MultiplexedConnection>, LeaseError> {
        if node > MAX_NODE {
            return Err(LeaseError::NodeOutOfRange(node));
        }
        let sent_at = monotonic_ms();
        let won: Option<String> = timed(
            config,
            redis::cmd("SET")
                .arg(config.node_key(node))
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(config.ttl_ms())
                .query_async(&mut conn),
        )
        .await?;
        if won.is_none() {
            return Ok(Err(conn));
        }
        let ceiling_key = config.ceiling_key(node);
        let previous: Option<String> =
            timed(config, redis::cmd("GET").arg(&ceiling_key).query_async(&mut conn)).await?;
        let floor_unix_ms = match previous {
            None => 0,
            Some(text) => text.parse().map_err(|_| LeaseError::BadCeiling { key: ceiling_key, value: text })?,
        };
        let margin = u64::try_from(config.safety_margin().as_millis()).unwrap_or(0);
        let state = Arc::new(LeaseState {
            node,
            valid_until_ms: AtomicU64::new(sent_at + config.ttl_ms().saturating_sub(margin)),
            // Nothing is issuable until this holder's own ceiling is acknowledged.
            ceiling_unix_ms: AtomicU64::new(floor_unix_ms),
            lost: AtomicBool::new(false),
        });
        let mut lease = NodeLease {
            client: client.clone(),
            conn: Some(conn),
            config: config.clone(),
            owner: owner.to_string(),
            node,
            floor_unix_ms,
            published_ceiling_unix_ms: floor_unix_ms,
            clock,
            state,
        };
        lease.renew().await?;
        Ok(Ok(lease))
    }

    pub fn node(&self) -> u16 {
        self.node
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The previous holder's ceiling (0 if there was none): this holder's IDs are all
    /// above it.
    pub fn floor_unix_ms(&self) -> u64 {
        self.floor_unix_ms
    }

    /// What the generator reads before each ID.
    pub fn state(&self) -> Arc<LeaseState> {
        self.state.clone()
    }

    pub fn clock(&self) -> Arc<dyn WallClock> {
        self.clock.clone()
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Extends the lease by a TTL and raises the ceiling, in one transaction that
    /// happens only if the lease is still ours. [`LeaseError::Lost`] is permanent (the
    /// state is marked lost, so the generator stops); other errors leave the lease to
    /// run out on its own unless a later renewal succeeds.
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        if self.state.is_lost() {
            return Err(LeaseError::Lost { node: self.node, owner: None });
        }
        let sent_at = monotonic_ms();
        let ceiling = self
            .published_ceiling_unix_ms
            .max(self.floor_unix_ms)
            .max(self.clock.now_unix_ms().saturating_add(self.config.ttl_ms()));
        let px = self.config.ttl_ms();
        let owner = self.owner.clone();
        let ceiling_value = ceiling.to_string();
        let committed = self
            .guarded(|key, ceiling_key| {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("SET")
                    .arg(key)
                    .arg(&owner)
                    .arg("PX")
                    .arg(px)
                    .ignore()
                    .cmd("SET")
                    .arg(ceiling_key)
                    .arg(&ceiling_value)
                    .ignore();
                pipe
            })
            .await;
        match committed {
            Ok(()) => {
                let margin = u64::try_from(self.config.safety_margin().as_millis()).unwrap_or(0);
                self.published_ceiling_unix_ms = ceiling;
                // The ceiling first, then the deadline: a generator that sees the new
                // deadline also sees the ceiling it was renewed with.
                self.state.ceiling_unix_ms.fetch_max(ceiling, Ordering::AcqRel);
                self.state.valid_until_ms.fetch_max(sent_at + px.saturating_sub(margin), Ordering::AcqRel);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the node id back and publishes `last_issued_unix_ms` (the generator's last
    /// millisecond, read after it stopped) as the next holder's floor, so the next
    /// holder need not wait out this one's whole ceiling. Stop the generator first.
    pub async fn release(mut self, last_issued_unix_ms: u64) -> Result<(), LeaseError> {
        // Stop issuing before the key goes: from here on the generator refuses.
        let already_lost = self.state.lost.swap(true, Ordering::AcqRel);
        if already_lost {
            return Err(LeaseError::Lost { node: self.node, owner: None });
        }
        let floor_for_next = last_issued_unix_ms.max(self.floor_unix_ms).to_string();
        self.guarded(|key, ceiling_key| {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("DEL").arg(key).ignore().cmd("SET").arg(ceiling_key).arg(&floor_for_next).ignore();
            pipe
        })
        .await
    }

    /// Runs the transaction `build` makes (an atomic pipeline over the lease key and the
    /// ceiling key) only while the lease key still names us: WATCH the key, check the
    /// owner, then MULTI/EXEC (a null reply means the key changed in between: look
    /// again). A foreign owner marks the lease lost.
    async fn guarded(&mut self, mut build: impl FnMut(&str, &str) -> redis::Pipeline) -> Result<(), LeaseError> {
        let key = self.config.node_key(self.node);
        let ceiling_key = self.config.ceiling_key(self.node);
        let config = self.config.clone();
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => timed(&config, self.client.get_multiplexed_async_connection()).await?,
        };
        for _ in 0..MAX_WATCH_RETRIES {
            let round = async {
                redis::cmd("WATCH").arg(&key).query_async::<()>(&mut conn).await?;
                let holder: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                if holder.as_deref() != Some(self.owner.as_str()) {
                    redis::cmd("UNWATCH").query_async::<()>(&mut conn).await?;
                    return Ok(Err(holder));
                }
                let transaction = build(&key, &ceiling_key);
                assert!(transaction.is_transaction(), "a lease update must be one MULTI/EXEC");
                Ok::<_, redis::RedisError>(Ok(transaction.query_async::<Option<()>>(&mut conn).await?))
            };
            // A timeout (or error) leaves the connection mid-transaction: drop it, and
            // the next operation reconnects.
            match timed(&config, round).await? {
                Err(owner) => {
                    self.conn = Some(conn);
                    self.state.lost.store(true, Ordering::Release);
                    return Err(LeaseError::Lost { node: self.node, owner });
                }
                Ok(Some(())) => {
                    self.conn = Some(conn);
                    return Ok(());
                }
                Ok(None) => continue,
            }
        }
        self.conn = Some(conn);
        Err(LeaseError::Contended { node: self.node })
    }

    /// Renews in a background task every `ttl / 3` until stopped or lost.
    pub fn spawn_renewer(self) -> Renewer {
        let state = self.state.clone();
        let paused = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(RenewalCounts::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let interval = self.config.ttl / RENEWALS_PER_TTL;
        let task = {
            let paused = paused.clone();
            let counts = counts.clone();
            let mut lease = self;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        // A dropped `Renewer` also ends the loop (the sender goes away).
                        _ = &mut stopped => break,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    if paused.load(Ordering::Acquire) {
                        continue;
                    }
                    match lease.renew().await {
                        Ok(()) => counts.succeeded.fetch_add(1, Ordering::Relaxed),
                        Err(LeaseError::Lost { .. }) => {
                            counts.lost.store(true, Ordering::Release);
                            break;
                        }
                        Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
                lease
            })
        };
        Renewer { state, paused, counts, stop: Some(stop), task }
    }
}

/// How a renewer's renewals went.
#[derive(Debug, Default)]
pub struct RenewalCounts {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// A renewal found another owner; the renewer stopped.
    pub lost: AtomicBool,
}

/// A lease being renewed in the background. [`Renewer::pause`] stops the renewals
/// without stopping anything else, which is how the tests and the demo play "this
/// process was paused": its lease runs out while it is not looking.
pub struct Renewer {
    state: Arc<LeaseState>,
    paused: Arc<AtomicBool>,
    counts: Arc<RenewalCounts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<NodeLease>,
}

impl Renewer {
    pub fn state(&self) -> Arc<LeaseState> {
        self.state.clone()
    }

    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
    }

    pub fn counts(&self) -> &RenewalCounts {
        &self.counts
    }

    /// Stops renewing and hands the lease back (to release it, or renew it by hand).
    pub async fn stop(mut self) -> Result<NodeLease, DemoError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        Ok((&mut self.task).await?)
    }
}

/// `future` with the config's request timeout.
async fn timed<T>(
    config: &LeaseConfig,
    future: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout(config.request_timeout, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LeaseError::Timeout(config.request_timeout)),
    }
}
