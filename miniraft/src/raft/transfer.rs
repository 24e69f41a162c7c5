//! Leader transfer (diss. §3.10): hand leadership to a chosen voter, for maintenance or to
//! move the leader next to the clients.
//!
//! The leader stops accepting proposals (so the target can catch up with a log that has
//! stopped growing), brings the target up to date, and sends it TimeoutNow. The target
//! campaigns at once, skipping pre-vote, with `transfer` set so that voters still within
//! their check-quorum lease do not ignore it. Its log is as up to date as anyone's, so it
//! normally wins. If the transfer has not finished within an election timeout, the leader
//! gives up and accepts proposals again.

use crate::error::ProposeError;
use crate::message::MessageBody;
use crate::raft::Raft;
use crate::types::NodeId;

/// A transfer under way.
#[derive(Debug)]
pub(crate) struct Transfer {
    /// The voter that should become leader.
    pub(crate) target: NodeId,
    /// Ticks since the transfer began; it is abandoned at `election_ticks`.
    elapsed: u32,
    /// TimeoutNow has been sent (once is enough: a second election would only cost a term).
    timeout_now_sent: bool,
}

impl Raft {
    /// `transfer_leadership`'s body.
    pub(super) fn start_transfer(&mut self, to: NodeId) -> Result<(), ProposeError> {
        let me = self.id();
        let voters_include_target = self.log.membership().voters.contains(&to);
        let Some(leader) = self.leader_state.as_mut() else {
            return Err(ProposeError::NotLeader { leader: self.leader });
        };
        if to == me {
            return Ok(());
        }
        if !voters_include_target {
            return Err(ProposeError::Membership("the transfer target is not a voter"));
        }
        if leader.transfer.as_ref().is_some_and(|t| t.target == to) {
            return Ok(());
        }
        // A new target replaces an earlier one (etcd does the same).
        leader.transfer = Some(Transfer { target: to, elapsed: 0, timeout_now_sent: false });
        let caught_up = leader.progress.get(&to).is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.maybe_send_timeout_now(to, true);
        } else {
            self.send_append(to);
        }
        Ok(())
    }

    /// Sends TimeoutNow to `from` if it is the transfer target and `caught_up`.
    pub(super) fn maybe_send_timeout_now(&mut self, from: NodeId, caught_up: bool) {
        let Some(leader) = self.leader_state.as_mut() else { return };
        let Some(transfer) = leader.transfer.as_mut() else { return };
        if transfer.target != from || !caught_up || transfer.timeout_now_sent {
            return;
        }
        transfer.timeout_now_sent = true;
        // The target's election skips the followers' lease: no lease reads from here on.
        leader.lease_disabled = true;
        self.send_now(from, MessageBody::TimeoutNow);
    }

    /// Counts down a transfer; abandons it after an election timeout.
    pub(super) fn tick_transfer(&mut self) {
        let election_ticks = self.config.election_ticks;
        let Some(leader) = self.leader_state.as_mut() else { return };
        let Some(transfer) = leader.transfer.as_mut() else { return };
        transfer.elapsed += 1;
        if transfer.elapsed >= election_ticks {
            leader.transfer = None;
        }
    }
}
