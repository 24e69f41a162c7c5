//! The Raft core: one node's consensus state machine, with no I/O.
//!
//! Events go in (`tick`, `step` a message, `propose`, `read_index`, `advance` when storage
//! is done) and a [`Ready`] batch of actions comes out: messages to send (before or after
//! persisting), state and entries to persist, entries to apply, reads to answer. The core
//! never touches a socket, a file or a clock; even its randomized election timeouts come
//! from a PRNG seeded by the node id and term, so a whole cluster replays exactly from a
//! seed in the simulator (the idea of etcd-io/raft and tikv/raft-rs).
//!
//! The code is split by concern, each file naming the paper (Ongaro and Ousterhout, 2014:
//! "§5.2") and dissertation (Ongaro, 2014: "diss. §9.6") sections it implements:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`Raft`] struct, message dispatch and the term rules (§5.1), `Ready`/`advance` (the persistence contract) |
//! | `log.rs` | the in-memory log with its snapshot boundary and membership history (§5.3, §7) |
//! | `election.rs` | timeouts, pre-vote, votes, roles (§5.2, §5.4.1, diss. §9.6, §6.2 check-quorum) |
//! | `replication.rs` | AppendEntries both ways, fast backtracking, the commit rule (§5.3, §5.4.2) |
//! | `progress.rs` | the leader's per-follower state: probe, replicate, snapshot |
//! | `snapshot.rs` | compaction and chunked InstallSnapshot (§7) |
//! | `membership.rs` | single-server changes and learners (diss. §4.1–4.2) |
//! | `read.rs` | ReadIndex and lease reads (diss. §6.4) |
//! | `transfer.rs` | leader transfer (diss. §3.10) |
//!
//! The persistence contract, in one place: a node never sends a message that promises
//! something (a vote, "I hold these entries", "I have this snapshot") before that something
//! is durable. Such messages go in [`Ready::messages`], which the driver sends only after
//! persisting the `Ready`. A leader's AppendEntries promise nothing about the leader's own
//! disk, so they go in [`Ready::messages_now`] and the leader writes its log in parallel,
//! counting itself toward a commit only for entries `advance` says are durable (diss.
//! §10.2.1). One exception keeps that sound: when a `Ready` changes the term or the vote,
//! every message waits for the persist (a leader must not send entries of a term that a
//! crash could make it forget it was in).
//!
//! What it leaves out: joint consensus (single-server changes only), reads served by
//! followers, flow control by bytes in flight, and unreachable-peer reports from the
//! transport (a replicating follower whose batches were lost is found by its rejecting the
//! next heartbeat instead). The core holds every entry after its last snapshot in memory.

mod election;
mod log;
mod membership;
mod progress;
mod read;
mod replication;
mod snapshot;
mod transfer;

pub(crate) use election::{splitmix64, SPLITMIX64_GAMMA};

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::Config;
use crate::error::{CompactError, ConfigError, ProposeError};
use crate::message::{Message, MessageBody};
use crate::ready::{ReadState, Ready, Restored, SoftState};
use crate::types::{
    Entry, EntryPayload, HardState, Index, Membership, MembershipChange, NodeId, Role, Snapshot, SnapshotMeta, Term,
};

use self::election::TimeoutRng;
use self::log::RaftLog;
use self::replication::LeaderState;
use self::snapshot::IncomingSnapshot;

/// The largest index or term the core accepts in a message. Far beyond any real log (2^62
/// entries at a million a second is 146,000 years), and low enough that `index + 1` and
/// `term + 1` can never overflow: a message carrying more is garbage, and ignored.
pub const MAX_INDEX_OR_TERM: u64 = 1 << 62;

