//! The loading API on `Cache`: `get_with`, `try_get_with` and their async forms, the load
//! statistics, what is (not) cached after a failure, negative caching, and callers of
//! different kinds (sync and async, different error types) sharing one key's flight.
//!
//! The big concurrent stampedes are in `stampede.rs`; here each test pins one rule down,
//! with a `MockClock` wherever time matters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use minicache::{Cache, LoadError, MockClock};

#[derive(Debug, PartialEq)]
struct DbDown(u32);

impl std::fmt::Display for DbDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "database down (attempt {})", self.0)
    }
}

impl std::error::Error for DbDown {}

fn mock_cache(clock: &MockClock) -> Cache<&'static str, u32> {
    Cache::builder().max_capacity(100).clock(Arc::new(clock.clone())).build()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn get_with_loads_once_then_serves_the_cached_value_and_records_the_load() {
    let clock = MockClock::new();
    let cache = mock_cache(&clock);
    let loads = AtomicUsize::new(0);
    let load = || {
        loads.fetch_add(1, Ordering::SeqCst);
        clock.advance(Duration::from_millis(3)); // the load takes 3 ms of cache time
        7
    };
    assert_eq!(cache.get_with("k", load), 7);
    assert_eq!(cache.get_with("k", load), 7);
    assert_eq!(cache.get(&"k"), Some(7));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.load_successes, stats.load_failures), (1, 0));
    assert_eq!(stats.total_load_nanos, 3_000_000, "load time measured with the cache's clock");
    assert_eq!(cache.loads_in_flight(), 0);
}

#[test]
fn a_failed_load_is_not_cached_by_default() {
    let clock = MockClock::new();
    let cache = mock_cache(&clock);
    let attempts = AtomicUsize::new(0);
    let failing = || Err::<u32, _>(DbDown(attempts.fetch_add(1, Ordering::SeqCst) as u32));
    let first = cache.try_get_with("k", failing);
    let second = cache.try_get_with("k", failing);
    assert_eq!(first.err().and_then(|e| e.failure().map(|e| e.0)), Some(0));
    assert_eq!(second.err().and_then(|e| e.failure().map(|e| e.0)), Some(1), "the second call loaded again");
    assert_eq!(cache.get(&"k"), None);
    assert_eq!(cache.stats().load_failures, 2);
    assert_eq!(cache.try_get_with("k", || Ok::<_, DbDown>(5)).ok(), Some(5));
}

#[test]
fn with_a_negative_ttl_a_failure_is_returned_without_loading_until_the_ttl_passes() {
    let clock = MockClock::new();
    let cache: Cache<&str, u32> =
        Cache::builder().max_capacity(100).clock(Arc::new(clock.clone())).negative_ttl(Duration::from_secs(30)).build();
    let attempts = AtomicUsize::new(0);
    let failing = || Err::<u32, _>(DbDown(attempts.fetch_add(1, Ordering::SeqCst) as u32));

    let first = cache.try_get_with("k", failing).err().and_then(|e| e.failure().cloned()).expect("a failure");
    clock.advance(Duration::from_secs(29));
    let remembered = cache.try_get_with("k", failing).err().and_then(|e| e.failure().cloned()).expect("a failure");
    assert!(Arc::ptr_eq(&first, &remembered), "the remembered error itself, not a new load's");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().load_failures, 1);

    clock.advance(Duration::from_secs(2)); // 31 s after the failure
    let after = cache.try_get_with("k", failing).err().and_then(|e| e.failure().map(|e| e.0));
    assert_eq!(after, Some(1), "the negative entry expired: loaded again");
    assert!(cache.invalidate_failure(&"k"), "forgotten on request");
    assert!(!cache.invalidate_failure(&"k"));

    // A caller with another error type cannot be handed a DbDown: it loads, and its
    // success replaces the remembered failure.
    assert!(cache.try_get_with("k", failing).is_err());
    assert_eq!(cache.try_get_with("k", || Ok::<u32, std::io::Error>(3)).ok(), Some(3));
    assert_eq!(cache.invalidate(&"k"), Some(3));
    let fresh = cache.try_get_with("k", failing).err().and_then(|e| e.failure().map(|e| e.0));
    assert_eq!(fresh, Some(3), "the success cleared the failure, so this loaded");
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
}

