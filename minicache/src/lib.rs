//! minicache: an in-process concurrent cache, and a near-cache over a RESP server.
//!
//! - [`Cache`] is a sharded, thread-safe map with a bounded size. What it keeps is decided
//!   by one of three eviction policies ([`Policy`]): W-TinyLFU (the default), S3-FIFO, or
//!   plain LRU as the baseline. Entries can expire by TTL, TTI or a per-entry [`Expiry`].
//! - Loading is single-flight: N concurrent `get_with` calls for a missing key run the
//!   loader once, and a loader that fails or panics wakes every waiter with the error.
//!   Refresh-ahead, stale-while-revalidate and XFetch (probabilistic early expiration)
//!   keep hot keys from expiring under their readers.
//! - `TieredCache` puts this cache in front of minikv or a real Redis, kept coherent by
//!   Redis 6+ client-side caching (`CLIENT TRACKING`).
//!
//! ```
//! use std::time::Duration;
//! use minicache::{Cache, Policy, RemovalCause};
//!
//! let cache: Cache<String, u64> = Cache::builder()
//!     .max_capacity(2)
//!     .policy(Policy::Lru)
//!     .time_to_live(Duration::from_secs(60))
//!     .build();
//! cache.insert("a".into(), 1);
//! cache.insert("b".into(), 2);
//! assert_eq!(cache.get("a"), Some(1));
//! cache.insert("c".into(), 3); // over capacity: LRU evicts "b", the least recently used
//! assert_eq!(cache.get("b"), None);
//!
//! // Single-flight loading: the loader runs only on a miss.
//! assert_eq!(cache.get_with("d".into(), || 4), 4);
//! assert_eq!(cache.get_with("d".into(), || unreachable!("cached")), 4);
//! let stats = cache.stats();
//! assert_eq!(stats.hits + stats.misses, stats.lookups());
//! # let _ = RemovalCause::Size;
//! ```
//!
//! The design, the policies and the benchmarks against moka and quick_cache are in
//! `docs/minicache.md`.

// -- time (shared) --
pub mod clock;

// -- the cache core: storage, eviction, expiry, stats --
mod cache;
mod policy;
mod sketch;

// -- loading: single-flight, refresh-ahead, XFetch, negative caching --
mod flight;
mod loading;
mod sync;
mod xfetch;

// -- the near cache over a RESP server --
pub mod tiered;

pub use cache::{Cache, CacheBuilder, CacheStats, Expiry, Policy, RemovalCause};
pub use clock::{Clock, MockClock, Nanos, SystemClock};

// -- the loading layer's public surface --
#[cfg(feature = "shuttle")]
pub use flight::Fault;
pub use flight::{Claim, Follower, Leader, LoadError, SingleFlight, Wait};
pub use loading::{BoxError, DEFAULT_MAX_NEGATIVE_ENTRIES, MAX_BACKGROUND_REFRESHES, REFRESH_THREAD_NAME};
pub use xfetch::{RandomSource, SeededRandom, ThreadRandom, XFetch, XFetchError};