/// One node's Raft state machine. See the module header for how to drive it, and
/// `ready.rs` for the driver loop.
pub struct Raft {
    /// Timers, limits, read mode and the (test-only) injected bugs.
    config: Config,
    /// The entries after the latest snapshot, and what storage has of them.
    log: RaftLog,
    /// The latest term this node has seen (persisted).
    term: Term,
    /// Whom this node voted for in `term` (persisted).
    vote: Option<NodeId>,
    /// The highest index known committed. Never decreases.
    commit: Index,
    /// Follower, PreCandidate, Candidate or Leader. Never `Role::Learner`: [`Raft::role`]
    /// derives that from the membership, so a change needs no extra bookkeeping.
    role: Role,
    /// Who this node believes leads `term`.
    leader: Option<NodeId>,
    /// Ticks since the node started: the leader's clock for leases.
    ticks: u64,
    /// Whether this node restarted with state (a term above 0), rather than starting fresh.
    restarted: bool,
    /// Ticks since the last reset of the election timer (for a leader: since the last
    /// check-quorum period began).
    election_elapsed: u32,
    /// A leader's ticks since its last heartbeat.
    heartbeat_elapsed: u32,
    /// This node's current election timeout, in `[election_ticks, 2 * election_ticks)`.
    randomized_election_ticks: u32,
    /// Where randomized timeouts come from: deterministic, re-seeded per term.
    timeout_rng: TimeoutRng,
    /// A (pre-)candidate's answers so far, by voter.
    votes: BTreeMap<NodeId, bool>,
    /// Everything only a leader has; Some exactly when `role` is Leader.
    leader_state: Option<LeaderState>,
    /// The leader's heartbeat round: carried by every AppendEntries and InstallSnapshot and
    /// echoed back, so an echo proves the follower accepted this leader after the round
    /// began (ReadIndex). Monotonic across terms of this process, so that echoes of an
    /// older term's rounds are always smaller.
    round: u64,
    /// A snapshot being received in chunks.
    incoming_snapshot: Option<IncomingSnapshot>,
    /// The last index the driver has applied (acknowledged by `advance`).
    applied: Index,
    /// The last index handed out in `Ready::committed` (or covered by a handed snapshot).
    applying: Index,
    /// Messages that may leave before this node persists anything (see the module header).
    outbox_now: Vec<Message>,
    /// Messages that must wait until the next `Ready` is durable.
    outbox: Vec<Message>,
    /// Reads whose index is known, waiting to be handed out.
    reads_ready: Vec<ReadState>,
    /// Reads that can no longer be served here, waiting to be handed out.
    reads_failed: Vec<u64>,
    /// A snapshot received from the leader, to hand to storage.
    snapshot_to_persist: Option<Snapshot>,
    /// The hard state as of the last `Ready` (what storage has, or will have).
    reported_hard_state: HardState,
    /// The soft state as of the last `Ready`.
    reported_soft_state: SoftState,
    /// A `Ready` is out and `advance` has not been called: what it handed to apply.
    outstanding: Option<Outstanding>,
}

/// What the outstanding `Ready` handed out.
struct Outstanding {
    /// `applying` when the `Ready` was built: applied once `advance` comes.
    applying_to: Index,
}

impl Raft {
    /// Validates the config and restores from what storage recovered.
    ///
    /// A persisted commit index beyond the restored log is clamped (the hard state and the
    /// entries are written separately, and the commit index is allowed to lag). Entries of
    /// a higher term than the hard state's mean a crash cut the last persist short before
    /// its messages left; the term is raised to theirs with no vote, which promises nothing
    /// new.
    pub fn new(config: Config, restored: Restored) -> Result<Raft, ConfigError> {
        config.validate()?;
        let Restored { hard_state, snapshot, entries, initial_membership } = restored;
        if hard_state.term > MAX_INDEX_OR_TERM {
            return Err(ConfigError::Restore(format!("the hard state's term {} is out of range", hard_state.term)));
        }
        let log = RaftLog::restore(snapshot, initial_membership, entries).map_err(ConfigError::Restore)?;
        if log.last_index() > MAX_INDEX_OR_TERM || log.last_term() > MAX_INDEX_OR_TERM {
            return Err(ConfigError::Restore(format!("the log's last index {} is out of range", log.last_index())));
        }
        let mut term = hard_state.term;
        let mut vote = hard_state.vote;
        if log.last_term() > term {
            term = log.last_term();
            vote = None;
        }
        let commit = hard_state.commit.clamp(log.snapshot_index(), log.last_index());
        let applied = log.snapshot_index();
        let id = config.id;
        let mut raft = Raft {
            timeout_rng: TimeoutRng::new(id, term),
            randomized_election_ticks: config.election_ticks,
            config,
            log,
            term,
            vote,
            commit,
            role: Role::Follower,
            leader: None,
            ticks: 0,
            restarted: hard_state.term > 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            leader_state: None,
            round: 0,
            incoming_snapshot: None,
            applied,
            applying: applied,
            outbox_now: Vec::new(),
            outbox: Vec::new(),
            reads_ready: Vec::new(),
            reads_failed: Vec::new(),
            snapshot_to_persist: None,
            reported_hard_state: hard_state,
            reported_soft_state: SoftState { role: Role::Follower, term: hard_state.term, leader: None },
            outstanding: None,
        };
        raft.reset_election_timer();
        raft.reported_soft_state = raft.soft_state();
        raft.check_invariants();
        Ok(raft)
    }

