//! Scenario tests of the core on a tiny deterministic in-memory cluster: a FIFO network
//! with cuttable links and a drop filter, a "disk" per node that persists each `Ready` the
//! way storage must, and a driver that follows `ready.rs`'s loop order. Subtle properties
//! are also shown failing with the deliberately broken variant (`Bugs`).
//!
//! The last tests (`random_faults_*`) run seeded schedules of ticks, reordered, dropped and
//! duplicated messages, partitions, crashes in the middle of a `Ready`, compactions,
//! membership changes and transfers, checking Election Safety, agreement on committed
//! entries, State Machine Safety and read freshness after every step, and liveness once the
//! faults stop. The simulator (`sim`) does this at scale with a real state machine and a
//! linearizability checker; these keep the core honest on its own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;
use crate::config::{Bugs, ReadMode};
use crate::message::Conflict;
use crate::ready::ReadState;

/// What a node's storage holds.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl Disk {
    /// Persists a `Ready` as ready.rs describes.
    fn persist(&mut self, ready: &Ready) {
        if let Some(hs) = ready.hard_state {
            self.hard_state = hs;
        }
        if let Some(snapshot) = &ready.snapshot {
            let keeps = self.entries.iter().any(|e| e.index == snapshot.meta.index && e.term == snapshot.meta.term);
            if keeps {
                self.entries.retain(|e| e.index > snapshot.meta.index);
            } else {
                self.entries.clear();
            }
            self.snapshot = Some(snapshot.clone());
        }
        if let Some(first) = ready.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(ready.entries.iter().cloned());
        }
    }
}

/// One node: the core, its disk, and what its "state machine" applied.
struct Node {
    raft: Raft,
    disk: Disk,
    initial_membership: Membership,
    /// Every entry applied, by index (a snapshot restore replaces the prefix).
    applied: BTreeMap<Index, Entry>,
    /// The index a snapshot restore brought the state machine to, if any.
    restored_from: Option<Index>,
    reads: Vec<ReadState>,
    failed_reads: Vec<u64>,
    readies: Vec<Ready>,
}

type Filter = Box<dyn FnMut(&Message) -> bool>;

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    network: VecDeque<Message>,
    /// Links (from, to) that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Drops a message when it returns true.
    filter: Option<Filter>,
    /// Every message delivered, in order.
    delivered: Vec<Message>,
}

fn config(id: NodeId) -> Config {
    Config::new(id)
}

fn voters(ids: impl IntoIterator<Item = NodeId>) -> Membership {
    Membership::with_voters(ids)
}

fn entry(index: Index, term: Term) -> Entry {
    Entry { index, term, payload: EntryPayload::Command(Bytes::from(format!("cmd-{index}-{term}"))) }
}

/// Entries `from..=through`, all of `term`.
fn run(from: Index, through: Index, term: Term) -> Vec<Entry> {
    (from..=through).map(|i| entry(i, term)).collect()
}

impl Cluster {
    /// `n` fresh nodes with voters 1..=n, configured by `make`.
    fn new(n: u64, make: impl Fn(NodeId) -> Config) -> Cluster {
        let mut cluster = Cluster::empty();
        for id in 1..=n {
            cluster.add_node(make(id), Disk::default(), voters(1..=n));
        }
        cluster
    }

    fn empty() -> Cluster {
        Cluster {
            nodes: BTreeMap::new(),
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            filter: None,
            delivered: Vec::new(),
        }
    }

    fn add_node(&mut self, config: Config, disk: Disk, initial_membership: Membership) {
        let id = config.id;
        let restored = Restored {
            hard_state: disk.hard_state,
            snapshot: disk.snapshot.clone(),
            entries: disk.entries.clone(),
            initial_membership: initial_membership.clone(),
        };
        let raft = Raft::new(config, restored).expect("valid config and restored state");
        let restored_from = disk.snapshot.as_ref().map(|s| s.meta.index);
        let node = Node {
            raft,
            disk,
            initial_membership,
            applied: BTreeMap::new(),
            restored_from,
            reads: Vec::new(),
            failed_reads: Vec::new(),
            readies: Vec::new(),
        };
        self.nodes.insert(id, node);
    }

    fn raft(&self, id: NodeId) -> &Raft {
        &self.nodes[&id].raft
    }

    fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        &mut self.nodes.get_mut(&id).expect("node exists").raft
    }

    /// Runs one node's driver loop until it has nothing ready.
    fn drive(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        while node.raft.has_ready() {
            let ready = node.raft.ready();
            self.network.extend(ready.messages_now.iter().cloned());
            node.disk.persist(&ready);
            self.network.extend(ready.messages.iter().cloned());
            if let Some(snapshot) = &ready.snapshot {
                node.applied.clear();
                node.restored_from = Some(snapshot.meta.index);
            }
            for entry in &ready.committed {
                let expected = node.applied.keys().next_back().copied().or(node.restored_from).unwrap_or(0) + 1;
                assert_eq!(entry.index, expected, "committed entries come in order, without gaps");
                node.applied.insert(entry.index, entry.clone());
            }
            node.reads.extend(ready.reads.iter().copied());
            node.failed_reads.extend(ready.failed_reads.iter().copied());
            node.readies.push(ready);
            node.raft.advance();
        }
    }

    /// Drives every node and delivers messages until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.drive(id);
            }
            if self.network.is_empty() {
                return;
            }
            let batch: Vec<Message> = self.network.drain(..).collect();
            for message in batch {
                if self.cut.contains(&(message.from, message.to)) {
                    continue;
                }
                if self.filter.as_mut().is_some_and(|drop| drop(&message)) {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&message.to) {
                    self.delivered.push(message.clone());
                    node.raft.step(message);
                }
            }
        }
        panic!("the cluster did not settle");
    }

    /// Ticks the given nodes once each, then settles.
    fn tick(&mut self, ids: &[NodeId]) {
        for id in ids {
            self.raft_mut(*id).tick();
        }
        self.settle();
    }

    /// Ticks every node `times` times, settling after each.
    fn tick_all(&mut self, times: usize) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..times {
            self.tick(&ids);
        }
    }

    fn campaign(&mut self, id: NodeId) {
        self.raft_mut(id).campaign();
        self.settle();
    }

    fn isolate(&mut self, id: NodeId) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn propose(&mut self, id: NodeId, command: &str) -> (Term, Index) {
        let proposed = self.raft_mut(id).propose(Bytes::from(command.to_owned())).expect("the leader accepts");
        self.settle();
        proposed
    }

    /// Crashes a node (losing everything not persisted) and restarts it from its disk.
    fn restart(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("node exists");
        let config = node.raft.config().clone();
        self.network.retain(|m| m.to != id);
        self.add_node(config, node.disk, node.initial_membership);
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|n| n.raft.role() == Role::Leader).map(|n| n.raft.id()).collect()
    }

    /// Ticks until some node of `among` leads (bounded).
    fn tick_until_leader(&mut self, among: &[NodeId]) -> NodeId {
        for _ in 0..200 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().filter(|id| !self.is_isolated(*id)).collect();
            self.tick(&ids);
            if let Some(leader) = among.iter().copied().find(|id| self.raft(*id).role() == Role::Leader) {
                return leader;
            }
        }
        panic!("no leader among {among:?}");
    }

    fn is_isolated(&self, id: NodeId) -> bool {
        self.nodes.keys().all(|other| *other == id || self.cut.contains(&(id, *other)))
    }

    /// State Machine Safety over the whole run: no two nodes applied different entries at
    /// the same index.
    fn assert_applied_agree(&self) {
        let mut seen: BTreeMap<Index, (NodeId, Term)> = BTreeMap::new();
        for node in self.nodes.values() {
            for (index, entry) in &node.applied {
                match seen.get(index) {
                    Some((other, term)) => assert_eq!(
                        *term,
                        entry.term,
                        "nodes {other} and {} applied different entries at {index}",
                        node.raft.id()
                    ),
                    None => {
                        seen.insert(*index, (node.raft.id(), entry.term));
                    }
                }
            }
        }
    }

    fn applied_index(&self, id: NodeId) -> Index {
        self.raft(id).applied_index()
    }
}

