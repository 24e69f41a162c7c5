//! The resilient client: an HTTP call wrapped in a bulkhead, a circuit breaker and
//! retries with jittered backoff under a retry budget, each layer optional so the
//! scenario can compare them.
//!
//! ```text
//!  call ──▶ budget.deposit
//!    │
//!    └─▶ attempt:  bulkhead slot? ──no──▶ BulkheadFull   (not retried: our own overload)
//!                  breaker admits? ──no──▶ BreakerOpen    (not retried: we know it is down)
//!                  GET with a per-attempt timeout
//!                  breaker.record(success | failure)
//!         │ 5xx, timeout, refused connection
//!         ▼
//!        attempts left? budget allows? ──no──▶ the last error
//!         │ yes
//!        sleep (full or decorrelated jitter), attempt again
//! ```
//!
//! The order is deliberate. The bulkhead comes first, so a call the bulkhead sheds
//! does not take a half-open probe slot and never counts as an upstream failure. The
//! breaker wraps each attempt rather than the whole call, so it sees every failure
//! and a retry of an open circuit fails fast. The budget is consulted only before a
//! retry, and a first attempt is never refused by it. 4xx answers are results, not
//! failures: the upstream is alive, and retrying would only repeat the answer.
//!
//! Left out: hedged requests (a second attempt before the first has failed), honouring
//! `Retry-After`, and idempotency: every request here is a GET; a POST must carry an
//! idempotency key before it may be retried (see the `idempotency-keys` exercise).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::backoff::Backoff;
use super::breaker::{BreakerConfig, CircuitBreaker, Outcome, Rejection};
use super::bulkhead::{Bulkhead, BulkheadFull};
use super::retry_budget::{RetryBudget, RetryBudgetConfig};
use crate::framework::http::{HttpClient, HttpError};

/// How often, and how patiently, to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (1: never retry).
    pub max_attempts: u32,
    pub backoff: Backoff,
}

/// The bulkhead's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkheadConfig {
    pub max_concurrent: usize,
    /// How long a call waits for a slot before it is rejected (0: at once).
    pub max_wait: Duration,
}

/// Which protections the client uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Protection {
    /// The deadline of one attempt (connect, send, whole body).
    pub attempt_timeout: Duration,
    pub retry: RetryPolicy,
    pub budget: Option<RetryBudgetConfig>,
    pub breaker: Option<BreakerConfig>,
    pub bulkhead: Option<BulkheadConfig>,
}

/// Why a call failed, as its caller sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the upstream answered {0}")]
    Status(u16),
    #[error("no answer within the attempt timeout")]
    Timeout,
    #[error("can't connect to the upstream: {0}")]
    Connect(String),
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    BreakerOpen(Rejection),
    #[error("{0}")]
    BulkheadFull(BulkheadFull),
}

impl CallError {
    /// Whether another attempt could help: upstream failures yes, local refusals no.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Status(_) | CallError::Timeout | CallError::Connect(_) | CallError::Transport(_))
    }
}

/// How one call went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallReport {
    /// The status of the answer it returned (below 500), or the last error.
    pub result: Result<u16, CallError>,
    /// Attempts that reached the network (rejected ones not counted).
    pub attempts_sent: u32,
    /// Retries made (sleeps taken).
    pub retries: u32,
    /// Whether the budget refused a retry this call wanted.
    pub budget_denied: bool,
}

/// The client's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub calls: u64,
    pub attempts_sent: u64,
    pub retries: u64,
    pub retries_denied_by_budget: u64,
    pub breaker_rejections: u64,
    pub bulkhead_rejections: u64,
    pub timeouts: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    attempts_sent: AtomicU64,
    retries: AtomicU64,
    retries_denied_by_budget: AtomicU64,
    breaker_rejections: AtomicU64,
    bulkhead_rejections: AtomicU64,
    timeouts: AtomicU64,
}

/// A client for one upstream URL. Share it behind an `Arc`; every call shares its
/// bulkhead, breaker and budget, as the calls of one process to one upstream would.
pub struct ResilientClient {
    http: HttpClient,
    url: String,
    protection: Protection,
    budget: Option<Mutex<RetryBudget>>,
    breaker: Option<Arc<CircuitBreaker>>,
    bulkhead: Option<Bulkhead>,
    /// The budget's clock origin.
    origin: Instant,
    /// Jitter's random source: seeded, so a run repeats (up to task scheduling).
    rng: Mutex<fastrand::Rng>,
    counters: Counters,
}

