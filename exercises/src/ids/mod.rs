//! The ids theme: globally unique IDs without a central counter.
//!
//! One exercise, `snowflake-ids`: Twitter-style 64-bit IDs (a millisecond timestamp, a
//! node id, a per-millisecond sequence) that sort by time, are monotonic per node and
//! never collide across nodes. The node ids are leased from the KV store, and the
//! generator survives the two things that break the scheme in practice: a clock that
//! goes backwards, and a lease holder that was paused rather than dead.
//!
//! ```text
//!  snowflake.rs   the layout and the pure core (clock reading in, ID or "wait" out)
//!  clock.rs       the wall clocks: system, manual (tests), steppable (the demo)
//!  generator.rs   the core plus a clock and the lease check: what a program calls
//!  node_lease.rs  node ids leased with SET NX PX, renewed, fenced by a ceiling
//!  audit.rs       duplicates, per-node order, wrong node bits
//!  scenario.rs    the demo
//! ```
//!
//! Left out: UUIDv7 and ULID (random bits instead of a node id: no coordination, but
//! 128 bits), and ID blocks handed out by a database sequence (Flickr's ticket
//! servers). The note `docs/exercises/snowflake-ids.md` compares them.

pub mod audit;
pub mod clock;
pub mod generator;
pub mod node_lease;
pub mod scenario;
pub mod snowflake;

use crate::framework::{Exercise, Needs, Theme};

/// The ids exercises, in catalogue order.
pub const EXERCISES: &[Exercise] = &[Exercise {
    name: "snowflake-ids",
    theme: Theme::Ids,
    summary: "64-bit IDs, monotonic per node and unique across nodes (node ids leased from the KV); the clock going backwards waits or refuses",
    needs: Needs::KV,
    run: |demo| Box::pin(scenario::demo(demo)),
}];
