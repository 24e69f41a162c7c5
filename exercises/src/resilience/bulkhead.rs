//! A bulkhead: a cap on how many calls to one upstream are in flight at once, so a slow
//! upstream ties up a bounded share of the caller (its connections, its memory, its
//! tasks) instead of all of it.
//!
//! It is a semaphore per upstream. A call over the limit waits for a slot for at most
//! `max_wait` and is then rejected ([`BulkheadFull`]); `max_wait` of zero rejects at
//! once. Waiting a little absorbs a burst; waiting without bound would just move the
//! pile-up into the semaphore's queue. Rejected calls are not retried by the resilient
//! client: the bulkhead being full is the caller's own overload, and retrying adds to
//! it. (Hystrix's semaphore isolation rejects at once; Resilience4j's Bulkhead has
//! `maxWaitDuration`, as here.)
//!
//! The permit is held for one attempt, not across the backoff sleeps between retries:
//! a sleeping retry uses no upstream capacity. Left out: thread-pool isolation (the
//! other Hystrix mode), and limits that adapt to latency (Netflix's concurrency-limits,
//! TCP-Vegas style).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bulkhead had no slot within its wait bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("all {max_concurrent} slots for this upstream are busy (waited {waited:?}): shed the call or try later")]
pub struct BulkheadFull {
    pub max_concurrent: usize,
    pub waited: Duration,
}

/// Counters of a bulkhead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkheadStats {
    pub admitted: u64,
    pub rejected: u64,
    /// The most permits ever held at once: never above the limit.
    pub max_in_use: usize,
}

/// The concurrency cap for one upstream.
pub struct Bulkhead {
    semaphore: Arc<Semaphore>,
    max_concurrent: usize,
    max_wait: Duration,
    in_use: Arc<AtomicUsize>,
    max_in_use: AtomicUsize,
    admitted: AtomicU64,
    rejected: AtomicU64,
}

impl Bulkhead {
    pub fn new(max_concurrent: usize, max_wait: Duration) -> Bulkhead {
        assert!(max_concurrent > 0, "a bulkhead with no slot rejects everything");
        Bulkhead {
            semaphore: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_wait,
            in_use: Arc::new(AtomicUsize::new(0)),
            max_in_use: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// A slot, waiting at most `max_wait` for one.
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        let permit = if self.max_wait.is_zero() {
            self.semaphore.clone().try_acquire_owned().ok()
        } else {
            match tokio::time::timeout(self.max_wait, self.semaphore.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                // Timed out, or the semaphore was closed (never, here).
                _ => None,
            }
        };
        let Some(permit) = permit else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(BulkheadFull { max_concurrent: self.max_concurrent, waited: self.max_wait });
        };
        let in_use = self.in_use.fetch_add(1, Ordering::AcqRel) + 1;
        assert!(in_use <= self.max_concurrent, "{in_use} permits out of {}", self.max_concurrent);
        self.max_in_use.fetch_max(in_use, Ordering::AcqRel);
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(BulkheadPermit { _permit: permit, in_use: self.in_use.clone() })
    }

    pub fn stats(&self) -> BulkheadStats {
        BulkheadStats {
            admitted: self.admitted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            max_in_use: self.max_in_use.load(Ordering::Acquire),
        }
    }
}

/// A held slot; dropping it frees the slot.
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
    in_use: Arc<AtomicUsize>,
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        // Before the semaphore permit (a field) is released, so `in_use` never
        // counts more holders than the semaphore allows.
        self.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_the_limit_waits_up_to_the_bound_then_is_rejected() {
        let bulkhead = Bulkhead::new(2, Duration::from_millis(20));
        let a = bulkhead.acquire().await.expect("slot 1");
        let _b = bulkhead.acquire().await.expect("slot 2");
        let full = bulkhead.acquire().await.err().expect("no third slot");
        assert_eq!(full.max_concurrent, 2);
        drop(a);
        bulkhead.acquire().await.expect("a freed slot is reused");
        assert_eq!(bulkhead.stats(), BulkheadStats { admitted: 3, rejected: 1, max_in_use: 2 });

        let at_once = Bulkhead::new(1, Duration::ZERO);
        let _held = at_once.acquire().await.expect("slot");
        assert!(at_once.acquire().await.is_err(), "max_wait 0 rejects without waiting");
    }
}