fn commands(node: &Node) -> Vec<Bytes> {
    node.applied
        .values()
        .filter_map(|e| match &e.payload {
            EntryPayload::Command(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

// ---- elections ----

#[test]
fn single_node_elects_itself_and_commits() {
    let mut cluster = Cluster::new(1, config);
    cluster.campaign(1);
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    assert_eq!(cluster.raft(1).term(), 1);
    assert_eq!(cluster.raft(1).commit_index(), 1, "the Noop commits once durable");
    let (term, index) = cluster.propose(1, "x");
    assert_eq!((term, index), (1, 2));
    assert_eq!(cluster.applied_index(1), 2);
    assert_eq!(commands(&cluster.nodes[&1]), vec![Bytes::from("x")]);
    // It also elects itself on its own after an election timeout.
    let mut cluster = Cluster::new(1, config);
    cluster.tick_all(20);
    assert_eq!(cluster.raft(1).role(), Role::Leader);
}

#[test]
fn three_nodes_elect_and_replicate() {
    let mut cluster = Cluster::new(3, config);
    let leader = cluster.tick_until_leader(&[1, 2, 3]);
    assert_eq!(cluster.leaders(), vec![leader]);
    for i in 0..5 {
        cluster.propose(leader, &format!("c{i}"));
    }
    cluster.tick_all(1); // a heartbeat carries the commit index to the followers
    for node in cluster.nodes.values() {
        assert_eq!(node.raft.leader(), Some(leader));
        assert_eq!(node.raft.applied_index(), 6, "Noop plus five commands on node {}", node.raft.id());
        assert_eq!(commands(node).len(), 5);
    }
    cluster.assert_applied_agree();
}

#[test]
fn a_new_leader_takes_over_and_the_old_one_rejoins() {
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    cluster.propose(1, "before");
    cluster.isolate(1);
    // The cut-off leader accepts a proposal it can never commit.
    cluster.raft_mut(1).propose(Bytes::from("lost")).expect("still believes it leads");
    let new_leader = cluster.tick_until_leader(&[2, 3]);
    assert!(cluster.raft(new_leader).term() > 1);
    cluster.propose(new_leader, "after");
    for _ in 0..2 * cluster.raft(1).config().election_ticks {
        cluster.tick(&[1]);
    }
    assert_ne!(cluster.raft(1).role(), Role::Leader, "check-quorum deposed the isolated leader");
    cluster.heal();
    cluster.tick_all(3);
    let old = &cluster.nodes[&1];
    assert_eq!(old.raft.leader(), Some(new_leader));
    assert_eq!(old.raft.last_index(), cluster.raft(new_leader).last_index());
    assert_eq!(commands(old), vec![Bytes::from("before"), Bytes::from("after")], "the lost proposal was truncated");
    cluster.assert_applied_agree();
}

#[test]
fn pre_vote_keeps_a_partitioned_node_from_bumping_terms() {
    fn partitioned_follower_term(pre_vote: bool) -> (Term, Term, NodeId) {
        let mut cluster = Cluster::new(3, |id| Config { pre_vote, ..Config::new(id) });
        cluster.campaign(1);
        cluster.isolate(3);
        for _ in 0..100 {
            cluster.tick(&[1, 2, 3]);
        }
        let isolated_term = cluster.raft(3).term();
        cluster.heal();
        cluster.tick_all(30);
        let leader = cluster.leaders()[0];
        (isolated_term, cluster.raft(leader).term(), leader)
    }
    let (isolated_term, cluster_term, leader) = partitioned_follower_term(true);
    assert_eq!(isolated_term, 1, "pre-votes fail without changing the term");
    assert_eq!((cluster_term, leader), (1, 1), "the healthy leader was never disturbed");
    // Without pre-vote the same partition inflates the node's term, and its return
    // disrupts the cluster (the leader learns the higher term and steps down).
    let (isolated_term, cluster_term, _) = partitioned_follower_term(false);
    assert!(isolated_term > 5, "without pre-vote the term grows: {isolated_term}");
    assert!(cluster_term >= isolated_term);
}

#[test]
fn a_refused_pre_vote_teaches_the_pre_candidate_the_term() {
    // Two voters that each refuse the other's pre-vote: node 1 is behind in term but ahead
    // in log, node 3 ahead in term but behind in log (found by the simulator, seed 155).
    // Node 3's refusal must carry its term, so node 1 catches up and its next pre-vote (for
    // term 26) is granted; if refusals carried the request's term, nobody would ever lead.
    let mut disk_1 = Disk { hard_state: HardState { term: 24, vote: None, commit: 0 }, ..Disk::default() };
    disk_1.entries = run(1, 4, 1);
    disk_1.entries.push(entry(5, 24));
    let mut disk_3 = Disk { hard_state: HardState { term: 25, vote: None, commit: 0 }, ..Disk::default() };
    disk_3.entries = run(1, 4, 1);
    disk_3.entries.push(entry(5, 23));
    let mut cluster = Cluster::empty();
    cluster.add_node(config(1), disk_1, voters([1, 3]));
    cluster.add_node(config(3), disk_3, voters([1, 3]));
    cluster.tick_all(60);
    let leaders = cluster.leaders();
    assert_eq!(leaders, vec![1], "the node with the longer log leads once it catches up in term");
    assert!(cluster.raft(1).term() >= 26);
}

#[test]
fn check_quorum_steps_down_an_isolated_leader() {
    fn role_after_isolation(check_quorum: bool) -> Role {
        let mut cluster = Cluster::new(3, |id| Config { check_quorum, ..Config::new(id) });
        cluster.campaign(1);
        cluster.isolate(1);
        // Check-quorum looks back one election timeout at a time: the first period still
        // saw the election's answers, the second sees nothing.
        for _ in 0..2 * cluster.raft(1).config().election_ticks {
            cluster.tick(&[1]);
        }
        cluster.raft(1).role()
    }
    assert_eq!(role_after_isolation(true), Role::Follower);
    assert_eq!(role_after_isolation(false), Role::Leader, "without check-quorum it keeps believing");
}

#[test]
fn followers_in_lease_ignore_vote_requests_but_not_transfers() {
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    let term = cluster.raft(2).term();
    let request = |transfer| Message {
        from: 3,
        to: 2,
        term: term + 1,
        body: MessageBody::RequestVote { last_log_index: 100, last_log_term: term, transfer },
    };
    cluster.raft_mut(2).step(request(false));
    assert_eq!(cluster.raft(2).term(), term, "ignored entirely while the leader is fresh");
    assert!(!cluster.raft(2).has_ready());
    cluster.raft_mut(2).step(request(true));
    assert_eq!(cluster.raft(2).term(), term + 1);
    assert_eq!(cluster.raft(2).vote(), Some(3));
}

#[test]
fn non_voters_never_campaign() {
    // Node 4 starts with the founding membership {1,2,3}: it is not a voter.
    let mut cluster = Cluster::new(3, config);
    cluster.add_node(config(4), Disk::default(), voters(1..=3));
    assert_eq!(cluster.raft(4).role(), Role::Learner);
    cluster.isolate(4);
    for _ in 0..100 {
        cluster.tick(&[4]);
    }
    assert_eq!(cluster.raft(4).term(), 0);
    assert!(cluster.raft(4).has_ready() || cluster.network.is_empty());
}

// ---- replication ----

#[test]
fn conflicting_logs_converge_in_few_round_trips() {
    // Leader-to-be 1: terms 1 (1..=10), 2 (11..=15), 3 (16..=20).
    // Node 2 diverged: term 2 from 11 to 60 (a long log of a deposed leader's term).
    // Node 3 is far behind: 1..=5.
    let mut cluster = Cluster::empty();
    let mut leader_log = run(1, 10, 1);
    leader_log.extend(run(11, 15, 2));
    leader_log.extend(run(16, 20, 3));
    let mut diverged = run(1, 10, 1);
    diverged.extend(run(11, 60, 2));
    let disks = [(1, leader_log, 3), (2, diverged, 2), (3, run(1, 5, 1), 1)];
    for (id, entries, term) in disks {
        let disk = Disk { hard_state: HardState { term, vote: None, commit: 5 }, snapshot: None, entries };
        cluster.add_node(config(id), disk, voters(1..=3));
    }
    cluster.campaign(1);
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    cluster.tick_all(2);
    let rejections: Vec<(NodeId, Conflict)> = cluster
        .delivered
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntriesResponse { success: false, conflict: Some(c), .. } => Some((m.from, *c)),
            _ => None,
        })
        .collect();
    assert_eq!(
        rejections,
        vec![(2, Conflict { term: Some(2), first_index: 11 }), (3, Conflict { term: None, first_index: 6 }),],
        "one rejection each: the hint skips a whole term, or to the end of a short log"
    );
    let leader_entries: Vec<Entry> = (1..=21).map(|i| cluster.raft(1).entry(i).cloned().expect("kept")).collect();
    for id in [2, 3] {
        assert_eq!(cluster.raft(id).last_index(), 21, "node {id}'s divergent suffix is gone");
        let entries: Vec<Entry> = (1..=21).map(|i| cluster.raft(id).entry(i).cloned().expect("kept")).collect();
        assert_eq!(entries, leader_entries);
        assert_eq!(cluster.raft(id).commit_index(), 21);
    }
    cluster.assert_applied_agree();
}

#[test]
fn batching_and_pipelining_respect_the_limits() {
    let mut cluster = Cluster::new(3, |id| Config { max_entries_per_message: 4, ..Config::new(id) });
    cluster.campaign(1);
    for i in 0..10 {
        cluster.raft_mut(1).propose(Bytes::from(format!("{i}"))).expect("leader");
    }
    cluster.settle();
    let appends: Vec<usize> = cluster
        .delivered
        .iter()
        .filter(|m| m.to == 2)
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries { entries, .. } if !entries.is_empty() => Some(entries.len()),
            _ => None,
        })
        .collect();
    assert!(appends.iter().all(|n| *n <= 4), "{appends:?}");
    assert_eq!(appends.iter().sum::<usize>(), 11, "the Noop and ten commands, each sent once: {appends:?}");
    // The ten proposals made before one Ready went out in ceil(10/4) = 3 pipelined batches.
    assert_eq!(appends.iter().filter(|n| **n > 1).count() + appends.iter().filter(|n| **n == 1).count(), appends.len());
    assert!(appends.len() <= 4, "{appends:?}");

    // Stop-and-wait when max_inflight_messages is 1: one batch out at a time.
    let mut cluster =
        Cluster::new(2, |id| Config { max_entries_per_message: 1, max_inflight_messages: 1, ..Config::new(id) });
    cluster.campaign(1);
    for i in 0..3 {
        cluster.raft_mut(1).propose(Bytes::from(format!("{i}"))).expect("leader");
    }
    let ready = cluster.raft_mut(1).ready();
    let batches = ready
        .messages_now
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty()))
        .count();
    assert_eq!(batches, 1, "one batch of one entry: the window holds one");
    cluster.network.extend(ready.messages_now);
    cluster.raft_mut(1).advance();
    cluster.settle();
    assert_eq!(cluster.raft(2).last_index(), 4, "the rest followed, one answer at a time");
}

