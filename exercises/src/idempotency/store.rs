//! Idempotency keys on the KV store: claim a key atomically, and commit the handler's
//! effects together with its response.
//!
//! ```text
//!  claim:    SET ns:key:<k> <InFlight{fp, owner}> NX PX lock_ttl
//!              OK  ──> Claim::Owned (run the handler)
//!              nil ──> GET ns:key:<k>
//!                        Completed, same fp ──> Claim::Completed (replay it)
//!                        InFlight,  same fp ──> Claim::InFlight  (409)
//!                        other fp           ──> Claim::Mismatch  (422)
//!                        gone (expired)     ──> try the SET again
//!  commit:   (an exclusive connection)  WATCH ns:key:<k>; GET ns:key:<k>
//!              still InFlight with our owner token ──> MULTI
//!                                                       <the handler's effects>
//!                                                       SET ns:key:<k> <Completed> PX ttl
//!                                                      EXEC ──> Commit::Committed
//!              anything else, or EXEC aborted       ──> Commit::LostClaim
//! ```
//!
//! **The promise.** `SET … NX` is one command, so of any number of concurrent requests
//! with one key exactly one gets `OK`. The commit is one `MULTI`/`EXEC`, so the
//! handler's writes and the stored response land together or not at all, and only if
//! the claim is still ours when `EXEC` runs (`WATCH` aborts it otherwise). Together:
//! whatever crashes where, the effects of a key are committed at most once per TTL,
//! and a client that retries until it gets an answer sees them exactly once.
//!
//! A request that crashes between claim and commit leaves its `InFlight` record
//! behind; it expires after `lock_ttl` (the `PX`), and until then retries get 409.
//! `lock_ttl` must be longer than the slowest handler: one that outlives its claim
//! finds the record gone or someone else's at commit time, and its work is thrown away
//! (`Commit::LostClaim`) rather than committed twice.
//!
//! Effects outside the `MULTI` (a call to another service, a payment) get none of this:
//! they would run again after a crash. That is what the `payment` exercise is about.
//!
//! [`Variant`] holds two deliberately broken versions, for the tests that show the
//! checks catching them. Left out: `DEL` on a failed handler (so a client could retry
//! at once rather than after `lock_ttl`), and a store that is not one Redis (a cluster
//! would need the record and the effects in one hash slot).

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::keys::IdempotencyKey;
use super::pool::ConnectionPool;
use super::record::{unix_ms, Fingerprint, Record, RecordError, StoredResponse};

/// How often a claim retries when the record it lost to disappears before it can be
/// read (it expired in between). Twice is already rare; three is plenty.
const CLAIM_ATTEMPTS: usize = 3;

/// The two TTLs that define the pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long an in-flight claim lives: longer than the slowest handler, short enough
    /// that a crashed request does not block its key for long.
    pub lock_ttl: Duration,
    /// How long a finished response is replayed. Stripe keeps keys 24 hours; after
    /// this the key is new again and a request with it runs the handler again.
    pub response_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { lock_ttl: Duration::from_secs(10), response_ttl: Duration::from_secs(24 * 3600) }
    }
}

/// The pattern, and two deliberately broken versions of it that the tests catch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    /// `SET NX` to claim, a fenced `WATCH`/`MULTI` commit.
    #[default]
    Correct,
    /// Broken: claims with `GET`, then `SET` without `NX` if the key was absent. Two
    /// concurrent requests can both see it absent and both run the handler.
    CheckThenSet,
    /// Broken: commits without checking the claim is still its own (no `WATCH`, no owner
    /// check, the effects outside any `MULTI`). A request that outlived its lock commits
    /// on top of the one that took over, so the effects land twice.
    Unfenced,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// This request holds the key: run the handler, then [`IdempotencyStore::commit`].
    Owned(ClaimToken),
    /// Another request with the same key and body is running the handler.
    InFlight,
    /// The handler already ran for this request: replay its response.
    Completed(StoredResponse),
    /// The key was used with a different request.
    Mismatch,
}

