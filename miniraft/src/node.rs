//! The runtime: a tokio task that drives one [`Raft`] core with real time, real disks and
//! a real network, and an application's [`StateMachine`].
//!
//! ```text
//!                 ┌───────────── driver task (owns Raft and the state machine) ─────────────┐
//!  tick timer ──> │ raft.tick()                                                             │
//!  transport ───> │ raft.step(message)              ready() ─> send messages_now            │
//!  NodeHandle ──> │ raft.propose / read_index / …             persist ──> storage thread ──┐│
//!  (bounded mpsc, │                                           (fsync; the core keeps       ││
//!   oneshot       │   <── Persisted(ready) ─────────────────── stepping meanwhile)   <─────┘│
//!   replies)      │ send messages, restore snapshot, apply committed, answer clients,       │
//!                 │ advance; every `snapshot_count` entries: snapshot -> save -> compact    │
//!                 └─────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The loop follows the order of `ready.rs`. Only one [`Ready`] is out at a time; while the
//! storage thread fsyncs it, the driver keeps feeding the core ticks, messages and requests
//! (they accumulate into the next `Ready`), so the disk's latency batches proposals instead
//! of stalling the node. The fsync runs on a dedicated thread, never on a tokio worker.
//!
//! # Durability
//!
//! A client's write (a proposal) is acknowledged only after its entry is **committed**
//! (written and fsynced by a quorum of voters, each before it acknowledged the entry to
//! the leader; the leader counts itself only once its own fsync returned) **and applied**
//! on this node; the reply carries the state machine's response. With
//! `NodeOptions::fsync = false` (`--unsafe-no-fsync`) "written" means handed to the OS, and
//! a power failure of a quorum can lose acknowledged writes (a `kill -9` cannot: the page
//! cache survives the process).
//!
//! When a pending write's fate cannot be known (this node lost leadership after proposing,
//! the request timed out, the node is shutting down) the client gets
//! [`RequestError::Unknown`]: the entry may still commit. A definite failure
//! ([`RequestError::NotLeader`], [`RequestError::TryAgain`]) means it was never applied
//! and never will be: the core refused it, or another entry committed at its index.
//!
//! Reads go through ReadIndex (or the lease, per [`ReadMode`]): the core confirms this node
//! still leads as of a commit index, and the driver answers the read from the state machine
//! once it has applied through that index.
//!
//! Left out: streaming snapshots to disk in chunks (a snapshot is one `Bytes` in memory),
//! applying entries on a separate thread (the key-value map applies in microseconds),
//! and dynamic peer addresses (the transport dials the addresses given at start, so a node
//! added by a membership change must be listed in `initial_cluster` already).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use minicore::lifecycle::Shutdown;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::{Config, ReadMode};
use crate::error::{ConfigError, ProposeError};
use crate::message::Message;
use crate::raft::Raft;
use crate::ready::{ReadState, Ready, Restored, SoftState};
use crate::state_machine::{RestoreError, StateMachine};
use crate::storage::{Storage, StorageError, StorageOptions};
use crate::transport::Transport;
use crate::types::{
    Entry, EntryPayload, Index, Membership, MembershipChange, NodeId, Role, Snapshot, SnapshotMeta, Term,
};

/// How many client requests may wait in the node's queue before callers wait for room
/// (backpressure on the client connections, which stop reading).
pub const REQUEST_QUEUE_CAPACITY: usize = 1024;

/// How many decoded peer messages may wait for the driver; the transport drops messages
/// when it is full (Raft retries what matters).
pub const INBOX_CAPACITY: usize = 4096;

/// The most proposals (writes and membership changes) waiting to commit on this node; more
/// get [`RequestError::TryAgain`]. It is also the core's `max_uncommitted_entries`.
pub const MAX_PENDING_PROPOSALS: usize = 8192;

/// The most reads waiting for ReadIndex or for the state machine to catch up.
pub const MAX_PENDING_READS: usize = 8192;

/// The most requests the driver takes from the queue (or messages from the inbox) before
/// it looks at the other event sources again, so that a flood of one kind cannot starve
/// the timer or the storage completions.
const MAX_EVENTS_PER_TURN: usize = 256;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node's id; nonzero, and a key of `initial_cluster`.
    pub id: NodeId,
    /// Where the log, the hard state and the snapshots live.
    pub data_dir: PathBuf,
    /// The address the peer listener binds (port 0 picks a free one; see
    /// [`NodeHandle::peer_addr`]).
    pub listen_peer: SocketAddr,
    /// For every member, the address *this* node dials to reach it (so a test can put a
    /// proxy on each link). This node's own entry is not dialed. Unless `join_existing`,
    /// the keys are also the founding voters.
    pub initial_cluster: BTreeMap<NodeId, SocketAddr>,
    /// etcd's `--initial-cluster-state existing`: this node joins a running cluster, so it
    /// starts with no membership and waits for the leader to replicate it one.
    pub join_existing: bool,
    /// One tick of the core's logical clock; leaders send heartbeats every tick.
    pub heartbeat_interval: Duration,
    /// The minimum election timeout (the core randomises in `[t, 2t)`); a multiple of
    /// `heartbeat_interval` of at least 2.
    pub election_timeout: Duration,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_count: u64,
    /// fsync every persisted batch. Off only for benchmarks (`--unsafe-no-fsync`).
    pub fsync: bool,
    /// How linearizable reads are served.
    pub read_mode: ReadMode,
    /// How long a client request may wait for its answer before it gets "unknown" (writes)
    /// or "try again" (reads).
    pub request_timeout: Duration,
    /// Deliberately broken behaviours, for the tests that show them caught.
    #[cfg(feature = "broken")]
    pub bugs: Vec<RuntimeBug>,
}

