//! `POST /orders` with an `Idempotency-Key` header: an HTTP service (axum) whose handler
//! runs once per key, however often and however concurrently a client sends it.
//!
//! ```text
//!  POST /orders  Idempotency-Key: k   {"customer":…, "item":…, "quantity":…}
//!    │ key missing / too long / bad bytes ─────────────────────────> 400
//!    │ body over 16 KiB ───────────────────────────────────────────> 413
//!    │ body not a valid order ─────────────────────────────────────> 400 (nothing stored)
//!    │ fingerprint = FNV-1a(POST /orders + the order re-serialised)
//!    ▼ store.claim(k, fingerprint)
//!    ├ Completed ──> the stored status, headers and body, plus Idempotent-Replayed: true
//!    ├ InFlight  ──> 409 Conflict, Retry-After: 1
//!    ├ Mismatch  ──> 422 Unprocessable Content
//!    └ Owned ──> spawn the handler (detached from the connection):
//!                  work, then MULTI { HSET orders, HINCRBY commits, SET k Completed } EXEC
//!                  ──> 201 Created, Location: /orders/<id>, the order as JSON
//! ```
//!
//! **Choices, as the IETF draft and Stripe make them.** A concurrent request with a key
//! whose first request is still running gets 409 at once (it does not wait): waiting
//! would tie up a connection per duplicate for as long as the handler runs, and the
//! client is retrying anyway. A key reused with another body gets 422. A replay has the
//! stored status, the stored handler headers (`content-type`, `location`) and the
//! stored body, byte for byte; it adds one header, `Idempotent-Replayed: true`
//! (Stripe's), which is not part of "identical": a first response does not carry it, so
//! a client can tell, and a client that ignores it sees the same response. The HTTP
//! layer's own `date` and `content-length` are not stored either.
//!
//! Requests that fail validation are not stored, so the key is not used up: the
//! client fixes the body and sends the same key again (Stripe does this too).
//!
//! **The handler is detached from the connection.** It runs in its own task and the
//! request only awaits it. A client that times out and hangs up would otherwise cancel
//! the handler half-way, leaving an in-flight record that blocks its retries for the
//! lock TTL; detached, the handler finishes, and the retry finds the replay.
//!
//! **Crashes.** [`OrdersConfig::crash_probability`] makes the first execution of a key
//! stop after its work and before its commit, as a process dying there would: nothing
//! is written, the in-flight record stays, and the request gets 500 (a real crash would
//! reset the connection). Retries get 409 until the record expires after the lock TTL;
//! then one runs the handler again and commits. So `started = committed + crashed +
//! lost claims`, and `committed` is one per key.
//!
//! Left out: authentication and per-tenant key scopes, `GET /orders/{id}`, and keys on
//! methods other than POST.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::keys::{self, IdempotencyKey};
use super::record::{unix_ms, Fingerprint, StoredResponse};
use super::store::{Claim, Commit, IdempotencyStore, StoreConfig, StoreError, Variant};

/// The path the service answers; part of the fingerprint.
pub const PATH: &str = "/orders";

/// Request bodies above this get 413: an order is a few dozen bytes.
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024;

/// The longest customer or item name an order takes.
pub const MAX_NAME_CHARS: usize = 64;

/// The most items one order takes.
pub const MAX_QUANTITY: u32 = 1000;

/// The header a replay adds (Stripe's name).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The service's knobs.
#[derive(Clone, Copy, Debug)]
pub struct OrdersConfig {
    pub store: StoreConfig,
    pub variant: Variant,
    /// The handler's simulated work takes a uniform time in this range (`min..=max`),
    /// standing in for the database writes and calls a real order handler makes.
    pub work: (Duration, Duration),
    /// The chance that a key's *first* execution crashes between its claim and its
    /// commit (later executions of the key do not), decided per key from `seed`.
    pub crash_probability: f64,
    pub seed: u64,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig {
            store: StoreConfig::default(),
            variant: Variant::Correct,
            work: (Duration::from_millis(1), Duration::from_millis(5)),
            crash_probability: 0.0,
            seed: 0,
        }
    }
}

