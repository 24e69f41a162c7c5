//! A TCP proxy for one direction of one link between two nodes, so a test can cut it.
//!
//! Node i reaches node j only through the proxy (i -> j): i's `--initial-cluster` names the
//! proxy's address for j. The transport sends i's messages to j over connections that i
//! dials, and j's answers over connections that j dials, so cutting the proxy (i -> j)
//! alone is a one-way partition: j still talks to i.
//!
//! - [`Proxy::cut`] drops every open connection and black-holes new ones: they are
//!   accepted and their bytes read and thrown away, so the dialer sees a silent peer (as
//!   behind a dropped route), not a quick "connection refused".
//! - [`Proxy::heal`] closes the black-holed connections (the dialer reconnects) and
//!   forwards new connections again.
//! - [`Proxy::set_target`] points the proxy at the node's new address after a restart.
//!
//! Left out: delay, reordering and partial loss (the simulator does those); here the link
//! either works or it does not.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;

/// One running proxy; it stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    /// Where connections go; None until the target node has started.
    target: Mutex<Option<SocketAddr>>,
    /// Whether the link is cut.
    cut: AtomicBool,
    /// Bumped by every cut and heal: each connection watches it and ends when it moves.
    epoch: watch::Sender<u64>,
}

impl Proxy {
    /// Binds 127.0.0.1 on a free port (no race: the proxy holds the port from now on).
    pub fn start(runtime: &Handle) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy port on 127.0.0.1");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let (epoch, _) = watch::channel(0);
        let shared = Arc::new(Shared { target: Mutex::new(None), cut: AtomicBool::new(false), epoch });
        let accept = {
            let shared = shared.clone();
            let _guard = runtime.enter();
            let listener = TcpListener::from_std(listener).expect("register the proxy listener");
            runtime.spawn(accept_loop(listener, shared))
        };
        Proxy { addr, shared, accept }
    }

    /// The address to give the dialing node.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to (the target node's peer listener).
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = Some(target);
    }

    /// Drops open connections and black-holes new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Forwards again; black-holed connections are closed so that the dialer reconnects.
    pub fn heal(&self) {
        if self.shared.cut.swap(false, Ordering::SeqCst) {
            self.shared.epoch.send_modify(|epoch| *epoch += 1);
        }
    }

    /// Whether the link is cut now.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Ends every connection task too.
        self.shared.epoch.send_modify(|epoch| *epoch += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        let mut epoch = shared.epoch.subscribe();
        epoch.mark_unchanged();
        let shared = shared.clone();
        tokio::spawn(async move {
            if shared.cut.load(Ordering::SeqCst) {
                black_hole(inbound, epoch).await;
                return;
            }
            let target = *shared.target.lock().unwrap();
            let Some(target) = target else { return };
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            forward(inbound, outbound, epoch).await;
        });
    }
}

/// Reads and discards until the epoch moves (heal), then closes.
async fn black_hole(mut inbound: TcpStream, mut epoch: watch::Receiver<u64>) {
    let mut sink = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = epoch.changed() => return,
            read = inbound.read(&mut sink) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// Copies both ways until either side closes or the epoch moves (cut).
async fn forward(mut inbound: TcpStream, mut outbound: TcpStream, mut epoch: watch::Receiver<u64>) {
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = epoch.changed() => {}
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
    }
}
