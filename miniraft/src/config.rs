//! A node's configuration: its id, its timers (in ticks, so the core needs no clock), the
//! replication limits, and the read mode.
//!
//! Every limit is named here, with the default and why.

use crate::types::NodeId;

/// How a leader serves linearizable reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex (diss. §6.4): record the commit index, confirm leadership with a round of
    /// heartbeats acknowledged by a quorum, then serve once that index is applied. Costs a
    /// round trip; safe whatever the clocks do. The default.
    #[default]
    ReadIndex,
    /// Lease reads (diss. §6.4.1): serve at the commit index without a round trip while a
    /// quorum acknowledged this leader less than `lease_ticks` ago. Only safe when clocks
    /// drift by less than the margin between `lease_ticks` and `election_ticks`: a node
    /// whose clock runs slow can elect a new leader while the old one still believes in
    /// its lease. Opt in only when that bound holds.
    Lease,
}

/// A test-only, deliberately broken variant of the core, used to show that the simulation
/// catches it. Only settable with the `broken` feature (`Config::inject_bug`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Commit any entry stored on a quorum, whatever its term: the Figure 8 bug (§5.4.2).
    CommitPreviousTermByCounting,
    /// Send a vote (and a pre-vote) before the vote is persisted, so a crash can make a node
    /// vote twice in one term.
    VoteBeforePersist,
    /// Answer reads immediately at the local commit index, without confirming leadership:
    /// a deposed leader serves stale data.
    ReadWithoutReadIndex,
}

/// The configuration of one node's core.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; nonzero.
    pub id: NodeId,
    /// A leader sends heartbeats every this many ticks. etcd's default tick is 100 ms with
    /// a heartbeat every tick.
    pub heartbeat_ticks: u32,
    /// A follower that hears nothing from a leader for a randomized timeout in
    /// `[election_ticks, 2 * election_ticks)` starts a (pre-)election (§5.2). Must be
    /// larger than `heartbeat_ticks`; etcd uses 10.
    pub election_ticks: u32,
    /// Pre-vote (diss. §9.6): campaign only after a quorum says it would vote for us.
    pub pre_vote: bool,
    /// Check-quorum (diss. §6.2): a leader that has not heard from a quorum within an
    /// election timeout steps down, and followers ignore vote requests while they heard
    /// from a live leader within the minimum election timeout.
    pub check_quorum: bool,
    /// How reads are served.
    pub read_mode: ReadMode,
    /// Under `ReadMode::Lease`, how long a quorum acknowledgement keeps the lease. Must be
    /// less than `election_ticks`; the difference is the clock-drift budget.
    pub lease_ticks: u32,
    /// The most entries one `AppendEntries` carries (batching).
    pub max_entries_per_message: usize,
    /// The most payload bytes one `AppendEntries` carries (at least one entry is always sent).
    pub max_bytes_per_message: usize,
    /// The most `AppendEntries` in flight to one follower before the leader waits for an
    /// answer (pipelining). 1 is stop-and-wait.
    pub max_inflight_messages: usize,
    /// The size of one `InstallSnapshot` chunk.
    pub snapshot_chunk_bytes: usize,
    /// The most proposals the leader accepts beyond its commit index before refusing new
    /// ones with `ProposeError::Busy` (backpressure; 0 = no limit).
    pub max_uncommitted_entries: usize,
    /// Deliberately broken behaviour for tests; empty in every real build.
    pub(crate) bugs: Bugs,
}

/// The set of injected bugs (empty unless the `broken` feature sets some).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    pub(crate) commit_previous_term_by_counting: bool,
    pub(crate) vote_before_persist: bool,
    pub(crate) read_without_read_index: bool,
}

impl Bugs {
    /// Whether `bug` is injected.
    pub fn has(&self, bug: Bug) -> bool {
        match bug {
            Bug::CommitPreviousTermByCounting => self.commit_previous_term_by_counting,
            Bug::VoteBeforePersist => self.vote_before_persist,
            Bug::ReadWithoutReadIndex => self.read_without_read_index,
        }
    }
}

impl Config {
    /// The defaults for node `id`: etcd's timers (heartbeat 1 tick, election 10 ticks),
    /// pre-vote and check-quorum on, ReadIndex reads.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            heartbeat_ticks: 1,
            election_ticks: 10,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            lease_ticks: 8,
            max_entries_per_message: 256,
            max_bytes_per_message: 1024 * 1024,
            max_inflight_messages: 64,
            snapshot_chunk_bytes: 256 * 1024,
            max_uncommitted_entries: 0,
            bugs: Bugs::default(),
        }
    }

    /// The injected bugs.
    pub fn bugs(&self) -> Bugs {
        self.bugs
    }

    /// Injects a deliberately broken behaviour, for the tests that show the simulation
    /// catching it.
    #[cfg(feature = "broken")]
    pub fn inject_bug(mut self, bug: Bug) -> Config {
        match bug {
            Bug::CommitPreviousTermByCounting => self.bugs.commit_previous_term_by_counting = true,
            Bug::VoteBeforePersist => self.bugs.vote_before_persist = true,
            Bug::ReadWithoutReadIndex => self.bugs.read_without_read_index = true,
        }
        self
    }

    /// Checks the relations between the settings.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        use crate::error::ConfigError;
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::Timers { heartbeat: self.heartbeat_ticks, election: self.election_ticks });
        }
        if self.read_mode == ReadMode::Lease && !self.check_quorum {
            return Err(ConfigError::LeaseNeedsCheckQuorum);
        }
        if self.read_mode == ReadMode::Lease && self.lease_ticks >= self.election_ticks {
            return Err(ConfigError::Lease { lease: self.lease_ticks, election: self.election_ticks });
        }
        if self.max_entries_per_message == 0 || self.max_inflight_messages == 0 || self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        Ok(())
    }
}