#[test]
fn a_leader_never_commits_an_old_term_entry_by_counting() {
    // Figure 8 of the paper, with five nodes. Index 2 of term 2 is on S1 and S2; S5 holds a
    // different index 2 from term 3. S1 is elected in term 4 and copies its index 2 to S3
    // and S4 (a majority) while its own Noop (index 3, term 4) reaches only S2. Committing
    // index 2 now would be wrong: S5 can still be elected (its last term, 3, beats theirs)
    // and overwrite it.
    fn figure8(bugs: Bugs) -> (Index, Cluster) {
        let mut cluster = Cluster::empty();
        let logs: [(NodeId, Vec<Entry>); 5] = [
            (1, vec![entry(1, 1), entry(2, 2)]),
            (2, vec![entry(1, 1), entry(2, 2)]),
            (3, vec![entry(1, 1)]),
            (4, vec![entry(1, 1)]),
            (5, vec![entry(1, 1), entry(2, 3)]),
        ];
        for (id, entries) in logs {
            let mut config =
                Config { pre_vote: false, check_quorum: false, max_entries_per_message: 1, ..Config::new(id) };
            config.bugs = bugs;
            let disk = Disk { hard_state: HardState { term: 3, vote: None, commit: 1 }, snapshot: None, entries };
            cluster.add_node(config, disk, voters(1..=5));
        }
        cluster.isolate(5);
        // S3 and S4 never receive the Noop: the first probe (which carries it, and which
        // they reject because they lack index 2) is let through, later copies are dropped.
        let mut probed = BTreeSet::new();
        cluster.filter = Some(Box::new(move |m| {
            let carries_noop =
                matches!(&m.body, MessageBody::AppendEntries { entries, .. } if entries.iter().any(|e| e.index == 3));
            carries_noop && (m.to == 3 || m.to == 4) && !probed.insert(m.to)
        }));
        cluster.campaign(1);
        assert_eq!(cluster.raft(1).role(), Role::Leader);
        assert_eq!(cluster.raft(1).term(), 4);
        cluster.tick(&[1]);
        for id in [1, 2, 3] {
            assert_eq!(cluster.raft(id).term_at(2), Some(2), "index 2 of term 2 is on a majority");
        }
        let s1_commit = cluster.raft(1).commit_index();
        // S1 goes away; S5 wins term 5 with votes from S2, S3, S4 and overwrites index 2.
        cluster.filter = None;
        cluster.heal();
        cluster.isolate(1);
        cluster.campaign(5); // term 4: the others already voted in it
        cluster.campaign(5); // term 5
        assert_eq!(cluster.raft(5).role(), Role::Leader);
        cluster.tick(&[5]);
        (s1_commit, cluster)
    }

    let (s1_commit, cluster) = figure8(Bugs::default());
    assert_eq!(s1_commit, 1, "index 2 is on a majority but not of the current term: not committed");
    assert_eq!(cluster.raft(2).term_at(2), Some(3), "S5 overwrote it, which was legal");
    cluster.assert_applied_agree();

    // With the commit-by-counting bug, S1 commits and applies index 2 of term 2, and then
    // the cluster commits a different entry at index 2.
    let bugs = Bugs { commit_previous_term_by_counting: true, ..Bugs::default() };
    let (s1_commit, cluster) = figure8(bugs);
    assert_eq!(s1_commit, 2, "the broken leader counted replicas of an old-term entry");
    assert_eq!(cluster.nodes[&1].applied.get(&2).map(|e| e.term), Some(2));
    assert_eq!(cluster.nodes[&5].applied.get(&2).map(|e| e.term), Some(3));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.assert_applied_agree()));
    assert!(caught.is_err(), "State Machine Safety is violated, and the check sees it");
}

