//! The origin: a simulated slow database that the cache sits in front of.
//!
//! Cache-aside exists to spare the thing behind the cache, so the one number every
//! phase of the scenario is judged by is how many times this was asked. [`Origin`] is
//! an in-process table of rows with a configurable latency per query, and it counts:
//! every [`Origin::load`] (per key, too), and how many ran at the same time (a stampede
//! shows up as a peak of hundreds; a protected cache keeps it at one).
//!
//! Its answers are the three a real database gives a cache: a row, "not found", and a
//! failure ([`Origin::set_unavailable`] makes every query fail, as a database that is
//! down or overloaded would). The count is taken when a query *arrives*, before the
//! latency and before the answer, because a query that fails still cost the database.
//!
//! [`Origin::with_connections`] gives it a connection pool: at most that many queries
//! run at once and the rest queue, as they would for a real database's connections.
//! That is what makes a stampede slow for everybody: a thousand queries through twenty
//! connections take fifty latencies, not one.
//!
//! Left out: anything else a real database has (no SQL, no locks between rows, no
//! latency that grows with load beyond the queueing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// Why the origin gave no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("the origin is unavailable (load of {key:?} failed); nothing was cached, so the next read tries again")]
    Unavailable { key: String },
}

/// A simulated database. Cheap to clone: clones share the rows and the counters, as
/// several processes share one database.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The rows. A parking_lot lock: held for a map operation, never across the sleep.
    rows: Mutex<HashMap<String, String>>,
    /// Per-key load counts, for checks on one key among others.
    loads_by_key: Mutex<HashMap<String, u64>>,
    /// How long each query takes, in nanoseconds (an atomic so a scenario can slow the
    /// origin down between phases while clones are in use).
    latency_nanos: AtomicU64,
    /// While set, every query fails.
    unavailable: AtomicBool,
    /// The connection pool, when there is one: a query holds a permit while it runs.
    connections: Option<tokio::sync::Semaphore>,
    /// Every query that arrived.
    loads: AtomicU64,
    /// Queries arrived and not yet answered (running or queued for a connection), and
    /// the most there ever were at once.
    running: AtomicU64,
    peak_running: AtomicU64,
}

impl Origin {
    /// An empty origin whose queries take `latency` each.
    pub fn new(latency: Duration) -> Origin {
        let origin = Origin::default();
        origin.set_latency(latency);
        origin
    }

    /// An origin whose queries take `latency` each, at most `connections` at a time
    /// (the rest wait for a connection, first come first served).
    pub fn with_connections(latency: Duration, connections: usize) -> Origin {
        assert!(connections > 0, "a pool has at least one connection");
        let inner = Inner { connections: Some(tokio::sync::Semaphore::new(connections)), ..Inner::default() };
        let origin = Origin { inner: Arc::new(inner) };
        origin.set_latency(latency);
        origin
    }

    /// Writes a row (the database's own write path; the cache does not see it).
    pub fn put(&self, key: impl Into<String>, value: impl Into<String>) {
        self.inner.rows.lock().insert(key.into(), value.into());
    }

    /// Deletes a row; later loads answer "not found".
    pub fn remove(&self, key: &str) {
        self.inner.rows.lock().remove(key);
    }

    pub fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.inner.latency_nanos.store(nanos, Ordering::SeqCst);
    }

    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.inner.latency_nanos.load(Ordering::SeqCst))
    }

    /// Failure injection: while `true`, every load waits its latency and then fails.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// One query: the row, `None` when there is none, or a failure. Takes the latency.
    pub async fn load(&self, key: &str) -> Result<Option<String>, OriginError> {
        self.inner.loads.fetch_add(1, Ordering::SeqCst);
        *self.inner.loads_by_key.lock().entry(key.to_string()).or_insert(0) += 1;
        let _running = Running::enter(&self.inner);
        let _connection = match &self.inner.connections {
            // The semaphore is never closed, so `acquire` cannot fail; if it did, the
            // query would run without a connection rather than not at all.
            Some(pool) => pool.acquire().await.ok(),
            None => None,
        };
        tokio::time::sleep(self.latency()).await;
        if self.inner.unavailable.load(Ordering::SeqCst) {
            return Err(OriginError::Unavailable { key: key.to_string() });
        }
        Ok(self.inner.rows.lock().get(key).cloned())
    }

    /// Every load so far, of any key.
    pub fn loads(&self) -> u64 {
        self.inner.loads.load(Ordering::SeqCst)
    }

    /// The loads of `key` so far.
    pub fn loads_of(&self, key: &str) -> u64 {
        self.inner.loads_by_key.lock().get(key).copied().unwrap_or(0)
    }

    /// The most loads that were ever pending (running or queued) at the same time.
    pub fn peak_concurrent_loads(&self) -> u64 {
        self.inner.peak_running.load(Ordering::SeqCst)
    }

    /// Loads pending now (running or queued).
    pub fn loads_running(&self) -> u64 {
        self.inner.running.load(Ordering::SeqCst)
    }

    /// Zeroes the counters (not the rows), between phases.
    pub fn reset_counts(&self) {
        self.inner.loads.store(0, Ordering::SeqCst);
        self.inner.loads_by_key.lock().clear();
        self.inner.peak_running.store(self.inner.running.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Counts a query in `running` while it runs, even if its future is dropped mid-sleep.
struct Running<'a>(&'a Inner);

impl<'a> Running<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let now = inner.running.fetch_add(1, Ordering::SeqCst) + 1;
        inner.peak_running.fetch_max(now, Ordering::SeqCst);
        Running(inner)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let before = self.0.running.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "a running query leaves once");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn it_answers_rows_misses_and_failures_and_counts_each() {
        let origin = Origin::new(Duration::from_millis(30));
        origin.put("user:1", "ada");
        assert_eq!(origin.load("user:1").await, Ok(Some("ada".to_string())));
        assert_eq!(origin.load("user:2").await, Ok(None));
        origin.set_unavailable(true);
        assert!(matches!(origin.load("user:1").await, Err(OriginError::Unavailable { .. })));
        assert_eq!(origin.loads(), 3);
        assert_eq!(origin.loads_of("user:1"), 2);
        assert_eq!(origin.loads_running(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_queries_show_in_the_peak() {
        let origin = Origin::new(Duration::from_millis(20));
        let queries: Vec<_> = (0..5)
            .map(|_| {
                let origin = origin.clone();
                tokio::spawn(async move { origin.load("k").await })
            })
            .collect();
        for query in queries {
            assert_eq!(query.await.ok(), Some(Ok(None)));
        }
        assert_eq!(origin.peak_concurrent_loads(), 5);
        origin.reset_counts();
        assert_eq!((origin.loads(), origin.peak_concurrent_loads()), (0, 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pool_queues_the_queries_beyond_its_connections() {
        let latency = Duration::from_millis(20);
        let origin = Origin::with_connections(latency, 2);
        let started = std::time::Instant::now();
        let queries: Vec<_> = (0..6)
            .map(|_| {
                let origin = origin.clone();
                tokio::spawn(async move { origin.load("k").await })
            })
            .collect();
        for query in queries {
            assert_eq!(query.await.ok(), Some(Ok(None)));
        }
        // Six queries through two connections: three latencies at least, one at most
        // without the pool.
        assert!(started.elapsed() >= latency * 3, "{:?}", started.elapsed());
        assert_eq!(origin.peak_concurrent_loads(), 6, "queued queries are pending too");
        origin.reset_counts();
        assert_eq!((origin.loads(), origin.peak_concurrent_loads()), (0, 0));
    }
}
