//! The group coordinator: Kafka's classic consumer-group protocol.
//!
//! ```text
//!              join (first member)            all known members joined
//!   Empty ─────────────────────────▶ PreparingRebalance ─────────────────▶ CompletingRebalance
//!     ▲                                  ▲      ▲                               │
//!     │ last member leaves               │      │ join / leave / timeout         │ leader's SyncGroup
//!     └──────────────────────────────────┘      └──────────── Stable ◀──────────┘
//! ```
//!
//! - **JoinGroup** parks each member's request. When every member the group knows has
//!   joined (or the rebalance timeout expires, and the stragglers are dropped), the
//!   generation id goes up, a protocol all members support is chosen, and every parked
//!   request is answered; the leader's answer carries every member's subscription.
//! - **SyncGroup**: the leader sends the assignment it computed (the broker never looks
//!   inside it: assignment is chosen by the client). Followers' SyncGroups wait for it.
//! - **Heartbeat** keeps a member alive and answers REBALANCE_IN_PROGRESS while the
//!   group is rebalancing, which is how members learn they must rejoin.
//! - **LeaveGroup**, or a member missing heartbeats for `session_timeout_ms`, removes the
//!   member and starts a rebalance.
//!
//! Every transition happens under one lock per coordinator with the current time passed
//! in, and the timers are one periodic [`Coordinator::tick`], so tests can drive the
//! clock. Left out: static membership (`group.instance.id`), the MEMBER_ID_REQUIRED
//! round trip of JoinGroup v4+ (we hand out the member id in the first answer, as
//! brokers before Kafka 2.2 did), and the KIP-848 consumer protocol.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Kafka's `group.min.session.timeout.ms` is 6 s; we allow 1 s so that tests of member
/// expiry run quickly.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(1000);
/// Kafka's `group.max.session.timeout.ms`.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_millis(1_800_000);

/// A group error, as the Kafka error code the client will see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupError(pub ResponseError);

/// Kafka's group states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The names DescribeGroups and ListGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup is answered with once its rebalance completes.
#[derive(Clone, Debug)]
pub struct JoinOutcome {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// Every member's subscription metadata for the chosen protocol; only for the leader.
    pub members: Vec<(String, Bytes)>,
}

/// What a member says when it joins.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// Protocol names with their metadata, in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
}

pub type JoinReply = oneshot::Receiver<Result<JoinOutcome, GroupError>>;
pub type SyncReply = oneshot::Receiver<Result<Bytes, GroupError>>;

struct Member {
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heard: Instant,
    /// A parked JoinGroup, answered when the rebalance completes.
    awaiting_join: Option<oneshot::Sender<Result<JoinOutcome, GroupError>>>,
    /// A parked SyncGroup, answered when the leader's assignment arrives.
    awaiting_sync: Option<oneshot::Sender<Result<Bytes, GroupError>>>,
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol_name: String,
    leader: Option<String>,
    /// Ordered, so the leader's member list and DescribeGroups are deterministic.
    members: BTreeMap<String, Member>,
    /// When the current PreparingRebalance ends even if members are missing.
    rebalance_deadline: Option<Instant>,
    /// A group's first generation waits until then for more members to arrive, even if
    /// everyone it knows has joined.
    initial_delay_until: Option<Instant>,
}

/// A snapshot of a group for DescribeGroups.
#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    /// member id, client id, client host, metadata of the chosen protocol, assignment.
    pub members: Vec<(String, String, String, Bytes, Bytes)>,
}

/// Every group's membership state.
pub struct Coordinator {
    /// A parking_lot mutex: transitions are short and never await.
    groups: Mutex<HashMap<String, Group>>,
    /// How long a group with no members waits for more before its first generation
    /// (Kafka `group.initial.rebalance.delay.ms`).
    initial_delay: Duration,
}

impl Coordinator {
    pub fn new(initial_delay: Duration) -> Coordinator {
        Coordinator { groups: Mutex::new(HashMap::new()), initial_delay }
    }

