//! The messaging theme: what a queue consumer has to get right when the work it does
//! can fail. One exercise so far, `retry-dlq`: a notification worker on the queue that
//! retries with capped exponential backoff and full jitter, sends poison messages
//! straight to a dead-letter queue, gives up after a fixed number of attempts, and
//! offers a replay endpoint over HTTP.
//!
//! Everything speaks plain beanstalkd 1.12 (`reserve-with-timeout`, `stats-job`,
//! `release` with a delay, `put`, `delete`, `reserve-job`, `bury`): none of miniqueue's
//! own retry extensions (`tube-policy`, `fail`), so the same code runs against a real
//! beanstalkd. miniqueue's built-in policy does the same job server-side; this theme
//! shows what a worker has to do when the server offers only the plain protocol.
//!
//! ```text
//!  retry.rs            the retry scheduler: pure (attempt, failure, policy) -> decision
//!  notification.rs     the job payload and its parser (what counts as poison)
//!  letter.rs           the dead-letter envelope (body byte for byte, reason, attempts, ...)
//!  provider.rs         the simulated provider: seeded failures, latency, a delivery ledger
//!  worker.rs           the worker loop, its timeline, injected crash and hang faults
//!  dlq.rs              the DLQ tube: move a job there; list, replay, replay all, purge
//!  replay_endpoint.rs  the DLQ over HTTP (axum) and its client
//!  retry_dlq.rs        the scenario behind `mini demo retry-dlq`
//! ```
//!
//! Left out: ordering guarantees (a retried message overtakes later ones; a consumer
//! that needs per-key order must not use delays like this), and exactly-once delivery
//! (the provider here has no idempotency key; see the idempotency theme).

pub mod dlq;
pub mod letter;
pub mod notification;
pub mod provider;
pub mod replay_endpoint;
pub mod retry;
pub mod retry_dlq;
pub mod worker;

use crate::framework::{Exercise, Needs, Theme};

/// The messaging exercises, in catalogue order.
pub const EXERCISES: &[Exercise] = &[Exercise {
    name: "retry-dlq",
    theme: Theme::Messaging,
    summary: "a notification worker: full-jitter retries via release delays, poison straight to a DLQ tube, max \
              attempts from stats-job, replay over HTTP; plain beanstalkd commands only",
    needs: Needs::QUEUE,
    run: |demo| Box::pin(retry_dlq::demo(demo)),
}];
