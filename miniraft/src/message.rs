//! The messages Raft nodes exchange. The core produces and consumes these values; the
//! runtime's codec (`codec.rs`) turns them into bytes for TCP, and the simulator passes
//! them by value through its faulty network.
//!
//! Heartbeats are `AppendEntries` with no entries. Every `AppendEntries` carries the
//! leader's heartbeat round (`round`), and the response echoes it: that echo is how a
//! leader proves it still leads before it answers a ReadIndex read (diss. §6.4), without
//! a separate message type.

use bytes::Bytes;

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// One message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term; for `PreVote` the term the sender *would* campaign in, and for a
    /// `PreVoteResponse` the term of the request it answers when granted, the responder's own
    /// term when refused (diss. §9.6; etcd does the same, so a pre-candidate behind in term
    /// learns of it).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message (Figure 2, plus pre-vote, chunked snapshots and TimeoutNow).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me if I campaigned?" Sent without incrementing the term, so a
    /// node that was partitioned away does not disrupt the cluster when it returns.
    PreVote { last_log_index: Index, last_log_term: Term },
    /// The answer to `PreVote`.
    PreVoteResponse { granted: bool },
    /// RequestVote RPC (§5.2). `transfer` is set when the leader asked for this election
    /// (TimeoutNow), so that receivers skip the check-quorum lease that would otherwise
    /// make them ignore it.
    RequestVote { last_log_index: Index, last_log_term: Term, transfer: bool },
    /// The answer to `RequestVote`.
    RequestVoteResponse { granted: bool },
    /// AppendEntries RPC (§5.3); a heartbeat when `entries` is empty.
    AppendEntries {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        /// The leader's heartbeat round when it sent this; echoed in the response.
        round: u64,
    },
    /// The answer to `AppendEntries`.
    AppendEntriesResponse {
        /// Whether the follower's log matched at `prev_log_index` and now holds the entries.
        success: bool,
        /// On success: the last index the follower now matches the leader through. On
        /// failure: the follower's last log index (a hint for the leader).
        match_index: Index,
        /// On failure, the fast-backtracking hint (diss. §5.3 end): the term of the
        /// follower's conflicting entry at `prev_log_index` (None if its log is shorter),
        /// and the first index the follower holds of that term.
        conflict: Option<Conflict>,
        /// The round of the `AppendEntries` this answers.
        round: u64,
    },
    /// One chunk of a snapshot (Figure 13, with `offset` and `done`).
    InstallSnapshot {
        meta: SnapshotMeta,
        /// Where `data` starts within the snapshot's bytes.
        offset: u64,
        data: Bytes,
        /// Whether this is the last chunk.
        done: bool,
        /// The leader's heartbeat round, as in `AppendEntries`.
        round: u64,
    },
    /// The answer to an `InstallSnapshot` chunk.
    InstallSnapshotResponse {
        /// The snapshot the chunk belonged to (its last index).
        snapshot_index: Index,
        /// The byte offset the follower wants next (the end of what it has received);
        /// equal to the snapshot's length once the whole snapshot is installed.
        next_offset: u64,
        /// Set once the follower has installed the snapshot.
        done: bool,
        round: u64,
    },
    /// Leader transfer (diss. §3.10): "start an election now", sent by the leader to a
    /// target that is caught up.
    TimeoutNow,
}

/// The fast-backtracking hint in a failed `AppendEntriesResponse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The term of the follower's entry at the leader's `prev_log_index`; None when the
    /// follower's log ends before that index.
    pub term: Option<Term>,
    /// With `term`: the first index of that term in the follower's log. Without: the
    /// follower's last index + 1.
    pub first_index: Index,
}