    /// JoinGroup. The receiver resolves when the rebalance completes.
    pub fn join(&self, request: JoinRequest, now: Instant) -> Result<JoinReply, GroupError> {
        if request.group_id.is_empty() {
            return Err(GroupError(ResponseError::InvalidGroupId));
        }
        if request.session_timeout < MIN_SESSION_TIMEOUT || request.session_timeout > MAX_SESSION_TIMEOUT {
            return Err(GroupError(ResponseError::InvalidSessionTimeout));
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(GroupError(ResponseError::InconsistentGroupProtocol));
        }
        let mut groups = self.groups.lock();
        let group = groups.entry(request.group_id.clone()).or_insert_with(|| Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol_name: String::new(),
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
        });
        if !group.members.is_empty() {
            let shared = request
                .protocols
                .iter()
                .any(|(name, _)| group.members.values().all(|m| m.protocols.iter().any(|(theirs, _)| theirs == name)));
            if request.protocol_type != group.protocol_type || !shared {
                return Err(GroupError(ResponseError::InconsistentGroupProtocol));
            }
        }
        let member_id = if request.member_id.is_empty() {
            let id = uuid::Uuid::from_u64_pair(fastrand::u64(..), fastrand::u64(..));
            format!("{}-{}", if request.client_id.is_empty() { "member" } else { &request.client_id }, id)
        } else if group.members.contains_key(&request.member_id) {
            request.member_id.clone()
        } else {
            return Err(GroupError(ResponseError::UnknownMemberId));
        };
        let (tx, rx) = oneshot::channel();
        let member = group.members.entry(member_id).or_insert_with(|| Member {
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            session_timeout: request.session_timeout,
            rebalance_timeout: request.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_heard: now,
            awaiting_join: None,
            awaiting_sync: None,
        });
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.protocols = request.protocols;
        member.last_heard = now;
        if let Some(previous) = member.awaiting_join.replace(tx) {
            // The client gave up on its earlier JoinGroup and sent a new one.
            let _ = previous.send(Err(GroupError(ResponseError::UnknownMemberId)));
        }
        group.protocol_type = request.protocol_type;
        if group.state != GroupState::PreparingRebalance {
            let first = group.state == GroupState::Empty;
            group.prepare_rebalance(now, if first { Some(self.initial_delay) } else { None });
        }
        group.maybe_complete_join(now, false);
        Ok(rx)
    }

    /// SyncGroup. The receiver resolves with this member's assignment.
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<SyncReply, GroupError> {
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(GroupError(ResponseError::UnknownMemberId))?;
        if !group.members.contains_key(member_id) {
            return Err(GroupError(ResponseError::UnknownMemberId));
        }
        if generation != group.generation {
            return Err(GroupError(ResponseError::IllegalGeneration));
        }
        let (tx, rx) = oneshot::channel();
        match group.state {
            GroupState::Empty => return Err(GroupError(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => return Err(GroupError(ResponseError::RebalanceInProgress)),
            GroupState::Stable => {
                let assignment = group.members[member_id].assignment.clone();
                let _ = tx.send(Ok(assignment));
            }
            GroupState::CompletingRebalance => {
                let is_leader = group.leader.as_deref() == Some(member_id);
                if let Some(member) = group.members.get_mut(member_id) {
                    member.last_heard = now;
                    member.awaiting_sync = Some(tx);
                }
                if is_leader {
                    let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, member) in group.members.iter_mut() {
                        // A member the leader left out gets an empty assignment, as in Kafka.
                        member.assignment = assignments.remove(id).unwrap_or_default();
                        if let Some(waiting) = member.awaiting_sync.take() {
                            let _ = waiting.send(Ok(member.assignment.clone()));
                        }
                    }
                    group.state = GroupState::Stable;
                }
            }
        }
        Ok(rx)
    }

    /// Heartbeat.
    pub fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str, now: Instant) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(GroupError(ResponseError::UnknownMemberId))?;
        let Some(member) = group.members.get_mut(member_id) else {
            return Err(GroupError(ResponseError::UnknownMemberId));
        };
        member.last_heard = now;
        if generation != group.generation {
            return Err(GroupError(ResponseError::IllegalGeneration));
        }
        match group.state {
            GroupState::PreparingRebalance => Err(GroupError(ResponseError::RebalanceInProgress)),
            GroupState::Empty => Err(GroupError(ResponseError::UnknownMemberId)),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup for one member.
    pub fn leave(&self, group_id: &str, member_id: &str, now: Instant) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(GroupError(ResponseError::UnknownMemberId))?;
        if !group.remove_member(member_id, now) {
            return Err(GroupError(ResponseError::UnknownMemberId));
        }
        Ok(())
    }

    /// Checks whether a commit from this member and generation may be written.
    /// `generation == -1` with an empty member id is a commit from outside any group
    /// (an admin tool, or a consumer with manual assignment): allowed while the group
    /// has no members.
    pub fn validate_commit(&self, group_id: &str, generation: i32, member_id: &str) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError(ResponseError::InvalidGroupId));
        }
        let groups = self.groups.lock();
        let Some(group) = groups.get(group_id) else {
            return if generation < 0 { Ok(()) } else { Err(GroupError(ResponseError::IllegalGeneration)) };
        };
        if generation < 0 && member_id.is_empty() {
            return if group.members.is_empty() { Ok(()) } else { Err(GroupError(ResponseError::UnknownMemberId)) };
        }
        if !group.members.contains_key(member_id) {
            return Err(GroupError(ResponseError::UnknownMemberId));
        }
        if generation != group.generation {
            return Err(GroupError(ResponseError::IllegalGeneration));
        }
        // PreparingRebalance still takes commits from the current generation, so members
        // can commit what they processed before rejoining; CompletingRebalance does not.
        if group.state == GroupState::CompletingRebalance {
            return Err(GroupError(ResponseError::RebalanceInProgress));
        }
        Ok(())
    }

    /// Expires silent members and finishes rebalances whose timeout ran out. Call it
    /// periodically (the server does, every 100 ms).
    pub fn tick(&self, now: Instant) {
        let mut groups = self.groups.lock();
        for (id, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| m.awaiting_join.is_none() && now.duration_since(m.last_heard) > m.session_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for member in expired {
                tracing::info!(group = id, member, "member's session expired");
                group.remove_member(&member, now);
            }
            group.maybe_complete_join(now, false);
            if group.state == GroupState::PreparingRebalance && group.rebalance_deadline.is_some_and(|d| now >= d) {
                group.maybe_complete_join(now, true);
            }
        }
        groups.retain(|_, g| !(g.state == GroupState::Empty && g.members.is_empty() && g.generation == 0));
    }

    /// Groups with members, with their protocol type and state.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.groups.lock();
        let mut out: Vec<_> = groups.iter().map(|(id, g)| (id.clone(), g.protocol_type.clone(), g.state)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock();
        let group = groups.get(group_id)?;
        Some(GroupDescription {
            state: group.state,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            members: group
                .members
                .iter()
                .map(|(id, m)| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == group.protocol_name)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default();
                    (id.clone(), m.client_id.clone(), m.client_host.clone(), metadata, m.assignment.clone())
                })
                .collect(),
        })
    }
}

