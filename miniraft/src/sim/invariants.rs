//! The safety properties of Raft (Figure 3 of the paper), checked after every event of a
//! simulated run, plus the persistence contract that makes them survive crashes.
//!
//! - **Election safety**: at most one leader per term, over the whole run (a map from term
//!   to the one node ever seen leading it).
//! - **Log matching**: if two logs hold an entry with the same index and term, the logs are
//!   identical up to it. Checked cheaply with a hash chain: every entry a node persists gets
//!   `digest(previous digest, index, term, payload)`, and one global map from (index, term)
//!   to digest must agree for every node that ever persists that entry. Equal digests mean
//!   equal prefixes, so one lookup per persisted entry checks the whole prefix.
//! - **Leader completeness**: an entry known committed by term `T` is in the log of every
//!   leader of a term after `T` (or inside its snapshot).
//! - **State-machine safety**: no two nodes apply different entries at one index, and no two
//!   snapshots at one index hold different bytes.
//! - **Commit safety**: a node's commit index never goes down within one process lifetime,
//!   and the global committed prefix never changes (every node that counts index `i` as
//!   committed has the same term there).
//! - **Promises survive crashes**: after a restart, a node's durable term is at least the
//!   term of every message it sent before the crash, and it still holds every vote it
//!   granted in that term. A core that sends before it persists breaks this even when the
//!   run is too short to turn it into two leaders.
//!
//! What it leaves out: liveness (the run's end checks that a healed cluster makes
//! progress) and linearizability (the client history goes to `miniraft::check`).

use std::collections::btree_map::Entry as MapEntry;
use std::collections::BTreeMap;

use bytes::Bytes;

use crate::message::{Message, MessageBody};
use crate::raft::Raft;
use crate::types::{Entry, EntryPayload, Index, MembershipChange, NodeId, Role, SnapshotMeta, Term};

use super::disk::Durable;
use super::rng::Digest;

/// A committed entry as far as the run knows it.
#[derive(Clone, Copy, Debug)]
struct Committed {
    /// The entry's term.
    term: Term,
    /// The lowest term of a node that counted it committed: it was committed in this term
    /// or earlier, so every leader of a later term must have it.
    known_by_term: Term,
}

/// One node's persisted log, as hash chain digests.
#[derive(Clone, Debug, Default)]
struct LogView {
    /// The snapshot the view starts after (0, 0 for an empty log).
    base_index: Index,
    base_term: Term,
    base_digest: Digest,
    /// `chain[k]` is the (term, chain digest) of index `base_index + 1 + k`.
    chain: Vec<(Term, Digest)>,
}

impl LogView {
    fn last_index(&self) -> Index {
        self.base_index + self.chain.len() as Index
    }

    fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        if index < self.base_index {
            return None;
        }
        self.chain.get((index - self.base_index - 1) as usize).map(|(term, _)| *term)
    }

    fn digest_at(&self, index: Index) -> Option<Digest> {
        if index == self.base_index {
            return Some(self.base_digest);
        }
        if index < self.base_index {
            return None;
        }
        self.chain.get((index - self.base_index - 1) as usize).map(|(_, digest)| *digest)
    }
}

/// What one node promised in messages, in its current lifetime.
#[derive(Clone, Copy, Debug, Default)]
struct Promises {
    /// The highest term of any message it sent (pre-vote messages excluded: they carry the
    /// term the sender would campaign in, which it has not adopted).
    max_term_sent: Term,
    /// The last vote it granted: (term, candidate).
    vote_granted: Option<(Term, NodeId)>,
}

/// Per-node tracking.
#[derive(Clone, Debug, Default)]
struct NodeTrack {
    /// The commit index last seen in this process lifetime.
    last_commit: Index,
    /// Committed indexes up to here have been compared with the global committed prefix.
    checked_commit: Index,
    /// The last index applied in this lifetime.
    applied: Index,
    log: LogView,
    promises: Promises,
}

/// The checker. Feed it every observation; it collects violations.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Whether restarts are checked against the promises sent before the crash.
    check_persistence: bool,
    /// Term -> the node that led it.
    leaders: BTreeMap<Term, NodeId>,
    /// (index, term) -> hash chain digest, over every entry any node ever persisted.
    chain: BTreeMap<(Index, Term), Digest>,
    /// Index -> the committed entry's term and when it was known committed.
    committed: BTreeMap<Index, Committed>,
    /// Index -> digest of the entry applied there.
    applied: BTreeMap<Index, Digest>,
    /// Index -> digest of the state machine snapshot taken or installed there.
    snapshots: BTreeMap<Index, Digest>,
    nodes: BTreeMap<NodeId, NodeTrack>,
    violations: Vec<String>,
    /// The current virtual time, stamped on violations.
    now: u64,
}