#[test]
fn a_follower_never_commits_past_what_it_verified() {
    let mut cluster = Cluster::new(2, config);
    cluster.campaign(1);
    let term = cluster.raft(2).term();
    // A heartbeat claiming commit 100 at prev 1: node 2 may commit only through 1.
    cluster.raft_mut(2).step(Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::AppendEntries {
            prev_log_index: 1,
            prev_log_term: term,
            entries: vec![],
            leader_commit: 100,
            round: 0,
        },
    });
    assert_eq!(cluster.raft(2).commit_index(), 1);
}

// ---- the persistence contract ----

fn vote_answers(ready: &Ready) -> (usize, usize) {
    let is_vote =
        |m: &&Message| matches!(m.body, MessageBody::RequestVoteResponse { .. } | MessageBody::PreVoteResponse { .. });
    (ready.messages_now.iter().filter(is_vote).count(), ready.messages.iter().filter(is_vote).count())
}

#[test]
fn votes_leave_only_after_they_are_persisted() {
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    let mut after = 0;
    for node in cluster.nodes.values() {
        for ready in &node.readies {
            let (now, later) = vote_answers(ready);
            assert_eq!(now, 0, "a vote answer in messages_now on node {}", node.raft.id());
            after += later;
            for m in &ready.messages_now {
                assert!(!matches!(m.body, MessageBody::RequestVote { .. } | MessageBody::AppendEntriesResponse { .. }));
            }
        }
    }
    assert_eq!(after, 4, "two pre-vote and two vote answers, all after the persist");

    // The broken variant sends them at once ...
    let bugs = Bugs { vote_before_persist: true, ..Bugs::default() };
    let mut cluster = Cluster::new(3, |id| Config { bugs, ..Config::new(id) });
    cluster.campaign(1);
    let early: usize = cluster.nodes.values().flat_map(|n| n.readies.iter()).map(|r| vote_answers(r).0).sum();
    assert_eq!(early, 4);

    // ... and a crash before the persist lets a node vote twice in one term.
    let mut voter = Raft::new(
        Config { bugs, pre_vote: false, ..Config::new(3) },
        Restored { initial_membership: voters(1..=3), ..Restored::default() },
    )
    .expect("valid");
    let request = |from| Message {
        from,
        to: 3,
        term: 1,
        body: MessageBody::RequestVote { last_log_index: 0, last_log_term: 0, transfer: false },
    };
    voter.step(request(1));
    let first = voter.ready();
    assert!(first
        .messages_now
        .iter()
        .any(|m| m.to == 1 && m.body == MessageBody::RequestVoteResponse { granted: true }));
    // Crash: the Ready was never persisted. Restart from the empty disk.
    let mut voter = Raft::new(
        Config { bugs, pre_vote: false, ..Config::new(3) },
        Restored { initial_membership: voters(1..=3), ..Restored::default() },
    )
    .expect("valid");
    voter.step(request(2));
    let second = voter.ready();
    assert!(
        second.messages_now.iter().any(|m| m.to == 2 && m.body == MessageBody::RequestVoteResponse { granted: true }),
        "two grants in term 1: the bug is real"
    );
}

#[test]
fn a_leader_sends_entries_before_its_own_write_but_counts_itself_only_after() {
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    cluster.isolate(2);
    cluster.isolate(3);
    cluster.raft_mut(1).propose(Bytes::from("x")).expect("leader");
    let ready = cluster.raft_mut(1).ready();
    assert!(ready
        .messages_now
        .iter()
        .any(|m| matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty())));
    assert_eq!(ready.entries.len(), 1);
    // Node 2 acknowledges before the leader's own write is done: one durable copy of 2
    // needed is not enough, the leader's own copy does not count yet.
    let term = cluster.raft(1).term();
    cluster.raft_mut(1).step(Message {
        from: 2,
        to: 1,
        term,
        body: MessageBody::AppendEntriesResponse { success: true, match_index: 2, conflict: None, round: 0 },
    });
    assert_eq!(cluster.raft(1).commit_index(), 1);
    cluster.raft_mut(1).advance();
    assert_eq!(cluster.raft(1).commit_index(), 2, "durable on the leader and node 2: committed");
}

#[test]
fn a_term_change_holds_every_message_until_the_persist() {
    // A single-voter leader with a learner: its first AppendEntries is of a term that is not
    // durable yet, so it must wait for the persist.
    let membership = Membership { voters: [1].into(), learners: [2].into() };
    let mut raft =
        Raft::new(config(1), Restored { initial_membership: membership, ..Restored::default() }).expect("valid");
    raft.campaign();
    assert_eq!(raft.role(), Role::Leader);
    let ready = raft.ready();
    assert!(ready.messages_now.is_empty());
    assert!(ready.messages.iter().any(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. })));
}

#[test]
fn a_restart_recovers_and_catches_up() {
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    cluster.propose(1, "a");
    cluster.tick_all(1);
    cluster.restart(2);
    assert_eq!(cluster.raft(2).term(), 1);
    assert_eq!(cluster.raft(2).last_index(), 2);
    cluster.propose(1, "b");
    cluster.tick_all(1);
    assert_eq!(commands(&cluster.nodes[&2]), vec![Bytes::from("a"), Bytes::from("b")], "replayed from the disk");
    cluster.assert_applied_agree();
}

// ---- reads ----

#[test]
fn read_index_waits_for_a_quorum_round() {
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    cluster.propose(1, "w");
    cluster.raft_mut(1).read_index(7).expect("leader");
    let ready = cluster.raft_mut(1).ready();
    assert!(ready.reads.is_empty(), "not before the heartbeat round is echoed");
    let round = ready
        .messages_now
        .iter()
        .find_map(|m| match m.body {
            MessageBody::AppendEntries { round, .. } => Some(round),
            _ => None,
        })
        .expect("heartbeats went out");
    cluster.network.extend(ready.messages_now);
    cluster.raft_mut(1).advance();
    cluster.settle();
    assert_eq!(cluster.nodes[&1].reads, vec![ReadState { id: 7, index: 2 }]);
    assert!(round > 0);
    assert_eq!(cluster.raft_mut(2).read_index(8), Err(ProposeError::NotLeader { leader: Some(1) }));
}

