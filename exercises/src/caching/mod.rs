//! The caching theme: cache-aside in front of a slow origin, with the KV store (minikv or
//! a real Redis) as the shared cache, and what keeps a cache from hurting the thing
//! behind it.
//!
//! ```text
//!  envelope.rs     what is stored under a key, and how fresh it is (pure: codec + timeline)
//!  origin.rs       the simulated slow database, which counts every query
//!  kv_lock.rs      a lease in the KV store (SET NX PX, compare-and-delete) across processes
//!  cache_aside.rs  the pattern: single-flight misses, refresh-ahead, stale-while-revalidate,
//!                  negative caching; and the naive variant, deliberately unprotected
//!  scenario.rs     `mini demo cache-aside`: each of the above measured at the origin
//! ```
//!
//! The in-process coordination is minicache's [`minicache::SingleFlight`], the same
//! flight map minicache's loading cache uses, so "one load per key at a time" and "one
//! refresh per key at a time" are one rule here too. Left out: an in-process L1 (that is
//! minicache's `TieredCache`), and write-through or write-behind caching (the write path
//! here is the cache-aside one: write the origin, then invalidate).
//!
//! The note for this exercise, with measured runs against minikv and Redis, is
//! `docs/exercises/cache-aside.md`.

pub mod cache_aside;
pub mod envelope;
pub mod kv_lock;
pub mod origin;
pub mod scenario;

use crate::framework::{Exercise, Needs, Theme};

/// The caching exercises, in catalogue order.
pub const EXERCISES: &[Exercise] = &[Exercise {
    name: "cache-aside",
    theme: Theme::Caching,
    summary: "cache-aside over the KV store: 1,000 cold reads make one origin load (single-flight, a KV lock across processes), refresh-ahead, negative caching, stale-while-revalidate",
    needs: Needs::KV,
    run: |demo| Box::pin(scenario::demo(demo)),
}];