/// An order as the client sends it. The fingerprint is taken over this, serialised
/// again, so `{"item":"a", "quantity":1, ...}` and the same fields reordered or
/// re-spaced are one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub customer: String,
    pub item: String,
    pub quantity: u32,
}

impl OrderRequest {
    fn validate(&self) -> Result<(), String> {
        for (field, value) in [("customer", &self.customer), ("item", &self.item)] {
            let chars = value.chars().count();
            if chars == 0 || chars > MAX_NAME_CHARS {
                return Err(format!("{field} must be 1 to {MAX_NAME_CHARS} characters, got {chars}"));
            }
        }
        if self.quantity == 0 || self.quantity > MAX_QUANTITY {
            return Err(format!("quantity must be 1 to {MAX_QUANTITY}, got {}", self.quantity));
        }
        Ok(())
    }
}

/// An order as the service answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub customer: String,
    pub item: String,
    pub quantity: u32,
    pub amount_cents: u64,
    /// When the handler ran: a re-execution has a different one, a replay the same.
    pub created_ms: u64,
}

/// How often the handler ran for one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyExecutions {
    /// Times the handler started (after a claim).
    pub started: u32,
    /// Crashed between work and commit (injected).
    pub crashed: u32,
    /// Committed its effects and response.
    pub committed: u32,
    /// Finished after its claim was gone, so committed nothing.
    pub lost_claims: u32,
}

/// Counters over every request, as answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderStats {
    pub requests: u64,
    pub executions_started: u64,
    pub executions_committed: u64,
    pub crashes: u64,
    pub lost_claims: u64,
    pub replays: u64,
    pub in_flight_409: u64,
    pub mismatch_422: u64,
    pub bad_request_400: u64,
    pub too_large_413: u64,
    pub unavailable_503: u64,
    pub internal_500: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    executions_started: AtomicU64,
    executions_committed: AtomicU64,
    crashes: AtomicU64,
    lost_claims: AtomicU64,
    replays: AtomicU64,
    in_flight_409: AtomicU64,
    mismatch_422: AtomicU64,
    bad_request_400: AtomicU64,
    too_large_413: AtomicU64,
    unavailable_503: AtomicU64,
    internal_500: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the KV store says was committed: the audit's ground truth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommittedLedger {
    /// Commits per idempotency key (`HINCRBY` inside each commit's `MULTI`).
    pub commits: HashMap<String, u64>,
    /// Orders stored.
    pub orders: u64,
}

/// The order service. Shared by the router's handlers through an `Arc`.
pub struct OrderService {
    store: IdempotencyStore,
    config: OrdersConfig,
    counters: Counters,
    /// Per key, what the handler did. A parking_lot mutex: held for a map update,
    /// never across an await.
    executions: Mutex<HashMap<String, KeyExecutions>>,
    /// Work times, seeded so a run's timings repeat.
    rng: Mutex<fastrand::Rng>,
    /// Order ids, seeded from entropy: two replicas started with one seed must not
    /// hand out the same ids (a test caught exactly that: the second order's `HSET`
    /// overwrote the first's).
    ids: Mutex<fastrand::Rng>,
    /// `HSET` target: order id → order JSON.
    orders_key: String,
    /// `HINCRBY` target: idempotency key → commits.
    commits_key: String,
}

/// Why a detached execution ended without a response to store.
enum Executed {
    Done(StoredResponse),
    Crashed,
    LostClaim,
}

impl OrderService {
    /// Connects to the KV store at `kv_url`; every key the service writes starts with
    /// `namespace:`.
    pub async fn connect(kv_url: &str, namespace: &str, config: OrdersConfig) -> Result<Arc<OrderService>, StoreError> {
        assert!(config.work.0 <= config.work.1, "work range {:?} is backwards", config.work);
        assert!((0.0..=1.0).contains(&config.crash_probability), "a probability is in 0..=1");
        let store = IdempotencyStore::connect(kv_url, namespace, config.store, config.variant).await?;
        Ok(Arc::new(OrderService {
            store,
            config,
            counters: Counters::default(),
            executions: Mutex::new(HashMap::new()),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            ids: Mutex::new(fastrand::Rng::new()),
            orders_key: format!("{namespace}:orders"),
            commits_key: format!("{namespace}:commits"),
        }))
    }