/// A deliberately broken behaviour of the driver (the `broken` feature only), so that the
/// real-process tests can show the checker catching it; the core's own bugs are
/// [`crate::Bug`].
#[cfg(feature = "broken")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeBug {
    /// Apply entries, and answer their clients, as soon as they are durable on this node,
    /// before they commit: a leader cut off from its quorum acknowledges writes that the
    /// next leader never sees, and its state machine diverges.
    ApplyBeforeCommit,
}

impl NodeOptions {
    /// etcd's defaults (100 ms heartbeat, 1 s election timeout, snapshot every 10 000
    /// entries), fsync on, ReadIndex reads, a 5 s request timeout.
    pub fn new(
        id: NodeId,
        data_dir: impl Into<PathBuf>,
        listen_peer: SocketAddr,
        initial_cluster: BTreeMap<NodeId, SocketAddr>,
    ) -> NodeOptions {
        NodeOptions {
            id,
            data_dir: data_dir.into(),
            listen_peer,
            initial_cluster,
            join_existing: false,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 10_000,
            fsync: true,
            read_mode: ReadMode::ReadIndex,
            request_timeout: Duration::from_secs(5),
            #[cfg(feature = "broken")]
            bugs: Vec::new(),
        }
    }

    /// The core's configuration: one tick per heartbeat interval, and
    /// `election_ticks = election_timeout / heartbeat_interval`.
    pub fn raft_config(&self) -> Result<Config, NodeError> {
        if self.heartbeat_interval.is_zero() {
            return Err(NodeError::Timers("the heartbeat interval must be at least 1 ms".into()));
        }
        let ratio = self.election_timeout.as_nanos() / self.heartbeat_interval.as_nanos();
        if ratio < 2 {
            return Err(NodeError::Timers(format!(
                "the election timeout ({:?}) must be at least twice the heartbeat interval ({:?}); etcd uses 10x",
                self.election_timeout, self.heartbeat_interval
            )));
        }
        let election_ticks = u32::try_from(ratio)
            .map_err(|_| NodeError::Timers("the election timeout is over 4 billion heartbeat intervals".into()))?;
        let mut config = Config::new(self.id);
        config.heartbeat_ticks = 1;
        config.election_ticks = election_ticks;
        // The lease must end before any other node can time out and win an election; the
        // gap (a fifth of the timeout, at least a tick) is the clock-drift budget.
        config.lease_ticks = election_ticks - (election_ticks / 5).max(1);
        config.read_mode = self.read_mode;
        config.max_uncommitted_entries = MAX_PENDING_PROPOSALS;
        config.validate()?;
        Ok(config)
    }
}

/// Why a node could not start, or why it stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid timers: {0}")]
    Timers(String),
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("node {0} is not in the initial cluster; list it in --initial-cluster (id=address)")]
    NotInCluster(NodeId),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot create the data directory {dir}: {source}; check --data-dir and its permissions")]
    DataDir { dir: PathBuf, source: std::io::Error },
    #[error("restoring the state machine: {0}")]
    Restore(#[from] RestoreError),
    #[error("cannot listen for peers on {addr}: {source}; pick a free port with --listen-peer-urls")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the storage thread is gone: {0}")]
    StorageThread(String),
    /// The node stopped because of an earlier error (the message), reported by
    /// [`NodeHandle::stopped`].
    #[error("the node failed: {0}")]
    Failed(String),
}

/// Why a client request got no successful answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Definitely not applied: this node does not lead; `leader` is whom it believes leads.
    #[error("not the leader (leader: {leader:?}); send the request to the leader")]
    NotLeader { leader: Option<NodeId> },
    /// Definitely not applied (refused, or another entry committed at its index); retry.
    #[error("{0}; retry")]
    TryAgain(String),
    /// The outcome is unknown: the write may or may not be applied (now or later).
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

impl RequestError {
    fn from_propose(error: ProposeError) -> RequestError {
        match error {
            ProposeError::NotLeader { leader } => RequestError::NotLeader { leader },
            ProposeError::Transferring => RequestError::TryAgain("a leadership transfer is in progress".into()),
            ProposeError::Busy => RequestError::TryAgain("too many uncommitted proposals".into()),
            ProposeError::NotReady => {
                RequestError::TryAgain("the leader has not committed an entry of its term yet".into())
            }
            // Refused before it was appended: definitely not applied. Some reasons pass (a
            // change still pending, a leader without a commit in its term), others do not
            // (removing a non-member); the reason says which.
            ProposeError::Membership(why) => RequestError::TryAgain(format!("membership change refused: {why}")),
        }
    }
}

