//! The snowflake ID: its 64-bit layout, and the pure state machine that decides the next
//! one from a clock reading.
//!
//! ```text
//!   63  62                                    22 21        12 11          0
//!  ┌───┬────────────────────────────────────────┬────────────┬─────────────┐
//!  │ 0 │ timestamp: ms since 2024-01-01 (41 bits)│ node (10)  │ sequence(12)│
//!  └───┴────────────────────────────────────────┴────────────┴─────────────┘
//! ```
//!
//! Twitter's 2010 layout: 41 bits of milliseconds (69 years from the epoch, so this
//! one lasts until 2093), 10 bits of node id (1,024 generators), 12 bits of sequence
//! (4,096 IDs per node per millisecond, so at most 4,096,000 IDs/s per node). The sign
//! bit stays 0 so the ID is a positive `i64` in languages without unsigned integers.
//! Only the epoch differs from Twitter's (theirs is 2010-11-04): a later epoch buys
//! back the 14 years already spent.
//!
//! Why IDs are unique: two IDs from one node differ in (timestamp, sequence) as long as
//! the node never reuses a millisecond it has issued from, and two nodes differ in the
//! node bits as long as node ids are unique (leased from the KV store by
//! [`super::node_lease`]). The first condition is the core's job: [`SnowflakeCore`]
//! keeps the last millisecond it issued from and never issues below it.
//!
//! - **Same millisecond**: the sequence counts up; after 4,096 the core says
//!   [`Step::Wait`] until the next millisecond ([`WaitReason::SequenceExhausted`]).
//! - **The clock went back by at most `max_backward_wait_ms`**: wait until it is back
//!   at the last issued millisecond ([`WaitReason::ClockBehind`]), then go on.
//! - **It went back further**: refuse with [`IdError::ClockMovedBackwards`] rather
//!   than block a caller for an unbounded time; the caller decides (fail the request,
//!   use another generator, alert). Twitter's original refused every step back;
//!   Sonyflake sleeps through any. The bound is the compromise, and it is explicit.
//! - **A floor and a ceiling** come from the node-id lease: a new holder of a node id
//!   starts above the previous holder's ceiling, and a holder never issues above the
//!   ceiling it has published. That is what makes a lease change safe even when the
//!   old holder was paused, not dead (see [`super::node_lease`]).
//!
//! The core is pure: it gets the clock reading as an argument and answers what to do,
//! so the tests step time by hand. [`super::generator`] is the edge that reads a real
//! clock, waits and checks the lease. [`Variant`] holds deliberately broken versions,
//! for the tests that show the duplicate and order checks catch them.

use std::fmt;

/// Bits of the millisecond timestamp.
pub const TIMESTAMP_BITS: u32 = 41;
/// Bits of the node id.
pub const NODE_BITS: u32 = 10;
/// Bits of the per-millisecond sequence.
pub const SEQUENCE_BITS: u32 = 12;

/// The largest node id (1,023).
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;
/// The largest sequence number in one millisecond (4,095).
pub const MAX_SEQUENCE: u16 = (1 << SEQUENCE_BITS) - 1;
/// The largest timestamp, in ms since [`EPOCH_UNIX_MS`] (about 69.7 years).
pub const MAX_TIMESTAMP: u64 = (1 << TIMESTAMP_BITS) - 1;
/// The custom epoch: 2024-01-01T00:00:00Z, in ms since the Unix epoch.
pub const EPOCH_UNIX_MS: u64 = 1_704_067_200_000;

/// How far back the clock may step and still be waited out rather than refused. NTP
/// slews small offsets (at most 0.5 ms per second, never backwards), so a step back
/// is a VM resumed on another host, a chrony `makestep`, or an operator: a few ms is a
/// wait a caller tolerates; 100 ms is not. Real deployments tune this.
pub const DEFAULT_MAX_BACKWARD_WAIT_MS: u64 = 10;

const NODE_SHIFT: u32 = SEQUENCE_BITS;
const TIMESTAMP_SHIFT: u32 = SEQUENCE_BITS + NODE_BITS;
const _: () = assert!(TIMESTAMP_BITS + NODE_BITS + SEQUENCE_BITS == 63, "the layout must leave the sign bit");

/// One ID. Orders by time first, then node, then sequence, like the integer it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnowflakeId(pub u64);

