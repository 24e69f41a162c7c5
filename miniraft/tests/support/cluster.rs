//! Runs a cluster of real `miniraft` processes on loopback, with a [`Proxy`] on every
//! directed link, so tests can `kill -9` nodes, restart them, and cut links.
//!
//! - Every node listens on port 0 the first time and reports its addresses on its ready
//!   line; a restart asks for the same ports again (falling back to fresh ones if another
//!   process took them), and the proxies are re-pointed at the new peer address.
//! - Node i's `--initial-cluster` names, for every j, the proxy (i -> j).
//! - Children are killed by pid, never by name, and on drop (a failing test leaves
//!   nothing behind); `PR_SET_PDEATHSIG` takes them along if the test process itself dies.
//!   So a [`Cluster`] must be created and used on one thread that outlives it (the test's).
//! - Each node's stderr goes to `<dir>/node-<id>.log`, appended across restarts;
//!   [`Cluster::logs`] returns their tails for a failure message.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::proxy::Proxy;

/// A node id, as on the command line.
pub type NodeId = u64;

/// How long a node may take to print its ready line (storage recovery included; a debug
/// build on a loaded 2-core machine is slow).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How a cluster's nodes are configured.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub request_timeout_ms: u64,
    /// More flags for every node (e.g. `--snapshot-count 50`).
    pub extra_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        // Faster than etcd's 100/1000 so that elections after a kill take well under a
        // second; still ample on loopback.
        ClusterOptions {
            nodes: 3,
            heartbeat_ms: 50,
            election_ms: 500,
            request_timeout_ms: 2000,
            extra_args: Vec::new(),
        }
    }
}

/// One node's process and addresses.
pub struct NodeProcess {
    pub id: NodeId,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// The client (RESP) address of the running process, or of the last one.
    pub client: Option<SocketAddr>,
    /// The peer address of the running process, or of the last one.
    pub peer: Option<SocketAddr>,
}

