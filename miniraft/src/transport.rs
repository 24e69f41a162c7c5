//! The TCP transport between Raft nodes: framed messages (`codec.rs`) over one outgoing
//! connection per peer, and whatever connections peers open to us.
//!
//! ```text
//!  send(msg) ──try_send──> [queue: PEER_QUEUE_MESSAGES] ──> peer task ──frames──> TCP ──> peer
//!  peer ──TCP──> accept loop ──> connection task: decode_frame ──> inbox (mpsc) ──> node
//! ```
//!
//! Like etcd's rafthttp streams, each direction has its own connection: we write to the
//! connection we dialled and only read from connections peers dialled, so a reply never
//! waits behind our own traffic and there is no request/response pairing to get wrong.
//!
//! **Loss is fine, blocking is not.** Raft tolerates lost messages (leaders retransmit on
//! the next heartbeat, candidates campaign again), but a node whose event loop blocks on
//! a slow peer stops heartbeating the others. So [`Transport::send`] never waits: it puts
//! the message on the peer's bounded queue and drops it when the queue is full, when the
//! peer is unreachable (during the reconnect backoff), and when a write fails (with
//! everything queued behind it). Every drop is counted in [`TransportStats`].
//!
//! Outgoing: each peer's task dials lazily, when the first message for it arrives, with a
//! connect timeout; a failure starts an exponential backoff (doubling from
//! [`BACKOFF_MIN`] to [`BACKOFF_MAX`]) during which messages to that peer are dropped. A
//! write takes everything queued (up to [`MAX_BATCH_BYTES`]) into one buffer and writes it
//! with one `write_all`, which is `BufWriter`'s batching without its flush-per-message
//! trap. A connection is dropped on a write error, a write that takes longer than
//! [`WRITE_TIMEOUT`], or the peer closing it (we watch the read side, where a peer never
//! writes).
//!
//! Incoming: an accept loop, at most [`MAX_INCOMING_CONNECTIONS`] at once, and one task
//! per connection that decodes frames into the inbox. A bad frame (CRC, length, content)
//! closes that connection and is logged; it never panics and never affects the others.
//! A message whose `to` is not this node is dropped. The inbox is a bounded channel: when
//! the node falls behind, reading stops and TCP pushes back on the sender, whose queue
//! then fills and drops.
//!
//! Left out: TLS and peer authentication (any process that can reach the port can speak
//! for any node id; bind to loopback or a private network), snapshot streaming on a
//! separate connection (chunks travel with everything else), and message priorities.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::codec::{decode_frame, encode_message};
use crate::message::Message;
use crate::types::NodeId;

/// Messages queued per peer before `send` starts dropping. A leader sends a heartbeat
/// and a batch of entries per tick to each follower, so 1024 is seconds of traffic; a
/// queue that full means the peer is gone or far behind, and Raft will resend.
pub const PEER_QUEUE_MESSAGES: usize = 1024;

/// The most bytes one write gathers from the queue.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// How long a dial may take before it counts as a failure.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one write may block (a peer that stopped reading) before the connection is
/// dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first reconnect delay after a failed dial; it doubles per failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// The cap of the reconnect delay: a restarted peer is reached within this long of its
/// coming back (plus one message to trigger the dial).
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The most incoming connections served at once; a cluster needs one per peer, the rest
/// is slack for reconnects. More are closed at accept.
pub const MAX_INCOMING_CONNECTIONS: usize = 64;

/// How many bytes a connection task asks for per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Counters of what the transport did, for tests and metrics. All since `start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages written to a peer's socket.
    pub sent: u64,
    /// Messages decoded and delivered to the inbox.
    pub received: u64,
    /// Messages dropped by `send` because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because the peer could not be reached (in backoff, dial failed, or
    /// the write failed).
    pub dropped_unreachable: u64,
    /// Messages dropped by `send` because `to` is not a configured peer.
    pub dropped_unknown_peer: u64,
    /// Incoming messages dropped because their `to` is not this node.
    pub dropped_misaddressed: u64,
    /// Successful dials.
    pub connects: u64,
    /// Failed dials.
    pub connect_failures: u64,
    /// Incoming connections accepted.
    pub accepted: u64,
    /// Incoming connections closed because of a bad frame.
    pub bad_frames: u64,
}

/// The counters behind `TransportStats`, shared with every task; each field is the
/// `TransportStats` field of the same name. Relaxed atomics: they are statistics, read
/// without ordering against anything else.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unreachable: AtomicU64,
    dropped_unknown_peer: AtomicU64,
    dropped_misaddressed: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    accepted: AtomicU64,
    bad_frames: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A running transport. Dropping it shuts it down.
