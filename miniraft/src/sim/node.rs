//! One simulated node: a Raft core, the replicated map it drives, its virtual disk, and
//! the client requests waiting on it. It runs the driver loop of `ready.rs` exactly as the
//! tokio runtime does, with the virtual disk in place of files:
//!
//! 1. send `messages_now`;
//! 2. start writing `hard_state`, `snapshot` and `entries`; the write completes when its
//!    virtual fsync does (the cluster schedules that event), and a crash before then loses
//!    it or tears it;
//! 3. once durable: send `messages`;
//! 4. restore the map from `snapshot` if any, apply `committed`, answer reads;
//! 5. `advance`, then compact if the log has grown enough.
//!
//! A `Ready` that persists nothing skips the fsync and finishes at once. A restart rebuilds
//! the core from what the disk kept, and the map from the durable snapshot; committed
//! entries after it are applied again as the core hands them out.
//!
//! What it leaves out: the runtime's batching of several Readies into one fsync, and client
//! connections (a request is a value; the cluster models its latency).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::Config;
use crate::error::ProposeError;
use crate::kv::{KvCommand, KvResponse, KvStateMachine};
use crate::message::Message;
use crate::raft::Raft;
use crate::ready::{ReadState, Ready};
use crate::state_machine::StateMachine;
use crate::types::{Entry, EntryPayload, Index, Membership, MembershipChange, NodeId, Snapshot, Term};

use super::disk::{CrashEffect, Disk};
use super::invariants::Invariants;
use super::rng::SimRng;

/// A client request's identity, unique in a run.
pub type RequestId = u64;