#[test]
fn read_index_fails_on_a_deposed_leader() {
    fn isolated_leader_reads(bugs: Bugs) -> (Vec<ReadState>, Vec<u64>) {
        let mut cluster = Cluster::new(3, |id| Config { bugs, ..Config::new(id) });
        cluster.campaign(1);
        cluster.isolate(1);
        cluster.raft_mut(1).read_index(9).expect("still believes it leads");
        cluster.settle();
        let reads_before_step_down = cluster.nodes[&1].reads.clone();
        for _ in 0..2 * cluster.raft(1).config().election_ticks {
            cluster.tick(&[1]);
        }
        assert_ne!(cluster.raft(1).role(), Role::Leader);
        (reads_before_step_down, cluster.nodes[&1].failed_reads.clone())
    }
    let (reads, failed) = isolated_leader_reads(Bugs::default());
    assert!(reads.is_empty(), "no quorum answered the round");
    assert_eq!(failed, vec![9]);
    // Broken: answered at once from the local commit index, with no check.
    let (reads, failed) = isolated_leader_reads(Bugs { read_without_read_index: true, ..Bugs::default() });
    assert_eq!(reads.len(), 1);
    assert!(failed.is_empty());
}

#[test]
fn reads_wait_for_the_first_commit_of_the_term() {
    let mut cluster = Cluster::new(3, config);
    cluster.raft_mut(1).campaign();
    // Deliver only the election, so that the Noop is not committed yet.
    cluster.filter = Some(Box::new(|m| matches!(m.body, MessageBody::AppendEntries { .. })));
    cluster.settle();
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    assert!(cluster.raft(1).commit_index() < cluster.raft(1).last_index());
    cluster.raft_mut(1).read_index(1).expect("queued");
    cluster.settle();
    assert!(cluster.nodes[&1].reads.is_empty());
    cluster.filter = None;
    cluster.tick(&[1]);
    cluster.tick(&[1]);
    let noop = cluster.raft(1).last_index();
    assert_eq!(cluster.nodes[&1].reads, vec![ReadState { id: 1, index: noop }]);
}

#[test]
fn single_voter_reads_are_immediate() {
    let mut cluster = Cluster::new(1, config);
    cluster.campaign(1);
    cluster.raft_mut(1).read_index(3).expect("leader");
    let ready = cluster.raft_mut(1).ready();
    assert_eq!(ready.reads, vec![ReadState { id: 3, index: 1 }]);
}

#[test]
fn lease_reads_skip_the_round_trip_while_the_lease_holds() {
    let mut cluster = Cluster::new(3, |id| Config { read_mode: ReadMode::Lease, lease_ticks: 5, ..Config::new(id) });
    cluster.campaign(1);
    cluster.tick(&[1, 2, 3]); // a heartbeat round acknowledged by both followers
    cluster.raft_mut(1).read_index(1).expect("leader");
    let ready = cluster.raft_mut(1).ready();
    assert_eq!(ready.reads, vec![ReadState { id: 1, index: 1 }], "served at once");
    assert!(ready.messages_now.is_empty(), "no round trip");
    cluster.raft_mut(1).advance();
    // Cut off, the leader's lease runs out before check-quorum would depose it.
    cluster.isolate(1);
    for _ in 0..5 {
        cluster.tick(&[1]);
    }
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    cluster.raft_mut(1).read_index(2).expect("leader");
    cluster.settle();
    assert!(cluster.nodes[&1].reads.is_empty(), "the expired lease falls back to ReadIndex, which cannot finish");
    // The same read in ReadIndex mode always needs the round trip.
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    cluster.tick(&[1, 2, 3]);
    cluster.raft_mut(1).read_index(1).expect("leader");
    assert!(cluster.raft_mut(1).ready().reads.is_empty());
}

// ---- snapshots ----

#[test]
fn a_lagging_follower_gets_the_snapshot_in_chunks() {
    let mut cluster = Cluster::new(3, |id| Config { snapshot_chunk_bytes: 10, ..Config::new(id) });
    cluster.campaign(1);
    cluster.isolate(3);
    for i in 0..20 {
        cluster.propose(1, &format!("v{i:02}"));
    }
    cluster.tick(&[1, 2]);
    let applied = cluster.applied_index(1);
    assert_eq!(applied, 21);
    assert_eq!(
        cluster.raft_mut(1).compact(applied + 1, Bytes::new()),
        Err(CompactError::NotApplied { requested: 22, applied: 21 })
    );
    let data = Bytes::from((0..95u8).collect::<Vec<u8>>());
    cluster.raft_mut(1).compact(applied, data.clone()).expect("applied");
    assert_eq!(
        cluster.raft_mut(1).compact(applied, Bytes::new()),
        Err(CompactError::AlreadyCompacted { snapshot: 21 })
    );
    assert_eq!(cluster.raft(1).first_index(), 22);
    assert_eq!(cluster.raft(1).term_at(21), Some(1));
    assert_eq!(cluster.raft(1).entry(21), None);

    // Lose the third chunk once: node 3 asks again from where it is.
    let mut dropped = false;
    cluster.filter = Some(Box::new(move |m| {
        let third = matches!(m.body, MessageBody::InstallSnapshot { offset: 20, .. });
        if third && !dropped {
            dropped = true;
            return true;
        }
        false
    }));
    cluster.heal();
    cluster.tick_all(4);
    let chunks =
        cluster.delivered.iter().filter(|m| m.to == 3 && matches!(m.body, MessageBody::InstallSnapshot { .. })).count();
    assert!(chunks >= 10, "95 bytes in 10-byte chunks: {chunks} delivered");
    let installed: Vec<&Snapshot> = cluster.nodes[&3].readies.iter().filter_map(|r| r.snapshot.as_ref()).collect();
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].data, data);
    assert_eq!(installed[0].meta.index, 21);
    assert_eq!(installed[0].meta.membership, voters(1..=3));
    assert_eq!(cluster.raft(3).snapshot_meta().map(|m| m.index), Some(21));
    cluster.propose(1, "after");
    cluster.tick_all(1);
    assert_eq!(cluster.applied_index(3), 22);
    assert_eq!(cluster.nodes[&3].restored_from, Some(21));
    cluster.assert_applied_agree();
    // A restart from the snapshot on disk works too.
    cluster.restart(3);
    assert_eq!(cluster.raft(3).first_index(), 22);
    assert_eq!(cluster.raft(3).last_index(), 22);
}

#[test]
fn a_snapshot_older_than_the_commit_index_is_not_installed() {
    let mut cluster = Cluster::new(2, config);
    cluster.campaign(1);
    cluster.propose(1, "a");
    cluster.tick_all(1);
    let term = cluster.raft(2).term();
    let meta = SnapshotMeta { index: 1, term, membership: voters(1..=2) };
    cluster.raft_mut(2).step(Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::InstallSnapshot { meta, offset: 0, data: Bytes::from("x"), done: true, round: 0 },
    });
    let ready = cluster.raft_mut(2).ready();
    assert!(ready.snapshot.is_none());
    assert!(ready.messages.iter().any(|m| matches!(m.body, MessageBody::InstallSnapshotResponse { done: true, .. })));
    assert_eq!(cluster.raft(2).last_index(), 2);
}

