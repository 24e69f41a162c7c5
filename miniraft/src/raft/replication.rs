//! Log replication (§5.3) and the commit rule (§5.4.2), from both ends of AppendEntries.
//!
//! The leader keeps a [`Progress`] per follower and sends batches (at most
//! `max_entries_per_message` entries and `max_bytes_per_message` bytes), pipelined up to
//! `max_inflight_messages` per follower once it matches. Proposals and reads made between
//! two `Ready`s are sent together when the next `Ready` is built, which is where batching
//! comes from.
//!
//! A follower accepts entries only if its log holds `prev_log_index` at `prev_log_term`
//! (the consistency check that gives Log Matching), replaces a conflicting suffix, and on
//! rejection returns a hint (the conflicting term and the first index it holds of it) so
//! the leader skips a whole term per round trip (end of §5.3, diss. §5.3 "fast log
//! backtracking").
//!
//! The commit rule: the leader commits the highest index stored on a quorum of voters,
//! counting itself only for entries its storage made durable, *and only if that entry is of
//! the leader's current term* (§5.4.2, Figure 8: an entry from an older term can be on a
//! majority and still be overwritten). Older entries commit indirectly, with the first entry
//! of the current term. Followers commit what the leader says is committed, but never past
//! what they have verified matches the leader.

use std::collections::VecDeque;

use crate::message::{Conflict, MessageBody};
use crate::raft::progress::{Progress, ProgressState};
use crate::raft::read::ReadQueue;
use crate::raft::transfer::Transfer;
use crate::raft::Raft;
use crate::types::{Entry, Index, NodeId, Role, Term};

/// Everything only a leader has.
pub(crate) struct LeaderState {
    /// Per other member (voters and learners).
    pub(crate) progress: std::collections::BTreeMap<NodeId, Progress>,
    /// The index of this term's Noop: once it is committed, the leader knows the commit
    /// index (reads) and may change membership.
    pub(crate) term_start: Index,
    /// A leader transfer under way.
    pub(crate) transfer: Option<Transfer>,
    /// Set once this term used TimeoutNow: lease reads are off for the rest of the term,
    /// because the target's election skips the followers' lease (see read.rs).
    pub(crate) lease_disabled: bool,
    /// ReadIndex requests.
    pub(crate) reads: ReadQueue,
    /// New entries (or a new membership) to send at the next `Ready`.
    pub(crate) needs_broadcast: bool,
    /// When each round began (round, tick), oldest first: the send time of an echoed
    /// round, for leases.
    pub(crate) round_started: VecDeque<(u64, u64)>,
}

impl LeaderState {
    pub(crate) fn new(term_start: Index) -> LeaderState {
        LeaderState {
            progress: std::collections::BTreeMap::new(),
            term_start,
            transfer: None,
            lease_disabled: false,
            reads: ReadQueue::default(),
            needs_broadcast: true,
            round_started: VecDeque::new(),
        }
    }
}

/// Why an AppendEntries is dropped without an answer: it cannot come from a correct leader.
fn malformed(prev_log_index: Index, prev_log_term: Term, entries: &[Entry], term: Term) -> bool {
    if prev_log_term > term {
        return true;
    }
    let mut previous = (prev_log_index, prev_log_term);
    for entry in entries {
        if Some(entry.index) != previous.0.checked_add(1) || entry.term < previous.1 || entry.term > term {
            return true;
        }
        previous = (entry.index, entry.term);
    }
    false
}

impl Raft {
    /// A leader's AppendEntries or InstallSnapshot in our term: follow its sender and reset
    /// the election timer. Returns false for a leader, which cannot receive one (two
    /// leaders in one term cannot happen: one vote per node per term).
    pub(super) fn follow_leader_of_this_term(&mut self, from: NodeId) -> bool {
        if self.role == Role::Leader {
            return false;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            let term = self.term;
            self.become_follower(term, Some(from));
        }
        self.election_elapsed = 0;
        true
    }

    /// Sends what is due at `ready()` time: new entries to every follower, and the
    /// heartbeat round that reads since the last `Ready` wait for.
    pub(super) fn flush_leader_sends(&mut self) {
        let Some(leader) = self.leader_state.as_mut() else { return };
        let broadcast = std::mem::take(&mut leader.needs_broadcast);
        let heartbeat = std::mem::take(&mut leader.reads.heartbeat_pending);
        if heartbeat {
            self.send_heartbeats();
        }
        if broadcast {
            let ids: Vec<NodeId> =
                self.leader_state.as_ref().map_or_else(Vec::new, |l| l.progress.keys().copied().collect());
            for id in ids {
                self.send_append(id);
            }
        }
    }

    /// Starts a new heartbeat round (recording when, for leases) and sends heartbeats.
    pub(super) fn broadcast_heartbeat(&mut self) {
        self.bump_round();
        if let Some(leader) = self.leader_state.as_mut() {
            leader.reads.heartbeat_pending = false;
        }
        self.send_heartbeats();
    }

