//! A circuit breaker: stop calling an upstream that is failing, let a few probes find
//! out when it is back, and fail fast in between.
//!
//! ```text
//!            failure threshold reached                open timeout passed
//!   ┌────────┐ ──────────────────────────▶ ┌──────┐ ───────────────────▶ ┌───────────┐
//!   │ Closed │                             │ Open │                      │ Half-open │
//!   └────────┘ ◀─────────────────────────  └──────┘ ◀─────────────────── └───────────┘
//!        ▲     (never directly)               rejects      one probe fails     │
//!        └──────────────────────────────────────────────────────────────────────┘
//!                        `success_threshold` probes succeed in a row
//! ```
//!
//! - **Closed**: every call goes through. The breaker opens on either of two rules
//!   (each can be switched off): `consecutive_failures` failures in a row (quick to
//!   trip on a hard-down upstream), or a failure rate of at least `failure_rate` over
//!   the last `window` calls once at least `min_calls` of them are in (catches a
//!   partial outage, where successes keep breaking the run). The window counts calls,
//!   not seconds (Resilience4j's COUNT_BASED), so a quiet client judges on old calls;
//!   a time window is the alternative when traffic is bursty.
//! - **Open**: every call is rejected at once, without touching the upstream, until
//!   `open_timeout` has passed.
//! - **Half-open**: at most `half_open_max_probes` calls at a time go through as
//!   probes; the rest are rejected. `success_threshold` successful probes close the
//!   breaker; one failed probe reopens it for another `open_timeout`.
//!
//! What counts as a failure is the caller's call ([`Outcome`]): the resilient client
//! counts 5xx, timeouts and refused connections, not 4xx (the upstream answered).
//!
//! Every admitted call carries a [`Ticket`] with the breaker's *generation* (bumped on
//! each transition). A result from an older generation is ignored: a slow success that
//! started before the breaker opened must not count as a probe, and a late failure
//! from the closed era must not reopen a half-open breaker. A call that never finishes
//! (its future dropped) gives its probe slot back ([`BreakerCore::cancel`]), or the
//! breaker would sit half-open with no slot left.
//!
//! [`BreakerCore`] is the pure state machine: time comes in as an argument, so the
//! tests step it by hand. [`CircuitBreaker`] puts it behind a mutex with a clock, and
//! [`BreakerPermit`] records the result (or the cancellation) when the call ends.
//! Left out: slow-call thresholds (a slow success counts as a success here), and
//! sharing breaker state between processes (each client instance judges alone).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How many transitions [`BreakerStats::transitions`] keeps (the oldest go first).
pub const MAX_TRANSITIONS_KEPT: usize = 256;

/// When the breaker opens, and how it comes back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row while closed (0: rule off).
    pub consecutive_failures: u32,
    /// Open when the failure rate over the window reaches this (above 1.0: rule off).
    pub failure_rate: f64,
    /// How many of the latest calls the failure rate is computed over.
    pub window: usize,
    /// The rate rule waits until the window holds at least this many calls.
    pub min_calls: usize,
    /// How long an open breaker rejects before it lets probes through.
    pub open_timeout: Duration,
    /// Probes allowed in flight at once while half-open.
    pub half_open_max_probes: u32,
    /// Consecutive successful probes that close a half-open breaker.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            min_calls: 10,
            open_timeout: Duration::from_secs(1),
            half_open_max_probes: 2,
            success_threshold: 3,
        }
    }
}

/// The three states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so `{:<9}` lines transitions up in a report.
        f.pad(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        })
    }
}

/// How a call through the breaker went, as the breaker judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// Proof that a call was admitted; given back with its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    probe: bool,
}