impl NodeProcess {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL by pid, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped yet (so the
            // pid cannot have been reused).
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// SIGTERM by pid, then wait (SIGKILL after `grace`). Returns the exit code if it exited.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: as in `kill9`.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `bytes` of this node's log.
    pub fn log_tail(&self, bytes: u64) -> String {
        let Ok(mut file) = File::open(&self.log_path) else { return String::new() };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        text
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running cluster: the nodes (index i is node i + 1) and the proxies.
pub struct Cluster {
    pub options: ClusterOptions,
    pub nodes: Vec<NodeProcess>,
    /// (from, to) -> the proxy `from` dials to reach `to`.
    pub proxies: BTreeMap<(NodeId, NodeId), Proxy>,
    /// Every node's current client address (None while it is down), shared with client
    /// tasks so they follow restarts.
    pub clients: Arc<Mutex<BTreeMap<NodeId, Option<SocketAddr>>>>,
    /// Runs the proxies (and the tests' async clients).
    pub runtime: tokio::runtime::Runtime,
    /// The data directories; removed on drop (after the processes are gone).
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `options.nodes` nodes and waits until each printed its ready line (not until a
    /// leader is elected: see [`Cluster::wait_for_leader`]).
    pub fn start(options: ClusterOptions) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the proxies");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ids: Vec<NodeId> = (1..=options.nodes as NodeId).collect();
        let mut proxies = BTreeMap::new();
        for &from in &ids {
            for &to in &ids {
                if from != to {
                    proxies.insert((from, to), Proxy::start(runtime.handle()));
                }
            }
        }
        let nodes = ids
            .iter()
            .map(|&id| NodeProcess {
                id,
                data_dir: dir.path().join(format!("node-{id}")),
                log_path: dir.path().join(format!("node-{id}.log")),
                child: None,
                client: None,
                peer: None,
            })
            .collect();
        let clients = Arc::new(Mutex::new(ids.iter().map(|&id| (id, None)).collect()));
        let mut cluster = Cluster { options, nodes, proxies, clients, runtime, _dir: dir };
        for id in ids {
            cluster.start_node(id);
        }
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: NodeId) -> &NodeProcess {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut NodeProcess {
        &mut self.nodes[id as usize - 1]
    }

    /// The `--initial-cluster` of node `id`: its proxies, and a placeholder for itself
    /// (a node never dials its own entry).
    fn initial_cluster(&self, id: NodeId) -> String {
        self.ids()
            .iter()
            .map(|&to| {
                let addr =
                    if to == id { "127.0.0.1:1".to_string() } else { self.proxies[&(id, to)].addr().to_string() };
                format!("{to}={addr}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts) node `id`, reusing its previous ports when it can; panics
    /// with its log if it does not come up.
    pub fn start_node(&mut self, id: NodeId) {
        assert!(!self.node(id).is_running(), "node {id} is already running");
        let previous = (self.node(id).client, self.node(id).peer);
        let attempt = self.spawn(id, previous.0, previous.1);
        let (child, client, peer) = match attempt {
            Ok(started) => started,
            // Someone took a port in the meantime: take fresh ones.
            Err(e) if previous.0.is_some() && e.contains("cannot listen") => self
                .spawn(id, None, None)
                .unwrap_or_else(|e| panic!("node {id} did not restart: {e}\n{}", self.node(id).log_tail(4000))),
            Err(e) => panic!("node {id} did not start: {e}\n{}", self.node(id).log_tail(4000)),
        };
        for &from in &self.ids() {
            if from != id {
                self.proxies[&(from, id)].set_target(peer);
            }
        }
        self.clients.lock().unwrap().insert(id, Some(client));
        let node = self.node_mut(id);
        node.child = Some(child);
        node.client = Some(client);
        node.peer = Some(peer);
    }

    fn spawn(
        &self,
        id: NodeId,
        client: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    ) -> Result<(Child, SocketAddr, SocketAddr), String> {
        let node = self.node(id);
        let log = OpenOptions::new().create(true).append(true).open(&node.log_path).map_err(|e| e.to_string())?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let options = &self.options;
        let mut command = Command::new(env!("CARGO_BIN_EXE_miniraft"));
        command
            .arg("--name")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen-client-urls")
            .arg(client.map_or("127.0.0.1:0".to_string(), |a| a.to_string()))
            .arg("--listen-peer-urls")
            .arg(peer.map_or("127.0.0.1:0".to_string(), |a| a.to_string()))
            .arg("--initial-cluster")
            .arg(self.initial_cluster(id))
            .arg("--heartbeat-interval")
            .arg(options.heartbeat_ms.to_string())
            .arg("--election-timeout")
            .arg(options.election_ms.to_string())
            .arg("--request-timeout")
            .arg(options.request_timeout_ms.to_string())
            .args(&options.extra_args)
            .env("RUST_LOG", "miniraft=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| format!("cannot spawn the miniraft binary: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (ready_tx, ready) = mpsc::channel();
        // Reads the ready line, then drains stdout until the process exits.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { return };
                if line.starts_with("miniraft ready:") {
                    let _ = ready_tx.send(line);
                    break;
                }
            }
            for _ in lines {}
        });
        let failed = |child: &mut Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read(&self.node(id).log_path).unwrap_or_default();
            let log = String::from_utf8_lossy(&log[log_start.min(log.len() as u64) as usize..]).into_owned();
            Err(format!("{why}; its log:\n{log}"))
        };
        let line = match ready.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                return failed(&mut child, format!("no ready line within {START_TIMEOUT:?} (exit status {status:?})"));
            }
        };
        let field = |name: &str| -> Option<SocketAddr> {
            line.split_whitespace().find_map(|word| word.strip_prefix(name)).and_then(|addr| addr.parse().ok())
        };
        match (field("client="), field("peer=")) {
            (Some(client), Some(peer)) => Ok((child, client, peer)),
            _ => failed(&mut child, format!("cannot read the ready line '{line}'")),
        }
    }

    /// kill -9 node `id`.
    pub fn kill9(&mut self, id: NodeId) {
        self.clients.lock().unwrap().insert(id, None);
        self.node_mut(id).kill9();
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.proxies[&(from, to)].cut();
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for proxy in self.proxies.values() {
            proxy.heal();
        }
    }

    /// Every node's log tail, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&format!("----- node {} (running: {}) -----\n", node.id, node.is_running()));
            out.push_str(&node.log_tail(3000));
        }
        out
    }

    /// How many lines of all the nodes' logs contain `needle` (what happened, for the report).
    pub fn count_in_logs(&self, needle: &str) -> usize {
        self.nodes
            .iter()
            .map(|node| {
                std::fs::read_to_string(&node.log_path)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .count()
            })
            .sum()
    }

    /// A synchronous client for node `id` (which must be running).
    pub fn connect(&self, id: NodeId) -> redis::Connection {
        let addr = self.node(id).client.expect("the node has started");
        connect(addr).unwrap_or_else(|e| panic!("cannot connect to node {id} at {addr}: {e}"))
    }

    /// Node `id`'s RAFT.STATUS, parsed.
    pub fn status(&self, id: NodeId) -> Option<Status> {
        let node = self.node(id);
        if !node.is_running() {
            return None;
        }
        let mut connection = connect(node.client?).ok()?;
        let text: String = redis::cmd("RAFT.STATUS").query(&mut connection).ok()?;
        Status::parse(&text)
    }

    /// Waits until every running node names the same leader, which says it leads; returns
    /// its id. Panics with the logs after `timeout`.
    pub fn wait_for_leader(&self, timeout: Duration) -> NodeId {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<Status> =
                self.nodes.iter().filter(|n| n.is_running()).filter_map(|n| self.status(n.id)).collect();
            let running = self.nodes.iter().filter(|n| n.is_running()).count();
            if statuses.len() == running {
                if let Some(leader) = statuses.iter().find(|s| s.role == "leader") {
                    if statuses.iter().all(|s| s.leader == Some(leader.id) && s.term == leader.term) {
                        return leader.id;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("no agreed leader within {timeout:?}; statuses: {statuses:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A connection with timeouts, so that a stuck node fails a test instead of hanging it.
pub fn connect(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let connection = client.get_connection_with_timeout(Duration::from_secs(5))?;
    connection.set_read_timeout(Some(Duration::from_secs(10)))?;
    connection.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(connection)
}

/// RAFT.STATUS, parsed (only what the tests look at).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit: u64,
    pub applied: u64,
    pub last: u64,
    pub snapshot: u64,
    pub voters: Vec<NodeId>,
}

impl Status {
    pub fn parse(text: &str) -> Option<Status> {
        let fields: BTreeMap<&str, &str> = text.split_whitespace().filter_map(|w| w.split_once('=')).collect();
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
        Some(Status {
            id: number("id")?,
            role: fields.get("role")?.to_string(),
            term: number("term")?,
            leader: number("leader").filter(|l| *l != 0),
            commit: number("commit")?,
            applied: number("applied")?,
            last: number("last")?,
            snapshot: number("snapshot").unwrap_or(0),
            voters: fields
                .get("voters")
                .map(|v| v.split(',').filter_map(|id| id.parse().ok()).collect())
                .unwrap_or_default(),
        })
    }
}

/// The seed of a randomised test: `MINIRAFT_TEST_SEED` if set, else fresh. Printed, so
/// that a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("MINIRAFT_TEST_SEED") {
        Ok(text) => text.parse().expect("MINIRAFT_TEST_SEED must be a u64"),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        }
    };
    eprintln!("{test}: seed {seed} (replay with MINIRAFT_TEST_SEED={seed})");
    seed
}