    /// A new round: every message sent from now on carries it.
    pub(super) fn bump_round(&mut self) {
        self.round += 1;
        let (round, now) = (self.round, self.ticks);
        let keep_ticks = 2 * u64::from(self.config.election_ticks);
        if let Some(leader) = self.leader_state.as_mut() {
            leader.round_started.push_back((round, now));
            while leader.round_started.len() > 1
                && leader.round_started.front().is_some_and(|(_, tick)| now.saturating_sub(*tick) > keep_ticks)
            {
                leader.round_started.pop_front();
            }
        }
    }

    /// One heartbeat per follower, shaped by its state: a probe for a follower being
    /// probed (so probing goes on at heartbeat pace), the current snapshot chunk again for
    /// one receiving a snapshot (a lost chunk is resent), and an empty AppendEntries at
    /// `next - 1` for one that replicates. The last one also detects lost batches: if the
    /// follower does not hold what the leader optimistically sent, it rejects the heartbeat
    /// and the leader goes back to probing (over an ordered connection the heartbeat
    /// arrives after the batches it follows, so it is not rejected needlessly).
    fn send_heartbeats(&mut self) {
        let ids: Vec<NodeId> =
            self.leader_state.as_ref().map_or_else(Vec::new, |l| l.progress.keys().copied().collect());
        for id in ids {
            let Some(progress) = self.leader_state.as_mut().and_then(|l| l.progress.get_mut(&id)) else { continue };
            match &mut progress.state {
                ProgressState::Probe => {
                    progress.probe_sent = false;
                    self.send_append_inner(id, true);
                }
                ProgressState::Snapshot { chunk_in_flight, .. } => {
                    *chunk_in_flight = false;
                    self.send_snapshot_chunk(id);
                }
                ProgressState::Replicate => {
                    let prev_log_index = progress.next_index - 1;
                    let Some(prev_log_term) = self.log.term_at(prev_log_index) else {
                        self.send_snapshot_chunk(id);
                        continue;
                    };
                    let body = MessageBody::AppendEntries {
                        prev_log_index,
                        prev_log_term,
                        entries: Vec::new(),
                        leader_commit: self.commit,
                        round: self.round,
                    };
                    self.send_now(id, body);
                }
            }
        }
    }

    /// Sends `to` whatever is due, if its progress allows (new entries, a probe, or a
    /// snapshot chunk).
    pub(super) fn send_append(&mut self, to: NodeId) {
        self.send_append_inner(to, false);
    }

