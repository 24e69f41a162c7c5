//! The single-flight protocol under shuttle's randomized scheduler.
//!
//! Built only with `--features shuttle` (then `minicache`'s `sync.rs` takes its Mutex and
//! Condvar from shuttle, so every lock acquisition and wait in `flight.rs` is a point where
//! shuttle may switch threads; it reports a deadlock when every thread is blocked):
//!
//! ```text
//! cargo test -p minicache --features shuttle --test shuttle
//! ```
//!
//! Each test runs a small stampede — a few callers asking for one key — hundreds of times
//! under different random interleavings. The callers use the flight the way the cache
//! does: look in a shared slot (the "cache"), and on a miss `run` a load that looks in the
//! slot again before loading and stores its value there before publishing. A failure
//! prints the schedule that replays it (`shuttle::replay`).
//!
//! The last two tests run the same checks on deliberately broken protocols
//! ([`Fault::CheckThenInsert`], [`Fault::NoWakeOnPanic`]) and require shuttle to catch them,
//! which shows these checks can fail.
#![cfg(feature = "shuttle")]

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use minicache::{Fault, LoadError, SingleFlight};
use shuttle::sync::Mutex;
use shuttle::thread;

/// Random schedules explored per test. The broken variants below are caught within the
/// first few dozen; 500 keeps each test under a second in a debug build.
const ITERATIONS: usize = 500;
/// Concurrent callers per stampede: enough for a leader plus several followers, few enough
/// that shuttle's random walks cover the interesting orders.
const CALLERS: usize = 4;
/// The payload of the panics the tests cause on purpose.
const DELIBERATE_PANIC: &str = "deliberate loader panic (tests/shuttle.rs)";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Loader {
    Succeeds,
    Fails,
    Panics,
}

/// What each caller saw.
#[derive(Debug)]
enum Outcome {
    Value(u32),
    Failed(String),
    /// Got `LoadError::Panicked` (a follower of the panicking load).
    SawPanic,
    /// The loader panicked in this caller and the panic was resumed here.
    Panicked,
}

/// Shuttle's panic hook prints a schedule for every panic, even one the test catches; keep
/// the deliberate loader panics out of the output (every other panic still reports).
fn quiet_deliberate_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        shuttle::check_random(|| {}, 1); // installs shuttle's hook, which we then wrap
        let shuttle_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() == Some(&DELIBERATE_PANIC) {
                return;
            }
            shuttle_hook(info)
        }));
    });
}

/// One stampede: `CALLERS` threads want key 7 at once. Returns the number of loader runs,
/// the highest number running at the same moment, and each caller's outcome.
fn stampede(fault: Fault, loader: Loader) -> (usize, usize, Vec<Outcome>) {
    let flight: SingleFlight<u32, u32, String> = SingleFlight::with_fault(fault);
    let slot: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
    let loads = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let most_running = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (flight, slot) = (flight.clone(), Arc::clone(&slot));
            let (loads, running, most_running) = (Arc::clone(&loads), Arc::clone(&running), Arc::clone(&most_running));
            thread::spawn(move || {
                if let Some(value) = *slot.lock().expect("the slot's lock") {
                    return Outcome::Value(value);
                }
                let load = || {
                    if let Some(value) = *slot.lock().expect("the slot's lock") {
                        return Ok(value); // a load that finished just before we led
                    }
                    loads.fetch_add(1, Ordering::SeqCst);
                    let now_running = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most_running.fetch_max(now_running, Ordering::SeqCst);
                    thread::yield_now(); // the load takes a while: let followers arrive
                    running.fetch_sub(1, Ordering::SeqCst);
                    match loader {
                        Loader::Succeeds => {
                            *slot.lock().expect("the slot's lock") = Some(42);
                            Ok(42)
                        }
                        Loader::Fails => Err("db down".to_string()),
                        Loader::Panics => panic::panic_any(DELIBERATE_PANIC),
                    }
                };
                match panic::catch_unwind(AssertUnwindSafe(|| flight.run(7, load))) {
                    Ok(Ok(value)) => Outcome::Value(value),
                    Ok(Err(LoadError::Failed(error))) => Outcome::Failed(error.to_string()),
                    Ok(Err(LoadError::Panicked { .. })) => Outcome::SawPanic,
                    Err(_) => Outcome::Panicked,
                }
            })
        })
        .collect();
    let outcomes: Vec<Outcome> =
        callers.into_iter().map(|caller| caller.join().expect("callers catch panics")).collect();
    assert_eq!(flight.in_flight(), 0, "every flight is cleaned up once its callers return");
    (loads.load(Ordering::SeqCst), most_running.load(Ordering::SeqCst), outcomes)
}

