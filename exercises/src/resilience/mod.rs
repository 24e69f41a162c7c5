//! The resilience theme: calling an upstream that fails, without making its failure
//! worse or letting it take the caller down too.
//!
//! One exercise, `circuit-breaker`: a breaker, a bulkhead and retries with jitter under
//! a retry budget, around the framework's HTTP client, calling a flaky upstream that
//! the scenario drives from healthy to slow to failing and back. The retry storm it
//! shows is the reason all three exist: naive retries multiply the load on an upstream
//! exactly when it can least take it.
//!
//! ```text
//!  breaker.rs       closed / open / half-open: the pure core, a shared wrapper, permits
//!  bulkhead.rs      a semaphore per upstream, with a bounded wait
//!  backoff.rs       full and decorrelated jitter (the AWS Architecture Blog's)
//!  retry_budget.rs  retries ≤ a share of requests over a sliding window (Finagle's)
//!  client.rs        the layers composed around one HTTP call
//!  upstream.rs      the flaky axum upstream, with fault injection and counts
//!  scenario.rs      the demo: the same outage, three configurations
//! ```
//!
//! Needs no backend: everything is HTTP on loopback. Left out: load shedding on the
//! server side, adaptive concurrency limits and hedged requests; the note
//! `docs/exercises/circuit-breaker.md` says where each would go.

pub mod backoff;
pub mod breaker;
pub mod bulkhead;
pub mod client;
pub mod retry_budget;
pub mod scenario;
pub mod upstream;

use crate::framework::{Exercise, Needs, Theme};

/// The resilience exercises, in catalogue order.
pub const EXERCISES: &[Exercise] = &[Exercise {
    name: "circuit-breaker",
    theme: Theme::Resilience,
    summary: "a breaker (closed, open, half-open), a bulkhead and a retry budget around an HTTP client; a retry storm with and without them",
    needs: Needs::NOTHING,
    run: |demo| Box::pin(scenario::demo(demo)),
}];
