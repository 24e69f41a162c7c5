//! The `miniraft` server binary: a replicated key-value map (RESP2 on the client port),
//! with flags named after etcd's.
//!
//! ```text
//! miniraft --name 1 --data-dir /var/lib/miniraft/1 \
//!   --listen-client-urls 127.0.0.1:7001 --listen-peer-urls 127.0.0.1:7101 \
//!   --initial-cluster 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103
//! ```
//!
//! Once both listeners are bound it prints `miniraft ready: node=<id> client=<addr>
//! peer=<addr>` on stdout (so a port of 0 can be used and read back); logs go to stderr
//! (`RUST_LOG` filters them). SIGTERM or Ctrl-C stops it: clients get the answers they are
//! owed (writes in flight get `-UNKNOWN`), then the process exits 0. A storage error stops
//! it with exit status 1: a node that cannot write its log must not go on voting.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use minicore::lifecycle::Shutdown;
use miniraft::kv::KvStateMachine;
use miniraft::node::{Node, NodeOptions};
use miniraft::{NodeId, ReadMode};

/// A Raft-replicated key-value map that speaks RESP2 (GET, SET, DEL, CAS, RAFT.STATUS...).
#[derive(Parser, Debug)]
#[command(name = "miniraft", version)]
struct Flags {
    /// This member's id (a positive integer; a key of --initial-cluster).
    #[arg(long)]
    name: NodeId,
    /// Where the log, the hard state and the snapshots live [default: <name>.miniraft].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The address clients connect to (RESP2); `http://` is accepted and ignored.
    #[arg(long, default_value = "127.0.0.1:2379")]
    listen_client_urls: String,
    /// The address peers connect to; `http://` is accepted and ignored.
    #[arg(long, default_value = "127.0.0.1:2380")]
    listen_peer_urls: String,
    /// Every member as id=address, comma separated: the address this node dials for each
    /// peer (its own entry is not dialed), and the founding voters.
    #[arg(long)]
    initial_cluster: String,
    /// `new` founds the cluster with the --initial-cluster members as voters; `existing`
    /// joins a running one (add it with RAFT.ADDLEARNER on the leader first).
    #[arg(long, value_enum, default_value_t = ClusterState::New)]
    initial_cluster_state: ClusterState,
    /// Milliseconds between heartbeats (one tick of the Raft clock).
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// The minimum election timeout in milliseconds (a multiple of the heartbeat interval).
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Take a snapshot and compact the log every this many applied entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_count: u64,
    /// Do not fsync: acknowledged writes can be lost if a quorum loses power. Benchmarks only.
    #[arg(long)]
    unsafe_no_fsync: bool,
    /// How GET is served: read-index (a heartbeat round per batch of reads; safe whatever
    /// the clocks do) or lease (no round trip; assumes bounded clock drift).
    #[arg(long, value_enum, default_value_t = ReadModeFlag::ReadIndex)]
    read_mode: ReadModeFlag,
    /// Milliseconds a client request may wait before it is answered -UNKNOWN (writes) or
    /// -TRYAGAIN (reads).
    #[arg(long, default_value_t = 5000)]
    request_timeout: u64,
    /// Test builds only (`--features broken`): a deliberately broken driver behaviour,
    /// `apply-before-commit`.
    #[cfg(feature = "broken")]
    #[arg(long, hide = true)]
    inject_bug: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReadModeFlag {
    ReadIndex,
    Lease,
}

/// `127.0.0.1:7001` or `http://localhost:7001` to one socket address.
fn parse_addr(flag: &str, text: &str) -> Result<SocketAddr, String> {
    let bare = text.trim();
    let bare = bare.strip_prefix("http://").unwrap_or(bare).trim_end_matches('/');
    if bare.contains(',') {
        return Err(format!("{flag}: give one address (got '{text}'); miniraft listens on one address per port"));
    }
    bare.to_socket_addrs()
        .map_err(|e| format!("{flag}: '{text}' is not host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{flag}: '{text}' resolves to no address"))
}

/// `1=127.0.0.1:7101,2=127.0.0.1:7102` to a map.
fn parse_cluster(text: &str) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
    let mut cluster = BTreeMap::new();
    for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let Some((id, addr)) = member.split_once('=') else {
            return Err(format!("--initial-cluster: '{member}' is not id=host:port"));
        };
        let id: NodeId = match id.trim().parse() {
            Ok(id) if id != 0 => id,
            _ => return Err(format!("--initial-cluster: '{id}' is not a positive integer id")),
        };
        let addr = parse_addr("--initial-cluster", addr)?;
        if cluster.insert(id, addr).is_some() {
            return Err(format!("--initial-cluster: member {id} is listed twice"));
        }
    }
    if cluster.is_empty() {
        return Err("--initial-cluster: list at least this node, as id=host:port".into());
    }
    Ok(cluster)
}

