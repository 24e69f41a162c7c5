//! Cluster membership changes, one server at a time (diss. §4.1, §4.2.1), plus learners
//! (non-voting members that receive the log, diss. §4.2.1's "catching up new servers").
//!
//! A change takes effect on every node as soon as its entry is *appended* to that node's
//! log, committed or not; a truncation that removes the entry reverts the membership (the
//! log keeps the history, `log.rs`). Because each change adds or removes one voter, any
//! majority of the old configuration overlaps any majority of the new one, so no two
//! leaders can be elected in one term across a change.
//!
//! Two rules keep that true:
//! - one change at a time: a leader refuses a new change while an earlier one is not
//!   committed;
//! - a leader changes membership only after it has committed an entry of its own term (the
//!   fix Ongaro posted to raft-dev in 2015 for the single-server bug: without it, a leader
//!   elected under a stale configuration can commit a change that a concurrent change in
//!   another term also thought it could, and two disjoint majorities appear).
//!
//! A leader that removes itself keeps leading (without counting itself) until the removal
//! commits, then steps down (diss. §4.2.2). Joint consensus (§6 of the paper) is left out:
//! single-server changes are what etcd and most deployments use day to day.

use crate::error::ProposeError;
use crate::raft::progress::Progress;
use crate::raft::Raft;
use crate::types::{Entry, EntryPayload, Index, Membership, MembershipChange, Role, Term};

/// The membership after `change`. Total: a change that makes no sense for `membership`
/// (the leader validates before appending, so only a buggy leader could send one) changes
/// nothing or the obvious thing, the same way on every node.
pub(crate) fn apply_change(membership: &Membership, change: &MembershipChange) -> Membership {
    let mut next = membership.clone();
    match *change {
        MembershipChange::AddLearner(id) => {
            if !next.voters.contains(&id) {
                next.learners.insert(id);
            }
        }
        MembershipChange::PromoteLearner(id) => {
            if next.learners.remove(&id) {
                next.voters.insert(id);
            }
        }
        MembershipChange::AddVoter(id) => {
            next.learners.remove(&id);
            next.voters.insert(id);
        }
        MembershipChange::Remove(id) => {
            next.voters.remove(&id);
            next.learners.remove(&id);
        }
    }
    next
}

/// Why `change` is refused for `membership`, if it is.
fn invalid_change(membership: &Membership, change: &MembershipChange) -> Option<&'static str> {
    match *change {
        MembershipChange::AddLearner(0)
        | MembershipChange::PromoteLearner(0)
        | MembershipChange::AddVoter(0)
        | MembershipChange::Remove(0) => Some("node id 0 is reserved"),
        MembershipChange::AddLearner(id) if membership.contains(id) => Some("the node is already a member"),
        MembershipChange::PromoteLearner(id) if !membership.learners.contains(&id) => {
            Some("only a learner can be promoted")
        }
        MembershipChange::AddVoter(id) if membership.voters.contains(&id) => Some("the node is already a voter"),
        MembershipChange::Remove(id) if !membership.contains(id) => Some("the node is not a member"),
        MembershipChange::Remove(id) if membership.voters.len() == 1 && membership.voters.contains(&id) => {
            Some("removing the last voter would leave no one to elect a leader")
        }
        _ => None,
    }
}

impl Raft {
    /// `propose_membership`'s body.
    pub(super) fn propose_membership_change(
        &mut self,
        change: MembershipChange,
    ) -> Result<(Term, Index), ProposeError> {
        let leader = self.leader_state_for_proposal()?;
        if self.commit < leader.term_start {
            return Err(ProposeError::Membership(
                "the leader has not committed an entry of its term yet; retry shortly",
            ));
        }
        if self.log.last_membership_change().is_some_and(|index| index > self.commit) {
            return Err(ProposeError::Membership("another membership change is not committed yet; retry shortly"));
        }
        if let Some(problem) = invalid_change(self.log.membership(), &change) {
            return Err(ProposeError::Membership(problem));
        }
        let index = self.log.last_index() + 1;
        let entry = Entry { term: self.term, index, payload: EntryPayload::Membership(change) };
        self.log.append(entry);
        self.on_leader_membership_changed();
        Ok((self.term, index))
    }

    /// The leader's membership changed (on append): track progress for exactly the other
    /// members, drop a transfer to a node that left, and recount the commit index under the
    /// new quorum.
    pub(super) fn on_leader_membership_changed(&mut self) {
        let me = self.id();
        let membership = self.log.membership().clone();
        let next = self.log.last_index() + 1;
        let Some(leader) = self.leader_state.as_mut() else { return };
        leader.progress.retain(|id, _| membership.contains(*id));
        for id in membership.voters.iter().chain(membership.learners.iter()) {
            if *id != me {
                leader.progress.entry(*id).or_insert_with(|| Progress::new(next));
            }
        }
        if leader.transfer.as_ref().is_some_and(|t| !membership.voters.contains(&t.target)) {
            leader.transfer = None;
        }
        leader.needs_broadcast = true;
        self.maybe_commit();
    }

    /// A leader that is no longer a voter steps down once the change that removed it is
    /// committed: it has then handed the cluster a configuration without it.
    pub(super) fn step_down_if_removed(&mut self) {
        if self.role != Role::Leader || self.log.membership().voters.contains(&self.id()) {
            return;
        }
        if self.log.last_membership_change().is_none_or(|index| index <= self.commit) {
            let term = self.term;
            self.become_follower(term, None);
        }
    }
}