impl SnowflakeId {
    /// Packs the three fields. The caller guarantees the ranges (the core does); an
    /// out-of-range field would silently corrupt its neighbours, so it is asserted.
    pub fn compose(timestamp_ms: u64, node: u16, sequence: u16) -> SnowflakeId {
        assert!(timestamp_ms <= MAX_TIMESTAMP, "timestamp {timestamp_ms} does not fit {TIMESTAMP_BITS} bits");
        assert!(node <= MAX_NODE, "node {node} does not fit {NODE_BITS} bits");
        assert!(sequence <= MAX_SEQUENCE, "sequence {sequence} does not fit {SEQUENCE_BITS} bits");
        SnowflakeId(timestamp_ms << TIMESTAMP_SHIFT | u64::from(node) << NODE_SHIFT | u64::from(sequence))
    }

    /// Milliseconds since [`EPOCH_UNIX_MS`].
    pub fn timestamp_ms(self) -> u64 {
        self.0 >> TIMESTAMP_SHIFT
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> u64 {
        self.timestamp_ms() + EPOCH_UNIX_MS
    }

    pub fn node(self) -> u16 {
        ((self.0 >> NODE_SHIFT) & u64::from(MAX_NODE)) as u16
    }

    pub fn sequence(self) -> u16 {
        (self.0 & u64::from(MAX_SEQUENCE)) as u16
    }
}

impl fmt::Display for SnowflakeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a generator gave no ID. Each message says what the caller can do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "the clock is {behind_ms} ms behind the last millisecond this node may not reuse (more than the \
         {bound_ms} ms it waits out): retry after the clock catches up, or use another node's generator"
    )]
    ClockMovedBackwards { behind_ms: u64, bound_ms: u64 },
    #[error("the clock reads {unix_ms} ms, before the ID epoch {EPOCH_UNIX_MS}: fix the system clock")]
    BeforeEpoch { unix_ms: u64 },
    #[error("the clock is past the last timestamp the 41-bit field holds (year 2093): move the epoch")]
    EpochExhausted,
    #[error(
        "the clock ({unix_ms} ms) passed the ceiling this node's lease covers ({ceiling_unix_ms} ms): \
         the lease was not renewed; IDs resume after a renewal"
    )]
    CeilingReached { unix_ms: u64, ceiling_unix_ms: u64 },
    #[error("node id {node}'s lease ran out before it was renewed (is the KV store reachable?): stop issuing")]
    LeaseExpired { node: u16 },
    #[error("node id {node}'s lease belongs to someone else now: acquire a new node id")]
    LeaseLost { node: u16 },
    #[error("the clock did not advance while the generator waited for it (a frozen clock?)")]
    ClockNotAdvancing,
}

/// Why the core asks its caller to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// All 4,096 sequence numbers of this millisecond are used.
    SequenceExhausted,
    /// The clock reads `behind_ms` before the last millisecond issued from (or the
    /// previous lease holder's ceiling), within the bound.
    ClockBehind { behind_ms: u64 },
}

/// What the core decided for one clock reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Issued(SnowflakeId),
    /// Read the clock again once it shows `until_unix_ms`.
    Wait {
        until_unix_ms: u64,
        reason: WaitReason,
    },
}

/// Which version of the core to run. Everything but [`Variant::Correct`] is broken on
/// purpose, for the tests that show the audit catches it; never use them otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    #[default]
    Correct,
    /// BROKEN: when the clock goes back, it issues from the earlier millisecond with
    /// the sequence restarted at 0, re-issuing IDs it already gave out.
    NoWaitOnRegression,
    /// BROKEN: leaves the node bits 0, so two nodes issuing in the same millisecond
    /// hand out the same IDs.
    NoNodeId,
    /// BROKEN: ignores the lease's floor and ceiling, so a new holder of a node id
    /// whose clock is behind the previous holder's reuses its milliseconds.
    NoLeaseFence,
}

/// The generator's state, for one node id. Not thread-safe on purpose: one generator
/// per node id per thread (a shared one would need a lock around [`SnowflakeCore::next`]).
#[derive(Clone, Debug)]
pub struct SnowflakeCore {
    node: u16,
    variant: Variant,
    max_backward_wait_ms: u64,
    /// The last millisecond issued from (ms since the epoch), or the floor: never
    /// issued from again unless `sequence` has room.
    last_ms: u64,
    /// The last sequence used in `last_ms`; [`MAX_SEQUENCE`] means "full", which is how
    /// the floor millisecond itself is made unusable.
    sequence: u16,
    /// The last millisecond the lease allows (ms since the epoch, inclusive).
    ceiling_ms: u64,
    /// The last ID issued, to assert the order the core promises.
    last_id: Option<SnowflakeId>,
}