/// The digest of what an entry carries.
pub fn payload_digest(payload: &EntryPayload) -> Digest {
    let digest = Digest::default();
    match payload {
        EntryPayload::Noop => digest.word(0),
        EntryPayload::Command(bytes) => digest.word(1).bytes(bytes),
        EntryPayload::Membership(change) => {
            let (kind, id) = match change {
                MembershipChange::AddLearner(id) => (1, id),
                MembershipChange::PromoteLearner(id) => (2, id),
                MembershipChange::AddVoter(id) => (3, id),
                MembershipChange::Remove(id) => (4, id),
            };
            digest.word(2).word(kind).word(*id)
        }
    }
}

fn entry_digest(entry: &Entry) -> Digest {
    Digest::default().word(entry.index).word(entry.term).word(payload_digest(&entry.payload).0)
}

impl Invariants {
    /// A checker that has seen nothing; `check_persistence` turns the restart check on.
    pub fn new(check_persistence: bool) -> Invariants {
        Invariants { check_persistence, ..Invariants::default() }
    }

    /// Sets the time stamped on violations found from now on.
    pub fn set_time(&mut self, now: u64) {
        self.now = now;
    }

    /// Whether anything was violated.
    pub fn violated(&self) -> bool {
        !self.violations.is_empty()
    }

    /// Every violation found, in order.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Records a violation found outside this module (the driver's own checks).
    pub fn fail(&mut self, what: String) {
        let now = self.now;
        self.violations.push(format!("[t={}.{:06}s] {what}", now / 1_000_000, now % 1_000_000));
    }

    fn track(&mut self, node: NodeId) -> &mut NodeTrack {
        self.nodes.entry(node).or_default()
    }

    /// After any event that touched `raft`: election safety, leader completeness, commit
    /// monotonicity and the committed prefix.
    pub fn observe(&mut self, raft: &Raft) {
        let id = raft.id();
        let term = raft.term();
        if raft.role() == Role::Leader {
            match self.leaders.entry(term) {
                MapEntry::Vacant(slot) => {
                    slot.insert(id);
                    self.check_leader_completeness(raft);
                }
                MapEntry::Occupied(slot) => {
                    let other = *slot.get();
                    if other != id {
                        self.fail(format!("election safety: nodes {other} and {id} both led term {term}"));
                    }
                }
            }
        }
        let commit = raft.commit_index();
        let track = self.track(id);
        let (last_commit, checked) = (track.last_commit, track.checked_commit);
        if commit < last_commit {
            self.fail(format!("commit index of node {id} went down from {last_commit} to {commit} without a restart"));
        }
        let track = self.track(id);
        track.last_commit = commit;
        if commit > checked {
            track.checked_commit = commit;
            for index in checked + 1..=commit {
                let Some(entry_term) = raft.term_at(index) else { continue };
                match self.committed.entry(index) {
                    MapEntry::Vacant(slot) => {
                        slot.insert(Committed { term: entry_term, known_by_term: term });
                    }
                    MapEntry::Occupied(mut slot) => {
                        let known = slot.get_mut();
                        if known.term != entry_term {
                            let was = known.term;
                            self.fail(format!(
                                "committed prefix changed: index {index} was committed with term {was}, \
                                 node {id} (term {term}) counts it committed with term {entry_term}"
                            ));
                        } else {
                            known.known_by_term = known.known_by_term.min(term);
                        }
                    }
                }
            }
        }
    }

    fn check_leader_completeness(&mut self, leader: &Raft) {
        let term = leader.term();
        let snapshot_index = leader.snapshot_meta().map_or(0, |meta| meta.index);
        let mut missing = None;
        for (&index, committed) in &self.committed {
            if committed.known_by_term >= term || index < snapshot_index {
                continue;
            }
            let has = leader.term_at(index);
            if has != Some(committed.term) {
                missing = Some((index, *committed, has));
                break;
            }
        }
        if let Some((index, committed, has)) = missing {
            self.fail(format!(
                "leader completeness: node {} leads term {term} without the entry at index {index} \
                 (term {}, committed by term {}); its log has term {has:?} there (last index {})",
                leader.id(),
                committed.term,
                committed.known_by_term,
                leader.last_index()
            ));
        }
    }