impl Ticket {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Why a call was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the circuit is open (the upstream is failing); probes resume in {retry_in:?}")]
    Open { retry_in: Duration },
    #[error("the circuit is half-open and all {max} probe slots are busy; retry shortly")]
    ProbesBusy { max: u32 },
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cause {
    ConsecutiveFailures(u32),
    /// The failure rate over the window (0..=1) and the window's size.
    FailureRate {
        rate: f64,
        calls: usize,
    },
    OpenTimeout,
    ProbeFailed,
    ProbesSucceeded(u32),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::ConsecutiveFailures(n) => write!(f, "{n} failures in a row"),
            Cause::FailureRate { rate, calls } => write!(f, "{:.0}% failures over {calls} calls", rate * 100.0),
            Cause::OpenTimeout => f.write_str("open timeout passed"),
            Cause::ProbeFailed => f.write_str("a probe failed"),
            Cause::ProbesSucceeded(n) => write!(f, "{n} probes succeeded"),
        }
    }
}

/// One state change.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    /// On the breaker's clock.
    pub at: Duration,
    pub from: State,
    pub to: State,
    pub cause: Cause,
}

/// The breaker's counters and history.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerStats {
    pub state: State,
    pub admitted: u64,
    pub rejected: u64,
    pub successes: u64,
    pub failures: u64,
    /// Results that arrived after a transition and were ignored.
    pub stale_results: u64,
    /// Admitted calls whose result never came (dropped).
    pub cancelled: u64,
    pub probes: u64,
    /// The most probes ever in flight at once: never above `half_open_max_probes`.
    pub max_probes_in_flight: u32,
    /// How many times each transition happened.
    pub opened: u64,
    pub half_opened: u64,
    pub closed: u64,
    /// The latest transitions, oldest first (at most [`MAX_TRANSITIONS_KEPT`]).
    pub transitions: Vec<Transition>,
}

#[derive(Clone, Debug)]
enum Phase {
    Closed {
        consecutive_failures: u32,
        /// The latest calls' outcomes, `true` for a failure.
        window: VecDeque<bool>,
        failures_in_window: usize,
    },
    Open {
        until: Duration,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
    },
}

/// The breaker's state machine. Pure: every method that needs the time takes it.
#[derive(Clone, Debug)]
pub struct BreakerCore {
    config: BreakerConfig,
    phase: Phase,
    generation: u64,
    stats: BreakerStats,
}

