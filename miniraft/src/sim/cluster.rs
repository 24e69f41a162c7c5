//! The whole simulated cluster in one thread: the event loop, the per-seed scenario, and
//! the fault scheduler.
//!
//! Events sit in a priority queue by virtual time (microseconds) with a sequence number as
//! the tiebreak; network deliveries come from the network's own queue. The loop takes the
//! earliest, hands it to the node it concerns, carries out what the node produced (messages
//! onto the network, a disk write's fsync, replies to clients), and checks the invariants.
//! Nothing reads a real clock or OS randomness, so a seed replays exactly.
//!
//! A run has three phases:
//!
//! 1. **Faults**: clients run their operations while the fault scheduler partitions, cuts,
//!    crashes (at random, inside a disk write, or a new leader right after it wins or first
//!    commits), skews clocks, changes membership and transfers leadership.
//! 2. **Healed**: every link heals, the network calms down, every node that should be up
//!    restarts, and a final reader reads every key. If that does not finish in
//!    [`SETTLE_US`], the run reports a liveness failure.
//! 3. **Converged**: the members catch up to the leader's commit index and must hold the
//!    same map. Then the history goes to the linearizability checker.
//!
//! What it leaves out: wall-clock performance (virtual time says nothing about it) and
//! client-side network faults (a client reaches any node that is up; a crash drops its
//! connection).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::config::{Config, ReadMode};
use crate::message::{Message, MessageBody};
use crate::state_machine::StateMachine;
use crate::types::{Index, Membership, MembershipChange, NodeId, Role};

use super::disk::CrashEffect;
use super::invariants::Invariants;
use super::network::{Network, NetworkSettings};
use super::node::{ClientReply, ClientRequest, Effects, SimNode};
use super::rng::{Digest, SimRng};
use super::workload::{Workload, WorkloadSettings};
use super::SimOptions;

/// One tick of a node's clock, in virtual microseconds at a clock rate of 1: etcd's
/// default of 100 ms would only stretch virtual time; 10 ms keeps the numbers readable.
pub const TICK_US: u64 = 10_000;

/// The faults phase ends here at the latest, whether or not the clients are done.
pub const FAULT_PHASE_US: u64 = 120_000_000;

/// After healing, the cluster must serve a read of every key within this much virtual time
/// (over 200 election timeouts even at the slowest clock), or the run reports a liveness
/// failure.
pub const SETTLE_US: u64 = 30_000_000;

/// After the final reads, the members must converge within this much virtual time.
pub const CONVERGE_US: u64 = 10_000_000;

/// A run that processes this many events is stuck in a loop (a healthy run needs well
/// under a million).
pub const MAX_EVENTS: u64 = 20_000_000;

/// How many brand-new nodes (new ids) may replace removed ones in one run.
pub const MAX_REPLACEMENTS: usize = 8;

/// How many trace lines a run keeps for its report.
pub const TRACE_LINES: usize = 400;

/// The parameters a seed draws for its run, beyond the options: printed in the report so
/// that a failure says what it ran under.
#[derive(Clone, Debug, Default)]
pub struct Scenario {
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_entries_per_message: usize,
    pub max_bytes_per_message: usize,
    pub max_inflight_messages: usize,
    pub snapshot_chunk_bytes: usize,
    pub max_uncommitted_entries: usize,
    pub compact_every: Option<u64>,
    pub network: NetworkSettings,
    pub fsync_us: (u64, u64),
    /// The largest clock skew, in parts per million either way.
    pub max_skew_ppm: u64,
    /// Mean time between fault actions.
    pub fault_every_us: u64,
    pub keys: usize,
    pub client_timeout_us: u64,
}

/// What happened in a run, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub events: u64,
    pub virtual_us: u64,
    pub messages: u64,
    pub crashes: u64,
    pub torn_writes: u64,
    pub partitions: u64,
    pub one_way_cuts: u64,
    pub transfers: u64,
    pub membership_changes: u64,
    /// Snapshots nodes took of their own state (compaction).
    pub compactions: u64,
    /// Snapshots nodes installed from a leader.
    pub snapshots_installed: u64,
    /// Leaders of a new highest term seen.
    pub leaders: u64,
    pub ops_returned: u64,
}

#[derive(Debug)]
enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Fsync {
        node: NodeId,
        incarnation: u64,
        write: u64,
    },
    /// A crash aimed at a node's write in progress; ignored if the node restarted since.
    CrashDuringWrite {
        node: NodeId,
        incarnation: u64,
    },
    /// Leader churn: a new leader crashes or is cut off, unless it restarted since.
    Churn {
        node: NodeId,
        incarnation: u64,
        isolate: bool,
    },
    Restart {
        node: NodeId,
    },
    ClientWake {
        client: usize,
    },
    /// A client request reaches a node.
    Request {
        node: NodeId,
        request: ClientRequest,
    },
    /// A reply reaches its client.
    Reply(ClientReply),
    ClientTimeout {
        client: usize,
        request: u64,
    },
    /// The fault scheduler's next action.
    Fault,
    /// A partition or cut ends.
    Heal {
        links: Vec<(NodeId, NodeId)>,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Scheduled) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Scheduled) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Scheduled) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Faults,
    Healed { deadline: u64 },
    Converging { deadline: u64 },
    Done,
}

