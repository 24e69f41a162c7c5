//! What a leader knows about each follower's log (Figure 2's `nextIndex` and `matchIndex`),
//! and how it paces what it sends (etcd's `tracker.Progress`).
//!
//! A follower is in one of three states:
//!
//! - **Probe**: the leader does not know where the follower's log matches its own. It
//!   sends one AppendEntries at a time (per heartbeat) and moves `next` back on each
//!   rejection, using the follower's hint to skip a whole term at once (fast
//!   backtracking, end of §5.3).
//! - **Replicate**: the follower matched; the leader streams entries optimistically
//!   (`next` moves as soon as a batch is sent), up to `max_inflight_messages` unanswered
//!   batches (pipelining, diss. §10.2.2).
//! - **Snapshot**: the follower needs entries the leader compacted away; the leader sends
//!   InstallSnapshot chunks, one at a time, until the follower has the snapshot (§7).
//!
//! What it leaves out: etcd's flow control by bytes in flight (here only by message count).

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader is sending to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    Probe,
    Replicate,
    /// Sending snapshot `index`; `offset` is the first byte not yet acknowledged.
    Snapshot {
        index: Index,
        offset: u64,
        /// A chunk is out and unanswered (stop-and-wait; a heartbeat tick clears it so a
        /// lost chunk is resent).
        chunk_in_flight: bool,
    },
}

/// The leader's view of one follower (or learner).
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to match the leader's log (0: nothing known yet).
    pub(crate) match_index: Index,
    /// The next index to send.
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// In Probe: a probe is out, wait for its answer or the next heartbeat.
    pub(crate) probe_sent: bool,
    /// In Replicate: the last index of every unanswered batch, oldest first.
    pub(crate) inflights: VecDeque<Index>,
    /// Heard from in the current check-quorum period (diss. §6.2).
    pub(crate) recent_active: bool,
    /// The highest heartbeat round the follower has echoed in this term (ReadIndex).
    pub(crate) acked_round: u64,
    /// The leader's tick at which the newest message this follower acknowledged was sent
    /// (a lower bound). The lease is counted from there, never from when the answer came
    /// back, because the follower's own timer started somewhere in between.
    pub(crate) acked_sent_tick: Option<u64>,
}

impl Progress {
    /// A follower the leader knows nothing about: probe from the end of the leader's log,
    /// the common case being a follower that is up to date.
    pub(crate) fn new(next_index: Index) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: VecDeque::new(),
            recent_active: false,
            acked_round: 0,
            acked_sent_tick: None,
        }
    }

    /// Back to probing from `next_index`.
    pub(crate) fn become_probe(&mut self, next_index: Index) {
        debug_assert!(next_index > self.match_index, "next must be past match");
        self.state = ProgressState::Probe;
        self.next_index = next_index;
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// Streaming from just past the match.
    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// Whether the leader must wait before sending entries.
    pub(crate) fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.len() >= max_inflight,
            ProgressState::Snapshot { chunk_in_flight, .. } => chunk_in_flight,
        }
    }

    /// The follower matches through `index`. Returns whether that is news.
    pub(crate) fn acknowledge(&mut self, index: Index) -> bool {
        while self.inflights.front().is_some_and(|last| *last <= index) {
            self.inflights.pop_front();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index + 1);
        true
    }
}
