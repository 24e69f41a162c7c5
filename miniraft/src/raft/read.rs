//! Linearizable reads without writing to the log (diss. §6.4): ReadIndex by default,
//! lease reads as an opt-in.
//!
//! **ReadIndex.** A read must see every write that completed before it started. The leader
//! knows the commit index once it has committed an entry of its term (its Noop); it records
//! that index for the read, then proves it was still the leader *after the read arrived*:
//! it starts a new heartbeat round and waits until a quorum of voters echoed a round at
//! least that new. A deposed leader cannot get those echoes (the quorum moved to a higher
//! term), so it never answers with stale data; it reports the read in `failed_reads` when it
//! learns it lost leadership. The driver serves the read once it has applied through the
//! recorded index. Reads that arrive between two `Ready`s share one round.
//!
//! **Lease reads** (diss. §6.4.1). With check-quorum, a follower that heard from the leader
//! ignores vote requests for `election_ticks`. So, if a quorum acknowledged messages that
//! the leader *sent* less than `lease_ticks` ago, no other leader can exist yet, and the
//! leader may answer at its commit index without a round trip. This holds only if clocks
//! drift apart by less than the margin `election_ticks - lease_ticks` over that time: a
//! follower whose clock runs fast times out early. Leader transfer skips the followers'
//! lease (that is its point), so a leader that sent TimeoutNow stops using its lease for the
//! rest of its term. Without check-quorum the followers keep no lease at all, so lease mode
//! falls back to ReadIndex.
//!
//! `Bug::ReadWithoutReadIndex` (tests only) answers every read at once at the local commit
//! index, which the simulation catches as a stale read from a deposed leader.

use std::collections::VecDeque;

use crate::config::ReadMode;
use crate::error::ProposeError;
use crate::raft::Raft;
use crate::ready::ReadState;
use crate::types::{Index, NodeId};

/// The leader's reads in progress.
#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    /// Reads that arrived before this term's first entry committed: their index is not
    /// known yet.
    waiting_for_commit: Vec<u64>,
    /// Reads with an index, waiting for a quorum to echo their round; rounds never decrease
    /// along the queue.
    confirming: VecDeque<PendingRead>,
    /// A new round was started for reads and its heartbeats go out with the next `Ready`.
    pub(crate) heartbeat_pending: bool,
}

#[derive(Debug)]
struct PendingRead {
    id: u64,
    index: Index,
    round: u64,
}

impl ReadQueue {
    /// Every read not answered yet (when leadership is lost).
    pub(crate) fn into_ids(self) -> impl Iterator<Item = u64> {
        self.waiting_for_commit.into_iter().chain(self.confirming.into_iter().map(|r| r.id))
    }
}

impl Raft {
    /// `read_index`'s body.
    pub(super) fn start_read(&mut self, id: u64) -> Result<(), ProposeError> {
        let Some(leader) = self.leader_state.as_mut() else {
            return Err(ProposeError::NotLeader { leader: self.leader });
        };
        if self.config.bugs().read_without_read_index {
            self.reads_ready.push(ReadState { id, index: self.commit });
            return Ok(());
        }
        if self.commit < leader.term_start {
            leader.reads.waiting_for_commit.push(id);
            return Ok(());
        }
        self.register_read(id);
        Ok(())
    }

    /// A read at a leader that knows the commit index: answer it at once where that is
    /// safe, or record it against a new round.
    fn register_read(&mut self, id: u64) {
        let index = self.commit;
        let me = self.id();
        let membership = self.log.membership();
        let sole_voter = membership.voters.len() == 1 && membership.voters.contains(&me);
        if sole_voter || self.lease_holds() {
            self.reads_ready.push(ReadState { id, index });
            return;
        }
        let Some(leader) = self.leader_state.as_mut() else { return };
        if !leader.reads.heartbeat_pending {
            // A new round: only echoes of messages sent from now on count for this read.
            // (Messages queued since the last Ready have not left yet, so reads that arrive
            // before the next Ready can share the round.)
            self.bump_round();
        }
        let round = self.round;
        let Some(leader) = self.leader_state.as_mut() else { return };
        leader.reads.heartbeat_pending = true;
        leader.reads.confirming.push_back(PendingRead { id, index, round });
    }

    /// The first entry of this term committed: reads that waited for it get their index.
    pub(super) fn release_reads_waiting_for_commit(&mut self) {
        let Some(leader) = self.leader_state.as_mut() else { return };
        if self.commit < leader.term_start || leader.reads.waiting_for_commit.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut leader.reads.waiting_for_commit);
        for id in waiting {
            self.register_read(id);
        }
    }

    /// A follower echoed `round`: record it (and, for leases, when that round was sent),
    /// then release the reads a quorum has now confirmed.
    pub(super) fn acknowledge_round(&mut self, from: NodeId, round: u64) {
        let Some(leader) = self.leader_state.as_mut() else { return };
        // The round's start is a lower bound on when the echoed message was sent.
        let position = leader.round_started.partition_point(|(r, _)| *r <= round);
        let sent_tick = position.checked_sub(1).map(|p| leader.round_started[p].1);
        let Some(progress) = leader.progress.get_mut(&from) else { return };
        progress.acked_round = progress.acked_round.max(round);
        if let Some(tick) = sent_tick {
            progress.acked_sent_tick = Some(progress.acked_sent_tick.map_or(tick, |t| t.max(tick)));
        }
        self.release_confirmed_reads();
    }

    /// Moves every read whose round a quorum of voters has echoed to `Ready::reads`.
    fn release_confirmed_reads(&mut self) {
        let me = self.id();
        let Some(leader) = self.leader_state.as_mut() else { return };
        let membership = self.log.membership();
        while let Some(read) = leader.reads.confirming.front() {
            let echoed = membership
                .voters
                .iter()
                .filter(|v| **v == me || leader.progress.get(v).is_some_and(|p| p.acked_round >= read.round))
                .count();
            if echoed < membership.quorum() {
                break;
            }
            if let Some(read) = leader.reads.confirming.pop_front() {
                self.reads_ready.push(ReadState { id: read.id, index: read.index });
            }
        }
    }

    /// Whether a lease read is allowed now (see the module header).
    fn lease_holds(&self) -> bool {
        let Some(leader) = self.leader_state.as_ref() else { return false };
        if self.config.read_mode != ReadMode::Lease || !self.config.check_quorum || leader.lease_disabled {
            return false;
        }
        let me = self.id();
        let lease = u64::from(self.config.lease_ticks);
        let membership = self.log.membership();
        let fresh = membership
            .voters
            .iter()
            .filter(|v| {
                **v == me
                    || leader
                        .progress
                        .get(v)
                        .and_then(|p| p.acked_sent_tick)
                        .is_some_and(|sent| self.ticks.saturating_sub(sent) < lease)
            })
            .count();
        fresh >= membership.quorum()
    }
}