    /// `send_append`; `empty_ok` sends an AppendEntries even with no entries to carry (a
    /// probe or a heartbeat).
    fn send_append_inner(&mut self, to: NodeId, empty_ok: bool) {
        let max_inflight = self.config.max_inflight_messages;
        let Some(progress) = self.leader_state.as_ref().and_then(|l| l.progress.get(&to)) else { return };
        if matches!(progress.state, ProgressState::Snapshot { .. }) {
            self.send_snapshot_chunk(to);
            return;
        }
        if progress.is_paused(max_inflight) {
            return;
        }
        let next = progress.next_index;
        let probing = progress.state == ProgressState::Probe;
        let prev_log_index = next - 1;
        let Some(prev_log_term) = self.log.term_at(prev_log_index) else {
            // The entries this follower needs are compacted away: send the snapshot (§7).
            self.send_snapshot_chunk(to);
            return;
        };
        let entries = self.log.batch(next, self.config.max_entries_per_message, self.config.max_bytes_per_message);
        if entries.is_empty() && !probing && !empty_ok {
            return;
        }
        let last_sent = entries.last().map(|e| e.index);
        let body = MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit,
            round: self.round,
        };
        self.send_now(to, body);
        let Some(progress) = self.leader_state.as_mut().and_then(|l| l.progress.get_mut(&to)) else { return };
        if probing {
            progress.probe_sent = true;
        } else if let Some(last) = last_sent {
            // Optimistic: assume it arrives, so the next batch can follow right away.
            progress.next_index = last + 1;
            progress.inflights.push_back(last);
        }
    }

    /// A follower's side of AppendEntries, in our term (§5.3).
    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        round: u64,
    ) {
        if !self.follow_leader_of_this_term(from) {
            return;
        }
        if malformed(prev_log_index, prev_log_term, &entries, self.term) {
            return;
        }

        // Everything through our commit index is committed, so the leader has it too
        // (Leader Completeness, §5.4): skip those entries, and check the prev from our
        // commit index instead, which we may still hold when the leader's prev is compacted
        // away here.
        let mut prev = (prev_log_index, prev_log_term);
        let mut entries = entries;
        if prev.0 < self.commit {
            if self.log.term_at(prev.0).is_some_and(|t| t != prev.1) {
                return; // disagrees with a committed entry: not from a correct leader
            }
            let skip = entries.iter().take_while(|e| e.index <= self.commit).count();
            if entries[..skip].iter().any(|e| self.log.term_at(e.index).is_some_and(|t| t != e.term)) {
                return;
            }
            entries.drain(..skip);
            let commit_term = self.log.term_at(self.commit).unwrap_or_else(|| unreachable!("commit is in the log"));
            prev = (self.commit, commit_term);
        }

        let last = self.log.last_index();
        if prev.0 > last {
            let conflict = Conflict { term: None, first_index: last + 1 };
            self.reject_append(from, conflict, round);
            return;
        }
        match self.log.term_at(prev.0) {
            Some(term) if term == prev.1 => {}
            Some(term) => {
                if prev.0 <= self.commit {
                    return; // our committed entry disagrees: not from a correct leader
                }
                let first_index = self.log.first_index_of_term_run(prev.0, term, self.commit + 1);
                self.reject_append(from, Conflict { term: Some(term), first_index }, round);
                return;
            }
            None => unreachable!("prev is at or after the commit index and within the log"),
        }

        let verified = prev.0 + entries.len() as u64;
        if let Some(cut) = self.log.merge(entries) {
            assert!(cut > self.commit, "a committed entry was truncated");
        }
        let new_commit = leader_commit.min(verified);
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        let body = MessageBody::AppendEntriesResponse { success: true, match_index: verified, conflict: None, round };
        // After the persist: "I hold these entries" must be true after a crash.
        self.send_after_persist(from, body);
    }

    fn reject_append(&mut self, to: NodeId, conflict: Conflict, round: u64) {
        let body = MessageBody::AppendEntriesResponse {
            success: false,
            match_index: self.log.last_index(),
            conflict: Some(conflict),
            round,
        };
        self.send_after_persist(to, body);
    }

    /// The leader's side of an AppendEntries answer, in our term.
    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: Index,
        conflict: Option<Conflict>,
        round: u64,
    ) {
        let last = self.log.last_index();
        let Some(progress) = self.leader_state.as_mut().and_then(|l| l.progress.get_mut(&from)) else { return };
        progress.recent_active = true;
        self.acknowledge_round(from, round);

        let Some(progress) = self.leader_state.as_mut().and_then(|l| l.progress.get_mut(&from)) else { return };
        if success {
            if match_index > last {
                return; // claims entries we never had: not from a correct follower
            }
            let advanced = progress.acknowledge(match_index);
            match progress.state {
                ProgressState::Probe => progress.become_replicate(),
                ProgressState::Snapshot { index, .. } if progress.match_index >= index => progress.become_replicate(),
                _ => {}
            }
            if advanced {
                self.maybe_commit();
            }
            self.after_follower_progress(from);
        } else {
            // Answers to stale messages (no hint) only tell us about terms, handled already.
            let Some(conflict) = conflict else { return };
            if matches!(progress.state, ProgressState::Snapshot { .. }) {
                return;
            }
            if progress.next_index <= progress.match_index + 1 {
                return; // we probed at a known match: a stale or duplicated rejection
            }
            let hint = match conflict.term {
                None => conflict.first_index,
                Some(conflict_term) => match self.log.last_index_of_term(conflict_term) {
                    Some(index) => index + 1,
                    None => conflict.first_index,
                },
            };
            let next = hint.clamp(progress.match_index + 1, progress.next_index - 1);
            progress.become_probe(next);
            self.send_append(from);
        }
    }

    /// A follower matched further: keep it fed, and finish a transfer waiting for it.
    pub(super) fn after_follower_progress(&mut self, from: NodeId) {
        let last = self.log.last_index();
        let Some(progress) = self.leader_state.as_ref().and_then(|l| l.progress.get(&from)) else { return };
        let caught_up = progress.match_index == last;
        if !caught_up {
            self.send_append(from);
        }
        self.maybe_send_timeout_now(from, caught_up);
    }

    /// The commit rule (§5.4.2): the highest index on a quorum of voters, if it is of our
    /// term. This node counts only for its durable entries, and only if it is a voter (a
    /// leader that is removing itself leads without counting, diss. §4.2.2).
    pub(super) fn maybe_commit(&mut self) {
        let Some(leader) = self.leader_state.as_ref() else { return };
        let membership = self.log.membership();
        let me = self.id();
        let mut matched: Vec<Index> = membership
            .voters
            .iter()
            .map(|v| if *v == me { self.log.stable() } else { leader.progress.get(v).map_or(0, |p| p.match_index) })
            .collect();
        if matched.is_empty() {
            return;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[membership.quorum() - 1];
        if candidate <= self.commit {
            return;
        }
        let of_our_term = self.log.term_at(candidate) == Some(self.term);
        if of_our_term || self.config.bugs().commit_previous_term_by_counting {
            self.commit = candidate;
            self.on_leader_commit_advanced();
        }
    }

    /// The commit index moved at the leader: reads may now have an index, and a removal of
    /// this node may now be final.
    fn on_leader_commit_advanced(&mut self) {
        self.release_reads_waiting_for_commit();
        self.step_down_if_removed();
    }
}