/// A client's request as it reaches a node.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    pub id: RequestId,
    pub client: u64,
    pub command: KvCommand,
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyResult {
    /// Applied (or read) with this response.
    Ok(KvResponse),
    /// Not the leader; definitely not applied. The hint is who the node thinks leads.
    NotLeader(Option<NodeId>),
    /// Definitely not applied, for the reason given.
    Failed(&'static str),
    /// May or may not have been applied.
    Unknown(&'static str),
}

/// A reply on its way back to a client.
#[derive(Clone, Debug)]
pub struct ClientReply {
    pub request: RequestId,
    pub client: u64,
    pub from: NodeId,
    pub result: ReplyResult,
}

/// What handling one event produced, for the cluster to carry out.
#[derive(Debug, Default)]
pub struct Effects {
    /// Messages to put on the network now.
    pub messages: Vec<Message>,
    /// Replies to clients.
    pub replies: Vec<ClientReply>,
    /// A disk write began with this id: the cluster schedules its fsync.
    pub write_started: Option<u64>,
    /// Membership entries this node applied (index, change): the cluster decommissions a
    /// node once its removal is applied.
    pub membership_applied: Vec<(Index, MembershipChange)>,
    /// Snapshots taken (compaction) and installed from a leader, for the report.
    pub compactions: u64,
    pub snapshots_installed: u64,
}

/// The parts of a `Ready` that wait for its write to be durable.
#[derive(Debug)]
struct Held {
    messages: Vec<Message>,
    snapshot: Option<Snapshot>,
    committed: Vec<Entry>,
    reads: Vec<ReadState>,
    failed_reads: Vec<u64>,
}

/// A node of the simulated cluster.
pub struct SimNode {
    pub id: NodeId,
    /// The configuration every incarnation starts with (bugs included).
    config: Config,
    /// None while the node is down.
    raft: Option<Raft>,
    machine: KvStateMachine,
    pub disk: Disk,
    /// The last index applied, Noop and Membership entries included (the map counts only
    /// commands).
    applied: Index,
    /// The Ready waiting for its fsync.
    held: Option<Held>,
    /// Proposals waiting to commit: index -> (term, request).
    pending_writes: BTreeMap<Index, (Term, ClientRequest)>,
    /// Reads passed to `read_index`, by read id.
    pending_reads: BTreeMap<u64, ClientRequest>,
    /// Reads whose index is known, waiting for the map to catch up: (index, request).
    waiting_reads: Vec<(Index, ClientRequest)>,
    next_read_id: u64,
    /// How many times the node has started; a crash makes events scheduled for the previous
    /// incarnation (ticks, fsyncs) stale.
    pub incarnation: u64,
    /// The node's clock rate in parts per million of real (virtual) time: a node at
    /// 1,100,000 ticks 10% fast.
    pub clock_rate_ppm: u64,
    /// Compact once this many entries are applied past the last snapshot (None: never).
    pub compact_every: Option<u64>,
    /// Removed from the cluster: down until it is added back.
    pub decommissioned: bool,
    /// Removed and replaced by a new node with a new id: down for good.
    pub retired: bool,
    /// The next disk write this node starts will be interrupted by a crash (the crash
    /// fault aims at the fsync window, where the interesting states are).
    pub crash_during_next_write: bool,
}

impl SimNode {
    /// A node that has not started yet, with an empty disk.
    pub fn new(config: Config, initial_membership: Membership, clock_rate_ppm: u64) -> SimNode {
        SimNode {
            id: config.id,
            config,
            raft: None,
            machine: KvStateMachine::new(),
            disk: Disk::new(initial_membership),
            applied: 0,
            held: None,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            waiting_reads: Vec::new(),
            next_read_id: 1,
            incarnation: 0,
            clock_rate_ppm,
            compact_every: None,
            decommissioned: false,
            retired: false,
            crash_during_next_write: false,
        }
    }

    /// The core, while the node is up.
    pub fn raft(&self) -> Option<&Raft> {
        self.raft.as_ref()
    }

    /// Whether the node is up.
    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// The map, for the end-of-run comparison.
    pub fn machine(&self) -> &KvStateMachine {
        &self.machine
    }

    /// The last applied index.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// Starts (or restarts) the node from its disk.
    pub fn start(&mut self, checker: &mut Invariants) {
        assert!(self.raft.is_none(), "node {} started twice", self.id);
        let restored = self.disk.restored();
        checker.on_restart(self.id, self.disk.durable());
        let mut machine = KvStateMachine::new();
        let mut applied = 0;
        if let Some(snapshot) = &restored.snapshot {
            if let Err(error) = machine.restore(snapshot) {
                checker.fail(format!("node {} cannot restore its own durable snapshot: {error}", self.id));
                return;
            }
            applied = snapshot.meta.index;
            checker.on_snapshot_data(self.id, applied, &snapshot.data);
        }
        match Raft::new(self.config.clone(), restored) {
            Ok(raft) => {
                self.raft = Some(raft);
                self.machine = machine;
                self.applied = applied;
                self.incarnation += 1;
            }
            Err(error) => checker.fail(format!("node {} cannot restart from its disk: {error}", self.id)),
        }
    }

    /// Crashes the node: the process state is gone, the disk keeps what was durable (and,
    /// with `torn`, a prefix of the write in progress). Clients waiting on it see their
    /// connection drop.
    pub fn crash(&mut self, rng: &mut SimRng, torn: bool, checker: &mut Invariants, fx: &mut Effects) -> CrashEffect {
        self.raft = None;
        self.held = None;
        self.crash_during_next_write = false;
        checker.on_crash(self.id);
        let effect = match self.disk.crash(rng, torn) {
            Ok(effect) => effect,
            Err(error) => {
                checker.fail(format!("node {}: {error}", self.id));
                CrashEffect::Clean
            }
        };
        for (_, (_, request)) in std::mem::take(&mut self.pending_writes) {
            fx.replies.push(self.reply(&request, ReplyResult::Unknown("the node crashed after the proposal")));
        }
        for (_, request) in std::mem::take(&mut self.pending_reads) {
            fx.replies.push(self.reply(&request, ReplyResult::Failed("the node crashed before the read")));
        }
        for (_, request) in std::mem::take(&mut self.waiting_reads) {
            fx.replies.push(self.reply(&request, ReplyResult::Failed("the node crashed before the read")));
        }
        effect
    }

    /// Shuts the node down for good or until it is added back: it was removed from the
    /// cluster. Its disk is kept. (A removed node's data is never erased and reused under
    /// the same id: messages from its old life may still be in flight, and the leader would
    /// take an old acknowledgement for the new node's. A new member gets a new id, as etcd
    /// gives it a new member ID.)
    pub fn decommission(&mut self, checker: &mut Invariants, rng: &mut SimRng, fx: &mut Effects) {
        if self.is_up() {
            self.crash(rng, false, checker, fx);
        }
        self.decommissioned = true;
    }

    /// Restarts a decommissioned node from its old disk: the operator added it back.
    pub fn readd(&mut self, checker: &mut Invariants) {
        assert!(!self.is_up(), "a node is added back only while down");
        self.decommissioned = false;
        self.start(checker);
    }

    fn reply(&self, request: &ClientRequest, result: ReplyResult) -> ClientReply {
        ClientReply { request: request.id, client: request.client, from: self.id, result }
    }

    /// One tick of the node's clock.
    pub fn tick(&mut self, checker: &mut Invariants, fx: &mut Effects) {
        let Some(raft) = self.raft.as_mut() else { return };
        raft.tick();
        self.drive(checker, fx);
    }

    /// A message from the network.
    pub fn step(&mut self, message: Message, checker: &mut Invariants, fx: &mut Effects) {
        let Some(raft) = self.raft.as_mut() else { return };
        raft.step(message);
        self.drive(checker, fx);
    }

    /// A client request. A node that is down refuses the connection (definitely not applied).
    pub fn request(&mut self, request: ClientRequest, checker: &mut Invariants, fx: &mut Effects) {
        let Some(raft) = self.raft.as_mut() else {
            fx.replies.push(self.reply(&request, ReplyResult::Failed("connection refused: the node is down")));
            return;
        };
        if request.command.is_read() {
            let read_id = self.next_read_id;
            self.next_read_id += 1;
            match raft.read_index(read_id) {
                Ok(()) => {
                    self.pending_reads.insert(read_id, request);
                }
                Err(error) => {
                    let result = refusal(error);
                    fx.replies.push(self.reply(&request, result));
                }
            }
        } else {
            match raft.propose(request.command.encode()) {
                Ok((term, index)) => {
                    if let Some((_, earlier)) = self.pending_writes.insert(index, (term, request)) {
                        // Our own log replaced the earlier proposal's entry with this one: the
                        // earlier one was truncated, so it never committed.
                        fx.replies.push(self.reply(&earlier, ReplyResult::Failed("its entry was overwritten")));
                    }
                }
                Err(error) => {
                    let result = refusal(error);
                    fx.replies.push(self.reply(&request, result));
                }
            }
        }
        self.drive(checker, fx);
    }

    /// Runs `f` on the core (membership changes, transfers), then drives it.
    pub fn with_raft<T>(
        &mut self,
        checker: &mut Invariants,
        fx: &mut Effects,
        f: impl FnOnce(&mut Raft) -> T,
    ) -> Option<T> {
        let raft = self.raft.as_mut()?;
        let result = f(raft);
        self.drive(checker, fx);
        Some(result)
    }

    /// The virtual fsync of write `id` completed.
    pub fn fsync_done(&mut self, id: u64, checker: &mut Invariants, fx: &mut Effects) {
        if self.raft.is_none() {
            return;
        }
        match self.disk.complete(id) {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                checker.fail(format!("node {}: {error}", self.id));
                return;
            }
        }
        let Some(held) = self.held.take() else {
            checker.fail(format!("node {}: a write completed with no Ready held", self.id));
            return;
        };
        self.finish(held, checker, fx);
        self.drive(checker, fx);
    }

    /// The driver loop: take Readies until one needs a disk write (or none is left).
    fn drive(&mut self, checker: &mut Invariants, fx: &mut Effects) {
        // A Ready that persists nothing finishes synchronously, and advancing may produce
        // another; a correct core settles quickly, so a bound here only catches a core that
        // never stops producing work.
        for _ in 0..1_000 {
            let Some(raft) = self.raft.as_mut() else { return };
            if self.held.is_some() || !raft.has_ready() {
                checker.observe(raft);
                return;
            }
            let ready = raft.ready();
            if ready.is_empty() {
                checker.observe(raft);
                return;
            }
            let Ready {
                messages_now,
                hard_state,
                entries,
                snapshot,
                messages,
                committed,
                reads,
                failed_reads,
                soft_state: _,
            } = ready;
            checker.on_persist(self.id, snapshot.as_ref().map(|s| &s.meta), &entries);
            for message in messages_now {
                checker.on_send(&message);
                fx.messages.push(message);
            }
            let held = Held { messages, snapshot: snapshot.clone(), committed, reads, failed_reads };
            if hard_state.is_some() || snapshot.is_some() || !entries.is_empty() {
                let id = self.disk.begin(hard_state, snapshot, entries);
                self.held = Some(held);
                fx.write_started = Some(id);
                if let Some(raft) = self.raft.as_ref() {
                    checker.observe(raft);
                }
                return;
            }
            self.finish(held, checker, fx);
        }
        checker.fail(format!("node {}: the core produced 1000 Readies in a row without settling", self.id));
    }

    /// Steps 3-5 of the driver loop, once the write (if any) is durable.
    fn finish(&mut self, held: Held, checker: &mut Invariants, fx: &mut Effects) {
        let id = self.id;
        for message in held.messages {
            checker.on_send(&message);
            fx.messages.push(message);
        }
        if let Some(snapshot) = held.snapshot {
            if snapshot.meta.index > self.applied {
                if let Err(error) = self.machine.restore(&snapshot) {
                    checker.fail(format!("node {id} cannot restore the leader's snapshot: {error}"));
                    return;
                }
                self.applied = snapshot.meta.index;
                fx.snapshots_installed += 1;
                checker.on_snapshot_data(id, snapshot.meta.index, &snapshot.data);
                // Proposals the snapshot covers may or may not be in it.
                let covered: Vec<Index> = self.pending_writes.range(..=snapshot.meta.index).map(|(&i, _)| i).collect();
                for index in covered {
                    if let Some((_, request)) = self.pending_writes.remove(&index) {
                        let result = ReplyResult::Unknown("a snapshot replaced the log under the proposal");
                        fx.replies.push(self.reply(&request, result));
                    }
                }
            } else {
                checker.fail(format!(
                    "node {id} was handed a snapshot at {} but has applied {} already",
                    snapshot.meta.index, self.applied
                ));
            }
        }
        for entry in held.committed {
            if entry.index != self.applied + 1 {
                checker.fail(format!(
                    "node {id} was handed committed entry {} to apply after applying {}",
                    entry.index, self.applied
                ));
                return;
            }
            checker.on_apply(id, &entry);
            self.applied = entry.index;
            let response = match &entry.payload {
                EntryPayload::Command(command) => Some(self.machine.apply(entry.index, command)),
                EntryPayload::Noop => None,
                EntryPayload::Membership(change) => {
                    fx.membership_applied.push((entry.index, change.clone()));
                    None
                }
            };
            if let Some((term, request)) = self.pending_writes.remove(&entry.index) {
                let result = if term != entry.term {
                    ReplyResult::Failed("another entry committed at its index")
                } else {
                    match response.as_deref().map(KvResponse::decode) {
                        Some(Ok(response)) => ReplyResult::Ok(response),
                        _ => {
                            checker.fail(format!("node {id}: the map's response at {} does not decode", entry.index));
                            return;
                        }
                    }
                };
                fx.replies.push(self.reply(&request, result));
            }
        }
        for read in held.reads {
            if let Some(request) = self.pending_reads.remove(&read.id) {
                self.waiting_reads.push((read.index, request));
            }
        }
        for read_id in held.failed_reads {
            if let Some(request) = self.pending_reads.remove(&read_id) {
                fx.replies.push(self.reply(&request, ReplyResult::Failed("leadership lost before the read")));
            }
        }
        self.serve_reads(checker, fx);
        let Some(raft) = self.raft.as_mut() else { return };
        raft.advance();
        if raft.applied_index() != self.applied {
            let core = raft.applied_index();
            checker.fail(format!(
                "node {id}: after advance the core says applied {core}, but it handed out entries through {}",
                self.applied
            ));
            return;
        }
        self.maybe_compact(checker, fx);
    }

    fn serve_reads(&mut self, checker: &mut Invariants, fx: &mut Effects) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting_reads).into_iter().partition(|(index, _)| *index <= applied);
        self.waiting_reads = waiting;
        for (_, request) in ready {
            let answer = self.machine.query(&request.command.encode());
            match KvResponse::decode(&answer) {
                Ok(response) => fx.replies.push(self.reply(&request, ReplyResult::Ok(response))),
                Err(error) => checker.fail(format!("node {}: the map's read answer does not decode: {error}", self.id)),
            }
        }
    }

    fn maybe_compact(&mut self, checker: &mut Invariants, fx: &mut Effects) {
        let Some(every) = self.compact_every else { return };
        let Some(raft) = self.raft.as_mut() else { return };
        let snapshot_index = raft.snapshot_meta().map_or(0, |meta| meta.index);
        if self.applied < snapshot_index + every {
            return;
        }
        let data: Bytes = self.machine.snapshot();
        if let Err(error) = raft.compact(self.applied, data.clone()) {
            checker.fail(format!("node {}: compact({}) refused: {error}", self.id, self.applied));
            return;
        }
        let Some(meta) = raft.snapshot_meta().cloned() else {
            checker.fail(format!("node {}: compact succeeded but the core has no snapshot", self.id));
            return;
        };
        if meta.index != self.applied {
            checker.fail(format!(
                "node {}: compacted through {} but the core's snapshot is at {}",
                self.id, self.applied, meta.index
            ));
            return;
        }
        checker.on_snapshot_data(self.id, meta.index, &data);
        fx.compactions += 1;
        if let Err(error) = self.disk.save_snapshot(Snapshot { meta, data }) {
            checker.fail(format!("node {}: {error}", self.id));
        }
    }
}

/// The reply to a refused proposal or read.
fn refusal(error: ProposeError) -> ReplyResult {
    match error {
        ProposeError::NotLeader { leader } => ReplyResult::NotLeader(leader),
        ProposeError::Transferring => ReplyResult::Failed("leadership transfer in progress"),
        ProposeError::Busy => ReplyResult::Failed("too many uncommitted proposals"),
        ProposeError::Membership(_) => ReplyResult::Failed("membership change refused"),
        ProposeError::NotReady => ReplyResult::Failed("the leader has not committed in its term yet"),
    }
}
