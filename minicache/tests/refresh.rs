//! Stale-while-revalidate and refresh-ahead, on a `MockClock`.
//!
//! Time only moves when a test says so, so "expired", "inside the grace window" and
//! "older than refresh_after" are exact. Refresh loaders block on a gate the test opens,
//! which holds a refresh open while the test reads: that is how "others keep getting the
//! stale value and no second refresh starts" is observed rather than hoped for.
//!
//! With a refresh loader the refresh runs in the background (a `minicache-refresh` thread
//! outside tokio, `spawn_blocking` or a task inside); without one, in the reader that
//! found the entry stale. Both are covered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minicache::{BoxError, Cache, MockClock, REFRESH_THREAD_NAME};

const TTL: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(5);
const KEY: &str = "user:1";
/// How long a test waits for a background refresh to end before failing.
const PATIENCE: Duration = Duration::from_secs(5);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Waits until `done()` holds; fails the test with `what` after `PATIENCE`.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A refresh loader that counts its runs, reports the thread it ran on, and returns the
/// next value in sequence once the test opens its gate.
#[derive(Clone)]
struct GatedLoader {
    runs: Arc<AtomicUsize>,
    threads: Arc<Mutex<Vec<String>>>,
    gate: Arc<Mutex<mpsc::Receiver<Result<u32, String>>>>,
}

impl GatedLoader {
    /// The loader, and the sender that opens its gate (one message per run).
    fn new() -> (GatedLoader, mpsc::Sender<Result<u32, String>>) {
        let (open, gate) = mpsc::channel();
        let loader = GatedLoader {
            runs: Arc::new(AtomicUsize::new(0)),
            threads: Arc::new(Mutex::new(Vec::new())),
            gate: Arc::new(Mutex::new(gate)),
        };
        (loader, open)
    }

    fn load(&self) -> Result<u32, String> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let name = std::thread::current().name().unwrap_or("").to_string();
        self.threads.lock().expect("threads lock").push(name);
        let gate = self.gate.lock().expect("gate lock");
        gate.recv_timeout(PATIENCE).unwrap_or_else(|_| Err("the test never opened the gate".to_string()))
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

fn swr_cache(clock: &MockClock, loader: &GatedLoader) -> Cache<&'static str, u32> {
    let loader = loader.clone();
    Cache::builder()
        .max_capacity(100)
        .time_to_live(TTL)
        .stale_while_revalidate(GRACE)
        .clock(Arc::new(clock.clone()))
        .refresh_loader(move |_key: &&str| loader.load())
        .build()
}

/// An `init` for reads that must be served from the cache.
fn must_not_load() -> u32 {
    panic!("this read must be served from the cache, not load")
}

#[test]
fn inside_the_grace_window_a_stale_entry_is_served_while_one_background_refresh_runs() {
    let clock = MockClock::new();
    let (loader, open_gate) = GatedLoader::new();
    let cache = swr_cache(&clock, &loader);
    assert_eq!(cache.get_with(KEY, || 1), 1);

    clock.advance(TTL + secs(2)); // expired 2 s ago, 3 s of grace left
    assert_eq!(cache.get(&KEY), None, "plain get never returns a stale entry");
    for _ in 0..10 {
        assert_eq!(cache.get_with(KEY, must_not_load), 1, "stale, served at once");
    }
    // Readers on other threads while the refresh is held open: same answer, no new refresh.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| assert_eq!(cache.get_with(KEY, must_not_load), 1));
        }
    });
    eventually("the refresh started", || loader.runs() == 1);
    assert_eq!(loader.runs(), 1, "exactly one refresh for the whole crowd");
    assert_eq!(cache.loads_in_flight(), 1);

    open_gate.send(Ok(2)).expect("the refresh is waiting");
    eventually("the refresh finished", || cache.loads_in_flight() == 0);
    assert_eq!(cache.get_with(KEY, must_not_load), 2, "the refreshed value, fresh again");
    assert_eq!(cache.get(&KEY), Some(2));
    assert_eq!(loader.runs(), 1);
    assert_eq!(loader.threads.lock().expect("threads").as_slice(), [REFRESH_THREAD_NAME]);
    let stats = cache.stats();
    assert_eq!((stats.load_successes, stats.load_failures), (2, 0), "the first load and the refresh");
}

