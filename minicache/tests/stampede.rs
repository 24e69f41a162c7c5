//! Cache stampedes: 1,000 concurrent loading reads of one cold key give exactly one load.
//!
//! Each scenario runs 1,000 OS threads (`get_with`, `try_get_with`) or 1,000 tokio tasks
//! on a two-worker runtime (`get_with_async`, `try_get_with_async`), and three loaders:
//! one that succeeds, one that returns an error, one that panics.
//!
//! To make "exactly one" a property of the code and not of the machine's timing, the
//! loader does not return until the other 999 callers are asleep on its flight
//! (`Cache::load_waiters`): every one of them has missed, found the load running, and is
//! waiting for it, so a second load would have to come from a broken single-flight, never
//! from a caller that simply arrived late. (One success scenario does not wait, and relies
//! on the leader's last look before loading instead.) A deadline turns a broken wait into
//! a failure instead of a hang.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Once};
use std::time::{Duration, Instant};

use minicache::{Cache, LoadError};

const CALLERS: usize = 1_000;
const KEY: u64 = 7;
const VALUE: u64 = 42;
/// Long enough for 1,000 threads to start on a busy two-core machine; a correct run takes
/// well under a second.
const DEADLINE: Duration = Duration::from_secs(8);
/// The message of the panics these tests cause on purpose.
const DELIBERATE_PANIC: &str = "deliberate loader panic (tests/stampede.rs)";

#[derive(Debug, PartialEq)]
struct DbDown;

/// 1,000 panics printed with backtraces would bury any real failure: drop the deliberate
/// ones (`get_with`'s followers repeat the leader's message in theirs).
fn quiet_deliberate_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned());
            if message.is_some_and(|m| m.contains(DELIBERATE_PANIC)) {
                return;
            }
            default_hook(info)
        }));
    });
}

fn cache() -> Cache<u64, u64> {
    Cache::builder().max_capacity(10_000).build()
}

/// The loader's body: count the run and wait until every other caller waits on it. A wait
/// that runs out is counted in `timed_out` (checked by the test, after the stampede).
fn gather_then(cache: &Cache<u64, u64>, loads: &AtomicUsize, timed_out: &AtomicUsize) {
    loads.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + DEADLINE;
    while cache.load_waiters() < CALLERS - 1 {
        if Instant::now() > deadline {
            timed_out.fetch_add(1, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How the panicking loaders end.
fn deliberate_panic<T>() -> T {
    panic::panic_any(DELIBERATE_PANIC)
}

/// Runs `call` on `CALLERS` threads released together; returns each thread's result
/// (`Err` for a thread whose call panicked, with the panic's message).
fn on_threads<T: Send>(call: impl Fn() -> T + Sync) -> Vec<Result<T, String>> {
    quiet_deliberate_panics();
    let start = Barrier::new(CALLERS);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CALLERS)
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, || {
                        start.wait();
                        panic::catch_unwind(AssertUnwindSafe(&call)).map_err(|payload| {
                            payload
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| payload.downcast_ref::<String>().cloned())
                                .unwrap_or_default()
                        })
                    })
                    .expect("spawn a stampede thread")
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("the callers catch their panics")).collect()
    })
}

#[test]
fn threads_get_with_on_a_cold_key_load_once() {
    let cache = cache();
    let (loads, timed_out) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let results = on_threads(|| {
        cache.get_with(KEY, || {
            gather_then(&cache, &loads, &timed_out);
            VALUE
        })
    });
    assert_eq!(timed_out.load(Ordering::SeqCst), 0, "the other callers never all waited on the load");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(results.iter().all(|r| r == &Ok(VALUE)), "every caller gets the loaded value");
    let stats = cache.stats();
    assert_eq!((stats.load_successes, stats.load_failures), (1, 0));
    assert_eq!(cache.loads_in_flight(), 0);
}

#[test]
fn threads_get_with_load_once_even_when_the_load_is_instant() {
    // No gathering: callers that miss after the leader finished must find its value in the
    // leader's last look (or their own), not load again.
    let cache = cache();
    let loads = AtomicUsize::new(0);
    let results = on_threads(|| {
        cache.get_with(KEY, || {
            loads.fetch_add(1, Ordering::SeqCst);
            VALUE
        })
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(results.iter().all(|r| r == &Ok(VALUE)));
}

#[test]
fn threads_try_get_with_and_a_failing_loader_share_one_error() {
    let cache = cache();
    let (loads, timed_out) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let results = on_threads(|| {
        cache.try_get_with(KEY, || {
            gather_then(&cache, &loads, &timed_out);
            Err::<u64, _>(DbDown)
        })
    });
    assert_eq!(timed_out.load(Ordering::SeqCst), 0, "the other callers never all waited on the load");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let errors: Vec<Arc<DbDown>> = results
        .into_iter()
        .map(|r| match r {
            Ok(Err(LoadError::Failed(error))) => error,
            other => panic!("every caller gets the loader's error, got {other:?}"),
        })
        .collect();
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])), "one error, shared, not 1,000 copies");
    assert_eq!(cache.stats().load_failures, 1);
    // Not cached: the next call loads.
    assert_eq!(cache.try_get_with(KEY, || Ok::<_, DbDown>(1)).ok(), Some(1));
}

#[test]
fn threads_and_a_panicking_loader_all_learn_of_the_panic_and_none_hangs() {
    let cache = cache();
    let (loads, timed_out) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let results = on_threads(|| {
        cache.try_get_with(KEY, || {
            gather_then(&cache, &loads, &timed_out);
            deliberate_panic::<Result<u64, DbDown>>()
        })
    });
    assert_eq!(timed_out.load(Ordering::SeqCst), 0, "the other callers never all waited on the load");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let resumed = results.iter().filter(|r| r.as_ref().err().is_some_and(|m| m == DELIBERATE_PANIC)).count();
    let told = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(LoadError::Panicked { message })) if message == DELIBERATE_PANIC))
        .count();
    assert_eq!((resumed, told), (1, CALLERS - 1), "the leader gets its panic back, the rest LoadError::Panicked");
    assert_eq!(cache.loads_in_flight(), 0);
    assert_eq!(cache.get_with(KEY, || 5), 5, "nothing was cached: the next call loads");
}

