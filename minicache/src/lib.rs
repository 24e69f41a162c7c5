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

// Each module below has one owner while the crate is being written; keep edits to your own.

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