#[test]
fn past_the_grace_window_the_caller_loads() {
    let clock = MockClock::new();
    let (loader, _gate) = GatedLoader::new();
    let cache = swr_cache(&clock, &loader);
    assert_eq!(cache.get_with(KEY, || 1), 1);
    clock.advance(TTL + GRACE + secs(1));
    let loads = AtomicUsize::new(0);
    let value = cache.get_with(KEY, || {
        loads.fetch_add(1, Ordering::SeqCst);
        3
    });
    assert_eq!((value, loads.load(Ordering::SeqCst)), (3, 1), "gone for good: the caller's own init runs");
    assert_eq!(loader.runs(), 0, "no refresh: nothing was stale, it was missing");
}

#[test]
fn a_failed_background_refresh_keeps_the_stale_value_until_the_window_ends() {
    let clock = MockClock::new();
    let (loader, open_gate) = GatedLoader::new();
    let cache = swr_cache(&clock, &loader);
    assert_eq!(cache.get_with(KEY, || 1), 1);
    clock.advance(TTL + secs(1));
    assert_eq!(cache.get_with(KEY, must_not_load), 1);
    open_gate.send(Err("db down".to_string())).expect("the refresh is waiting");
    eventually("the refresh failed", || cache.stats().load_failures == 1);
    eventually("the flight ended", || cache.loads_in_flight() == 0);
    assert_eq!(cache.get_with(KEY, must_not_load), 1, "still the stale value");
    eventually("a second refresh started", || loader.runs() == 2); // the failed one does not block retries
    open_gate.send(Ok(4)).expect("the second refresh is waiting");
    eventually("the second refresh finished", || cache.stats().load_successes == 2);
    eventually("the flight ended", || cache.loads_in_flight() == 0);
    assert_eq!(cache.get_with(KEY, must_not_load), 4);
}

#[test]
fn without_a_refresh_loader_the_reader_that_finds_it_stale_revalidates_and_others_get_stale() {
    let clock = MockClock::new();
    let cache: Cache<&str, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_live(TTL)
        .stale_while_revalidate(GRACE)
        .clock(Arc::new(clock.clone()))
        .build();
    assert_eq!(cache.get_with(KEY, || 1), 1);
    clock.advance(TTL + secs(1));

    let (open_gate, gate) = mpsc::channel::<u32>();
    let revalidations = AtomicUsize::new(0);
    let (cache, revalidations) = (&cache, &revalidations);
    std::thread::scope(|scope| {
        let revalidating = scope.spawn(move || {
            cache.get_with(KEY, || {
                revalidations.fetch_add(1, Ordering::SeqCst);
                gate.recv_timeout(PATIENCE).unwrap_or(0)
            })
        });
        eventually("the revalidation started", || cache.loads_in_flight() == 1);
        for _ in 0..10 {
            assert_eq!(cache.get_with(KEY, must_not_load), 1, "stale while another reader revalidates");
        }
        open_gate.send(2).expect("the revalidation is waiting");
        assert_eq!(revalidating.join().ok(), Some(2), "the revalidating reader gets the new value");
    });
    assert_eq!(revalidations.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get_with(KEY, must_not_load), 2);
}

#[test]
fn a_failed_foreground_revalidation_serves_the_stale_value() {
    let clock = MockClock::new();
    let cache: Cache<&str, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_live(TTL)
        .stale_while_revalidate(GRACE)
        .clock(Arc::new(clock.clone()))
        .build();
    assert_eq!(cache.get_with(KEY, || 1), 1);
    clock.advance(TTL + secs(1));
    let result = cache.try_get_with(KEY, || Err::<u32, _>("db down"));
    assert_eq!(result.ok(), Some(1), "a revalidation that fails still has the stale value to give");
    assert_eq!(cache.stats().load_failures, 1);
}

#[test]
fn refresh_ahead_refreshes_an_old_entry_once_and_serves_it_meanwhile() {
    let clock = MockClock::new();
    let (loader, open_gate) = GatedLoader::new();
    let refresher = loader.clone();
    let cache: Cache<&str, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_live(secs(60))
        .refresh_after(secs(5))
        .clock(Arc::new(clock.clone()))
        .refresh_loader(move |_key: &&str| refresher.load())
        .build();
    assert_eq!(cache.get_with(KEY, || 1), 1);

    clock.advance(secs(4));
    assert_eq!(cache.get_with(KEY, must_not_load), 1);
    assert_eq!(loader.runs(), 0, "younger than refresh_after: no refresh");

    clock.advance(secs(2)); // 6 s old
    for _ in 0..10 {
        assert_eq!(cache.get_with(KEY, must_not_load), 1, "served while the refresh runs");
    }
    eventually("the refresh started", || loader.runs() == 1);
    open_gate.send(Ok(2)).expect("the refresh is waiting");
    eventually("the refresh finished", || cache.loads_in_flight() == 0);
    for _ in 0..10 {
        assert_eq!(cache.get_with(KEY, must_not_load), 2);
    }
    assert_eq!(loader.runs(), 1, "refreshed once; the new entry is young again");

    clock.advance(secs(6)); // the refreshed entry is now old in turn
    assert_eq!(cache.get_with(KEY, must_not_load), 2);
    eventually("the second refresh started", || loader.runs() == 2);
    open_gate.send(Ok(3)).expect("the refresh is waiting");
    eventually("the second refresh finished", || cache.loads_in_flight() == 0);
    assert_eq!(cache.get_with(KEY, must_not_load), 3);
}

