//! The circuit-breaker exercise over HTTP on loopback: the breaker's transitions as a
//! client sees them (and as the upstream's request count proves them), the bulkhead's
//! limit counted at the upstream, the jitter formulas' bounds, the retry budget's cap
//! (and the same check failing without the budget), and the demo at quick scale.
//!
//! No backend is involved, so there is no real-server comparison to make here.

use std::sync::Arc;
use std::time::Duration;

use exercises::framework::{self, DemoOptions, Scale};
use exercises::resilience::backoff::{decorrelated_jitter, exponential, full_jitter, Backoff, Jitter};
use exercises::resilience::breaker::{BreakerConfig, State};
use exercises::resilience::client::{BulkheadConfig, CallError, Protection, ResilientClient, RetryPolicy};
use exercises::resilience::retry_budget::{RetryBudget, RetryBudgetConfig, SLOTS};
use exercises::resilience::upstream::{Faults, FlakyUpstream};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn no_retries() -> RetryPolicy {
    RetryPolicy { max_attempts: 1, backoff: Backoff { base: MS, cap: MS, jitter: Jitter::Full } }
}

fn bare(retry: RetryPolicy) -> Protection {
    Protection { attempt_timeout: Duration::from_secs(5), retry, budget: None, breaker: None, bulkhead: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_rejects_without_calling_probes_and_closes_or_reopens() {
    let upstream = FlakyUpstream::start(1).await.expect("upstream starts");
    let breaker = BreakerConfig {
        consecutive_failures: 3,
        failure_rate: 2.0, // the rate rule off: this test is about the run of failures
        window: 10,
        min_calls: 10,
        open_timeout: Duration::from_millis(300),
        half_open_max_probes: 1,
        success_threshold: 2,
    };
    let client = ResilientClient::new(upstream.url(), Protection { breaker: Some(breaker), ..bare(no_retries()) }, 1);
    let state = || client.breaker().expect("has a breaker").state();

    // Closed → open after the threshold.
    upstream.set_faults(Faults::FAILING);
    for i in 0..3 {
        assert_eq!(state(), State::Closed, "opened after {i} failures");
        assert_eq!(client.call().await.result, Err(CallError::Status(503)));
    }
    assert_eq!(state(), State::Open);

    // Open rejects without calling the upstream.
    let before = upstream.requests();
    for _ in 0..5 {
        let report = client.call().await;
        assert!(matches!(report.result, Err(CallError::BreakerOpen(_))), "{report:?}");
        assert_eq!(report.attempts_sent, 0);
    }
    assert_eq!(upstream.requests(), before, "an open breaker sent requests");

    // Half-open after the timeout: a failed probe reopens it, and only the probe went out.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(client.call().await.result, Err(CallError::Status(503)));
    assert_eq!(state(), State::Open, "a failed probe reopens the breaker");
    assert_eq!(upstream.requests(), before + 1);

    // Once the upstream is back: probes, then closed after the success threshold.
    upstream.set_faults(Faults::HEALTHY);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(client.call().await.result, Ok(200));
    assert_eq!(state(), State::HalfOpen, "one success is below the threshold of 2");
    assert_eq!(client.call().await.result, Ok(200));
    assert_eq!(state(), State::Closed);

    let stats = client.breaker().expect("breaker").stats();
    let path: Vec<(State, State)> = stats.transitions.iter().map(|t| (t.from, t.to)).collect();
    use State::*;
    assert_eq!(path, vec![(Closed, Open), (Open, HalfOpen), (HalfOpen, Open), (Open, HalfOpen), (HalfOpen, Closed)]);
    assert_eq!((stats.opened, stats.closed, stats.rejected), (2, 1, 5));
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_lets_through_no_more_probes_than_its_limit() {
    let upstream = FlakyUpstream::start(2).await.expect("upstream starts");
    let breaker = BreakerConfig {
        consecutive_failures: 1,
        open_timeout: Duration::from_millis(100),
        half_open_max_probes: 2,
        success_threshold: 50,
        ..BreakerConfig::default()
    };
    let client =
        Arc::new(ResilientClient::new(upstream.url(), Protection { breaker: Some(breaker), ..bare(no_retries()) }, 2));
    upstream.set_faults(Faults::FAILING);
    let _ = client.call().await;
    assert_eq!(client.breaker().expect("breaker").state(), State::Open);
    upstream.set_faults(Faults::slow(Duration::from_millis(200)));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = upstream.requests();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn({
                let client = client.clone();
                async move { client.call().await }
            })
        })
        .collect();
    let mut sent = 0;
    for call in calls {
        sent += call.await.expect("joins").attempts_sent;
    }
    assert_eq!(sent, 2, "20 concurrent calls on a half-open breaker: only its 2 probe slots went out");
    assert_eq!(upstream.requests() - before, 2);
    assert!(upstream.max_in_flight() <= 2);
    assert_eq!(client.breaker().expect("breaker").stats().max_probes_in_flight, 2);
    upstream.stop().await;
}

/// `calls` concurrent calls through `protection` to an upstream that takes 50 ms; the
/// most requests the upstream saw at once.
async fn concurrent_calls_at_the_upstream(protection: Protection, calls: usize) -> (usize, usize) {
    let upstream = FlakyUpstream::start(3).await.expect("upstream starts");
    upstream.set_faults(Faults::slow(Duration::from_millis(50)));
    let client = Arc::new(ResilientClient::new(upstream.url(), protection, 3));
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call().await })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        succeeded += usize::from(task.await.expect("joins").result.is_ok());
    }
    let seen = upstream.max_in_flight();
    upstream.stop().await;
    (seen, succeeded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulkhead_limit_is_never_exceeded_at_the_upstream() {
    let limit = 4;
    // Rejecting at once: most of 40 simultaneous calls are shed, none over the limit.
    let shedding = Protection {
        bulkhead: Some(BulkheadConfig { max_concurrent: limit, max_wait: Duration::ZERO }),
        ..bare(no_retries())
    };
    let (seen, succeeded) = concurrent_calls_at_the_upstream(shedding, 40).await;
    assert!(seen <= limit, "{seen} requests in the upstream at once, bulkhead {limit}");
    assert!((limit..40).contains(&succeeded), "{succeeded} of 40 succeeded");

    // Waiting long enough: every call gets through, still never more than the limit.
    let queueing = Protection {
        bulkhead: Some(BulkheadConfig { max_concurrent: limit, max_wait: Duration::from_secs(10) }),
        ..bare(no_retries())
    };
    let (seen, succeeded) = concurrent_calls_at_the_upstream(queueing, 40).await;
    assert!(seen <= limit, "{seen} requests in the upstream at once, bulkhead {limit}");
    assert_eq!(succeeded, 40);

    // The same count catches a client without a bulkhead.
    let (seen, _) = concurrent_calls_at_the_upstream(bare(no_retries()), 40).await;
    assert!(seen > limit, "without a bulkhead the upstream saw only {seen} at once: the check could not fail");
}

proptest! {
    #[test]
    fn full_jitter_stays_in_zero_to_the_capped_exponential(
        base_ms in 1u64..200, cap_ms in 1u64..5_000, attempt in 0u32..64, seed in any::<u64>()
    ) {
        let (base, cap) = (Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
        let mut rng = fastrand::Rng::with_seed(seed);
        let bound = exponential(base, cap, attempt);
        prop_assert!(bound <= cap);
        prop_assert_eq!(bound, base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX)).min(cap));
        for _ in 0..50 {
            prop_assert!(full_jitter(base, cap, attempt, &mut rng) <= bound);
        }
    }

    #[test]
    fn decorrelated_jitter_stays_in_base_to_three_times_the_last_and_under_the_cap(
        base_ms in 1u64..200, cap_ms in 1u64..5_000, seed in any::<u64>()
    ) {
        let (base, cap) = (Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut previous = base;
        for _ in 0..30 {
            let sleep = decorrelated_jitter(base, cap, previous, &mut rng);
            prop_assert!(sleep <= cap);
            prop_assert!(sleep >= base.min(cap));
            prop_assert!(sleep <= (previous * 3).max(base));
            previous = sleep;
        }
    }

    /// Over every window of `SLOTS` slots ending at a granted retry, the retries granted
    /// in it are at most ratio × the requests deposited in it (by then) + the reserve,
    /// counted here from the event log, independently of the budget's own books.
    #[test]
    fn the_budget_never_grants_more_than_its_share_of_any_window(
        events in prop::collection::vec((0u64..40, any::<bool>()), 1..400),
        ratio in 0.0f64..0.5,
        min_per_second in 0.0f64..5.0,
    ) {
        let config = RetryBudgetConfig { window: Duration::from_secs(1), ratio, min_per_second };
        let slot = config.window / SLOTS;
        let mut budget = RetryBudget::new(config);
        let mut now = Duration::ZERO;
        let mut log: Vec<(u64, bool)> = Vec::new(); // (slot index, is a granted retry)
        for (advance_ms, is_retry) in events {
            now += Duration::from_millis(advance_ms);
            let index = (now.as_nanos() / slot.as_nanos()) as u64;
            if is_retry {
                if budget.try_withdraw(now) {
                    log.push((index, true));
                    let in_window = |&&(i, _): &&(u64, bool)| i + u64::from(SLOTS) > index;
                    let retries = log.iter().filter(in_window).filter(|(_, r)| *r).count() as f64;
                    let requests = log.iter().filter(in_window).filter(|(_, r)| !*r).count() as f64;
                    prop_assert!(retries <= ratio * requests + config.reserve() + 1e-9,
                        "{retries} retries for {requests} requests in the window at {now:?}");
                }
            } else {
                budget.deposit(now);
                log.push((index, false));
            }
        }
    }
}

#[test]
fn full_jitter_spreads_over_its_interval_instead_of_clumping() {
    let (base, cap) = (Duration::from_millis(10), Duration::from_millis(1_000));
    let mut rng = fastrand::Rng::with_seed(7);
    let draws: Vec<Duration> = (0..10_000).map(|_| full_jitter(base, cap, 3, &mut rng)).collect();
    let mean = draws.iter().sum::<Duration>() / draws.len() as u32;
    assert!((36..=44).contains(&mean.as_millis()), "mean {mean:?}, expected about 40 ms (half of 80)");
    let below_a_quarter = draws.iter().filter(|d| **d < Duration::from_millis(20)).count();
    assert!((2_000..3_000).contains(&below_a_quarter), "{below_a_quarter} of 10,000 below 20 ms, expected ~2,500");
}

/// The budget's promise, checked at the upstream: requests received ≤ calls × (1 +
/// ratio) + the reserve, rounded up.
fn within_budget(upstream_requests: u64, calls: u64, config: &RetryBudgetConfig) -> bool {
    upstream_requests as f64 <= calls as f64 * (1.0 + config.ratio) + config.reserve().ceil()
}

async fn calls_against_an_outage(protection: Protection, calls: usize) -> (u64, u64) {
    let upstream = FlakyUpstream::start(4).await.expect("upstream starts");
    upstream.set_faults(Faults::FAILING);
    let client = Arc::new(ResilientClient::new(upstream.url(), protection, 4));
    // Ten at a time, so retries of some interleave with first attempts of others.
    for _ in 0..calls / 10 {
        let batch: Vec<_> = (0..10)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.call().await })
            })
            .collect();
        for call in batch {
            assert!(call.await.expect("joins").result.is_err(), "the upstream is down");
        }
    }
    let requests = upstream.requests();
    upstream.stop().await;
    (requests, client.stats().calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries_and_the_check_fails_without_it() {
    let budget = RetryBudgetConfig { window: Duration::from_secs(30), ratio: 0.1, min_per_second: 0.1 };
    let retry = RetryPolicy {
        max_attempts: 5,
        backoff: Backoff { base: MS, cap: Duration::from_millis(4), jitter: Jitter::Decorrelated },
    };
    let with_budget = Protection { budget: Some(budget), ..bare(retry) };
    let (requests, calls) = calls_against_an_outage(with_budget, 200).await;
    assert_eq!(calls, 200);
    assert!(within_budget(requests, calls, &budget), "{requests} upstream requests for {calls} calls, over the budget");
    assert!(requests > calls, "the budget allowed no retry at all ({requests})");

    let (requests, calls) = calls_against_an_outage(bare(retry), 200).await;
    assert_eq!(requests, 1_000, "without a budget every call makes all 5 attempts");
    assert!(!within_budget(requests, calls, &budget), "the budget check passed a client without a budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes_at_quick_scale() {
    let exercise = exercises::find("circuit-breaker").expect("in the catalogue");
    let report = framework::run(exercise, DemoOptions { scale: Scale::Quick, ..Default::default() })
        .await
        .expect("the scenario runs");
    println!("{report}");
    assert!(report.passed(), "{report}");
}