    // ---- events in ----

    /// One tick of logical time (the driver decides how long a tick is; etcd: 100 ms).
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
        self.check_invariants();
    }

    /// A message from another node. Messages not addressed to this node, from non-members
    /// where that matters, or stale, are ignored (never a panic, whatever the content).
    pub fn step(&mut self, message: Message) {
        let me = self.id();
        if message.to != me || message.from == me || message.from == 0 || message.term == 0 {
            return;
        }
        if !within_limits(&message) {
            return;
        }
        if self.apply_term_rules(&message) {
            self.dispatch(message);
        }
        self.check_invariants();
    }

    /// Appends a command at the leader. Returns (term, index) of its entry: the command is
    /// committed iff the entry committed at `index` has that `term`.
    pub fn propose(&mut self, command: Bytes) -> Result<(Term, Index), ProposeError> {
        let limit = self.config.max_uncommitted_entries as u64;
        self.leader_state_for_proposal()?;
        if limit > 0 && self.log.last_index() - self.commit >= limit {
            return Err(ProposeError::Busy);
        }
        let index = self.log.last_index() + 1;
        self.log.append(Entry { term: self.term, index, payload: EntryPayload::Command(command) });
        if let Some(leader) = self.leader_state.as_mut() {
            leader.needs_broadcast = true;
        }
        self.check_invariants();
        Ok((self.term, index))
    }

    /// Appends a membership change at the leader (single-server changes; see types.rs).
    pub fn propose_membership(&mut self, change: MembershipChange) -> Result<(Term, Index), ProposeError> {
        let result = self.propose_membership_change(change);
        self.check_invariants();
        result
    }

    /// Starts a linearizable read with the caller's `id`. It comes back in
    /// `Ready::reads` (serve it once applied >= index) or `Ready::failed_reads`.
    /// Errors immediately with NotLeader on a non-leader.
    pub fn read_index(&mut self, id: u64) -> Result<(), ProposeError> {
        let result = self.start_read(id);
        self.check_invariants();
        result
    }

    /// Leader transfer (diss. §3.10) to `to`.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        let result = self.start_transfer(to);
        self.check_invariants();
        result
    }

    /// Campaign now (tests, and a single-node cluster's first start). Goes through
    /// pre-vote when it is on; does nothing on a leader or a node that is not a voter.
    pub fn campaign(&mut self) {
        self.hup(false);
        self.check_invariants();
    }

    /// The driver has durably written a snapshot of the state machine as of applied index
    /// `through` (`data` is its bytes): drop the log through it; the core keeps `data` to send
    /// InstallSnapshot to followers that are behind.
    pub fn compact(&mut self, through: Index, data: Bytes) -> Result<(), CompactError> {
        let result = self.compact_log(through, data);
        self.check_invariants();
        result
    }

    // ---- actions out ----

    /// Whether [`Raft::ready`] has something (always false while a `Ready` is outstanding).
    pub fn has_ready(&self) -> bool {
        if self.outstanding.is_some() {
            return false;
        }
        !self.outbox_now.is_empty()
            || !self.outbox.is_empty()
            || self.hard_state() != self.reported_hard_state
            || self.log.has_unstable()
            || self.snapshot_to_persist.is_some()
            || self.commit > self.applying
            || !self.reads_ready.is_empty()
            || !self.reads_failed.is_empty()
            || self.soft_state() != self.reported_soft_state
            || self.leader_state.as_ref().is_some_and(|l| l.needs_broadcast || l.reads.heartbeat_pending)
    }

    /// The next batch of actions (empty if one is still outstanding: see ready.rs).
    pub fn ready(&mut self) -> Ready {
        if self.outstanding.is_some() {
            return Ready::default();
        }
        // Sends deferred so that everything proposed since the last Ready goes out in one
        // batch per follower, and all reads since then share one heartbeat round.
        self.flush_leader_sends();

        let mut ready = Ready::default();
        let soft_state = self.soft_state();
        if soft_state != self.reported_soft_state {
            ready.soft_state = Some(soft_state);
            self.reported_soft_state = soft_state;
        }
        let hard_state = self.hard_state();
        let mut term_or_vote_changed = false;
        if hard_state != self.reported_hard_state {
            term_or_vote_changed =
                hard_state.term != self.reported_hard_state.term || hard_state.vote != self.reported_hard_state.vote;
            ready.hard_state = Some(hard_state);
            self.reported_hard_state = hard_state;
        }
        ready.snapshot = self.snapshot_to_persist.take();
        ready.entries = self.log.take_unstable();
        ready.messages_now = std::mem::take(&mut self.outbox_now);
        ready.messages = std::mem::take(&mut self.outbox);
        if term_or_vote_changed && !ready.messages_now.is_empty() && !self.config.bugs().vote_before_persist {
            let mut all = std::mem::take(&mut ready.messages_now);
            all.append(&mut ready.messages);
            ready.messages = all;
        }
        ready.committed = self.log.entries_between(self.applying + 1, self.commit);
        self.applying = self.commit;
        ready.reads = std::mem::take(&mut self.reads_ready);
        ready.failed_reads = std::mem::take(&mut self.reads_failed);
        if !ready.is_empty() {
            self.outstanding = Some(Outstanding { applying_to: self.applying });
        }
        self.check_invariants();
        ready
    }

    /// "Storage done": everything in the last Ready is durable, its `messages` were handed
    /// to the network, and its `committed` entries (and snapshot) are applied.
    pub fn advance(&mut self) {
        let Some(outstanding) = self.outstanding.take() else { return };
        self.log.mark_handed_stable();
        self.applied = self.applied.max(outstanding.applying_to);
        if self.role == Role::Leader {
            // The leader's own entries count toward a quorum only now that they are durable.
            self.maybe_commit();
        }
        self.check_invariants();
    }

    // ---- inspection (the simulator's invariant checks, the runtime's status) ----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The latest term this node has seen.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The node's role; `Learner` for a follower that is not a voter in its membership.
    pub fn role(&self) -> Role {
        if self.role == Role::Follower && !self.log.membership().voters.contains(&self.id()) {
            Role::Learner
        } else {
            self.role
        }
    }

    /// Who this node believes leads its term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Whom this node voted for in its term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> Index {
        self.commit
    }

    /// The last index handed out in `Ready::committed` and acknowledged by `advance`.
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The first entry kept in memory (snapshot index + 1).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// The last index in the log (the snapshot's if no entry follows it).
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// Term of the entry at `index`: Some for the snapshot's index and every kept entry.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term_at(index)
    }

    /// The entry at `index`, if it is kept in memory.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The membership in effect: the latest in the log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.log.membership()
    }

    /// What the latest snapshot covers, if there is one.
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.log.snapshot().map(|s| &s.meta)
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- internals shared by the submodules ----

    fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.commit }
    }

    fn soft_state(&self) -> SoftState {
        SoftState { role: self.role(), term: self.term, leader: self.leader }
    }

    /// The term rules every message goes through first (§5.1, with the pre-vote and
    /// check-quorum exceptions of diss. §9.6 and §6.2, as etcd documents them). Returns
    /// whether the message should be handled further.
    fn apply_term_rules(&mut self, message: &Message) -> bool {
        if message.term > self.term {
            match &message.body {
                // Pre-vote never changes terms: the sender only asks what would happen, and a
                // grant carries the term we asked for.
                MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { granted: true } => {}
                // A refusal carries the responder's term: ours is behind, so catch up (etcd's
                // rule; without it a node ahead in term but behind in log and one ahead in log
                // but behind in term refuse each other forever).
                MessageBody::PreVoteResponse { granted: false } => self.become_follower(message.term, None),
                // A node that heard from a live leader recently ignores a vote request
                // entirely, term included, so a returning partitioned node cannot depose a
                // healthy leader. A transfer's election is wanted, so it passes.
                MessageBody::RequestVote { transfer: false, .. } if self.in_lease() => return false,
                MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(message.term, Some(message.from));
                }
                _ => self.become_follower(message.term, None),
            }
            return true;
        }
        if message.term < self.term {
            self.answer_stale(message);
            return false;
        }
        true
    }

    /// Answers a message from an older term with this node's term, so the sender (a deposed
    /// leader or a stale candidate) learns it is behind (Figure 2: "reply false if term <
    /// currentTerm"). The answers echo round 0 and no conflict hint: they must never count
    /// as a ReadIndex acknowledgement or steer backtracking if they reach a current leader.
    fn answer_stale(&mut self, message: &Message) {
        let body = match &message.body {
            MessageBody::AppendEntries { .. } => MessageBody::AppendEntriesResponse {
                success: false,
                match_index: self.log.last_index(),
                conflict: None,
                round: 0,
            },
            MessageBody::InstallSnapshot { meta, .. } => MessageBody::InstallSnapshotResponse {
                snapshot_index: meta.index,
                next_offset: 0,
                done: false,
                round: 0,
            },
            MessageBody::RequestVote { .. } => MessageBody::RequestVoteResponse { granted: false },
            MessageBody::PreVote { .. } => {
                // A refused pre-vote carries our term, so the pre-candidate catches up.
                let reply = Message {
                    from: self.id(),
                    to: message.from,
                    term: self.term,
                    body: MessageBody::PreVoteResponse { granted: false },
                };
                self.send_vote_response(reply);
                return;
            }
            _ => return,
        };
        self.send_after_persist(message.from, body);
    }

    /// Routes a message whose term is now equal to ours (or a pre-vote exchange).
    fn dispatch(&mut self, message: Message) {
        let Message { from, term, body, .. } = message;
        match body {
            MessageBody::PreVote { last_log_index, last_log_term } => {
                self.handle_pre_vote(from, term, last_log_index, last_log_term)
            }
            MessageBody::PreVoteResponse { granted } => self.handle_pre_vote_response(from, term, granted),
            MessageBody::RequestVote { last_log_index, last_log_term, .. } => {
                self.handle_request_vote(from, last_log_index, last_log_term)
            }
            MessageBody::RequestVoteResponse { granted } => self.handle_vote_response(from, granted),
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit, round } => {
                self.handle_append_entries(from, prev_log_index, prev_log_term, entries, leader_commit, round)
            }
            MessageBody::AppendEntriesResponse { success, match_index, conflict, round } => {
                self.handle_append_response(from, success, match_index, conflict, round)
            }
            MessageBody::InstallSnapshot { meta, offset, data, done, round } => {
                self.handle_install_snapshot(from, meta, offset, data, done, round)
            }
            MessageBody::InstallSnapshotResponse { snapshot_index, next_offset, done, round } => {
                self.handle_install_snapshot_response(from, snapshot_index, next_offset, done, round)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(),
        }
    }

    /// Queues a message that depends on nothing unpersisted.
    fn send_now(&mut self, to: NodeId, body: MessageBody) {
        let message = Message { from: self.id(), to, term: self.term, body };
        self.outbox_now.push(message);
    }

    /// Queues a message that may leave only once the next `Ready` is durable.
    fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let message = Message { from: self.id(), to, term: self.term, body };
        self.outbox.push(message);
    }

    /// Queues a (pre-)vote answer: after the persist, unless the test-only
    /// `Bug::VoteBeforePersist` sends it at once.
    fn send_vote_response(&mut self, message: Message) {
        if self.config.bugs().vote_before_persist {
            self.outbox_now.push(message);
        } else {
            self.outbox.push(message);
        }
    }

    /// The leader state, if this node may take a proposal now.
    fn leader_state_for_proposal(&self) -> Result<&LeaderState, ProposeError> {
        let Some(leader) = self.leader_state.as_ref() else {
            return Err(ProposeError::NotLeader { leader: self.leader });
        };
        if leader.transfer.is_some() {
            return Err(ProposeError::Transferring);
        }
        Ok(leader)
    }

    /// Checks the invariants only a bug in the core can break (TigerBeetle style: turn a
    /// silent corruption into a crash you can see). Debug builds only.
    fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        self.log.check_invariants();
        assert!(self.commit <= self.log.last_index(), "commit {} beyond the log's end", self.commit);
        assert!(self.commit >= self.log.snapshot_index(), "the snapshot is committed");
        assert!(self.applied <= self.applying && self.applying <= self.commit, "applied <= applying <= commit");
        assert!(self.log.last_term() <= self.term, "no entry from a future term");
        assert_eq!(self.role == Role::Leader, self.leader_state.is_some(), "leader state iff leader");
        if self.role == Role::Leader {
            assert_eq!(self.leader, Some(self.id()), "a leader knows it leads");
            assert_eq!(self.vote, Some(self.id()), "a leader voted for itself");
        }
        if let Some(leader) = &self.leader_state {
            let membership = self.log.membership();
            for (id, progress) in &leader.progress {
                assert!(membership.contains(*id) && *id != self.id(), "progress only for other members");
                assert!(progress.match_index < progress.next_index, "next is past match");
                assert!(progress.match_index <= self.log.last_index(), "match within the log");
            }
            let others = membership.voters.union(&membership.learners).filter(|id| **id != self.id()).count();
            assert_eq!(others, leader.progress.len(), "progress for every other member");
        }
    }
}