    /// `POST /orders`, on this service.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new().route(PATH, axum::routing::post(post_orders)).with_state(Arc::clone(self))
    }

    pub fn store(&self) -> &IdempotencyStore {
        &self.store
    }

    pub fn stats(&self) -> OrderStats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        OrderStats {
            requests: get(&c.requests),
            executions_started: get(&c.executions_started),
            executions_committed: get(&c.executions_committed),
            crashes: get(&c.crashes),
            lost_claims: get(&c.lost_claims),
            replays: get(&c.replays),
            in_flight_409: get(&c.in_flight_409),
            mismatch_422: get(&c.mismatch_422),
            bad_request_400: get(&c.bad_request_400),
            too_large_413: get(&c.too_large_413),
            unavailable_503: get(&c.unavailable_503),
            internal_500: get(&c.internal_500),
        }
    }

    /// What the handler did, per key.
    pub fn executions(&self) -> HashMap<String, KeyExecutions> {
        self.executions.lock().clone()
    }

    /// What the KV store holds as committed.
    pub async fn committed(&self) -> Result<CommittedLedger, StoreError> {
        let mut conn = self.store.connection();
        let commits: HashMap<String, u64> = redis::cmd("HGETALL").arg(&self.commits_key).query_async(&mut conn).await?;
        let orders: u64 = redis::cmd("HLEN").arg(&self.orders_key).query_async(&mut conn).await?;
        Ok(CommittedLedger { commits, orders })
    }

    /// Deletes the orders and the commit counts (the idempotency records expire by
    /// themselves), so a run against a shared server leaves nothing without a TTL.
    pub async fn clear_ledger(&self) -> Result<(), StoreError> {
        let mut conn = self.store.connection();
        let _: () = redis::cmd("DEL").arg(&self.orders_key).arg(&self.commits_key).query_async(&mut conn).await?;
        Ok(())
    }

    /// One `POST /orders`, from its headers and body to the response.
    pub async fn handle(self: &Arc<Self>, headers: &HeaderMap, body: &[u8]) -> Response {
        bump(&self.counters.requests);
        let values: Vec<&[u8]> = headers.get_all(keys::HEADER).iter().map(HeaderValue::as_bytes).collect();
        let key = match IdempotencyKey::from_header_values(&values) {
            Ok(key) => key,
            Err(e) => {
                bump(&self.counters.bad_request_400);
                return error_response(StatusCode::BAD_REQUEST, &e.to_string());
            }
        };
        if body.len() > MAX_REQUEST_BODY_BYTES {
            bump(&self.counters.too_large_413);
            let message = format!("the body is {} bytes; an order is at most {MAX_REQUEST_BODY_BYTES}", body.len());
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, &message);
        }
        let request = match serde_json::from_slice::<OrderRequest>(body) {
            Ok(request) => request,
            Err(e) => {
                bump(&self.counters.bad_request_400);
                let message = format!(
                    "the body is not an order ({e}): send {{\"customer\": text, \"item\": text, \"quantity\": 1..={MAX_QUANTITY}}}; the key was not used, so resend it with a fixed body"
                );
                return error_response(StatusCode::BAD_REQUEST, &message);
            }
        };
        if let Err(why) = request.validate() {
            bump(&self.counters.bad_request_400);
            return error_response(StatusCode::BAD_REQUEST, &format!("{why}; the key was not used"));
        }
        let canonical = match serde_json::to_vec(&request) {
            Ok(bytes) => bytes,
            Err(e) => return self.internal(&format!("re-serialising the order: {e}")),
        };
        let fingerprint = Fingerprint::of("POST", PATH, &canonical);

        let token = match self.store.claim(&key, fingerprint).await {
            Ok(Claim::Owned(token)) => token,
            Ok(Claim::Completed(response)) => {
                bump(&self.counters.replays);
                return self.to_response(&response, true);
            }
            Ok(Claim::InFlight) => {
                bump(&self.counters.in_flight_409);
                return in_flight_response();
            }
            Ok(Claim::Mismatch) => {
                bump(&self.counters.mismatch_422);
                let message = format!(
                    "Idempotency-Key {key} was already used with a different request; use a new key for a new order"
                );
                return error_response(StatusCode::UNPROCESSABLE_ENTITY, &message);
            }
            Err(e) => return self.store_error(e),
        };

        // Detached: a client hanging up does not cancel the handler half-way.
        let service = Arc::clone(self);
        let execution = tokio::spawn(async move { service.execute(key, request, token).await });
        match execution.await {
            Ok(Ok(Executed::Done(response))) => self.to_response(&response, false),
            Ok(Ok(Executed::Crashed)) => {
                bump(&self.counters.internal_500);
                let message = format!(
                    "the server failed while creating the order; retry with the same Idempotency-Key (409 until its claim expires in {:?})",
                    self.config.store.lock_ttl
                );
                error_response(StatusCode::INTERNAL_SERVER_ERROR, &message)
            }
            Ok(Ok(Executed::LostClaim)) => {
                bump(&self.counters.in_flight_409);
                in_flight_response()
            }
            Ok(Err(e)) => self.store_error(e),
            Err(e) => self.internal(&format!("the handler task failed: {e}")),
        }
    }

    /// The handler proper, after a claim: the work, then one commit of the order and
    /// the response.
    async fn execute(
        &self,
        key: IdempotencyKey,
        request: OrderRequest,
        token: super::store::ClaimToken,
    ) -> Result<Executed, StoreError> {
        bump(&self.counters.executions_started);
        let first = {
            let mut executions = self.executions.lock();
            let entry = executions.entry(key.as_str().to_string()).or_default();
            entry.started += 1;
            entry.started == 1
        };
        let work = {
            let (min, max) = (self.config.work.0.as_micros() as u64, self.config.work.1.as_micros() as u64);
            Duration::from_micros(self.rng.lock().u64(min..=max))
        };
        let id_bits = self.ids.lock().u64(..);
        tokio::time::sleep(work).await;

        if first && crash_roll(self.config.seed, &key) < self.config.crash_probability {
            bump(&self.counters.crashes);
            self.record(&key, |e| e.crashed += 1);
            return Ok(Executed::Crashed);
        }

        let order = Order {
            id: format!("ord_{id_bits:016x}"),
            customer: request.customer,
            item: request.item.clone(),
            quantity: request.quantity,
            amount_cents: u64::from(request.quantity) * unit_price_cents(&request.item),
            created_ms: unix_ms(),
        };
        let body = serde_json::to_string(&order).map_err(|e| StoreError::Corrupt {
            key: token.kv_key().to_string(),
            why: super::record::RecordError::Json(e.to_string()),
        })?;
        let response = StoredResponse {
            status: StatusCode::CREATED.as_u16(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("location".into(), format!("{PATH}/{}", order.id)),
            ],
            body: body.clone(),
        };
        let (orders_key, commits_key) = (&self.orders_key, &self.commits_key);
        let commit = self
            .store
            .commit(token, &response, |pipe| {
                pipe.cmd("HSET").arg(orders_key).arg(&order.id).arg(&body).ignore();
                pipe.cmd("HINCRBY").arg(commits_key).arg(key.as_str()).arg(1).ignore();
            })
            .await?;
        match commit {
            Commit::Committed => {
                bump(&self.counters.executions_committed);
                self.record(&key, |e| e.committed += 1);
                Ok(Executed::Done(response))
            }
            Commit::LostClaim => {
                bump(&self.counters.lost_claims);
                self.record(&key, |e| e.lost_claims += 1);
                Ok(Executed::LostClaim)
            }
        }
    }

    fn record(&self, key: &IdempotencyKey, update: impl FnOnce(&mut KeyExecutions)) {
        update(self.executions.lock().entry(key.as_str().to_string()).or_default());
    }

    fn to_response(&self, stored: &StoredResponse, replayed: bool) -> Response {
        let Ok(status) = StatusCode::from_u16(stored.status) else {
            return self.internal(&format!("stored status {} is not an HTTP status", stored.status));
        };
        let mut builder = Response::builder().status(status);
        for (name, value) in &stored.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if replayed {
            builder = builder.header(REPLAYED_HEADER, "true");
        }
        match builder.body(Body::from(stored.body.clone())) {
            Ok(response) => response,
            Err(e) => self.internal(&format!("a stored header is not valid HTTP: {e}")),
        }
    }

    fn store_error(&self, e: StoreError) -> Response {
        match e {
            StoreError::Kv(e) => {
                bump(&self.counters.unavailable_503);
                let message = format!("the idempotency store is unavailable ({e}); retry with the same key");
                error_response(StatusCode::SERVICE_UNAVAILABLE, &message)
            }
            corrupt @ StoreError::Corrupt { .. } => self.internal(&corrupt.to_string()),
        }
    }

    fn internal(&self, message: &str) -> Response {
        bump(&self.counters.internal_500);
        error_response(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

async fn post_orders(State(service): State<Arc<OrderService>>, headers: HeaderMap, body: Bytes) -> Response {
    service.handle(&headers, &body).await
}

fn in_flight_response() -> Response {
    let mut response = error_response(
        StatusCode::CONFLICT,
        "a request with this Idempotency-Key is still being processed; retry shortly with the same key",
    );
    response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
    response
}

/// `{"error": message}` with `status`.
fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response
}

/// A price per item name, so amounts differ between items without a catalogue.
fn unit_price_cents(item: &str) -> u64 {
    100 + item.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))) % 4_900
}