#[test]
fn a_snapshot_keeps_the_log_after_it_when_it_matches() {
    let mut raft = Raft::new(
        config(2),
        Restored {
            hard_state: HardState { term: 1, vote: None, commit: 0 },
            entries: run(1, 5, 1),
            initial_membership: voters(1..=2),
            ..Restored::default()
        },
    )
    .expect("valid");
    let meta = SnapshotMeta { index: 3, term: 1, membership: voters(1..=2) };
    raft.step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::InstallSnapshot { meta, offset: 0, data: Bytes::from("s"), done: true, round: 0 },
    });
    assert_eq!((raft.first_index(), raft.last_index(), raft.commit_index()), (4, 5, 3));
    let ready = raft.ready();
    assert!(ready.snapshot.is_some());
    assert!(ready.committed.is_empty());
    raft.advance();
    assert_eq!(raft.applied_index(), 3);
}

// ---- membership ----

#[test]
fn learners_are_added_promoted_and_removed() {
    let mut cluster = Cluster::new(3, config);
    cluster.add_node(config(4), Disk::default(), voters(1..=3));
    cluster.raft_mut(1).campaign();
    // Deliver only the election, so the new leader has not committed its Noop yet.
    cluster.filter = Some(Box::new(|m| matches!(m.body, MessageBody::AppendEntries { .. })));
    cluster.settle();
    assert_eq!(
        cluster.raft_mut(1).propose_membership(MembershipChange::AddLearner(4)),
        Err(ProposeError::Membership("the leader has not committed an entry of its term yet; retry shortly"))
    );
    cluster.filter = None;
    cluster.tick(&[1]);
    cluster.raft_mut(1).propose_membership(MembershipChange::AddLearner(4)).expect("accepted");
    assert!(
        matches!(
            cluster.raft_mut(1).propose_membership(MembershipChange::AddLearner(5)),
            Err(ProposeError::Membership(_))
        ),
        "one change at a time"
    );
    cluster.settle();
    cluster.tick_all(1);
    assert_eq!(cluster.raft(4).role(), Role::Learner);
    assert_eq!(cluster.raft(4).last_index(), cluster.raft(1).last_index(), "a learner receives the log");
    assert!(cluster.raft(1).membership().learners.contains(&4));

    // A learner does not count toward a quorum: with 2 and 3 cut off nothing commits.
    cluster.isolate(2);
    cluster.isolate(3);
    let (_, index) = cluster.propose(1, "needs-a-voter");
    assert!(cluster.raft(1).commit_index() < index);
    cluster.heal();
    cluster.tick_all(1);
    assert!(cluster.raft(1).commit_index() >= index);

    cluster.raft_mut(1).propose_membership(MembershipChange::PromoteLearner(4)).expect("accepted");
    cluster.settle();
    cluster.tick_all(1);
    assert_eq!(cluster.raft(4).role(), Role::Follower);
    assert_eq!(cluster.raft(1).membership().voters.len(), 4);
    // Four voters: quorum 3, so the leader and node 4 alone cannot commit.
    cluster.isolate(2);
    cluster.isolate(3);
    let (_, index) = cluster.propose(1, "needs-three");
    assert!(cluster.raft(1).commit_index() < index);
    cluster.heal();
    cluster.tick_all(1);

    cluster.raft_mut(1).propose_membership(MembershipChange::Remove(4)).expect("accepted");
    cluster.settle();
    cluster.tick_all(1);
    assert_eq!(cluster.raft(1).membership(), &voters(1..=3));
    // The removed node never learned; its elections fail (pre-vote, leases) and it never
    // disturbs the cluster.
    let term = cluster.raft(1).term();
    cluster.tick_all(50);
    assert_eq!(cluster.leaders(), vec![1]);
    assert_eq!(cluster.raft(1).term(), term);
    cluster.assert_applied_agree();
}

#[test]
fn membership_reverts_when_its_entry_is_truncated() {
    let mut raft = Raft::new(
        config(2),
        Restored {
            hard_state: HardState { term: 1, vote: None, commit: 1 },
            entries: vec![
                entry(1, 1),
                Entry { index: 2, term: 1, payload: EntryPayload::Membership(MembershipChange::AddVoter(4)) },
            ],
            initial_membership: voters(1..=3),
            ..Restored::default()
        },
    )
    .expect("valid");
    assert!(raft.membership().voters.contains(&4), "effective on append");
    raft.step(Message {
        from: 3,
        to: 2,
        term: 2,
        body: MessageBody::AppendEntries {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![entry(2, 2)],
            leader_commit: 1,
            round: 1,
        },
    });
    assert_eq!(raft.term_at(2), Some(2));
    assert_eq!(raft.membership(), &voters(1..=3), "reverted with the truncation");
}

#[test]
fn a_leader_removing_itself_steps_down_once_committed() {
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    cluster.raft_mut(1).propose_membership(MembershipChange::Remove(1)).expect("accepted");
    assert_eq!(cluster.raft(1).role(), Role::Leader, "leads until the removal commits");
    cluster.settle();
    assert_eq!(cluster.raft(1).role(), Role::Learner, "stepped down, and is no longer a voter");
    let leader = cluster.tick_until_leader(&[2, 3]);
    cluster.propose(leader, "without-1");
    cluster.tick_all(1);
    assert_eq!(commands(&cluster.nodes[&leader]), vec![Bytes::from("without-1")]);
    assert_ne!(cluster.raft(1).role(), Role::Leader);
    cluster.assert_applied_agree();
}

// ---- leader transfer ----

#[test]
fn leadership_transfers_to_a_caught_up_follower() {
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    cluster.propose(1, "a");
    cluster.raft_mut(1).transfer_leadership(3).expect("leader");
    assert_eq!(cluster.raft_mut(1).propose(Bytes::from("b")), Err(ProposeError::Transferring));
    cluster.settle();
    assert_eq!(cluster.leaders(), vec![3]);
    assert_eq!(cluster.raft(3).term(), 2);
    assert!(cluster.delivered.iter().any(|m| matches!(m.body, MessageBody::RequestVote { transfer: true, .. })));
    assert_eq!(cluster.raft_mut(1).transfer_leadership(2), Err(ProposeError::NotLeader { leader: Some(3) }));
}

#[test]
fn a_transfer_to_an_unreachable_node_is_abandoned() {
    let mut cluster = Cluster::new(3, config);
    cluster.campaign(1);
    cluster.isolate(3);
    cluster.propose(1, "a");
    cluster.raft_mut(1).transfer_leadership(3).expect("leader");
    assert_eq!(cluster.raft_mut(1).propose(Bytes::from("b")), Err(ProposeError::Transferring));
    for _ in 0..cluster.raft(1).config().election_ticks {
        cluster.tick(&[1, 2]);
    }
    assert_eq!(cluster.leaders(), vec![1]);
    cluster.raft_mut(1).propose(Bytes::from("b")).expect("proposals resume");
    assert!(matches!(cluster.raft_mut(1).transfer_leadership(9), Err(ProposeError::Membership(_))));
}