impl Group {
    /// Enters PreparingRebalance: parked SyncGroups learn the generation is over, and
    /// the rebalance gets a deadline (the longest rebalance timeout of its members, or
    /// the initial delay for a group's first generation).
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Option<Duration>) {
        for member in self.members.values_mut() {
            if let Some(waiting) = member.awaiting_sync.take() {
                let _ = waiting.send(Err(GroupError(ResponseError::RebalanceInProgress)));
            }
        }
        let timeout = match initial_delay {
            Some(delay) => delay,
            None => self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default(),
        };
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
        self.initial_delay_until = initial_delay.map(|d| now + d);
    }

    /// Completes the join phase if every member has rejoined, or, with `deadline_passed`,
    /// with whoever has: the others are dropped.
    fn maybe_complete_join(&mut self, now: Instant, deadline_passed: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        if !(deadline_passed || (all_joined && delay_over)) {
            return;
        }
        self.members.retain(|_, m| m.awaiting_join.is_some());
        self.generation += 1;
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.protocol_name.clear();
            return;
        }
        // The protocol: the leader's most preferred one that every member supports.
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let chosen = self.members[&leader]
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
            .unwrap_or_default();
        assert!(!chosen.is_empty(), "join admitted a member with no protocol in common");
        self.protocol_name = chosen;
        self.state = GroupState::CompletingRebalance;
        let roster: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m.protocols.iter().find(|(n, _)| *n == self.protocol_name).map(|(_, b)| b.clone());
                (id.clone(), meta.unwrap_or_default())
            })
            .collect();
        for (id, member) in self.members.iter_mut() {
            member.last_heard = now;
            member.assignment = Bytes::new();
            if let Some(waiting) = member.awaiting_join.take() {
                let _ = waiting.send(Ok(JoinOutcome {
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { roster.clone() } else { Vec::new() },
                }));
            }
        }
    }

    /// Removes a member; the others rebalance. Returns whether it was a member.
    fn remove_member(&mut self, member_id: &str, now: Instant) -> bool {
        let Some(mut member) = self.members.remove(member_id) else {
            return false;
        };
        if let Some(waiting) = member.awaiting_join.take() {
            let _ = waiting.send(Err(GroupError(ResponseError::UnknownMemberId)));
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            let _ = waiting.send(Err(GroupError(ResponseError::UnknownMemberId)));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now, None),
            GroupState::PreparingRebalance | GroupState::Empty => {}
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.rebalance_deadline = None;
            self.initial_delay_until = None;
            self.protocol_name.clear();
        } else {
            self.maybe_complete_join(now, false);
        }
        true
    }
}
