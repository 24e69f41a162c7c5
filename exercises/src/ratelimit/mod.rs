//! ratelimit: three ways to hold many callers to one limit, from strongly consistent on
//! the KV store to approximate with no shared store at all.
//!
//! ```text
//!  token-bucket         a bucket per key in a hash (two fields), read and written under
//!                       WATCH/MULTI/EXEC, timed by the server's TIME: exact, 2 round trips
//!  sliding-window       a log of admissions per key in a sorted set: exact per window,
//!                       against the bucket and a fixed-window counter at window edges
//!  distributed-limiter  N instances with local buckets that gossip admission counts:
//!                       no store on the request path, approximate under skew and delay
//! ```
//!
//! The KV limiters share [`decision`] (what a limiter answers and fails with), [`ledger`]
//! (the invariants checked over what was admitted) and [`hammer`] (the closed-loop load
//! of N clients with a connection each). Each has a deliberately broken variant
//! ([`Variant::Unwatched`], [`distributed_limiter::Counting::Deltas`]) that the tests and
//! the demos show being caught.
//!
//! Left out: limits that change while keys exist (a key written under one limit is read
//! under another as clamped, never as extra capacity), and quotas over days, which are
//! counters rather than rate limits.

pub mod decision;
pub mod distributed_limiter;
pub mod gossip_sim;
pub mod hammer;
pub mod ledger;
pub mod sliding_window;
pub mod token_bucket;

pub use decision::{Decision, LimitError, Limiter, Variant};

use crate::framework::{Exercise, Needs, Theme};

/// The ratelimit exercises, in catalogue order.
pub const EXERCISES: &[Exercise] = &[
    Exercise {
        name: "token-bucket",
        theme: Theme::RateLimit,
        summary: "a per-key token bucket on the KV store, atomic with WATCH/MULTI/EXEC and timed by the server; 100 clients never over-admit",
        needs: Needs::KV,
        run: |demo| Box::pin(token_bucket::demo(demo)),
    },
    Exercise {
        name: "sliding-window",
        theme: Theme::RateLimit,
        summary: "a sliding-window log on sorted sets, side by side with the token bucket and a fixed window at window edges",
        needs: Needs::KV,
        run: |demo| Box::pin(sliding_window::demo(demo)),
    },
    Exercise {
        name: "distributed-limiter",
        theme: Theme::RateLimit,
        summary: "N limiter instances without a shared store, gossiping admission counts; accuracy against the KV bucket under clock skew, delay and loss",
        needs: Needs::KV,
        run: |demo| Box::pin(distributed_limiter::demo(demo)),
    },
];