#[test]
fn refresh_ahead_without_a_loader_reloads_in_the_first_old_read() {
    let clock = MockClock::new();
    let cache: Cache<&str, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_live(secs(60))
        .refresh_after(secs(5))
        .clock(Arc::new(clock.clone()))
        .build();
    assert_eq!(cache.get_with(KEY, || 1), 1);
    clock.advance(secs(6));
    assert_eq!(cache.get_with(KEY, || 2), 2, "the old entry's reader reloads it itself");
    assert_eq!(cache.get_with(KEY, must_not_load), 2, "and the reload is young");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_tokio_a_blocking_refresh_loader_runs_on_the_blocking_pool() {
    let clock = MockClock::new();
    let (loader, open_gate) = GatedLoader::new();
    let cache = swr_cache(&clock, &loader);
    assert_eq!(cache.get_with_async(KEY, async { 1 }).await, 1);
    clock.advance(TTL + secs(1));
    assert_eq!(cache.get_with_async(KEY, async { must_not_load() }).await, 1);
    open_gate.send(Ok(2)).expect("the refresh is waiting");
    while cache.loads_in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(cache.get_with_async(KEY, async { must_not_load() }).await, 2);
    let threads = loader.threads.lock().expect("threads").clone();
    assert_eq!(threads.len(), 1);
    assert_ne!(threads[0], REFRESH_THREAD_NAME, "inside a runtime the refresh uses tokio's blocking pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_refresh_loader_runs_as_a_task_inside_tokio() {
    let clock = MockClock::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    // The refresh waits for this gate, so it cannot finish (on the other worker thread)
    // while the five stale reads below are still being made: each must see the stale
    // value and none may start a second refresh.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let waiting = Arc::clone(&gate);
    let cache: Cache<&str, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_live(TTL)
        .stale_while_revalidate(GRACE)
        .clock(Arc::new(clock.clone()))
        .async_refresh_loader(move |_key: &str| {
            let counted = Arc::clone(&counted);
            let gate = Arc::clone(&waiting);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let _permit = gate.acquire().await.map_err(|e| Box::new(e) as BoxError)?;
                Ok::<u32, BoxError>(2)
            }
        })
        .build();
    assert_eq!(cache.get_with_async(KEY, async { 1 }).await, 1);
    clock.advance(TTL + secs(1));
    for _ in 0..5 {
        assert_eq!(cache.get_with_async(KEY, async { must_not_load() }).await, 1);
    }
    gate.add_permits(1);
    while cache.loads_in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(cache.get_with_async(KEY, async { must_not_load() }).await, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn an_async_refresh_loader_outside_tokio_gets_a_thread_and_a_runtime() {
    let clock = MockClock::new();
    let cache: Cache<&str, u32> = Cache::builder()
        .max_capacity(100)
        .time_to_live(TTL)
        .stale_while_revalidate(GRACE)
        .clock(Arc::new(clock.clone()))
        .async_refresh_loader(|_key: &str| async {
            tokio::time::sleep(Duration::from_millis(1)).await; // needs a runtime with time
            let thread = std::thread::current().name().map(str::to_string);
            match thread.as_deref() {
                Some(REFRESH_THREAD_NAME) => Ok(2),
                other => Err(format!("the refresh ran on thread {other:?}")),
            }
        })
        .build();
    assert_eq!(cache.get_with(KEY, || 1), 1);
    clock.advance(TTL + secs(1));
    assert_eq!(cache.get_with(KEY, must_not_load), 1);
    eventually("the refresh finished", || cache.loads_in_flight() == 0);
    assert_eq!(cache.get_with(KEY, must_not_load), 2, "refreshed on a minicache-refresh thread");
}