// ---- robustness ----

/// splitmix64, for the fuzz tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        crate::sim::rng::splitmix64(&mut self.0)
    }

    /// True with probability 1/n.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    /// Mostly small numbers near the interesting range, sometimes extreme ones.
    fn number(&mut self, around: u64) -> u64 {
        match self.next() % 8 {
            0 => u64::MAX - self.next() % 3,
            1 => 0,
            _ => around.saturating_sub(3).saturating_add(self.next() % 7),
        }
    }
}

fn random_message(rng: &mut Rng, to: NodeId, term: Term, last: Index) -> Message {
    let index = rng.number(last);
    let entry_term = rng.number(term);
    let body = match rng.next() % 9 {
        0 => MessageBody::PreVote { last_log_index: index, last_log_term: entry_term },
        1 => MessageBody::PreVoteResponse { granted: rng.one_in(2) },
        2 => MessageBody::RequestVote { last_log_index: index, last_log_term: entry_term, transfer: rng.one_in(2) },
        3 => MessageBody::RequestVoteResponse { granted: rng.one_in(2) },
        4 => {
            let count = rng.next() % 4;
            let start = rng.number(last);
            let entries = (0..count)
                .map(|i| Entry {
                    index: if rng.one_in(5) { rng.number(last) } else { start.wrapping_add(1 + i) },
                    term: rng.number(term),
                    payload: EntryPayload::Command(Bytes::from_static(b"f")),
                })
                .collect();
            MessageBody::AppendEntries {
                prev_log_index: start,
                prev_log_term: rng.number(term),
                entries,
                leader_commit: rng.number(last),
                round: rng.next() % 10,
            }
        }
        5 => MessageBody::AppendEntriesResponse {
            success: rng.one_in(2),
            match_index: rng.number(last),
            conflict: (rng.one_in(2))
                .then(|| Conflict { term: (rng.one_in(2)).then(|| rng.number(term)), first_index: rng.number(last) }),
            round: rng.next() % 10,
        },
        6 => MessageBody::InstallSnapshot {
            meta: SnapshotMeta { index: rng.number(last), term: rng.number(term), membership: voters(1..=3) },
            offset: rng.number(2),
            data: Bytes::from_static(b"snap"),
            done: rng.one_in(2),
            round: rng.next() % 10,
        },
        7 => MessageBody::InstallSnapshotResponse {
            snapshot_index: rng.number(last),
            next_offset: rng.number(2),
            done: rng.one_in(2),
            round: rng.next() % 10,
        },
        _ => MessageBody::TimeoutNow,
    };
    let from = match rng.next() % 6 {
        0 => 0,
        1 => to,
        2 => 9,
        _ => 1 + rng.next() % 3,
    };
    let to = if rng.one_in(10) { 7 } else { to };
    Message { from, to, term: rng.number(term), body }
}

#[test]
fn garbage_messages_never_panic_and_keep_invariants() {
    for seed in 0..40u64 {
        let mut rng = Rng(seed);
        let mut cluster = Cluster::new(3, |id| Config { snapshot_chunk_bytes: 2, ..Config::new(id) });
        cluster.campaign(1 + seed % 3);
        for i in 0..5 {
            if let Some(leader) = cluster.leaders().first().copied() {
                cluster.propose(leader, &format!("{i}"));
            }
        }
        if seed.is_multiple_of(2) {
            let leader = cluster.leaders()[0];
            cluster.tick_all(1);
            let applied = cluster.applied_index(leader);
            let _ = cluster.raft_mut(leader).compact(applied, Bytes::from_static(b"abcde"));
        }
        for step in 0..3_000 {
            let id = 1 + rng.next() % 3;
            let raft = cluster.raft_mut(id);
            let (term, last) = (raft.term(), raft.last_index());
            let message = random_message(&mut rng, id, term, last);
            raft.step(message);
            match rng.next() % 20 {
                0 => raft.tick(),
                1 => {
                    let _ = raft.propose(Bytes::from_static(b"p"));
                }
                2 => {
                    let _ = raft.read_index(step);
                }
                3 => {
                    let _ = raft.transfer_leadership(1 + rng.next() % 4);
                }
                4 => {
                    let _ = raft.propose_membership(MembershipChange::AddLearner(4));
                }
                _ => {}
            }
            if rng.one_in(3) {
                cluster.drive(id);
                cluster.network.clear();
            }
        }
    }
}

#[test]
fn inconsistent_restored_state_is_refused() {
    let gap = Restored { entries: vec![entry(1, 1), entry(3, 1)], ..Restored::default() };
    assert!(matches!(Raft::new(config(1), gap), Err(ConfigError::Restore(_))));
    let decreasing = Restored {
        hard_state: HardState { term: 3, ..HardState::default() },
        entries: vec![entry(1, 2), entry(2, 1)],
        ..Restored::default()
    };
    assert!(matches!(Raft::new(config(1), decreasing), Err(ConfigError::Restore(_))));
    assert!(matches!(Raft::new(Config::new(0), Restored::default()), Err(ConfigError::ZeroId)));
    // A commit index beyond the log is clamped; entries of a newer term raise the term.
    let ahead = Restored {
        hard_state: HardState { term: 1, vote: Some(2), commit: 9 },
        entries: vec![entry(1, 1), entry(2, 2)],
        ..Restored::default()
    };
    let raft = Raft::new(config(1), ahead).expect("recoverable");
    assert_eq!((raft.commit_index(), raft.term(), raft.vote()), (2, 2, None));
}

#[test]
fn the_core_can_move_between_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Raft>();
    let raft = Raft::new(config(1), Restored::default()).expect("valid");
    assert!(format!("{raft:?}").contains("role: Learner"), "not in its own (empty) membership");
}

#[test]
fn election_timeouts_are_deterministic_and_spread() {
    let timeouts = |id| {
        let mut rng = TimeoutRng::new(id, 1);
        (0..5).map(|_| rng.timeout(1, 10)).collect::<Vec<_>>()
    };
    assert_eq!(timeouts(1), timeouts(1));
    assert_ne!(timeouts(1), timeouts(2));
    assert!(timeouts(3).iter().all(|t| (10..20).contains(t)));
}

// ---- randomized faults ----

/// What the chaos run checks after every step.
#[derive(Default)]
struct Safety {
    /// Election Safety: the one leader of each term seen so far.
    leaders: BTreeMap<Term, NodeId>,
    /// The term of the entry committed at each index, by whoever committed it first.
    committed: BTreeMap<Index, Term>,
    /// Reads in flight: id -> the highest commit index anywhere when the read started.
    reads: BTreeMap<u64, Index>,
}

