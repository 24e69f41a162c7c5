//! The closed-loop load the scenarios and tests drive limiters with: N clients, each
//! with a limiter (and so a connection) of its own, released together, each sending its
//! next request as soon as the last one is decided, until a deadline.
//!
//! Closed loop on purpose: it is the harshest load for optimistic locking (every client
//! always has a transaction in flight) and it needs no rate to be tuned per machine.
//! Left out: open-loop arrivals at a fixed rate; the distributed-limiter scenario
//! replays a seeded arrival schedule instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use super::decision::{LimitError, Limiter};
use super::ledger::Ledger;
use crate::framework::{DemoError, LatencyHistogram};

/// What a hammer run measured, all clients merged.
#[derive(Debug, Default)]
pub struct HammerOutcome {
    pub clients: usize,
    pub decisions: u64,
    /// When each admission happened, on the limiter's clock.
    pub admitted: Ledger,
    pub refused: u64,
    /// Decisions that gave up after too many aborted EXECs ([`LimitError::Contended`]).
    /// They admitted nothing, so they do not threaten the bound; they are counted
    /// because contention is part of what a WATCH-based limiter costs.
    pub contended: u64,
    /// EXECs aborted by WATCH across all decisions.
    pub aborted: u64,
    /// The most EXECs one decision saw aborted.
    pub max_aborted: u32,
    pub round_trips: u64,
    /// Every decision's latency, as the caller saw it.
    pub latency: LatencyHistogram,
    /// The admitted decisions' latency alone: the write path, where contention shows.
    pub admitted_latency: LatencyHistogram,
    /// Round trips of the admitted decisions alone.
    pub admitted_round_trips: u64,
    /// How long the load actually ran, from the release to the last reply.
    pub elapsed: Duration,
}

/// Runs one client per limiter against `key` for `duration`. Any error other than
/// contention stops the run: a limiter that cannot reach its store is a failed
/// scenario, not a data point.
pub async fn hammer<L: Limiter>(limiters: Vec<L>, key: &str, duration: Duration) -> Result<HammerOutcome, DemoError> {
    assert!(!limiters.is_empty(), "a hammer needs at least one client");
    let clients = limiters.len();
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for mut limiter in limiters {
        let barrier = Arc::clone(&barrier);
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let mut outcome = HammerOutcome { clients: 1, ..HammerOutcome::default() };
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            while Instant::now() < deadline {
                let started = Instant::now();
                let result = limiter.try_acquire(&key).await;
                let latency = started.elapsed();
                outcome.latency.record(latency);
                outcome.decisions += 1;
                match result {
                    Ok(decision) => {
                        if decision.admitted {
                            outcome.admitted.record(decision.at_micros);
                            outcome.admitted_latency.record(latency);
                            outcome.admitted_round_trips += u64::from(decision.round_trips);
                        } else {
                            outcome.refused += 1;
                        }
                        outcome.aborted += u64::from(decision.aborted);
                        outcome.max_aborted = outcome.max_aborted.max(decision.aborted);
                        outcome.round_trips += u64::from(decision.round_trips);
                    }
                    Err(LimitError::Contended { attempts, .. }) => {
                        outcome.contended += 1;
                        outcome.aborted += u64::from(attempts);
                        outcome.max_aborted = outcome.max_aborted.max(attempts);
                    }
                    Err(other) => return Err(other),
                }
            }
            Ok(outcome)
        }));
    }
    barrier.wait().await;
    let released = Instant::now();
    let mut total = HammerOutcome::default();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(outcome)) => total.absorb(outcome),
            Ok(Err(e)) => first_error = first_error.or(Some(DemoError::from(e))),
            Err(join) => first_error = first_error.or(Some(DemoError::from(join))),
        }
    }
    total.elapsed = released.elapsed();
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

impl HammerOutcome {
    fn absorb(&mut self, other: HammerOutcome) {
        self.clients += other.clients;
        self.decisions += other.decisions;
        self.admitted.merge(&other.admitted);
        self.refused += other.refused;
        self.contended += other.contended;
        self.aborted += other.aborted;
        self.max_aborted = self.max_aborted.max(other.max_aborted);
        self.round_trips += other.round_trips;
        self.latency.merge(&other.latency);
        self.admitted_latency.merge(&other.admitted_latency);
        self.admitted_round_trips += other.admitted_round_trips;
    }

    /// Round trips per admission.
    pub fn round_trips_per_admission(&self) -> f64 {
        ratio(self.admitted_round_trips, self.admitted.len() as u64)
    }

    /// Round trips per refusal.
    pub fn round_trips_per_refusal(&self) -> f64 {
        ratio(self.round_trips - self.admitted_round_trips, self.refused)
    }

    /// Round trips per decided (not given-up) decision.
    pub fn round_trips_per_decision(&self) -> f64 {
        let decided = self.decisions.saturating_sub(self.contended);
        if decided == 0 {
            0.0
        } else {
            self.round_trips as f64 / decided as f64
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
