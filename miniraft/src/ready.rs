//! What the core hands to its driver: the [`Ready`] batch of actions, and the
//! [`Restored`] state a driver gives the core when a node starts.
//!
//! The driver's loop, in the order that the persistence contract needs:
//!
//! 1. send `messages_now` (they depend on nothing unpersisted);
//! 2. persist `hard_state`, `snapshot` and `entries`, and fsync;
//! 3. send `messages` (votes and acknowledgements that promise what step 2 made durable);
//! 4. restore the state machine from `snapshot` if any, then apply `committed` in order;
//! 5. call `Raft::advance` (the "storage done" event).
//!
//! Only one `Ready` is out at a time: `Raft::ready` returns nothing new until `advance`.

use crate::message::Message;
use crate::types::{Entry, HardState, Index, Membership, NodeId, Role, Snapshot, Term};

/// A batch of actions for the driver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Messages that may go out before anything below is durable: a leader's
    /// AppendEntries (it writes its own log in parallel and counts itself only once
    /// `advance` says its entries are durable, diss. §10.2.1).
    pub messages_now: Vec<Message>,
    /// The hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append to the persisted log. When the first one's index is at or below
    /// the persisted last index, the persisted log from that index on is a conflicting
    /// suffix: drop it, then append.
    pub entries: Vec<Entry>,
    /// A snapshot received from the leader: persist it, drop the persisted log through
    /// `meta.index` (or all of it when it does not hold `meta.index` at `meta.term`), and
    /// restore the state machine from it before applying `committed`.
    pub snapshot: Option<Snapshot>,
    /// Messages to send only once everything above is durable.
    pub messages: Vec<Message>,
    /// Newly committed entries to apply, in index order (after `snapshot`).
    pub committed: Vec<Entry>,
    /// Reads whose index is known: answer each once the state machine has applied
    /// through `index`.
    pub reads: Vec<ReadState>,
    /// Reads that can no longer be served here (leadership lost), by id.
    pub failed_reads: Vec<u64>,
    /// The role, term and leader, when any of them changed.
    pub soft_state: Option<SoftState>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages_now.is_empty()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.snapshot.is_none()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.failed_reads.is_empty()
            && self.soft_state.is_none()
    }
}

/// A read request that has passed ReadIndex (or the lease check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The id the caller gave `Raft::read_index`.
    pub id: u64,
    /// The commit index to apply through before answering.
    pub index: Index,
}

/// The parts of a node's state that are not persisted and that a driver shows or routes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
}

/// What a node starts from: what its storage recovered, or a fresh cluster's bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// The persisted hard state (all zero and no vote for a new node).
    pub hard_state: HardState,
    /// The latest persisted snapshot, if any. The state machine has been restored from it.
    pub snapshot: Option<Snapshot>,
    /// The persisted entries after the snapshot, contiguous and in index order.
    pub entries: Vec<Entry>,
    /// The membership to start with when neither the snapshot nor the entries carry one:
    /// a new cluster's founding voters (every founding node gets the same set).
    pub initial_membership: Membership,
}