    /// A `Ready` is being persisted by `node`: the log matching check on its entries and the
    /// snapshot it installs.
    pub fn on_persist(&mut self, node: NodeId, snapshot: Option<&SnapshotMeta>, entries: &[Entry]) {
        if let Some(meta) = snapshot {
            self.install_view(node, meta.index, meta.term);
        }
        let Some(first) = entries.first().map(|entry| entry.index) else { return };
        let log = &self.track(node).log;
        if first <= log.base_index || first > log.last_index() + 1 {
            let (base, last) = (log.base_index, log.last_index());
            self.fail(format!(
                "node {node} persists entries from {first}, but its persisted log is ({base}, {last}]: \
                 not a contiguous append"
            ));
            return;
        }
        let mut log = std::mem::take(&mut self.track(node).log);
        log.chain.truncate((first - 1 - log.base_index) as usize);
        let mut previous = log.digest_at(first - 1).unwrap_or_default();
        for (offset, entry) in entries.iter().enumerate() {
            let expected = first + offset as Index;
            if entry.index != expected {
                self.fail(format!("node {node} persists entry {} where {expected} belongs", entry.index));
                break;
            }
            let digest = previous.word(entry.index).word(entry.term).word(payload_digest(&entry.payload).0);
            match self.chain.entry((entry.index, entry.term)) {
                MapEntry::Vacant(slot) => {
                    slot.insert(digest);
                }
                MapEntry::Occupied(slot) => {
                    if *slot.get() != digest {
                        self.fail(format!(
                            "log matching: node {node}'s entry at index {} term {} differs from another node's \
                             (the entries or a prefix before them differ)",
                            entry.index, entry.term
                        ));
                    }
                }
            }
            log.chain.push((entry.term, digest));
            previous = digest;
        }
        self.track(node).log = log;
    }

    /// The node's persisted log now starts after a snapshot at (index, term).
    fn install_view(&mut self, node: NodeId, index: Index, term: Term) {
        let known = if index == 0 { Some(Digest::default()) } else { self.chain.get(&(index, term)).copied() };
        let Some(base_digest) = known else {
            self.fail(format!("node {node} installs a snapshot at index {index} term {term}, an entry no node logged"));
            return;
        };
        let log = &mut self.track(node).log;
        if log.term_at(index) == Some(term) && index >= log.base_index {
            let keep_from = (index - log.base_index) as usize;
            log.chain.drain(..keep_from.min(log.chain.len()));
        } else {
            log.chain.clear();
        }
        log.base_index = index;
        log.base_term = term;
        log.base_digest = base_digest;
    }