impl SnowflakeCore {
    /// A core for `node` that issues only above `floor_unix_ms` (0 when nobody held the
    /// node id before; else the previous holder's published ceiling) and, until
    /// [`SnowflakeCore::raise_ceiling`] says otherwise, without a ceiling.
    pub fn new(node: u16, floor_unix_ms: u64, max_backward_wait_ms: u64, variant: Variant) -> SnowflakeCore {
        assert!(node <= MAX_NODE, "node id {node} is over the {MAX_NODE} the layout holds");
        let floor_unix_ms = if variant == Variant::NoLeaseFence { 0 } else { floor_unix_ms };
        SnowflakeCore {
            node,
            variant,
            max_backward_wait_ms,
            last_ms: floor_unix_ms.saturating_sub(EPOCH_UNIX_MS),
            sequence: MAX_SEQUENCE,
            ceiling_ms: MAX_TIMESTAMP,
            last_id: None,
        }
    }

    pub fn node(&self) -> u16 {
        self.node
    }

    /// The last millisecond issued from (or the floor), in ms since the Unix epoch: what
    /// a lease release publishes as the next holder's floor.
    pub fn last_unix_ms(&self) -> u64 {
        self.last_ms + EPOCH_UNIX_MS
    }

    pub fn last_id(&self) -> Option<SnowflakeId> {
        self.last_id
    }

    /// Sets the last millisecond the lease covers. It only ever rises: IDs already
    /// issued up to the old ceiling stay covered.
    pub fn raise_ceiling(&mut self, ceiling_unix_ms: u64) {
        let ceiling_ms = ceiling_unix_ms.saturating_sub(EPOCH_UNIX_MS).min(MAX_TIMESTAMP);
        if self.ceiling_ms == MAX_TIMESTAMP || ceiling_ms > self.ceiling_ms {
            self.ceiling_ms = ceiling_ms;
        }
    }

    /// Decides the next ID for the clock reading `now_unix_ms`.
    pub fn next(&mut self, now_unix_ms: u64) -> Result<Step, IdError> {
        let now_ms = now_unix_ms.checked_sub(EPOCH_UNIX_MS).ok_or(IdError::BeforeEpoch { unix_ms: now_unix_ms })?;
        if now_ms > MAX_TIMESTAMP {
            return Err(IdError::EpochExhausted);
        }
        if now_ms > self.ceiling_ms && self.variant != Variant::NoLeaseFence {
            return Err(IdError::CeilingReached {
                unix_ms: now_unix_ms,
                ceiling_unix_ms: self.ceiling_ms + EPOCH_UNIX_MS,
            });
        }
        if now_ms < self.last_ms {
            let behind_ms = self.last_ms - now_ms;
            if self.variant == Variant::NoWaitOnRegression {
                self.last_ms = now_ms;
                self.sequence = 0;
                return Ok(Step::Issued(self.issue()));
            }
            if behind_ms > self.max_backward_wait_ms {
                return Err(IdError::ClockMovedBackwards { behind_ms, bound_ms: self.max_backward_wait_ms });
            }
            return Ok(Step::Wait {
                until_unix_ms: self.last_ms + EPOCH_UNIX_MS,
                reason: WaitReason::ClockBehind { behind_ms },
            });
        }
        if now_ms == self.last_ms {
            if self.sequence == MAX_SEQUENCE {
                return Ok(Step::Wait {
                    until_unix_ms: self.last_ms + 1 + EPOCH_UNIX_MS,
                    reason: WaitReason::SequenceExhausted,
                });
            }
            self.sequence += 1;
        } else {
            self.last_ms = now_ms;
            self.sequence = 0;
        }
        Ok(Step::Issued(self.issue()))
    }

