//! A short lease in the KV store, so that of several *processes* missing the same key,
//! one loads it from the origin and the others wait for its result.
//!
//! Single-flight ([`minicache::SingleFlight`]) coordinates the callers of one process.
//! Several processes share nothing but the KV store, so the coordination has to live
//! there:
//!
//! - **Acquire**: `SET <lock key> <token> NX PX <ttl>`. `NX` makes the check and the
//!   write one step on the server, so of any number of racing processes exactly one gets
//!   `OK`. The token is unique to this acquisition; `PX` bounds how long a holder that
//!   crashed (or hangs) keeps everyone else waiting.
//! - **Release**: delete the key *only if it still holds our token*. A holder whose
//!   lease ran out while it was loading must not delete the lease a second process has
//!   taken since: that would let a third one in, and two loads would run. Redis users
//!   do this with a Lua script (`if get == token then del`); minikv has no scripting, so
//!   this uses optimistic locking, which both servers have: `WATCH lock`, `GET lock`,
//!   and only if it is ours `MULTI DEL EXEC` (which the server aborts if the key changed
//!   after the `WATCH`). [`KvLock::release_unconditionally_broken`] is the plain `DEL`,
//!   kept for the test that shows why the comparison matters.
//!
//! `WATCH` is per connection, so releases go through a connection of their own,
//! behind an async mutex (one release at a time; releases are rare: one per origin
//! load). Acquires are single commands and go through the caller's shared connection.
//!
//! What this lease is **not**: mutual exclusion that survives pauses. If a holder stalls
//! for longer than the TTL (a GC pause, a slow origin), its lease expires, a second
//! process acquires, and two loads run. For a cache that costs one extra origin query
//! and nothing else (both write the same row), which is why a lease without fencing
//! tokens is acceptable here and would not be for, say, a payment.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::envelope::millis_for_px;

/// One acquisition: the key and the token that proves it is ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub token: String,
}

/// Acquires and releases leases. One per process (per cache instance).
pub struct KvLock {
    /// The connection releases run on: `WATCH` state belongs to a connection, so no
    /// other request may share it while a release is between `WATCH` and `EXEC`.
    /// A tokio mutex, because it is held across those awaits.
    release_conn: tokio::sync::Mutex<MultiplexedConnection>,
    /// How long a lease lasts unless released.
    ttl: Duration,
    /// Makes tokens unique across processes: a random number per `KvLock`.
    owner: u64,
    /// Makes tokens unique within this process: one number per acquisition.
    next_token: std::sync::atomic::AtomicU64,
}

impl KvLock {
    /// A lock whose releases use `release_conn`, which must be a connection of its own
    /// (not a clone of one used elsewhere). `owner` should be random per process.
    pub fn new(release_conn: MultiplexedConnection, ttl: Duration, owner: u64) -> KvLock {
        assert!(!ttl.is_zero(), "a lease needs a TTL (validated by the caller)");
        KvLock {
            release_conn: tokio::sync::Mutex::new(release_conn),
            ttl,
            owner,
            next_token: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `SET key token NX PX ttl`: the lease, or `None` when another holder has it.
    pub async fn try_acquire(&self, conn: &mut MultiplexedConnection, key: &str) -> redis::RedisResult<Option<Lease>> {
        let sequence = self.next_token.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{:016x}-{sequence}", self.owner);
        let reply: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(millis_for_px(self.ttl))
            .query_async(conn)
            .await?;
        Ok(reply.map(|_| Lease { key: key.to_string(), token }))
    }

    /// Deletes the lease if it is still ours. `Ok(true)`: it was ours and is gone;
    /// `Ok(false)`: it had expired (and maybe been taken by someone else), and was left
    /// alone.
    pub async fn release(&self, lease: Lease) -> redis::RedisResult<bool> {
        let mut conn = self.release_conn.lock().await;
        let conn = &mut *conn;
        redis::cmd("WATCH").arg(&lease.key).query_async::<()>(conn).await?;
        let holder: Option<String> = redis::cmd("GET").arg(&lease.key).query_async(conn).await?;
        if holder.as_deref() != Some(lease.token.as_str()) {
            redis::cmd("UNWATCH").query_async::<()>(conn).await?;
            return Ok(false);
        }
        // Aborted (nil) if the key changed since WATCH: it expired and was re-taken in
        // between, and the new holder's lease stays.
        let deleted: Option<(i64,)> = redis::pipe().atomic().del(&lease.key).query_async(conn).await?;
        Ok(deleted.is_some_and(|(count,)| count == 1))
    }

    /// **Deliberately broken**: a plain `DEL`, which also deletes a lease that expired
    /// and was taken by another process. Only for the test that shows the compare step
    /// is needed; never use it.
    pub async fn release_unconditionally_broken(&self, lease: Lease) -> redis::RedisResult<bool> {
        let mut conn = self.release_conn.lock().await;
        let deleted: i64 = redis::cmd("DEL").arg(&lease.key).query_async(&mut *conn).await?;
        Ok(deleted == 1)
    }
}

impl std::fmt::Debug for KvLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvLock").field("ttl", &self.ttl).field("owner", &format_args!("{:016x}", self.owner)).finish()
    }
}