    /// `node` applies a committed entry (the driver checked it is the next index).
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) {
        let track = self.track(node);
        if entry.index != track.applied + 1 && track.applied != 0 {
            let applied = track.applied;
            self.fail(format!("node {node} applies index {} right after {applied}", entry.index));
        }
        self.track(node).applied = entry.index;
        let digest = entry_digest(entry);
        match self.applied.entry(entry.index) {
            MapEntry::Vacant(slot) => {
                slot.insert(digest);
            }
            MapEntry::Occupied(slot) => {
                if *slot.get() != digest {
                    self.fail(format!(
                        "state-machine safety: node {node} applies a different entry at index {} (term {}) \
                         than another node did",
                        entry.index, entry.term
                    ));
                }
            }
        }
        if let Some(committed) = self.committed.get(&entry.index) {
            if committed.term != entry.term {
                let term = committed.term;
                self.fail(format!(
                    "state-machine safety: node {node} applies index {} with term {}, committed with term {term}",
                    entry.index, entry.term
                ));
            }
        }
    }

    /// `node` restored its state machine from a snapshot at `index` (its own compaction or
    /// the leader's): the bytes must be the same on every node.
    pub fn on_snapshot_data(&mut self, node: NodeId, index: Index, data: &Bytes) {
        self.track(node).applied = index;
        let digest = Digest::default().bytes(data);
        match self.snapshots.entry(index) {
            MapEntry::Vacant(slot) => {
                slot.insert(digest);
            }
            MapEntry::Occupied(slot) => {
                if *slot.get() != digest {
                    self.fail(format!(
                        "state-machine safety: node {node}'s snapshot at index {index} holds different state \
                         than another node's"
                    ));
                }
            }
        }
    }

    /// `node` put `message` on the wire.
    pub fn on_send(&mut self, message: &Message) {
        let promises = &mut self.track(message.from).promises;
        match message.body {
            MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { .. } => return,
            MessageBody::RequestVoteResponse { granted: true } => {
                promises.vote_granted = Some((message.term, message.to));
            }
            _ => {}
        }
        promises.max_term_sent = promises.max_term_sent.max(message.term);
    }

    /// `node` crashed: its commit tracking restarts with the next lifetime.
    pub fn on_crash(&mut self, node: NodeId) {
        let track = self.track(node);
        track.last_commit = 0;
        track.checked_commit = 0;
        track.applied = 0;
    }

    /// `node` restarts from `durable`: check its promises, and rebuild its log view from
    /// what it recovered.
    pub fn on_restart(&mut self, node: NodeId, durable: &Durable) {
        let promises = std::mem::take(&mut self.track(node).promises);
        let hard = durable.hard_state;
        if !self.check_persistence {
            // Skip the checks, keep the bookkeeping.
        } else if hard.term < promises.max_term_sent {
            self.fail(format!(
                "persistence: node {node} restarted at term {} but had sent a message at term {} before \
                 crashing: it sent before its term was durable",
                hard.term, promises.max_term_sent
            ));
        }
        if let Some((term, candidate)) = promises.vote_granted.filter(|_| self.check_persistence) {
            if hard.term == term && hard.vote != Some(candidate) {
                self.fail(format!(
                    "persistence: node {node} granted its vote in term {term} to {candidate} but restarted \
                     with vote {:?}: it answered before the vote was durable",
                    hard.vote
                ));
            }
        }
        // The promises carry over: what it recovered is what it must keep.
        let track = self.track(node);
        track.promises.max_term_sent = hard.term;
        track.promises.vote_granted = hard.vote.map(|candidate| (hard.term, candidate));
        track.log = LogView::default();
        let (index, term) = durable.snapshot.as_ref().map_or((0, 0), |s| (s.meta.index, s.meta.term));
        self.install_view(node, index, term);
        if !durable.entries.is_empty() {
            self.on_persist(node, None, &durable.entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term, byte: u8) -> Entry {
        Entry { index, term, payload: EntryPayload::Command(Bytes::from(vec![byte])) }
    }

    #[test]
    fn log_matching_catches_a_differing_prefix_at_a_matching_entry() {
        let mut checker = Invariants::new(true);
        checker.on_persist(1, None, &[entry(1, 1, 0), entry(2, 1, 1)]);
        checker.on_persist(2, None, &[entry(1, 1, 0), entry(2, 1, 1)]);
        assert!(!checker.violated());
        // Node 3 has a different entry at 1 but the same (2, 1): the prefixes differ.
        checker.on_persist(3, None, &[entry(1, 1, 9), entry(2, 1, 1)]);
        assert!(checker.violated());
        assert!(checker.violations()[0].contains("log matching"), "{:?}", checker.violations());
    }

    #[test]
    fn a_truncated_and_rewritten_suffix_is_fine() {
        let mut checker = Invariants::new(true);
        checker.on_persist(1, None, &[entry(1, 1, 0), entry(2, 1, 1)]);
        checker.on_persist(1, None, &[entry(2, 2, 5), entry(3, 2, 6)]);
        checker.on_persist(2, None, &[entry(1, 1, 0), entry(2, 2, 5)]);
        assert!(!checker.violated(), "{:?}", checker.violations());
        checker.on_persist(2, None, &[entry(5, 2, 5)]);
        assert!(checker.violated(), "a gap in the persisted log is caught");
    }

    #[test]
    fn applying_different_entries_at_one_index_is_caught() {
        let mut checker = Invariants::new(true);
        checker.on_apply(1, &entry(1, 1, 0));
        checker.on_apply(2, &entry(1, 1, 0));
        assert!(!checker.violated());
        checker.on_apply(3, &entry(1, 2, 0));
        assert!(checker.violations()[0].contains("state-machine safety"));
    }

    #[test]
    fn a_forgotten_vote_is_caught_at_restart() {
        let mut checker = Invariants::new(true);
        let vote = Message { from: 1, to: 2, term: 3, body: MessageBody::RequestVoteResponse { granted: true } };
        checker.on_send(&vote);
        let mut durable = Durable::default();
        durable.hard_state.term = 3;
        durable.hard_state.vote = Some(2);
        checker.on_restart(1, &durable);
        assert!(!checker.violated(), "the vote was durable");
        checker.on_send(&vote);
        durable.hard_state.vote = None;
        checker.on_restart(1, &durable);
        assert!(checker.violations()[0].contains("persistence"), "{:?}", checker.violations());
    }
}