/// Proof of a claim: the full KV key and the owner token only this request knows.
#[derive(Debug)]
pub struct ClaimToken {
    kv_key: String,
    owner: String,
    fingerprint: Fingerprint,
}

impl ClaimToken {
    pub fn kv_key(&self) -> &str {
        &self.kv_key
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The effects and the response are stored, once.
    Committed,
    /// The claim expired and the key was taken over (or finished) by another request:
    /// nothing was written.
    LostClaim,
}

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("KV store: {0}")]
    Kv(#[from] redis::RedisError),
    #[error("the idempotency record under {key} is unreadable ({why}); delete that key to unblock it")]
    Corrupt { key: String, why: RecordError },
}

/// Idempotency records under one namespace of one KV store.
pub struct IdempotencyStore {
    /// For single commands (the claim's `SET NX` and `GET`), shared by every request:
    /// they need no per-connection state.
    shared: MultiplexedConnection,
    /// For the commit's `WATCH`/`MULTI`/`EXEC`, which does.
    pool: ConnectionPool,
    namespace: String,
    config: StoreConfig,
    variant: Variant,
    /// Owner tokens; a parking_lot mutex held only to draw a number.
    rng: parking_lot::Mutex<fastrand::Rng>,
}

impl IdempotencyStore {
    /// Connects to the KV store at `url`; every key this store writes starts with
    /// `namespace:`.
    pub async fn connect(
        url: &str,
        namespace: &str,
        config: StoreConfig,
        variant: Variant,
    ) -> Result<IdempotencyStore, StoreError> {
        assert!(config.lock_ttl.as_millis() > 0, "a lock TTL of zero would never hold a claim");
        assert!(config.response_ttl.as_millis() > 0, "a response TTL of zero would never replay");
        let shared = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        Ok(IdempotencyStore {
            shared,
            pool: ConnectionPool::new(url)?,
            namespace: namespace.to_string(),
            config,
            variant,
            rng: parking_lot::Mutex::new(fastrand::Rng::new()),
        })
    }

