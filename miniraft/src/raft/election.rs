//! Leader election (§5.2), the election restriction (§5.4.1), pre-vote (diss. §9.6) and
//! check-quorum (diss. §6.2), with the roles and their transitions.
//!
//! - A follower that hears nothing from a leader for its randomized election timeout
//!   starts an election. With pre-vote it first becomes a *pre-candidate* and asks "would
//!   you vote for me in term T+1?" without changing its term: a node cut off by a partition
//!   keeps failing pre-votes instead of inflating its term, and cannot depose a healthy
//!   leader when it comes back.
//! - A candidate increments its term, votes for itself and asks for votes. A voter grants
//!   at most one vote per term, and only to a candidate whose log is at least as up to date
//!   as its own (last term, then last index): that is what puts every committed entry in
//!   every future leader's log.
//! - A leader with check-quorum steps down when a quorum has not answered it within an
//!   election timeout; in exchange, a node that heard from a leader within the (minimum)
//!   election timeout ignores vote requests, unless a leader transfer asked for them.
//!
//! Only voters in a node's own membership campaign. Any node *answers* vote requests,
//! learners included: whether that vote counts is decided by the candidate's membership,
//! and a learner that was just promoted may not know it yet (etcd does the same; refusing
//! would let a cluster with a fresh promotion get stuck without a quorum).
//!
//! Randomized timeouts come from splitmix64 seeded by the node id and the term, drawn in
//! sequence within a term: no OS randomness, so the simulator replays exactly.

use crate::config::ReadMode;
use crate::message::MessageBody;
use crate::raft::replication::LeaderState;
use crate::raft::Raft;
use crate::types::{Entry, EntryPayload, Index, NodeId, Role, Term};

/// The deterministic source of election timeouts.
pub(crate) struct TimeoutRng {
    /// The node the stream belongs to.
    id: NodeId,
    /// The term the stream was seeded for.
    term: Term,
    /// splitmix64's state.
    state: u64,
}

impl TimeoutRng {
    pub(crate) fn new(id: NodeId, term: Term) -> TimeoutRng {
        TimeoutRng { id, term, state: splitmix64(id ^ splitmix64(term)) }
    }

    /// The next timeout in `[base, 2 * base)`, for a node now in `term`.
    pub(crate) fn timeout(&mut self, term: Term, base: u32) -> u32 {
        if term != self.term {
            *self = TimeoutRng::new(self.id, term);
        }
        self.state = self.state.wrapping_add(SPLITMIX64_GAMMA);
        let draw = splitmix64(self.state);
        base + (draw % u64::from(base)) as u32
    }
}