#[test]
fn the_negative_cache_is_bounded() {
    let clock = MockClock::new();
    let cache: Cache<&str, u32> = Cache::builder()
        .max_capacity(100)
        .clock(Arc::new(clock.clone()))
        .negative_ttl(Duration::from_secs(10))
        .max_negative_entries(2)
        .build();
    let attempts = AtomicUsize::new(0);
    let failing = || Err::<u32, _>(DbDown(attempts.fetch_add(1, Ordering::SeqCst) as u32));
    for key in ["a", "b", "c"] {
        assert!(cache.try_get_with(key, failing).is_err());
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    for key in ["a", "b"] {
        assert!(cache.try_get_with(key, failing).is_err());
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "a and b were remembered");
    assert!(cache.try_get_with("c", failing).is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 4, "c did not fit, so it loaded again");
    clock.advance(Duration::from_secs(11));
    assert!(cache.try_get_with("d", failing).is_err()); // expired a and b make room
    assert!(cache.try_get_with("d", failing).is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 5, "d was remembered once the expired ones were dropped");
}

#[test]
fn a_panicking_loader_panics_its_caller_and_caches_nothing() {
    let clock = MockClock::new();
    let cache: Cache<&str, u32> =
        Cache::builder().max_capacity(100).clock(Arc::new(clock.clone())).negative_ttl(Duration::from_secs(30)).build();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.try_get_with("k", || -> Result<u32, DbDown> { panic!("loader bug") })
    }));
    assert!(panicked.is_err(), "the caller that ran the loader gets its panic");
    assert_eq!(cache.loads_in_flight(), 0);
    assert_eq!(cache.stats().load_failures, 1);
    assert_eq!(cache.try_get_with("k", || Ok::<_, DbDown>(1)).ok(), Some(1), "a panic is never negatively cached");
}

#[test]
fn a_waiter_with_another_error_type_runs_its_own_loader_when_the_leader_fails() {
    let cache: Cache<&str, u32> = Cache::new(100);
    let (open_gate, gate) = mpsc::channel::<()>();
    let cache_ref = &cache;
    std::thread::scope(|scope| {
        let leader = scope.spawn(move || {
            cache_ref.try_get_with("k", || {
                gate.recv_timeout(Duration::from_secs(5)).ok();
                Err::<u32, _>(DbDown(0))
            })
        });
        wait_until("the leader is loading", || cache_ref.loads_in_flight() == 1);
        let follower = scope.spawn(move || cache_ref.get_with("k", || 8));
        wait_until("the follower waits", || cache_ref.load_waiters() == 1);
        open_gate.send(()).expect("the leader is waiting");
        assert!(leader.join().ok().is_some_and(|r| r.is_err()));
        assert_eq!(follower.join().ok(), Some(8), "get_with cannot take a DbDown: it loaded itself");
    });
}

#[test]
fn load_errors_say_what_happened() {
    let failed: LoadError<DbDown> = LoadError::Failed(Arc::new(DbDown(2)));
    assert_eq!(failed.to_string(), "the loader failed: database down (attempt 2)");
    let source = std::error::Error::source(&failed).map(|s| s.to_string());
    assert_eq!(source.as_deref(), Some("database down (attempt 2)"));
    let panicked: LoadError<DbDown> = LoadError::Panicked { message: "index out of bounds".to_string() };
    assert!(panicked.to_string().contains("panicked (index out of bounds)"));
    assert!(panicked.to_string().contains("next call runs a loader again"));
}

#[tokio::test(flavor = "current_thread")]
async fn get_with_async_loads_once_and_serves_from_the_cache() {
    let cache: Cache<&str, u32> = Cache::new(100);
    let loads = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let loads = Arc::clone(&loads);
        let value = cache
            .get_with_async("k", async move {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                4
            })
            .await;
        assert_eq!(value, 4);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let failed = cache.try_get_with_async("e", async { Err::<u32, _>(DbDown(0)) }).await;
    assert!(failed.is_err_and(|e| e.failure().is_some_and(|e| e.0 == 0)));
    assert_eq!(cache.stats().load_failures, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_async_load_is_taken_over_by_a_waiting_caller() {
    let cache: Cache<&str, u32> = Cache::new(100);
    let started = Arc::new(tokio::sync::Notify::new());
    let leading = {
        let (cache, started) = (cache.clone(), Arc::clone(&started));
        tokio::spawn(async move {
            cache
                .get_with_async("k", async move {
                    started.notify_one();
                    std::future::pending::<u32>().await // a load that never ends
                })
                .await
        })
    };
    started.notified().await;
    let waiting = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_with_async("k", async { 11 }).await })
    };
    while cache.load_waiters() == 0 {
        tokio::task::yield_now().await;
    }
    leading.abort(); // e.g. the request timed out: its future is dropped mid-load
    assert!(leading.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(waiting.await.ok(), Some(11), "the waiter took over with its own future");
    assert_eq!(cache.get(&"k"), Some(11));
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_caller_shares_an_async_callers_load() {
    let cache: Cache<&str, u32> = Cache::new(100);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let leading = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with_async("k", async move {
                    let _ = released.await;
                    21
                })
                .await
        })
    };
    while cache.loads_in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    let blocking = {
        let cache = cache.clone();
        tokio::task::spawn_blocking(move || cache.get_with("k", || 0))
    };
    while cache.load_waiters() == 0 {
        tokio::task::yield_now().await;
    }
    let _ = release.send(());
    assert_eq!(leading.await.ok(), Some(21));
    assert_eq!(blocking.await.ok(), Some(21), "the blocking caller waited for the async load");
}