/// A run in progress.
pub struct Cluster {
    options: SimOptions,
    pub scenario: Scenario,
    /// Every node's configuration but its id (new members get the same).
    template: Config,
    now: u64,
    rng: SimRng,
    /// Node `id` is `nodes[id - 1]`.
    nodes: Vec<SimNode>,
    ids: Vec<NodeId>,
    network: Network,
    events: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    pub checker: Invariants,
    pub workload: Workload,
    phase: Phase,
    /// The highest membership-entry index applied per node id it names, so an old Remove
    /// replayed by a lagging node does not decommission a node that was added back since.
    membership_seen: BTreeMap<NodeId, Index>,
    /// The log index of the latest AddLearner proposed per node: a removal committed before
    /// it does not take the node down.
    proposed_adds: BTreeMap<NodeId, Index>,
    /// The next this many nodes to become leader (of a term above `highest_leader_term`)
    /// crash soon after they win: within a few ticks, or as soon as their commit index
    /// first moves (leader churn).
    crash_next_leaders: u32,
    /// A new leader to take out once its commit index moves.
    churn_on_commit: Option<ChurnOnCommit>,
    /// The highest term a leader was seen in.
    highest_leader_term: u64,
    trace_hash: Digest,
    trace: Option<VecDeque<String>>,
    pub stats: RunStats,
}

impl Cluster {
    /// Sets up the run for `options` (already validated).
    pub fn new(options: &SimOptions) -> Cluster {
        let mut rng = SimRng::new(options.seed);
        let faults = options.faults;
        let lease = options.read_mode == ReadMode::Lease;
        let base = Config::new(1);
        let min_latency = rng.range(100, 500);
        let network = NetworkSettings {
            min_latency_us: min_latency,
            max_latency_us: min_latency + rng.range(0, 3_000),
            drop_per_million: if faults.drop { rng.range(5_000, 80_000) as u32 } else { 0 },
            delay_per_million: if faults.delay { rng.range(10_000, 100_000) as u32 } else { 0 },
            max_extra_delay_us: if faults.delay { rng.range(1, 40) * TICK_US } else { 0 },
            duplicate_per_million: if faults.duplicate { rng.range(5_000, 50_000) as u32 } else { 0 },
            reorder: faults.reorder,
        };
        let max_skew_ppm = match options.clock_skew_percent {
            Some(percent) => u64::from(percent) * 10_000,
            None if !faults.clock_skew => 0,
            None if lease => lease_drift_budget_ppm(base.election_ticks, base.lease_ticks),
            None => rng.range(50_000, 250_000),
        };
        // Lease reads lean on check-quorum's promise that followers ignore elections while
        // they hear from a leader, so lease mode turns both on. With an explicit skew, the
        // two draws are made in both read modes, so that a seed draws the same timers,
        // limits and fault rates in each and the lease test can rerun its seeds with
        // ReadIndex. (Without one, lease mode skips them, as it always has, so that every
        // existing seed replays unchanged.)
        let (pre_vote, check_quorum) = if options.clock_skew_percent.is_some() {
            let (pre_vote, check_quorum) = (rng.chance(800_000), rng.chance(800_000));
            (lease || pre_vote, lease || check_quorum)
        } else {
            (lease || rng.chance(800_000), lease || rng.chance(800_000))
        };
        let scenario = Scenario {
            pre_vote,
            check_quorum,
            max_entries_per_message: *rng.choose(&[1, 1, 2, 4, 16, 256]).unwrap_or(&256),
            max_bytes_per_message: *rng.choose(&[64, 1024, 1 << 20]).unwrap_or(&(1 << 20)),
            max_inflight_messages: *rng.choose(&[1, 2, 8, 64]).unwrap_or(&64),
            snapshot_chunk_bytes: *rng.choose(&[16, 64, 512, 1 << 16]).unwrap_or(&512),
            max_uncommitted_entries: *rng.choose(&[0, 0, 8, 64]).unwrap_or(&0),
            compact_every: faults.snapshot.then(|| *rng.choose(&[4, 8, 16, 32, 64]).unwrap_or(&16)),
            network,
            fsync_us: {
                let low = rng.range(50, 1_000);
                (low, low + rng.range(0, 4_000))
            },
            max_skew_ppm,
            fault_every_us: rng.range(50_000, 500_000),
            keys: rng.range(1, 5) as usize,
            client_timeout_us: rng.range(50, 150) * TICK_US,
        };
        let ids: Vec<NodeId> = (1..=options.nodes as NodeId).collect();
        let founders = Membership::with_voters(ids.iter().copied());
        let mut template = Config::new(1);
        template.pre_vote = scenario.pre_vote;
        template.check_quorum = scenario.check_quorum;
        template.read_mode = options.read_mode;
        template.max_entries_per_message = scenario.max_entries_per_message;
        template.max_bytes_per_message = scenario.max_bytes_per_message;
        template.max_inflight_messages = scenario.max_inflight_messages;
        template.snapshot_chunk_bytes = scenario.snapshot_chunk_bytes;
        template.max_uncommitted_entries = scenario.max_uncommitted_entries;
        let template = inject_bugs(template, &options.bugs);
        let mut nodes = Vec::with_capacity(ids.len());
        for &id in &ids {
            let rate = 1_000_000 - max_skew_ppm + rng.range(0, 2 * max_skew_ppm);
            let mut node = SimNode::new(Config { id, ..template.clone() }, founders.clone(), rate);
            node.compact_every = scenario.compact_every;
            nodes.push(node);
        }
        let workload = Workload::new(WorkloadSettings {
            clients: options.clients,
            ops_per_client: options.ops_per_client,
            keys: scenario.keys,
            think_max_us: rng.range(0, 10) * TICK_US,
            retry_backoff_us: rng.range(1, 5) * TICK_US,
            timeout_us: scenario.client_timeout_us,
            wander_per_million: rng.range(20_000, 300_000) as u32,
        });
        let mut cluster = Cluster {
            options: options.clone(),
            scenario: scenario.clone(),
            template,
            now: 0,
            rng,
            nodes,
            ids,
            network: Network::new(scenario.network.clone()),
            events: BinaryHeap::new(),
            next_seq: 0,
            checker: Invariants::new(options.check_persistence),
            workload,
            phase: Phase::Faults,
            membership_seen: BTreeMap::new(),
            proposed_adds: BTreeMap::new(),
            crash_next_leaders: 0,
            churn_on_commit: None,
            highest_leader_term: 0,
            trace_hash: Digest::default().word(options.seed),
            trace: options.trace.then(VecDeque::new),
            stats: RunStats::default(),
        };
        for id in cluster.ids.clone() {
            cluster.start_node(id);
        }
        for client in 0..cluster.workload.client_count() {
            let at = cluster.rng.range(0, 20 * TICK_US);
            cluster.schedule(at, Event::ClientWake { client });
        }
        if faults.any_scheduled() {
            let at = cluster.rng.range(0, 2 * cluster.scenario.fault_every_us);
            cluster.schedule(at, Event::Fault);
        }
        cluster
    }

