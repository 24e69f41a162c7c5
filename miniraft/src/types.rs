//! The vocabulary of Raft: node ids, terms, indexes, log entries, membership, the hard
//! state and snapshots. Every other module speaks in these types; none of them does I/O.
//!
//! Names follow the Raft paper (Ongaro and Ousterhout, 2014) and Ongaro's dissertation
//! (2014), which the comments cite as "§5.3" (paper) and "diss. §4.1" (dissertation).

use std::collections::BTreeSet;

use bytes::Bytes;

/// A node's identity, fixed for its lifetime. 0 is reserved for "nobody" on the wire.
pub type NodeId = u64;

/// A Raft term: a logical clock that only goes up (§5.1).
pub type Term = u64;

/// The position of an entry in the log. The first real entry has index 1; index 0 is the
/// empty prefix whose term is 0, so `prev_log_index = 0` always matches (§5.3).
pub type Index = u64;

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// Where the entry sits in the log.
    pub index: Index,
    /// What it carries.
    pub payload: EntryPayload,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// Appended by a new leader at the start of its term, so that it has an entry of its
    /// own term to commit (§5.4.2, §8: this is also what lets a fresh leader learn the
    /// commit index before serving reads).
    Noop,
    /// An application command, opaque to Raft, handed to the state machine when committed.
    Command(Bytes),
    /// A membership change. It takes effect on every node as soon as it is *appended* to
    /// that node's log, committed or not (diss. §4.1); a truncation that removes it reverts
    /// the membership to the previous configuration entry.
    Membership(MembershipChange),
}

/// A single-server membership change (diss. §4.1), or a learner's promotion. One change at
/// a time: the leader refuses a new change while an earlier one is uncommitted, and it
/// refuses any change before it has committed an entry of its own term (the fix for the
/// single-server bug Ongaro described on raft-dev in 2015).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Adds a non-voting member that receives the log (to catch up before it votes).
    AddLearner(NodeId),
    /// Makes a learner a voter.
    PromoteLearner(NodeId),
    /// Adds a voter directly (it counts toward quorums from the moment it is appended).
    AddVoter(NodeId),
    /// Removes a voter or a learner. A leader that removes itself steps down once the
    /// change commits.
    Remove(NodeId),
}

/// Who is in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The members whose votes and acknowledgements count toward a quorum.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log but never vote and never count toward a quorum.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A cluster of these voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership { voters: voters.into_iter().collect(), learners: BTreeSet::new() }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// The number of voters that make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// The state Raft must make durable before it answers a message that depends on it
/// (Figure 2's "persistent state", plus the commit index so a restart does not replay
/// from zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom this node voted for in `term`, if anyone.
    pub vote: Option<NodeId>,
    /// The highest index known committed. Persisting it is an optimisation (a restarted
    /// node may apply that far before hearing from a leader); it is allowed to lag.
    pub commit: Index,
}

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last index the snapshot includes.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The membership as of `index`.
    pub membership: Membership,
}

/// A state-machine snapshot: the application's bytes plus where in the log they stand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Where in the log the snapshot stands.
    pub meta: SnapshotMeta,
    /// The state machine's serialized state, opaque to Raft.
    pub data: Bytes,
}

/// A node's role (§5.1, plus the pre-candidate of diss. §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Asking for pre-votes: has not incremented its term yet.
    PreCandidate,
    Candidate,
    Leader,
    /// A follower that is not a voter in its current membership.
    Learner,
}