/// A number in `[0, 1)` fixed by `seed` and `key`, so whether a key's first execution
/// crashes does not depend on which thread got there first.
///
/// FNV alone is not enough here: keys that differ only in their last characters
/// (`…-o1`, `…-o2`) get digests whose high bits barely differ, so the digest is folded
/// and put through splitmix64's finaliser, which spreads every input bit over the output.
fn crash_roll(seed: u64, key: &IdempotencyKey) -> f64 {
    let digest = Fingerprint::of("crash", &seed.to_string(), key.as_str().as_bytes()).0;
    let mut z = ((digest as u64) ^ ((digest >> 64) as u64)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_rolls_are_uniform_enough_and_fixed_by_seed_and_key() {
        let keys: Vec<IdempotencyKey> =
            (0..2000).map(|i| IdempotencyKey::parse(format!("k{i}").as_bytes()).expect("key")).collect();
        let below = keys.iter().filter(|k| crash_roll(7, k) < 0.1).count();
        assert!((120..=280).contains(&below), "{below} of 2000 below 0.1");
        assert!(keys.iter().all(|k| (0.0..1.0).contains(&crash_roll(7, k))));
        assert_eq!(crash_roll(7, &keys[0]), crash_roll(7, &keys[0]));
        assert_ne!(crash_roll(7, &keys[0]), crash_roll(8, &keys[0]));
    }

    #[test]
    fn orders_are_validated_and_canonical() {
        let a: OrderRequest = serde_json::from_str(r#"{"quantity":2,"item":"book","customer":"c1"}"#).expect("order");
        let b: OrderRequest =
            serde_json::from_str(r#"{ "customer" : "c1", "item":"book", "quantity": 2 }"#).expect("order");
        assert_eq!(serde_json::to_vec(&a).expect("json"), serde_json::to_vec(&b).expect("json"));
        assert!(a.validate().is_ok());
        assert!(OrderRequest { quantity: 0, ..a.clone() }.validate().is_err());
        assert!(OrderRequest { item: String::new(), ..a.clone() }.validate().is_err());
        assert!(OrderRequest { customer: "x".repeat(65), ..a }.validate().is_err());
        assert!(serde_json::from_str::<OrderRequest>(r#"{"customer":"c","item":"i","quantity":1,"x":1}"#).is_err());
    }
}