/// A node's state as `RAFT.STATUS` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub first: Index,
    pub last: Index,
    /// The index of the latest snapshot (0: none).
    pub snapshot: Index,
    pub membership: Membership,
}

/// `id=1 role=leader term=3 leader=1 commit=42 applied=42 last=42 first=1 snapshot=0
/// voters=1,2,3 learners=`; `leader=0` when none is known (0 is "nobody" on the wire).
impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |ids: &std::collections::BTreeSet<NodeId>| {
            ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(",")
        };
        write!(
            f,
            "id={} role={} term={} leader={} commit={} applied={} last={} first={} snapshot={} voters={} learners={}",
            self.id,
            role_name(self.role),
            self.term,
            self.leader.unwrap_or(0),
            self.commit,
            self.applied,
            self.last,
            self.first,
            self.snapshot,
            join(&self.membership.voters),
            join(&self.membership.learners),
        )
    }
}

/// The lowercase name `RAFT.STATUS` prints for a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Learner => "learner",
    }
}

type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// A client request to the driver.
enum Request {
    Propose { command: Bytes, reply: Reply<Bytes> },
    Read { query: Bytes, reply: Reply<Bytes> },
    Membership { change: MembershipChange, reply: Reply<()> },
    Transfer { to: NodeId, reply: Reply<()> },
    Status { reply: oneshot::Sender<Status> },
}

/// An answer on its way: the request is queued at the node (or was refused at once), and
/// [`Pending::wait`] resolves with its result or at the request's deadline.
///
/// Split from the call so that a connection can queue several pipelined requests before
/// it waits for the first answer.
pub struct Pending<T> {
    state: PendingState<T>,
}

enum PendingState<T> {
    Waiting { reply: oneshot::Receiver<Result<T, RequestError>>, deadline: Instant, on_timeout: RequestError },
    Done(Result<T, RequestError>),
}

impl<T> Pending<T> {
    /// The request's outcome.
    pub async fn wait(self) -> Result<T, RequestError> {
        match self.state {
            PendingState::Done(result) => result,
            PendingState::Waiting { reply, deadline, on_timeout } => {
                match tokio::time::timeout_at(deadline, reply).await {
                    Ok(Ok(result)) => result,
                    // The driver dropped the reply: it stopped with the request in flight.
                    Ok(Err(_)) => Err(on_timeout.with_reason("the node stopped")),
                    Err(_) => Err(on_timeout),
                }
            }
        }
    }
}

impl RequestError {
    /// The same kind of error with another reason (for the timeout/stop variants).
    fn with_reason(&self, reason: &str) -> RequestError {
        match self {
            RequestError::Unknown(_) => RequestError::Unknown(reason.into()),
            _ => RequestError::TryAgain(reason.into()),
        }
    }
}

/// How a running node is used: cheap to clone, one per client connection if need be.
#[derive(Clone)]
pub struct NodeHandle {
    id: NodeId,
    peer_addr: SocketAddr,
    request_timeout: Duration,
    requests: mpsc::Sender<Request>,
    shutdown: Shutdown,
    /// `None` while running; the driver's exit (Ok, or the error's message) once stopped.
    stopped: watch::Receiver<Option<Result<(), String>>>,
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address the peer listener bound.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> Request, on_timeout: RequestError) -> Pending<T> {
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + self.request_timeout;
        // Waits for room in the bounded queue: backpressure reaches the client connection.
        if self.requests.send(make(reply)).await.is_err() {
            return Pending { state: PendingState::Done(Err(RequestError::TryAgain("the node has stopped".into()))) };
        }
        Pending { state: PendingState::Waiting { reply: answer, deadline, on_timeout } }
    }

    /// Queues a command for the log; the answer is the state machine's response once it is
    /// committed and applied here (see the module docs on durability).
    pub async fn submit_propose(&self, command: Bytes) -> Pending<Bytes> {
        let timeout = RequestError::Unknown(format!("no commit within {:?}", self.request_timeout));
        self.submit(|reply| Request::Propose { command, reply }, timeout).await
    }

    /// Queues a linearizable read; the answer is `StateMachine::query(query)` once this
    /// node has confirmed its leadership and applied through the read's index.
    pub async fn submit_read(&self, query: Bytes) -> Pending<Bytes> {
        let timeout = RequestError::TryAgain(format!("the read was not served within {:?}", self.request_timeout));
        self.submit(|reply| Request::Read { query, reply }, timeout).await
    }

    /// Queues a membership change; answered once the change is committed.
    pub async fn submit_membership(&self, change: MembershipChange) -> Pending<()> {
        let timeout = RequestError::Unknown(format!("no commit within {:?}", self.request_timeout));
        self.submit(|reply| Request::Membership { change, reply }, timeout).await
    }

    /// Queues a leadership transfer to `to`; answered once `to` leads, or with an error when
    /// the transfer is refused or does not finish within two election timeouts.
    pub async fn submit_transfer(&self, to: NodeId) -> Pending<()> {
        let timeout = RequestError::TryAgain(format!("the transfer did not finish within {:?}", self.request_timeout));
        self.submit(|reply| Request::Transfer { to, reply }, timeout).await
    }

    /// [`NodeHandle::submit_propose`] and wait.
    pub async fn propose(&self, command: Bytes) -> Result<Bytes, RequestError> {
        self.submit_propose(command).await.wait().await
    }

    /// [`NodeHandle::submit_read`] and wait.
    pub async fn read(&self, query: Bytes) -> Result<Bytes, RequestError> {
        self.submit_read(query).await.wait().await
    }

    /// [`NodeHandle::submit_membership`] and wait.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), RequestError> {
        self.submit_membership(change).await.wait().await
    }

    /// [`NodeHandle::submit_transfer`] and wait.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), RequestError> {
        self.submit_transfer(to).await.wait().await
    }

    /// The node's current state.
    pub async fn status(&self) -> Result<Status, RequestError> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Status { reply }).await.is_err() {
            return Err(RequestError::TryAgain("the node has stopped".into()));
        }
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(_)) => Err(RequestError::TryAgain("the node has stopped".into())),
            Err(_) => Err(RequestError::TryAgain("the node did not answer in time".into())),
        }
    }

    /// Asks the node to stop: pending requests get `Unknown`, the transport closes, the
    /// storage thread finishes its current batch. See [`NodeHandle::stopped`].
    pub fn shutdown(&self) {
        self.shutdown.trigger();
    }

    /// Resolves when the driver has stopped: `Ok` after [`NodeHandle::shutdown`], the error
    /// when it stopped by itself (a storage failure: it cannot go on safely).
    pub async fn stopped(&self) -> Result<(), NodeError> {
        let mut stopped = self.stopped.clone();
        let result = match stopped.wait_for(|state| state.is_some()).await {
            Ok(state) => state.clone().unwrap_or(Ok(())),
            // The driver is gone without saying why (it panicked).
            Err(_) => Err("the driver task ended without a result (it panicked; see the log)".to_string()),
        };
        result.map_err(NodeError::Failed)
    }
}