fn options(flags: &Flags) -> Result<(NodeOptions, SocketAddr), String> {
    if flags.name == 0 {
        return Err("--name: 0 is reserved; use a positive integer".into());
    }
    let client = parse_addr("--listen-client-urls", &flags.listen_client_urls)?;
    let peer = parse_addr("--listen-peer-urls", &flags.listen_peer_urls)?;
    let cluster = parse_cluster(&flags.initial_cluster)?;
    if !cluster.contains_key(&flags.name) {
        return Err(format!("--initial-cluster does not list this node (--name {})", flags.name));
    }
    let data_dir = flags.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.miniraft", flags.name)));
    let mut options = NodeOptions::new(flags.name, data_dir, peer, cluster);
    options.join_existing = flags.initial_cluster_state == ClusterState::Existing;
    options.heartbeat_interval = Duration::from_millis(flags.heartbeat_interval);
    options.election_timeout = Duration::from_millis(flags.election_timeout);
    options.snapshot_count = flags.snapshot_count;
    options.fsync = !flags.unsafe_no_fsync;
    options.read_mode = match flags.read_mode {
        ReadModeFlag::ReadIndex => ReadMode::ReadIndex,
        ReadModeFlag::Lease => ReadMode::Lease,
    };
    options.request_timeout = Duration::from_millis(flags.request_timeout.max(1));
    #[cfg(feature = "broken")]
    for bug in &flags.inject_bug {
        options.bugs.push(match bug.as_str() {
            "apply-before-commit" => miniraft::node::RuntimeBug::ApplyBeforeCommit,
            other => return Err(format!("--inject-bug: unknown bug '{other}' (known: apply-before-commit)")),
        });
    }
    // Fail here, with the flags' names, rather than inside the node.
    options.raft_config().map_err(|e| format!("--heartbeat-interval/--election-timeout: {e}"))?;
    Ok((options, client))
}

async fn run(options: NodeOptions, client: SocketAddr) -> Result<(), String> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals().map_err(|e| format!("cannot install the signal handlers: {e}"))?;
    let listener = tokio::net::TcpListener::bind(client).await.map_err(|e| {
        format!("cannot listen for clients on {client}: {e}; pick a free port with --listen-client-urls")
    })?;
    let client_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let id = options.id;
    let node = Node::start(options, KvStateMachine::new()).await.map_err(|e| e.to_string())?;
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "miniraft ready: node={id} client={client_addr} peer={}", node.peer_addr());
        let _ = stdout.flush();
    }
    tracing::info!(node = id, client = %client_addr, peer = %node.peer_addr(), "ready");
    let server = tokio::spawn(miniraft::server::serve(listener, node.clone(), shutdown.clone()));
    let failed = tokio::select! {
        _ = shutdown.wait() => None,
        stopped = node.stopped() => Some(stopped),
    };
    shutdown.trigger();
    let _ = server.await;
    match failed {
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(())) => Ok(()),
        None => {
            node.shutdown();
            node.stopped().await.map_err(|e| e.to_string())
        }
    }
}

fn main() {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "miniraft=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (options, client) = match options(&flags) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("miniraft: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("miniraft: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(options, client)) {
        eprintln!("miniraft: {e}");
        std::process::exit(1);
    }
}
