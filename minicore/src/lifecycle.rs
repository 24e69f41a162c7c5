//! Server lifecycle: the accept loop, the connection limit and graceful shutdown.
//!
//! Every mini server runs the same loop:
//!
//! ```text
//!   accept ──> under the limit? ──yes──> spawn Service::connection(stream, slot)
//!                   │no
//!                   └──> spawn Service::rejected(stream)   (e.g. "-ERR max number of clients reached")
//!
//!   SIGINT/SIGTERM or Shutdown::trigger()
//!     1. stop accepting
//!     2. Service::shutting_down(): the service asks its connections to finish
//!        (minikv half-closes their read side, so each one answers what it has
//!        already read, flushes, and exits)
//!     3. wait until every Slot is dropped, or until the drain timeout
//! ```
//!
//! A [`Slot`] is held by each live connection; dropping it frees a place under the
//! limit and lets shutdown make progress. The limit is an atomic so it can change at
//! run time (CONFIG SET maxclients).
//!
//! Left out: TLS, Unix sockets, and per-IP limits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// A shutdown signal that many tasks can wait on.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Shutdown { tx: Arc::new(tx) }
    }

    /// Starts shutdown. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|triggered| *triggered).await;
    }

    /// Triggers shutdown on the first SIGINT or SIGTERM. Must be called inside a
    /// tokio runtime.
    pub fn trigger_on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
                _ = int.recv() => tracing::info!("received SIGINT, shutting down"),
            }
            this.trigger();
        });
        Ok(())
    }
}

/// Counts live connections against a limit that can change at run time.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: AtomicUsize,
    live: AtomicUsize,
    /// Connections admitted since start. Counted here, at accept, because a server that
    /// counted them in the connection's own task would miss connections accepted but not
    /// yet run (beanstalkd's `total-connections`, minikv's `total_connections_received`).
    admitted: AtomicU64,
    drained: Notify,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            max: AtomicUsize::new(max),
            live: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            drained: Notify::new(),
        })
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Connections admitted under the limit since start.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Acquire)
    }

    /// Takes a place if one is free.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let max = self.max();
        let mut live = self.live.load(Ordering::Acquire);
        loop {
            if live >= max {
                return None;
            }
            match self.live.compare_exchange_weak(live, live + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.admitted.fetch_add(1, Ordering::AcqRel);
                    return Some(Slot { limit: self.clone() });
                }
                Err(now) => live = now,
            }
        }
    }

    async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One connection's place under the limit; released on drop.
#[derive(Debug)]
pub struct Slot {
    limit: Arc<ConnectionLimit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let before = self.limit.live.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "slot count underflow");
        if before == 1 {
            self.limit.drained.notify_waiters();
        }
    }
}

/// What a server does with its connections.
pub trait Service: Send + Sync + 'static {
    /// Serves one accepted connection until it ends. `slot` must live as long as the
    /// connection does.
    fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, slot: Slot) -> impl Future<Output = ()> + Send;

    /// Answers a connection refused because the limit is reached, then drops it.
    fn rejected(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) -> impl Future<Output = ()> + Send;

    /// Called once when shutdown starts, before draining: ask connections to finish.
    fn shutting_down(&self) {}
}

/// Options of [`serve`].
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// How long shutdown waits for connections to finish before giving up on them.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { drain_timeout: Duration::from_secs(10) }
    }
}

/// Runs the accept loop until `shutdown` triggers, then drains. Returns the number of
/// connections still open when the drain timeout expired (0 on a clean drain).
pub async fn serve<S: Service>(
    listeners: Vec<TcpListener>,
    service: Arc<S>,
    limit: Arc<ConnectionLimit>,
    shutdown: Shutdown,
    options: ServeOptions,
) -> usize {
    let mut accept_tasks = Vec::new();
    for listener in listeners {
        let service = service.clone();
        let limit = limit.clone();
        let shutdown = shutdown.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    biased;
                    _ = shutdown.wait() => break,
                    accepted = listener.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match limit.try_acquire() {
                    Some(slot) => {
                        tokio::spawn(service.clone().connection(stream, peer, slot));
                    }
                    None => {
                        tokio::spawn(service.clone().rejected(stream, peer));
                    }
                }
            }
        }));
    }
    shutdown.wait().await;
    for task in accept_tasks {
        let _ = task.await;
    }
    service.shutting_down();
    match tokio::time::timeout(options.drain_timeout, limit.wait_drained()).await {
        Ok(()) => 0,
        Err(_) => {
            let left = limit.live();
            tracing::warn!(connections = left, "drain timeout: closing remaining connections");
            left
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Echo;

    impl Service for Echo {
        async fn connection(self: Arc<Self>, mut stream: TcpStream, _peer: SocketAddr, _slot: Slot) {
            let mut buf = [0u8; 64];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }

        async fn rejected(self: Arc<Self>, mut stream: TcpStream, _peer: SocketAddr) {
            let _ = stream.write_all(b"full\n").await;
        }
    }

    #[tokio::test]
    async fn limits_connections_and_drains_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = ConnectionLimit::new(1);
        let shutdown = Shutdown::new();
        let server = tokio::spawn(serve(
            vec![listener],
            Arc::new(Echo),
            limit.clone(),
            shutdown.clone(),
            ServeOptions::default(),
        ));

        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        first.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");

        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut refused = String::new();
        second.read_to_string(&mut refused).await.unwrap();
        assert_eq!(refused, "full\n");

        shutdown.trigger();
        // The echo connection is still open, so the server waits for it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!server.is_finished());
        drop(first);
        assert_eq!(server.await.unwrap(), 0);
        assert_eq!(limit.live(), 0);
    }
}