    pub fn config(&self) -> StoreConfig {
        self.config
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The KV key a client key is stored under.
    pub fn kv_key(&self, key: &IdempotencyKey) -> String {
        format!("{}:key:{}", self.namespace, key)
    }

    /// Claims `key` for a request with `fingerprint`, or says who has it.
    pub async fn claim(&self, key: &IdempotencyKey, fingerprint: Fingerprint) -> Result<Claim, StoreError> {
        let kv_key = self.kv_key(key);
        let owner = format!("{:032x}", self.rng.lock().u128(..));
        let record = Record::InFlight { fingerprint, owner: owner.clone(), started_ms: unix_ms() };
        let value = record.encode().map_err(|why| StoreError::Corrupt { key: kv_key.clone(), why })?;
        let lock_ms = self.config.lock_ttl.as_millis() as u64;
        let mut conn = self.shared.clone();
        for _ in 0..CLAIM_ATTEMPTS {
            let claimed = match self.variant {
                Variant::CheckThenSet => {
                    // Broken on purpose: the gap between GET and SET is a race.
                    let existing: Option<String> = redis::cmd("GET").arg(&kv_key).query_async(&mut conn).await?;
                    if existing.is_none() {
                        let _: () = redis::cmd("SET")
                            .arg(&kv_key)
                            .arg(&value)
                            .arg("PX")
                            .arg(lock_ms)
                            .query_async(&mut conn)
                            .await?;
                    }
                    existing.is_none()
                }
                Variant::Correct | Variant::Unfenced => {
                    let reply: Option<String> = redis::cmd("SET")
                        .arg(&kv_key)
                        .arg(&value)
                        .arg("NX")
                        .arg("PX")
                        .arg(lock_ms)
                        .query_async(&mut conn)
                        .await?;
                    reply.is_some()
                }
            };
            if claimed {
                return Ok(Claim::Owned(ClaimToken { kv_key, owner, fingerprint }));
            }
            let existing: Option<String> = redis::cmd("GET").arg(&kv_key).query_async(&mut conn).await?;
            let Some(text) = existing else {
                continue; // It expired between our SET and GET: try to claim it again.
            };
            let record = Record::decode(&text).map_err(|why| StoreError::Corrupt { key: kv_key.clone(), why })?;
            if record.fingerprint() != fingerprint {
                return Ok(Claim::Mismatch);
            }
            return Ok(match record {
                Record::InFlight { .. } => Claim::InFlight,
                Record::Completed { response, .. } => Claim::Completed(response),
            });
        }
        // The key keeps appearing and vanishing: treat it as busy, the client retries.
        Ok(Claim::InFlight)
    }

    /// Commits `response` under the claimed key, in one transaction with the commands
    /// `effects` adds (the handler's writes; add them with `.ignore()`).
    pub async fn commit(
        &self,
        token: ClaimToken,
        response: &StoredResponse,
        effects: impl FnOnce(&mut redis::Pipeline),
    ) -> Result<Commit, StoreError> {
        let record =
            Record::Completed { fingerprint: token.fingerprint, response: response.clone(), completed_ms: unix_ms() };
        let value = record.encode().map_err(|why| StoreError::Corrupt { key: token.kv_key.clone(), why })?;
        let ttl_ms = self.config.response_ttl.as_millis() as u64;

        if self.variant == Variant::Unfenced {
            // Broken on purpose: no WATCH, no owner check, no MULTI.
            let mut pipe = redis::pipe();
            effects(&mut pipe);
            pipe.cmd("SET").arg(&token.kv_key).arg(&value).arg("PX").arg(ttl_ms).ignore();
            let _: () = pipe.query_async(&mut self.shared.clone()).await?;
            return Ok(Commit::Committed);
        }

        let mut exclusive = self.pool.checkout().await?;
        let conn = exclusive.conn();
        let _: () = redis::cmd("WATCH").arg(&token.kv_key).query_async(conn).await?;
        let current: Option<String> = redis::cmd("GET").arg(&token.kv_key).query_async(conn).await?;
        let still_ours = match current.as_deref().map(Record::decode) {
            Some(Ok(Record::InFlight { owner, .. })) => owner == token.owner,
            Some(Ok(Record::Completed { .. })) | None => false,
            Some(Err(why)) => {
                // The exclusive connection is dropped (not released) with its WATCH.
                return Err(StoreError::Corrupt { key: token.kv_key.clone(), why });
            }
        };
        if !still_ours {
            let _: () = redis::cmd("UNWATCH").query_async(conn).await?;
            exclusive.release();
            return Ok(Commit::LostClaim);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        effects(&mut pipe);
        pipe.cmd("SET").arg(&token.kv_key).arg(&value).arg("PX").arg(ttl_ms).ignore();
        // EXEC answers nil when a watched key changed in between: nothing was applied.
        let applied: Option<()> = pipe.query_async(conn).await?;
        exclusive.release();
        Ok(if applied.is_some() { Commit::Committed } else { Commit::LostClaim })
    }

    /// The record under `key`, for tests and the scenario's audit.
    pub async fn peek(&self, key: &IdempotencyKey) -> Result<Option<Record>, StoreError> {
        let kv_key = self.kv_key(key);
        let text: Option<String> = redis::cmd("GET").arg(&kv_key).query_async(&mut self.shared.clone()).await?;
        text.map(|t| Record::decode(&t).map_err(|why| StoreError::Corrupt { key: kv_key, why })).transpose()
    }

    /// A clone of the shared connection, for callers that read their own keys.
    pub fn connection(&self) -> MultiplexedConnection {
        self.shared.clone()
    }
}