    fn schedule(&mut self, at: u64, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.push(Reverse(Scheduled { at, seq, event }));
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            if trace.len() == TRACE_LINES {
                trace.pop_front();
            }
            let now = self.now;
            trace.push_back(format!("{:>4}.{:06} {}", now / 1_000_000, now % 1_000_000, line()));
        }
    }

    /// The run's trace hash: every event's time and kind, in order.
    pub fn trace_hash(&self) -> u64 {
        self.trace_hash.0
    }

    /// The kept trace lines, oldest first.
    pub fn trace_lines(&self) -> Vec<String> {
        self.trace.as_ref().map(|trace| trace.iter().cloned().collect()).unwrap_or_default()
    }

    /// The virtual time.
    pub fn now(&self) -> u64 {
        self.now
    }

    fn tick_period(&self, id: NodeId) -> u64 {
        let rate = self.nodes[(id - 1) as usize].clock_rate_ppm.max(1);
        TICK_US * 1_000_000 / rate
    }

    fn start_node(&mut self, id: NodeId) {
        self.nodes[(id - 1) as usize].start(&mut self.checker);
        self.after_start(id);
    }

    fn after_start(&mut self, id: NodeId) {
        if !self.node(id).is_up() {
            return;
        }
        let incarnation = self.node(id).incarnation;
        let period = self.tick_period(id);
        // A random phase, so that nodes do not tick in lockstep.
        let at = self.now + self.rng.range(1, period);
        self.schedule(at, Event::Tick { node: id, incarnation });
        self.note(|| format!("node {id} starts (incarnation {incarnation})"));
    }

    /// Runs the whole seed. Returns when the run is over or an invariant broke.
    pub fn run(&mut self) {
        while self.phase != Phase::Done && !self.checker.violated() {
            if self.stats.events >= MAX_EVENTS {
                self.checker.fail(format!("the run processed {MAX_EVENTS} events without ending: a livelock"));
                break;
            }
            self.step();
            self.advance_phase();
        }
        self.stats.virtual_us = self.now;
        self.stats.messages = self.network.stats.sent;
        self.stats.ops_returned = self.workload.completed;
        self.workload.abandon();
    }

    fn step(&mut self) {
        let event_at = self.events.peek().map(|Reverse(scheduled)| scheduled.at);
        let network_at = self.network.next_time();
        let take_event = match (event_at, network_at) {
            (Some(event), Some(network)) => event <= network,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => {
                self.checker.fail("nothing left to happen: every node is down and no event is scheduled".into());
                return;
            }
        };
        self.stats.events += 1;
        if take_event {
            let Some(Reverse(scheduled)) = self.events.pop() else { return };
            self.now = scheduled.at;
            self.checker.set_time(self.now);
            self.handle(scheduled.event);
        } else {
            let Some(at) = network_at else { return };
            self.now = at;
            self.checker.set_time(self.now);
            if let Some((_, message)) = self.network.pop() {
                self.deliver(message);
            }
        }
    }

    fn deliver(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        self.trace_hash = self
            .trace_hash
            .word(self.now)
            .word(1)
            .word(from)
            .word(to)
            .word(message.term)
            .word(body_kind(&message.body));
        if self.trace.is_some() {
            let summary = summarize(&message);
            self.note(|| format!("deliver {from}->{to} t{} {summary}", message.term));
        }
        if to == 0 || to as usize > self.nodes.len() {
            return;
        }
        let mut fx = Effects::default();
        self.nodes[(to - 1) as usize].step(message, &mut self.checker, &mut fx);
        self.apply_effects(to, fx);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                if self.node(node).incarnation != incarnation || !self.node(node).is_up() {
                    return;
                }
                self.trace_hash = self.trace_hash.word(self.now).word(2).word(node);
                let mut fx = Effects::default();
                self.nodes[(node - 1) as usize].tick(&mut self.checker, &mut fx);
                let period = self.tick_period(node);
                self.schedule(self.now + period, Event::Tick { node, incarnation });
                self.apply_effects(node, fx);
            }
            Event::Fsync { node, incarnation, write } => {
                if self.node(node).incarnation != incarnation {
                    return;
                }
                self.trace_hash = self.trace_hash.word(self.now).word(3).word(node).word(write);
                self.note(|| format!("node {node} fsync {write} done"));
                let mut fx = Effects::default();
                self.nodes[(node - 1) as usize].fsync_done(write, &mut self.checker, &mut fx);
                self.apply_effects(node, fx);
            }
            Event::CrashDuringWrite { node, incarnation } => {
                let due = self.phase == Phase::Faults;
                if due && self.node(node).incarnation == incarnation && self.node(node).is_up() {
                    self.crash(node);
                }
            }
            Event::Churn { node, incarnation, isolate } => {
                if self.node(node).incarnation == incarnation && self.node(node).is_up() && self.phase == Phase::Faults
                {
                    self.churn(node, isolate);
                }
            }
            Event::Restart { node } => {
                let n = self.node(node);
                if !n.is_up() && !n.decommissioned {
                    self.trace_hash = self.trace_hash.word(self.now).word(4).word(node);
                    self.start_node(node);
                }
            }
            Event::ClientWake { client } => {
                let ids = self.client_targets();
                let Some(outgoing) = self.workload.wake(client, self.now, &ids, &mut self.rng) else { return };
                self.trace_hash = self.trace_hash.word(self.now).word(5).word(client as u64).word(outgoing.target);
                let target = outgoing.target;
                if self.trace.is_some() {
                    let command = format!("{:?}", outgoing.request.command);
                    let id = outgoing.request.id;
                    self.note(|| format!("client {client} request {id} -> node {target}: {command}"));
                }
                let latency = self.client_latency();
                self.schedule(outgoing.timeout_at, Event::ClientTimeout { client, request: outgoing.request.id });
                self.schedule(self.now + latency, Event::Request { node: target, request: outgoing.request });
            }
            Event::Request { node, request } => {
                self.trace_hash = self.trace_hash.word(self.now).word(6).word(node).word(request.id);
                let mut fx = Effects::default();
                self.nodes[(node - 1) as usize].request(request, &mut self.checker, &mut fx);
                self.apply_effects(node, fx);
            }
            Event::Reply(reply) => {
                self.trace_hash = self.trace_hash.word(self.now).word(7).word(reply.request);
                if self.trace.is_some() {
                    let (client, request, from, result) =
                        (reply.client, reply.request, reply.from, reply.result.clone());
                    self.note(|| format!("client {client} reply {request} from node {from}: {result:?}"));
                }
                let ids = self.client_targets();
                if let Some(resolved) = self.workload.on_reply(&reply, self.now, &ids, &mut self.rng) {
                    if let Some(at) = resolved.next_at {
                        self.schedule(at, Event::ClientWake { client: reply.client as usize });
                    }
                }
            }
            Event::ClientTimeout { client, request } => {
                let ids = self.client_targets();
                if let Some(resolved) = self.workload.on_timeout(client, request, self.now, &ids, &mut self.rng) {
                    self.trace_hash = self.trace_hash.word(self.now).word(8).word(request);
                    self.note(|| format!("client {client} request {request} timed out"));
                    if let Some(at) = resolved.next_at {
                        self.schedule(at, Event::ClientWake { client });
                    }
                }
            }
            Event::Fault => {
                if self.phase != Phase::Faults {
                    return;
                }
                self.trace_hash = self.trace_hash.word(self.now).word(9);
                self.fault();
                let gap = self.rng.range(self.scenario.fault_every_us / 4, self.scenario.fault_every_us * 7 / 4);
                self.schedule(self.now + gap.max(1), Event::Fault);
            }
            Event::Heal { links } => {
                self.trace_hash = self.trace_hash.word(self.now).word(10).word(links.len() as u64);
                for (from, to) in &links {
                    self.network.heal(*from, *to);
                }
                let count = links.len();
                self.note(|| format!("heal {count} links"));
            }
        }
    }

    /// The nodes a client may pick: every id but those replaced for good.
    fn client_targets(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|node| !node.retired).map(|node| node.id).collect()
    }

    fn client_latency(&mut self) -> u64 {
        self.rng.range(self.scenario.network.min_latency_us, self.scenario.network.max_latency_us)
    }

    fn apply_effects(&mut self, node: NodeId, fx: Effects) {
        for message in fx.messages {
            self.network.send(self.now, message, &mut self.rng);
        }
        for reply in fx.replies {
            let latency = self.client_latency();
            self.schedule(self.now + latency, Event::Reply(reply));
        }
        if let Some(write) = fx.write_started {
            let incarnation = self.node(node).incarnation;
            let (low, high) = self.scenario.fsync_us;
            let latency = self.rng.range(low, high);
            // With torn writes on, the armed crash waits (usually) for a write with at least
            // two steps, where tearing can keep part of it.
            let worth_tearing = !self.options.faults.torn_write
                || self.node(node).disk.pending_steps() >= 2
                || self.rng.chance(250_000);
            if self.node(node).crash_during_next_write && worth_tearing {
                self.node(node).crash_during_next_write = false;
                let at = self.now + self.rng.range(0, latency.saturating_sub(1));
                self.schedule(at, Event::CrashDuringWrite { node, incarnation });
            }
            self.schedule(self.now + latency, Event::Fsync { node, incarnation, write });
        }
        self.stats.compactions += fx.compactions;
        self.stats.snapshots_installed += fx.snapshots_installed;
        for (index, change) in fx.membership_applied {
            self.on_membership_applied(index, change);
        }
        let new_leader = match self.nodes[(node - 1) as usize].raft() {
            Some(raft) if raft.role() == Role::Leader && raft.term() > self.highest_leader_term => Some(raft.term()),
            _ => None,
        };
        if let Some(term) = new_leader {
            self.highest_leader_term = term;
            self.stats.leaders += 1;
            if self.crash_next_leaders > 0 && self.phase == Phase::Faults {
                self.crash_next_leaders -= 1;
                let commit = self.nodes[(node - 1) as usize].raft().map_or(0, |raft| raft.commit_index());
                let isolate = match (self.options.faults.partition, self.options.faults.crash) {
                    (true, true) => self.rng.chance(500_000),
                    (partition, _) => partition,
                };
                let what = if isolate { "be cut off" } else { "crash" };
                match self.rng.below(3) {
                    0 => {
                        // At once: its first AppendEntries are still in flight, and a cut
                        // loses them, so its Noop stays in its log alone.
                        self.note(|| format!("node {node} won term {term}; it will {what} now"));
                        self.churn(node, isolate);
                    }
                    1 => {
                        let incarnation = self.node(node).incarnation;
                        let at = self.now + self.rng.range(0, 3 * TICK_US);
                        self.note(|| format!("node {node} won term {term}; it will {what} at {at}"));
                        self.schedule(at, Event::Churn { node, incarnation, isolate });
                    }
                    _ => {
                        self.note(|| {
                            format!("node {node} won term {term}; it will {what} when its commit index moves")
                        });
                        self.churn_on_commit = Some(ChurnOnCommit { node, term, commit, isolate });
                    }
                }
            }
        }
        if let Some(watch) = self.churn_on_commit {
            if watch.node == node {
                match self.nodes[(node - 1) as usize].raft() {
                    Some(raft) if raft.role() == Role::Leader && raft.term() == watch.term => {
                        if raft.commit_index() > watch.commit {
                            self.churn_on_commit = None;
                            self.churn(node, watch.isolate);
                        }
                    }
                    _ => self.churn_on_commit = None,
                }
            }
        }
    }

    /// Takes a new leader out: a crash, or a partition that cuts it off from everyone.
    fn churn(&mut self, node: NodeId, isolate: bool) {
        if self.phase != Phase::Faults {
            return;
        }
        if !isolate {
            self.crash(node);
            return;
        }
        let mut links = Vec::new();
        for &other in &self.ids {
            if other != node {
                links.push((node, other));
                links.push((other, node));
            }
        }
        for &(from, to) in &links {
            self.network.cut(from, to);
        }
        self.stats.partitions += 1;
        self.note(|| format!("node {node} cut off from everyone"));
        self.heal_later(links);
    }

    fn on_membership_applied(&mut self, index: Index, change: MembershipChange) {
        let target = match change {
            MembershipChange::AddLearner(id)
            | MembershipChange::PromoteLearner(id)
            | MembershipChange::AddVoter(id)
            | MembershipChange::Remove(id) => id,
        };
        let seen = self.membership_seen.entry(target).or_insert(0);
        if index <= *seen {
            return;
        }
        *seen = index;
        if let MembershipChange::Remove(id) = change {
            if id == 0 || id as usize > self.nodes.len() || self.node(id).decommissioned {
                return;
            }
            if self.proposed_adds.get(&id).is_some_and(|&added| added > index) {
                // The node was added back after this removal (by a leader that had the
                // removal in its log before it committed): keep it running.
                return;
            }
            self.note(|| format!("node {id} decommissioned (its removal at {index} is applied)"));
            let mut fx = Effects::default();
            self.nodes[(id - 1) as usize].decommission(&mut self.checker, &mut self.rng, &mut fx);
            self.apply_effects(id, fx);
        }
    }

    /// The up node that leads the highest term, if any.
    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|node| node.raft())
            .filter(|raft| raft.role() == Role::Leader)
            .max_by_key(|raft| raft.term())
            .map(|raft| raft.id())
    }

    fn crash(&mut self, id: NodeId) {
        let torn = self.options.faults.torn_write;
        let mut fx = Effects::default();
        let effect = self.nodes[(id - 1) as usize].crash(&mut self.rng, torn, &mut self.checker, &mut fx);
        self.stats.crashes += 1;
        if let CrashEffect::Torn { kept_steps, total_steps } = effect {
            if kept_steps > 0 && kept_steps < total_steps {
                self.stats.torn_writes += 1;
            }
        }
        self.trace_hash = self.trace_hash.word(self.now).word(11).word(id);
        self.note(|| format!("node {id} crashes ({effect:?})"));
        self.apply_effects(id, fx);
        // Down for a moment (inside an election) or for a long while.
        let downtime = if self.rng.chance(300_000) {
            self.rng.range(100, 2 * TICK_US)
        } else {
            self.rng.range(2 * TICK_US, 200 * TICK_US)
        };
        self.schedule(self.now + downtime, Event::Restart { node: id });
    }

    /// One action of the fault scheduler, drawn from the enabled faults.
    fn fault(&mut self) {
        let faults = self.options.faults;
        let mut actions: Vec<FaultAction> = Vec::new();
        let mut add = |enabled: bool, action: FaultAction, weight: usize| {
            if enabled {
                actions.extend(std::iter::repeat_n(action, weight));
            }
        };
        add(faults.partition, FaultAction::Partition, 3);
        add(faults.one_way, FaultAction::OneWay, 2);
        add(faults.crash, FaultAction::Crash, 3);
        add(faults.crash || faults.partition, FaultAction::Churn, 2);
        add(faults.clock_skew, FaultAction::Skew, 1);
        add(faults.membership && self.options.nodes >= 3, FaultAction::Membership, 2);
        add(faults.transfer, FaultAction::Transfer, 1);
        let Some(&action) = self.rng.choose(&actions) else { return };
        match action {
            FaultAction::Partition => self.partition(),
            FaultAction::OneWay => self.one_way(),
            FaultAction::Crash => self.crash_fault(),
            FaultAction::Churn => self.arm_churn(),
            FaultAction::Skew => {
                let id = self.random_node();
                let skew = self.scenario.max_skew_ppm;
                let rate = 1_000_000 - skew + self.rng.range(0, 2 * skew);
                self.node(id).clock_rate_ppm = rate;
                self.note(|| format!("node {id} clock rate now {rate} ppm"));
            }
            FaultAction::Membership => self.membership_step(),
            FaultAction::Transfer => self.transfer(),
        }
    }

    fn random_node(&mut self) -> NodeId {
        let index = self.rng.below(self.ids.len() as u64) as usize;
        self.ids[index]
    }

    fn heal_later(&mut self, links: Vec<(NodeId, NodeId)>) {
        let duration = if self.rng.chance(500_000) {
            self.rng.range(2 * TICK_US, 30 * TICK_US)
        } else {
            self.rng.range(30 * TICK_US, 300 * TICK_US)
        };
        self.schedule(self.now + duration, Event::Heal { links });
    }

    fn partition(&mut self) {
        let mut ids = self.ids.clone();
        self.rng.shuffle(&mut ids);
        let side = self.rng.range(1, (ids.len() as u64 - 1).max(1)) as usize;
        let (a, b) = ids.split_at(side);
        let mut links = Vec::new();
        for &x in a {
            for &y in b {
                links.push((x, y));
                links.push((y, x));
            }
        }
        for &(from, to) in &links {
            self.network.cut(from, to);
        }
        self.stats.partitions += 1;
        let (a, b) = (a.to_vec(), b.to_vec());
        self.note(|| format!("partition {a:?} | {b:?}"));
        self.heal_later(links);
    }

    fn one_way(&mut self) {
        let victim = self.random_node();
        let others: Vec<NodeId> = self.ids.iter().copied().filter(|&id| id != victim).collect();
        let links: Vec<(NodeId, NodeId)> = match self.rng.below(3) {
            // The victim hears everyone but nobody hears it (a leader that cannot reach
            // its followers but still gets their votes requests).
            0 => others.iter().map(|&other| (victim, other)).collect(),
            // Everyone hears the victim, it hears nobody.
            1 => others.iter().map(|&other| (other, victim)).collect(),
            // One directed link.
            _ => match self.rng.choose(&others) {
                Some(&other) => vec![(victim, other)],
                None => Vec::new(),
            },
        };
        for &(from, to) in &links {
            self.network.cut(from, to);
        }
        self.stats.one_way_cuts += 1;
        let shown = links.clone();
        self.note(|| format!("one-way cut {shown:?}"));
        self.heal_later(links);
    }

    fn crash_fault(&mut self) {
        let up: Vec<NodeId> = self.nodes.iter().filter(|node| node.is_up()).map(|node| node.id).collect();
        let down = self.nodes.iter().filter(|node| !node.is_up() && !node.decommissioned).count();
        // Usually keep a quorum up; sometimes take more down, which a cluster must survive
        // too (it just stops until they return).
        let max_down = if self.rng.chance(100_000) { self.options.nodes } else { (self.options.nodes - 1) / 2 };
        if down >= max_down {
            return;
        }
        // Prefer the leader half of the time: its crashes are the ones that matter most.
        let victim = match self.leader() {
            Some(leader) if self.rng.chance(500_000) => leader,
            _ => match self.rng.choose(&up) {
                Some(&id) => id,
                None => return,
            },
        };
        if self.rng.chance(500_000) {
            self.crash(victim);
        } else {
            // Crash in the middle of the victim's next disk write.
            self.node(victim).crash_during_next_write = true;
            self.note(|| format!("node {victim} will crash during its next write"));
        }
    }

    /// Leader churn: the next few nodes to win an election crash (or, with partitions on,
    /// are cut off) at once, within a few ticks, or as soon as they first commit, while
    /// they are still bringing followers up to date with entries of earlier terms: the
    /// moment Figure 8 of the paper is about.
    fn arm_churn(&mut self) {
        let leaders = self.rng.range(1, 5) as u32;
        self.crash_next_leaders = leaders;
        self.note(|| format!("the next {leaders} new leaders will be taken out soon after winning"));
    }

    fn transfer(&mut self) {
        let Some(leader) = self.leader() else { return };
        let voters: Vec<NodeId> = match self.nodes[(leader - 1) as usize].raft() {
            Some(raft) => raft.membership().voters.iter().copied().filter(|&id| id != leader).collect(),
            None => return,
        };
        let Some(&target) = self.rng.choose(&voters) else { return };
        self.stats.transfers += 1;
        self.note(|| format!("node {leader} asked to transfer leadership to {target}"));
        let mut fx = Effects::default();
        let _ = self.nodes[(leader - 1) as usize]
            .with_raft(&mut self.checker, &mut fx, |raft| raft.transfer_leadership(target));
        self.apply_effects(leader, fx);
    }

    /// Removes a voter, adds a removed node back (or a brand-new node in its place) as a
    /// learner, or promotes a learner: one single-server change at a time, as an operator
    /// would do it.
    fn membership_step(&mut self) {
        let Some(leader) = self.leader() else { return };
        let Some(membership) = self.nodes[(leader - 1) as usize].raft().map(|raft| raft.membership().clone()) else {
            return;
        };
        let removed = self
            .nodes
            .iter()
            .find(|node| node.decommissioned && !node.retired && !membership.contains(node.id))
            .map(|node| node.id);
        let orphan = self.nodes.iter().find(|node| node.is_up() && !membership.contains(node.id)).map(|node| node.id);
        // A removed node comes back with its old disk, or is replaced by a new node with a
        // new id and an empty disk (which catches up by snapshot).
        let mut replacement = None;
        let change = if let Some(id) = removed {
            if self.rng.chance(500_000) && self.nodes.len() < self.options.nodes + MAX_REPLACEMENTS {
                let new_id = self.nodes.len() as NodeId + 1;
                replacement = Some((id, new_id));
                MembershipChange::AddLearner(new_id)
            } else {
                MembershipChange::AddLearner(id)
            }
        } else if let Some(&id) = membership.learners.iter().next() {
            MembershipChange::PromoteLearner(id)
        } else if let Some(id) = orphan {
            MembershipChange::AddLearner(id)
        } else if membership.voters.len() >= 3 {
            let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
            match self.rng.choose(&voters) {
                Some(&id) => MembershipChange::Remove(id),
                None => return,
            }
        } else {
            return;
        };
        let mut fx = Effects::default();
        let proposed = self.nodes[(leader - 1) as usize]
            .with_raft(&mut self.checker, &mut fx, |raft| raft.propose_membership(change.clone()));
        let accepted = matches!(proposed, Some(Ok(_)));
        if let (Some(Ok((_, index))), MembershipChange::AddLearner(id)) = (&proposed, &change) {
            self.proposed_adds.insert(*id, *index);
        }
        self.note(|| format!("node {leader} proposes {change:?}: {proposed:?}"));
        self.apply_effects(leader, fx);
        if !accepted {
            return;
        }
        self.stats.membership_changes += 1;
        match (change, replacement) {
            (MembershipChange::AddLearner(new_id), Some((old_id, _))) => {
                // The operator starts the new member with the cluster as the leader sees it.
                self.node(old_id).retired = true;
                let mut joining = membership;
                joining.learners.insert(new_id);
                let skew = self.scenario.max_skew_ppm;
                let rate = 1_000_000 - skew + self.rng.range(0, 2 * skew);
                let mut node = SimNode::new(Config { id: new_id, ..self.template.clone() }, joining, rate);
                node.compact_every = self.scenario.compact_every;
                self.nodes.push(node);
                self.ids.push(new_id);
                self.note(|| format!("node {new_id} joins in place of node {old_id}"));
                self.start_node(new_id);
            }
            (MembershipChange::AddLearner(id), None) if self.node(id).decommissioned => {
                self.nodes[(id - 1) as usize].readd(&mut self.checker);
                self.after_start(id);
            }
            _ => {}
        }
    }

    fn advance_phase(&mut self) {
        match self.phase {
            Phase::Faults => {
                if self.workload.is_done() || self.now >= FAULT_PHASE_US {
                    self.heal();
                }
            }
            Phase::Healed { deadline } => {
                if self.workload.final_reads_done() && self.workload.is_done() {
                    self.phase = Phase::Converging { deadline: self.now + CONVERGE_US };
                    self.note(|| "final reads done; waiting for the members to converge".into());
                } else if self.now >= deadline {
                    let in_flight = self.workload.in_flight();
                    let up: Vec<String> = self.describe_nodes();
                    self.checker.fail(format!(
                        "liveness: {}s after every fault healed, the final reads have not finished \
                         ({in_flight} operations in flight); nodes: {}",
                        SETTLE_US / 1_000_000,
                        up.join("; ")
                    ));
                }
            }
            Phase::Converging { deadline } => {
                if self.converged() {
                    self.phase = Phase::Done;
                } else if self.now >= deadline {
                    let up = self.describe_nodes();
                    self.checker.fail(format!(
                        "liveness: the members did not converge on one commit index and one map within {}s of \
                         the final reads; nodes: {}",
                        CONVERGE_US / 1_000_000,
                        up.join("; ")
                    ));
                }
            }
            Phase::Done => {}
        }
    }

    fn describe_nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| match node.raft() {
                Some(raft) => format!(
                    "{} {:?} term {} leader {:?} commit {} applied {} last {} voters {:?} learners {:?}",
                    node.id,
                    raft.role(),
                    raft.term(),
                    raft.leader(),
                    raft.commit_index(),
                    node.applied(),
                    raft.last_index(),
                    raft.membership().voters,
                    raft.membership().learners
                ),
                None if node.retired => format!("{} removed and replaced", node.id),
                None if node.decommissioned => format!("{} removed", node.id),
                None => format!("{} down", node.id),
            })
            .collect()
    }

    /// Heals every fault and starts the final reads.
    fn heal(&mut self) {
        self.note(|| "healing every fault".into());
        self.workload.stop();
        self.network.heal_all();
        self.network.settings = self.network.settings.calm();
        for id in self.ids.clone() {
            let node = self.node(id);
            node.crash_during_next_write = false;
            if !node.is_up() && !node.decommissioned {
                self.start_node(id);
            }
        }
        let reader = self.workload.add_final_reader();
        self.schedule(self.now + TICK_US, Event::ClientWake { client: reader });
        self.phase = Phase::Healed { deadline: self.now + SETTLE_US };
    }

    /// Whether every up member has applied the leader's commit index and the maps agree.
    fn converged(&self) -> bool {
        let Some(leader) = self.leader() else { return false };
        let Some(raft) = self.nodes[(leader - 1) as usize].raft() else { return false };
        let commit = raft.commit_index();
        let membership = raft.membership();
        let members: Vec<&SimNode> =
            self.nodes.iter().filter(|node| node.is_up() && membership.contains(node.id)).collect();
        if members.iter().any(|node| node.applied() != commit) {
            return false;
        }
        // Compared by content: the map's own applied index differs legitimately between a
        // node that applied every command and one restored from a snapshot taken at a Noop.
        let reference = self.nodes[(leader - 1) as usize].machine().snapshot();
        members.iter().all(|node| node.machine().snapshot() == reference)
    }

    /// Final per-node lines, for a failure report.
    pub fn node_summary(&self) -> Vec<String> {
        self.describe_nodes()
    }
}