/// Starts nodes.
pub struct Node;

impl Node {
    /// Recovers the node's storage, restores `state_machine` from the latest snapshot,
    /// binds the peer listener, and spawns the driver. Must run inside a tokio runtime.
    pub async fn start<S: StateMachine>(options: NodeOptions, mut state_machine: S) -> Result<NodeHandle, NodeError> {
        let config = options.raft_config()?;
        if !options.initial_cluster.contains_key(&options.id) {
            return Err(NodeError::NotInCluster(options.id));
        }
        let storage_options = StorageOptions { fsync: options.fsync, ..StorageOptions::default() };
        let (storage, recovered) = StorageThread::start(options.data_dir.clone(), storage_options).await?;
        tracing::info!(node = options.id, report = %recovered.report, "storage recovered");

        let mut applied_membership = Membership::default();
        let mut snapshot_index = 0;
        if let Some(snapshot) = &recovered.snapshot {
            state_machine.restore(snapshot)?;
            applied_membership = snapshot.meta.membership.clone();
            snapshot_index = snapshot.meta.index;
        }
        let initial_membership = if options.join_existing {
            Membership::default()
        } else {
            Membership::with_voters(options.initial_cluster.keys().copied())
        };
        if recovered.snapshot.is_none() {
            applied_membership = initial_membership.clone();
        }
        let restored = Restored {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot,
            entries: recovered.entries,
            initial_membership,
        };
        let mut raft = Raft::new(config, restored)?;
        assert_eq!(raft.applied_index(), snapshot_index, "the core starts applied at its snapshot");
        // A single-node cluster has nobody to wait for: elect itself at once.
        let membership = raft.membership();
        if membership.voters.len() == 1 && membership.voters.contains(&options.id) {
            raft.campaign();
        }

        let listener = tokio::net::TcpListener::bind(options.listen_peer)
            .await
            .map_err(|source| NodeError::Bind { addr: options.listen_peer, source })?;
        let peer_addr =
            listener.local_addr().map_err(|source| NodeError::Bind { addr: options.listen_peer, source })?;
        let peers: BTreeMap<NodeId, SocketAddr> =
            options.initial_cluster.iter().filter(|(id, _)| **id != options.id).map(|(id, a)| (*id, *a)).collect();
        let (inbox_tx, inbox) = mpsc::channel(INBOX_CAPACITY);
        let transport = Transport::start(options.id, listener, peers, inbox_tx);

        let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE_CAPACITY);
        let (stopped_tx, stopped) = watch::channel(None);
        let shutdown = Shutdown::new();
        let soft = SoftState { role: raft.role(), term: raft.term(), leader: raft.leader() };
        let driver = Driver {
            applied: raft.applied_index(),
            raft,
            state_machine,
            transport,
            storage,
            storage_busy: false,
            snapshot_count: options.snapshot_count.max(1),
            snapshot_index,
            applied_membership,
            soft,
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            ready_reads: BTreeMap::new(),
            next_read_id: 1,
            transfer: None,
            ticks: 0,
            #[cfg(feature = "broken")]
            bugs: options.bugs.clone(),
        };
        let handle = NodeHandle {
            id: options.id,
            peer_addr,
            request_timeout: options.request_timeout,
            requests: requests_tx,
            shutdown: shutdown.clone(),
            stopped,
        };
        let heartbeat = options.heartbeat_interval;
        tokio::spawn(async move {
            let result = driver.run(inbox, requests, heartbeat, shutdown).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "the node stopped");
            }
            stopped_tx.send_replace(Some(result.map_err(|e| e.to_string())));
        });
        Ok(handle)
    }
}