/// splitmix64's increment (2^64 divided by the golden ratio).
pub(crate) const SPLITMIX64_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output for the counter that follows `x` (Steele, Lea and Flood, 2014): a
/// fast, well-mixed hash, enough to spread timeouts. The simulator's generator is seeded
/// with the same function (`sim/rng.rs`).
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(SPLITMIX64_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Raft {
    /// A non-leader's tick: maybe start an election.
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.promotable() && self.election_elapsed >= self.randomized_election_ticks {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    /// Restarts the election timer with a fresh randomized timeout (§5.2).
    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_ticks = self.timeout_rng.timeout(self.term, self.config.election_ticks);
    }

    /// Whether this node may campaign: only voters of its own membership do.
    pub(super) fn promotable(&self) -> bool {
        self.log.membership().voters.contains(&self.id())
    }

    /// Whether this node heard from a leader within the election timeout.
    pub(super) fn heard_from_leader_recently(&self) -> bool {
        self.leader.is_some() && self.election_elapsed < self.config.election_ticks
    }

    /// Check-quorum's other half: while in the lease, vote requests are ignored.
    ///
    /// Under lease reads, a node that restarted also ignores them for its first election
    /// timeout: it may have acknowledged a leader just before it crashed, and that leader
    /// may be serving reads on the strength of it. (A node of a brand-new cluster, at term
    /// 0, has acknowledged no one.)
    pub(super) fn in_lease(&self) -> bool {
        let restarted_recently = self.config.read_mode == ReadMode::Lease
            && self.restarted
            && self.ticks < u64::from(self.config.election_ticks);
        self.config.check_quorum && (self.heard_from_leader_recently() || restarted_recently)
    }

    /// Starts an election: a pre-vote first when configured, unless a leader transfer asked
    /// for this election (the old leader vouched for it, so skip straight to the vote).
    pub(super) fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    /// Pre-candidate: ask for pre-votes for the next term, changing nothing persistent.
    fn become_pre_candidate(&mut self) {
        let Some(next_term) = self.term.checked_add(1) else { return };
        self.step_down_from_leader();
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.id(), true);
        if self.election_won() {
            self.become_candidate(false);
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for voter in self.other_voters() {
            let message = crate::message::Message {
                from: self.id(),
                to: voter,
                term: next_term,
                body: MessageBody::PreVote { last_log_index, last_log_term },
            };
            // Depends on nothing persisted: it promises nothing.
            self.outbox_now.push(message);
        }
    }

    /// Candidate: a new term, a vote for itself, vote requests to the other voters (§5.2).
    fn become_candidate(&mut self, transfer: bool) {
        let Some(next_term) = self.term.checked_add(1) else { return };
        self.step_down_from_leader();
        self.term = next_term;
        self.vote = Some(self.id());
        self.role = Role::Candidate;
        self.leader = None;
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.id(), true);
        if self.election_won() {
            self.become_leader();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for voter in self.other_voters() {
            // After the persist: the request carries a term and a self-vote that a crash
            // must not make this node forget.
            self.send_after_persist(voter, MessageBody::RequestVote { last_log_index, last_log_term, transfer });
        }
    }

    /// Leader: set up progress for every other member and append a Noop, so that there is
    /// an entry of this term to commit (§5.4.2; diss. §6.4: a new leader learns the commit
    /// index only by committing something of its own term).
    fn become_leader(&mut self) {
        debug_assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader = Some(self.id());
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.votes.clear();
        self.incoming_snapshot = None;
        let noop_index = self.log.last_index() + 1;
        self.leader_state = Some(LeaderState::new(noop_index));
        // Progress first, so that every follower's first probe starts at the Noop and
        // carries it (a follower that is up to date accepts it in one round trip).
        self.on_leader_membership_changed();
        self.log.append(Entry { term: self.term, index: noop_index, payload: EntryPayload::Noop });
    }

    /// Follower of `term`, believing `leader` leads it. A higher term clears the vote.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        debug_assert!(term >= self.term, "terms never go back");
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.incoming_snapshot = None;
        }
        self.step_down_from_leader();
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    /// Leaves the leader role's state behind: pending reads fail (this node can no longer
    /// prove they are fresh), a transfer is over.
    fn step_down_from_leader(&mut self) {
        if let Some(leader) = self.leader_state.take() {
            self.reads_failed.extend(leader.reads.into_ids());
        }
    }

    /// The voters other than this node.
    fn other_voters(&self) -> Vec<NodeId> {
        let me = self.id();
        self.log.membership().voters.iter().copied().filter(|v| *v != me).collect()
    }

    /// Whether the (pre-)votes so far make a quorum of the current voters.
    fn election_won(&self) -> bool {
        let membership = self.log.membership();
        let granted = membership.voters.iter().filter(|v| self.votes.get(v) == Some(&true)).count();
        granted >= membership.quorum()
    }

    /// Whether enough voters refused that a quorum can no longer be reached.
    fn election_lost(&self) -> bool {
        let membership = self.log.membership();
        let refused = membership.voters.iter().filter(|v| self.votes.get(v) == Some(&false)).count();
        refused > membership.voters.len() - membership.quorum()
    }

    /// §5.4.1: the candidate's log is at least as up to date as ours.
    fn log_up_to_date(&self, last_log_index: Index, last_log_term: Term) -> bool {
        let (our_index, our_term) = (self.log.last_index(), self.log.last_term());
        last_log_term > our_term || (last_log_term == our_term && last_log_index >= our_index)
    }

    /// A PreVote for `term` (the candidate's term + 1). Changes nothing here; ignored while
    /// this node hears from a leader (diss. §9.6: "if it has not heard from a leader within
    /// the election timeout").
    pub(super) fn handle_pre_vote(&mut self, from: NodeId, term: Term, last_log_index: Index, last_log_term: Term) {
        if self.heard_from_leader_recently() {
            return;
        }
        let granted = term > self.term && self.log_up_to_date(last_log_index, last_log_term);
        // A grant carries the request's term; a refusal carries ours, as etcd does, so a
        // pre-candidate that is behind in term learns the term it must catch up with. Without
        // that, a node ahead in log but behind in term is refused forever by a node ahead in
        // term but behind in log, and neither is ever elected (the simulator found this).
        let reply_term = if granted { term } else { self.term };
        let reply = crate::message::Message {
            from: self.id(),
            to: from,
            term: reply_term,
            body: MessageBody::PreVoteResponse { granted },
        };
        self.send_vote_response(reply);
    }

    /// An answer to our pre-vote.
    pub(super) fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        // A grant answers our request for term + 1. A refusal carries the responder's term:
        // one above ours made us a follower already (the term rules), one equal to ours is
        // counted here.
        let answers_us = if granted { Some(term) == self.term.checked_add(1) } else { term == self.term };
        if self.role != Role::PreCandidate || !answers_us {
            return;
        }
        if !self.log.membership().voters.contains(&from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        if self.election_won() {
            self.become_candidate(false);
        } else if self.election_lost() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// A RequestVote in our term (§5.2, §5.4.1). One vote per term; not for anyone else
    /// while we follow a leader of this term.
    pub(super) fn handle_request_vote(&mut self, from: NodeId, last_log_index: Index, last_log_term: Term) {
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote && self.log_up_to_date(last_log_index, last_log_term);
        if granted {
            self.vote = Some(from);
            // Figure 2: granting a vote resets the election timer.
            self.reset_election_timer();
        }
        let reply = crate::message::Message {
            from: self.id(),
            to: from,
            term: self.term,
            body: MessageBody::RequestVoteResponse { granted },
        };
        self.send_vote_response(reply);
    }

    /// An answer to our RequestVote, in our term.
    pub(super) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role != Role::Candidate || !self.log.membership().voters.contains(&from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        if self.election_won() {
            self.become_leader();
        } else if self.election_lost() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// TimeoutNow from the leader (diss. §3.10): campaign at once, skipping pre-vote, with
    /// `transfer` set so that the other voters do not ignore us.
    pub(super) fn handle_timeout_now(&mut self) {
        if self.role != Role::Leader {
            self.hup(true);
        }
    }

    /// The leader's tick: heartbeats, check-quorum, the transfer deadline.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed = self.heartbeat_elapsed.saturating_add(1);
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
            if let Some(leader) = self.leader_state.as_mut() {
                for progress in leader.progress.values_mut() {
                    progress.recent_active = false;
                }
            }
        }
        self.tick_transfer();
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum of voters (this node included, if it is one) was heard from in the
    /// current check-quorum period.
    fn quorum_recently_active(&self) -> bool {
        let Some(leader) = self.leader_state.as_ref() else { return false };
        let membership = self.log.membership();
        let active = membership
            .voters
            .iter()
            .filter(|v| **v == self.id() || leader.progress.get(v).is_some_and(|p| p.recent_active))
            .count();
        active >= membership.quorum()
    }
}