#[test]
fn threads_get_with_and_a_panicking_loader_all_panic() {
    let cache = cache();
    let (loads, timed_out) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let results = on_threads(|| {
        cache.get_with(KEY, || {
            gather_then(&cache, &loads, &timed_out);
            deliberate_panic::<u64>()
        })
    });
    assert_eq!(timed_out.load(Ordering::SeqCst), 0, "the other callers never all waited on the load");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let resumed = results.iter().filter(|r| r.as_ref().err().is_some_and(|m| m == DELIBERATE_PANIC)).count();
    let followed = results
        .iter()
        .filter(|r| {
            r.as_ref().err().is_some_and(|m| m.contains("panicked in another caller") && m.contains(DELIBERATE_PANIC))
        })
        .count();
    assert_eq!((resumed, followed), (1, CALLERS - 1), "get_with has no error to return, so every caller panics");
}

// -- tokio tasks --

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

/// The async loader's body: as `gather_then`, without blocking a worker.
async fn gather_then_async(cache: &Cache<u64, u64>, loads: &AtomicUsize, timed_out: &AtomicUsize) {
    loads.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + DEADLINE;
    while cache.load_waiters() < CALLERS - 1 {
        if Instant::now() > deadline {
            timed_out.fetch_add(1, Ordering::SeqCst);
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Spawns `CALLERS` tasks running `call` and returns their results (`Err` for a task that
/// panicked).
fn on_tasks<T, Fut>(call: impl Fn() -> Fut) -> Vec<Result<T, tokio::task::JoinError>>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    quiet_deliberate_panics();
    let runtime = runtime();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..CALLERS).map(|_| tokio::spawn(call())).collect();
        let mut results = Vec::with_capacity(CALLERS);
        for task in tasks {
            results.push(task.await);
        }
        results
    })
}

type Shared = (Cache<u64, u64>, Arc<AtomicUsize>, Arc<AtomicUsize>);

fn shared() -> Shared {
    (cache(), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)))
}

#[test]
fn tasks_get_with_async_on_a_cold_key_load_once() {
    let (cache, loads, timed_out) = shared();
    let results = on_tasks(|| {
        let (cache, loads, timed_out) = (cache.clone(), Arc::clone(&loads), Arc::clone(&timed_out));
        async move {
            cache
                .get_with_async(KEY, async {
                    gather_then_async(&cache, &loads, &timed_out).await;
                    VALUE
                })
                .await
        }
    });
    assert_eq!(timed_out.load(Ordering::SeqCst), 0, "the other tasks never all waited on the load");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(results.iter().all(|r| r.as_ref().ok() == Some(&VALUE)), "every task gets the loaded value");
}

#[test]
fn tasks_try_get_with_async_and_a_failing_loader_share_one_error() {
    let (cache, loads, timed_out) = shared();
    let results = on_tasks(|| {
        let (cache, loads, timed_out) = (cache.clone(), Arc::clone(&loads), Arc::clone(&timed_out));
        async move {
            cache
                .try_get_with_async(KEY, async {
                    gather_then_async(&cache, &loads, &timed_out).await;
                    Err::<u64, _>(DbDown)
                })
                .await
        }
    });
    assert_eq!(timed_out.load(Ordering::SeqCst), 0, "the other tasks never all waited on the load");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let errors: Vec<Arc<DbDown>> = results
        .into_iter()
        .map(|r| match r {
            Ok(Err(LoadError::Failed(error))) => error,
            other => panic!("every task gets the loader's error, got {other:?}"),
        })
        .collect();
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])));
}

#[test]
fn tasks_and_a_panicking_async_loader_all_learn_of_the_panic() {
    let (cache, loads, timed_out) = shared();
    let results = on_tasks(|| {
        let (cache, loads, timed_out) = (cache.clone(), Arc::clone(&loads), Arc::clone(&timed_out));
        async move {
            cache
                .try_get_with_async(KEY, async {
                    gather_then_async(&cache, &loads, &timed_out).await;
                    deliberate_panic::<Result<u64, DbDown>>()
                })
                .await
        }
    });
    assert_eq!(timed_out.load(Ordering::SeqCst), 0, "the other tasks never all waited on the load");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let resumed = results.iter().filter(|r| r.as_ref().is_err_and(|e| e.is_panic())).count();
    let told = results.iter().filter(|r| matches!(r, Ok(Err(LoadError::Panicked { .. })))).count();
    assert_eq!((resumed, told), (1, CALLERS - 1), "the leading task panics, the rest get LoadError::Panicked");
    assert_eq!(cache.loads_in_flight(), 0);
}

#[test]
fn tasks_get_with_async_and_a_panicking_loader_all_panic() {
    let (cache, loads, timed_out) = shared();
    let results = on_tasks(|| {
        let (cache, loads, timed_out) = (cache.clone(), Arc::clone(&loads), Arc::clone(&timed_out));
        async move {
            cache
                .get_with_async(KEY, async {
                    gather_then_async(&cache, &loads, &timed_out).await;
                    deliberate_panic::<u64>()
                })
                .await
        }
    });
    assert_eq!(timed_out.load(Ordering::SeqCst), 0, "the other tasks never all waited on the load");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(results.iter().all(|r| r.as_ref().is_err_and(|e| e.is_panic())), "every task panics");
}
