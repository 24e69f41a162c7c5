//! exercises: backend patterns built on the mini systems, each one a pattern, a scenario
//! that breaks it on purpose, a measured report, and a test that holds its invariant.
//!
//! Every exercise speaks only the systems' public wire protocols: RESP to the KV store
//! (through the `redis` crate) and the beanstalk protocol to the queue (through
//! [`minibench::queue::client`]). Nothing here calls minikv or miniqueue as a library,
//! except [`framework::backends`], which serves them in-process when no endpoint is
//! given. So the same scenario, with `--kv redis://127.0.0.1:6379` or
//! `--queue beanstalk://127.0.0.1:11300`, runs unchanged against a real Redis or
//! beanstalkd, and a user can compare.
//!
//! The modules are grouped by theme, one module per exercise:
//!
//! ```text
//!  ratelimit    token-bucket, sliding-window, distributed-limiter
//!  idempotency  idempotency-keys, payment
//!  caching      cache-aside
//!  messaging    retry-dlq
//!  ids          snowflake-ids
//!  resilience   circuit-breaker (with bulkhead and retry budget)
//! ```
//!
//! Later themes (`coordination`, `consistency`, `observability`) add their module and
//! their [`Exercise`] entries the same way.
//!
//! [`framework`] holds what every exercise shares: the catalogue entry ([`Exercise`]),
//! how endpoints are given and backends started, the report with its latency histogram
//! and verdict line, and a small HTTP client. `mini demo <name>` is a thin layer over
//! [`framework::run`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), exercises::framework::DemoError> {
//! use exercises::framework::{self, DemoOptions};
//! let exercise = exercises::find("token-bucket").expect("in the catalogue");
//! let report = framework::run(exercise, DemoOptions::default()).await?;
//! println!("{report}");
//! assert!(report.passed());
//! # Ok(()) }
//! ```
//!
//! Each exercise also has a one-page note in `docs/exercises/<name>.md`, and the
//! catalogue with how to run each one against the real systems is
//! `docs/exercises/README.md`.

pub mod framework;

pub mod caching;
pub mod idempotency;
pub mod ids;
pub mod messaging;
pub mod ratelimit;
pub mod resilience;

pub use framework::{Exercise, Theme};

/// Every exercise, theme by theme, in the order `mini demo --list` prints them.
pub fn catalogue() -> impl Iterator<Item = &'static Exercise> {
    [
        ratelimit::EXERCISES,
        idempotency::EXERCISES,
        caching::EXERCISES,
        messaging::EXERCISES,
        ids::EXERCISES,
        resilience::EXERCISES,
    ]
    .into_iter()
    .flatten()
}

/// The exercise called `name` (as `mini demo <name>` spells it).
pub fn find(name: &str) -> Option<&'static Exercise> {
    catalogue().find(|exercise| exercise.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lines_are_one_line() {
        let mut names: Vec<&str> = catalogue().map(|e| e.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "two exercises share a name");
        for exercise in catalogue() {
            assert!(!exercise.summary.contains('\n'), "{}: the summary must be one line", exercise.name);
            assert!(
                exercise.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}: names are lower-case words joined by dashes",
                exercise.name
            );
        }
    }
}