fn check_success(fault: Fault) {
    let (loads, _, outcomes) = stampede(fault, Loader::Succeeds);
    assert_eq!(loads, 1, "a cold key under a stampede is loaded exactly once: {outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Value(42))), "every caller gets the value: {outcomes:?}");
}

fn check_panic(fault: Fault) {
    let (loads, most_running, outcomes) = stampede(fault, Loader::Panics);
    assert_eq!(most_running, 1, "two loads of one key never run at once");
    assert!(loads >= 1);
    // A caller that arrives after a failed flight ended leads a new one (nothing was
    // cached), so each load has one caller that panicked and any number that saw it.
    let panicked = outcomes.iter().filter(|o| matches!(o, Outcome::Panicked)).count();
    assert_eq!(panicked, loads, "the panic is resumed in exactly the caller that ran the loader: {outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Panicked | Outcome::SawPanic)), "{outcomes:?}");
}

#[test]
fn a_stampede_on_a_cold_key_runs_one_load_and_everyone_gets_its_value() {
    shuttle::check_random(|| check_success(Fault::None), ITERATIONS);
}

#[test]
fn a_failing_load_gives_every_waiter_the_error() {
    shuttle::check_random(
        || {
            let (loads, most_running, outcomes) = stampede(Fault::None, Loader::Fails);
            assert_eq!(most_running, 1, "two loads of one key never run at once");
            assert!((1..=CALLERS).contains(&loads));
            assert!(
                outcomes.iter().all(|o| matches!(o, Outcome::Failed(e) if e == "db down")),
                "every caller gets the loader's error: {outcomes:?}"
            );
        },
        ITERATIONS,
    );
}

#[test]
fn a_panicking_load_wakes_every_waiter_with_the_panic_and_none_hangs() {
    quiet_deliberate_panics();
    shuttle::check_random(|| check_panic(Fault::None), ITERATIONS);
}

#[test]
fn a_leader_dropped_unpublished_hands_over_to_a_follower() {
    shuttle::check_random(
        || {
            let flight: SingleFlight<u32, u32, String> = SingleFlight::new();
            let minicache::Claim::Leader(leader) = flight.claim(1) else { panic!("the first claim leads") };
            let followers: Vec<_> = (0..2)
                .map(|i| {
                    let flight = flight.clone();
                    thread::spawn(move || flight.run(1, || Ok(100 + i)))
                })
                .collect();
            thread::spawn(move || drop(leader));
            let values: Vec<u32> = followers
                .into_iter()
                .map(|f| f.join().expect("no panic").map_err(|e| e.to_string()).expect("a value"))
                .collect();
            // One follower took over; the other either followed it (same value) or came after
            // it finished and loaded its own: both values come from some follower's loader.
            assert!(values.iter().all(|v| [100, 101].contains(v)), "{values:?}");
            assert_eq!(flight.in_flight(), 0);
        },
        ITERATIONS,
    );
}

/// Runs `check` under shuttle and returns the message of the failure shuttle found, if any.
fn failure_shuttle_finds(check: fn()) -> Option<String> {
    quiet_deliberate_panics();
    let payload = panic::catch_unwind(|| shuttle::check_random(check, ITERATIONS)).err()?;
    let message =
        payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
    Some(message.unwrap_or_else(|| "a panic with a non-string payload".to_string()))
}

#[test]
fn a_check_then_insert_race_is_caught() {
    let failure = failure_shuttle_finds(|| check_success(Fault::CheckThenInsert));
    let failure = failure.expect("shuttle must find the schedule where two callers both see no flight and both load");
    assert!(failure.contains("loaded exactly once"), "caught, but for another reason: {failure}");
}

#[test]
fn a_leader_that_does_not_wake_its_waiters_on_panic_is_caught() {
    let failure = failure_shuttle_finds(|| check_panic(Fault::NoWakeOnPanic));
    let failure = failure.expect("shuttle must report the followers left asleep as a deadlock");
    assert!(failure.contains("deadlock"), "caught, but for another reason: {failure}");
}