/// A write waiting for its entry to commit.
struct PendingProposal {
    /// The term the entry was appended in: the write committed iff the entry committed at
    /// its index has this term.
    term: Term,
    reply: ProposalReply,
}

enum ProposalReply {
    Command(Reply<Bytes>),
    Membership(Reply<()>),
}

impl ProposalReply {
    fn fail(self, error: RequestError) {
        // A receiver that is gone (the client timed out) needs no answer.
        match self {
            ProposalReply::Command(reply) => {
                let _ = reply.send(Err(error));
            }
            ProposalReply::Membership(reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            ProposalReply::Command(reply) => reply.is_closed(),
            ProposalReply::Membership(reply) => reply.is_closed(),
        }
    }
}

/// A read waiting for ReadIndex, or for the state machine to apply through its index.
struct PendingRead {
    query: Bytes,
    reply: Reply<Bytes>,
}

/// A leadership transfer waiting for the target to win.
struct PendingTransfer {
    to: NodeId,
    reply: Reply<()>,
    /// The tick count after which the transfer has failed.
    deadline_tick: u64,
}

/// The task that owns the core.
struct Driver<S> {
    raft: Raft,
    state_machine: S,
    transport: Transport,
    storage: StorageThread,
    /// A Ready (or a snapshot) is at the storage thread. At most one job is there at a
    /// time: compaction waits for the Ready pipeline, so snapshots and log writes reach
    /// the disk in the order the core produced them.
    storage_busy: bool,
    snapshot_count: u64,
    /// The index of the latest snapshot (ours or the leader's).
    snapshot_index: Index,
    /// The last index whose entry this driver applied (Commands, Noops and membership
    /// changes all count): `Raft::applied_index` runs one `advance` behind it.
    applied: Index,
    /// The membership as of `applied`, for the snapshots we take (the core's current
    /// membership includes appended, uncommitted changes).
    applied_membership: Membership,
    /// The role, term and leader as of the last Ready.
    soft: SoftState,
    /// Writes waiting to commit, by log index.
    proposals: BTreeMap<Index, PendingProposal>,
    /// Reads waiting for ReadIndex, by read id.
    reads: HashMap<u64, PendingRead>,
    /// Reads that passed ReadIndex, by (index, id), waiting for `applied` to reach index.
    ready_reads: BTreeMap<(Index, u64), PendingRead>,
    next_read_id: u64,
    transfer: Option<PendingTransfer>,
    /// Ticks since start (for the transfer deadline).
    ticks: u64,
    #[cfg(feature = "broken")]
    bugs: Vec<RuntimeBug>,
}

impl<S: StateMachine> Driver<S> {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Message>,
        mut requests: mpsc::Receiver<Request>,
        heartbeat: Duration,
        shutdown: Shutdown,
    ) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(heartbeat);
        // After a stall, tick once and carry on: a burst of catch-up ticks would fire an
        // election timeout that no real silence caused.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            if !self.storage_busy && self.raft.has_ready() {
                let ready = self.raft.ready();
                if let Err(e) = self.start_ready(ready) {
                    break Err(e);
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = shutdown.wait() => break Ok(()),
                done = self.storage.done.recv() => {
                    let step = match done {
                        Some(done) => self.storage_done(done),
                        None => Err(NodeError::StorageThread("it exited".into())),
                    };
                    if let Err(e) = step {
                        break Err(e);
                    }
                }
                _ = ticker.tick() => self.tick(),
                Some(message) = inbox.recv() => {
                    self.raft.step(message);
                    for _ in 1..MAX_EVENTS_PER_TURN {
                        match inbox.try_recv() {
                            Ok(message) => self.raft.step(message),
                            Err(_) => break,
                        }
                    }
                }
                request = requests.recv() => match request {
                    Some(request) => {
                        self.request(request);
                        for _ in 1..MAX_EVENTS_PER_TURN {
                            match requests.try_recv() {
                                Ok(request) => self.request(request),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every handle is gone: nobody can use or stop this node any more.
                    None => break Ok(()),
                },
            }
        };
        self.stop();
        result
    }

    fn tick(&mut self) {
        self.raft.tick();
        self.ticks += 1;
        // Forget requests whose client gave up (timed out, disconnected), so that a node
        // without a quorum does not hold them until it steps down.
        self.proposals.retain(|_, pending| !pending.reply.is_closed());
        self.reads.retain(|_, pending| !pending.reply.is_closed());
        self.ready_reads.retain(|_, pending| !pending.reply.is_closed());
        if let Some(transfer) = &self.transfer {
            if transfer.reply.is_closed() || self.ticks > transfer.deadline_tick {
                if let Some(transfer) = self.transfer.take() {
                    let _ = transfer.reply.send(Err(RequestError::TryAgain(format!(
                        "node {} did not take over within two election timeouts",
                        transfer.to
                    ))));
                }
            }
        }
    }

    fn request(&mut self, request: Request) {
        match request {
            Request::Propose { command, reply } => {
                if self.proposals.len() >= MAX_PENDING_PROPOSALS {
                    let _ = reply.send(Err(RequestError::TryAgain("too many writes in flight".into())));
                    return;
                }
                match self.raft.propose(command) {
                    Ok((term, index)) => self.track_proposal(term, index, ProposalReply::Command(reply)),
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::from_propose(e)));
                    }
                }
            }
            Request::Membership { change, reply } => {
                if self.proposals.len() >= MAX_PENDING_PROPOSALS {
                    let _ = reply.send(Err(RequestError::TryAgain("too many writes in flight".into())));
                    return;
                }
                match self.raft.propose_membership(change) {
                    Ok((term, index)) => self.track_proposal(term, index, ProposalReply::Membership(reply)),
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::from_propose(e)));
                    }
                }
            }
            Request::Read { query, reply } => {
                if self.reads.len() + self.ready_reads.len() >= MAX_PENDING_READS {
                    let _ = reply.send(Err(RequestError::TryAgain("too many reads in flight".into())));
                    return;
                }
                let id = self.next_read_id;
                self.next_read_id += 1;
                match self.raft.read_index(id) {
                    Ok(()) => {
                        self.reads.insert(id, PendingRead { query, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::from_propose(e)));
                    }
                }
            }
            Request::Transfer { to, reply } => {
                if self.raft.leader() == Some(to) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                if self.transfer.is_some() {
                    let _ = reply.send(Err(RequestError::TryAgain("another transfer is in progress".into())));
                    return;
                }
                match self.raft.transfer_leadership(to) {
                    Ok(()) => {
                        let deadline_tick = self.ticks + 2 * u64::from(self.raft.config().election_ticks);
                        self.transfer = Some(PendingTransfer { to, reply, deadline_tick });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::from_propose(e)));
                    }
                }
            }
            Request::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn track_proposal(&mut self, term: Term, index: Index, reply: ProposalReply) {
        let replaced = self.proposals.insert(index, PendingProposal { term, reply });
        // A leader never reuses an index of its own log, and every proposal is resolved when
        // leadership changes, so an older proposal at this index cannot be waiting. If one
        // were, its entry is gone from this log: it was never committed.
        debug_assert!(replaced.is_none(), "two proposals waiting at index {index}");
        if let Some(old) = replaced {
            old.reply.fail(RequestError::TryAgain("the entry was replaced by a new leader".into()));
        }
    }

    fn status(&self) -> Status {
        Status {
            id: self.raft.id(),
            role: self.raft.role(),
            term: self.raft.term(),
            leader: self.raft.leader(),
            commit: self.raft.commit_index(),
            applied: self.applied,
            first: self.raft.first_index(),
            last: self.raft.last_index(),
            snapshot: self.snapshot_index,
            membership: self.raft.membership().clone(),
        }
    }

    /// Steps 1 and 2 of the loop: send what may go now, then hand the rest to the storage
    /// thread (or finish at once when there is nothing to persist).
    fn start_ready(&mut self, mut ready: Ready) -> Result<(), NodeError> {
        for message in std::mem::take(&mut ready.messages_now) {
            self.send(message);
        }
        if ready.hard_state.is_none() && ready.entries.is_empty() && ready.snapshot.is_none() {
            return self.finish_ready(ready);
        }
        self.storage_busy = true;
        self.storage.submit(StorageJob::Persist(Box::new(ready)))
    }

    fn storage_done(&mut self, done: StorageDone) -> Result<(), NodeError> {
        assert!(self.storage_busy, "a storage completion nobody waited for");
        self.storage_busy = false;
        match done {
            StorageDone::Persisted(ready) => self.finish_ready(*ready),
            StorageDone::SnapshotSaved(snapshot) => {
                let index = snapshot.meta.index;
                match self.raft.compact(index, snapshot.data) {
                    Ok(()) => {
                        self.snapshot_index = index;
                        tracing::info!(index, "compacted the log through a snapshot");
                    }
                    // A leader's snapshot got here first: nothing to drop any more.
                    Err(e) => tracing::info!(index, error = %e, "compaction skipped"),
                }
                Ok(())
            }
            StorageDone::Failed(e) => Err(NodeError::Storage(e)),
        }
    }

    /// Steps 3 to 5: the Ready is durable.
    fn finish_ready(&mut self, ready: Ready) -> Result<(), NodeError> {
        let Ready { messages, snapshot, entries, committed, reads, failed_reads, soft_state, .. } = ready;
        for message in messages {
            self.send(message);
        }
        if let Some(snapshot) = snapshot {
            self.install_snapshot(&snapshot)?;
        }
        #[cfg(feature = "broken")]
        if self.bugs.contains(&RuntimeBug::ApplyBeforeCommit) {
            for entry in &entries {
                if entry.index == self.applied + 1 {
                    self.apply(entry);
                }
            }
        }
        drop(entries);
        for entry in &committed {
            #[cfg(feature = "broken")]
            if self.bugs.contains(&RuntimeBug::ApplyBeforeCommit) && entry.index <= self.applied {
                continue;
            }
            assert_eq!(entry.index, self.applied + 1, "committed entries arrive in order, without gaps");
            self.apply(entry);
        }
        for ReadState { id, index } in reads {
            if let Some(read) = self.reads.remove(&id) {
                self.ready_reads.insert((index, id), read);
            }
        }
        for id in failed_reads {
            if let Some(read) = self.reads.remove(&id) {
                let _ = read.reply.send(Err(RequestError::TryAgain("leadership was lost before the read".into())));
            }
        }
        self.answer_reads();
        if let Some(soft) = soft_state {
            self.soft_state_changed(soft);
        }
        self.raft.advance();
        self.maybe_compact()
    }

    /// Applies one entry (Commands to the state machine; every kind moves `applied`) and
    /// answers the proposal waiting at its index.
    fn apply(&mut self, entry: &Entry) {
        self.applied = entry.index;
        let response = match &entry.payload {
            EntryPayload::Command(command) => Some(self.state_machine.apply(entry.index, command)),
            EntryPayload::Noop => None,
            EntryPayload::Membership(change) => {
                apply_change(&mut self.applied_membership, change);
                None
            }
        };
        self.answer_proposal(entry.index, entry.term, response);
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        #[cfg(feature = "broken")]
        let applied_ahead = self.bugs.contains(&RuntimeBug::ApplyBeforeCommit);
        #[cfg(not(feature = "broken"))]
        let applied_ahead = false;
        assert!(applied_ahead || snapshot.meta.index > self.applied, "a snapshot behind what is applied");
        self.state_machine.restore(snapshot)?;
        self.applied = snapshot.meta.index;
        self.applied_membership = snapshot.meta.membership.clone();
        self.snapshot_index = snapshot.meta.index;
        // Writes waiting at indexes the snapshot covers: whether the entry there is ours,
        // the snapshot does not say.
        let covered: Vec<Index> = self.proposals.range(..=snapshot.meta.index).map(|(index, _)| *index).collect();
        for index in covered {
            if let Some(pending) = self.proposals.remove(&index) {
                pending.reply.fail(RequestError::Unknown("replaced by the leader's snapshot".into()));
            }
        }
        tracing::info!(index = snapshot.meta.index, term = snapshot.meta.term, "installed the leader's snapshot");
        Ok(())
    }

    fn answer_proposal(&mut self, index: Index, term: Term, response: Option<Bytes>) {
        let Some(pending) = self.proposals.remove(&index) else { return };
        if pending.term != term {
            pending.reply.fail(RequestError::TryAgain("another leader's entry was committed at its index".into()));
            return;
        }
        match pending.reply {
            ProposalReply::Command(reply) => {
                // A command entry always has a response; a Noop at a command's (index, term)
                // would be a core bug.
                let result = response
                    .ok_or_else(|| RequestError::Unknown("the committed entry at its index is not a command".into()));
                let _ = reply.send(result);
            }
            ProposalReply::Membership(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn answer_reads(&mut self) {
        while let Some(entry) = self.ready_reads.first_entry() {
            if entry.key().0 > self.applied {
                break;
            }
            let read = entry.remove();
            let _ = read.reply.send(Ok(self.state_machine.query(&read.query)));
        }
    }

    fn soft_state_changed(&mut self, soft: SoftState) {
        let was = self.soft;
        self.soft = soft;
        if was.leader != soft.leader || was.term != soft.term || was.role != soft.role {
            tracing::info!(role = role_name(soft.role), term = soft.term, leader = ?soft.leader, "soft state");
        }
        if soft.role != Role::Leader {
            // Entries proposed here may still commit under the next leader: unknown.
            for (_, pending) in std::mem::take(&mut self.proposals) {
                pending.reply.fail(RequestError::Unknown(format!(
                    "this node stopped leading (leader now: {})",
                    soft.leader.map_or("unknown".to_string(), |l| l.to_string())
                )));
            }
            // A read is never "maybe applied": it simply was not served.
            for read in self.take_reads() {
                let _ = read.reply.send(Err(RequestError::NotLeader { leader: soft.leader }));
            }
        } else {
            // Still (or again) the leader, but proposals of an earlier term were made under
            // a leadership that ended in between.
            let stale: Vec<Index> =
                self.proposals.iter().filter(|(_, p)| p.term != soft.term).map(|(index, _)| *index).collect();
            for index in stale {
                if let Some(pending) = self.proposals.remove(&index) {
                    pending.reply.fail(RequestError::Unknown("leadership changed after proposing".into()));
                }
            }
        }
        if let Some(transfer) = self.transfer.take() {
            if soft.leader == Some(transfer.to) {
                let _ = transfer.reply.send(Ok(()));
            } else {
                self.transfer = Some(transfer);
            }
        }
    }

    /// Every `snapshot_count` applied entries: snapshot the state machine, write it, and
    /// (when the write is durable, in `storage_done`) let the core drop the log.
    fn maybe_compact(&mut self) -> Result<(), NodeError> {
        if self.storage_busy || self.applied < self.snapshot_index + self.snapshot_count {
            return Ok(());
        }
        let Some(term) = self.raft.term_at(self.applied) else {
            // The core keeps every entry after its snapshot; an applied entry it cannot name
            // the term of means that it compacted past us. Try again after the next Ready.
            tracing::warn!(applied = self.applied, "no term for the applied index; compaction postponed");
            return Ok(());
        };
        let snapshot = Snapshot {
            meta: SnapshotMeta { index: self.applied, term, membership: self.applied_membership.clone() },
            data: self.state_machine.snapshot(),
        };
        self.storage_busy = true;
        self.storage.submit(StorageJob::SaveSnapshot(snapshot))
    }

    fn send(&self, message: Message) {
        debug_assert_ne!(message.to, self.raft.id(), "the core addressed a message to itself");
        if message.to != self.raft.id() {
            self.transport.send(message);
        }
    }

    /// Every waiting read, whatever it waits for.
    fn take_reads(&mut self) -> Vec<PendingRead> {
        let waiting = std::mem::take(&mut self.reads).into_values();
        waiting.chain(std::mem::take(&mut self.ready_reads).into_values()).collect()
    }

    /// Shutdown: every waiting client gets an answer, the transport closes.
    fn stop(&mut self) {
        for (_, pending) in std::mem::take(&mut self.proposals) {
            pending.reply.fail(RequestError::Unknown("the node is shutting down".into()));
        }
        for read in self.take_reads() {
            let _ = read.reply.send(Err(RequestError::TryAgain("the node is shutting down".into())));
        }
        if let Some(transfer) = self.transfer.take() {
            let _ = transfer.reply.send(Err(RequestError::TryAgain("the node is shutting down".into())));
        }
        self.transport.shutdown();
    }
}

/// What a committed membership change does to the membership (the core applies the same
/// rule when the entry is appended; the driver needs it as of the applied index).
fn apply_change(membership: &mut Membership, change: &MembershipChange) {
    match *change {
        MembershipChange::AddLearner(id) => {
            if !membership.voters.contains(&id) {
                membership.learners.insert(id);
            }
        }
        MembershipChange::PromoteLearner(id) | MembershipChange::AddVoter(id) => {
            membership.learners.remove(&id);
            membership.voters.insert(id);
        }
        MembershipChange::Remove(id) => {
            membership.voters.remove(&id);
            membership.learners.remove(&id);
        }
    }
}

/// A job for the storage thread.
enum StorageJob {
    /// Boxed: a Ready is large and the job is one pointer through the channel.
    Persist(Box<Ready>),
    SaveSnapshot(Snapshot),
}

/// The storage thread's answer to one job.
enum StorageDone {
    /// The Ready's hard state, entries and snapshot are durable; here it is back.
    Persisted(Box<Ready>),
    SnapshotSaved(Snapshot),
    Failed(StorageError),
}

/// The thread that owns [`Storage`]: every write and fsync happens here, so a slow disk
/// blocks neither the tokio workers nor the core.
struct StorageThread {
    /// A std channel: the thread blocks on it. Unbounded, but the driver keeps at most one
    /// job in it (`Driver::storage_busy`).
    jobs: std::sync::mpsc::Sender<StorageJob>,
    /// Completions back to the driver (one per job, so it never holds more than one).
    done: mpsc::UnboundedReceiver<StorageDone>,
}

impl StorageThread {
    /// Opens the storage on a new thread (recovery reads and checks the whole log: it is
    /// blocking work too) and returns what it recovered.
    async fn start(
        dir: PathBuf,
        options: StorageOptions,
    ) -> Result<(StorageThread, crate::storage::Recovered), NodeError> {
        let (jobs_tx, jobs) = std::sync::mpsc::channel::<StorageJob>();
        let (done_tx, done) = mpsc::unbounded_channel();
        let (opened_tx, opened) = oneshot::channel();
        std::thread::Builder::new()
            .name("miniraft-storage".into())
            .spawn(move || {
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    let _ = opened_tx.send(Err(NodeError::DataDir { dir: dir.clone(), source: e }));
                    return;
                }
                let mut storage = match Storage::open(&dir, options) {
                    Ok((storage, recovered)) => {
                        if opened_tx.send(Ok(recovered)).is_err() {
                            return;
                        }
                        storage
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(NodeError::Storage(e)));
                        return;
                    }
                };
                // Ends when the driver drops its sender (the node stopped).
                while let Ok(job) = jobs.recv() {
                    let done = match job {
                        StorageJob::Persist(ready) => match storage.persist(&ready) {
                            Ok(()) => StorageDone::Persisted(ready),
                            Err(e) => StorageDone::Failed(e),
                        },
                        StorageJob::SaveSnapshot(snapshot) => match storage.save_snapshot(&snapshot) {
                            Ok(()) => StorageDone::SnapshotSaved(snapshot),
                            Err(e) => StorageDone::Failed(e),
                        },
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| NodeError::StorageThread(format!("cannot spawn it: {e}")))?;
        let recovered = opened.await.map_err(|_| NodeError::StorageThread("it died while opening".into()))??;
        Ok((StorageThread { jobs: jobs_tx, done }, recovered))
    }

    fn submit(&self, job: StorageJob) -> Result<(), NodeError> {
        self.jobs.send(job).map_err(|_| NodeError::StorageThread("it exited".into()))
    }
}