    fn issue(&mut self) -> SnowflakeId {
        let node = if self.variant == Variant::NoNodeId { 0 } else { self.node };
        let id = SnowflakeId::compose(self.last_ms, node, self.sequence);
        if self.variant == Variant::Correct {
            // The promise everything else rests on: strictly increasing per node. A
            // crash here is a bug in this file, found before it ships a duplicate.
            assert!(self.last_id.is_none_or(|last| id > last), "ID {id} is not above the previous {:?}", self.last_id);
            assert!(self.last_ms <= self.ceiling_ms, "issued above the lease ceiling");
        }
        self.last_id = Some(id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = EPOCH_UNIX_MS + 1_000_000;

    fn issued(step: Result<Step, IdError>) -> SnowflakeId {
        match step {
            Ok(Step::Issued(id)) => id,
            other => panic!("expected an ID, got {other:?}"),
        }
    }

    #[test]
    fn fields_round_trip_through_the_layout() {
        let id = SnowflakeId::compose(MAX_TIMESTAMP, MAX_NODE, MAX_SEQUENCE);
        assert_eq!((id.timestamp_ms(), id.node(), id.sequence()), (MAX_TIMESTAMP, MAX_NODE, MAX_SEQUENCE));
        assert!(id.0 < 1 << 63, "the sign bit stays clear");
        let id = SnowflakeId::compose(12_345, 7, 99);
        assert_eq!(
            (id.timestamp_ms(), id.node(), id.sequence(), id.unix_ms()),
            (12_345, 7, 99, EPOCH_UNIX_MS + 12_345)
        );
    }

    #[test]
    fn the_sequence_counts_up_and_then_waits_for_the_next_millisecond() {
        let mut core = SnowflakeCore::new(3, 0, 10, Variant::Correct);
        for expected in 0..=MAX_SEQUENCE {
            assert_eq!(issued(core.next(T0)).sequence(), expected);
        }
        assert_eq!(core.next(T0), Ok(Step::Wait { until_unix_ms: T0 + 1, reason: WaitReason::SequenceExhausted }));
        let next = issued(core.next(T0 + 1));
        assert_eq!((next.sequence(), next.unix_ms(), next.node()), (0, T0 + 1, 3));
    }

    #[test]
    fn a_small_step_back_waits_and_a_large_one_refuses() {
        let mut core = SnowflakeCore::new(1, 0, 10, Variant::Correct);
        let first = issued(core.next(T0));
        assert_eq!(
            core.next(T0 - 4),
            Ok(Step::Wait { until_unix_ms: T0, reason: WaitReason::ClockBehind { behind_ms: 4 } })
        );
        assert_eq!(core.next(T0 - 11), Err(IdError::ClockMovedBackwards { behind_ms: 11, bound_ms: 10 }));
        // Back at the last millisecond, the sequence continues where it was.
        let second = issued(core.next(T0));
        assert!(second > first);
        assert_eq!(second.sequence(), 1);
    }

    #[test]
    fn the_floor_is_never_issued_from_and_the_ceiling_is_never_passed() {
        let mut core = SnowflakeCore::new(1, T0, 10, Variant::Correct);
        assert_eq!(core.next(T0), Ok(Step::Wait { until_unix_ms: T0 + 1, reason: WaitReason::SequenceExhausted }));
        assert_eq!(issued(core.next(T0 + 1)).unix_ms(), T0 + 1);
        core.raise_ceiling(T0 + 5);
        core.raise_ceiling(T0 + 2); // never lowered
        assert!(core.next(T0 + 5).is_ok());
        assert_eq!(core.next(T0 + 6), Err(IdError::CeilingReached { unix_ms: T0 + 6, ceiling_unix_ms: T0 + 5 }));
    }

    #[test]
    fn clocks_outside_the_layout_are_refused() {
        let mut core = SnowflakeCore::new(1, 0, 10, Variant::Correct);
        assert_eq!(core.next(5), Err(IdError::BeforeEpoch { unix_ms: 5 }));
        assert_eq!(core.next(EPOCH_UNIX_MS + MAX_TIMESTAMP + 1), Err(IdError::EpochExhausted));
    }

    #[test]
    fn the_broken_variants_do_what_they_say() {
        let mut no_wait = SnowflakeCore::new(1, 0, 10, Variant::NoWaitOnRegression);
        let a = issued(no_wait.next(T0));
        let b = issued(no_wait.next(T0 - 1));
        assert!(b < a, "the broken core goes backwards");
        let mut no_node = SnowflakeCore::new(9, 0, 10, Variant::NoNodeId);
        assert_eq!(issued(no_node.next(T0)).node(), 0);
        let mut no_fence = SnowflakeCore::new(1, T0, 10, Variant::NoLeaseFence);
        assert_eq!(issued(no_fence.next(T0 - 100)).unix_ms(), T0 - 100);
    }
}