/// A one-line summary (the full state is large and mostly the log).
impl std::fmt::Debug for Raft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.id())
            .field("role", &self.role())
            .field("term", &self.term)
            .field("vote", &self.vote)
            .field("leader", &self.leader)
            .field("first_index", &self.log.first_index())
            .field("last_index", &self.log.last_index())
            .field("commit", &self.commit)
            .field("applied", &self.applied)
            .field("membership", self.log.membership())
            .finish()
    }
}

/// Whether every index and term in `message` is at most [`MAX_INDEX_OR_TERM`].
fn within_limits(message: &Message) -> bool {
    let ok = |value: u64| value <= MAX_INDEX_OR_TERM;
    ok(message.term)
        && match &message.body {
            MessageBody::PreVote { last_log_index, last_log_term }
            | MessageBody::RequestVote { last_log_index, last_log_term, .. } => {
                ok(*last_log_index) && ok(*last_log_term)
            }
            MessageBody::PreVoteResponse { .. } | MessageBody::RequestVoteResponse { .. } | MessageBody::TimeoutNow => {
                true
            }
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit, .. } => {
                ok(*prev_log_index)
                    && ok(*prev_log_term)
                    && ok(*leader_commit)
                    && entries.iter().all(|e| ok(e.index) && ok(e.term))
            }
            MessageBody::AppendEntriesResponse { match_index, conflict, .. } => {
                ok(*match_index) && conflict.is_none_or(|c| ok(c.first_index) && c.term.is_none_or(ok))
            }
            MessageBody::InstallSnapshot { meta, .. } => ok(meta.index) && ok(meta.term),
            MessageBody::InstallSnapshotResponse { snapshot_index, .. } => ok(*snapshot_index),
        }
}