/// A new leader the churn fault takes out once its commit index moves past `commit`
/// (the moment it has just committed, before anyone else knows).
#[derive(Clone, Copy, Debug)]
struct ChurnOnCommit {
    node: NodeId,
    term: u64,
    commit: Index,
    isolate: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultAction {
    Partition,
    OneWay,
    Crash,
    Churn,
    Skew,
    Membership,
    Transfer,
}

/// The clock skew lease reads survive, in parts per million either way: a leader's lease of
/// `lease` ticks must end before a follower can vote for someone else, `election` ticks
/// after it last heard the leader. Each can be off by one tick (the tick phase), so the
/// condition is `lease / (1 - d) < (election - 1) / (1 + d)`; this returns 80% of the
/// largest `d` that satisfies it.
pub fn lease_drift_budget_ppm(election: u32, lease: u32) -> u64 {
    let (e, l) = (u64::from(election.saturating_sub(1)), u64::from(lease));
    if e <= l {
        return 0;
    }
    (e - l) * 1_000_000 / (e + l) * 8 / 10
}

fn inject_bugs(config: Config, bugs: &[crate::config::Bug]) -> Config {
    #[cfg(feature = "broken")]
    {
        let mut config = config;
        for &bug in bugs {
            config = config.inject_bug(bug);
        }
        config
    }
    #[cfg(not(feature = "broken"))]
    {
        assert!(bugs.is_empty(), "SimOptions::validate refuses bugs without the broken feature");
        config
    }
}

fn body_kind(body: &MessageBody) -> u64 {
    match body {
        MessageBody::PreVote { .. } => 1,
        MessageBody::PreVoteResponse { .. } => 2,
        MessageBody::RequestVote { .. } => 3,
        MessageBody::RequestVoteResponse { .. } => 4,
        MessageBody::AppendEntries { .. } => 5,
        MessageBody::AppendEntriesResponse { .. } => 6,
        MessageBody::InstallSnapshot { .. } => 7,
        MessageBody::InstallSnapshotResponse { .. } => 8,
        MessageBody::TimeoutNow => 9,
    }
}

/// A one-line description of a message for the trace.
fn summarize(message: &Message) -> String {
    match &message.body {
        MessageBody::PreVote { last_log_index, last_log_term } => {
            format!("PreVote last {last_log_index}/{last_log_term}")
        }
        MessageBody::PreVoteResponse { granted } => format!("PreVoteResponse granted={granted}"),
        MessageBody::RequestVote { last_log_index, last_log_term, transfer } => {
            format!("RequestVote last {last_log_index}/{last_log_term} transfer={transfer}")
        }
        MessageBody::RequestVoteResponse { granted } => format!("RequestVoteResponse granted={granted}"),
        MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit, round } => {
            let terms: Vec<String> = entries.iter().map(|e| format!("{}/{}", e.index, e.term)).collect();
            format!(
                "AppendEntries prev {prev_log_index}/{prev_log_term} [{}] commit {leader_commit} round {round}",
                terms.join(" ")
            )
        }
        MessageBody::AppendEntriesResponse { success, match_index, conflict, round } => {
            format!("AppendEntriesResponse success={success} match {match_index} conflict {conflict:?} round {round}")
        }
        MessageBody::InstallSnapshot { meta, offset, data, done, round } => format!(
            "InstallSnapshot {}/{} offset {offset} len {} done={done} round {round}",
            meta.index,
            meta.term,
            data.len()
        ),
        MessageBody::InstallSnapshotResponse { snapshot_index, next_offset, done, round } => {
            format!("InstallSnapshotResponse {snapshot_index} next {next_offset} done={done} round {round}")
        }
        MessageBody::TimeoutNow => "TimeoutNow".into(),
    }
}