impl BreakerCore {
    pub fn new(config: BreakerConfig) -> BreakerCore {
        assert!(config.half_open_max_probes > 0, "a half-open breaker needs at least one probe slot");
        assert!(config.success_threshold > 0, "closing needs at least one successful probe");
        assert!(config.window >= config.min_calls.max(1), "the window must hold min_calls calls");
        BreakerCore {
            config,
            phase: closed_phase(),
            generation: 0,
            stats: BreakerStats {
                state: State::Closed,
                admitted: 0,
                rejected: 0,
                successes: 0,
                failures: 0,
                stale_results: 0,
                cancelled: 0,
                probes: 0,
                max_probes_in_flight: 0,
                opened: 0,
                half_opened: 0,
                closed: 0,
                transitions: Vec::new(),
            },
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state as of the last event (an open breaker whose timeout passed turns
    /// half-open at the next [`BreakerCore::admit`]).
    pub fn state(&self) -> State {
        self.stats.state
    }

    pub fn stats(&self) -> &BreakerStats {
        &self.stats
    }

    /// Admits a call at `now`, or says why not.
    pub fn admit(&mut self, now: Duration) -> Result<Ticket, Rejection> {
        if let Phase::Open { until } = self.phase {
            if now < until {
                self.stats.rejected += 1;
                return Err(Rejection::Open { retry_in: until - now });
            }
            self.transition(now, Phase::HalfOpen { in_flight: 0, successes: 0 }, Cause::OpenTimeout);
        }
        let generation = self.generation;
        match &mut self.phase {
            Phase::Closed { .. } => {
                self.stats.admitted += 1;
                Ok(Ticket { generation, probe: false })
            }
            Phase::HalfOpen { in_flight, .. } => {
                if *in_flight >= self.config.half_open_max_probes {
                    self.stats.rejected += 1;
                    return Err(Rejection::ProbesBusy { max: self.config.half_open_max_probes });
                }
                *in_flight += 1;
                let in_flight = *in_flight;
                assert!(in_flight <= self.config.half_open_max_probes, "more probes than slots");
                self.stats.max_probes_in_flight = self.stats.max_probes_in_flight.max(in_flight);
                self.stats.admitted += 1;
                self.stats.probes += 1;
                Ok(Ticket { generation, probe: true })
            }
            Phase::Open { .. } => unreachable!("an open breaker either rejected or turned half-open above"),
        }
    }

    /// Records how an admitted call went.
    pub fn record(&mut self, now: Duration, ticket: Ticket, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.stats.successes += 1,
            Outcome::Failure => self.stats.failures += 1,
        }
        if ticket.generation != self.generation {
            self.stats.stale_results += 1;
            return;
        }
        let config = self.config;
        match &mut self.phase {
            Phase::Closed { consecutive_failures, window, failures_in_window } => {
                let failed = outcome == Outcome::Failure;
                *consecutive_failures = if failed { *consecutive_failures + 1 } else { 0 };
                window.push_back(failed);
                *failures_in_window += usize::from(failed);
                if window.len() > config.window {
                    let evicted = window.pop_front().unwrap_or(false);
                    *failures_in_window -= usize::from(evicted);
                }
                debug_assert_eq!(*failures_in_window, window.iter().filter(|&&f| f).count());
                let rate = *failures_in_window as f64 / window.len() as f64;
                let cause = if config.consecutive_failures > 0 && *consecutive_failures >= config.consecutive_failures {
                    Some(Cause::ConsecutiveFailures(*consecutive_failures))
                } else if failed && window.len() >= config.min_calls.max(1) && rate >= config.failure_rate {
                    Some(Cause::FailureRate { rate, calls: window.len() })
                } else {
                    None
                };
                if let Some(cause) = cause {
                    self.transition(now, Phase::Open { until: now + config.open_timeout }, cause);
                }
            }
            Phase::HalfOpen { in_flight, successes } => {
                assert!(ticket.probe && *in_flight > 0, "a half-open result must be one of its probes");
                *in_flight -= 1;
                match outcome {
                    Outcome::Failure => {
                        self.transition(now, Phase::Open { until: now + config.open_timeout }, Cause::ProbeFailed)
                    }
                    Outcome::Success => {
                        *successes += 1;
                        if *successes >= config.success_threshold {
                            let n = *successes;
                            self.transition(now, closed_phase(), Cause::ProbesSucceeded(n));
                        }
                    }
                }
            }
            Phase::Open { .. } => unreachable!("no ticket of an open generation exists: open admits nothing"),
        }
    }

    /// An admitted call that will never report (its future was dropped).
    pub fn cancel(&mut self, ticket: Ticket) {
        self.stats.cancelled += 1;
        if ticket.generation != self.generation {
            return;
        }
        if let Phase::HalfOpen { in_flight, .. } = &mut self.phase {
            assert!(ticket.probe && *in_flight > 0, "a half-open cancellation must be one of its probes");
            *in_flight -= 1;
        }
    }

    fn transition(&mut self, now: Duration, to: Phase, cause: Cause) {
        let from = self.stats.state;
        let to_state = match to {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        };
        let allowed = matches!(
            (from, to_state),
            (State::Closed, State::Open)
                | (State::Open, State::HalfOpen)
                | (State::HalfOpen, State::Open)
                | (State::HalfOpen, State::Closed)
        );
        assert!(allowed, "no transition from {from} to {to_state}");
        self.phase = to;
        self.generation += 1;
        self.stats.state = to_state;
        match to_state {
            State::Open => self.stats.opened += 1,
            State::HalfOpen => self.stats.half_opened += 1,
            State::Closed => self.stats.closed += 1,
        }
        if self.stats.transitions.len() == MAX_TRANSITIONS_KEPT {
            self.stats.transitions.remove(0);
        }
        self.stats.transitions.push(Transition { at: now, from, to: to_state, cause });
    }
}

fn closed_phase() -> Phase {
    Phase::Closed { consecutive_failures: 0, window: VecDeque::new(), failures_in_window: 0 }
}

/// A monotonic clock for the breaker: real in a service, stepped by hand in tests.
pub trait MonotonicClock: Send + Sync {
    /// Time since some fixed origin; never goes back.
    fn now(&self) -> Duration;
}

/// [`Instant`] since the clock was made.
#[derive(Debug)]
pub struct SystemMonotonic {
    origin: Instant,
}

impl Default for SystemMonotonic {
    fn default() -> Self {
        SystemMonotonic { origin: Instant::now() }
    }
}

impl MonotonicClock for SystemMonotonic {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualMonotonic {
    nanos: AtomicU64,
}

impl ManualMonotonic {
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl MonotonicClock for ManualMonotonic {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// A [`BreakerCore`] shared between tasks, with its clock. A `parking_lot` mutex, not
/// a tokio one: no await happens while it is held, and each hold is a few field writes.
pub struct CircuitBreaker {
    core: Mutex<BreakerCore>,
    clock: Arc<dyn MonotonicClock>,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Arc<CircuitBreaker> {
        CircuitBreaker::with_clock(config, Arc::new(SystemMonotonic::default()))
    }

    pub fn with_clock(config: BreakerConfig, clock: Arc<dyn MonotonicClock>) -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker { core: Mutex::new(BreakerCore::new(config)), clock })
    }

    /// Admits a call: the permit records its result, or cancels it when dropped.
    pub fn admit(self: &Arc<Self>) -> Result<BreakerPermit, Rejection> {
        let now = self.clock.now();
        let ticket = self.core.lock().admit(now)?;
        Ok(BreakerPermit { breaker: self.clone(), ticket: Some(ticket) })
    }

    pub fn state(&self) -> State {
        self.core.lock().state()
    }

    pub fn stats(&self) -> BreakerStats {
        self.core.lock().stats().clone()
    }

    pub fn config(&self) -> BreakerConfig {
        *self.core.lock().config()
    }
}

/// One admitted call. Say how it went with [`BreakerPermit::record`]; dropping it
/// unrecorded gives a probe slot back.
pub struct BreakerPermit {
    breaker: Arc<CircuitBreaker>,
    ticket: Option<Ticket>,
}

impl BreakerPermit {
    pub fn is_probe(&self) -> bool {
        self.ticket.is_some_and(|t| t.is_probe())
    }

    pub fn record(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            let now = self.breaker.clock.now();
            self.breaker.core.lock().record(now, ticket, outcome);
        }
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.core.lock().cancel(ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: 10,
            min_calls: 6,
            open_timeout: 100 * MS,
            half_open_max_probes: 2,
            success_threshold: 2,
        }
    }

    fn call(core: &mut BreakerCore, now: Duration, outcome: Outcome) {
        let ticket = core.admit(now).expect("admitted");
        core.record(now, ticket, outcome);
    }

    #[test]
    fn consecutive_failures_open_it_and_open_rejects_until_the_timeout() {
        let mut core = BreakerCore::new(config());
        call(&mut core, MS, Outcome::Failure);
        call(&mut core, MS, Outcome::Success); // breaks the run
        for _ in 0..3 {
            call(&mut core, 2 * MS, Outcome::Failure);
        }
        assert_eq!(core.state(), State::Open);
        assert_eq!(core.stats().transitions[0].cause, Cause::ConsecutiveFailures(3));
        assert_eq!(core.admit(50 * MS), Err(Rejection::Open { retry_in: 52 * MS }));
        assert_eq!(core.admit(101 * MS), Err(Rejection::Open { retry_in: MS }));
        assert_eq!(core.admit(102 * MS).map(|t| t.is_probe()), Ok(true), "half-open 100 ms after opening");
        assert_eq!(core.state(), State::HalfOpen);
    }

    #[test]
    fn a_failure_rate_over_the_window_opens_it_without_a_run_of_failures() {
        let mut core = BreakerCore::new(BreakerConfig { consecutive_failures: 0, ..config() });
        // F S F S F S: 50% over 6 calls, never two failures in a row.
        for i in 0..6 {
            call(&mut core, MS, if i % 2 == 0 { Outcome::Failure } else { Outcome::Success });
            if i < 4 {
                assert_eq!(core.state(), State::Closed, "opened before min_calls at call {i}");
            }
        }
        // The sixth call was a success: the rate is judged on failures only.
        assert_eq!(core.state(), State::Closed);
        call(&mut core, MS, Outcome::Failure);
        assert_eq!(core.state(), State::Open);
        assert!(matches!(core.stats().transitions[0].cause, Cause::FailureRate { calls: 7, .. }));
    }

    #[test]
    fn half_open_bounds_its_probes_closes_after_the_threshold_and_reopens_on_a_failure() {
        let mut core = BreakerCore::new(config());
        for _ in 0..3 {
            call(&mut core, MS, Outcome::Failure);
        }
        let t = 200 * MS;
        let a = core.admit(t).expect("probe 1");
        let b = core.admit(t).expect("probe 2");
        assert_eq!(core.admit(t), Err(Rejection::ProbesBusy { max: 2 }));
        core.record(t, a, Outcome::Failure);
        assert_eq!(core.state(), State::Open, "one failed probe reopens it");
        core.record(t, b, Outcome::Success);
        assert_eq!(core.stats().stale_results, 1, "the other probe's late success is ignored");
        assert_eq!(core.state(), State::Open);

        let t = 400 * MS;
        let a = core.admit(t).expect("probe");
        core.record(t, a, Outcome::Success);
        assert_eq!(core.state(), State::HalfOpen, "one success is below the threshold of 2");
        let b = core.admit(t).expect("probe");
        core.record(t, b, Outcome::Success);
        assert_eq!(core.state(), State::Closed);
        let path: Vec<(State, State)> = core.stats().transitions.iter().map(|t| (t.from, t.to)).collect();
        use State::*;
        assert_eq!(
            path,
            vec![(Closed, Open), (Open, HalfOpen), (HalfOpen, Open), (Open, HalfOpen), (HalfOpen, Closed)]
        );
        assert_eq!(core.stats().max_probes_in_flight, 2);
    }

    #[test]
    fn a_cancelled_probe_gives_its_slot_back() {
        let mut core = BreakerCore::new(BreakerConfig { half_open_max_probes: 1, ..config() });
        for _ in 0..3 {
            call(&mut core, MS, Outcome::Failure);
        }
        let probe = core.admit(200 * MS).expect("probe");
        assert!(core.admit(200 * MS).is_err());
        core.cancel(probe);
        assert!(core.admit(200 * MS).is_ok(), "the slot is free again");
    }

    #[test]
    fn a_late_result_from_before_the_opening_is_ignored() {
        let mut core = BreakerCore::new(config());
        let slow = core.admit(MS).expect("admitted while closed");
        for _ in 0..3 {
            call(&mut core, MS, Outcome::Failure);
        }
        let probe = core.admit(200 * MS).expect("probe");
        core.record(200 * MS, slow, Outcome::Failure);
        assert_eq!(core.state(), State::HalfOpen, "a failure from the closed era must not reopen it");
        core.record(200 * MS, probe, Outcome::Success);
        assert_eq!(core.stats().stale_results, 1);
    }

    #[test]
    fn the_permit_cancels_on_drop() {
        let clock = Arc::new(ManualMonotonic::default());
        let breaker = CircuitBreaker::with_clock(BreakerConfig { half_open_max_probes: 1, ..config() }, clock.clone());
        for _ in 0..3 {
            breaker.admit().expect("closed").record(Outcome::Failure);
        }
        clock.advance(150 * MS);
        let probe = breaker.admit().expect("a probe");
        assert!(probe.is_probe());
        assert!(breaker.admit().is_err());
        drop(probe);
        breaker.admit().expect("the dropped probe's slot is free").record(Outcome::Success);
        assert_eq!(breaker.stats().cancelled, 1);
    }
}
