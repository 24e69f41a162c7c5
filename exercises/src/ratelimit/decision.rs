//! What every limiter in this theme answers, what it fails with, and the two things all
//! of them do on the wire: open a connection of their own and read the server's clock.
//!
//! A [`Decision`] is admitted or refused; a refusal says when to retry. It also carries
//! what the decision cost (round trips, EXECs aborted by concurrent writers) and the
//! time it was made at, so a scenario can check an invariant over many decisions
//! afterwards (see [`super::ledger`]). A broken invariant is never an error: errors
//! ([`LimitError`]) are for "could not decide".
//!
//! Left out: AUTH/TLS set-up (the URL goes to the `redis` crate as given) and
//! reconnecting after a dropped connection (the caller sees the error and decides).

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::framework::DemoError;

/// How long a limiter waits for any one reply. A limiter sits in front of every
/// request, so a stuck store must become an error quickly rather than a stuck caller;
/// real deployments pick a few milliseconds and fail open or closed on timeout.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a limiter waits for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a KV limiter's read-compute-write is guarded by WATCH.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    /// The pattern: WATCH before the read, so a concurrent write aborts our EXEC.
    #[default]
    Watched,
    /// **Broken on purpose**: the same read, computation and MULTI/EXEC write, without
    /// WATCH. MULTI makes the write atomic but not the read-compute-write: two clients
    /// that read the same state both spend the same token (or the same free slot of a
    /// window). It exists so the tests can show the over-admission checks catching it.
    Unwatched,
}

/// One limiter's answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// Whole tokens (or free slots in the window) left after this decision.
    pub remaining: u64,
    /// Zero when admitted. When refused: the earliest time after which the same request
    /// can be admitted if nobody else takes the capacity first.
    pub retry_after: Duration,
    /// The time the decision was made at, in microseconds since the Unix epoch, on the
    /// clock the limiter uses (the KV server's `TIME` for the bucket and the log, the
    /// caller's clock for the fixed window). Ledgers check invariants on these.
    pub at_micros: i64,
    /// EXECs that concurrent writers aborted (WATCH fired) before this decision went
    /// through: the price of optimistic locking under contention.
    pub aborted: u32,
    /// Request/reply exchanges with the server this decision took (a pipeline is one).
    pub round_trips: u32,
}

/// Why a limiter could not decide.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    #[error(
        "a request costing {cost} can never be admitted by a limit of {capacity}; raise the limit or split the request"
    )]
    CostAboveCapacity { cost: u64, capacity: u64 },
    #[error(
        "key {key:?}: {attempts} attempts in a row were aborted by concurrent writers; back off and retry, or spread the load over more keys"
    )]
    Contended { key: String, attempts: u32 },
    #[error(
        "key {key:?} does not hold this limiter's state ({what}); delete it or give the limiter its own key prefix"
    )]
    Corrupt { key: String, what: String },
    #[error("KV store: {0}")]
    Kv(#[from] redis::RedisError),
}

impl From<LimitError> for DemoError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Kv(e) => DemoError::Kv(e),
            other => DemoError::Scenario(other.to_string()),
        }
    }
}

/// A limiter a load generator can drive: one logical client, one request at a time
/// (`&mut self`), because the WATCH-based ones own a connection whose watch state must
/// not be shared.
pub trait Limiter: Send + 'static {
    /// Decides one request of cost 1 on `key`.
    fn try_acquire<'a>(&'a mut self, key: &'a str) -> impl Future<Output = Result<Decision, LimitError>> + Send + 'a;
}

/// A connection of its own for one limiter. It is multiplexed, but nothing clones it:
/// WATCH state belongs to a connection, so two logical clients sharing one would abort
/// (or, worse, validate) each other's transactions.
pub async fn connect(url: &str) -> Result<MultiplexedConnection, LimitError> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT);
    Ok(client.get_multiplexed_async_connection_with_config(&config).await?)
}

/// The server's `TIME` reply (seconds, microseconds) as microseconds since the epoch.
pub fn server_micros((seconds, micros): (i64, i64)) -> Result<i64, LimitError> {
    if !(0..1_000_000).contains(&micros) || seconds < 0 {
        return Err(LimitError::Kv(redis::RedisError::from((
            redis::ErrorKind::TypeError,
            "TIME answered an impossible time",
            format!("{seconds} s {micros} µs"),
        ))));
    }
    seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(micros))
        .ok_or_else(|| LimitError::Kv(redis::RedisError::from((redis::ErrorKind::TypeError, "TIME overflows"))))
}

/// The caller's wall clock in microseconds since the epoch (for the fixed-window
/// counter, which keys its windows by the caller's clock as most implementations do).
pub fn local_micros() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

/// `micros` as a [`Duration`], zero for negative values.
pub fn micros_to_duration(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// Whole milliseconds, rounded up, at least 1: what PEXPIRE takes. Rounding up keeps a
/// key alive at least as long as asked; PEXPIRE 0 would delete it at once.
pub fn ceil_millis(micros: u64) -> u64 {
    micros.div_ceil(1_000).max(1)
}

/// Between retries of an aborted EXEC: "full jitter" exponential backoff. The first
/// retry goes at once (another writer just committed, so the next read will likely see
/// a settled state); later ones wait a random pause below a ceiling that doubles, so a
/// crowd of losers spreads out instead of retrying in lock-step and aborting each other
/// again. (tokio's timer rounds pauses up to its 1 ms tick; that is fine here.)
pub async fn backoff(attempt: u32, rng: &mut fastrand::Rng) {
    /// The first ceiling, doubled per further attempt.
    const FIRST_PAUSE_MICROS: u64 = 200;
    /// The longest pause: a crowd of 100 drains in a few of these.
    const MAX_PAUSE_MICROS: u64 = 10_000;
    if attempt <= 1 {
        tokio::task::yield_now().await;
        return;
    }
    let ceiling = (FIRST_PAUSE_MICROS << (attempt - 2).min(10)).min(MAX_PAUSE_MICROS);
    tokio::time::sleep(Duration::from_micros(rng.u64(0..=ceiling))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_time_is_checked() {
        assert_eq!(server_micros((1, 5)).unwrap(), 1_000_005);
        assert!(server_micros((1, 1_000_000)).is_err());
        assert!(server_micros((-1, 0)).is_err());
        assert!(server_micros((i64::MAX, 0)).is_err());
    }

    #[test]
    fn millis_round_up_and_never_reach_zero() {
        assert_eq!(ceil_millis(0), 1);
        assert_eq!(ceil_millis(1), 1);
        assert_eq!(ceil_millis(1_000), 1);
        assert_eq!(ceil_millis(1_001), 2);
    }
}