impl Safety {
    fn check(&mut self, cluster: &Cluster) {
        for node in cluster.nodes.values() {
            let raft = &node.raft;
            if raft.role() == Role::Leader {
                let leader = *self.leaders.entry(raft.term()).or_insert(raft.id());
                assert_eq!(leader, raft.id(), "two leaders in term {}", raft.term());
            }
            for index in raft.first_index()..=raft.commit_index() {
                let Some(term) = raft.term_at(index) else { continue };
                let agreed = *self.committed.entry(index).or_insert(term);
                assert_eq!(agreed, term, "node {} committed a different entry at {index}", raft.id());
            }
            for read in &node.reads {
                if let Some(floor) = self.reads.remove(&read.id) {
                    assert!(
                        read.index >= floor,
                        "read {} at index {} misses writes committed through {floor}",
                        read.id,
                        read.index
                    );
                }
            }
        }
        cluster.assert_applied_agree();
    }
}

/// One seeded run of five nodes under faults. Returns the number of commands committed.
fn chaos(seed: u64, make: impl Fn(NodeId) -> Config) -> usize {
    let mut rng = Rng(seed);
    let mut cluster = Cluster::new(5, &make);
    let mut safety = Safety::default();
    let mut next_read = 0u64;
    for _ in 0..3_000 {
        let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
        let mut id = ids[(rng.next() % ids.len() as u64) as usize];
        let action = rng.next() % 1000;
        if (800..940).contains(&action) {
            // Proposals and reads go to a node that believes it leads, when there is one.
            let leaders = cluster.leaders();
            if !leaders.is_empty() {
                id = leaders[(rng.next() % leaders.len() as u64) as usize];
            }
        }
        match action {
            0..=349 => {
                cluster.raft_mut(id).tick();
                cluster.drive(id);
            }
            350..=799 => {
                // Deliver one message, in random order; sometimes drop or duplicate it.
                if !cluster.network.is_empty() {
                    let at = (rng.next() % cluster.network.len() as u64) as usize;
                    let message = cluster.network.remove(at).expect("in range");
                    if rng.one_in(4) {
                        cluster.network.push_back(message.clone());
                    }
                    if !rng.one_in(10) && !cluster.cut.contains(&(message.from, message.to)) {
                        let to = message.to;
                        if let Some(node) = cluster.nodes.get_mut(&to) {
                            node.raft.step(message);
                            cluster.drive(to);
                        }
                    }
                }
            }
            800..=899 => {
                if cluster.raft(id).role() == Role::Leader {
                    let _ = cluster.raft_mut(id).propose(Bytes::from(format!("p{}", rng.next() % 1000)));
                    cluster.drive(id);
                }
            }
            900..=939 => {
                if cluster.raft(id).role() == Role::Leader {
                    next_read += 1;
                    let floor = cluster.nodes.values().map(|n| n.raft.commit_index()).max().unwrap_or(0);
                    if cluster.raft_mut(id).read_index(next_read).is_ok() {
                        safety.reads.insert(next_read, floor);
                    }
                    cluster.drive(id);
                }
            }
            940..=944 => {
                // Crash in the middle of a Ready: its messages_now may have left, nothing
                // of it was persisted.
                if rng.one_in(2) {
                    let ready = cluster.raft_mut(id).ready();
                    cluster.network.extend(ready.messages_now);
                }
                cluster.restart(id);
            }
            945..=954 => {
                if rng.one_in(2) {
                    cluster.heal();
                } else {
                    cluster.isolate(id);
                }
            }
            955..=974 => {
                let applied = cluster.applied_index(id);
                if applied > cluster.raft(id).first_index() + 3 {
                    let through = applied - rng.next() % 3;
                    cluster.raft_mut(id).compact(through, Bytes::from(format!("state@{through}"))).expect("applied");
                    let node = cluster.nodes.get_mut(&id).expect("exists");
                    let snapshot = node.raft.log.snapshot().cloned();
                    node.disk.snapshot = snapshot;
                    node.disk.entries.retain(|e| e.index > through);
                }
            }
            975..=989 => {
                if cluster.raft(id).role() == Role::Leader {
                    let target = 1 + rng.next() % 5;
                    let membership = cluster.raft(id).membership().clone();
                    let change = if membership.learners.contains(&target) {
                        MembershipChange::PromoteLearner(target)
                    } else if membership.voters.contains(&target) && membership.voters.len() > 3 {
                        MembershipChange::Remove(target)
                    } else if membership.voters.contains(&target) {
                        continue;
                    } else {
                        MembershipChange::AddLearner(target)
                    };
                    let _ = cluster.raft_mut(id).propose_membership(change);
                    cluster.drive(id);
                }
            }
            _ => {
                if cluster.raft(id).role() == Role::Leader {
                    let _ = cluster.raft_mut(id).transfer_leadership(1 + rng.next() % 5);
                    cluster.drive(id);
                }
            }
        }
        safety.check(&cluster);
    }
    // Heal and let the cluster converge: it must elect a leader and agree.
    cluster.heal();
    for _ in 0..200 {
        let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
        cluster.tick(&ids);
        safety.check(&cluster);
    }
    let leaders = cluster.leaders();
    assert_eq!(leaders.len(), 1, "seed {seed}: one leader after healing");
    // Liveness once the faults stop: the leader commits a new entry and every member
    // catches up with it (a removed node may lag: nobody sends to it any more).
    let leader = leaders[0];
    if cluster.raft_mut(leader).propose(Bytes::from_static(b"final")).is_ok() {
        cluster.tick_all(5);
    }
    let (last, commit) = (cluster.raft(leader).last_index(), cluster.raft(leader).commit_index());
    assert_eq!(commit, last, "seed {seed}: the leader commits once the faults stop");
    for member in cluster.raft(leader).membership().voters.union(&cluster.raft(leader).membership().learners) {
        let raft = cluster.raft(*member);
        assert_eq!((raft.last_index(), raft.applied_index()), (last, last), "seed {seed}: node {member} caught up");
    }
    safety.committed.len()
}

#[test]
fn random_faults_never_break_safety() {
    // More seeds on demand: MINIRAFT_CHAOS_SEEDS=500 cargo test -p miniraft --lib random_faults
    let seeds = std::env::var("MINIRAFT_CHAOS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30u64);
    let mut committed = 0;
    for seed in 0..seeds {
        committed +=
            chaos(seed, |id| Config { snapshot_chunk_bytes: 4, max_entries_per_message: 3, ..Config::new(id) });
    }
    assert!(committed > 300, "the runs made progress: {committed} entries committed");
}

#[test]
fn random_faults_with_lease_reads_never_break_safety() {
    let seeds = std::env::var("MINIRAFT_CHAOS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15u64);
    for seed in 100..100 + seeds {
        chaos(seed, |id| Config { read_mode: ReadMode::Lease, lease_ticks: 6, ..Config::new(id) });
    }
}

#[test]
fn random_faults_catch_a_stale_read_bug() {
    // The same runs with reads answered without ReadIndex: some seed has a deposed leader
    // answer a read that misses a committed write. (The Figure 8 and early-vote bugs need
    // rarer schedules: `a_leader_never_commits_an_old_term_entry_by_counting` and
    // `votes_leave_only_after_they_are_persisted` build them by hand, and the simulator's
    // many seeds find them.)
    let bugs = Bugs { read_without_read_index: true, ..Bugs::default() };
    let caught = (0..40)
        .find(|seed| std::panic::catch_unwind(|| chaos(*seed, |id| Config { bugs, ..Config::new(id) })).is_err());
    assert!(caught.is_some(), "a deposed leader's stale read went unnoticed");
}
