//! The registry of connected clients: CLIENT LIST/INFO/KILL and shutdown.
//!
//! Each connection registers a [`ClientInfo`] that other connections can read (CLIENT
//! LIST) and act on (CLIENT KILL). Fields a connection updates on every command
//! (`last_cmd`, `last_interaction`) are atomics, so the hot path takes no lock; the
//! registry's own lock is taken only on connect, disconnect, and by CLIENT
//! LIST/KILL. It also carries what other connections need to reach a client without
//! a registry lookup: its outbox (pub/sub messages, invalidations) and its
//! `CLIENT TRACKING` mode.
//!
//! Killing a client does not reach into its task. It half-closes the client's socket
//! (`shutdown(fd, SHUT_RDWR)`); the connection then sees end-of-file on its next read
//! and cleans up like any client that left. The same mechanism drains all clients on
//! server shutdown, at no cost to the per-command path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::outbox::Outbox;
use crate::tracking::ClientTracking;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What other connections may know about a client.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub created_ms: u64,
    pub name: Mutex<Option<Vec<u8>>>,
    pub lib_name: Mutex<Option<Vec<u8>>>,
    pub lib_ver: Mutex<Option<Vec<u8>>>,
    pub db: AtomicUsize,
    pub resp: AtomicUsize,
    /// Index into the command table of the last command, for CLIENT LIST `cmd=`.
    pub last_cmd: AtomicUsize,
    pub last_interaction_ms: AtomicU64,
    pub subscriptions: AtomicUsize,
    pub pattern_subscriptions: AtomicUsize,
    pub in_multi: AtomicBool,
    pub blocked: AtomicBool,
    /// The socket, for CLIENT KILL. `None` once the connection has closed it, so a
    /// reused descriptor number is never shut down by mistake.
    fd: Mutex<Option<RawFd>>,
    pub killed: AtomicBool,
    /// Set when the connection has ended. Other clients keep `Arc`s to this one (a
    /// subscription, a tracking redirect), so "the `Arc` is alive" does not mean "the
    /// client is": this does.
    gone: AtomicBool,
    /// Where other connections queue pub/sub messages and invalidations for this one.
    pub outbox: Outbox,
    /// This client's `CLIENT TRACKING` mode, as the connections that invalidate keys
    /// for it read it.
    pub tracking: ClientTracking,
}

impl ClientInfo {
    pub fn touch(&self, cmd_index: usize, now_ms: u64) {
        self.last_cmd.store(cmd_index, Ordering::Relaxed);
        self.last_interaction_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Half-closes the socket so the connection ends at its next read.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        if let Some(fd) = *self.fd.lock() {
            // SAFETY: the descriptor is still owned by the live connection; we hold the
            // lock the connection takes before closing it, so it cannot be reused here.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
    }

    /// Server shutdown: stops reading from the client (`shutdown(fd, SHUT_RD)`). The
    /// connection still answers every command it has received, then sees end-of-file.
    /// Unlike [`ClientInfo::kill`], replies in flight are not lost.
    pub fn stop_reading(&self) {
        if let Some(fd) = *self.fd.lock() {
            // SAFETY: as in `kill`.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RD);
            }
        }
    }

    /// The client's socket descriptor while it is open (CLIENT LIST `fd=`).
    pub fn fd(&self) -> Option<RawFd> {
        *self.fd.lock()
    }

    /// Called by the connection right before it closes its socket.
    pub fn forget_fd(&self) {
        *self.fd.lock() = None;
    }

    pub fn name(&self) -> Vec<u8> {
        self.name.lock().clone().unwrap_or_default()
    }

    /// The protocol the client speaks now (2 or 3).
    pub fn resp(&self) -> usize {
        self.resp.load(Ordering::Relaxed)
    }

    /// Whether the client has at least one channel or pattern subscription (Redis's
    /// `CLIENT_PUBSUB` flag).
    pub fn is_subscribed(&self) -> bool {
        self.subscriptions.load(Ordering::Relaxed) + self.pattern_subscriptions.load(Ordering::Relaxed) > 0
    }

    /// Whether the connection has ended.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Called once by the connection as it ends, before it leaves the registry: from
    /// then on its outbox refuses pushes.
    pub fn mark_gone(&self) {
        self.gone.store(true, Ordering::Release);
        self.outbox.close();
    }

    fn new(id: u64, peer: SocketAddr, local: SocketAddr, created_ms: u64, fd: Option<RawFd>) -> ClientInfo {
        ClientInfo {
            id,
            peer,
            local,
            created_ms,
            name: Mutex::new(None),
            lib_name: Mutex::new(None),
            lib_ver: Mutex::new(None),
            db: AtomicUsize::new(0),
            resp: AtomicUsize::new(2),
            last_cmd: AtomicUsize::new(usize::MAX),
            last_interaction_ms: AtomicU64::new(created_ms),
            subscriptions: AtomicUsize::new(0),
            pattern_subscriptions: AtomicUsize::new(0),
            in_multi: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            fd: Mutex::new(fd),
            killed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            outbox: Outbox::default(),
            tracking: ClientTracking::default(),
        }
    }
}

/// All connected clients, by id.
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    by_id: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
}

impl Clients {
    pub fn new() -> Self {
        Clients { next_id: AtomicU64::new(1), ..Default::default() }
    }

    pub fn register(&self, peer: SocketAddr, local: SocketAddr, fd: RawFd) -> Arc<ClientInfo> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ClientInfo::new(id, peer, local, unix_ms(), Some(fd)));
        self.by_id.lock().insert(id, info.clone());
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        info
    }

    /// A client that is not connected and not listed: the AOF loader.
    pub fn detached(&self, name: &str) -> Arc<ClientInfo> {
        let addr: SocketAddr = ([0, 0, 0, 0], 0).into();
        let info = ClientInfo::new(0, addr, addr, unix_ms(), None);
        info.last_interaction_ms.store(0, Ordering::Relaxed);
        *info.name.lock() = Some(name.as_bytes().to_vec());
        Arc::new(info)
    }

    pub fn unregister(&self, id: u64) {
        self.by_id.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.by_id.lock().get(&id).cloned()
    }

    /// A snapshot of all clients, in id order.
    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        self.by_id.lock().values().cloned().collect()
    }

    /// Asks every client to finish (server shutdown): see [`ClientInfo::stop_reading`].
    pub fn stop_all(&self) {
        for c in self.all() {
            c.stop_reading();
        }
    }

    /// Number of clients blocked on keys (INFO `blocked_clients`).
    pub fn blocked(&self) -> usize {
        self.by_id.lock().values().filter(|c| c.blocked.load(Ordering::Relaxed)).count()
    }

    /// Number of clients with at least one subscription (INFO `pubsub_clients`).
    pub fn pubsub_clients(&self) -> usize {
        self.by_id.lock().values().filter(|c| c.is_subscribed()).count()
    }
}