impl ResilientClient {
    pub fn new(url: impl Into<String>, protection: Protection, seed: u64) -> ResilientClient {
        assert!(protection.retry.max_attempts >= 1, "a call makes at least one attempt");
        ResilientClient {
            http: HttpClient::new().with_timeout(protection.attempt_timeout),
            url: url.into(),
            protection,
            budget: protection.budget.map(|config| Mutex::new(RetryBudget::new(config))),
            breaker: protection.breaker.map(CircuitBreaker::new),
            bulkhead: protection.bulkhead.map(|b| Bulkhead::new(b.max_concurrent, b.max_wait)),
            origin: Instant::now(),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            counters: Counters::default(),
        }
    }

    pub fn protection(&self) -> &Protection {
        &self.protection
    }

    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.bulkhead.as_ref()
    }

    pub fn budget_stats(&self) -> Option<super::retry_budget::RetryBudgetStats> {
        self.budget.as_ref().map(|b| b.lock().stats())
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.counters;
        ClientStats {
            calls: c.calls.load(Ordering::Relaxed),
            attempts_sent: c.attempts_sent.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            retries_denied_by_budget: c.retries_denied_by_budget.load(Ordering::Relaxed),
            breaker_rejections: c.breaker_rejections.load(Ordering::Relaxed),
            bulkhead_rejections: c.bulkhead_rejections.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
        }
    }

    /// One call: attempts until an answer below 500, a non-retryable error, the last
    /// attempt, or a retry the budget refuses.
    pub async fn call(&self) -> CallReport {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(budget) = &self.budget {
            budget.lock().deposit(self.origin.elapsed());
        }
        let mut sleeps = self.protection.retry.backoff.sleeps();
        let mut report = CallReport { result: Ok(0), attempts_sent: 0, retries: 0, budget_denied: false };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (result, sent) = self.attempt().await;
            report.attempts_sent += u32::from(sent);
            let error = match result {
                Ok(status) => {
                    report.result = Ok(status);
                    return report;
                }
                Err(error) => error,
            };
            let out_of_attempts = attempts >= self.protection.retry.max_attempts;
            if !error.is_retryable() || out_of_attempts {
                report.result = Err(error);
                return report;
            }
            if let Some(budget) = &self.budget {
                if !budget.lock().try_withdraw(self.origin.elapsed()) {
                    self.counters.retries_denied_by_budget.fetch_add(1, Ordering::Relaxed);
                    report.budget_denied = true;
                    report.result = Err(error);
                    return report;
                }
            }
            report.retries += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let sleep = sleeps.next_sleep(&mut self.rng.lock());
            tokio::time::sleep(sleep).await;
        }
    }

    /// One attempt through the bulkhead and the breaker; says whether it was sent.
    async fn attempt(&self) -> (Result<u16, CallError>, bool) {
        let _slot = match &self.bulkhead {
            Some(bulkhead) => match bulkhead.acquire().await {
                Ok(slot) => Some(slot),
                Err(full) => {
                    self.counters.bulkhead_rejections.fetch_add(1, Ordering::Relaxed);
                    return (Err(CallError::BulkheadFull(full)), false);
                }
            },
            None => None,
        };
        let permit = match &self.breaker {
            Some(breaker) => match breaker.admit() {
                Ok(permit) => Some(permit),
                Err(rejection) => {
                    self.counters.breaker_rejections.fetch_add(1, Ordering::Relaxed);
                    return (Err(CallError::BreakerOpen(rejection)), false);
                }
            },
            None => None,
        };
        self.counters.attempts_sent.fetch_add(1, Ordering::Relaxed);
        let result = match self.http.get(&self.url).await {
            Ok(response) if response.status >= 500 => Err(CallError::Status(response.status)),
            Ok(response) => Ok(response.status),
            Err(HttpError::Timeout(_)) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(CallError::Timeout)
            }
            Err(HttpError::Connect(why)) => Err(CallError::Connect(why)),
            Err(HttpError::Other(why)) => Err(CallError::Transport(why)),
        };
        if let Some(permit) = permit {
            permit.record(if result.is_ok() { Outcome::Success } else { Outcome::Failure });
        }
        (result, true)
    }
}