pub struct Transport {
    /// This node.
    id: NodeId,
    /// The address the listener is bound to.
    local_addr: Option<SocketAddr>,
    /// Each peer's outgoing queue, bounded at `PEER_QUEUE_MESSAGES`.
    queues: BTreeMap<NodeId, mpsc::Sender<Message>>,
    /// What every task counts, for `stats`.
    counters: Arc<Counters>,
    /// Set to true to stop every task.
    shutdown: watch::Sender<bool>,
    /// The accept loop and the peer tasks; connection tasks belong to the accept loop's
    /// `JoinSet` and end with it. A std Mutex: only `shutdown` takes it, and never across
    /// an await.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Transport {
    /// Accepts peer connections on `listener`, decodes frames into `inbox`, and dials
    /// `peers` lazily with reconnect and backoff. `peers` may include this node's own id,
    /// which is skipped. Must be called inside a tokio runtime (it spawns its tasks).
    pub fn start(
        id: NodeId,
        listener: TcpListener,
        peers: BTreeMap<NodeId, SocketAddr>,
        inbox: mpsc::Sender<Message>,
    ) -> Transport {
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let local_addr = listener.local_addr().ok();
        let mut tasks = Vec::with_capacity(peers.len() + 1);
        tasks.push(tokio::spawn(accept_loop(id, listener, inbox, shutdown_rx.clone(), Arc::clone(&counters))));
        let mut queues = BTreeMap::new();
        for (peer, addr) in peers {
            if peer == id {
                continue;
            }
            let (queue, queue_rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
            queues.insert(peer, queue);
            let peer_task = PeerTask {
                peer,
                addr,
                queue: queue_rx,
                shutdown: shutdown_rx.clone(),
                counters: Arc::clone(&counters),
            };
            tasks.push(tokio::spawn(peer_task.run()));
        }
        Transport { id, local_addr, queues, counters, shutdown, tasks: Mutex::new(tasks) }
    }

    /// Queues `message` for its `to`. Never blocks: drops the message (and counts it) when
    /// that peer's queue is full or `to` is not a peer.
    pub fn send(&self, message: Message) {
        let Some(queue) = self.queues.get(&message.to) else {
            bump(&self.counters.dropped_unknown_peer, 1);
            tracing::debug!(from = self.id, to = message.to, "dropping a message to a node that is not a peer");
            return;
        };
        match queue.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                bump(&self.counters.dropped_queue_full, 1);
                tracing::debug!(to = message.to, "peer queue full; dropping a message (Raft will resend)");
            }
            // The peer task has stopped: only after shutdown.
            Err(mpsc::error::TrySendError::Closed(_)) => bump(&self.counters.dropped_unreachable, 1),
        }
    }

    /// Stops every task: the listener closes, connections close, queued messages are
    /// dropped. Idempotent.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        for task in tasks {
            task.abort();
        }
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The counters so far.
    pub fn stats(&self) -> TransportStats {
        let c = &*self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportStats {
            sent: get(&c.sent),
            received: get(&c.received),
            dropped_queue_full: get(&c.dropped_queue_full),
            dropped_unreachable: get(&c.dropped_unreachable),
            dropped_unknown_peer: get(&c.dropped_unknown_peer),
            dropped_misaddressed: get(&c.dropped_misaddressed),
            connects: get(&c.connects),
            connect_failures: get(&c.connect_failures),
            accepted: get(&c.accepted),
            bad_frames: get(&c.bad_frames),
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .field("peers", &self.queues.keys().collect::<Vec<_>>())
            .finish()
    }
}

// ---- outgoing ------------------------------------------------------------------------

/// One peer's sender: owns its queue and its connection.
struct PeerTask {
    /// The peer's id, for logs.
    peer: NodeId,
    /// Where to dial it.
    addr: SocketAddr,
    /// The other end of `Transport::queues[peer]`.
    queue: mpsc::Receiver<Message>,
    /// Changes (to true) when the transport shuts down.
    shutdown: watch::Receiver<bool>,
    /// Shared with the transport, for `stats`.
    counters: Arc<Counters>,
}

/// A dialled connection: we write to one half and watch the other for the peer closing.
struct Outgoing {
    /// Read only to notice the peer closing (it never writes here).
    reader: OwnedReadHalf,
    /// Where our frames go.
    writer: OwnedWriteHalf,
}

