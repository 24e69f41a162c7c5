//! The errors the core returns to its caller. Each message says what to do next.

use crate::types::{Index, NodeId};

/// Why a proposal, a read or a request was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals and reads; `leader` is who this node believes
    /// leads, if anyone.
    #[error("not the leader (leader: {leader:?}); send the request to the leader")]
    NotLeader { leader: Option<NodeId> },
    /// A leader transfer is under way; proposals resume when it finishes or times out.
    #[error("a leadership transfer is in progress; retry shortly")]
    Transferring,
    /// Too many proposals are not committed yet (`Config::max_uncommitted_entries`).
    #[error("too many uncommitted proposals; slow down and retry")]
    Busy,
    /// A membership change is refused: one is already pending, the leader has not committed
    /// an entry of its term yet, or the change makes no sense for the current membership.
    #[error("membership change refused: {0}")]
    Membership(&'static str),
    /// The leader has not committed an entry of its own term yet, so it does not know the
    /// commit index and cannot serve a ReadIndex read.
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    NotReady,
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node id 0 is reserved; give every node a nonzero id")]
    ZeroId,
    #[error("election_ticks ({election}) must exceed heartbeat_ticks ({heartbeat}), which must be nonzero")]
    Timers { heartbeat: u32, election: u32 },
    #[error(
        "lease_ticks ({lease}) must be less than election_ticks ({election}): the difference is the clock-drift budget"
    )]
    Lease { lease: u32, election: u32 },
    #[error("lease reads need check_quorum: without it a deposed leader never learns that its lease is gone")]
    LeaseNeedsCheckQuorum,
    #[error("max_entries_per_message, max_inflight_messages and snapshot_chunk_bytes must be nonzero")]
    ZeroLimit,
    #[error("the restored state is inconsistent: {0}")]
    Restore(String),
}

/// Why `Raft::compact` refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("cannot compact through {requested}: only {applied} is applied")]
    NotApplied { requested: Index, applied: Index },
    #[error("already compacted through {snapshot}")]
    AlreadyCompacted { snapshot: Index },
}