impl PeerTask {
    async fn run(mut self) {
        let mut connection: Option<Outgoing> = None;
        let mut backoff = BACKOFF_MIN;
        let mut retry_at: Option<Instant> = None;
        let mut batch = Vec::new();
        loop {
            let first = tokio::select! {
                _ = self.shutdown.changed() => return,
                message = self.queue.recv() => match message {
                    Some(message) => message,
                    None => return,
                },
                () = closed(&mut connection) => {
                    tracing::debug!(peer = self.peer, addr = %self.addr, "peer closed our connection");
                    connection = None;
                    continue;
                }
            };
            if connection.is_none() {
                if retry_at.is_some_and(|at| Instant::now() < at) {
                    self.drop_queued(1);
                    continue;
                }
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr)).await {
                    Ok(Ok(stream)) => {
                        // Raft messages are small and latency-bound: no Nagle delay.
                        let _ = stream.set_nodelay(true);
                        let (reader, writer) = stream.into_split();
                        connection = Some(Outgoing { reader, writer });
                        bump(&self.counters.connects, 1);
                        tracing::debug!(peer = self.peer, addr = %self.addr, "connected to peer");
                        backoff = BACKOFF_MIN;
                        retry_at = None;
                    }
                    failure => {
                        bump(&self.counters.connect_failures, 1);
                        let error = match failure {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_string(),
                        };
                        tracing::debug!(peer = self.peer, addr = %self.addr, %error, ?backoff, "cannot reach peer");
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        self.drop_queued(1);
                        continue;
                    }
                }
            }
            let Some(outgoing) = connection.as_mut() else { continue };

            batch.clear();
            encode_message(&first, &mut batch);
            let mut count = 1u64;
            while batch.len() < MAX_BATCH_BYTES {
                match self.queue.try_recv() {
                    Ok(message) => {
                        encode_message(&message, &mut batch);
                        count += 1;
                    }
                    Err(_) => break,
                }
            }
            match tokio::time::timeout(WRITE_TIMEOUT, outgoing.writer.write_all(&batch)).await {
                Ok(Ok(())) => bump(&self.counters.sent, count),
                failure => {
                    let error = match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("a write blocked for {WRITE_TIMEOUT:?}"),
                    };
                    tracing::debug!(peer = self.peer, addr = %self.addr, %error, "dropping the connection to a peer");
                    connection = None;
                    self.drop_queued(count);
                }
            }
        }
    }

    /// Drops `already` messages taken from the queue and everything still in it.
    fn drop_queued(&mut self, already: u64) {
        let mut dropped = already;
        while self.queue.try_recv().is_ok() {
            dropped += 1;
        }
        bump(&self.counters.dropped_unreachable, dropped);
    }
}

/// Resolves when the peer closes `connection` (or sends anything, which a peer never
/// does on a connection we dialled); never resolves without a connection.
async fn closed(connection: &mut Option<Outgoing>) {
    match connection {
        Some(outgoing) => {
            let mut probe = [0u8; 1];
            let _ = outgoing.reader.read(&mut probe).await;
        }
        None => std::future::pending().await,
    }
}

// ---- incoming ------------------------------------------------------------------------

async fn accept_loop(
    id: NodeId,
    listener: TcpListener,
    inbox: mpsc::Sender<Message>,
    mut shutdown: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    // Dropping the JoinSet (when this task ends or is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    let limit = Arc::new(Semaphore::new(MAX_INCOMING_CONNECTIONS));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                        tracing::warn!(%addr, limit = MAX_INCOMING_CONNECTIONS, "too many peer connections; closing a new one");
                        continue;
                    };
                    bump(&counters.accepted, 1);
                    let _ = stream.set_nodelay(true);
                    let connection = read_connection(id, stream, addr, inbox.clone(), shutdown.clone(), Arc::clone(&counters));
                    connections.spawn(async move {
                        connection.await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // Out of file descriptors, usually: wait instead of spinning.
                    tracing::warn!(%error, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Decodes frames from one peer connection into the inbox until it closes, sends a bad
/// frame, or the transport shuts down.
async fn read_connection(
    id: NodeId,
    mut stream: TcpStream,
    addr: SocketAddr,
    inbox: mpsc::Sender<Message>,
    mut shutdown: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        let mut consumed = 0;
        loop {
            match decode_frame(&buf[consumed..]) {
                Ok(Some((message, used))) => {
                    consumed += used;
                    if message.to != id {
                        bump(&counters.dropped_misaddressed, 1);
                        tracing::debug!(%addr, to = message.to, "dropping a message addressed to another node");
                        continue;
                    }
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        sent = inbox.send(message) => {
                            if sent.is_err() {
                                return; // the node is gone
                            }
                            bump(&counters.received, 1);
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    bump(&counters.bad_frames, 1);
                    tracing::warn!(%addr, %error, "closing a peer connection that sent a bad frame");
                    return;
                }
            }
        }
        buf.drain(..consumed);
        buf.reserve(READ_CHUNK_BYTES);
        let read = tokio::select! {
            _ = shutdown.changed() => return,
            read = stream.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                if !buf.is_empty() {
                    tracing::debug!(%addr, bytes = buf.len(), "peer connection closed inside a frame");
                }
                return;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%addr, %error, "peer connection failed");
                return;
            }
        }
    }
}
